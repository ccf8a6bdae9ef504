//! The driver side of one split virtqueue (VIRTIO 1.2 §2.7): descriptor
//! allocation, the avail ring, used-ring consumption and notification rules.

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::{fence, Ordering};

use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::layout::{vring_need_event, RingLayout, VRING_USED_F_NO_NOTIFY};
use crate::mem::{GuestMem, MemError};
use crate::stats::QueueStats;

/// Errors of virtqueue handling.
#[derive(Debug, thiserror::Error)]
pub enum VringError {
    /// Ring memory access failed.
    #[error("ring memory access failed")]
    Mem(#[from] MemError),
    /// The device moved used.idx further than the queue size allows.
    #[error("queue {queue}: used idx jumped from {last} to {idx} (queue size {size})")]
    UsedIdxJump {
        /// vhost queue index.
        queue: usize,
        /// Last used index consumed.
        last: u16,
        /// Index found in memory.
        idx: u16,
        /// Queue size.
        size: u16,
    },
    /// Writing the kick eventfd failed.
    #[error("queue {queue}: kick failed")]
    Kick {
        /// vhost queue index.
        queue: usize,
        /// Cause.
        #[source]
        source: io::Error,
    },
}

/// What a posted chain carries, so a completion can be routed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Token {
    /// An RX buffer chain posted by the driver.
    Rx,
    /// A TX frame; arena spans to free on completion.
    Tx(Vec<u64>),
    /// A chain posted by `post_raw`.
    Raw,
}

/// One outstanding chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    /// Descriptor slots in chain order (the first is the head).
    pub descs: Vec<u16>,
    /// Owner.
    pub token: Token,
}

/// One used-ring entry, resolved against outstanding chains.
#[derive(Debug)]
pub struct Completion {
    /// id as written by the device.
    pub id: u32,
    /// len as written by the device.
    pub len: u32,
    /// The chain whose head is `id`, if it was outstanding.
    pub chain: Option<Chain>,
    /// IN_ORDER batch: earlier chains completed implicitly by this entry.
    pub skipped: Vec<Chain>,
}

/// One descriptor to write. `next: None` links to the next descriptor of the
/// same chain (or 0 for the last one); flags are written exactly as given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DescSpec {
    /// Buffer address.
    pub addr: u64,
    /// Buffer length.
    pub len: u32,
    /// VRING_DESC_F_* flags.
    pub flags: u16,
    /// Explicit next index, overriding the layout.
    pub next: Option<u16>,
}

#[derive(Debug)]
enum DescAlloc {
    /// Any free slot, FIFO.
    FreeList(VecDeque<u16>),
    /// VIRTIO 1.2 §2.7.9 IN_ORDER: slots in ring order, wrapping.
    InOrder { next: u16, free: u16 },
}

/// Driver state of one split virtqueue.
#[derive(Debug)]
pub struct Vring {
    /// Where the ring lives.
    pub layout: RingLayout,
    /// vhost-user queue index.
    pub index: usize,
    event_idx: bool,
    in_order: bool,
    avail_idx: u16,
    last_used: u16,
    notified_at: u16,
    alloc: DescAlloc,
    inflight: Vec<Option<Chain>>,
    order: VecDeque<u16>,
    /// Driver → device notification.
    pub kick: EventFd,
    /// Device → driver notification.
    pub call: EventFd,
    /// Counters.
    pub stats: QueueStats,
    /// Every used entry consumed, (id, len).
    pub used_log: Vec<(u32, u32)>,
}

