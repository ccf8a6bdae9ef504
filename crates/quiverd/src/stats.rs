//! Counters as JSON: per VNIC (per queue and total) and per uplink queue. Written to
//! `--stats-file` so operators and tests can read them until the control API lands.

use std::io::Write;
use std::path::Path;
use std::sync::atomic::Ordering;

use quiver_switch::CounterSnapshot;
use serde_json::{json, Value};

use crate::daemon::Daemon;

pub fn snapshot(d: &Daemon) -> Value {
    let mut vnics = serde_json::Map::new();
    for v in d.vnics() {
        let queues: Vec<CounterSnapshot> = v.counters.iter().map(|c| c.snapshot()).collect();
        let total: CounterSnapshot = queues.iter().copied().sum();
        vnics.insert(
            v.cfg.name.clone(),
            json!({
                "port": v.port.0,
                "mac": v.cfg.mac.to_string(),
                "socket": v.cfg.socket.display().to_string(),
                "connected": v.conn().is_some(),
                "connects": v.events.connects.load(Ordering::Relaxed),
                "disconnects": v.events.disconnects.load(Ordering::Relaxed),
                "ring_errors": v.events.ring_errors.load(Ordering::Relaxed),
                "tx_reclaim": {
                    "policy": v.cfg.tx_reclaim.to_string(),
                    "switches": v.events.reclaim_switches.load(Ordering::Relaxed),
                    "deadline_flushes": v.events.reclaim_deadline_flushes.load(Ordering::Relaxed),
                },
                "total": total,
                "queues": queues,
                "rings": rings_of(d, v),
            }),
        );
    }
    let mut uplinks = serde_json::Map::new();
    for u in d.uplinks() {
        let queues: Vec<CounterSnapshot> = u.counters.iter().map(|c| c.snapshot()).collect();
        let total: CounterSnapshot = queues.iter().copied().sum();
        uplinks.insert(
            u.cfg.name.clone(),
            json!({
                "kind": u.dev.kind().as_str(),
                "ifname": u.dev.ifname(),
                "total": total,
                "queues": queues,
                "kernel": u.dev.kernel_counters().into_iter().map(|(k, v)| (k.to_string(), Value::from(v))).collect::<serde_json::Map<_, _>>(),
            }),
        );
    }
    let learner = &d.fabric().learner;
    json!({
        "vnics": vnics,
        "uplinks": uplinks,
        "learned_macs": learner.len(),
        "learn_overflow": learner.learn_overflow(),
        "mac_conflict": learner.mac_conflict(),
    })
}

/// The uplink rings a VNIC holds and how its frames reach it (`null` without an
/// uplink).
fn rings_of(d: &Daemon, vnic: &crate::vnic::Vnic) -> Value {
    let v = &vnic.cfg;
    let Some(port) = v
        .uplink
        .as_deref()
        .and_then(|u| d.uplinks().find(|p| p.cfg.name == u))
    else {
        return Value::Null;
    };
    let dedicated = vnic.conn().is_some_and(|c| c.dedicated_open());
    let r = port.ring_status(&v.name, dedicated);
    json!({ "wanted": r.wanted, "held": r.held, "path": r.path })
}

/// Writes the snapshot atomically (temp file + rename).
pub fn write(d: &Daemon, path: &Path) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    {
        // One write per 64 KiB, not one per JSON token (256 VNICs: ~350 KB a second).
        let mut f = std::io::BufWriter::with_capacity(64 * 1024, std::fs::File::create(&tmp)?);
        serde_json::to_writer_pretty(&mut f, &snapshot(d))?;
        f.write_all(b"\n")?;
        f.flush()?;
    }
    std::fs::rename(&tmp, path)
}
