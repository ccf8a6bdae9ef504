//! quiver's split-virtqueue accessor (VIRTIO 1.2 §2.7).
//!
//! virtio-queue's `Queue` publishes the used index on every `add_used` and its
//! `needs_notification` ignores VRING_AVAIL_F_NO_INTERRUPT. Here used elements are
//! written as they complete and the index is published once per burst, followed by one
//! notification decision (§2.7.7.2 with EVENT_IDX, §2.7.7.1 flags otherwise).
//!
//! A `SplitRing` lives for one burst: it maps the three ring areas once, so walking
//! descriptors costs no region lookup, and the caller stores `next_avail`/`next_used`
//! back into its persistent queue state afterwards.

use std::num::Wrapping;
use std::sync::atomic::{fence, Ordering};

use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, VolatileMemory};

use crate::{GuestMem, Slice};

/// VIRTIO 1.2 §2.7: the largest split queue.
pub const MAX_QUEUE_SIZE: u16 = 32768;
const VRING_AVAIL_F_NO_INTERRUPT: u16 = 1;
const VRING_USED_F_NO_NOTIFY: u16 = 1;

/// Guest-physical addresses and size of one split virtqueue.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct RingAddrs {
    pub desc: u64,
    pub avail: u64,
    pub used: u64,
    pub size: u16,
}

/// A ring that cannot be used at all: the queue must stop.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
pub enum RingError {
    #[error("queue size {0} is not a power of two in 1..=32768")]
    BadSize(u16),
    #[error("{area} ring at {addr:#x} is misaligned")]
    Misaligned { area: &'static str, addr: u64 },
    #[error("{area} ring at {addr:#x} (+{len}) is not in guest memory")]
    Unmappable {
        area: &'static str,
        addr: u64,
        len: usize,
    },
    #[error("avail index jumped to {avail_idx} from {next_avail} on a ring of {size}")]
    AvailJump {
        avail_idx: u16,
        next_avail: u16,
        size: u16,
    },
    #[error("ring memory access failed at offset {offset}")]
    Access { offset: usize },
}

/// Why `pop` produced no chain.
#[derive(Debug, PartialEq, Eq)]
pub enum PopError {
    /// The avail ring holds nothing more.
    Empty,
    /// The ring is corrupt; stop the queue.
    Ring(RingError),
}

impl From<RingError> for PopError {
    fn from(e: RingError) -> Self {
        PopError::Ring(e)
    }
}

/// One burst's view of a split virtqueue.
pub struct SplitRing<'m> {
    desc: Slice<'m>,
    avail: Slice<'m>,
    used: Slice<'m>,
    size: u16,
    event_idx: bool,
    next_avail: Wrapping<u16>,
    next_used: Wrapping<u16>,
    published_used: Wrapping<u16>,
    /// Last avail index read from the guest; chains before it are known to be there.
    avail_idx: Wrapping<u16>,
}

fn map_area<'m>(
    mem: &'m GuestMem,
    area: &'static str,
    addr: u64,
    len: usize,
    align: u64,
) -> Result<Slice<'m>, RingError> {
    if addr % align != 0 {
        return Err(RingError::Misaligned { area, addr });
    }
    mem.get_slice(GuestAddress(addr), len)
        .map_err(|_source| RingError::Unmappable { area, addr, len })
}

impl<'m> SplitRing<'m> {
    /// Maps the ring areas. `next_used` is also taken as the last published used index.
    pub fn new(
        mem: &'m GuestMem,
        addrs: RingAddrs,
        event_idx: bool,
        next_avail: u16,
        next_used: u16,
    ) -> Result<Self, RingError> {
        let size = addrs.size;
        if size == 0 || size > MAX_QUEUE_SIZE || !size.is_power_of_two() {
            return Err(RingError::BadSize(size));
        }
        let n = usize::from(size);
        // §2.7 "Virtqueue alignment": descriptor table 16, avail 2, used 4.
        let desc = map_area(mem, "descriptor", addrs.desc, 16 * n, 16)?;
        let avail = map_area(mem, "available", addrs.avail, 6 + 2 * n, 2)?;
        let used = map_area(mem, "used", addrs.used, 6 + 8 * n, 4)?;
        Ok(SplitRing {
            desc,
            avail,
            used,
            size,
            event_idx,
            next_avail: Wrapping(next_avail),
            next_used: Wrapping(next_used),
            published_used: Wrapping(next_used),
            avail_idx: Wrapping(next_avail),
        })
    }

    pub fn size(&self) -> u16 {
        self.size
    }

    pub fn event_idx(&self) -> bool {
        self.event_idx
    }

    pub fn next_avail(&self) -> u16 {
        self.next_avail.0
    }

    pub fn next_used(&self) -> u16 {
        self.next_used.0
    }

