//! quiverd as a benchmarked backend: its configuration written to the run directory,
//! the process pinned to one CPU, its counters read through `--stats-file` + SIGUSR1.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::proc::{pinned, Proc};

pub struct Quiverd {
    pub proc: Proc,
    stats: PathBuf,
    log: PathBuf,
}

/// Counters of one benchmark window's interest, summed over the VNICs (and uplinks).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Frames written into guests' RX rings.
    pub vnic_rx_packets: u64,
    pub vnic_rx_bytes: u64,
    /// Frames taken from guests' TX rings.
    pub vnic_tx_packets: u64,
    /// Frames swallowed by the uplinks (the sink).
    pub uplink_tx_packets: u64,
    pub uplink_tx_bytes: u64,
    /// Every drop counter of the VNICs and uplinks.
    pub drops: u64,
    /// Transmit-descriptor reclaim: mode changes of the adaptive policy, and
    /// completions published by the deadline timer (`tx_reclaim` in the stats).
    pub reclaim_switches: u64,
    pub deadline_flushes: u64,
}

impl Quiverd {
    /// Writes `config` to `dir/quiverd.toml` and starts quiverd on `cpu`; returns once
    /// its stats file and every socket in `sockets` exist.
    pub fn start(
        program: &Path,
        cpu: usize,
        dir: &Path,
        config: &str,
        sockets: &[PathBuf],
    ) -> Result<Quiverd> {
        let cfg = dir.join("quiverd.toml");
        std::fs::write(&cfg, config).with_context(|| format!("writing {}", cfg.display()))?;
        let stats = dir.join("quiverd-stats.json");
        let log = dir.join("quiverd.log");
        let _ = std::fs::remove_file(&stats);
        let out = std::fs::File::create(&log)?;
        let mut cmd = pinned(cpu, program);
        cmd.arg("--config")
            .arg(&cfg)
            .arg("--stats-file")
            .arg(&stats)
            .args(["--log-level", "warn"])
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        let mut proc = Proc::spawn("quiverd", &mut cmd)?;
        let deadline = Instant::now() + Duration::from_secs(10);
        // The first stats file comes after the signal handlers are installed: SIGUSR1
        // before that would kill quiverd.
        while !stats.exists() || !sockets.iter().all(|s| s.exists()) {
            if let Err(e) = proc.check_running() {
                bail!("{e}; log {}", log.display());
            }
            if Instant::now() > deadline {
                bail!("quiverd did not create its sockets; log {}", log.display());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Quiverd { proc, stats, log })
    }

    /// The counters now (asks quiverd to rewrite the stats file, waits for it).
    pub fn stats(&mut self) -> Result<Value> {
        let modified = |p: &Path| -> Option<SystemTime> {
            std::fs::metadata(p).and_then(|m| m.modified()).ok()
        };
        let before = modified(&self.stats);
        self.proc.signal(libc::SIGUSR1);
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            let now = modified(&self.stats);
            if now.is_some() && now != before {
                break;
            }
            if let Err(e) = self.proc.check_running() {
                bail!("{e}; log {}", self.log.display());
            }
            if Instant::now() > deadline {
                bail!("quiverd did not rewrite {}", self.stats.display());
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        let text = std::fs::read_to_string(&self.stats)
            .with_context(|| format!("reading {}", self.stats.display()))?;
        serde_json::from_str(&text).with_context(|| format!("parsing {}", self.stats.display()))
    }

    pub fn counters(&mut self) -> Result<Counters> {
        Ok(counters(&self.stats()?))
    }

    /// Whether every VNIC has a front-end connected.
    pub fn all_connected(&mut self) -> Result<bool> {
        let s = self.stats()?;
        let vnics = s["vnics"].as_object().context("stats without vnics")?;
        Ok(!vnics.is_empty()
            && vnics
                .values()
                .all(|v| v["connected"].as_bool() == Some(true)))
    }

    pub fn log(&self) -> &Path {
        &self.log
    }
}

fn drops(total: &Value) -> u64 {
    total["drops"]
        .as_object()
        .map_or(0, |m| m.values().filter_map(Value::as_u64).sum())
}

/// Sums the totals of every VNIC and uplink in a stats document.
pub fn counters(s: &Value) -> Counters {
    let mut c = Counters::default();
    let get = |t: &Value, f: &str| t[f].as_u64().unwrap_or(0);
    for v in s["vnics"].as_object().into_iter().flat_map(|m| m.values()) {
        let t = &v["total"];
        c.vnic_rx_packets += get(t, "rx_packets");
        c.vnic_rx_bytes += get(t, "rx_bytes");
        c.vnic_tx_packets += get(t, "tx_packets");
        c.drops += drops(t);
        c.reclaim_switches += get(&v["tx_reclaim"], "switches");
        c.deadline_flushes += get(&v["tx_reclaim"], "deadline_flushes");
    }
    for u in s["uplinks"]
        .as_object()
        .into_iter()
        .flat_map(|m| m.values())
    {
        let t = &u["total"];
        c.uplink_tx_packets += get(t, "tx_packets");
        c.uplink_tx_bytes += get(t, "tx_bytes");
        c.drops += drops(t);
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_vnics_and_uplinks() {
        let s: Value = serde_json::json!({
            "vnics": {
                "vm1": {"total": {"rx_packets": 5, "rx_bytes": 300, "tx_packets": 7,
                                  "drops": {"spoofed": 1, "no_rx_buffers": 2}},
                        "tx_reclaim": {"policy": "adaptive", "switches": 3, "deadline_flushes": 4}},
                "vm2": {"total": {"rx_packets": 1, "rx_bytes": 60, "tx_packets": 0, "drops": {}}}
            },
            "uplinks": {"sink": {"total": {"tx_packets": 9, "tx_bytes": 540,
                                           "drops": {"no_route": 4}}}}
        });
        assert_eq!(
            counters(&s),
            Counters {
                vnic_rx_packets: 6,
                vnic_rx_bytes: 360,
                vnic_tx_packets: 7,
                uplink_tx_packets: 9,
                uplink_tx_bytes: 540,
                drops: 7,
                reclaim_switches: 3,
                deadline_flushes: 4,
            }
        );
    }
}
