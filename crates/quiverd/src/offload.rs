//! Offloads between ports that differ in what they can take (VIRTIO 1.2 §5.1.6.2).
//!
//! A frame travels with the virtio_net_hdr its source gave it: a partial checksum
//! (NEEDS_CSUM) and/or a TSO super-frame (gso_type). A destination that negotiated the
//! matching GUEST_CSUM / GUEST_TSO4 / GUEST_TSO6 gets it as is, zero-copy into its
//! ring; for any other destination quiver finishes the work in software first: it
//! completes the checksum, or cuts the frame into MSS-sized segments.

use std::cell::RefCell;

use quiver_virtio_net::{copy_segs, Slice};
use quiver_wire::VirtioNetHdr;
use virtio_bindings::virtio_net::{
    VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_GUEST_TSO4, VIRTIO_NET_F_GUEST_TSO6,
};

/// `flags` bits and `gso_type` values of virtio_net_hdr.
pub const NEEDS_CSUM: u8 = 1;
pub const DATA_VALID: u8 = 2;
const GSO_NONE: u8 = 0;
const GSO_TCPV4: u8 = 1;
const GSO_TCPV6: u8 = 4;
const GSO_ECN: u8 = 0x80;

/// What a destination accepts in a header.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Caps {
    pub csum: bool,
    pub tso4: bool,
    pub tso6: bool,
}

impl Caps {
    /// Everything (what a TAP device takes on write).
    #[cfg(test)]
    pub const ALL: Caps = Caps {
        csum: true,
        tso4: true,
        tso6: true,
    };

    /// From a guest's negotiated features.
    pub fn from_features(features: u64) -> Caps {
        let has = |bit: u32| features & (1u64 << bit) != 0;
        Caps {
            csum: has(VIRTIO_NET_F_GUEST_CSUM),
            tso4: has(VIRTIO_NET_F_GUEST_TSO4),
            tso6: has(VIRTIO_NET_F_GUEST_TSO6),
        }
    }
}

/// How a frame reaches a destination.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fit {
    /// Header and frame go as they are.
    AsIs,
    /// The checksum must be completed first.
    Checksum,
    /// The frame must be segmented first.
    Segment,
}

pub fn fit(hdr: &[u8; 12], caps: Caps) -> Fit {
    let gso = hdr[1] & !GSO_ECN;
    match gso {
        GSO_NONE if hdr[0] & NEEDS_CSUM != 0 && !caps.csum => Fit::Checksum,
        GSO_NONE => Fit::AsIs,
        // TSO implies a partial checksum (§5.1.6.2.1), so it needs GUEST_CSUM too.
        GSO_TCPV4 if caps.tso4 && caps.csum => Fit::AsIs,
        GSO_TCPV6 if caps.tso6 && caps.csum => Fit::AsIs,
        _ => Fit::Segment,
    }
}

/// The header for a frame whose offload work quiver has done: nothing pending, and
/// DATA_VALID (the checksum is right) for a destination that understands it.
pub fn done_hdr(caps: Caps) -> [u8; 12] {
    let mut h = [0u8; 12];
    if caps.csum {
        h[0] = DATA_VALID;
    }
    h
}

/// Moves the header's offsets by `delta` bytes (an 802.1Q tag inserted or removed
/// before the L3 header).
pub fn shift_hdr(hdr: &mut [u8; 12], delta: i32) {
    let adjust = |lo: usize, hdr: &mut [u8; 12]| {
        let v = i32::from(u16::from_le_bytes([hdr[lo], hdr[lo + 1]]));
        if v != 0 {
            let moved = u16::try_from(v + delta).unwrap_or(0);
            hdr[lo..lo + 2].copy_from_slice(&moved.to_le_bytes());
        }
    };
    if hdr[0] & NEEDS_CSUM != 0 {
        adjust(6, hdr); // csum_start
    }
    if hdr[1] & !GSO_ECN != GSO_NONE {
        adjust(2, hdr); // hdr_len
    }
}

/// Largest frame software offload handles (a TSO super-frame).
pub const MAX_SUPER_FRAME: usize = 65_550;

thread_local! {
    /// Per-thread scratch: the whole frame, then one segment at a time.
    static SCRATCH: RefCell<(Vec<u8>, Vec<u8>)> = RefCell::new((vec![0; MAX_SUPER_FRAME], vec![0; MAX_SUPER_FRAME]));
}

/// Smallest MSS accepted for segmentation (Linux's TCP minimum is 88).
const MIN_GSO_SIZE: u16 = 88;

