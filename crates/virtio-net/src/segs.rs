//! Mapped buffers of one frame and the scatter-gather copy between two such lists.

use arrayvec::ArrayVec;
use vm_memory::{ByteValued, VolatileMemory};

use crate::Slice;

/// Most segments one frame may span on either side. Linux posts at most
/// MAX_SKB_FRAGS + 2 (19) per TX chain; a longer chain is refused as a bad chain.
pub const MAX_FRAME_SEGS: usize = 64;

/// Segments kept inline. Frames from Linux and DPDK span 1-3 buffers; a list sits in
/// every frame of a burst, so a 64-entry inline array (1.5 KiB) would be copied with
/// each frame and made a worker's burst state ~100 KiB of stack.
pub const INLINE_SEGS: usize = 8;

/// The mapped buffers of one frame, in order: inline up to `INLINE_SEGS` (no
/// allocation), on the heap beyond, at most `MAX_FRAME_SEGS`.
pub enum SegList<'m> {
    Inline(ArrayVec<Slice<'m>, INLINE_SEGS>),
    Spilled(Vec<Slice<'m>>),
}

/// The list already holds `MAX_FRAME_SEGS` segments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegListFull;

impl<'m> SegList<'m> {
    pub fn new() -> Self {
        SegList::Inline(ArrayVec::new())
    }

    /// Appends `seg`, moving to the heap when the inline space runs out.
    pub fn try_push(&mut self, seg: Slice<'m>) -> Result<(), SegListFull> {
        match self {
            SegList::Inline(v) => {
                if let Err(e) = v.try_push(seg) {
                    let mut heap = Vec::with_capacity(MAX_FRAME_SEGS);
                    heap.extend(v.drain(..));
                    heap.push(e.element());
                    *self = SegList::Spilled(heap);
                }
                Ok(())
            }
            SegList::Spilled(v) if v.len() < MAX_FRAME_SEGS => {
                v.push(seg);
                Ok(())
            }
            SegList::Spilled(_) => Err(SegListFull),
        }
    }
}

impl Default for SegList<'_> {
    fn default() -> Self {
        SegList::new()
    }
}

