//! The TPACKET_V3 receive ring of one AF_PACKET socket, read in place.
//!
//! The ring is `block_nr` blocks of `block_size` bytes mapped from the kernel
//! (Documentation/networking/packet_mmap.rst). The kernel fills one block at a
//! time with frames, each behind a `struct tpacket3_hdr` and chained by
//! `tp_next_offset`, and hands the block to user space by setting
//! `block_status` to TP_STATUS_USER when the block is full or its retire timer
//! (`tp_retire_blk_tov`) fires. We read the blocks in the kernel's order, copy
//! each frame out, and give a block back (TP_STATUS_KERNEL) as soon as its last
//! frame is copied. Blocks go back in order, so the kernel's next block is always
//! the one after the last we returned.
//!
//! A block we own is never written by the kernel, so it is read as a `&[u8]`;
//! every offset in it is checked before use. Only `block_status` is shared and
//! accessed atomically: acquire when taking the block, release when returning it.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use crate::packet_sys::{
    RingMap, Tpacket3Hdr, TpacketBlockDesc, TpacketHdrV1, PACKET_VNET_HDR_LEN, TP_STATUS_KERNEL,
    TP_STATUS_USER, TP_STATUS_VLAN_TPID_VALID, TP_STATUS_VLAN_VALID,
};
use crate::uplink::VNET_HDR_LEN;

/// Offsets into a block and a frame header (`<linux/if_packet.h>`; the layout
/// tests in `packet_sys` pin the structs these are taken from).
const BLOCK_STATUS: usize =
    std::mem::offset_of!(TpacketBlockDesc, hdr) + std::mem::offset_of!(TpacketHdrV1, block_status);
const BLOCK_NUM_PKTS: usize =
    std::mem::offset_of!(TpacketBlockDesc, hdr) + std::mem::offset_of!(TpacketHdrV1, num_pkts);
const BLOCK_FIRST_PKT: usize = std::mem::offset_of!(TpacketBlockDesc, hdr)
    + std::mem::offset_of!(TpacketHdrV1, offset_to_first_pkt);
const FRAME_HDR_LEN: usize = size_of::<Tpacket3Hdr>();

/// The 802.1Q TPID, used when the kernel did not report one.
const ETH_P_8021Q: u16 = 0x8100;
/// virtio_net_hdr `flags` / `gso_type` bits (VIRTIO 1.2 §5.1.6).
const VIRTIO_NET_HDR_F_NEEDS_CSUM: u8 = 1;
const VIRTIO_NET_HDR_GSO_ECN: u8 = 0x80;

/// Frames a ring skipped, by reason.
#[derive(Debug, Default)]
pub(crate) struct RingCounters {
    /// Longer than what the ring captured (`tp_snaplen < tp_len`) or than the
    /// caller's buffer.
    pub truncated: AtomicU64,
    /// A frame header whose offsets point outside its block; the rest of that
    /// block is skipped.
    pub malformed: AtomicU64,
}

/// Where the reader stands.
#[derive(Debug, Default)]
struct Cursor {
    /// The block to read next (or being read).
    block: usize,
    /// Set while we own `block`: the offset of its next frame and how many are left.
    held: Option<Held>,
}

#[derive(Clone, Copy, Debug)]
struct Held {
    next: usize,
    left: u32,
}

/// One socket's mapped TPACKET_V3 RX ring.
#[derive(Debug)]
pub(crate) struct RxRing {
    map: RingMap,
    block_size: usize,
    block_nr: usize,
    /// The socket has PACKET_VNET_HDR: a virtio_net_hdr precedes every frame.
    vnet_hdr: bool,
    cursor: Mutex<Cursor>,
    pub counters: RingCounters,
}

/// Why one frame was not handed up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Skip {
    Truncated,
    Malformed,
}

