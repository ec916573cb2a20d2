//! The batched receive and send paths on real loopback sockets (no root needed): what one
//! recvmmsg hands over, the arrival information of each datagram, the source address each
//! reply leaves from, and the wake-ups of the event loop when a batch leaves datagrams queued.

use super::batch::{ReceiveBatch, SendBatch};
use super::{Outbound, RequestSocket, BATCH, RECV_BUFFER};
use nix::sys::socket::{setsockopt, sockopt};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::Duration;

fn loopback_index() -> u32 {
    nix::net::if_::if_nametoindex("lo").unwrap()
}

/// A non-blocking server socket on `addr` with packet info switched on.
fn server(addr: &str) -> UdpSocket {
    let s = UdpSocket::bind(addr).unwrap();
    if s.local_addr().unwrap().is_ipv4() {
        setsockopt(&s, sockopt::Ipv4PacketInfo, &true).unwrap();
    } else {
        setsockopt(&s, sockopt::Ipv6RecvPacketInfo, &true).unwrap();
    }
    s.set_nonblocking(true).unwrap();
    s
}

fn client(addr: &str) -> UdpSocket {
    let c = UdpSocket::bind(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    c
}

/// One datagram as read: source, destination, arrival interface, payload.
type Read = (SocketAddr, IpAddr, u32, Vec<u8>);

/// Everything queued on `s`, one batch after another, until the queue is empty.
fn drain(s: &UdpSocket, batch: &mut ReceiveBatch) -> Vec<Vec<Read>> {
    let mut batches = Vec::new();
    loop {
        match batch.receive(s.as_raw_fd()) {
            Ok(n) => {
                assert_eq!(n, batch.len(), "every datagram here carries packet info");
                batches.push(
                    batch
                        .datagrams()
                        .map(|(r, p)| (r.source, r.destination, r.ifindex, p.to_vec()))
                        .collect(),
                );
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return batches,
            Err(e) => panic!("receive: {e}"),
        }
    }
}

#[test]
fn one_receive_reads_at_most_a_batch_with_each_source_destination_and_interface() {
    let s = server("127.0.0.1:0");
    let to = s.local_addr().unwrap();
    let (a, b) = (client("127.0.0.1:0"), client("127.0.0.1:0"));
    for i in 0..100u32 {
        a.send_to(&[b'a', i as u8], to).unwrap();
        b.send_to(&[b'b', i as u8, 0, 0], to).unwrap();
    }
    let mut batch = ReceiveBatch::new();
    let batches = drain(&s, &mut batch);
    let sizes: Vec<usize> = batches.iter().map(Vec::len).collect();
    assert_eq!(sizes, [BATCH, BATCH, BATCH, 200 - 3 * BATCH]);
    let all: Vec<_> = batches.into_iter().flatten().collect();
    for (sender, tag, len) in [(&a, b'a', 2), (&b, b'b', 4)] {
        let from = sender.local_addr().unwrap();
        let mine: Vec<_> = all.iter().filter(|d| d.0 == from).collect();
        assert_eq!(mine.len(), 100);
        for (i, (_, destination, ifindex, payload)) in mine.into_iter().enumerate() {
            assert_eq!(*destination, IpAddr::V4(Ipv4Addr::LOCALHOST));
            assert_eq!(*ifindex, loopback_index());
            assert_eq!(payload.len(), len);
            assert_eq!(&payload[..2], &[tag, i as u8], "in the order sent");
        }
    }
    // The batch now holds nothing: an empty queue is WouldBlock, not a stale batch.
    assert!(batch.is_empty());
}

#[test]
fn a_datagram_longer_than_the_buffer_is_cut_to_it() {
    let s = server("127.0.0.1:0");
    let c = client("127.0.0.1:0");
    c.send_to(&vec![7u8; 3000], s.local_addr().unwrap())
        .unwrap();
    c.send_to(&[1, 2, 3], s.local_addr().unwrap()).unwrap();
    let mut batch = ReceiveBatch::new();
    let got = drain(&s, &mut batch).concat();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].3, vec![7u8; RECV_BUFFER]);
    assert_eq!(got[1].3, [1, 2, 3], "the next one is whole and its own");
}

#[test]
fn ipv6_datagrams_carry_their_destination_and_interface() {
    let s = server("[::1]:0");
    let c = client("[::1]:0");
    c.send_to(b"six", s.local_addr().unwrap()).unwrap();
    let mut batch = ReceiveBatch::new();
    let got = drain(&s, &mut batch).concat();
    assert_eq!(got.len(), 1);
    let (source, destination, ifindex, payload) = &got[0];
    assert_eq!(*source, c.local_addr().unwrap());
    assert_eq!(*destination, IpAddr::V6(Ipv6Addr::LOCALHOST));
    assert_eq!(*ifindex, loopback_index());
    assert_eq!(payload, b"six");
}

/// Receive what `c` got: (payload, source), until a read times out.
fn replies(c: &UdpSocket) -> Vec<(Vec<u8>, SocketAddr)> {
    c.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 64];
    while let Ok((n, from)) = c.recv_from(&mut buf) {
        got.push((buf[..n].to_vec(), from));
    }
    got
}