/// Why software offload could not produce frames.
#[derive(Debug, thiserror::Error)]
pub enum OffloadError {
    #[error("frame of {0} bytes is too large for software offload")]
    TooLarge(usize),
    #[error("segment size {0} is below the minimum of 88")]
    GsoSize(u16),
    #[error("cannot finish the offload")]
    Wire(#[from] quiver_wire::OffloadError),
}

/// Finishes `frame`'s offload work in software and hands each resulting frame to
/// `emit`. Returns the number of frames emitted.
pub fn finish(
    hdr: &[u8; 12],
    frame: &[Slice<'_>],
    len: usize,
    fit: Fit,
    mut emit: impl FnMut(&[Slice<'_>], usize),
) -> Result<usize, OffloadError> {
    if len > MAX_SUPER_FRAME {
        return Err(OffloadError::TooLarge(len));
    }
    SCRATCH.with(|s| {
        let mut s = s.borrow_mut();
        let (whole, seg) = &mut *s;
        let n = {
            let dst = [Slice::from(&mut whole[..len])];
            copy_segs(frame, 0, &dst, 0, len)
        };
        let whole = &mut whole[..n];
        match fit {
            Fit::AsIs => {
                emit(&[Slice::from(whole)], n);
                Ok(1)
            }
            Fit::Checksum => {
                let h = VirtioNetHdr::from_bytes(hdr).map_err(quiver_wire::OffloadError::from)?;
                quiver_wire::complete_checksum(whole, h.csum_start, h.csum_offset)?;
                emit(&[Slice::from(whole)], n);
                Ok(1)
            }
            Fit::Segment => {
                let h = VirtioNetHdr::from_bytes(hdr).map_err(quiver_wire::OffloadError::from)?;
                // VIRTIO 1.2 §5.1.6.2: gso_size is the MSS; refuse absurd ones rather
                // than turning one frame into tens of thousands.
                if h.gso_size < MIN_GSO_SIZE {
                    return Err(OffloadError::GsoSize(h.gso_size));
                }
                let count = quiver_wire::segment(whole, &h, seg, |bytes| {
                    let l = bytes.len();
                    emit(&[Slice::from(bytes)], l);
                })?;
                Ok(count)
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hdr(flags: u8, gso: u8) -> [u8; 12] {
        let mut h = [0u8; 12];
        h[0] = flags;
        h[1] = gso;
        h
    }

    #[test]
    fn fit_table() {
        let none = Caps::default();
        let csum = Caps { csum: true, ..none };
        let cases = [
            (hdr(0, 0), none, Fit::AsIs),
            (hdr(NEEDS_CSUM, 0), none, Fit::Checksum),
            (hdr(NEEDS_CSUM, 0), csum, Fit::AsIs),
            (hdr(NEEDS_CSUM, GSO_TCPV4), csum, Fit::Segment),
            (hdr(NEEDS_CSUM, GSO_TCPV4), Caps::ALL, Fit::AsIs),
            (
                hdr(NEEDS_CSUM, GSO_TCPV6),
                Caps { tso4: true, ..csum },
                Fit::Segment,
            ),
            (hdr(NEEDS_CSUM, GSO_TCPV4 | GSO_ECN), Caps::ALL, Fit::AsIs),
            (hdr(NEEDS_CSUM, 3 /* UDP */), Caps::ALL, Fit::Segment),
            (
                hdr(NEEDS_CSUM, GSO_TCPV4),
                Caps { tso4: true, ..none },
                Fit::Segment,
            ),
        ];
        for (h, caps, want) in cases {
            assert_eq!(fit(&h, caps), want, "{h:?} {caps:?}");
        }
    }

    #[test]
    fn shifting_moves_only_live_offsets() {
        let mut h = hdr(NEEDS_CSUM, GSO_TCPV4);
        h[2..4].copy_from_slice(&54u16.to_le_bytes());
        h[6..8].copy_from_slice(&34u16.to_le_bytes());
        shift_hdr(&mut h, 4);
        assert_eq!(u16::from_le_bytes([h[2], h[3]]), 58);
        assert_eq!(u16::from_le_bytes([h[6], h[7]]), 38);
        let mut plain = hdr(0, 0);
        plain[6] = 34;
        shift_hdr(&mut plain, 4);
        assert_eq!(
            plain[6], 34,
            "csum_start without NEEDS_CSUM is not an offset"
        );
    }
}