/// A frame header, read from a block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Frame {
    /// Offset of the frame header in the block.
    at: usize,
    next_offset: usize,
    snaplen: usize,
    len: usize,
    status: u32,
    mac: usize,
    vlan_tci: u16,
    vlan_tpid: u16,
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    let end = at.checked_add(4)?;
    let bytes = b.get(at..end)?;
    Some(u32::from_ne_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    let end = at.checked_add(2)?;
    let bytes = b.get(at..end)?;
    Some(u16::from_ne_bytes([bytes[0], bytes[1]]))
}

/// Reads the frame header at `at`, checking that the frame lies inside `block`.
fn parse_frame(block: &[u8], at: usize) -> Option<Frame> {
    let field = |off: usize| u32_at(block, at.checked_add(off)?);
    let half = |off: usize| u16_at(block, at.checked_add(off)?);
    let frame = Frame {
        at,
        next_offset: usize::try_from(field(std::mem::offset_of!(Tpacket3Hdr, tp_next_offset))?)
            .ok()?,
        snaplen: usize::try_from(field(std::mem::offset_of!(Tpacket3Hdr, tp_snaplen))?).ok()?,
        len: usize::try_from(field(std::mem::offset_of!(Tpacket3Hdr, tp_len))?).ok()?,
        status: field(std::mem::offset_of!(Tpacket3Hdr, tp_status))?,
        mac: usize::from(half(std::mem::offset_of!(Tpacket3Hdr, tp_mac))?),
        // tp_vlan_tci is a u32 holding a 16-bit TCI.
        vlan_tci: u16::try_from(field(std::mem::offset_of!(Tpacket3Hdr, hv1) + 4)? & 0xffff)
            .ok()?,
        vlan_tpid: half(std::mem::offset_of!(Tpacket3Hdr, hv1) + 8)?,
    };
    let end = at
        .checked_add(FRAME_HDR_LEN)?
        .max(at.checked_add(frame.mac)?.checked_add(frame.snaplen)?);
    (end <= block.len() && frame.mac >= FRAME_HDR_LEN).then_some(frame)
}

/// Moves a virtio_net_hdr's offsets by the 4 bytes of a tag inserted after the MACs.
fn shift_for_tag(hdr: &mut [u8]) {
    let (flags, gso) = (hdr.first().copied(), hdr.get(1).copied());
    let mut bump = |lo: usize| {
        if let Some(b) = hdr.get_mut(lo..lo + 2) {
            let v = u16::from_le_bytes([b[0], b[1]]);
            if v != 0 {
                b.copy_from_slice(&v.saturating_add(4).to_le_bytes());
            }
        }
    };
    if flags.is_some_and(|f| f & VIRTIO_NET_HDR_F_NEEDS_CSUM != 0) {
        bump(6); // csum_start
    }
    if gso.is_some_and(|g| g & !VIRTIO_NET_HDR_GSO_ECN != 0) {
        bump(2); // hdr_len
    }
}

