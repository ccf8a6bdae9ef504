//! A frame into RX chains (VIRTIO 1.2 §5.1.6.3, §5.1.6.4).
//!
//! With MRG_RXBUF a frame may span several chains: the first carries the header with
//! `num_buffers`, and all of its used elements are written together and become visible
//! with the burst's single used-index publish. Chains are consumed strictly in avail
//! order, so IN_ORDER front-ends (which map used slot k to avail slot k) stay correct.

use arrayvec::ArrayVec;

use crate::chain::{read_chain, ChainError, DescChain, Direction};
use crate::features::VIRTIO_NET_HDR_LEN;
use crate::ring::{PopError, RingError, SplitRing};
use crate::segs::{copy_segs, write_at};
use crate::{GuestMem, Slice};

/// Most RX buffers one frame may take.
const MAX_BUFFERS: usize = 64;

fn count(n: usize) -> u16 {
    // n <= MAX_BUFFERS + 1 by construction.
    u16::try_from(n).unwrap_or(u16::MAX)
}
/// Offset of `num_buffers` in virtio_net_hdr_v1.
const NUM_BUFFERS_OFFSET: usize = 10;

/// What became of one frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RxOutcome {
    /// Written into `buffers` chains (used elements added, not yet published).
    Delivered { buffers: u16 },
    /// The guest has not posted enough buffers; nothing was consumed.
    NoBuffers,
    /// The guest's buffers cannot hold the frame (non-mergeable chain too small, or more
    /// than 64 mergeable buffers needed); nothing was consumed.
    TooSmall,
}