impl Vring {
    /// A ring at `layout` with fresh eventfds.
    pub fn new(
        layout: RingLayout,
        index: usize,
        event_idx: bool,
        in_order: bool,
    ) -> io::Result<Self> {
        let size = layout.size;
        let alloc = if in_order {
            DescAlloc::InOrder {
                next: 0,
                free: size,
            }
        } else {
            DescAlloc::FreeList((0..size).collect())
        };
        Ok(Vring {
            layout,
            index,
            event_idx,
            in_order,
            avail_idx: 0,
            last_used: 0,
            notified_at: 0,
            alloc,
            inflight: vec![None; usize::from(size)],
            order: VecDeque::new(),
            kick: EventFd::new(EFD_NONBLOCK)?,
            call: EventFd::new(EFD_NONBLOCK)?,
            stats: QueueStats::default(),
            used_log: Vec::new(),
        })
    }

    /// Free descriptor slots.
    pub fn free_descs(&self) -> usize {
        match &self.alloc {
            DescAlloc::FreeList(l) => l.len(),
            DescAlloc::InOrder { free, .. } => usize::from(*free),
        }
    }

    /// Shadow avail idx (next entry the driver will fill).
    pub fn avail_idx(&self) -> u16 {
        self.avail_idx
    }

    /// Next used idx the driver will consume.
    pub fn last_used(&self) -> u16 {
        self.last_used
    }

    fn take_slots(&mut self, n: usize) -> Option<Vec<u16>> {
        let size = self.layout.size;
        match &mut self.alloc {
            DescAlloc::FreeList(l) => {
                if n == 0 || l.len() < n {
                    return None;
                }
                Some(l.drain(..n).collect())
            }
            DescAlloc::InOrder { next, free } => {
                if n == 0 || usize::from(*free) < n {
                    return None;
                }
                let start = *next;
                let slots = (0..n)
                    .map(|i| {
                        let i = u16::try_from(i).unwrap_or(0);
                        (start.wrapping_add(i)) % size
                    })
                    .collect();
                let n16 = u16::try_from(n).unwrap_or(u16::MAX);
                *next = start.wrapping_add(n16) % size;
                *free -= n16;
                Some(slots)
            }
        }
    }

    fn release(&mut self, chain: &Chain) {
        match &mut self.alloc {
            DescAlloc::FreeList(l) => l.extend(chain.descs.iter().copied()),
            DescAlloc::InOrder { free, .. } => {
                let n = u16::try_from(chain.descs.len()).unwrap_or(u16::MAX);
                *free = free.saturating_add(n);
            }
        }
    }

    /// Write a chain into free descriptor slots and the avail ring (not yet
    /// published). Returns the head, or None if there are not enough free slots.
    pub fn add(
        &mut self,
        mem: &GuestMem,
        descs: &[DescSpec],
        token: Token,
    ) -> Result<Option<u16>, MemError> {
        self.add_with(mem, descs.len(), |i, _| descs[i], token)
    }

    /// Like [`Vring::add`], with descriptor `i` built by `f(i, slot)` once its
    /// slot is known (RX buffers are bound to slots).
    pub fn add_with(
        &mut self,
        mem: &GuestMem,
        n: usize,
        mut f: impl FnMut(usize, u16) -> DescSpec,
        token: Token,
    ) -> Result<Option<u16>, MemError> {
        let Some(slots) = self.take_slots(n) else {
            return Ok(None);
        };
        for (i, &slot) in slots.iter().enumerate() {
            let d = f(i, slot);
            let next = d
                .next
                .unwrap_or_else(|| slots.get(i + 1).copied().unwrap_or(0));
            let mut raw = [0u8; 16];
            raw[0..8].copy_from_slice(&d.addr.to_le_bytes());
            raw[8..12].copy_from_slice(&d.len.to_le_bytes());
            raw[12..14].copy_from_slice(&d.flags.to_le_bytes());
            raw[14..16].copy_from_slice(&next.to_le_bytes());
            mem.write(self.layout.desc_addr(slot), &raw)?;
        }
        let head = slots[0];
        mem.write_u16(self.layout.avail_slot(self.avail_idx), head)?;
        self.avail_idx = self.avail_idx.wrapping_add(1);
        self.inflight[usize::from(head)] = Some(Chain {
            descs: slots,
            token,
        });
        if self.in_order {
            self.order.push_back(head);
        }
        Ok(Some(head))
    }

