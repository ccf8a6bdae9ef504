//! A TX chain to a frame: the 12-byte virtio_net_hdr and the frame's buffers
//! (VIRTIO 1.2 §5.1.6.2). The header may be split across descriptors.

use crate::chain::{read_chain, ChainError, Direction};
use crate::features::VIRTIO_NET_HDR_LEN;
use crate::ring::SplitRing;
use crate::segs::{read_prefix, SegList};
use crate::GuestMem;
#[cfg(test)]
use crate::Slice;
use vm_memory::ByteValued;

/// Why a TX chain is not a frame.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
pub enum TxError {
    #[error("bad descriptor chain")]
    Chain(#[from] ChainError),
    #[error("chain of {got} bytes is shorter than the {want}-byte virtio_net_hdr")]
    HeaderTooShort { want: usize, got: usize },
    #[error("frame of {got} bytes is shorter than an Ethernet header ({min})")]
    Undersize { min: usize, got: usize },
    #[error("frame of {got} bytes exceeds the {max}-byte limit")]
    Oversize { max: usize, got: usize },
    #[error("segmentation offload type {gso_type} was not negotiated")]
    GsoNotNegotiated { gso_type: u8 },
}

impl TxError {
    /// Ring-level errors never reach here: every TxError is one bad chain.
    pub fn is_oversize(&self) -> bool {
        matches!(self, TxError::Oversize { .. })
    }
}

/// One guest frame, still in guest memory.
pub struct TxFrame<'m> {
    pub head: u16,
    pub hdr: [u8; VIRTIO_NET_HDR_LEN],
    /// Frame buffers, the header already cut off.
    pub segs: SegList<'m>,
    pub len: usize,
}

impl TxFrame<'_> {
    /// Copies the first `N` bytes of the frame (for header parsing) into `out`;
    /// returns how many the frame had.
    pub fn peek<const N: usize>(&self, out: &mut [u8; N]) -> usize
    where
        [u8; N]: ByteValued,
    {
        read_prefix(&self.segs, out).min(self.len)
    }
}

/// Reads TX chains into frames.
#[derive(Clone, Copy, Debug)]
pub struct TxReader {
    pub indirect: bool,
    /// Largest frame accepted (Ethernet header + MTU + VLAN tag).
    pub max_frame: usize,
    /// Largest segmentation-offload frame accepted; 0 when HOST_TSO is not negotiated.
    pub max_gso_frame: usize,
}

/// Ethernet header without FCS.
const ETH_HLEN: usize = 14;

