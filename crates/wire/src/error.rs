//! The error shared by every frame view in this crate.

/// Why a buffer could not be viewed as (or written as) a protocol unit.
///
/// Every variant carries the offending values so a counter or a log line can
/// say exactly what was wrong with the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The buffer is shorter than the header (or the length a header claims).
    #[error("buffer truncated: need {need} bytes, got {got}")]
    Truncated { need: usize, got: usize },
    /// The IP version nibble is not the one this view understands.
    #[error("bad IP version {version}")]
    BadVersion { version: u8 },
    /// IPv4 IHL below the minimum of 5 words (RFC 791 §3.1).
    #[error("bad IPv4 header length {ihl} words")]
    BadHeaderLen { ihl: u8 },
    /// IPv4 total length smaller than its own header.
    #[error("bad IPv4 total length {total_len} for header length {header_len}")]
    BadTotalLen { total_len: u16, header_len: usize },
    /// A unit to build is longer than its length field can say.
    #[error("length {len} exceeds the maximum of {max}")]
    TooLong { len: usize, max: usize },
    /// An Internet checksum (RFC 1071) does not verify.
    #[error("bad checksum: stored {stored:#06x}, computed {computed:#06x}")]
    BadChecksum { stored: u16, computed: u16 },
    /// ARP for something other than Ethernet/IPv4 (RFC 826).
    #[error("unsupported ARP: htype {htype}, ptype {ptype:#06x}, hlen {hlen}, plen {plen}")]
    UnsupportedArp {
        htype: u16,
        ptype: u16,
        hlen: u8,
        plen: u8,
    },
    /// An ICMPv4 message other than echo request/reply (RFC 792).
    #[error("unsupported ICMPv4 message type {msg_type} code {code}")]
    UnsupportedIcmp { msg_type: u8, code: u8 },
}
