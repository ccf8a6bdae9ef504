//! The in-memory uplinks that let benchmarks measure quiverd alone: frames a guest
//! sends to an unknown MAC end in a `sink` uplink (counted there, then dropped), and a
//! `source` uplink fills the guests' RX rings with its prebuilt frames, round-robin over
//! its destinations.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use quiver_integration::{vnic_all_drops, vnic_total, Quiverd};
use quiver_testdriver::{DriverConfig, Guest};
use serde_json::Value;

const MAC1: [u8; 6] = [0x52, 0x54, 0, 0, 0, 1];
const MAC2: [u8; 6] = [0x52, 0x54, 0, 0, 0, 2];
const UNKNOWN: [u8; 6] = [0x02, 0, 0, 0, 0, 0x99];
const SOURCE_SRC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x42];
const WAIT: Duration = Duration::from_secs(5);

fn guest(q: &Quiverd, name: &str, mac: [u8; 6]) -> Result<Guest> {
    let cfg = DriverConfig {
        mac,
        ..DriverConfig::default()
    };
    Guest::connect(&q.dir.path().join(format!("{name}.sock")), cfg, WAIT)
        .with_context(|| format!("connecting {name}"))
}

fn uplink_total(stats: &Value, uplink: &str, field: &str) -> u64 {
    stats["uplinks"][uplink]["total"][field]
        .as_u64()
        .unwrap_or(0)
}

#[test]
fn frames_to_unknown_macs_are_counted_by_the_sink() -> Result<()> {
    let q = Quiverd::start(
        "sink",
        r#"
[[uplink]]
name = "drop"
kind = "sink"

[[vnic]]
name = "vm1"
socket = "@DIR@/vm1.sock"
mac = "52:54:00:00:00:01"
uplink = "drop"
"#,
    )?;
    let mut g = guest(&q, "vm1", MAC1)?;
    let count = 300u64;
    let mut frame = vec![0u8; 64];
    frame[..6].copy_from_slice(&UNKNOWN);
    frame[6..12].copy_from_slice(&MAC1);
    frame[12..14].copy_from_slice(&[0x88, 0xb5]);
    for i in 0..count {
        let mut tries = 0;
        while let Err(e) = g.send(0, &frame) {
            tries += 1;
            ensure!(tries < 1000, "send {i} failed: {e}");
            g.reclaim_tx(0);
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    let stats = q.wait_stats("the sink to count every frame", WAIT, |s| {
        uplink_total(s, "drop", "tx_packets") >= count
    })?;
    ensure!(
        stats["uplinks"]["drop"]["kind"] == "sink",
        "kind: {stats:#}"
    );
    ensure!(
        uplink_total(&stats, "drop", "tx_packets") == count,
        "sink counted more than was sent: {stats:#}"
    );
    ensure!(
        uplink_total(&stats, "drop", "tx_bytes") == count * 64,
        "sink bytes: {stats:#}"
    );
    ensure!(
        vnic_total(&stats, "vm1", "tx_packets") == count,
        "vm1 tx: {stats:#}"
    );
    ensure!(vnic_all_drops(&stats, "vm1") == 0, "drops: {stats:#}");
    Ok(())
}

#[test]
fn the_source_fills_every_destination_guest() -> Result<()> {
    let q = Quiverd::start(
        "source",
        r#"
[[uplink]]
name = "gen"
kind = "source"
source_dst = ["52:54:00:00:00:01", "52:54:00:00:00:02"]
source_src = "02:00:00:00:00:42"
source_frame_len = 100

[[vnic]]
name = "vm1"
socket = "@DIR@/vm1.sock"
mac = "52:54:00:00:00:01"
uplink = "gen"

[[vnic]]
name = "vm2"
socket = "@DIR@/vm2.sock"
mac = "52:54:00:00:00:02"
uplink = "gen"
"#,
    )?;
    let mut guests = [
        (guest(&q, "vm1", MAC1)?, MAC1),
        (guest(&q, "vm2", MAC2)?, MAC2),
    ];
    let want = 2000u64;
    for (g, mac) in &mut guests {
        let deadline = Instant::now() + WAIT;
        let mut got = 0u64;
        while got < want {
            ensure!(
                Instant::now() < deadline,
                "{mac:02x?}: {got} of {want} frames"
            );
            let Some((_, f)) = g.recv_any(Duration::from_millis(200))? else {
                continue;
            };
            ensure!(f.data.len() == 100, "length {}", f.data.len());
            ensure!(f.data[..6] == mac[..], "dst {:02x?}", &f.data[..6]);
            ensure!(
                f.data[6..12] == SOURCE_SRC[..],
                "src {:02x?}",
                &f.data[6..12]
            );
            ensure!(f.data[12..14] == [0x88, 0xb5], "ethertype");
            ensure!(
                f.data[14..]
                    .iter()
                    .enumerate()
                    .all(|(i, b)| usize::from(*b) == i % 256),
                "payload corrupted"
            );
            got += 1;
        }
    }
    let stats = q.stats()?;
    for vnic in ["vm1", "vm2"] {
        ensure!(
            vnic_total(&stats, vnic, "rx_packets") >= want,
            "{vnic} rx: {stats:#}"
        );
    }
    ensure!(
        stats["uplinks"]["gen"]["kind"] == "source",
        "kind: {stats:#}"
    );
    // Everything the source generated was either delivered or counted as a drop.
    let generated = uplink_total(&stats, "gen", "rx_packets");
    ensure!(generated >= 2 * want, "generated: {stats:#}");
    Ok(())
}
