//! TSO/USO segmentation in software (VIRTIO 1.2 §5.1.6.2, `gso_type`
//! TCPV4, TCPV6 and UDP_L4).

use super::headers::{l4_offsets, IpVersion, L4Info};
use super::{fold, get16, put16, OffloadError};
use crate::{internet_checksum, ones_complement_sum, IpProtocol, VirtioNetHdr};

const TCP_MIN_HLEN: usize = 20;
const UDP_HLEN: usize = 8;
/// TCP flag bits in header byte 13 (RFC 9293 §3.1, RFC 3168 §23.2).
const TCP_FIN: u8 = 0x01;
const TCP_PSH: u8 = 0x08;
const TCP_CWR: u8 = 0x80;

/// The L4 protocol a `gso_type` segments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum L4 {
    Tcp,
    Udp,
}

/// A super-frame's parsed layout, every offset checked against the frame.
struct Layout {
    l3: usize,
    l4: usize,
    /// Headers through L4: what each segment repeats.
    hlen: usize,
    /// End of the IP packet (Ethernet padding after it is dropped).
    ip_end: usize,
    version: IpVersion,
    proto: L4,
}

/// Segments one TSO/USO super-frame (Ethernet [+ 802.1Q] + IPv4/IPv6 + TCP,
/// or UDP for `GSO_UDP_L4`, + payload, as the guest sent it with `hdr`) into
/// frames of at most `hdr.gso_size` payload bytes each, calling `emit` with
/// each one in order. Returns the number of segments.
///
/// Each segment is built in `out`, one after the other, so `out` needs room
/// for one segment only: the headers plus `min(gso_size, payload)` bytes.
/// Per segment this fixes the IPv4 total length, identification (+1 per
/// segment, as Linux does without `SKB_GSO_TCP_FIXEDID`) and header
/// checksum, or the IPv6 payload length; the TCP sequence number (+ payload
/// offset), flags (FIN and PSH on the last segment only, CWR on the first
/// only: RFC 3168 §6.1.2) and checksum; the UDP length and checksum. L4
/// checksums are computed in full (pseudo header + segment), so whether
/// `NEEDS_CSUM` was set, and what the guest left in the checksum field, do
/// not matter. A super-frame with no payload gives one header-only segment.
///
/// Headers are found by parsing ([`l4_offsets`]); IPv6 extension headers and
/// IPv4 fragments are rejected. `hdr.hdr_len` is only a hint without
/// `VIRTIO_NET_F_GUEST_HDRLEN` (§5.1.6.2), and Linux sets it to its linear
/// length, which may include payload: a non-zero value must lie between the
/// parsed header length and the frame length.
///
/// Nothing is emitted unless the whole frame validates.
pub fn segment(
    frame: &[u8],
    hdr: &VirtioNetHdr,
    out: &mut [u8],
    mut emit: impl FnMut(&mut [u8]),
) -> Result<usize, OffloadError> {
    let layout = parse(frame, hdr)?;
    let gso_size = usize::from(hdr.gso_size);
    let payload = &frame[layout.hlen..layout.ip_end];
    let need = layout.hlen + gso_size.min(payload.len());
    if out.len() < need {
        return Err(OffloadError::OutTooSmall {
            need,
            got: out.len(),
        });
    }
    // Every length written below is at most the frame's own IP length,
    // which fitted 16 bits, but check once rather than cast.
    let l3_to_payload = u16_len(layout.hlen - layout.l3)?;
    let l4_hlen = u16_len(layout.hlen - layout.l4)?;

    out[..layout.hlen].copy_from_slice(&frame[..layout.hlen]);
    let (l3, l4) = (layout.l3, layout.l4);
    let mut ip_id = match layout.version {
        IpVersion::V4 => get16(frame, l3 + 4),
        IpVersion::V6 => 0,
    };
    let (mut seq, tcp_flags) = match layout.proto {
        L4::Tcp => (
            u32::from_be_bytes([frame[l4 + 4], frame[l4 + 5], frame[l4 + 6], frame[l4 + 7]]),
            frame[l4 + 13],
        ),
        L4::Udp => (0, 0),
    };

    let mut chunks = payload.chunks(gso_size);
    let mut next = chunks.next();
    let mut count = 0;
    loop {
        let chunk = next.unwrap_or(&[]);
        next = chunks.next();
        let (first, last) = (count == 0, next.is_none());
        // chunk.len() <= gso_size, a u16.
        let n = u16_len(chunk.len())?;
        let seg = &mut out[..layout.hlen + chunk.len()];
        seg[layout.hlen..].copy_from_slice(chunk);

        match layout.version {
            IpVersion::V4 => {
                put16(seg, l3 + 2, l3_to_payload + n);
                put16(seg, l3 + 4, ip_id);
                put16(seg, l3 + 10, 0);
                let c = internet_checksum(&seg[l3..l4]);
                put16(seg, l3 + 10, c);
                ip_id = ip_id.wrapping_add(1);
            }
            IpVersion::V6 => put16(seg, l3 + 4, l4_hlen + n),
        }
        let l4_len = l4_hlen + n;
        let csum_at = match layout.proto {
            L4::Tcp => {
                seg[l4 + 4..l4 + 8].copy_from_slice(&seq.to_be_bytes());
                let mut flags = tcp_flags;
                if !last {
                    flags &= !(TCP_FIN | TCP_PSH);
                }
                if !first {
                    flags &= !TCP_CWR;
                }
                seg[l4 + 13] = flags;
                seq = seq.wrapping_add(u32::from(n));
                l4 + 16
            }
            L4::Udp => {
                put16(seg, l4 + 4, l4_len);
                l4 + 6
            }
        };
        put16(seg, csum_at, 0);
        let sum = fold(
            u32::from(pseudo_header_sum(seg, &layout, l4_len))
                + u32::from(ones_complement_sum(&seg[l4..])),
        );
        let csum = match (!sum, layout.proto) {
            // RFC 768: a computed 0 is sent as all ones.
            (0, L4::Udp) => 0xffff,
            (c, _) => c,
        };
        put16(seg, csum_at, csum);

        emit(seg);
        count += 1;
        if last {
            return Ok(count);
        }
    }
}