/// Copies `frame` into `out` as [`VNET_HDR_LEN`] bytes of header + the Ethernet
/// frame, with the VLAN tag the kernel took off put back after the MACs.
fn copy_frame(block: &[u8], frame: &Frame, vnet_hdr: bool, out: &mut [u8]) -> Result<usize, Skip> {
    if frame.snaplen < frame.len {
        return Err(Skip::Truncated);
    }
    let start = frame.at + frame.mac;
    // parse_frame checked start + snaplen against the block.
    let data = block
        .get(start..start + frame.snaplen)
        .ok_or(Skip::Malformed)?;
    let tag = (frame.status & TP_STATUS_VLAN_VALID != 0).then(|| {
        let tpid = if frame.status & TP_STATUS_VLAN_TPID_VALID != 0 && frame.vlan_tpid != 0 {
            frame.vlan_tpid
        } else {
            ETH_P_8021Q
        };
        let [t0, t1] = tpid.to_be_bytes();
        let [c0, c1] = frame.vlan_tci.to_be_bytes();
        [t0, t1, c0, c1]
    });
    if tag.is_some() && data.len() < 12 {
        return Err(Skip::Malformed);
    }
    let tag_len = if tag.is_some() { 4 } else { 0 };
    let need = VNET_HDR_LEN + data.len() + tag_len;
    let out = out.get_mut(..need).ok_or(Skip::Truncated)?;
    let (hdr, rest) = out.split_at_mut(VNET_HDR_LEN);
    hdr.fill(0);
    if vnet_hdr {
        // tpacket_rcv() writes the header right before the MAC header.
        let vh = start
            .checked_sub(PACKET_VNET_HDR_LEN)
            .filter(|&s| s >= frame.at + FRAME_HDR_LEN)
            .and_then(|s| block.get(s..start))
            .ok_or(Skip::Malformed)?;
        hdr[..PACKET_VNET_HDR_LEN].copy_from_slice(vh);
        if tag.is_some() {
            shift_for_tag(hdr);
        }
    }
    match tag {
        Some(tag) => {
            rest[..12].copy_from_slice(&data[..12]);
            rest[12..16].copy_from_slice(&tag);
            rest[16..].copy_from_slice(&data[12..]);
        }
        None => rest.copy_from_slice(data),
    }
    Ok(need)
}

impl RxRing {
    /// Wraps a mapped ring of `block_nr` blocks of `block_size` bytes.
    pub(crate) fn new(map: RingMap, block_size: usize, block_nr: usize, vnet_hdr: bool) -> Self {
        debug_assert!(block_size.checked_mul(block_nr) == Some(map.len()));
        RxRing {
            map,
            block_size,
            block_nr,
            vnet_hdr,
            cursor: Mutex::new(Cursor::default()),
            counters: RingCounters::default(),
        }
    }

    /// The status word of block `index` (< block_nr).
    fn status(&self, index: usize) -> &AtomicU32 {
        let offset = index * self.block_size + BLOCK_STATUS;
        debug_assert!(index < self.block_nr && offset + 4 <= self.map.len());
        // SAFETY: `index < block_nr`, so `offset + 4` lies inside the mapping,
        // which lives as long as `self`; blocks start page-aligned and the field
        // is at +8, so it is 4-byte aligned; the kernel and we only access it as
        // a 32-bit word (WRITE_ONCE/smp_wmb on its side).
        unsafe { &*self.map.ptr().add(offset).cast::<AtomicU32>() }
    }

    /// Block `index` as bytes.
    ///
    /// # Safety
    /// The block must be ours (status TP_STATUS_USER, observed with acquire), and
    /// stay ours while the slice lives: the kernel does not write it then.
    unsafe fn block(&self, index: usize) -> &[u8] {
        debug_assert!(index < self.block_nr);
        // SAFETY: the block lies inside the mapping (index < block_nr), which lives
        // as long as `self`; the caller guarantees nobody writes it meanwhile.
        unsafe {
            std::slice::from_raw_parts(self.map.ptr().add(index * self.block_size), self.block_size)
        }
    }