    pub(crate) fn desc_table(&self) -> &Slice<'m> {
        &self.desc
    }

    fn load_u16(slice: &Slice<'m>, offset: usize, order: Ordering) -> Result<u16, RingError> {
        slice
            .load::<u16>(offset, order)
            .map(u16::from_le)
            .map_err(|_source| RingError::Access { offset })
    }

    fn store_u16(
        slice: &Slice<'m>,
        offset: usize,
        val: u16,
        order: Ordering,
    ) -> Result<(), RingError> {
        slice
            .store(val.to_le(), offset, order)
            .map_err(|_source| RingError::Access { offset })
    }

    /// Reads the guest's avail index; returns how many chains wait.
    pub fn refresh_avail(&mut self) -> Result<u16, RingError> {
        // Acquire pairs with the driver's write barrier before it bumps idx (§2.7.13):
        // ring entries and descriptors read after this are the ones it published.
        let idx = Wrapping(Self::load_u16(&self.avail, 2, Ordering::Acquire)?);
        let pending = (idx - self.next_avail).0;
        if pending > self.size {
            return Err(RingError::AvailJump {
                avail_idx: idx.0,
                next_avail: self.next_avail.0,
                size: self.size,
            });
        }
        self.avail_idx = idx;
        Ok(pending)
    }

    /// Chains known to be available without reading the guest's index again.
    pub fn pending(&self) -> u16 {
        (self.avail_idx - self.next_avail).0
    }

    /// Takes the next available head index (not yet validated against the size).
    pub fn pop(&mut self) -> Result<u16, PopError> {
        if self.avail_idx == self.next_avail && self.refresh_avail()? == 0 {
            return Err(PopError::Empty);
        }
        let slot = usize::from(self.next_avail.0 & (self.size - 1));
        let head = Self::load_u16(&self.avail, 4 + 2 * slot, Ordering::Relaxed)?;
        self.next_avail += Wrapping(1);
        Ok(head)
    }

    /// Gives back the last `n` popped chains (a frame that did not fit is retried later).
    pub fn unpop(&mut self, n: u16) {
        self.next_avail -= Wrapping(n);
    }

    /// Writes one used element; the guest sees it at the next `publish_used`.
    pub fn add_used(&mut self, id: u16, len: u32) -> Result<(), RingError> {
        let slot = usize::from(self.next_used.0 & (self.size - 1));
        let offset = 4 + 8 * slot;
        let mut elem = [0u8; 8];
        elem[..4].copy_from_slice(&u32::from(id).to_le_bytes());
        elem[4..].copy_from_slice(&len.to_le_bytes());
        self.used
            .get_ref::<[u8; 8]>(offset)
            .map_err(|_source| RingError::Access { offset })?
            .store(elem);
        self.next_used += Wrapping(1);
        Ok(())
    }

    /// Takes the used index in guest memory as the last published one, for a ring
    /// whose previous burst left used elements unpublished (deferred reclaim): `new`
    /// assumes `next_used` was published. Only the device writes that index; a guest
    /// that scribbles on it only changes its own notifications.
    pub fn resume_published(&mut self) -> Result<(), RingError> {
        self.published_used = Wrapping(Self::load_u16(&self.used, 2, Ordering::Relaxed)?);
        Ok(())
    }

    /// Chains the guest has made available (as last read) and not yet got back in a
    /// published used index.
    pub fn in_flight(&self) -> u16 {
        (self.avail_idx - self.published_used).0
    }

    /// Used elements written but not yet published.
    pub fn unpublished(&self) -> u16 {
        (self.next_used - self.published_used).0
    }

    /// Publishes the used index once for everything added since the last publish, and
    /// says whether the guest wants an interrupt for it.
    pub fn publish_used(&mut self) -> Result<bool, RingError> {
        if self.next_used == self.published_used {
            return Ok(false);
        }
        let old = self.published_used;
        let new = self.next_used;
        // Release: the used elements written above become visible before the index.
        Self::store_u16(&self.used, 2, new.0, Ordering::Release)?;
        self.published_used = new;
        // The index store must be visible before reading the guest's suppression state,
        // or both sides may decide the other will act (§2.7.10 / Linux virtio_mb).
        fence(Ordering::SeqCst);
        if self.event_idx {
            let offset = 4 + 2 * usize::from(self.size);
            let used_event = Wrapping(Self::load_u16(&self.avail, offset, Ordering::Relaxed)?);
            Ok(need_event(used_event, new, old))
        } else {
            let flags = Self::load_u16(&self.avail, 0, Ordering::Relaxed)?;
            Ok(flags & VRING_AVAIL_F_NO_INTERRUPT == 0)
        }
    }

    /// Asks the guest to kick when it adds buffers; returns true if some arrived
    /// meanwhile (the caller must process them, or it would miss them).
    pub fn enable_notification(&mut self) -> Result<bool, RingError> {
        if self.event_idx {
            let offset = 4 + 8 * usize::from(self.size);
            Self::store_u16(&self.used, offset, self.next_avail.0, Ordering::Relaxed)?;
        } else {
            Self::store_u16(&self.used, 0, 0, Ordering::Relaxed)?;
        }
        fence(Ordering::SeqCst);
        Ok(self.refresh_avail()? != 0)
    }

    /// Tells the guest not to kick while the device is polling this ring anyway.
    pub fn disable_notification(&mut self) -> Result<(), RingError> {
        // With EVENT_IDX, leaving avail_event behind next_avail suppresses kicks.
        if !self.event_idx {
            Self::store_u16(&self.used, 0, VRING_USED_F_NO_NOTIFY, Ordering::Relaxed)?;
        }
        Ok(())
    }
}

