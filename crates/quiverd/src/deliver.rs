//! Writing frames into a VNIC's RX ring (one copy, straight into guest memory) and
//! onto an uplink queue.

use arrayvec::ArrayVec;
use quiver_switch::DropReason;
use quiver_uplink::UplinkQueue;
use quiver_virtio_net::{RingAddrs, RxError, RxOutcome, RxWriter, Slice};
use vhost_user_backend::VringT;
use virtio_bindings::virtio_net::VIRTIO_NET_F_MRG_RXBUF;
use virtio_bindings::virtio_ring::{VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC};
use virtio_queue::QueueT;
use vm_memory::GuestAddressSpace;

use crate::offload::{self, Caps, Fit};
use crate::vq;

use crate::vnic::{Conn, Vnic};

/// One frame to deliver: the virtio_net_hdr its source gave it, its buffers
/// (anywhere: guest memory or a host buffer) and its length.
#[derive(Clone, Copy)]
pub struct RxItem<'a> {
    pub hdr: [u8; 12],
    pub segs: &'a [Slice<'a>],
    pub len: usize,
}

/// Reads the ring addresses out of vhost-user-backend's queue state.
pub fn ring_addrs(q: &virtio_queue::Queue) -> RingAddrs {
    RingAddrs {
        desc: q.desc_table(),
        avail: q.avail_ring(),
        used: q.used_ring(),
        size: q.size(),
    }
}