    /// Copies the next frame into `out` (see [`copy_frame`]); `None` when the
    /// kernel has handed over no block with frames left.
    pub(crate) fn recv(&self, out: &mut [u8]) -> Option<usize> {
        let mut cur = self.cursor.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            let block_index = cur.block;
            let mut held = match cur.held {
                Some(held) => held,
                None => {
                    if self.status(block_index).load(Ordering::Acquire) & TP_STATUS_USER == 0 {
                        return None;
                    }
                    // SAFETY: the status says the block is ours until we return it.
                    let block = unsafe { self.block(block_index) };
                    let held = Held {
                        next: u32_at(block, BLOCK_FIRST_PKT)
                            .and_then(|o| usize::try_from(o).ok())
                            .unwrap_or(0),
                        left: u32_at(block, BLOCK_NUM_PKTS).unwrap_or(0),
                    };
                    cur.held = Some(held);
                    held
                }
            };
            let mut result = None;
            if held.left > 0 {
                // SAFETY: `cur.held` is set, so we own the block (taken above or on
                // an earlier call) and return it only below, after the last read.
                let block = unsafe { self.block(block_index) };
                match parse_frame(block, held.next) {
                    Some(frame) => {
                        held.left -= 1;
                        held.next = held.next.saturating_add(frame.next_offset);
                        if held.left > 0 && frame.next_offset == 0 {
                            self.skip(Skip::Malformed, held.left);
                            held.left = 0;
                        }
                        match copy_frame(block, &frame, self.vnet_hdr, out) {
                            Ok(n) => result = Some(n),
                            Err(skip) => self.skip(skip, 1),
                        }
                    }
                    None => {
                        self.skip(Skip::Malformed, held.left);
                        held.left = 0;
                    }
                }
            }
            if held.left == 0 {
                // Every frame is copied out: give the block back.
                cur.held = None;
                self.status(block_index)
                    .store(TP_STATUS_KERNEL, Ordering::Release);
                cur.block = (block_index + 1) % self.block_nr;
            } else {
                cur.held = Some(held);
            }
            if result.is_some() {
                return result;
            }
        }
    }

    fn skip(&self, why: Skip, frames: u32) {
        let counter = match why {
            Skip::Truncated => &self.counters.truncated,
            Skip::Malformed => &self.counters.malformed,
        };
        counter.fetch_add(u64::from(frames), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::offset_of;

    /// Writes a frame header + vnet header + frame at `at` in `block`; returns the
    /// offset right after it, 16-aligned.
    fn put_frame(block: &mut [u8], at: usize, frame: &[u8], status: u32, tci: u16) -> usize {
        let mac: u16 = 80; // past the header and sockaddr_ll, like the kernel's macoff
        let put32 = |b: &mut [u8], off: usize, v: u32| {
            b[at + off..at + off + 4].copy_from_slice(&v.to_ne_bytes())
        };
        let len = u32::try_from(frame.len()).unwrap();
        put32(block, offset_of!(Tpacket3Hdr, tp_snaplen), len);
        put32(block, offset_of!(Tpacket3Hdr, tp_len), len);
        put32(block, offset_of!(Tpacket3Hdr, tp_status), status);
        block[at + 24..at + 26].copy_from_slice(&mac.to_ne_bytes());
        put32(block, offset_of!(Tpacket3Hdr, hv1) + 4, u32::from(tci));
        // A vnet header: NEEDS_CSUM, csum_start 34, csum_offset 16.
        let mac = usize::from(mac);
        let vh = at + mac - PACKET_VNET_HDR_LEN;
        block[vh] = VIRTIO_NET_HDR_F_NEEDS_CSUM;
        block[vh + 6..vh + 8].copy_from_slice(&34u16.to_le_bytes());
        block[vh + 8..vh + 10].copy_from_slice(&16u16.to_le_bytes());
        block[at + mac..at + mac + frame.len()].copy_from_slice(frame);
        let next = (at + mac + frame.len() + 15) & !15;
        put32(block, 0, u32::try_from(next - at).unwrap());
        next
    }

    fn frame(fill: u8, len: usize) -> Vec<u8> {
        let mut f = vec![fill; len];
        f[12] = 0x08;
        f[13] = 0x00;
        f
    }

    #[test]
    fn untagged_frame_is_copied_behind_a_12_byte_header() {
        let mut block = vec![0u8; 4096];
        let f = frame(0xaa, 60);
        put_frame(&mut block, 48, &f, TP_STATUS_USER, 0);
        let parsed = parse_frame(&block, 48).unwrap();
        let mut out = vec![0xffu8; 2048];
        let n = copy_frame(&block, &parsed, true, &mut out).unwrap();
        assert_eq!(n, VNET_HDR_LEN + 60);
        assert_eq!(out[0], VIRTIO_NET_HDR_F_NEEDS_CSUM);
        assert_eq!(u16::from_le_bytes([out[6], out[7]]), 34);
        assert_eq!(&out[10..12], &[0, 0], "num_buffers is zeroed");
        assert_eq!(&out[12..n], &f[..]);

        let n = copy_frame(&block, &parsed, false, &mut out).unwrap();
        assert_eq!(&out[..12], &[0u8; 12], "no vnet header: all zero");
        assert_eq!(&out[12..n], &f[..]);
    }

    #[test]
    fn stripped_vlan_tag_is_put_back_and_offsets_follow() {
        let mut block = vec![0u8; 4096];
        let f = frame(0x11, 64);
        let tci = (3 << 13) | 100;
        put_frame(
            &mut block,
            48,
            &f,
            TP_STATUS_USER | TP_STATUS_VLAN_VALID,
            tci,
        );
        let parsed = parse_frame(&block, 48).unwrap();
        let mut out = vec![0u8; 2048];
        let n = copy_frame(&block, &parsed, true, &mut out).unwrap();
        assert_eq!(n, VNET_HDR_LEN + 64 + 4);
        let eth = &out[12..n];
        assert_eq!(&eth[..12], &f[..12]);
        assert_eq!(&eth[12..16], &[0x81, 0x00, 0x60, 100]);
        assert_eq!(&eth[16..], &f[12..]);
        assert_eq!(u16::from_le_bytes([out[6], out[7]]), 38, "csum_start moved");

        // 802.1ad when the kernel reports the TPID.
        let at = offset_of!(Tpacket3Hdr, hv1) + 8 + 48;
        block[at..at + 2].copy_from_slice(&0x88a8u16.to_ne_bytes());
        let status = TP_STATUS_USER | TP_STATUS_VLAN_VALID | TP_STATUS_VLAN_TPID_VALID;
        block[48 + 20..48 + 24].copy_from_slice(&status.to_ne_bytes());
        let parsed = parse_frame(&block, 48).unwrap();
        copy_frame(&block, &parsed, true, &mut out).unwrap();
        assert_eq!(&out[24..26], &[0x88, 0xa8]);
    }

    #[test]
    fn bad_frames_are_skipped_with_a_reason() {
        let mut block = vec![0u8; 4096];
        let f = frame(0x22, 100);
        put_frame(&mut block, 48, &f, TP_STATUS_USER, 0);
        let good = parse_frame(&block, 48).unwrap();
        let mut small = vec![0u8; 50];
        assert_eq!(
            copy_frame(&block, &good, true, &mut small),
            Err(Skip::Truncated)
        );
        let cut = Frame {
            len: good.len + 1,
            ..good
        };
        let mut out = vec![0u8; 2048];
        assert_eq!(
            copy_frame(&block, &cut, true, &mut out),
            Err(Skip::Truncated)
        );
        // Offsets outside the block.
        assert_eq!(parse_frame(&block, 4090), None);
        assert_eq!(parse_frame(&block, usize::MAX - 2), None);
        let mut huge = block.clone();
        huge[48 + 12..48 + 16].copy_from_slice(&5000u32.to_ne_bytes());
        assert_eq!(parse_frame(&huge, 48), None);
        let mut low_mac = block.clone();
        low_mac[48 + 24..48 + 26].copy_from_slice(&8u16.to_ne_bytes());
        assert_eq!(parse_frame(&low_mac, 48), None);
    }

    #[test]
    fn gso_hdr_len_moves_with_the_tag() {
        let mut h = [0u8; 12];
        h[1] = 1; // GSO_TCPV4
        h[2..4].copy_from_slice(&54u16.to_le_bytes());
        shift_for_tag(&mut h);
        assert_eq!(u16::from_le_bytes([h[2], h[3]]), 58);
        assert_eq!(
            u16::from_le_bytes([h[6], h[7]]),
            0,
            "no NEEDS_CSUM: untouched"
        );
    }
}
