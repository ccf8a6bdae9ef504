//! A real vhost-user front-end: DPDK's `dpdk-testpmd` with two `net_virtio_user` ports,
//! one on each of two VNICs, forwards frames through quiverd in both directions.
//!
//! testpmd runs in `mac` forwarding mode with `--eth-peer` set to the other VNIC's MAC:
//! a frame received on port 0 (vm1) is sent out of port 1 (vm2) with vm2's source MAC
//! and vm1 as destination, and vice versa, so every port both receives and transmits
//! with its own source address (quiverd's anti-spoofing stays on). `start tx_first`
//! seeds the two loops. Covered: quiverd as server over queue size 256/1024, mergeable
//! RX buffers off/on, IN_ORDER off/on; and quiverd as client of a testpmd `server=1`.
//!
//! Each run busy-polls a core for a few seconds, so runs take turns (`SERIAL`) instead of
//! starving each other on small CI machines.

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use quiver_integration::{have, is_root, unique, vnic_all_drops, vnic_total, Quiverd};
use serde_json::Value;

const TESTPMD: &str = "dpdk-testpmd";
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
    mrg_rxbuf: u8,
    in_order: u8,
}

/// Which side of each socket listens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum QuiverdMode {
    Server,
    Client,
}

fn skip() -> bool {
    if !is_root() {
        eprintln!("skipped: needs root (hugepages for dpdk-testpmd)");
        return true;
    }
    if !have(TESTPMD) {
        eprintln!("skipped: {TESTPMD} not installed (scripts/setup.sh installs dpdk-dev)");
        return true;
    }
    false
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

/// A running `dpdk-testpmd` in interactive mode, driven through its stdin; killed on drop.
struct Testpmd {
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    log: PathBuf,
}

impl Testpmd {
    fn start(dir: &Path, row: Row, mode: QuiverdMode) -> Result<Testpmd> {
        let server = match mode {
            QuiverdMode::Server => "",
            QuiverdMode::Client => ",server=1",
        };
        let vdev = |i: usize, name: &str, mac: &str| {
            format!(
                "net_virtio_user{i},path={},mac={mac},queues=2,queue_size={},mrg_rxbuf={},in_order={}{server}",
                dir.join(format!("{name}.sock")).display(),
                row.queue_size,
                row.mrg_rxbuf,
                row.in_order,
            )
        };
        let log = dir.join(format!("testpmd-{}.log", unique()));
        let out = std::fs::File::create(&log)?;
        let mut cmd = Command::new(TESTPMD);
        // SAFETY: the closure runs in the forked child before exec and only calls
        // prctl(2), which is async-signal-safe; it touches no memory of the parent.
        unsafe {
            cmd.pre_exec(|| {
                // testpmd outlives a killed test otherwise (and ignores SIGTERM while a
                // server=1 port waits for its client).
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd
            .args([
                "-l",
                "0,1",
                "--no-pci",
                "--in-memory",
                "--single-file-segments",
            ])
            .arg(format!("--file-prefix=quiver-tp-{}", unique()))
            .arg("--vdev")
            .arg(vdev(0, "vm1", MAC1))
            .arg("--vdev")
            .arg(vdev(1, "vm2", MAC2))
            .args(["--", "-i", "--rxq=2", "--txq=2", "--nb-cores=1"])
            .args(["--forward-mode=mac"])
            .arg(format!("--eth-peer=0,{MAC2}"))
            .arg(format!("--eth-peer=1,{MAC1}"))
            .stdin(Stdio::piped())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("starting {TESTPMD}"))?;
        let stdin = child.stdin.take();
        Ok(Testpmd {
            child: Some(child),
            stdin,
            log,
        })
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn command(&mut self, line: &str) -> Result<()> {
        let stdin = self.stdin.as_mut().context("stdin closed")?;
        writeln!(stdin, "{line}").with_context(|| format!("testpmd: {line}: {}", self.log_text()))
    }

    /// Fails if testpmd has exited already.
    fn check_running(&mut self) -> Result<()> {
        if let Some(status) = self
            .child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
        {
            bail!("{TESTPMD} exited with {status}:\n{}", self.log_text());
        }
        Ok(())
    }

    /// `stop` (prints the forward statistics), `quit`, and waits for the exit. Returns
    /// the whole output.
    fn finish(&mut self) -> Result<String> {
        self.command("stop")?;
        self.command("quit")?;
        drop(self.stdin.take());
        let mut child = self.child.take().context("not running")?;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait()? {
                let text = self.log_text();
                ensure!(status.success(), "{TESTPMD} exited with {status}:\n{text}");
                return Ok(text);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("{TESTPMD} did not quit:\n{}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Testpmd {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!("--- testpmd log ---\n{}", self.log_text());
        }
    }
}

/// testpmd's per-port "RX-packets" from the "Forward statistics for port N" blocks that
/// `stop` prints.
fn forward_rx_packets(output: &str) -> Vec<(u16, u64)> {
    let mut out = Vec::new();
    let mut lines = output.lines();
    while let Some(line) = lines.next() {
        let Some(rest) = line.split("Forward statistics for port ").nth(1) else {
            continue;
        };
        let Some(port) = rest.split_whitespace().next().and_then(|p| p.parse().ok()) else {
            continue;
        };
        let rx = lines
            .next()
            .and_then(|l| l.split("RX-packets:").nth(1))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok());
        if let Some(rx) = rx {
            out.push((port, rx));
        }
    }
    out
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
    let mut tp = Testpmd::start(q.dir.path(), row, mode)?;
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

fn server_row(queue_size: u16, mrg_rxbuf: u8, in_order: u8) -> Result<()> {
    if skip() {
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
    server_row(256, 0, 0)
}

#[test]
fn server_q256_mergeable() -> Result<()> {
    server_row(256, 1, 0)
}

#[test]
fn server_q256_in_order() -> Result<()> {
    server_row(256, 0, 1)
}

#[test]
fn server_q256_mergeable_in_order() -> Result<()> {
    server_row(256, 1, 1)
}

#[test]
fn server_q1024_plain() -> Result<()> {
    server_row(1024, 0, 0)
}

#[test]
fn server_q1024_mergeable() -> Result<()> {
    server_row(1024, 1, 0)
}

#[test]
fn server_q1024_in_order() -> Result<()> {
    server_row(1024, 0, 1)
}

#[test]
fn server_q1024_mergeable_in_order() -> Result<()> {
    server_row(1024, 1, 1)
}

#[test]
fn client_mode_against_a_listening_testpmd() -> Result<()> {
    if skip() {
        return Ok(());
    }
    exchange(
        Row {
            queue_size: 1024,
            mrg_rxbuf: 1,
            in_order: 0,
        },
        QuiverdMode::Client,
    )
}

#[test]
fn parses_forward_statistics() {
    let text = "\
  ---------------------- Forward statistics for port 0  ----------------------
  RX-packets: 194784         RX-dropped: 0             RX-total: 194784
  TX-packets: 181632         TX-dropped: 0             TX-total: 181632

  ---------------------- Forward statistics for port 1  ----------------------
  RX-packets: 181568         RX-dropped: 0             RX-total: 181568
  +++++++++++++++ Accumulated forward statistics for all ports+++++++++++++++
  RX-packets: 376352         RX-dropped: 0             RX-total: 376352
";
    assert_eq!(forward_rx_packets(text), vec![(0, 194_784), (1, 181_568)]);
}
