//! PCP option processing (RFC 6887 §7.3, §13; RFC 7220): which options an opcode accepts,
//! in which order they are checked, and what each error is.
//!
//! Two passes, both over the options as they appear:
//! 1. structure: every option's header and padded data must fit (else MALFORMED_OPTION), and
//!    an option allowed once must not appear twice (MALFORMED_OPTION). A duplicate is a fault
//!    of the message's structure, so it is found before any option's meaning is looked at:
//!    two THIRD_PARTY options get MALFORMED_OPTION, not the UNSUPP_OPTION one would get.
//! 2. meaning, in order, the first error winning:
//!    - THIRD_PARTY is refused with UNSUPP_OPTION whatever the opcode. RFC 6887 §13.1
//!      recommends home gateways prohibit it, and it must not be implemented at all unless
//!      the network is fully trusted; natpmpd has no setting to allow it (§6 A15: refused
//!      even when it names the sender itself).
//!    - PREFER_FAILURE: MAP only; data must be empty. In PEER it is MALFORMED_REQUEST
//!      (§13.2); in ANNOUNCE, an option not defined for the opcode.
//!    - FILTER: MAP only; data must be 20 bytes.
//!    - DESCRIPTION: MAP and PEER; ignored in ANNOUNCE (optional codes may be ignored).
//!    - any other code below 128 is UNSUPP_OPTION; at 128 and above it is ignored and left
//!      out of the response.
//!
//! An option with a mandatory code that the opcode does not define gets UNSUPP_OPTION (§6 A14:
//! the RFC names no code; "not supported for this request" fits best).

use crate::wire::pcp::option::{self, FilterOption, RawOption};
use crate::wire::pcp::{ResultCode, OP_ANNOUNCE, OP_MAP, OP_PEER};

/// The options of one request, checked.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Options<'a> {
    pub prefer_failure: bool,
    pub filters: Vec<FilterOption>,
    /// The DESCRIPTION data as sent, if any.
    pub description: Option<&'a [u8]>,
}

/// Check the options in `bytes` (what follows the opcode data) for `opcode`.
pub fn parse(opcode: u8, bytes: &[u8]) -> Result<Options<'_>, ResultCode> {
    let raw = option::split(bytes).ok_or(ResultCode::MalformedOption)?;
    for once in [
        option::THIRD_PARTY,
        option::PREFER_FAILURE,
        option::DESCRIPTION,
    ] {
        if raw.iter().filter(|o| o.code == once).count() > 1 {
            return Err(ResultCode::MalformedOption);
        }
    }
    let mut out = Options::default();
    for RawOption { code, data } in raw {
        match (code, opcode) {
            (option::THIRD_PARTY, _) => return Err(ResultCode::UnsuppOption),
            (option::PREFER_FAILURE, OP_MAP) => {
                if !data.is_empty() {
                    return Err(ResultCode::MalformedOption);
                }
                out.prefer_failure = true;
            }
            (option::PREFER_FAILURE, OP_PEER) => return Err(ResultCode::MalformedRequest),
            (option::FILTER, OP_MAP) => {
                out.filters
                    .push(FilterOption::parse(data).ok_or(ResultCode::MalformedOption)?);
            }
            (option::DESCRIPTION, OP_MAP | OP_PEER) => out.description = Some(data),
            (code, _) if code < option::FIRST_OPTIONAL => return Err(ResultCode::UnsuppOption),
            // Optional and unknown (or DESCRIPTION on ANNOUNCE): ignored, not echoed.
            _ => {}
        }
    }
    debug_assert!(matches!(opcode, OP_ANNOUNCE | OP_MAP | OP_PEER));
    Ok(out)
}

/// How many bytes of a DESCRIPTION natpmpd keeps (RFC 7220: at least 128 SHOULD be kept).
pub const DESCRIPTION_KEPT: usize = 255;

