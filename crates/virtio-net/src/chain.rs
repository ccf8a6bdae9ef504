//! Walking one descriptor chain (VIRTIO 1.2 §2.7.5) into mapped, validated segments.
//!
//! Everything here is guest-controlled: every index is bounds-checked, every
//! address+length sum is checked, direction and indirect rules are enforced, and a
//! chain can visit at most `size` descriptors (loop guard). A failure is a bad chain:
//! the caller completes it with used length 0 and carries on.

use vm_memory::{GuestAddress, GuestMemoryBackend, VolatileMemory};

use crate::ring::SplitRing;
use crate::segs::{SegList, MAX_FRAME_SEGS};
use crate::GuestMem;

const VIRTQ_DESC_F_NEXT: u16 = 1;
const VIRTQ_DESC_F_WRITE: u16 = 2;
const VIRTQ_DESC_F_INDIRECT: u16 = 4;
const DESC_SIZE: usize = 16;
/// Indirect tables larger than the queue are accepted up to this many entries; the
/// walk still stops at `MAX_CHAIN_SEGS` buffers.
const MAX_INDIRECT_ENTRIES: usize = 256;

/// Most descriptors one chain may hold (direct or indirect).
pub const MAX_CHAIN_SEGS: usize = MAX_FRAME_SEGS;

/// One descriptor of a chain as the guest wrote it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seg {
    pub addr: u64,
    pub len: u32,
    pub writable: bool,
}

/// Why a chain was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
pub enum ChainError {
    #[error("head index {head} is outside a queue of {size}")]
    HeadOutOfRange { head: u16, size: u16 },
    #[error("next index {next} is outside a table of {size}")]
    NextOutOfRange { next: u16, size: u16 },
    #[error("descriptor chain loops (more than {limit} descriptors)")]
    Loop { limit: usize },
    #[error("descriptor chain has more than {max} descriptors")]
    TooManySegs { max: usize },
    #[error("descriptor {index} has length 0")]
    ZeroLength { index: u16 },
    #[error("descriptor {index} address {addr:#x} + length {len} overflows")]
    AddrOverflow { index: u16, addr: u64, len: u32 },
    #[error("descriptor {index} at {addr:#x} (+{len}) is not in guest memory")]
    OutOfMemory { index: u16, addr: u64, len: u32 },
    #[error("descriptor {index} is device-{found} where device-{want} is required")]
    WrongDirection {
        index: u16,
        want: &'static str,
        found: &'static str,
    },
    #[error("indirect descriptor used without VIRTIO_F_INDIRECT_DESC")]
    IndirectNotNegotiated,
    #[error("indirect descriptor also sets NEXT")]
    IndirectWithNext,
    #[error("indirect table inside an indirect table")]
    NestedIndirect,
    #[error("indirect table length {len} is not a non-zero multiple of 16 up to {max}")]
    IndirectLen { len: u32, max: usize },
    #[error("indirect table at {addr:#x} (+{len}) is not in guest memory")]
    IndirectUnmappable { addr: u64, len: u32 },
    #[error("descriptor read failed")]
    Access,
}

/// Which way the device uses a chain's buffers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// TX: the device only reads.
    DeviceReads,
    /// RX: the device only writes.
    DeviceWrites,
}

/// A validated chain: its head (the used-ring id) and mapped buffers.
pub struct DescChain<'m> {
    pub head: u16,
    pub segs: SegList<'m>,
    pub len: usize,
}

fn read_desc(table: &crate::Slice<'_>, index: u16) -> Result<(u64, u32, u16, u16), ChainError> {
    // One fixed-size volatile load (inlined), not a general copy of 16 bytes.
    let raw: [u8; DESC_SIZE] = table
        .get_ref::<[u8; DESC_SIZE]>(usize::from(index) * DESC_SIZE)
        .map_err(|_source| ChainError::Access)?
        .load();
    let addr = u64::from_le_bytes([
        raw[0], raw[1], raw[2], raw[3], raw[4], raw[5], raw[6], raw[7],
    ]);
    let len = u32::from_le_bytes([raw[8], raw[9], raw[10], raw[11]]);
    let flags = u16::from_le_bytes([raw[12], raw[13]]);
    let next = u16::from_le_bytes([raw[14], raw[15]]);
    Ok((addr, len, flags, next))
}

