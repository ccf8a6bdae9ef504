//! A real vhost-user front-end: DPDK's `dpdk-testpmd` with two `net_virtio_user` ports,
//! one on each of two VNICs, forwards frames through quiverd in both directions.
//!
//! testpmd runs in `mac` forwarding mode with `--eth-peer` set to the other VNIC's MAC:
//! a frame received on port 0 (vm1) is sent out of port 1 (vm2) with vm2's source MAC
//! and vm1 as destination, and vice versa, so every port both receives and transmits
//! with its own source address (quiverd's anti-spoofing stays on). `start tx_first`
//! seeds the two loops. Each port has 2 queue pairs and a control queue (`cq=1`).
//! Covered: quiverd as server over queue size 256/1024, mergeable RX buffers off/on,
//! IN_ORDER off/on; and quiverd as client of a testpmd `server=1`.
//!
//! Each run busy-polls a core for a few seconds, so runs take turns (`SERIAL`) instead of
//! starving each other on small CI machines.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Result};
use quiver_integration::testpmd::{self, forward_rx_packets, Port, Testpmd};
use quiver_integration::{vnic_all_drops, vnic_total, Quiverd};
use serde_json::Value;

const MAC1: &str = "52:54:00:00:00:01";
const MAC2: &str = "52:54:00:00:00:02";
/// How long frames flow in each run.
const TRAFFIC: Duration = Duration::from_secs(3);
/// Bound on testpmd's start-up (EAL init, hugepages, vhost-user negotiation).
const STARTUP: Duration = Duration::from_secs(30);
/// What each VNIC must have sent and received for a run to count as "flowing".
const MIN_PACKETS: u64 = 1000;

static SERIAL: Mutex<()> = Mutex::new(());

/// One row of the matrix: virtio_user devargs.
#[derive(Clone, Copy, Debug)]
struct Row {
    queue_size: u16,
    mrg_rxbuf: bool,
    in_order: bool,
}

/// Which side of each socket listens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum QuiverdMode {
    Server,
    Client,
}

fn config(mode: QuiverdMode) -> String {
    let mode = match mode {
        QuiverdMode::Server => "",
        QuiverdMode::Client => "mode = \"client\"\n",
    };
    [("vm1", MAC1), ("vm2", MAC2)]
        .iter()
        .map(|(name, mac)| {
            format!(
                "[[vnic]]\nname = \"{name}\"\nsocket = \"@DIR@/{name}.sock\"\n{mode}mac = \"{mac}\"\nqueue_pairs = 2\nqueue_size = 1024\n\n"
            )
        })
        .collect()
}

fn both_connected(s: &Value) -> bool {
    ["vm1", "vm2"]
        .iter()
        .all(|v| s["vnics"][v]["connected"].as_bool() == Some(true))
}