/// What a DESCRIPTION's data becomes: `None` when it is not UTF-8 (RFC 7220: then it is
/// neither stored nor echoed), else the text cut at a character boundary to what is kept.
pub fn description_text(data: &[u8]) -> Option<Box<str>> {
    let text = std::str::from_utf8(data).ok()?;
    let mut end = text.len().min(DESCRIPTION_KEPT);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    // A NUL would end the text for C readers of `natpmpctl print --json`; the RFC says it
    // is not NUL-terminated, so one inside is garbage: keep what comes before it.
    let kept = &text[..end];
    Some(Box::from(kept.split('\0').next().unwrap_or("")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opt(code: u8, data: &[u8]) -> Vec<u8> {
        let mut b = Vec::new();
        option::emit(&mut b, code, data);
        b
    }

    #[test]
    fn duplicates_are_structural_errors_found_first() {
        let two_third_party = [opt(1, &[0; 16]), opt(1, &[0; 16])].concat();
        assert_eq!(
            parse(OP_MAP, &two_third_party),
            Err(ResultCode::MalformedOption)
        );
        let two_prefer = [opt(2, &[]), opt(2, &[])].concat();
        assert_eq!(parse(OP_MAP, &two_prefer), Err(ResultCode::MalformedOption));
        assert_eq!(
            parse(OP_MAP, &opt(1, &[0; 16])),
            Err(ResultCode::UnsuppOption)
        );
        // Two FILTERs are fine.
        let filter = FilterOption {
            prefix_len: 128,
            remote_port: 0,
            remote_addr: "::ffff:203.0.113.9".parse().unwrap(),
        };
        let mut b = Vec::new();
        filter.emit(&mut b);
        filter.emit(&mut b);
        assert_eq!(parse(OP_MAP, &b).unwrap().filters.len(), 2);
    }

    #[test]
    fn options_are_checked_against_their_opcode() {
        assert!(parse(OP_MAP, &opt(2, &[])).unwrap().prefer_failure);
        assert_eq!(
            parse(OP_MAP, &opt(2, &[1, 2, 3, 4])),
            Err(ResultCode::MalformedOption)
        );
        assert_eq!(
            parse(OP_PEER, &opt(2, &[])),
            Err(ResultCode::MalformedRequest)
        );
        assert_eq!(
            parse(OP_ANNOUNCE, &opt(2, &[])),
            Err(ResultCode::UnsuppOption)
        );
        assert_eq!(
            parse(OP_PEER, &opt(3, &[0; 20])),
            Err(ResultCode::UnsuppOption)
        );
        assert_eq!(
            parse(OP_MAP, &opt(3, &[0; 16])),
            Err(ResultCode::MalformedOption)
        );
        assert_eq!(parse(OP_MAP, &opt(99, &[])), Err(ResultCode::UnsuppOption));
        assert_eq!(parse(OP_MAP, &opt(200, &[1])), Ok(Options::default()));
        assert_eq!(parse(OP_ANNOUNCE, &opt(128, b"x")), Ok(Options::default()));
        assert_eq!(
            parse(OP_PEER, &opt(128, b"game")).unwrap().description,
            Some(&b"game"[..])
        );
        // The first error in order wins.
        let both = [opt(99, &[]), opt(2, &[1, 2, 3, 4])].concat();
        assert_eq!(parse(OP_MAP, &both), Err(ResultCode::UnsuppOption));
        assert_eq!(
            parse(OP_MAP, &[128, 0, 0, 9, 1]),
            Err(ResultCode::MalformedOption)
        );
    }

    #[test]
    fn descriptions_are_utf8_cut_at_a_character() {
        assert_eq!(
            description_text(b"ApplicationX").as_deref(),
            Some("ApplicationX")
        );
        assert_eq!(description_text(&[0xff, 0xfe]), None);
        let long = "é".repeat(200); // 400 bytes
        let kept = description_text(long.as_bytes()).unwrap();
        assert!(kept.len() <= DESCRIPTION_KEPT && kept.len() >= 128);
        assert!(kept.chars().all(|c| c == 'é'));
        assert_eq!(description_text(b"ab\0cd").as_deref(), Some("ab"));
        assert_eq!(description_text(b"").as_deref(), Some(""));
    }
}