/// Delivers `frames` to `dst`, on the RX queue of pair `hint % pairs` (or the next
/// enabled one). Counts delivered frames and drops on `dst`'s counters. Never blocks
/// on anything but that RX ring's lock, held for the batch.
pub fn to_vnic(dst: &Vnic, hint: usize, frames: &[RxItem<'_>]) {
    if frames.is_empty() {
        return;
    }
    let pairs = usize::from(dst.cfg.queue_pairs);
    let Some(conn) = dst.conn() else {
        dst.counters(hint % pairs)
            .add_drop(DropReason::NotReady, frames.len() as u64);
        return;
    };
    let mut stopped = false;
    for step in 0..pairs {
        let pair = (hint + step) % pairs;
        match try_pair(dst, &conn, pair, frames) {
            Attempt::Done => return,
            Attempt::NotReady => continue,
            Attempt::Stopped => stopped = true,
        }
    }
    let reason = if stopped {
        DropReason::QueueStopped
    } else {
        DropReason::NotReady
    };
    dst.counters(hint % pairs)
        .add_drop(reason, frames.len() as u64);
}

enum Attempt {
    Done,
    /// Not started or not enabled.
    NotReady,
    /// Stopped after a ring error.
    Stopped,
}

fn try_pair(dst: &Vnic, conn: &Conn, pair: usize, frames: &[RxItem<'_>]) -> Attempt {
    let q = 2 * pair;
    let Some(vring) = conn.vrings.get(q) else {
        return Attempt::NotReady;
    };
    if conn.is_broken(q) {
        return Attempt::Stopped;
    }
    let mut st = vring.get_mut();
    if !st.get_queue().ready() || !st.is_enabled() {
        return Attempt::NotReady;
    }
    let counters = dst.counters(pair);
    let mem = conn.mem.memory();
    let mut ring = match vq::open(&mem, &st, conn.has(VIRTIO_RING_F_EVENT_IDX)) {
        Ok(ring) => ring,
        Err(e) => {
            dst.ring_stopped(conn, q, &e);
            counters.add_drop(DropReason::QueueStopped, frames.len() as u64);
            return Attempt::Done;
        }
    };
    let writer = RxWriter {
        mergeable: conn.has(VIRTIO_NET_F_MRG_RXBUF),
        indirect: conn.has(VIRTIO_RING_F_INDIRECT_DESC),
    };
    let caps = Caps::from_features(conn.features());
    let mut bad = quiver_virtio_net::BadChains::default();
    let (mut packets, mut bytes) = (0u64, 0u64);
    let mut ring_error = None;
    let mut full = false;
    for (i, item) in frames.iter().enumerate() {
        let mut put = |hdr: &[u8; 12], segs: &[Slice<'_>], len: usize| {
            if full || ring_error.is_some() {
                return;
            }
            match writer.write(&mem, &mut ring, hdr, segs, len, &mut bad) {
                Ok(RxOutcome::Delivered { .. }) => {
                    packets += 1;
                    bytes += len as u64;
                }
                Ok(RxOutcome::NoBuffers) => full = true,
                Ok(RxOutcome::TooSmall) => counters.add_drop(DropReason::Oversize, 1),
                Err(RxError::Ring(e)) => ring_error = Some(e),
            }
        };
        match offload::fit(&item.hdr, caps) {
            Fit::AsIs => put(&item.hdr, item.segs, item.len),
            how => {
                let done = offload::done_hdr(caps);
                if let Err(e) = offload::finish(&item.hdr, item.segs, item.len, how, |segs, len| {
                    put(&done, segs, len);
                }) {
                    counters.add_drop(DropReason::OffloadError, 1);
                    log::debug!(
                        "{}: offload of a {}-byte frame failed: {e}",
                        dst.cfg.name,
                        item.len
                    );
                }
            }
        }
        if full {
            // The ring is empty now: the rest would not fit either.
            counters.add_drop(DropReason::NoRxBuffers, (frames.len() - i) as u64);
            break;
        }
        if ring_error.is_some() {
            counters.add_drop(DropReason::QueueStopped, (frames.len() - i) as u64);
            break;
        }
    }
    if bad.count > 0 {
        counters.add_drop(DropReason::BadChain, bad.count);
        if let Some(e) = &bad.last {
            log::debug!("{}: bad RX chain on queue {pair}: {e}", dst.cfg.name);
        }
    }
    counters.add_rx(packets, bytes);
    if let Err(e) = vq::close(&mut st, &mut ring) {
        ring_error.get_or_insert(e);
    }
    if let Some(e) = ring_error {
        dst.ring_stopped(conn, q, &e);
    }
    Attempt::Done
}

/// Most iovecs one uplink frame takes: header, tag, and the frame's segments.
const MAX_IOV: usize = quiver_virtio_net::MAX_FRAME_SEGS + 3;

/// Sends one frame (given as buffers) to an uplink queue, inserting an 802.1Q tag
/// after the MAC addresses when `vlan_tag` is set.
pub fn to_uplink(
    queue: &dyn UplinkQueue,
    hdr: &[u8; 12],
    segs: &[Slice<'_>],
    vlan_tag: Option<[u8; 4]>,
) -> std::io::Result<usize> {
    let mut hdr = *hdr;
    if vlan_tag.is_some() {
        offload::shift_hdr(&mut hdr, 4);
    }
    let mut iov: ArrayVec<libc::iovec, MAX_IOV> = ArrayVec::new();
    let push = |iov: &mut ArrayVec<libc::iovec, MAX_IOV>, ptr: *const u8, len: usize| {
        if len > 0 && !iov.is_full() {
            iov.push(libc::iovec {
                iov_base: ptr.cast_mut().cast(),
                iov_len: len,
            });
        }
    };
    push(&mut iov, hdr.as_ptr(), hdr.len());
    let mut tag_bytes = [0u8; 4];
    let mut split_at = vlan_tag.map(|t| {
        tag_bytes = t;
        12usize
    });
    for seg in segs {
        let ptr = seg.ptr_guard().as_ptr();
        let len = seg.len();
        match split_at {
            Some(at) if at <= len => {
                push(&mut iov, ptr, at);
                push(&mut iov, tag_bytes.as_ptr(), 4);
                // at <= len: the rest of this segment follows the tag.
                push(&mut iov, ptr.wrapping_add(at), len - at);
                split_at = None;
            }
            Some(at) => {
                push(&mut iov, ptr, len);
                split_at = Some(at - len);
            }
            None => push(&mut iov, ptr, len),
        }
    }
    // SAFETY: every iovec points into `hdr`, `tag_bytes` (both live on this stack
    // frame) or a VolatileSlice the caller borrows from a guest-memory guard or a
    // buffer it owns, all alive until `send` returns; lengths are those slices'.
    unsafe { queue.send(&iov) }
}

/// Sends one frame to an uplink that carries no virtio_net_hdr (af_xdp:
/// `Capabilities::vnet_hdr` is false). Offload work the header asks for — a
/// partial checksum, a TSO super-frame — is finished in software first, as for
/// a guest without offloads, and every resulting frame goes with an all-zero
/// header. Returns the bytes handed to the queue, headers included.
pub fn to_plain_uplink(
    queue: &dyn UplinkQueue,
    item: &RxItem<'_>,
    vlan_tag: Option<[u8; 4]>,
) -> std::io::Result<usize> {
    const NO_OFFLOAD: [u8; 12] = [0; 12];
    match offload::fit(&item.hdr, Caps::default()) {
        Fit::AsIs => to_uplink(queue, &NO_OFFLOAD, item.segs, vlan_tag),
        how => {
            let mut sent = Ok(0usize);
            offload::finish(&item.hdr, item.segs, item.len, how, |segs, _len| {
                if let Ok(total) = &mut sent {
                    match to_uplink(queue, &NO_OFFLOAD, segs, vlan_tag) {
                        Ok(n) => *total += n,
                        Err(e) => sent = Err(e),
                    }
                }
            })
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
            sent
        }
    }
}

/// The 802.1Q tag for an access VLAN (priority 0).
pub fn vlan_tag(vid: u16) -> [u8; 4] {
    let tci = (vid & 0x0fff).to_be_bytes();
    [0x81, 0x00, tci[0], tci[1]]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// An uplink queue that records what it is asked to send.
    #[derive(Default)]
    struct Capture(Mutex<Vec<Vec<u8>>>);

    impl UplinkQueue for Capture {
        fn rx_fd(&self) -> Option<std::os::fd::RawFd> {
            None
        }
        fn recv(&self, _buf: &mut [u8]) -> std::io::Result<Option<usize>> {
            Ok(None)
        }
        unsafe fn send(&self, iov: &[libc::iovec]) -> std::io::Result<usize> {
            let mut out = Vec::new();
            for v in iov {
                // SAFETY: the caller guarantees each iovec is readable for iov_len.
                out.extend_from_slice(unsafe {
                    std::slice::from_raw_parts(v.iov_base.cast::<u8>(), v.iov_len)
                });
            }
            let n = out.len();
            self.0.lock().expect("lock").push(out);
            Ok(n)
        }
    }

    fn frame() -> Vec<u8> {
        (0..64u8).collect()
    }

    #[test]
    fn uplink_frames_get_a_header_and_optionally_a_tag_at_byte_12() {
        // The tag must land after the MAC addresses however the frame is split.
        for split in [1usize, 6, 11, 12, 13, 40, 63] {
            let mut f = frame();
            let (a, b) = f.split_at_mut(split);
            let segs = [Slice::from(a), Slice::from(b)];
            let cap = Capture::default();
            to_uplink(&cap, &[0; 12], &segs, Some(vlan_tag(100))).expect("send");
            to_uplink(&cap, &[0; 12], &segs, None).expect("send");
            let sent = cap.0.lock().expect("lock");
            let want_tagged: Vec<u8> = [0u8; 12]
                .iter()
                .chain(&frame()[..12])
                .chain(&[0x81, 0x00, 0x00, 100])
                .chain(&frame()[12..])
                .copied()
                .collect();
            assert_eq!(sent[0], want_tagged, "split at {split}");
            let want_plain: Vec<u8> = [0u8; 12].iter().chain(&frame()).copied().collect();
            assert_eq!(sent[1], want_plain, "split at {split}");
        }
    }

    /// An uplink without vnet headers gets all-zero headers, and a partial
    /// checksum completed in software (the region then sums to 0xffff).
    #[test]
    fn plain_uplink_frames_get_offloads_finished_and_a_zero_header() {
        let mut f = frame();
        f[40..42].copy_from_slice(&[0, 0]);
        let segs = [Slice::from(&mut f[..])];
        let mut hdr = [0u8; 12];
        hdr[0] = offload::NEEDS_CSUM;
        hdr[6..8].copy_from_slice(&34u16.to_le_bytes()); // csum_start
        hdr[8..10].copy_from_slice(&6u16.to_le_bytes()); // csum_offset
        let cap = Capture::default();
        let item = RxItem {
            hdr,
            segs: &segs,
            len: 64,
        };
        assert_eq!(to_plain_uplink(&cap, &item, None).expect("send"), 76);
        hdr[0] = offload::DATA_VALID;
        let item = RxItem { hdr, ..item };
        to_plain_uplink(&cap, &item, Some(vlan_tag(5))).expect("send");
        let sent = cap.0.lock().expect("lock");
        assert_eq!(&sent[0][..12], &[0u8; 12]);
        let sum = sent[0][12 + 34..]
            .chunks(2)
            .map(|w| u32::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)])))
            .sum::<u32>();
        let folded = (sum & 0xffff) + (sum >> 16);
        assert_eq!((folded & 0xffff) + (folded >> 16), 0xffff);
        assert_eq!(&sent[1][..12], &[0u8; 12]);
        assert_eq!(&sent[1][12 + 12..12 + 16], &vlan_tag(5));
    }

    #[test]
    fn vlan_tag_encodes_the_vid() {
        assert_eq!(vlan_tag(4094), [0x81, 0x00, 0x0f, 0xfe]);
        assert_eq!(vlan_tag(1), [0x81, 0x00, 0x00, 0x01]);
    }
}
