//! Per-frame cost of the virtio-net data path, in-process (no daemon, no socket):
//!
//! - `rx_fill`: `RxWriter` writes 64 B / 1500 B frames into a mergeable RX ring of
//!   2048-byte buffers (one buffer per frame), the used index published once per
//!   burst of 64 (EVENT_IDX on, as quiverd runs it).
//! - `tx_parse`: `TxReader` turns TX chains (virtio_net_hdr + frame in one descriptor,
//!   as Linux posts them) into frames, completes them, one publish per burst of 64.
//! - `tx_to_rx`: both together, frame by frame from one guest's TX ring into another
//!   guest's RX ring: the one-copy guest-to-guest path without switching.
//!
//! Each iteration is one burst: the guest side only bumps its avail index (every ring
//! slot always holds the chain of the same index, so the descriptor table is written
//! once), the device side opens the ring as quiverd does per burst (`SplitRing::new`),
//! processes 64 chains and publishes. Throughput is in frames, so criterion's
//! `time / 64` is the per-frame cost.
//!
//! `cargo bench -p quiver-virtio-net --bench ring` (add `-- --quick` for a short run).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use quiver_virtio_net::{
    BadChains, GuestMem, RingAddrs, RxOutcome, RxWriter, Slice, SplitRing, TxReader,
    VIRTIO_NET_HDR_LEN,
};
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

const QUEUE_SIZE: u16 = 256;
const BURST: u16 = 64;
const RX_BUF: u32 = 2048;
/// Buffers 4 KiB apart: gaps between them, like a real guest's.
const BUF_STRIDE: u64 = 0x1000;
const FRAME_SIZES: [usize; 2] = [64, 1500];
const VRING_DESC_F_WRITE: u16 = 2;

/// One split ring and its buffers inside `mem`, laid out from `base`.
struct GuestRing {
    addrs: RingAddrs,
    bufs: u64,
    next_avail: u16,
    next_used: u16,
    /// The guest's avail index (what it has posted).
    avail_idx: u16,
}

impl GuestRing {
    /// Descriptor `i` → buffer `i` of `len` bytes with `flags`; avail slot `i` → head `i`.
    fn new(mem: &GuestMem, base: u64, len: u32, flags: u16) -> GuestRing {
        let addrs = RingAddrs {
            desc: base,
            avail: base + 0x1000,
            used: base + 0x2000,
            size: QUEUE_SIZE,
        };
        let bufs = base + 0x1_0000;
        for i in 0..QUEUE_SIZE {
            let mut d = [0u8; 16];
            let addr = bufs + BUF_STRIDE * u64::from(i);
            d[..8].copy_from_slice(&addr.to_le_bytes());
            d[8..12].copy_from_slice(&len.to_le_bytes());
            d[12..14].copy_from_slice(&flags.to_le_bytes());
            mem.write_slice(&d, GuestAddress(addrs.desc + 16 * u64::from(i)))
                .expect("descriptor");
            mem.write_obj(i.to_le(), GuestAddress(addrs.avail + 4 + 2 * u64::from(i)))
                .expect("avail slot");
        }
        GuestRing {
            addrs,
            bufs,
            next_avail: 0,
            next_used: 0,
            avail_idx: 0,
        }
    }

    /// The guest makes `n` more chains available (the ones the device completed).
    fn post(&mut self, mem: &GuestMem, n: u16) {
        self.avail_idx = self.avail_idx.wrapping_add(n);
        mem.write_obj(self.avail_idx.to_le(), GuestAddress(self.addrs.avail + 2))
            .expect("avail idx");
    }

    /// Opens the device's view for one burst.
    fn open<'m>(&self, mem: &'m GuestMem) -> SplitRing<'m> {
        SplitRing::new(mem, self.addrs, true, self.next_avail, self.next_used).expect("ring")
    }

    /// Stores the device's indices back after a burst.
    fn close(&mut self, ring: &SplitRing<'_>) {
        self.next_avail = ring.next_avail();
        self.next_used = ring.next_used();
    }
}

fn guest_mem() -> GuestMem {
    GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 8 << 20)]).expect("guest memory")
}

/// An Ethernet frame of `len` bytes, 52:54:00:00:00:01 → :02.
fn frame(len: usize) -> Vec<u8> {
    let mut f: Vec<u8> = (0..len)
        .map(|i| u8::try_from(i % 251).unwrap_or(0))
        .collect();
    f[..12].copy_from_slice(&[0x52, 0x54, 0, 0, 0, 2, 0x52, 0x54, 0, 0, 0, 1]);
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    f
}