    /// Make added entries visible to the device (release store of avail.idx).
    pub fn publish(&mut self, mem: &GuestMem) -> Result<(), MemError> {
        mem.store_u16_release(self.layout.avail_idx(), self.avail_idx)
    }

    /// Advance avail idx by `n` without adding descriptors (ring corruption).
    pub fn bump_avail(&mut self, n: u16) {
        self.avail_idx = self.avail_idx.wrapping_add(n);
    }

    /// Kick the device if it asked to be notified about the entries published
    /// since the last call (VIRTIO 1.2 §2.7.10), or always if `force`.
    pub fn notify(&mut self, mem: &GuestMem, force: bool) -> Result<bool, VringError> {
        // The avail.idx store must be visible before we read the device's
        // suppression state, or both sides may decide the other will act.
        fence(Ordering::SeqCst);
        let old = self.notified_at;
        let new = self.avail_idx;
        self.notified_at = new;
        let need = if force {
            true
        } else if old == new {
            false
        } else if self.event_idx {
            let event = mem.load_u16_acquire(self.layout.avail_event())?;
            vring_need_event(event, new, old)
        } else {
            mem.load_u16_acquire(self.layout.used_flags())? & VRING_USED_F_NO_NOTIFY == 0
        };
        if need {
            self.kick.write(1).map_err(|source| VringError::Kick {
                queue: self.index,
                source,
            })?;
            self.stats.kicks_sent += 1;
        } else if old != new {
            self.stats.kicks_suppressed += 1;
        }
        Ok(need)
    }

    /// Whether the device has used entries the driver has not consumed.
    pub fn has_used(&self, mem: &GuestMem) -> Result<bool, MemError> {
        Ok(mem.load_u16_acquire(self.layout.used_idx())? != self.last_used)
    }

    /// Ask for a call on the next used entry: with EVENT_IDX, used_event =
    /// last consumed index (as Linux does while callbacks are enabled). Then
    /// re-check for entries that raced with the write.
    pub fn enable_calls(&mut self, mem: &GuestMem) -> Result<bool, MemError> {
        if self.event_idx {
            mem.write_u16(self.layout.used_event(), self.last_used)?;
        }
        fence(Ordering::SeqCst);
        self.has_used(mem)
    }

    /// Drain the call eventfd, counting a call if it was signalled.
    pub fn drain_call(&mut self) -> bool {
        match self.call.read() {
            Ok(_) => {
                self.stats.calls_seen += 1;
                true
            }
            Err(_) => false,
        }
    }

