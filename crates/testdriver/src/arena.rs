//! A circular byte arena in guest memory for TX frame data and indirect tables.
//!
//! Spans are handed out in order and freed in any order; space is recovered
//! from the oldest live span, like a ring. Each span is followed by a gap.

use std::collections::VecDeque;

/// Bytes left unused after every span.
pub const ARENA_GAP: u64 = 64;

#[derive(Debug, Clone, Copy)]
struct Span {
    id: u64,
    start: u64,
    freed: bool,
}

/// Circular allocator over `[base, base+size)`.
#[derive(Debug, Clone)]
pub struct TxArena {
    base: u64,
    size: u64,
    head: u64,
    live: VecDeque<Span>,
    next_id: u64,
}

impl TxArena {
    /// An arena over `size` bytes at guest-physical `base`.
    pub fn new(base: u64, size: u64) -> Self {
        TxArena {
            base,
            size,
            head: 0,
            live: VecDeque::new(),
            next_id: 0,
        }
    }

    /// Allocate `len` bytes aligned to `align` (power of two); returns (span id, gpa).
    pub fn alloc(&mut self, len: u64, align: u64) -> Option<(u64, u64)> {
        let need = len.checked_add(ARENA_GAP)?;
        let up = |x: u64| x.checked_add(align - 1).map(|v| v & !(align - 1));
        let start = match self.live.front() {
            None => {
                self.head = 0;
                (need <= self.size).then_some(0)?
            }
            Some(front) => {
                let tail = front.start;
                if self.head > tail {
                    let s = up(self.head)?;
                    if s.checked_add(need)? <= self.size {
                        s
                    } else if need <= tail {
                        0
                    } else {
                        return None;
                    }
                } else {
                    // Wrapped (head < tail) or exactly full (head == tail).
                    let s = up(self.head)?;
                    if self.head < tail && s.checked_add(need)? <= tail {
                        s
                    } else {
                        return None;
                    }
                }
            }
        };
        let id = self.next_id;
        self.next_id += 1;
        self.head = start + need;
        self.live.push_back(Span {
            id,
            start,
            freed: false,
        });
        Some((id, self.base + start))
    }

    /// Free span `id`; unknown ids are ignored.
    pub fn free(&mut self, id: u64) {
        if let Some(s) = self.live.iter_mut().find(|s| s.id == id) {
            s.freed = true;
        }
        while self.live.front().is_some_and(|s| s.freed) {
            self.live.pop_front();
        }
        if self.live.is_empty() {
            self.head = 0;
        }
    }

    /// Number of live spans.
    #[cfg(test)]
    pub fn live(&self) -> usize {
        self.live.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocates_in_order_with_gaps() {
        let mut a = TxArena::new(0x1000, 1024);
        let (i0, g0) = a.alloc(100, 16).expect("a0");
        let (_i1, g1) = a.alloc(100, 16).expect("a1");
        assert_eq!(g0, 0x1000);
        assert!(g1 >= g0 + 100 + ARENA_GAP);
        assert_eq!(g1 % 16, 0);
        a.free(i0);
        assert_eq!(a.live(), 1);
    }

    #[test]
    fn wraps_and_fills() {
        let mut a = TxArena::new(0, 1000);
        let (i0, _) = a.alloc(400 - ARENA_GAP, 1).expect("a0"); // [0,400)
        let (i1, _) = a.alloc(400 - ARENA_GAP, 1).expect("a1"); // [400,800)
        assert!(a.alloc(300, 1).is_none()); // 200 left at the end, front busy
        a.free(i0);
        let (i2, g2) = a.alloc(300, 1).expect("wrap"); // [0,364)
        assert_eq!(g2, 0);
        assert!(a.alloc(100, 1).is_none()); // only 36 bytes before tail at 400
        a.free(i1);
        let (_i3, g3) = a.alloc(100, 1).expect("after tail moved");
        assert_eq!(g3, 364);
        a.free(i2);
        assert_eq!(a.live(), 1);
    }

    #[test]
    fn out_of_order_free_recovers_only_from_oldest() {
        let mut a = TxArena::new(0, 300);
        let (i0, _) = a.alloc(36, 1).expect("a0"); // 100
        let (i1, _) = a.alloc(36, 1).expect("a1"); // 200
        let (i2, _) = a.alloc(36, 1).expect("a2"); // 300: full
        assert!(a.alloc(1, 1).is_none());
        a.free(i1);
        assert!(a.alloc(1, 1).is_none());
        a.free(i0);
        assert!(a.alloc(36, 1).is_some());
        a.free(i2);
    }

    #[test]
    fn too_large_never_fits() {
        let mut a = TxArena::new(0, 100);
        assert!(a.alloc(100, 1).is_none());
        assert_eq!(a.live(), 0);
    }
}