impl TxReader {
    pub fn read<'m>(
        &self,
        mem: &'m GuestMem,
        ring: &SplitRing<'m>,
        head: u16,
    ) -> Result<TxFrame<'m>, TxError> {
        let chain = read_chain(mem, ring, head, Direction::DeviceReads, self.indirect)?;
        if chain.len < VIRTIO_NET_HDR_LEN {
            return Err(TxError::HeaderTooShort {
                want: VIRTIO_NET_HDR_LEN,
                got: chain.len,
            });
        }
        let len = chain.len - VIRTIO_NET_HDR_LEN;
        if len < ETH_HLEN {
            return Err(TxError::Undersize {
                min: ETH_HLEN,
                got: len,
            });
        }
        let mut hdr = [0u8; VIRTIO_NET_HDR_LEN];
        read_prefix(&chain.segs, &mut hdr);
        // gso_type without its ECN bit (§5.1.6: VIRTIO_NET_HDR_GSO_ECN = 0x80).
        let gso_type = hdr[1] & 0x7f;
        let max = if gso_type == 0 {
            self.max_frame
        } else if self.max_gso_frame == 0 {
            return Err(TxError::GsoNotNegotiated { gso_type });
        } else {
            self.max_gso_frame
        };
        if len > max {
            return Err(TxError::Oversize { max, got: len });
        }
        // Cut the header off the front, however it was split.
        let mut segs = SegList::new();
        let mut skip = VIRTIO_NET_HDR_LEN;
        for seg in chain.segs.iter() {
            if skip >= seg.len() {
                skip -= seg.len();
                continue;
            }
            // In range: skip < seg.len(); no more segments than the chain had.
            if let Ok(rest) = seg.offset(skip) {
                let _ = segs.try_push(rest);
            }
            skip = 0;
        }
        Ok(TxFrame {
            head,
            hdr,
            segs,
            len,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::tests::{d, mem, ring, NEXT, WRITE};
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::{Bytes, GuestAddress};

    fn read(
        descs: &[virtio_queue::desc::RawDescriptor],
        max: usize,
    ) -> Result<(usize, Vec<u8>), TxError> {
        let m = mem();
        let q = MockSplitQueue::new(&m, 16);
        q.add_desc_chains(descs, 0).expect("chains");
        // Header bytes 0..12 = 0xaa except gso_type (0), frame bytes count up.
        let mut bytes = vec![0xaau8; 12];
        bytes[1] = 0;
        bytes.extend(0..200u8);
        let mut at = 0usize;
        for desc in descs {
            let sd = virtio_queue::desc::split::Descriptor::from(*desc);
            let n = (sd.len() as usize).min(bytes.len().saturating_sub(at));
            m.write_slice(&bytes[at..at + n], GuestAddress(sd.addr().0))
                .ok();
            at += n;
        }
        let mut r = ring(&m, &q);
        let head = r.pop().expect("head");
        let reader = TxReader {
            indirect: false,
            max_frame: max,
            max_gso_frame: 0,
        };
        let f = reader.read(&m, &r, head)?;
        assert_eq!(f.hdr[0], 0xaa);
        assert_eq!(f.hdr[2..], [0xaa; 10]);
        let mut out = vec![0u8; f.len];
        let dst = [Slice::from(&mut out[..])];
        assert_eq!(crate::segs::copy_segs(&f.segs, 0, &dst, 0, f.len), f.len);
        let mut eth = [0u8; 14];
        assert_eq!(f.peek(&mut eth), 14.min(f.len));
        assert_eq!(&eth[..14.min(f.len)], &out[..14.min(f.len)]);
        Ok((f.len, out))
    }

    #[test]
    fn header_split_anywhere() {
        for split in [1u32, 5, 11, 12, 13, 40] {
            let descs = [
                d(0x1_0000, split, NEXT, 1),
                d(0x9_0000, 12 + 100 - split, 0, 0),
            ];
            let (len, data) = read(&descs, 1518).expect("frame");
            assert_eq!(len, 100, "split {split}");
            assert_eq!(data, (0..100u8).collect::<Vec<_>>(), "split {split}");
        }
    }

    #[test]
    fn gso_frames_need_the_offload_and_have_their_own_limit() {
        let m = mem();
        let q = MockSplitQueue::new(&m, 16);
        q.add_desc_chains(&[d(0x1_0000, 12 + 3000, 0, 0)], 0)
            .expect("chains");
        // gso_type TCPV4 (1), 3000 bytes: beyond max_frame, within max_gso_frame.
        m.write_slice(&[1u8, 1], GuestAddress(0x1_0000))
            .expect("hdr");
        let mut r = ring(&m, &q);
        let head = r.pop().expect("head");
        let mut reader = TxReader {
            indirect: false,
            max_frame: 1518,
            max_gso_frame: 0,
        };
        assert_eq!(
            reader.read(&m, &r, head).err(),
            Some(TxError::GsoNotNegotiated { gso_type: 1 })
        );
        reader.max_gso_frame = 65550;
        assert_eq!(reader.read(&m, &r, head).map(|f| f.len).ok(), Some(3000));
        reader.max_gso_frame = 2000;
        assert_eq!(
            reader.read(&m, &r, head).err(),
            Some(TxError::Oversize {
                max: 2000,
                got: 3000
            })
        );
    }

    #[test]
    fn malformed_frames() {
        assert_eq!(
            read(&[d(0x1_0000, 8, 0, 0)], 1518).err(),
            Some(TxError::HeaderTooShort { want: 12, got: 8 })
        );
        assert_eq!(
            read(&[d(0x1_0000, 12 + 13, 0, 0)], 1518).err(),
            Some(TxError::Undersize { min: 14, got: 13 })
        );
        assert_eq!(
            read(&[d(0x1_0000, 12 + 200, 0, 0)], 100).err(),
            Some(TxError::Oversize { max: 100, got: 200 })
        );
        assert!(matches!(
            read(&[d(0x1_0000, 12 + 60, WRITE, 0)], 1518).err(),
            Some(TxError::Chain(ChainError::WrongDirection { .. }))
        ));
    }
}
