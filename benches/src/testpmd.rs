//! `dpdk-testpmd` in interactive mode, driven over its stdin: the generator (one
//! `net_virtio_user` port per VNIC socket) and the anchor backend (two `net_vhost`
//! ports). Its stdout is collected by a reader thread so commands can wait for their
//! output; everything also goes to a log file.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::proc::{pinned, Proc};

/// How long a command's output may take.
const REPLY: Duration = Duration::from_secs(10);

/// What to run.
pub struct Spec {
    pub name: String,
    pub program: PathBuf,
    pub cpu: usize,
    pub file_prefix: String,
    pub vdevs: Vec<String>,
    /// `--forward-mode`.
    pub mode: String,
    /// `--eth-peer=N,MAC`.
    pub peers: Vec<String>,
    /// `--txpkts`.
    pub txpkts: usize,
    /// `--record-burst-stats`: RX burst sizes in the forward statistics.
    pub burst_stats: bool,
    pub log: PathBuf,
}

/// Counters of one port (`show port stats all`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortStats {
    pub rx_packets: u64,
    pub rx_missed: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_errors: u64,
    pub tx_bytes: u64,
}

/// Forwarding counters of one port (`show fwd stats all`): TX-dropped counts frames the
/// forwarding engine could not put on the port's TX ring (it was full).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct FwdStats {
    pub rx_packets: u64,
    pub rx_dropped: u64,
    pub tx_packets: u64,
    pub tx_dropped: u64,
    /// With `--record-burst-stats`: RX polls, and the % of them that returned a full
    /// burst (32 frames: more were waiting) or nothing.
    pub rx_bursts: u64,
    pub rx_full_pct: f64,
    pub rx_empty_pct: f64,
}

pub struct Testpmd {
    pub proc: Proc,
    stdin: Option<ChildStdin>,
    out: Arc<Mutex<String>>,
    reader: Option<JoinHandle<()>>,
    log: PathBuf,
    ports: usize,
}