impl SplitRing<'_> {
    /// Asks the guest never to kick this ring (the device does not need it): NO_NOTIFY
    /// without EVENT_IDX; with it, avail_event just behind next_avail, which the
    /// guest's index only passes again after 65535 more buffers.
    pub fn suppress_kicks(&mut self) -> Result<(), RingError> {
        if self.event_idx {
            let offset = 4 + 8 * usize::from(self.size);
            let behind = (self.next_avail - Wrapping(1)).0;
            Self::store_u16(&self.used, offset, behind, Ordering::Relaxed)
        } else {
            Self::store_u16(&self.used, 0, VRING_USED_F_NO_NOTIFY, Ordering::Relaxed)
        }
    }
}

/// `vring_need_event` (VIRTIO 1.2 §2.7.7.2): did `new` pass `event` since `old`?
pub fn need_event(event: Wrapping<u16>, new: Wrapping<u16>, old: Wrapping<u16>) -> bool {
    (new - event - Wrapping(1)).0 < (new - old).0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::tests::d;
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::{Address, GuestMemoryMmap};

    fn mem() -> GuestMem {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10_0000)]).expect("memory")
    }

    fn put(m: &GuestMem, addr: GuestAddress, off: u64, v: u16) {
        m.write_obj(v.to_le(), addr.unchecked_add(off))
            .expect("write");
    }

    fn get(m: &GuestMem, addr: GuestAddress, off: u64) -> u16 {
        u16::from_le(m.read_obj(addr.unchecked_add(off)).expect("read"))
    }

    fn ring_of<'m>(m: &'m GuestMem, q: &MockSplitQueue<'_, GuestMem>, ev: bool) -> SplitRing<'m> {
        let addrs = RingAddrs {
            desc: q.desc_table_addr().0,
            avail: q.avail_addr().0,
            used: crate::chain::tests::USED,
            size: 16,
        };
        SplitRing::new(m, addrs, ev, 0, 0).expect("ring")
    }

    #[test]
    fn need_event_matches_the_spec_formula() {
        let w = Wrapping;
        assert!(need_event(w(0), w(1), w(0)));
        assert!(!need_event(w(5), w(3), w(0)));
        assert!(need_event(w(5), w(6), w(3)));
        assert!(!need_event(w(5), w(9), w(6)));
        assert!(need_event(w(65535), w(0), w(65534)));
    }

    #[test]
    fn rejects_bad_sizes_and_unmappable_rings() {
        let m = mem();
        let base = RingAddrs {
            desc: 0x1000,
            avail: 0x2000,
            used: 0x3000,
            size: 16,
        };
        for size in [0u16, 3, 100] {
            let r = SplitRing::new(&m, RingAddrs { size, ..base }, false, 0, 0);
            assert_eq!(r.err(), Some(RingError::BadSize(size)));
        }
        let r = SplitRing::new(
            &m,
            RingAddrs {
                used: 0x10_0000,
                ..base
            },
            false,
            0,
            0,
        );
        assert!(matches!(
            r.err(),
            Some(RingError::Unmappable { area: "used", .. })
        ));
        let r = SplitRing::new(
            &m,
            RingAddrs {
                desc: 0x1008,
                ..base
            },
            false,
            0,
            0,
        );
        assert!(matches!(r.err(), Some(RingError::Misaligned { .. })));
    }

    #[test]
    fn pop_and_batched_publish() {
        let m = mem();
        let q = MockSplitQueue::new(&m, 16);
        q.add_desc_chains(&[d(0x1_0000, 10, 0, 0), d(0x2_0000, 10, 0, 0)], 0)
            .expect("chains");
        let mut r = ring_of(&m, &q, false);
        let a = r.pop().expect("head");
        let b = r.pop().expect("head");
        assert_eq!((a, b), (0, 1));
        assert_eq!(r.pop(), Err(PopError::Empty));
        r.add_used(a, 10).expect("used");
        r.add_used(b, 20).expect("used");
        // Nothing is visible before the publish.
        assert_eq!(get(&m, GuestAddress(crate::chain::tests::USED), 2), 0);
        assert!(r.publish_used().expect("publish"));
        assert_eq!(get(&m, GuestAddress(crate::chain::tests::USED), 2), 2);
        // Nothing new: no second publish, no notification.
        assert!(!r.publish_used().expect("publish"));
    }

    #[test]
    fn deferred_completions_are_published_by_a_later_view() {
        let m = mem();
        let q = MockSplitQueue::new(&m, 16);
        q.add_desc_chains(&[d(0x1_0000, 10, 0, 0), d(0x2_0000, 10, 0, 0)], 0)
            .expect("chains");
        let used = GuestAddress(crate::chain::tests::USED);
        // Burst 1 completes one chain and leaves it unpublished.
        let mut r = ring_of(&m, &q, false);
        let a = r.pop().expect("head");
        r.add_used(a, 0).expect("used");
        assert_eq!((r.in_flight(), r.unpublished()), (2, 1));
        let (next_avail, next_used) = (r.next_avail(), r.next_used());
        // Burst 2 opens a new view from the stored indices: without
        // resume_published it would believe index 1 was published already.
        let addrs = RingAddrs {
            desc: q.desc_table_addr().0,
            avail: q.avail_addr().0,
            used: used.0,
            size: 16,
        };
        let mut r = SplitRing::new(&m, addrs, false, next_avail, next_used).expect("ring");
        assert_eq!(r.unpublished(), 0);
        r.resume_published().expect("used idx");
        assert_eq!(r.unpublished(), 1);
        let b = r.pop().expect("head");
        r.add_used(b, 0).expect("used");
        assert_eq!(get(&m, used, 2), 0);
        assert!(r.publish_used().expect("publish"));
        assert_eq!(get(&m, used, 2), 2);
        assert_eq!(r.in_flight(), 0);
    }

    #[test]
    fn no_interrupt_flag_is_honoured_without_event_idx() {
        let m = mem();
        let mut q = MockSplitQueue::new(&m, 16);
        q.add_chain(1).expect("chain");
        put(&m, q.avail_addr(), 0, VRING_AVAIL_F_NO_INTERRUPT);
        let mut r = ring_of(&m, &q, false);
        let head = r.pop().expect("head");
        r.add_used(head, 0).expect("used");
        assert!(!r.publish_used().expect("publish"));
    }

    #[test]
    fn used_event_suppresses_interrupts() {
        let m = mem();
        let mut q = MockSplitQueue::new(&m, 16);
        for _ in 0..4 {
            q.add_chain(1).expect("chain");
        }
        // used_event = 2: the guest wants an interrupt once used idx passes 2.
        put(&m, q.avail_addr(), 4 + 2 * 16, 2);
        let mut r = ring_of(&m, &q, true);
        let h = r.pop().expect("head");
        r.add_used(h, 0).expect("used");
        assert!(!r.publish_used().expect("publish"), "idx 1 does not pass 2");
        for _ in 0..2 {
            let h = r.pop().expect("head");
            r.add_used(h, 0).expect("used");
        }
        let ev = get(&m, q.avail_addr(), 4 + 2 * 16);
        assert!(
            r.publish_used().expect("publish"),
            "idx 3 passes 2 (event {ev}, used {})",
            r.next_used()
        );
    }

    #[test]
    fn avail_jump_is_a_ring_error() {
        let m = mem();
        let q = MockSplitQueue::new(&m, 16);
        put(&m, q.avail_addr(), 2, 17);
        let mut r = ring_of(&m, &q, false);
        assert!(matches!(
            r.pop(),
            Err(PopError::Ring(RingError::AvailJump { avail_idx: 17, .. }))
        ));
    }

    #[test]
    fn enable_notification_writes_avail_event_and_rechecks() {
        let m = mem();
        let mut q = MockSplitQueue::new(&m, 16);
        q.add_chain(1).expect("chain");
        let mut r = ring_of(&m, &q, true);
        r.pop().expect("head");
        assert!(!r.enable_notification().expect("enable"));
        assert_eq!(
            get(&m, GuestAddress(crate::chain::tests::USED), 4 + 8 * 16),
            1
        );
        q.add_chain(1).expect("chain");
        assert!(r.enable_notification().expect("enable"));
        // Without EVENT_IDX the NO_NOTIFY flag is set and cleared.
        let mut r = ring_of(&m, &q, false);
        r.disable_notification().expect("disable");
        assert_eq!(
            get(&m, GuestAddress(crate::chain::tests::USED), 0),
            VRING_USED_F_NO_NOTIFY
        );
        r.enable_notification().expect("enable");
        assert_eq!(get(&m, GuestAddress(crate::chain::tests::USED), 0), 0);
    }
}