/// Walks the chain at `head` and maps each buffer.
pub fn read_chain<'m>(
    mem: &'m GuestMem,
    ring: &SplitRing<'m>,
    head: u16,
    dir: Direction,
    indirect_ok: bool,
) -> Result<DescChain<'m>, ChainError> {
    let size = ring.size();
    if head >= size {
        return Err(ChainError::HeadOutOfRange { head, size });
    }
    let mut out = DescChain {
        head,
        segs: SegList::new(),
        len: 0,
    };
    let (addr, len, flags, _next) = read_desc(ring.desc_table(), head)?;
    if flags & VIRTQ_DESC_F_INDIRECT != 0 {
        if !indirect_ok {
            return Err(ChainError::IndirectNotNegotiated);
        }
        if flags & VIRTQ_DESC_F_NEXT != 0 {
            return Err(ChainError::IndirectWithNext);
        }
        let entries = len as usize / DESC_SIZE;
        let max_entries = usize::from(size).max(MAX_INDIRECT_ENTRIES);
        if len == 0 || len as usize % DESC_SIZE != 0 || entries > max_entries {
            return Err(ChainError::IndirectLen {
                len,
                max: max_entries * DESC_SIZE,
            });
        }
        let table = mem
            .get_slice(GuestAddress(addr), len as usize)
            .map_err(|_source| ChainError::IndirectUnmappable { addr, len })?;
        // VIRTIO 1.2 §2.7.5.3.1: the indirect table's entries chain from entry 0.
        let count = u16::try_from(entries).map_err(|_overflow| ChainError::IndirectLen {
            len,
            max: usize::from(u16::MAX),
        })?;
        walk(mem, &table, count, 0, dir, true, &mut out)?;
    } else {
        walk(mem, ring.desc_table(), size, head, dir, false, &mut out)?;
    }
    Ok(out)
}