impl Testpmd {
    pub fn start(spec: &Spec) -> Result<Testpmd> {
        let log = std::fs::File::create(&spec.log)
            .with_context(|| format!("creating {}", spec.log.display()))?;
        // testpmd's printf output is block-buffered into a pipe: unbuffer it, or a
        // command's reply would arrive only when the buffer fills.
        let mut cmd: Command = pinned(spec.cpu, Path::new("stdbuf"));
        cmd.arg("-o0").arg(&spec.program);
        // The main lcore (the command line, idle while waiting for input) and the
        // forwarding lcore share the one CPU.
        cmd.arg(format!("--lcores=0@{0},1@{0}", spec.cpu))
            .args(["--no-pci", "--in-memory", "--single-file-segments"])
            .arg(format!("--file-prefix={}", spec.file_prefix));
        for v in &spec.vdevs {
            cmd.arg("--vdev").arg(v);
        }
        cmd.args(["--", "-i", "--nb-cores=1", "--rxq=1", "--txq=1"])
            .args(["--rxd=1024", "--txd=1024", "--total-num-mbufs=32768"])
            .arg(format!("--forward-mode={}", spec.mode))
            .arg(format!("--txpkts={}", spec.txpkts));
        for p in &spec.peers {
            cmd.arg(format!("--eth-peer={p}"));
        }
        if spec.burst_stats {
            cmd.arg("--record-burst-stats");
        }
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log.try_clone()?);
        let mut proc = Proc::spawn(&spec.name, &mut cmd)?;
        let child = proc.child_mut().context("testpmd not running")?;
        let stdin = child.stdin.take();
        let mut stdout = child.stdout.take().context("testpmd stdout")?;
        let out = Arc::new(Mutex::new(String::new()));
        let sink = out.clone();
        let mut log_out = log;
        let reader = std::thread::Builder::new()
            .name(format!("{}-out", spec.name))
            .spawn(move || {
                let mut buf = [0u8; 8192];
                while let Ok(n) = stdout.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    let _ = log_out.write_all(&buf[..n]);
                    sink.lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            })?;
        Ok(Testpmd {
            proc,
            stdin,
            out,
            reader: Some(reader),
            log: spec.log.clone(),
            ports: spec.vdevs.len(),
        })
    }

    fn text_len(&self) -> usize {
        self.out
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Waits until the output after byte `from` satisfies `done`; returns that part.
    fn wait_output(
        &mut self,
        from: usize,
        what: &str,
        done: impl Fn(&str) -> bool,
    ) -> Result<String> {
        let deadline = Instant::now() + REPLY;
        loop {
            {
                let text = self.out.lock().unwrap_or_else(PoisonError::into_inner);
                let tail = text.get(from..).unwrap_or("");
                if done(tail) {
                    return Ok(tail.to_owned());
                }
            }
            if let Err(e) = self.proc.check_running() {
                bail!("{e} while waiting for {what}; log: {}", self.log.display());
            }
            if Instant::now() > deadline {
                bail!(
                    "{}: no {what} within {REPLY:?}; log: {}",
                    self.proc.name,
                    self.log.display()
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Waits for the first `testpmd>` prompt: EAL and the ports are up.
    pub fn wait_prompt(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self
                .out
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .contains("testpmd> ")
            {
                return Ok(());
            }
            if let Err(e) = self.proc.check_running() {
                bail!("{e} during start-up; log: {}", self.log.display());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        bail!(
            "{} gave no prompt within {timeout:?}; log: {}",
            self.proc.name,
            self.log.display()
        )
    }

    pub fn command(&mut self, line: &str) -> Result<()> {
        let stdin = self.stdin.as_mut().context("testpmd stdin closed")?;
        writeln!(stdin, "{line}")
            .and_then(|()| stdin.flush())
            .with_context(|| format!("{}: {line}", self.proc.name))
    }

    /// `show port stats all`, one entry per port.
    pub fn port_stats(&mut self) -> Result<Vec<PortStats>> {
        let from = self.text_len();
        self.command("show port stats all")?;
        let n = self.ports;
        let text = self.wait_output(from, "port statistics", |t| {
            t.lines().filter(|l| is_rule(l, '#')).count() >= n
        })?;
        let stats = parse_port_stats(&text);
        if stats.len() != n {
            bail!(
                "{}: port statistics for {} of {n} ports",
                self.proc.name,
                stats.len()
            );
        }
        Ok(stats)
    }

    /// `show fwd stats all`, one entry per port.
    pub fn fwd_stats(&mut self) -> Result<Vec<FwdStats>> {
        let from = self.text_len();
        self.command("show fwd stats all")?;
        let text = self.wait_output(from, "forward statistics", |t| {
            t.contains("Accumulated forward statistics") && t.lines().any(|l| is_rule(l, '+'))
        })?;
        Ok(parse_fwd_stats(&text))
    }

    /// `clear fwd stats all`: forward statistics (and burst statistics) restart at 0.
    pub fn clear_fwd_stats(&mut self) -> Result<()> {
        self.command("clear fwd stats all")
    }

    /// `stop`, `quit`, and waits for the exit (killed after a grace period).
    pub fn quit(&mut self) {
        let _ = self.command("stop");
        let _ = self.command("quit");
        drop(self.stdin.take());
        self.proc.finish(Duration::from_secs(10));
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }

    pub fn log(&self) -> &Path {
        &self.log
    }
}

impl Drop for Testpmd {
    fn drop(&mut self) {
        drop(self.stdin.take());
        self.proc.finish(Duration::from_millis(500));
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

/// A line of only `c` (at least 10 of them), after trimming.
fn is_rule(line: &str, c: char) -> bool {
    let t = line.trim();
    t.len() >= 10 && t.chars().all(|x| x == c)
}

/// The number after `key` on `line` (`"RX-packets: 123"`).
fn value_after(line: &str, key: &str) -> Option<u64> {
    line.split(key)
        .nth(1)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Blocks that start with a line containing `header` and end at the next blank line.
fn blocks<'a>(text: &'a str, header: &str) -> Vec<Vec<&'a str>> {
    let mut out = Vec::new();
    let mut cur: Option<Vec<&str>> = None;
    for line in text.lines() {
        if line.contains(header) {
            if let Some(b) = cur.take() {
                out.push(b);
            }
            cur = Some(Vec::new());
        } else if let Some(b) = cur.as_mut() {
            if line.trim().is_empty() || is_rule(line, '#') || line.contains("----------") {
                out.extend(cur.take());
            } else {
                b.push(line);
            }
        }
    }
    out.extend(cur);
    out
}

fn find(block: &[&str], key: &str) -> u64 {
    block.iter().find_map(|l| value_after(l, key)).unwrap_or(0)
}

pub fn parse_port_stats(text: &str) -> Vec<PortStats> {
    blocks(text, "NIC statistics for port")
        .iter()
        .map(|b| PortStats {
            rx_packets: find(b, "RX-packets:"),
            rx_missed: find(b, "RX-missed:"),
            rx_bytes: find(b, "RX-bytes:"),
            tx_packets: find(b, "TX-packets:"),
            tx_errors: find(b, "TX-errors:"),
            tx_bytes: find(b, "TX-bytes:"),
        })
        .collect()
}

/// `RX-bursts : 12323058 [99% of 0 pkts + 1% of 32 pkts]` → (polls, % full, % empty).
fn parse_bursts(block: &[&str]) -> (u64, f64, f64) {
    let Some(line) = block.iter().find(|l| l.contains("RX-bursts :")) else {
        return (0, 0.0, 0.0);
    };
    let total = value_after(line, "RX-bursts :").unwrap_or(0);
    let (mut full, mut empty) = (0.0, 0.0);
    let inner = line.split('[').nth(1).and_then(|r| r.split(']').next());
    for part in inner.unwrap_or("").split(" + ") {
        let Some((pct, what)) = part.trim().split_once("% of ") else {
            continue;
        };
        let Ok(pct) = pct.trim().parse::<f64>() else {
            continue;
        };
        match what.trim() {
            "32 pkts" => full += pct,
            "0 pkts" => empty += pct,
            _ => {}
        }
    }
    (total, full, empty)
}

pub fn parse_fwd_stats(text: &str) -> Vec<FwdStats> {
    blocks(text, "Forward statistics for port")
        .iter()
        .map(|b| {
            let (rx_bursts, rx_full_pct, rx_empty_pct) = parse_bursts(b);
            FwdStats {
                rx_packets: find(b, "RX-packets:"),
                rx_dropped: find(b, "RX-dropped:"),
                tx_packets: find(b, "TX-packets:"),
                tx_dropped: find(b, "TX-dropped:"),
                rx_bursts,
                rx_full_pct,
                rx_empty_pct,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const PORT_STATS: &str = "testpmd> 
  ######################## NIC statistics for port 0  ########################
  RX-packets: 10         RX-missed: 1          RX-bytes:  600
  RX-errors: 0
  RX-nombuf:  0         
  TX-packets: 1024       TX-errors: 2          TX-bytes:  61440

  Throughput (since last show)
  Rx-pps:            0          Rx-bps:            0
  Tx-pps:            0          Tx-bps:            0
  ############################################################################

  ######################## NIC statistics for port 1  ########################
  RX-packets: 20         RX-missed: 0          RX-bytes:  1200
  RX-errors: 0
  RX-nombuf:  0         
  TX-packets: 7          TX-errors: 0          TX-bytes:  420

  Throughput (since last show)
  Rx-pps:            0          Rx-bps:            0
  Tx-pps:            0          Tx-bps:            0
  ############################################################################
";

    const FWD_STATS: &str = "
  ---------------------- Forward statistics for port 0  ----------------------
  RX-packets: 0              RX-dropped: 0             RX-total: 0
  TX-packets: 1024           TX-dropped: 28337408      TX-total: 28338432
  ----------------------------------------------------------------------------

  ---------------------- Forward statistics for port 1  ----------------------
  RX-packets: 5              RX-dropped: 3             RX-total: 8
  TX-packets: 1024           TX-dropped: 9             TX-total: 1033
  RX-bursts : 12323058 [70% of 0 pkts + 25% of 32 pkts + 5% of other]
  ----------------------------------------------------------------------------

  +++++++++++++++ Accumulated forward statistics for all ports+++++++++++++++
  RX-packets: 5              RX-dropped: 3             RX-total: 8
  TX-packets: 2048           TX-dropped: 28337417      TX-total: 28339465
  ++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++++
";

    #[test]
    fn parses_port_stats_per_port() {
        let s = parse_port_stats(PORT_STATS);
        assert_eq!(
            s,
            vec![
                PortStats {
                    rx_packets: 10,
                    rx_missed: 1,
                    rx_bytes: 600,
                    tx_packets: 1024,
                    tx_errors: 2,
                    tx_bytes: 61440
                },
                PortStats {
                    rx_packets: 20,
                    rx_missed: 0,
                    rx_bytes: 1200,
                    tx_packets: 7,
                    tx_errors: 0,
                    tx_bytes: 420
                },
            ]
        );
        assert_eq!(PORT_STATS.lines().filter(|l| is_rule(l, '#')).count(), 2);
    }

    #[test]
    fn parses_fwd_stats_per_port_not_the_total() {
        let s = parse_fwd_stats(FWD_STATS);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].tx_dropped, 28_337_408);
        assert_eq!(
            s[1],
            FwdStats {
                rx_packets: 5,
                rx_dropped: 3,
                tx_packets: 1024,
                tx_dropped: 9,
                rx_bursts: 12_323_058,
                rx_full_pct: 25.0,
                rx_empty_pct: 70.0,
            }
        );
    }
}