#[test]
fn send_goes_out_from_the_address_each_datagram_names_over_several_batches() {
    // 127.0.0.2 is on lo like all of 127/8: the reply must leave from it, not from .1.
    let s = server("0.0.0.0:0");
    let port = s.local_addr().unwrap().port();
    let (a, b) = (client("127.0.0.1:0"), client("127.0.0.1:0"));
    let payloads: Vec<[u8; 2]> = (0..150u16).map(|i| i.to_be_bytes()).collect();
    let out: Vec<Outbound<'_>> = payloads
        .iter()
        .enumerate()
        .map(|(i, p)| Outbound {
            payload: p,
            from: IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1 + (i % 2) as u8)),
            ifindex: loopback_index(),
            to: if i % 3 == 0 {
                a.local_addr().unwrap()
            } else {
                b.local_addr().unwrap()
            },
        })
        .collect();
    let mut refused = Vec::new();
    SendBatch::new().send(s.as_raw_fd(), false, &out, |o, e| {
        refused.push((o.to, e.kind()))
    });
    assert!(refused.is_empty(), "{refused:?}");
    let (got_a, got_b) = (replies(&a), replies(&b));
    assert_eq!(got_a.len() + got_b.len(), 150);
    for (got, want) in [(got_a, 0usize), (got_b, 1)] {
        let expected: Vec<(Vec<u8>, SocketAddr)> = (0..150usize)
            .filter(|i| (i % 3 != 0) as usize == want)
            .map(|i| {
                let from = Ipv4Addr::new(127, 0, 0, 1 + (i % 2) as u8);
                (payloads[i].to_vec(), SocketAddr::from((from, port)))
            })
            .collect();
        assert_eq!(got, expected);
    }
}

#[test]
fn a_refused_datagram_is_reported_and_the_others_still_go() {
    let s = server("0.0.0.0:0");
    let c = client("127.0.0.1:0");
    let lo = loopback_index();
    let to = c.local_addr().unwrap();
    let v6_to: SocketAddr = "[::1]:9".parse().unwrap();
    // An IPv6 destination on the IPv4 socket is refused before the call; 198.51.100.1 as a
    // source is not ours, which the kernel refuses in the call (EINVAL), in the middle.
    let out = [
        Outbound {
            payload: b"1",
            from: IpAddr::V4(Ipv4Addr::LOCALHOST),
            ifindex: lo,
            to,
        },
        Outbound {
            payload: b"x",
            from: IpAddr::V6(Ipv6Addr::LOCALHOST),
            ifindex: lo,
            to: v6_to,
        },
        Outbound {
            payload: b"2",
            from: IpAddr::V4(Ipv4Addr::LOCALHOST),
            ifindex: lo,
            to,
        },
        Outbound {
            payload: b"y",
            from: IpAddr::V4(Ipv4Addr::new(198, 51, 100, 1)),
            ifindex: lo,
            to,
        },
        Outbound {
            payload: b"3",
            from: IpAddr::V4(Ipv4Addr::LOCALHOST),
            ifindex: lo,
            to,
        },
    ];
    let mut refused = Vec::new();
    SendBatch::new().send(s.as_raw_fd(), false, &out, |o, _| {
        refused.push(o.payload.to_vec())
    });
    assert_eq!(refused, [b"x".to_vec(), b"y".to_vec()]);
    let got: Vec<Vec<u8>> = replies(&c).into_iter().map(|(p, _)| p).collect();
    assert_eq!(got, [b"1".to_vec(), b"2".to_vec(), b"3".to_vec()]);
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn the_loop_is_woken_again_for_what_a_full_batch_left_queued_and_for_new_datagrams() {
    runtime().block_on(async {
        let s = RequestSocket::bind_v4(0).unwrap();
        let to = SocketAddr::from((Ipv4Addr::LOCALHOST, s.local_addr().unwrap().port()));
        let c = client("127.0.0.1:0");
        for i in 0..100u8 {
            c.send_to(&[i], to).unwrap();
        }
        let within = |d| tokio::time::timeout(Duration::from_millis(d), s.receive());
        within(1000).await.expect("queued datagrams wake").unwrap();
        assert_eq!(s.received().len(), BATCH);
        // No new datagram arrives: the 36 left must still be read without one.
        within(1000)
            .await
            .expect("the rest of the queue wakes")
            .unwrap();
        let rest: Vec<u8> = s.received().datagrams().map(|(_, p)| p[0]).collect();
        assert_eq!(rest, (BATCH as u8..100).collect::<Vec<_>>());
        // Drained: the next wait waits...
        assert!(within(100).await.is_err(), "an empty queue must not wake");
        // ...until a datagram comes.
        c.send_to(&[200], to).unwrap();
        within(1000).await.expect("a new datagram wakes").unwrap();
        let got: Vec<u8> = s.received().datagrams().map(|(_, p)| p[0]).collect();
        assert_eq!(got, [200]);
    });
}
