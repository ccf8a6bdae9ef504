//! Completing a partial checksum (`VIRTIO_NET_HDR_F_NEEDS_CSUM`).

use super::{put16, OffloadError};
use crate::ones_complement_sum;

/// Completes a partial checksum as VIRTIO 1.2 §5.1.6.2 defines it: the
/// 16-bit one's complement sum of `frame[csum_start..]`, folded,
/// complemented and stored big-endian at `csum_start + csum_offset`.
///
/// The value already at that spot is the pseudo-header sum the guest put
/// there (Linux's `tcp_v4_send_check` does; §5.1.6.2 lets the driver rely on
/// it), so summing from `csum_start` over the whole rest gives the final
/// checksum. Everything to the end of `frame` is summed, as the device
/// would: pass the frame without Ethernet padding.
///
/// A result of 0 is stored as 0xffff, as Linux's `skb_checksum_help` does:
/// both mean the same to a receiver, and for UDP 0 would mean "no
/// checksum" (RFC 768).
pub fn complete_checksum(
    frame: &mut [u8],
    csum_start: u16,
    csum_offset: u16,
) -> Result<(), OffloadError> {
    let len = frame.len();
    let start = usize::from(csum_start);
    // Two u16s plus 2 cannot overflow usize.
    let at = start + usize::from(csum_offset);
    if at + 2 > len {
        return Err(OffloadError::CsumOutOfRange {
            start: csum_start,
            offset: csum_offset,
            len,
        });
    }
    let csum = match !ones_complement_sum(&frame[start..]) {
        0 => 0xffff,
        c => c,
    };
    put16(frame, at, csum);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{ref_sum, FrameSpec, L4Kind};
    use super::*;

    fn u16v(v: usize) -> u16 {
        u16::try_from(v).unwrap()
    }

    #[test]
    fn completes_linux_partial_checksums() {
        let specs = [
            FrameSpec::v4(L4Kind::Tcp, 1000),
            FrameSpec::v4(L4Kind::Tcp, 1).tcp_options(12),
            FrameSpec::v4(L4Kind::Tcp, 0).vlan().ip_options(8),
            FrameSpec::v4(L4Kind::Udp, 513),
            FrameSpec::v4(L4Kind::Udp, 0),
            FrameSpec::v6(L4Kind::Tcp, 1448),
            FrameSpec::v6(L4Kind::Tcp, 77).vlan(),
            FrameSpec::v6(L4Kind::Udp, 1200),
        ];
        for spec in specs {
            let mut frame = spec.build_partial();
            assert!(
                !spec.l4_csum_ok(&frame),
                "{spec:?}: fixture already complete"
            );
            complete_checksum(&mut frame, u16v(spec.l4_off()), u16v(spec.csum_offset())).unwrap();
            assert!(spec.l4_csum_ok(&frame), "{spec:?}");
            assert!(spec.ip_csum_ok(&frame), "{spec:?}: IP header touched");
            // Byte for byte what a full computation gives.
            assert_eq!(frame, spec.build(), "{spec:?}");
        }
    }

    #[test]
    fn zero_result_is_stored_as_ffff() {
        // A UDP datagram whose payload makes the total sum 0xffff, so the
        // complemented checksum is 0 (RFC 768: transmit as all ones).
        let spec = FrameSpec::v4(L4Kind::Udp, 8);
        let mut frame = spec.build_partial();
        let n = frame.len();
        frame[n - 2..].fill(0);
        let rest = ref_sum(&[&frame[spec.l4_off()..]]);
        frame[n - 2..].copy_from_slice(&(!rest).to_be_bytes());
        assert_eq!(ref_sum(&[&frame[spec.l4_off()..]]), 0xffff);
        complete_checksum(&mut frame, u16v(spec.l4_off()), 6).unwrap();
        let at = spec.l4_off() + 6;
        assert_eq!(&frame[at..at + 2], &[0xff, 0xff]);
        assert!(spec.l4_csum_ok(&frame));
    }

    #[test]
    fn generic_sum_from_start() {
        // Not IP at all: §5.1.6.2 defines the operation on bytes only.
        let mut frame = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7, 0, 0];
        complete_checksum(&mut frame, 0, 8).unwrap();
        assert_eq!(ref_sum(&[&frame]), 0xffff);
        assert_eq!(&frame[8..], &(!0xddf2u16).to_be_bytes());
    }

    #[test]
    fn out_of_range_table() {
        // (frame len, start, offset, ok)
        let cases: &[(usize, u16, u16, bool)] = &[
            (0, 0, 0, false),
            (1, 0, 0, false),
            (2, 0, 0, true),
            (60, 58, 0, true),
            (60, 59, 0, false),
            (60, 60, 0, false),
            (60, 34, 24, true),
            (60, 34, 25, false),
            (60, 61, 0, false),
            (60, u16::MAX, u16::MAX, false),
            (60, 0, u16::MAX, false),
        ];
        for &(len, start, offset, ok) in cases {
            let mut frame = vec![0x11u8; len];
            let got = complete_checksum(&mut frame, start, offset);
            if ok {
                assert_eq!(got, Ok(()), "{len} {start} {offset}");
            } else {
                assert_eq!(
                    got,
                    Err(OffloadError::CsumOutOfRange { start, offset, len })
                );
                assert!(frame.iter().all(|&b| b == 0x11), "frame modified on error");
            }
        }
    }
}
