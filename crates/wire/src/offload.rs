//! Checksum and segmentation offloads finished in software (VIRTIO 1.2
//! §5.1.6.2): when a guest hands over a frame with a partial checksum or a
//! TSO/USO super-frame and the destination did not negotiate the matching
//! offload, quiverd completes the checksum or cuts the frame into MSS-sized
//! segments here. Per-frame data-path code: nothing allocates, the caller
//! provides the output buffer, and work is linear in the frame's bytes.
//!
//! Submodules:
//! - `headers`: [`l4_offsets`], where the L3 and L4 headers are ([`L4Info`]).
//! - `csum`: [`complete_checksum`], the `NEEDS_CSUM` completion.
//! - `segment`: [`segment()`], TSO (TCPv4/TCPv6) and USO (UDP_L4) segmentation.

mod csum;
#[cfg(test)]
mod fixtures;
mod headers;
mod segment;

pub use csum::complete_checksum;
pub use headers::{l4_offsets, IpVersion, L4Info};
pub use segment::segment;

use crate::WireError;

/// Why a frame could not have its checksum completed or be segmented.
///
/// Every variant carries the offending values, so a drop counter or a
/// rate-limited log line can say exactly what the guest sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OffloadError {
    /// The frame ends before a header (or the length an IP header claims).
    #[error("frame truncated: need {need} bytes, got {got}")]
    Truncated { need: usize, got: usize },
    /// The Ethernet header (with its 802.1Q tag) does not fit.
    #[error("bad Ethernet header")]
    Ethernet(#[source] WireError),
    /// The `virtio_net_hdr` could not be decoded
    /// ([`VirtioNetHdr::from_bytes`](crate::VirtioNetHdr::from_bytes)); the
    /// `From` conversion lets callers decode with `?`.
    #[error("bad virtio_net_hdr")]
    VirtioNetHdr(#[from] WireError),
    /// The payload is neither IPv4 nor IPv6 (802.1ad S-tags included).
    #[error("not IP: EtherType {ethertype:#06x}")]
    NotIp { ethertype: u16 },
    /// The IPv4 header is malformed (version, IHL, total length).
    #[error("bad IPv4 header")]
    Ipv4(#[source] WireError),
    /// The IPv6 version nibble is not 6.
    #[error("bad IPv6 version {version}")]
    BadIpv6Version { version: u8 },
    /// An IPv4 fragment: its L4 header is absent or covers only part of the
    /// datagram, so neither a checksum nor segments can be computed.
    #[error("IPv4 fragment: offset {offset}, more fragments {more}")]
    Fragment { offset: u16, more: bool },
    /// An L4 protocol the operation cannot handle, including IPv6 extension
    /// headers (they are not walked) and TCP/UDP mismatched with `gso_type`.
    #[error("unsupported L4 protocol {proto}")]
    UnsupportedL4 { proto: u8 },
    /// TCP data offset below 5 words (RFC 9293 §3.1).
    #[error("bad TCP data offset {data_offset} words")]
    BadTcpDataOffset { data_offset: u8 },
    /// `gso_type` this module does not segment (NONE, UFO, unknown, ECN with
    /// UDP_L4), or `gso_size` 0.
    #[error("bad GSO: type {gso_type:#04x}, size {gso_size}")]
    BadGso { gso_type: u8, gso_size: u16 },
    /// `gso_type` names an IP version the frame does not carry.
    #[error("GSO type {gso_type:#04x} does not match an IPv{ip_version} frame")]
    GsoVersionMismatch { gso_type: u8, ip_version: u8 },
    /// A non-zero `hdr_len` shorter than the parsed headers or longer than
    /// the frame (VIRTIO 1.2 §5.1.6.2: it covers at least the headers).
    #[error(
        "hdr_len {hdr_len} inconsistent with {headers} header bytes in a {frame_len}-byte frame"
    )]
    HdrLen {
        hdr_len: u16,
        headers: usize,
        frame_len: usize,
    },
    /// `csum_start` or `csum_start + csum_offset + 2` lies past the frame.
    #[error("checksum out of range: start {start}, offset {offset}, frame {len} bytes")]
    CsumOutOfRange { start: u16, offset: u16, len: usize },
    /// The caller's output buffer cannot hold one segment.
    #[error("output buffer too small: need {need} bytes, got {got}")]
    OutTooSmall { need: usize, got: usize },
    /// A length to write does not fit its 16-bit field.
    #[error("length {len} exceeds the maximum of {max}")]
    TooLong { len: usize, max: usize },
}

/// Folds a 32-bit one's complement accumulator to 16 bits (RFC 1071 §4.1).
fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    // The loop leaves at most 16 significant bits.
    #[allow(clippy::cast_possible_truncation)]
    let folded = sum as u16;
    folded
}

/// Writes `v` big-endian at `at`. Callers pass offsets inside headers they
/// have already bounds-checked.
fn put16(buf: &mut [u8], at: usize, v: u16) {
    buf[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

/// Reads a big-endian u16 at `at` (bounds-checked by the caller).
fn get16(buf: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([buf[at], buf[at + 1]])
}