impl<'m> std::ops::Deref for SegList<'m> {
    type Target = [Slice<'m>];

    fn deref(&self) -> &Self::Target {
        match self {
            SegList::Inline(v) => v,
            SegList::Spilled(v) => v,
        }
    }
}

/// Reads the first `N` bytes of `segs` into `out`; returns how many there were. When
/// the first segment holds them all (the usual case) this is one fixed-size volatile
/// load the compiler inlines, not a call into the general copy for a dozen bytes.
pub fn read_prefix<const N: usize>(segs: &[Slice<'_>], out: &mut [u8; N]) -> usize
where
    [u8; N]: ByteValued,
{
    if let Some(r) = segs.first().and_then(|s| s.get_ref::<[u8; N]>(0).ok()) {
        *out = r.load();
        return N;
    }
    let dst = [Slice::from(&mut out[..])];
    copy_segs(segs, 0, &dst, 0, N)
}

/// Writes `data` at byte `off` of `segs`; returns the bytes written. One fixed-size
/// volatile store when the first segment holds the range, the general copy otherwise.
pub fn write_at<const N: usize>(segs: &[Slice<'_>], off: usize, mut data: [u8; N]) -> usize
where
    [u8; N]: ByteValued,
{
    if let Some(r) = segs.first().and_then(|s| s.get_ref::<[u8; N]>(off).ok()) {
        r.store(data);
        return N;
    }
    let src = [Slice::from(&mut data[..])];
    copy_segs(&src, 0, segs, off, N)
}

/// Copies up to `len` bytes from `src` (starting `src_off` bytes in) into `dst`
/// (starting `dst_off` bytes in). Returns the bytes copied: less than `len` only when
/// either side ends first.
pub fn copy_segs(
    src: &[Slice<'_>],
    mut src_off: usize,
    dst: &[Slice<'_>],
    mut dst_off: usize,
    len: usize,
) -> usize {
    let mut si = 0;
    let mut di = 0;
    // Skip whole segments before the offsets.
    while si < src.len() && src_off >= src[si].len() {
        src_off -= src[si].len();
        si += 1;
    }
    while di < dst.len() && dst_off >= dst[di].len() {
        dst_off -= dst[di].len();
        di += 1;
    }
    let mut done = 0;
    while done < len && si < src.len() && di < dst.len() {
        let s = &src[si];
        let d = &dst[di];
        let n = (s.len() - src_off).min(d.len() - dst_off).min(len - done);
        // Both subslices are in range: offsets are below each length and n fits both.
        if let (Ok(from), Ok(to)) = (s.subslice(src_off, n), d.subslice(dst_off, n)) {
            from.copy_to_volatile_slice(to);
        } else {
            break;
        }
        done += n;
        src_off += n;
        dst_off += n;
        if src_off == s.len() {
            si += 1;
            src_off = 0;
        }
        if dst_off == d.len() {
            di += 1;
            dst_off = 0;
        }
    }
    done
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seg_list_spills_past_the_inline_space_and_stops_at_the_maximum() {
        let mut bufs = vec![[0u8; 4]; MAX_FRAME_SEGS + 1];
        let mut it = bufs.iter_mut();
        let mut l = SegList::new();
        for _ in 0..INLINE_SEGS {
            l.try_push(Slice::from(&mut it.next().expect("buf")[..]))
                .expect("room");
        }
        assert!(matches!(l, SegList::Inline(_)));
        for _ in INLINE_SEGS..MAX_FRAME_SEGS {
            l.try_push(Slice::from(&mut it.next().expect("buf")[..]))
                .expect("room");
        }
        assert!(matches!(l, SegList::Spilled(_)));
        assert_eq!(l.len(), MAX_FRAME_SEGS);
        assert_eq!(
            l.try_push(Slice::from(&mut it.next().expect("buf")[..])),
            Err(SegListFull)
        );
    }

    #[test]
    fn prefix_reads_and_writes_take_the_fast_path_or_span_segments() {
        let mut a = [1u8, 2, 3];
        let mut b = [4u8, 5, 6, 7, 8];
        let mut whole = [9u8; 16];
        {
            let split = [Slice::from(&mut a[..]), Slice::from(&mut b[..])];
            let mut out = [0u8; 6];
            assert_eq!(read_prefix(&split, &mut out), 6);
            assert_eq!(out, [1, 2, 3, 4, 5, 6]);
            assert_eq!(write_at(&split, 2, [0xaa, 0xbb]), 2);
            let mut long = [0u8; 9];
            assert_eq!(read_prefix(&split, &mut long), 8, "only 8 bytes exist");
            let one = [Slice::from(&mut whole[..])];
            let mut out = [0u8; 12];
            assert_eq!(read_prefix(&one, &mut out), 12);
            assert_eq!(write_at(&one, 14, [1, 2]), 2);
            assert_eq!(write_at(&one, 15, [1, 2]), 1, "runs off the end");
        }
        assert_eq!(a, [1, 2, 0xaa]);
        assert_eq!(b[0], 0xbb);
        assert_eq!(&whole[14..], &[1, 1]);
    }

    #[test]
    fn seg_list_stays_small() {
        // A frame of a burst carries one; keep it well under a cache-line-y budget.
        assert!(std::mem::size_of::<SegList<'_>>() <= 256);
    }

    #[test]
    fn copies_across_uneven_segments_with_offsets() {
        let mut a = [1u8, 2, 3];
        let mut b = [4u8, 5];
        let mut c = [6u8, 7, 8, 9];
        let src = [
            Slice::from(&mut a[..]),
            Slice::from(&mut b[..]),
            Slice::from(&mut c[..]),
        ];
        let mut x = [0u8; 2];
        let mut y = [0u8; 5];
        {
            let dst = [Slice::from(&mut x[..]), Slice::from(&mut y[..])];
            assert_eq!(copy_segs(&src, 2, &dst, 1, 5), 5);
        }
        assert_eq!(x, [0, 3]);
        assert_eq!(y, [4, 5, 6, 7, 0]);
    }

    #[test]
    fn stops_at_the_shorter_side() {
        let mut a = [1u8; 10];
        let mut x = [0u8; 4];
        let src = [Slice::from(&mut a[..])];
        let dst = [Slice::from(&mut x[..])];
        assert_eq!(copy_segs(&src, 0, &dst, 0, 10), 4);
        assert_eq!(copy_segs(&src, 9, &dst, 0, 10), 1);
        assert_eq!(copy_segs(&src, 10, &dst, 0, 10), 0);
    }
}
