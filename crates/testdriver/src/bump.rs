//! A bump allocator over guest-physical addresses, leaving gaps between allocations.

/// Hands out guest-physical ranges in increasing order; never frees.
#[derive(Debug, Clone)]
pub struct BumpAlloc {
    next: u64,
    end: u64,
}

impl BumpAlloc {
    /// Allocate from `[start, end)`.
    pub fn new(start: u64, end: u64) -> Self {
        BumpAlloc { next: start, end }
    }

    /// Allocate `len` bytes aligned to `align` (a power of two), followed by
    /// `gap` unused bytes so nothing can assume neighbouring buffers are contiguous.
    pub fn alloc(&mut self, len: u64, align: u64, gap: u64) -> Option<u64> {
        let start = self.next.checked_add(align - 1)? & !(align - 1);
        let end = start.checked_add(len)?.checked_add(gap)?;
        if end > self.end {
            return None;
        }
        self.next = end;
        Some(start)
    }

    /// Bytes left.
    pub fn remaining(&self) -> u64 {
        self.end.saturating_sub(self.next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligns_and_gaps() {
        let mut b = BumpAlloc::new(10, 200);
        assert_eq!(b.alloc(5, 16, 8), Some(16));
        assert_eq!(b.alloc(5, 16, 0), Some(32));
        assert_eq!(b.alloc(100, 64, 0), Some(64));
        assert_eq!(b.alloc(100, 1, 0), None);
        assert_eq!(b.remaining(), 36);
    }
}
