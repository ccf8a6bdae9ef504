//! Shared fixtures for quiver's integration tests: a `quiverd` process with a
//! configuration of the test's own, in a private directory, and its counters.
//!
//! Every test gets unique names (socket directory, interface and namespace names carry
//! the pid and a counter) and everything is removed on drop, so tests run in parallel.

pub mod nshost;
pub mod pingloop;
pub mod qemu;
pub mod tcp;
pub mod testpmd;
pub mod veth;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::Value;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A unique short token for names in this test process: `{pid}x{n}`.
pub fn unique() -> String {
    format!(
        "{}x{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Path of the quiverd binary built by cargo for this workspace.
pub fn quiverd_bin() -> PathBuf {
    if let Ok(p) = std::env::var("QUIVERD") {
        return PathBuf::from(p);
    }
    // integration tests run from target/<profile>/deps.
    let mut p = std::env::current_exe().unwrap_or_default();
    p.pop();
    if p.ends_with("deps") {
        p.pop();
    }
    p.join("quiverd")
}

/// A private directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Result<TempDir> {
        let p = std::env::temp_dir().join(format!("quiver-{tag}-{}", unique()));
        std::fs::create_dir_all(&p).with_context(|| format!("creating {}", p.display()))?;
        Ok(TempDir(p))
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A running quiverd; killed (SIGTERM, then SIGKILL) on drop.
pub struct Quiverd {
    pub dir: TempDir,
    pub config: PathBuf,
    pub stats: PathBuf,
    pub log: PathBuf,
    child: Option<Child>,
}

impl Quiverd {
    /// Writes `config` (TOML; `@DIR@` is replaced by the private directory) and starts
    /// quiverd on it. Waits until every `socket = ...` of a server-mode VNIC exists.
    pub fn start(tag: &str, config: &str) -> Result<Quiverd> {
        let dir = TempDir::new(tag)?;
        let text = config.replace("@DIR@", &dir.path().display().to_string());
        let cfg = dir.path().join("quiverd.toml");
        std::fs::write(&cfg, &text)?;
        let stats = dir.path().join("stats.json");
        let log = dir.path().join("quiverd.log");
        let mut q = Quiverd {
            config: cfg,
            stats,
            log,
            dir,
            child: None,
        };
        q.spawn()?;
        q.wait_sockets(&text)?;
        Ok(q)
    }

    fn spawn(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let child = Command::new(quiverd_bin())
            .arg("--config")
            .arg(&self.config)
            .arg("--stats-file")
            .arg(&self.stats)
            .arg("--log-level")
            .arg("debug")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", quiverd_bin().display()))?;
        self.child = Some(child);
        Ok(())
    }

    fn wait_sockets(&mut self, text: &str) -> Result<()> {
        let sockets = server_sockets(text);
        let deadline = Instant::now() + Duration::from_secs(10);
        // The stats file is first written after the signal handlers are installed: until
        // then SIGUSR1 would kill quiverd.
        while !self.stats.exists() || !sockets.iter().all(|s| Path::new(s).exists()) {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                bail!("quiverd exited with {status}: {}", self.log_text());
            }
            if Instant::now() > deadline {
                bail!("quiverd did not create its sockets: {}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// A testdriver front-end with the default features and `mac`, connected to the
    /// server-mode VNIC `name` (its socket is `@DIR@/NAME.sock`).
    pub fn guest(&self, name: &str, mac: [u8; 6]) -> Result<quiver_testdriver::Guest> {
        let cfg = quiver_testdriver::DriverConfig {
            mac,
            ..quiver_testdriver::DriverConfig::default()
        };
        let sock = self.dir.path().join(format!("{name}.sock"));
        quiver_testdriver::Guest::connect(&sock, cfg, Duration::from_secs(5))
            .with_context(|| format!("connecting a test front-end to {name}"))
    }

    pub fn pid(&self) -> i32 {
        self.child
            .as_ref()
            .and_then(|c| i32::try_from(c.id()).ok())
            .unwrap_or(0)
    }

    pub fn signal(&self, sig: i32) {
        let pid = self.pid();
        if pid > 0 {
            // SAFETY: kill(2) with a pid of a child this fixture started; no memory
            // is passed.
            unsafe {
                libc::kill(pid, sig);
            }
        }
    }

    /// Rewrites the configuration and sends SIGHUP.
    pub fn reload(&self, config: &str) -> Result<()> {
        let text = config.replace("@DIR@", &self.dir.path().display().to_string());
        std::fs::write(&self.config, text)?;
        self.signal(libc::SIGHUP);
        Ok(())
    }

    /// Kills quiverd with SIGKILL and starts it again on the same configuration.
    pub fn kill_and_restart(&mut self) -> Result<()> {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        // The new process's first stats file says it is up (sockets bound, signals set).
        let _ = std::fs::remove_file(&self.stats);
        self.spawn()?;
        let text = std::fs::read_to_string(&self.config)?;
        self.wait_sockets(&text)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The current counters (after asking quiverd to write them).
    pub fn stats(&self) -> Result<Value> {
        let before = std::fs::metadata(&self.stats)
            .and_then(|m| m.modified())
            .ok();
        self.signal(libc::SIGUSR1);
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let now = std::fs::metadata(&self.stats)
                .and_then(|m| m.modified())
                .ok();
            if now.is_some() && (now != before || Instant::now() > deadline) {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let text = std::fs::read_to_string(&self.stats).context("reading the stats file")?;
        Ok(serde_json::from_str(&text)?)
    }

    /// Polls the counters until `pred` holds, or fails with the last value.
    pub fn wait_stats(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Result<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let v = self.stats()?;
            if pred(&v) {
                return Ok(v);
            }
            if Instant::now() > deadline {
                bail!("timed out waiting for {what}; stats: {v:#}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops quiverd with SIGTERM and returns its exit status.
    pub fn stop(&mut self) -> Result<std::process::ExitStatus> {
        self.signal(libc::SIGTERM);
        let mut child = self.child.take().context("not running")?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                bail!("quiverd did not stop on SIGTERM: {}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Quiverd {
    fn drop(&mut self) {
        if self.child.is_some() {
            let _ = self.stop();
        }
        if std::thread::panicking() {
            eprintln!("--- quiverd log ---\n{}", self.log_text());
        }
    }
}

/// `socket = "..."` of every server-mode VNIC in a config text.
fn server_sockets(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for block in text.split("[[vnic]]").skip(1) {
        let block = block.split("[[").next().unwrap_or("");
        if block.contains("mode = \"client\"") {
            continue;
        }
        if let Some(line) = block
            .lines()
            .find(|l| l.trim_start().starts_with("socket ="))
        {
            if let Some(v) = line.split('"').nth(1) {
                out.push(v.to_string());
            }
        }
    }
    out
}

/// A counter of a VNIC's totals, e.g. `vnic_total(&s, "vm1", "rx_packets")`.
pub fn vnic_total(stats: &Value, vnic: &str, field: &str) -> u64 {
    stats["vnics"][vnic]["total"][field].as_u64().unwrap_or(0)
}

/// A drop counter of a VNIC's totals, e.g. `vnic_drops(&s, "vm1", "bad_chain")`.
pub fn vnic_drops(stats: &Value, vnic: &str, reason: &str) -> u64 {
    stats["vnics"][vnic]["total"]["drops"][reason]
        .as_u64()
        .unwrap_or(0)
}

/// Sum of all drop counters of a VNIC.
pub fn vnic_all_drops(stats: &Value, vnic: &str) -> u64 {
    stats["vnics"][vnic]["total"]["drops"]
        .as_object()
        .map_or(0, |m| m.values().filter_map(Value::as_u64).sum())
}

/// True when the test runs as root (namespaces, TAP, hugepages need it).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Whether a program is on PATH.
pub fn have(program: &str) -> bool {
    Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {program} >/dev/null 2>&1"))
        .status()
        .is_ok_and(|s| s.success())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_server_sockets_only() {
        let t = "[[vnic]]\nname = \"a\"\nsocket = \"/x/a.sock\"\n[[vnic]]\nname = \"b\"\nsocket = \"/x/b.sock\"\nmode = \"client\"\n";
        assert_eq!(server_sockets(t), vec!["/x/a.sock".to_string()]);
    }
}