/// Writes header + `frame` into every TX buffer of `ring`.
fn fill_tx(mem: &GuestMem, ring: &GuestRing, frame: &[u8]) {
    let mut bytes = vec![0u8; VIRTIO_NET_HDR_LEN];
    bytes.extend_from_slice(frame);
    for i in 0..QUEUE_SIZE {
        mem.write_slice(&bytes, GuestAddress(ring.bufs + BUF_STRIDE * u64::from(i)))
            .expect("tx buffer");
    }
}

fn rx_fill(c: &mut Criterion) {
    let mut g = c.benchmark_group("rx_fill");
    g.throughput(Throughput::Elements(BURST.into()));
    for len in FRAME_SIZES {
        let mem = guest_mem();
        let mut rx = GuestRing::new(&mem, 0, RX_BUF, VRING_DESC_F_WRITE);
        let mut data = frame(len);
        let src = [Slice::from(&mut data[..])];
        let writer = RxWriter {
            mergeable: true,
            indirect: false,
        };
        let hdr = [0u8; VIRTIO_NET_HDR_LEN];
        let mut bad = BadChains::default();
        g.bench_function(BenchmarkId::from_parameter(len), |b| {
            b.iter(|| {
                rx.post(&mem, BURST);
                let mut ring = rx.open(&mem);
                for _ in 0..BURST {
                    let out = writer
                        .write(&mem, &mut ring, &hdr, &src, len, &mut bad)
                        .expect("rx write");
                    debug_assert_eq!(out, RxOutcome::Delivered { buffers: 1 });
                    black_box(out);
                }
                black_box(ring.publish_used().expect("publish"));
                rx.close(&ring);
            })
        });
        assert_eq!(bad.count, 0, "the benchmark's RX chains are well-formed");
    }
    g.finish();
}

fn tx_parse(c: &mut Criterion) {
    let mut g = c.benchmark_group("tx_parse");
    g.throughput(Throughput::Elements(BURST.into()));
    for len in FRAME_SIZES {
        let mem = guest_mem();
        let total = u32::try_from(VIRTIO_NET_HDR_LEN + len).expect("length");
        let mut tx = GuestRing::new(&mem, 0, total, 0);
        fill_tx(&mem, &tx, &frame(len));
        let reader = TxReader {
            indirect: false,
            max_frame: 1518,
            max_gso_frame: 0,
        };
        g.bench_function(BenchmarkId::from_parameter(len), |b| {
            b.iter(|| {
                tx.post(&mem, BURST);
                let mut ring = tx.open(&mem);
                for _ in 0..BURST {
                    let head = ring.pop().expect("head");
                    let f = reader.read(&mem, &ring, head).expect("tx frame");
                    black_box((&f.hdr, f.len, f.segs.len()));
                    ring.add_used(head, 0).expect("used");
                }
                black_box(ring.publish_used().expect("publish"));
                tx.close(&ring);
            })
        });
    }
    g.finish();
}

fn tx_to_rx(c: &mut Criterion) {
    let mut g = c.benchmark_group("tx_to_rx");
    g.throughput(Throughput::Elements(BURST.into()));
    for len in FRAME_SIZES {
        // Two guests, each with its own memory, as two VMs are.
        let mem_a = guest_mem();
        let mem_b = guest_mem();
        let total = u32::try_from(VIRTIO_NET_HDR_LEN + len).expect("length");
        let mut tx = GuestRing::new(&mem_a, 0, total, 0);
        fill_tx(&mem_a, &tx, &frame(len));
        let mut rx = GuestRing::new(&mem_b, 0, RX_BUF, VRING_DESC_F_WRITE);
        let reader = TxReader {
            indirect: false,
            max_frame: 1518,
            max_gso_frame: 0,
        };
        let writer = RxWriter {
            mergeable: true,
            indirect: false,
        };
        let mut bad = BadChains::default();
        g.bench_function(BenchmarkId::from_parameter(len), |b| {
            b.iter(|| {
                tx.post(&mem_a, BURST);
                rx.post(&mem_b, BURST);
                let mut t = tx.open(&mem_a);
                let mut r = rx.open(&mem_b);
                for _ in 0..BURST {
                    let head = t.pop().expect("head");
                    let f = reader.read(&mem_a, &t, head).expect("tx frame");
                    let out = writer
                        .write(&mem_b, &mut r, &f.hdr, &f.segs, f.len, &mut bad)
                        .expect("rx write");
                    black_box(out);
                    t.add_used(head, 0).expect("used");
                }
                black_box(r.publish_used().expect("publish"));
                black_box(t.publish_used().expect("publish"));
                tx.close(&t);
                rx.close(&r);
            })
        });
        assert_eq!(bad.count, 0, "the benchmark's RX chains are well-formed");
    }
    g.finish();
}

criterion_group!(benches, rx_fill, tx_parse, tx_to_rx);
criterion_main!(benches);
