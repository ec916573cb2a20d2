//! PCP options (RFC 6887 §7.3, §13; DESCRIPTION: RFC 7220): a 4-byte header (code, reserved,
//! length of the data), the data, and zero padding to a multiple of 4 that the length does not
//! count.

use super::{addr128, be16};
use std::net::Ipv6Addr;

pub const THIRD_PARTY: u8 = 1;
pub const PREFER_FAILURE: u8 = 2;
pub const FILTER: u8 = 3;
pub const DESCRIPTION: u8 = 128;

/// Codes below this are mandatory to process (an unknown one is refused); the rest optional.
pub const FIRST_OPTIONAL: u8 = 128;

pub const THIRD_PARTY_LEN: usize = 16;
pub const FILTER_LEN: usize = 20;
/// RFC 7220: a description is at most 1016 bytes of UTF-8.
pub const DESCRIPTION_MAX_LEN: usize = 1016;

/// One option as it appears in the message, its data without padding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawOption<'a> {
    pub code: u8,
    pub data: &'a [u8],
}

/// Split `b` (the bytes after the opcode data) into options. `None` when the structure cannot
/// be parsed: a header or data (with its padding) runs past the end (MALFORMED_OPTION).
pub fn split(mut b: &[u8]) -> Option<Vec<RawOption<'_>>> {
    let mut out = Vec::new();
    while !b.is_empty() {
        if b.len() < 4 {
            return None;
        }
        let code = b[0];
        let len = usize::from(be16(&b[2..4]));
        let padded = len.next_multiple_of(4);
        let rest = &b[4..];
        if rest.len() < padded {
            return None;
        }
        out.push(RawOption {
            code,
            data: &rest[..len],
        });
        b = &rest[padded..];
    }
    Some(out)
}

/// Append one option: header, data, padding.
pub fn emit(out: &mut Vec<u8>, code: u8, data: &[u8]) {
    let len = data.len().min(usize::from(u16::MAX));
    out.extend_from_slice(&[code, 0]);
    out.extend_from_slice(&(len as u16).to_be_bytes());
    out.extend_from_slice(&data[..len]);
    out.resize(out.len() + (len.next_multiple_of(4) - len), 0);
}

/// FILTER data (RFC 6887 §13.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FilterOption {
    /// Over the 128-bit field: 96–128 for an IPv4-mapped address, 0–128 for IPv6; 0 clears.
    pub prefix_len: u8,
    /// 0: any port.
    pub remote_port: u16,
    pub remote_addr: Ipv6Addr,
}

impl FilterOption {
    /// `None` unless the data is exactly 20 bytes.
    pub fn parse(data: &[u8]) -> Option<FilterOption> {
        if data.len() != FILTER_LEN {
            return None;
        }
        Some(FilterOption {
            prefix_len: data[1],
            remote_port: be16(&data[2..4]),
            remote_addr: addr128(&data[4..20]),
        })
    }

    pub fn emit(&self, out: &mut Vec<u8>) {
        let mut data = Vec::with_capacity(FILTER_LEN);
        data.extend_from_slice(&[0, self.prefix_len]);
        data.extend_from_slice(&self.remote_port.to_be_bytes());
        data.extend_from_slice(&self.remote_addr.octets());
        emit(out, FILTER, &data);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_walks_padded_options() {
        let mut b = Vec::new();
        emit(&mut b, PREFER_FAILURE, &[]);
        emit(&mut b, DESCRIPTION, b"hello");
        emit(&mut b, 200, &[1, 2, 3, 4]);
        assert_eq!(b.len(), 4 + (4 + 8) + (4 + 4));
        assert_eq!(&b[4..8], &[128, 0, 0, 5]);
        assert_eq!(&b[13..16], &[0, 0, 0]);
        let opts = split(&b).unwrap();
        assert_eq!(
            opts,
            vec![
                RawOption { code: 2, data: &[] },
                RawOption {
                    code: 128,
                    data: b"hello"
                },
                RawOption {
                    code: 200,
                    data: &[1, 2, 3, 4]
                },
            ]
        );
        assert_eq!(split(&[]), Some(vec![]));
    }

    #[test]
    fn split_refuses_options_that_run_past_the_end() {
        let mut b = Vec::new();
        emit(&mut b, DESCRIPTION, b"hello");
        for cut in 1..b.len() {
            assert_eq!(split(&b[..cut]), None, "cut at {cut}");
        }
        // Length 5 needs 8 bytes with its padding; 5 are not enough.
        assert_eq!(split(&[128, 0, 0, 5, 1, 2, 3, 4, 5]), None);
    }

    #[test]
    fn filter_layout_by_hand() {
        let f = FilterOption {
            prefix_len: 120,
            remote_port: 443,
            remote_addr: "::ffff:203.0.113.0".parse().unwrap(),
        };
        let mut b = Vec::new();
        f.emit(&mut b);
        #[rustfmt::skip]
        let expected = [
            3, 0, 0, 20,
            0, 120, 0x01, 0xbb,
            0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 203, 0, 113, 0,
        ];
        assert_eq!(b, expected);
        assert_eq!(FilterOption::parse(&b[4..]), Some(f));
        assert_eq!(FilterOption::parse(&b[4..23]), None);
    }
}
