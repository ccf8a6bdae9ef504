//! Per-frame cost of the switching decision, as quiverd's workers make it for each guest
//! frame (`worker.rs::classify`: Ethernet addresses out of the first 14 bytes,
//! `check_source`, `forward`) and for each uplink frame (`Learner::learn` of the source,
//! `forward` from the uplink), over port maps of 2 and 256 ports.
//!
//! Cases (each a burst of 64 frames, so criterion's `time / 64` is the per-frame cost):
//! - `unicast`: a port sends to another port's MAC (a hit); with 256 ports the burst
//!   walks 64 different (source, destination) pairs, so lookups are not all one entry.
//! - `broadcast`: to ff:ff:ff:ff:ff:ff — the flood decision, plus walking the flood set
//!   (what the worker then delivers to: 1 or 255 ports).
//! - `unknown`: to a MAC no port owns: out of the port's uplink.
//! - `uplink_learn`: an uplink frame to a port; its source is learned (an existing
//!   entry refreshed, as for all but the first frame of a station) and forwarded.
//!
//! `cargo bench -p quiver-switch --bench classify` (add `-- --quick` for a short run).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use quiver_switch::{
    check_source, forward, Decision, DropReason, Learner, PortId, PortMap, PortSpec, Source,
    UplinkId, NATIVE_VLAN,
};
use quiver_wire::MacAddr;

const BURST: usize = 64;
const PORT_COUNTS: [u32; 2] = [2, 256];
const UPLINK: UplinkId = UplinkId(0);

fn port_mac(i: u32) -> MacAddr {
    let [_, a, b, c] = i.to_be_bytes();
    MacAddr([0x52, 0x54, 0, a, b, c])
}

fn map(ports: u32) -> PortMap {
    let specs = (0..ports)
        .map(|i| PortSpec {
            id: PortId(i),
            name: format!("vm{i}"),
            vlan: NATIVE_VLAN,
            macs: vec![port_mac(i)],
            uplink: Some(UPLINK),
            allow_spoof: false,
        })
        .collect();
    PortMap::new(specs).expect("port map")
}

/// The first 14 bytes of a frame from `src` to `dst`.
fn eth(dst: MacAddr, src: MacAddr) -> [u8; 14] {
    let mut h = [0u8; 14];
    h[..6].copy_from_slice(&dst.0);
    h[6..12].copy_from_slice(&src.0);
    h[12..].copy_from_slice(&[0x08, 0x00]);
    h
}

/// A burst of (sending port, frame header).
type Burst = Vec<(PortId, [u8; 14])>;

fn burst(ports: u32, dst_of: impl Fn(u32) -> MacAddr) -> Burst {
    (0..BURST)
        .map(|k| {
            let k = u32::try_from(k).expect("burst index");
            let src = k % ports;
            (PortId(src), eth(dst_of(src), port_mac(src)))
        })
        .collect()
}

/// quiverd's guest-frame classification (worker.rs), returning a token of the decision.
#[inline]
fn classify(map: &PortMap, port: PortId, eth: &[u8; 14]) -> Result<usize, DropReason> {
    let dst = MacAddr([eth[0], eth[1], eth[2], eth[3], eth[4], eth[5]]);
    let src = MacAddr([eth[6], eth[7], eth[8], eth[9], eth[10], eth[11]]);
    let vlan = NATIVE_VLAN;
    check_source(map, port, src)?;
    match forward(map, Source::Port(port), vlan, dst) {
        Decision::Port(p) => Ok(p.0 as usize),
        Decision::Uplink(u) => Ok(u.0 as usize),
        // The worker then delivers to each of these.
        Decision::Flood { ports, uplink } => {
            Ok(ports.map(|p| p.0 as usize).sum::<usize>() + usize::from(uplink.is_some()))
        }
        Decision::Drop(reason) => Err(reason),
    }
}

fn guest_frames(c: &mut Criterion) {
    let mut g = c.benchmark_group("classify");
    g.throughput(Throughput::Elements(BURST as u64));
    for ports in PORT_COUNTS {
        let map = map(ports);
        let cases: [(&str, Burst); 3] = [
            // Port k sends to port k+1 (mod n).
            ("unicast", burst(ports, |s| port_mac((s + 1) % ports))),
            ("broadcast", burst(ports, |_| MacAddr::BROADCAST)),
            (
                "unknown",
                burst(ports, |_| MacAddr([0x02, 0xaa, 0, 0, 0, 1])),
            ),
        ];
        for (name, frames) in cases {
            g.bench_function(BenchmarkId::new(name, format!("{ports}ports")), |b| {
                b.iter(|| {
                    for (port, eth) in &frames {
                        let d = classify(&map, *port, black_box(eth)).expect("classified");
                        black_box(d);
                    }
                })
            });
        }
    }
    g.finish();
}

fn uplink_frames(c: &mut Criterion) {
    let mut g = c.benchmark_group("classify");
    g.throughput(Throughput::Elements(BURST as u64));
    for ports in PORT_COUNTS {
        let map = map(ports);
        let learner = Learner::default();
        // 64 remote stations behind the uplink, each sending to a port.
        let frames: Vec<[u8; 14]> = (0..BURST)
            .map(|k| {
                let k = u8::try_from(k).expect("burst index");
                let dst = port_mac(u32::from(k) % ports);
                eth(dst, MacAddr([0x02, 0xbb, 0, 0, 0, k]))
            })
            .collect();
        g.bench_function(
            BenchmarkId::new("uplink_learn", format!("{ports}ports")),
            |b| {
                b.iter(|| {
                    for eth in &frames {
                        let eth = black_box(eth);
                        let dst = MacAddr([eth[0], eth[1], eth[2], eth[3], eth[4], eth[5]]);
                        let src = MacAddr([eth[6], eth[7], eth[8], eth[9], eth[10], eth[11]]);
                        black_box(learner.learn(&map, NATIVE_VLAN, src, UPLINK, 1));
                        black_box(forward(&map, Source::Uplink(UPLINK), NATIVE_VLAN, dst));
                    }
                })
            },
        );
        assert_eq!(
            learner.len(),
            BURST,
            "every remote station was learned once"
        );
    }
    g.finish();
}

criterion_group!(benches, guest_frames, uplink_frames);
criterion_main!(benches);