/// Ring-stopping failures while filling.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
pub enum RxError {
    #[error("RX ring is unusable")]
    Ring(#[from] RingError),
}

/// Bad RX chains met while filling: completed with length 0 (or skipped, for a head
/// outside the queue) and counted.
#[derive(Debug, Default)]
pub struct BadChains {
    pub count: u64,
    pub last: Option<ChainError>,
}

/// Writes frames into RX chains.
#[derive(Clone, Copy, Debug)]
pub struct RxWriter {
    pub mergeable: bool,
    pub indirect: bool,
}

/// Copies `len` bytes of (header ++ frame), starting at `off`, into `dst`.
fn copy_hdr_frame(
    hdr: &[u8; VIRTIO_NET_HDR_LEN],
    frame: &[Slice<'_>],
    off: usize,
    dst: &[Slice<'_>],
    len: usize,
) -> usize {
    let mut done = 0;
    if off == 0 && len >= VIRTIO_NET_HDR_LEN {
        // The usual case: the whole header at the start of the first buffer.
        done = write_at(dst, 0, *hdr);
        if done < VIRTIO_NET_HDR_LEN {
            return done;
        }
    } else if off < VIRTIO_NET_HDR_LEN {
        let mut h = *hdr;
        let n = (VIRTIO_NET_HDR_LEN - off).min(len);
        let src = [Slice::from(&mut h[off..off + n])];
        done = copy_segs(&src, 0, dst, 0, n);
        if done < n {
            return done;
        }
    }
    let frame_off = (off + done) - VIRTIO_NET_HDR_LEN;
    done + copy_segs(frame, frame_off, dst, done, len - done)
}

impl RxWriter {
    /// Writes `hdr` (its num_buffers is filled in here) followed by `frame`.
    pub fn write<'m>(
        &self,
        mem: &'m GuestMem,
        ring: &mut SplitRing<'m>,
        hdr: &[u8; VIRTIO_NET_HDR_LEN],
        frame: &[Slice<'_>],
        frame_len: usize,
        bad: &mut BadChains,
    ) -> Result<RxOutcome, RxError> {
        let total = VIRTIO_NET_HDR_LEN + frame_len;
        let mut hdr = *hdr;
        if !self.mergeable {
            hdr[NUM_BUFFERS_OFFSET..].copy_from_slice(&1u16.to_le_bytes());
        }
        let mut taken: ArrayVec<(u16, u32), MAX_BUFFERS> = ArrayVec::new();
        let mut first: Option<DescChain<'m>> = None;
        let mut written = 0usize;
        while written < total {
            let head = match ring.pop() {
                Ok(head) => head,
                Err(PopError::Empty) => {
                    ring.unpop(count(taken.len()));
                    return Ok(RxOutcome::NoBuffers);
                }
                Err(PopError::Ring(e)) => return Err(e.into()),
            };
            let chain = match read_chain(mem, ring, head, Direction::DeviceWrites, self.indirect) {
                Ok(chain) => chain,
                Err(e) => {
                    bad.count += 1;
                    let in_range = head < ring.size();
                    bad.last = Some(e);
                    // Keep used slots in avail order: what this frame took so far is
                    // given back empty too, then the frame starts over.
                    for (id, _) in taken.drain(..) {
                        ring.add_used(id, 0)?;
                    }
                    if in_range {
                        ring.add_used(head, 0)?;
                    }
                    first = None;
                    written = 0;
                    continue;
                }
            };
            if !self.mergeable && chain.len < total {
                ring.unpop(1);
                return Ok(RxOutcome::TooSmall);
            }
            if taken.is_full() {
                ring.unpop(count(taken.len() + 1));
                return Ok(RxOutcome::TooSmall);
            }
            let n = (total - written).min(chain.len);
            let copied = copy_hdr_frame(&hdr, frame, written, &chain.segs, n);
            written += copied;
            // copied <= chain.len, a sum of u32 descriptor lengths bounded by 64 segments.
            taken.push((head, u32::try_from(copied).unwrap_or(u32::MAX)));
            if first.is_none() {
                first = Some(chain);
            }
            if copied < n {
                // The source ended early (frame_len overstated): deliver what exists.
                break;
            }
        }
        let buffers = count(taken.len());
        if self.mergeable {
            if let Some(first) = &first {
                write_at(&first.segs, NUM_BUFFERS_OFFSET, buffers.to_le_bytes());
            }
        }
        for (id, len) in taken {
            ring.add_used(id, len)?;
        }
        Ok(RxOutcome::Delivered { buffers })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::tests::{d, mem, ring, NEXT, USED, WRITE};
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::{Address, Bytes, GuestAddress};

    fn used(m: &GuestMem, slot: u64) -> (u32, u32) {
        let at = GuestAddress(USED).unchecked_add(4 + 8 * slot);
        let id: u32 = m.read_obj(at).expect("id");
        let len: u32 = m.read_obj(at.unchecked_add(4)).expect("len");
        (id, len)
    }

    fn frame_bytes(n: usize) -> Vec<u8> {
        (0..n).map(|i| u8::try_from(i % 251).unwrap_or(0)).collect()
    }

    /// Buffers of `buf` bytes each, 0x1000 apart (gaps between them).
    fn post(m: &GuestMem, q: &MockSplitQueue<'_, GuestMem>, n: u16, buf: u32) {
        let descs: Vec<_> = (0..n)
            .map(|i| d(0x1_0000 + 0x1000 * u64::from(i), buf, WRITE, 0))
            .collect();
        q.add_desc_chains(&descs, 0).expect("chains");
        let _ = m;
    }

    #[test]
    fn mergeable_frame_spans_buffers_with_num_buffers() {
        for (mrg, buf, flen, want) in [
            (true, 2048u32, 100usize, RxOutcome::Delivered { buffers: 1 }),
            (true, 256, 1000, RxOutcome::Delivered { buffers: 4 }),
            (false, 2048, 1000, RxOutcome::Delivered { buffers: 1 }),
            (false, 256, 1000, RxOutcome::TooSmall),
        ] {
            let m = mem();
            let q = MockSplitQueue::new(&m, 16);
            post(&m, &q, 8, buf);
            let mut r = ring(&m, &q);
            let mut data = frame_bytes(flen);
            let src = [Slice::from(&mut data[..])];
            let w = RxWriter {
                mergeable: mrg,
                indirect: false,
            };
            let mut bad = BadChains::default();
            let got = w
                .write(&m, &mut r, &[0; 12], &src, flen, &mut bad)
                .expect("write");
            assert_eq!(got, want, "mrg {mrg} buf {buf} len {flen}");
            let RxOutcome::Delivered { buffers } = got else {
                assert_eq!(r.next_avail(), 0, "nothing consumed");
                continue;
            };
            assert!(r.publish_used().is_ok());
            // Reassemble as a driver would.
            let mut out = Vec::new();
            for slot in 0..u64::from(buffers) {
                let (id, len) = used(&m, slot);
                let mut b = vec![0u8; len as usize];
                m.read_slice(&mut b, GuestAddress(0x1_0000 + 0x1000 * u64::from(id)))
                    .expect("read");
                out.extend(b);
            }
            assert_eq!(u16::from_le_bytes([out[10], out[11]]), buffers);
            assert_eq!(&out[12..], &data[..]);
        }
    }

    #[test]
    fn no_buffers_consumes_nothing() {
        let m = mem();
        let q = MockSplitQueue::new(&m, 16);
        post(&m, &q, 2, 256);
        let mut r = ring(&m, &q);
        let mut data = frame_bytes(1000);
        let src = [Slice::from(&mut data[..])];
        let w = RxWriter {
            mergeable: true,
            indirect: false,
        };
        let mut bad = BadChains::default();
        assert_eq!(
            w.write(&m, &mut r, &[0; 12], &src, 1000, &mut bad),
            Ok(RxOutcome::NoBuffers)
        );
        assert_eq!(r.next_avail(), 0);
        assert_eq!(r.unpublished(), 0);
    }

    #[test]
    fn read_only_rx_chain_is_completed_empty_and_the_frame_still_lands() {
        let m = mem();
        let q = MockSplitQueue::new(&m, 16);
        // Slot 0 is a bad (device-readable) chain; slot 1 a good one.
        q.add_desc_chains(&[d(0x1_0000, 2048, 0, 0), d(0x2_0000, 2048, WRITE, 0)], 0)
            .expect("chains");
        let mut r = ring(&m, &q);
        let mut data = frame_bytes(60);
        let src = [Slice::from(&mut data[..])];
        let w = RxWriter {
            mergeable: true,
            indirect: false,
        };
        let mut bad = BadChains::default();
        assert_eq!(
            w.write(&m, &mut r, &[0; 12], &src, 60, &mut bad),
            Ok(RxOutcome::Delivered { buffers: 1 })
        );
        assert_eq!(bad.count, 1);
        assert!(matches!(bad.last, Some(ChainError::WrongDirection { .. })));
        r.publish_used().expect("publish");
        assert_eq!(used(&m, 0), (0, 0));
        assert_eq!(used(&m, 1), (1, 72));
    }

    #[test]
    fn scattered_rx_chain_without_mergeable() {
        let m = mem();
        let q = MockSplitQueue::new(&m, 16);
        q.add_desc_chains(
            &[d(0x1_0000, 5, WRITE | NEXT, 1), d(0x9_0000, 2000, WRITE, 0)],
            0,
        )
        .expect("chains");
        let mut r = ring(&m, &q);
        let mut data = frame_bytes(300);
        let src = [Slice::from(&mut data[..])];
        let w = RxWriter {
            mergeable: false,
            indirect: false,
        };
        let mut bad = BadChains::default();
        assert_eq!(
            w.write(&m, &mut r, &[7; 12], &src, 300, &mut bad),
            Ok(RxOutcome::Delivered { buffers: 1 })
        );
        let mut h = [0u8; 5];
        m.read_slice(&mut h, GuestAddress(0x1_0000)).expect("read");
        assert_eq!(h, [7; 5]);
        let mut rest = vec![0u8; 307];
        m.read_slice(&mut rest, GuestAddress(0x9_0000))
            .expect("read");
        // Header bytes 5..10 are the header's, 10..12 num_buffers = 1 without MRG_RXBUF.
        assert_eq!(&rest[..7], &[7, 7, 7, 7, 7, 1, 0]);
        assert_eq!(&rest[7..], &data[..]);
    }
}