/// One full run: quiverd with two VNICs, testpmd on both, frames both ways for TRAFFIC.
fn exchange(row: Row, mode: QuiverdMode) -> Result<()> {
    let _turn = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let q = Quiverd::start("testpmd", &config(mode))?;
    // quiverd writes its first stats file after installing its signal handlers; with no
    // server socket to wait for, `stats()` (SIGUSR1) could otherwise kill it.
    let deadline = Instant::now() + STARTUP;
    while !q.stats.exists() {
        ensure!(
            Instant::now() < deadline,
            "quiverd wrote no stats file:\n{}",
            q.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let ports: Vec<Port> = [("vm1", MAC1), ("vm2", MAC2)]
        .iter()
        .map(|(name, mac)| Port {
            queues: 2,
            queue_size: row.queue_size,
            mrg_rxbuf: row.mrg_rxbuf,
            in_order: row.in_order,
            cq: true,
            server: mode == QuiverdMode::Client,
            ..Port::new(&q.dir.path().join(format!("{name}.sock")), mac)
        })
        .collect();
    let args = [
        "--rxq=2".to_string(),
        "--txq=2".into(),
        "--nb-cores=1".into(),
        "--forward-mode=mac".into(),
        format!("--eth-peer=0,{MAC2}"),
        format!("--eth-peer=1,{MAC1}"),
    ];
    let mut tp = Testpmd::start(q.dir.path(), &ports, &args)?;
    // In client mode quiverd connects only once testpmd has created its sockets.
    let deadline = Instant::now() + STARTUP;
    loop {
        tp.check_running()?;
        if both_connected(&q.stats()?) {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "{row:?} {mode:?}: the ports never connected\n--- testpmd ---\n{}\n--- quiverd ---\n{}",
                tp.log_text(),
                q.log_text()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // Let the front-end finish feature negotiation and ring set-up (DRIVER_OK) after the
    // socket connects.
    std::thread::sleep(Duration::from_millis(500));
    let before = q.stats()?;
    tp.command("start tx_first 4")?;
    std::thread::sleep(TRAFFIC);
    tp.check_running()?;
    let after = q.stats()?;
    let output = tp.finish()?;

    let delta =
        |v: &str, f: &str| vnic_total(&after, v, f).saturating_sub(vnic_total(&before, v, f));
    let counters: Vec<(&str, u64, u64)> = ["vm1", "vm2"]
        .iter()
        .map(|v| (*v, delta(v, "rx_packets"), delta(v, "tx_packets")))
        .collect();
    let tp_rx = forward_rx_packets(&output);
    eprintln!(
        "{row:?} {mode:?}: quiverd (vnic, rx, tx) {counters:?}; drops vm1 {} vm2 {}; testpmd (port, RX-packets) {tp_rx:?}",
        vnic_all_drops(&after, "vm1"),
        vnic_all_drops(&after, "vm2"),
    );
    for (v, rx, tx) in &counters {
        ensure!(
            *rx > MIN_PACKETS && *tx > MIN_PACKETS,
            "{row:?} {mode:?}: {v} moved rx {rx} / tx {tx} packets in {TRAFFIC:?}, want > {MIN_PACKETS} each\nstats: {after:#}\n--- testpmd ---\n{output}\n--- quiverd ---\n{}",
            q.log_text()
        );
    }
    for port in [0, 1] {
        let rx = tp_rx.iter().find(|(p, _)| *p == port).map(|(_, rx)| *rx);
        ensure!(
            rx.is_some_and(|rx| rx > 0),
            "{row:?} {mode:?}: testpmd port {port} RX-packets {rx:?}\n{output}"
        );
    }
    Ok(())
}

fn server_row(queue_size: u16, mrg_rxbuf: bool, in_order: bool) -> Result<()> {
    if !testpmd::available()? {
        return Ok(());
    }
    exchange(
        Row {
            queue_size,
            mrg_rxbuf,
            in_order,
        },
        QuiverdMode::Server,
    )
}

#[test]
fn server_q256_plain() -> Result<()> {
    server_row(256, false, false)
}

#[test]
fn server_q256_mergeable() -> Result<()> {
    server_row(256, true, false)
}

#[test]
fn server_q256_in_order() -> Result<()> {
    server_row(256, false, true)
}

#[test]
fn server_q256_mergeable_in_order() -> Result<()> {
    server_row(256, true, true)
}

#[test]
fn server_q1024_plain() -> Result<()> {
    server_row(1024, false, false)
}

#[test]
fn server_q1024_mergeable() -> Result<()> {
    server_row(1024, true, false)
}

#[test]
fn server_q1024_in_order() -> Result<()> {
    server_row(1024, false, true)
}

#[test]
fn server_q1024_mergeable_in_order() -> Result<()> {
    server_row(1024, true, true)
}

#[test]
fn client_mode_against_a_listening_testpmd() -> Result<()> {
    if !testpmd::available()? {
        return Ok(());
    }
    exchange(
        Row {
            queue_size: 1024,
            mrg_rxbuf: true,
            in_order: false,
        },
        QuiverdMode::Client,
    )
}