/// Validates `hdr` against the frame and finds the headers to repeat.
fn parse(frame: &[u8], hdr: &VirtioNetHdr) -> Result<Layout, OffloadError> {
    let bad_gso = OffloadError::BadGso {
        gso_type: hdr.gso_type,
        gso_size: hdr.gso_size,
    };
    let ecn = hdr.gso_type & VirtioNetHdr::GSO_ECN != 0;
    let (want_version, proto) = match hdr.gso_kind() {
        VirtioNetHdr::GSO_TCPV4 => (Some(IpVersion::V4), L4::Tcp),
        VirtioNetHdr::GSO_TCPV6 => (Some(IpVersion::V6), L4::Tcp),
        // ECN is a TCP notion (RFC 3168); Linux rejects it with UDP_L4 too.
        VirtioNetHdr::GSO_UDP_L4 if !ecn => (None, L4::Udp),
        // NONE has nothing to segment; UFO (IP fragmentation) is not done.
        _ => return Err(bad_gso),
    };
    if hdr.gso_size == 0 {
        return Err(bad_gso);
    }
    let L4Info {
        l3_offset: l3,
        l4_offset: l4,
        ip_end,
        version,
        proto: ip_proto,
    } = l4_offsets(frame)?;
    if want_version.is_some_and(|v| v != version) {
        return Err(OffloadError::GsoVersionMismatch {
            gso_type: hdr.gso_type,
            ip_version: version.number(),
        });
    }
    let l4_hlen = match (proto, ip_proto) {
        (L4::Tcp, IpProtocol::Tcp) => {
            need(l4 + TCP_MIN_HLEN, ip_end)?;
            let data_offset = frame[l4 + 12] >> 4;
            if usize::from(data_offset) * 4 < TCP_MIN_HLEN {
                return Err(OffloadError::BadTcpDataOffset { data_offset });
            }
            usize::from(data_offset) * 4
        }
        (L4::Udp, IpProtocol::Udp) => UDP_HLEN,
        (_, other) => {
            return Err(OffloadError::UnsupportedL4 {
                proto: other.into(),
            })
        }
    };
    let hlen = l4 + l4_hlen;
    need(hlen, ip_end)?;
    let hdr_len = usize::from(hdr.hdr_len);
    if hdr_len != 0 && (hdr_len < hlen || hdr_len > frame.len()) {
        return Err(OffloadError::HdrLen {
            hdr_len: hdr.hdr_len,
            headers: hlen,
            frame_len: frame.len(),
        });
    }
    Ok(Layout {
        l3,
        l4,
        hlen,
        ip_end,
        version,
        proto,
    })
}

/// The IP packet must hold `need` bytes from the frame's start.
fn need(need: usize, ip_end: usize) -> Result<(), OffloadError> {
    if need > ip_end {
        return Err(OffloadError::Truncated { need, got: ip_end });
    }
    Ok(())
}

fn u16_len(len: usize) -> Result<u16, OffloadError> {
    let Ok(v) = u16::try_from(len) else {
        return Err(OffloadError::TooLong {
            len,
            max: u16::MAX.into(),
        });
    };
    Ok(v)
}

/// The TCP/UDP pseudo header sum (RFC 9293 §3.1, RFC 768, RFC 8200 §8.1):
/// addresses, protocol and L4 length (which fits 16 bits here, so IPv6's
/// 32-bit length adds the same).
fn pseudo_header_sum(seg: &[u8], layout: &Layout, l4_len: u16) -> u16 {
    let l3 = layout.l3;
    let addrs = match layout.version {
        IpVersion::V4 => &seg[l3 + 12..l3 + 20],
        IpVersion::V6 => &seg[l3 + 8..l3 + 40],
    };
    let proto: u8 = match layout.proto {
        L4::Tcp => IpProtocol::Tcp.into(),
        L4::Udp => IpProtocol::Udp.into(),
    };
    fold(u32::from(ones_complement_sum(addrs)) + u32::from(proto) + u32::from(l4_len))
}

#[cfg(test)]
mod tests;
