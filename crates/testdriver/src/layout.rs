//! Split-virtqueue layout and notification arithmetic (VIRTIO 1.2 §2.7).
//!
//! Written from the specification, independently of any device-side ring
//! code, so that a misreading of the layout cannot be shared by both ends.

/// Descriptor continues via the `next` field (VIRTIO 1.2 §2.7.5).
pub const VRING_DESC_F_NEXT: u16 = 1;
/// Buffer is device write-only (VIRTIO 1.2 §2.7.5).
pub const VRING_DESC_F_WRITE: u16 = 2;
/// Buffer holds a table of indirect descriptors (VIRTIO 1.2 §2.7.5.3).
pub const VRING_DESC_F_INDIRECT: u16 = 4;
/// Device asks the driver not to kick (VIRTIO 1.2 §2.7.10).
pub const VRING_USED_F_NO_NOTIFY: u16 = 1;
/// Driver asks the device not to interrupt (VIRTIO 1.2 §2.7.7).
pub const VRING_AVAIL_F_NO_INTERRUPT: u16 = 1;

/// Size of one descriptor: addr u64, len u32, flags u16, next u16.
pub const DESC_SIZE: u64 = 16;
/// Size of one used element: id u32, len u32.
pub const USED_ELEM_SIZE: u64 = 8;

/// Alignment of the descriptor table (VIRTIO 1.2 §2.7, table "Virtqueue Part Alignment").
pub const DESC_ALIGN: u64 = 16;
/// Alignment of the driver (available) area.
pub const AVAIL_ALIGN: u64 = 2;
/// Alignment of the device (used) area.
pub const USED_ALIGN: u64 = 4;

/// Largest split-queue size (VIRTIO 1.2 §2.7: "Queue Size ... maximum 32768").
pub const MAX_QUEUE_SIZE: u16 = 32768;

/// Whether `size` is a valid split-virtqueue size: a power of two, at most 32768.
pub fn valid_queue_size(size: u16) -> bool {
    size.is_power_of_two() && size <= MAX_QUEUE_SIZE
}

/// Guest-physical addresses of the three parts of one split virtqueue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingLayout {
    /// Number of descriptors (queue size).
    pub size: u16,
    /// Descriptor table.
    pub desc: u64,
    /// Driver area: flags, idx, ring[size], used_event.
    pub avail: u64,
    /// Device area: flags, idx, ring[size] of {id, len}, avail_event.
    pub used: u64,
}

impl RingLayout {
    /// Bytes of the descriptor table for `size` entries.
    pub fn desc_bytes(size: u16) -> u64 {
        DESC_SIZE * u64::from(size)
    }

    /// Bytes of the driver area, including `used_event` (VIRTIO 1.2 §2.7.6).
    pub fn avail_bytes(size: u16) -> u64 {
        2 + 2 + 2 * u64::from(size) + 2
    }

    /// Bytes of the device area, including `avail_event` (VIRTIO 1.2 §2.7.8).
    pub fn used_bytes(size: u16) -> u64 {
        2 + 2 + USED_ELEM_SIZE * u64::from(size) + 2
    }

    /// Address of descriptor `i`.
    pub fn desc_addr(&self, i: u16) -> u64 {
        self.desc + DESC_SIZE * u64::from(i)
    }

    /// Address of `avail.flags`.
    pub fn avail_flags(&self) -> u64 {
        self.avail
    }

    /// Address of `avail.idx`.
    pub fn avail_idx(&self) -> u64 {
        self.avail + 2
    }

    /// Address of the avail ring entry that free-running index `idx` maps to.
    pub fn avail_slot(&self, idx: u16) -> u64 {
        self.avail + 4 + 2 * u64::from(idx % self.size)
    }

    /// Address of `used_event`, the last field of the driver area.
    pub fn used_event(&self) -> u64 {
        self.avail + 4 + 2 * u64::from(self.size)
    }

    /// Address of `used.flags`.
    pub fn used_flags(&self) -> u64 {
        self.used
    }

    /// Address of `used.idx`.
    pub fn used_idx(&self) -> u64 {
        self.used + 2
    }

