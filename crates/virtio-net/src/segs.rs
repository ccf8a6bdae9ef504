//! Mapped buffers of one frame and the scatter-gather copy between two such lists.

use arrayvec::ArrayVec;

use crate::Slice;

/// Most segments one frame may span on either side. Linux posts at most
/// MAX_SKB_FRAGS + 2 (19) per TX chain; a longer chain is refused as a bad chain.
pub const MAX_FRAME_SEGS: usize = 64;

/// The mapped buffers of one frame, in order, without allocation.
pub type SegList<'m> = ArrayVec<Slice<'m>, MAX_FRAME_SEGS>;

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