fn walk<'m>(
    mem: &'m GuestMem,
    table: &crate::Slice<'_>,
    size: u16,
    first: u16,
    dir: Direction,
    in_indirect: bool,
    out: &mut DescChain<'m>,
) -> Result<(), ChainError> {
    let mut index = first;
    for _ in 0..usize::from(size) {
        let (addr, len, flags, next) = read_desc(table, index)?;
        if flags & VIRTQ_DESC_F_INDIRECT != 0 {
            return Err(if in_indirect {
                ChainError::NestedIndirect
            } else {
                // Only a head may be indirect.
                ChainError::IndirectWithNext
            });
        }
        let writable = flags & VIRTQ_DESC_F_WRITE != 0;
        match (dir, writable) {
            (Direction::DeviceReads, true) => {
                return Err(ChainError::WrongDirection {
                    index,
                    want: "readable",
                    found: "writable",
                })
            }
            (Direction::DeviceWrites, false) => {
                return Err(ChainError::WrongDirection {
                    index,
                    want: "writable",
                    found: "readable",
                })
            }
            _ => {}
        }
        if len == 0 {
            return Err(ChainError::ZeroLength { index });
        }
        if addr.checked_add(u64::from(len)).is_none() {
            return Err(ChainError::AddrOverflow { index, addr, len });
        }
        let slice = mem
            .get_slice(GuestAddress(addr), len as usize)
            .map_err(|_source| ChainError::OutOfMemory { index, addr, len })?;
        out.segs
            .try_push(slice)
            .map_err(|_full| ChainError::TooManySegs {
                max: MAX_CHAIN_SEGS,
            })?;
        out.len += len as usize;
        if flags & VIRTQ_DESC_F_NEXT == 0 {
            return Ok(());
        }
        if next >= size {
            return Err(ChainError::NextOutOfRange { next, size });
        }
        index = next;
    }
    Err(ChainError::Loop {
        limit: usize::from(size),
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::ring::RingAddrs;
    use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::Bytes;
    use vm_memory::{Address, GuestMemoryMmap};

    pub(crate) const NEXT: u16 = VIRTQ_DESC_F_NEXT;
    pub(crate) const WRITE: u16 = VIRTQ_DESC_F_WRITE;
    pub(crate) const INDIRECT: u16 = VIRTQ_DESC_F_INDIRECT;
    pub(crate) const MEM: u64 = 0x10_0000;
    /// virtio-queue's mock puts its used ring over the avail ring's used_event field,
    /// so tests give quiver's ring a used ring of its own here.
    pub(crate) const USED: u64 = 0x7000;

    pub(crate) fn mem() -> GuestMem {
        // Two regions with a hole, so nothing may assume one flat mapping.
        GuestMemoryMmap::from_ranges(&[
            (GuestAddress(0), 0x8_0000),
            (GuestAddress(0x9_0000), 0x7_0000),
        ])
        .expect("memory")
    }

    pub(crate) fn d(addr: u64, len: u32, flags: u16, next: u16) -> RawDescriptor {
        RawDescriptor::from(SplitDescriptor::new(addr, len, flags, next))
    }

    pub(crate) fn ring<'m>(m: &'m GuestMem, q: &MockSplitQueue<'_, GuestMem>) -> SplitRing<'m> {
        let addrs = RingAddrs {
            desc: q.desc_table_addr().0,
            avail: q.avail_addr().0,
            used: USED,
            size: 16,
        };
        SplitRing::new(m, addrs, false, 0, 0).expect("ring")
    }

    fn one(
        descs: &[RawDescriptor],
        dir: Direction,
        indirect_ok: bool,
    ) -> Result<usize, ChainError> {
        let m = mem();
        let q = MockSplitQueue::new(&m, 16);
        q.add_desc_chains(descs, 0).expect("chains");
        let mut r = ring(&m, &q);
        let head = r.pop().expect("head");
        read_chain(&m, &r, head, dir, indirect_ok).map(|c| c.len)
    }

    fn write_table(m: &GuestMem, at: u64, descs: &[RawDescriptor]) {
        for (i, desc) in descs.iter().enumerate() {
            m.write_obj(*desc, GuestAddress(at + 16 * i as u64))
                .expect("table");
        }
    }

    #[test]
    fn good_chains() {
        use Direction::*;
        assert_eq!(one(&[d(0x1_0000, 100, 0, 0)], DeviceReads, false), Ok(100));
        assert_eq!(
            one(
                &[d(0x1_0000, 10, NEXT, 1), d(0x9_0000, 20, 0, 0)],
                DeviceReads,
                false
            ),
            Ok(30)
        );
        assert_eq!(
            one(&[d(0x1_0000, 64, WRITE, 0)], DeviceWrites, false),
            Ok(64)
        );
    }

    #[test]
    fn malformed_chains_table() {
        use Direction::*;
        let cases: Vec<(&str, Vec<RawDescriptor>, Direction, ChainError)> = vec![
            (
                "write-only TX descriptor",
                vec![d(0x1_0000, 10, WRITE, 0)],
                DeviceReads,
                ChainError::WrongDirection {
                    index: 0,
                    want: "readable",
                    found: "writable",
                },
            ),
            (
                "read-only RX descriptor",
                vec![d(0x1_0000, 10, 0, 0)],
                DeviceWrites,
                ChainError::WrongDirection {
                    index: 0,
                    want: "writable",
                    found: "readable",
                },
            ),
            (
                "address out of guest memory",
                vec![d(MEM + 0x1000, 10, 0, 0)],
                DeviceReads,
                ChainError::OutOfMemory {
                    index: 0,
                    addr: MEM + 0x1000,
                    len: 10,
                },
            ),
            (
                "address in the hole between regions",
                vec![d(0x8_8000, 10, 0, 0)],
                DeviceReads,
                ChainError::OutOfMemory {
                    index: 0,
                    addr: 0x8_8000,
                    len: 10,
                },
            ),
            (
                "address + length overflow",
                vec![d(u64::MAX - 4, 10, 0, 0)],
                DeviceReads,
                ChainError::AddrOverflow {
                    index: 0,
                    addr: u64::MAX - 4,
                    len: 10,
                },
            ),
            (
                "zero length",
                vec![d(0x1_0000, 0, 0, 0)],
                DeviceReads,
                ChainError::ZeroLength { index: 0 },
            ),
            (
                "indirect without the feature",
                vec![d(0x2_0000, 32, INDIRECT, 0)],
                DeviceReads,
                ChainError::IndirectNotNegotiated,
            ),
        ];
        for (name, descs, dir, want) in cases {
            assert_eq!(one(&descs, dir, false), Err(want), "{name}");
        }
    }

    #[test]
    fn loops_and_bad_next_indices() {
        let m = mem();
        let q = MockSplitQueue::new(&m, 16);
        // add_desc_chains rewrites nothing: write the table by hand, then publish head 0.
        let descs = [d(0x1_0000, 10, NEXT, 1), d(0x1_1000, 10, NEXT, 0)];
        write_table(&m, q.desc_table_addr().0, &descs);
        m.write_obj(0u16, q.avail_addr().unchecked_add(4))
            .expect("ring");
        m.write_obj(1u16.to_le(), q.avail_addr().unchecked_add(2))
            .expect("idx");
        let mut r = ring(&m, &q);
        let head = r.pop().expect("head");
        assert_eq!(
            read_chain(&m, &r, head, Direction::DeviceReads, false).err(),
            Some(ChainError::Loop { limit: 16 })
        );
        write_table(&m, q.desc_table_addr().0, &[d(0x1_0000, 10, NEXT, 16)]);
        assert_eq!(
            read_chain(&m, &r, 0, Direction::DeviceReads, false).err(),
            Some(ChainError::NextOutOfRange { next: 16, size: 16 })
        );
        assert_eq!(
            read_chain(&m, &r, 16, Direction::DeviceReads, false).err(),
            Some(ChainError::HeadOutOfRange { head: 16, size: 16 })
        );
    }

    #[test]
    fn indirect_tables() {
        let m = mem();
        let q = MockSplitQueue::new(&m, 16);
        let table = 0x4_0000u64;
        let r = ring(&m, &q);
        let desc_table = q.desc_table_addr().0;
        let check = |head_desc: RawDescriptor, entries: &[RawDescriptor]| {
            write_table(&m, table, entries);
            write_table(&m, desc_table, &[head_desc]);
            read_chain(&m, &r, 0, Direction::DeviceReads, true).map(|c| (c.len, c.segs.len()))
        };
        let good = [d(0x1_0000, 12, NEXT, 1), d(0x9_1000, 100, 0, 0)];
        assert_eq!(check(d(table, 32, INDIRECT, 0), &good), Ok((112, 2)));
        assert_eq!(
            check(d(table, 20, INDIRECT, 0), &good).err(),
            Some(ChainError::IndirectLen { len: 20, max: 4096 })
        );
        assert_eq!(
            check(d(table, 0, INDIRECT, 0), &good).err(),
            Some(ChainError::IndirectLen { len: 0, max: 4096 })
        );
        assert_eq!(
            check(d(table, 32, INDIRECT | NEXT, 1), &good).err(),
            Some(ChainError::IndirectWithNext)
        );
        let nested = [d(0x1_0000, 12, NEXT, 1), d(table, 32, INDIRECT, 0)];
        assert_eq!(
            check(d(table, 32, INDIRECT, 0), &nested).err(),
            Some(ChainError::NestedIndirect)
        );
        assert_eq!(
            check(d(MEM - 16, 32, INDIRECT, 0), &good).err(),
            Some(ChainError::IndirectUnmappable {
                addr: MEM - 16,
                len: 32
            })
        );
        // An indirect chain whose next points past its own table.
        let past = [d(0x1_0000, 12, NEXT, 2), d(0x9_1000, 100, 0, 0)];
        assert_eq!(
            check(d(table, 32, INDIRECT, 0), &past).err(),
            Some(ChainError::NextOutOfRange { next: 2, size: 2 })
        );
    }

    #[test]
    fn too_many_segments() {
        let m = mem();
        let q = MockSplitQueue::new(&m, 16);
        let table = 0x4_0000u64;
        let entries: Vec<_> = (0..65u16)
            .map(|i| {
                d(
                    0x1_0000 + 64 * u64::from(i),
                    8,
                    if i < 64 { NEXT } else { 0 },
                    i + 1,
                )
            })
            .collect();
        write_table(&m, table, &entries);
        write_table(&m, q.desc_table_addr().0, &[d(table, 65 * 16, INDIRECT, 0)]);
        let r = ring(&m, &q);
        assert_eq!(
            read_chain(&m, &r, 0, Direction::DeviceReads, true).err(),
            Some(ChainError::TooManySegs { max: 64 })
        );
    }
}