    /// Address of the used element that free-running index `idx` maps to.
    pub fn used_slot(&self, idx: u16) -> u64 {
        self.used + 4 + USED_ELEM_SIZE * u64::from(idx % self.size)
    }

    /// Address of `avail_event`, the last field of the device area.
    pub fn avail_event(&self) -> u64 {
        self.used + 4 + USED_ELEM_SIZE * u64::from(self.size)
    }
}

/// VIRTIO 1.2 §2.7.10: with EVENT_IDX, notify iff the event index lies in
/// `[old, new)`, i.e. the other side asked to hear about an entry we just added.
pub fn vring_need_event(event_idx: u16, new_idx: u16, old_idx: u16) -> bool {
    new_idx.wrapping_sub(event_idx).wrapping_sub(1) < new_idx.wrapping_sub(old_idx)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(size: u16) -> RingLayout {
        RingLayout {
            size,
            desc: 0x1_0000,
            avail: 0x3_0000,
            used: 0x5_0000,
        }
    }

    #[test]
    fn part_sizes_match_spec() {
        assert_eq!(RingLayout::desc_bytes(256), 4096);
        assert_eq!(RingLayout::avail_bytes(256), 518);
        assert_eq!(RingLayout::used_bytes(256), 2054);
        assert_eq!(RingLayout::avail_bytes(1), 8);
        assert_eq!(RingLayout::used_bytes(1), 14);
    }

    #[test]
    fn field_offsets() {
        let l = layout(8);
        assert_eq!(l.desc_addr(3), 0x1_0000 + 48);
        assert_eq!(l.avail_flags(), 0x3_0000);
        assert_eq!(l.avail_idx(), 0x3_0002);
        assert_eq!(l.avail_slot(0), 0x3_0004);
        assert_eq!(l.avail_slot(7), 0x3_0004 + 14);
        assert_eq!(l.used_event(), 0x3_0004 + 16);
        assert_eq!(l.used_flags(), 0x5_0000);
        assert_eq!(l.used_idx(), 0x5_0002);
        assert_eq!(l.used_slot(1), 0x5_000c);
        assert_eq!(l.avail_event(), 0x5_0004 + 64);
    }

    #[test]
    fn free_running_indices_wrap_modulo_size() {
        let l = layout(8);
        assert_eq!(l.avail_slot(9), l.avail_slot(1));
        assert_eq!(l.used_slot(u16::MAX), l.used_slot(7));
        assert_eq!(l.used_slot(0), l.used_slot(8));
        // used_event / avail_event sit exactly after the last ring entry.
        assert_eq!(l.used_event(), l.avail_slot(7) + 2);
        assert_eq!(l.avail_event(), l.used_slot(7) + USED_ELEM_SIZE);
    }

    #[test]
    fn alignment_of_fields() {
        let l = layout(256);
        assert_eq!(l.used_slot(5) % USED_ALIGN, 0);
        assert_eq!(l.used_event() % AVAIL_ALIGN, 0);
        assert_eq!(l.avail_event() % 2, 0);
        assert_eq!(l.desc_addr(255) % DESC_ALIGN, 0);
    }

    #[test]
    fn need_event_table() {
        // (event, new, old, expected)
        let cases: &[(u16, u16, u16, bool)] = &[
            (0, 1, 0, true),               // device waits for entry 0, we added it
            (1, 1, 0, false),              // device waits for entry 1, not yet added
            (5, 10, 4, true),              // event inside [old, new)
            (4, 10, 4, true),              // lower bound inclusive
            (10, 10, 4, false),            // upper bound exclusive
            (3, 10, 4, false),             // already passed before this batch
            (0, 0, 0, false),              // nothing added
            (u16::MAX, 1, u16::MAX, true), // wrap: event at 65535, added 65535 and 0
            (u16::MAX - 1, 1, u16::MAX, false),
            (0, 3, u16::MAX - 2, true),
        ];
        for &(e, n, o, want) in cases {
            assert_eq!(vring_need_event(e, n, o), want, "event={e} new={n} old={o}");
        }
    }

    #[test]
    fn queue_sizes() {
        assert!(valid_queue_size(1));
        assert!(valid_queue_size(256));
        assert!(valid_queue_size(32768));
        assert!(!valid_queue_size(0));
        assert!(!valid_queue_size(100));
    }
}