    /// Consume one used entry.
    pub fn pop_used(&mut self, mem: &GuestMem) -> Result<Option<Completion>, VringError> {
        let idx = mem.load_u16_acquire(self.layout.used_idx())?;
        if idx == self.last_used {
            return Ok(None);
        }
        let size = self.layout.size;
        if idx.wrapping_sub(self.last_used) > size {
            self.stats.bad_used += 1;
            return Err(VringError::UsedIdxJump {
                queue: self.index,
                last: self.last_used,
                idx,
                size,
            });
        }
        let slot = self.layout.used_slot(self.last_used);
        let id = mem.read_u32(slot)?;
        let len = mem.read_u32(slot + 4)?;
        self.last_used = self.last_used.wrapping_add(1);
        self.stats.used_seen += 1;
        self.used_log.push((id, len));
        if self.event_idx {
            mem.write_u16(self.layout.used_event(), self.last_used)?;
        }
        let mut skipped = Vec::new();
        let head = u16::try_from(id).ok().filter(|&h| h < size);
        let chain = match head {
            None => None,
            Some(h) if self.in_order => match self.order.iter().position(|&x| x == h) {
                None => None,
                Some(pos) => {
                    // VIRTIO 1.2 §2.7.9: one used entry may stand for a batch
                    // ending with this buffer.
                    for _ in 0..pos {
                        if let Some(e) = self.order.pop_front() {
                            if let Some(c) = self.inflight[usize::from(e)].take() {
                                self.release(&c);
                                skipped.push(c);
                            }
                        }
                    }
                    self.order.pop_front();
                    self.inflight[usize::from(h)].take()
                }
            },
            Some(h) => self.inflight[usize::from(h)].take(),
        };
        match &chain {
            Some(c) => self.release(c),
            None => self.stats.bad_used += 1,
        }
        Ok(Some(Completion {
            id,
            len,
            chain,
            skipped,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};

    fn setup(in_order: bool, event_idx: bool) -> (GuestMem, Vring) {
        let mem = GuestMem::new(1 << 16).expect("mem");
        let l = RingLayout {
            size: 4,
            desc: 0x1000,
            avail: 0x2000,
            used: 0x3000,
        };
        (mem, Vring::new(l, 0, event_idx, in_order).expect("ring"))
    }

    fn d(addr: u64, flags: u16) -> DescSpec {
        DescSpec {
            addr,
            len: 100,
            flags,
            next: None,
        }
    }

    /// Play the device: write used entry (id, len) and bump used.idx.
    fn device_use(mem: &GuestMem, r: &Vring, used_idx: u16, id: u32, len: u32) {
        let s = r.layout.used_slot(used_idx);
        mem.write(s, &id.to_le_bytes()).expect("w");
        mem.write(s + 4, &len.to_le_bytes()).expect("w");
        mem.store_u16_release(r.layout.used_idx(), used_idx.wrapping_add(1))
            .expect("w");
    }

    #[test]
    fn chain_is_written_as_spec_says() {
        let (mem, mut r) = setup(false, false);
        let head = r
            .add(
                &mem,
                &[d(0x8000, VRING_DESC_F_NEXT), d(0x9000, VRING_DESC_F_WRITE)],
                Token::Rx,
            )
            .expect("mem")
            .expect("room");
        assert_eq!(head, 0);
        r.publish(&mem).expect("publish");
        let mut raw = [0u8; 16];
        mem.read(r.layout.desc_addr(0), &mut raw).expect("r");
        assert_eq!(u64::from_le_bytes(raw[0..8].try_into().expect("8")), 0x8000);
        assert_eq!(u32::from_le_bytes(raw[8..12].try_into().expect("4")), 100);
        assert_eq!(u16::from_le_bytes([raw[12], raw[13]]), VRING_DESC_F_NEXT);
        assert_eq!(u16::from_le_bytes([raw[14], raw[15]]), 1);
        assert_eq!(mem.read_u16(r.layout.avail_slot(0)).expect("r"), 0);
        assert_eq!(mem.read_u16(r.layout.avail_idx()).expect("r"), 1);
        assert_eq!(r.free_descs(), 2);
    }

    #[test]
    fn ring_full_and_reuse() {
        let (mem, mut r) = setup(false, false);
        for i in 0..4u16 {
            assert_eq!(r.add(&mem, &[d(0, 0)], Token::Rx).expect("m"), Some(i));
        }
        assert_eq!(r.add(&mem, &[d(0, 0)], Token::Rx).expect("m"), None);
        device_use(&mem, &r, 0, 2, 7);
        let c = r.pop_used(&mem).expect("ok").expect("entry");
        assert_eq!((c.id, c.len), (2, 7));
        assert_eq!(c.chain.expect("known").descs, vec![2]);
        assert_eq!(r.add(&mem, &[d(0, 0)], Token::Rx).expect("m"), Some(2));
    }

    #[test]
    fn unknown_id_is_counted_not_fatal() {
        let (mem, mut r) = setup(false, false);
        device_use(&mem, &r, 0, 99, 0);
        let c = r.pop_used(&mem).expect("ok").expect("entry");
        assert!(c.chain.is_none());
        assert_eq!(r.stats.bad_used, 1);
        assert_eq!(r.used_log, vec![(99, 0)]);
    }

    #[test]
    fn used_idx_jump_is_an_error() {
        let (mem, mut r) = setup(false, false);
        mem.store_u16_release(r.layout.used_idx(), 9).expect("w");
        assert!(matches!(
            r.pop_used(&mem),
            Err(VringError::UsedIdxJump { idx: 9, .. })
        ));
    }

    #[test]
    fn in_order_uses_slots_sequentially_and_batches() {
        let (mem, mut r) = setup(true, false);
        let h0 = r
            .add(&mem, &[d(0, VRING_DESC_F_NEXT), d(0, 0)], Token::Rx)
            .expect("m")
            .expect("room");
        let h1 = r
            .add(&mem, &[d(0, 0)], Token::Rx)
            .expect("m")
            .expect("room");
        assert_eq!((h0, h1), (0, 2));
        // One entry for the batch {h0, h1}, naming the last buffer.
        device_use(&mem, &r, 0, u32::from(h1), 0);
        let c = r.pop_used(&mem).expect("ok").expect("entry");
        assert_eq!(c.skipped.len(), 1);
        assert_eq!(c.chain.expect("known").descs, vec![2]);
        assert_eq!(r.free_descs(), 4);
        // Next allocation continues in ring order, wrapping.
        let h2 = r
            .add(&mem, &[d(0, VRING_DESC_F_NEXT), d(0, 0)], Token::Rx)
            .expect("m")
            .expect("room");
        assert_eq!(h2, 3);
        let mut raw = [0u8; 16];
        mem.read(r.layout.desc_addr(3), &mut raw).expect("r");
        assert_eq!(u16::from_le_bytes([raw[14], raw[15]]), 0);
    }

    #[test]
    fn event_idx_kick_suppression() {
        let (mem, mut r) = setup(false, true);
        // Device wants to hear about entry 0.
        mem.write_u16(r.layout.avail_event(), 0).expect("w");
        r.add(&mem, &[d(0, 0)], Token::Rx).expect("m");
        r.publish(&mem).expect("p");
        assert!(r.notify(&mem, false).expect("n"));
        // Still 0: entry 1 needs no kick.
        r.add(&mem, &[d(0, 0)], Token::Rx).expect("m");
        r.publish(&mem).expect("p");
        assert!(!r.notify(&mem, false).expect("n"));
        assert_eq!((r.stats.kicks_sent, r.stats.kicks_suppressed), (1, 1));
        // Nothing added: neither a kick nor a suppression.
        assert!(!r.notify(&mem, false).expect("n"));
        assert_eq!(r.stats.kicks_suppressed, 1);
    }

    #[test]
    fn no_notify_flag_without_event_idx() {
        let (mem, mut r) = setup(false, false);
        mem.write_u16(r.layout.used_flags(), VRING_USED_F_NO_NOTIFY)
            .expect("w");
        r.add(&mem, &[d(0, 0)], Token::Rx).expect("m");
        r.publish(&mem).expect("p");
        assert!(!r.notify(&mem, false).expect("n"));
        mem.write_u16(r.layout.used_flags(), 0).expect("w");
        r.add(&mem, &[d(0, 0)], Token::Rx).expect("m");
        r.publish(&mem).expect("p");
        assert!(r.notify(&mem, false).expect("n"));
    }

    #[test]
    fn used_event_tracks_consumption() {
        let (mem, mut r) = setup(false, true);
        r.add(&mem, &[d(0, 0)], Token::Rx).expect("m");
        r.add(&mem, &[d(0, 0)], Token::Rx).expect("m");
        device_use(&mem, &r, 0, 0, 1);
        r.pop_used(&mem).expect("ok");
        assert_eq!(mem.read_u16(r.layout.used_event()).expect("r"), 1);
        assert!(!r.enable_calls(&mem).expect("ok"));
        device_use(&mem, &r, 1, 1, 1);
        assert!(r.enable_calls(&mem).expect("ok"));
    }
}
