//! One measurement: a backend (quiverd or the anchor) and the generator started for a
//! test and frame size, a warm-up, then counters read at both ends of a fixed window.
//!
//! Topologies (the generator is the same for both backends in every test):
//! - `vm2vm`: generator `mac` forwarding seeded by `start tx_first`: what port 0
//!   receives leaves port 1 addressed to port 0's MAC, and the reverse, so frames loop
//!   guest → backend → guest in both directions and every frame crosses the backend
//!   once per lap. quiverd switches by MAC; the anchor (`io`) cross-connects its ports.
//!   Counted: frames the guests received (generator RX-packets).
//! - `guest-tx`: generator `txonly` to a MAC nobody owns; quiverd sends them to its
//!   `sink` uplink, the anchor runs `rxonly`. Counted: frames the backend swallowed.
//! - `guest-rx`: generator `rxonly`; quiverd's `source` uplink and the anchor's `txonly`
//!   generate toward both guests. Counted: frames the guests received.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::proc::{cpu_busy_seconds, cpu_seconds};
use crate::quiverd::{Counters, Quiverd};
use crate::reclaim::Policy;
use crate::testpmd::{FwdStats, PortStats, Spec, Testpmd};

pub const MAC1: &str = "52:54:00:00:00:01";
pub const MAC2: &str = "52:54:00:00:00:02";
/// Owned by no VNIC: quiverd sends frames to it out of the VNIC's uplink.
pub const UNKNOWN_MAC: &str = "02:00:00:00:00:99";
/// EAL start-up and vhost-user negotiation.
const STARTUP: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum Test {
    Vm2vm,
    GuestTx,
    GuestRx,
}

impl Test {
    pub fn name(self) -> &'static str {
        match self {
            Test::Vm2vm => "vm2vm",
            Test::GuestTx => "guest-tx",
            Test::GuestRx => "guest-rx",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum Backend {
    Quiverd,
    Anchor,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Quiverd => "quiverd",
            Backend::Anchor => "anchor",
        }
    }
}

/// What every measurement shares.
pub struct Env {
    pub quiverd: PathBuf,
    pub testpmd: PathBuf,
    pub backend_cpu: usize,
    pub generator_cpu: usize,
    pub warmup: Duration,
    pub window: Duration,
    /// Bursts of 32 frames per port that seed the vm2vm loops.
    pub tx_first: u32,
    /// Sockets live here (short paths: sun_path holds 107 bytes).
    pub sock_dir: PathBuf,
    /// Logs of every process go here.
    pub log_dir: PathBuf,
    /// Set by SIGINT / SIGTERM: the measurement in progress gives up.
    pub stop: Arc<AtomicBool>,
    /// quiverd's `busy_poll_us` on every VNIC (0: off, quiverd's default).
    pub busy_poll_us: u32,
}

impl Env {
    /// Sleeps for `d`, failing early once `stop` is set.
    fn sleep(&self, d: Duration) -> Result<()> {
        let end = Instant::now() + d;
        loop {
            if self.stop.load(Ordering::Relaxed) {
                bail!("interrupted");
            }
            let now = Instant::now();
            if now >= end {
                return Ok(());
            }
            std::thread::sleep((end - now).min(Duration::from_millis(100)));
        }
    }
}

/// One measured window.
#[derive(Clone, Debug)]
pub struct Sample {
    pub test: Test,
    pub size: usize,
    pub backend: Backend,
    /// quiverd's `tx_reclaim` when the run set one (`--reclaim`), else its default.
    pub reclaim: Option<Policy>,
    pub run: usize,
    pub secs: f64,
    /// Frames (and their bytes) that reached the receiving side in the window.
    pub frames: u64,
    pub bytes: u64,
    /// The same flow counted at the other end (what the sender got onto the wire).
    pub sent: u64,
    /// Backend CPU time over the window, % of one CPU.
    pub backend_cpu: f64,
    /// Time the backend's CPU spent on anything but the backend (other processes,
    /// interrupts), and the generator's CPU on anything but the generator, %: a busy
    /// machine shows here.
    pub backend_cpu_other: f64,
    pub generator_cpu_other: f64,
    /// Frames the generator put on its TX rings, and those it could not (ring full).
    pub gen_tx: u64,
    pub gen_tx_full: u64,
    /// Frames the backend dropped (all drop counters; for the anchor TX-dropped and
    /// RX-missed).
    pub backend_drops: u64,
    /// Generator RX polls in the window that found a full burst waiting (it is behind:
    /// the generator limits the rate) or nothing (it waits for the backend), %.
    pub gen_rx_full_pct: f64,
    pub gen_rx_empty_pct: f64,
    /// quiverd: the adaptive policy's mode changes since start (at the window's end),
    /// and TX completions published by the deadline timer in the window.
    pub reclaim_switches: u64,
    pub deadline_flushes: u64,
}

impl Sample {
    pub fn mpps(&self) -> f64 {
        self.frames as f64 / self.secs / 1e6
    }

    pub fn gbps(&self) -> f64 {
        self.bytes as f64 * 8.0 / self.secs / 1e9
    }

    /// Whether this window shows the backend as the bottleneck:
    /// - guest-tx: the generator's TX ring was full for ≥ 1 % of its attempts;
    /// - vm2vm, guest-rx: the generator's RX polls found a full burst waiting less than
    ///   half of the time, so frames did not pile up at the generator: it waited for the
    ///   backend. (A busy-polling backend's failed enqueues into a momentarily full guest
    ///   ring — the anchor's TX-dropped in guest-rx — are shown as drops, not used here.)
    pub fn backend_bound(&self) -> bool {
        match self.test {
            Test::GuestTx => self.gen_tx_full_pct() >= 1.0,
            Test::Vm2vm | Test::GuestRx => self.gen_rx_full_pct < 50.0,
        }
    }

    /// Other work took > 10 % of the backend's or the generator's CPU in the window.
    pub fn noisy(&self) -> bool {
        self.backend_cpu_other > 10.0 || self.generator_cpu_other > 10.0
    }

    /// Share of the generator's TX attempts refused because the ring was full, %.
    pub fn gen_tx_full_pct(&self) -> f64 {
        let attempts = self.gen_tx + self.gen_tx_full;
        if attempts == 0 {
            0.0
        } else {
            self.gen_tx_full as f64 * 100.0 / attempts as f64
        }
    }
}

/// `cfg` with `busy_poll_us = us` on every VNIC (unchanged for 0).
pub fn with_busy_poll(cfg: String, us: u32) -> String {
    if us == 0 {
        return cfg;
    }
    cfg.replace("[[vnic]]\n", &format!("[[vnic]]\nbusy_poll_us = {us}\n"))
}

/// quiverd's configuration for `test`: two VNICs (and the test's uplink), with
/// `tx_reclaim = reclaim` when given.
pub fn quiverd_config(
    test: Test,
    size: usize,
    socks: &[PathBuf; 2],
    reclaim: Option<Policy>,
) -> String {
    let mut cfg = String::new();
    let uplink = match test {
        Test::Vm2vm => None,
        Test::GuestTx => {
            cfg.push_str("[[uplink]]\nname = \"sink\"\nkind = \"sink\"\n\n");
            Some("sink")
        }
        Test::GuestRx => {
            cfg.push_str(&format!(
                "[[uplink]]\nname = \"source\"\nkind = \"source\"\nsource_dst = [\"{MAC1}\", \"{MAC2}\"]\nsource_frame_len = {size}\n\n"
            ));
            Some("source")
        }
    };
    let mtu = size.saturating_sub(14).max(1500);
    for (i, (sock, mac)) in socks.iter().zip([MAC1, MAC2]).enumerate() {
        cfg.push_str(&format!(
            "[[vnic]]\nname = \"vm{}\"\nsocket = \"{}\"\nmac = \"{mac}\"\nqueue_size = 1024\nmtu = {mtu}\n",
            i + 1,
            sock.display()
        ));
        if let Some(u) = uplink {
            cfg.push_str(&format!("uplink = \"{u}\"\n"));
        }
        if let Some(p) = reclaim {
            cfg.push_str(&format!("tx_reclaim = \"{}\"\n", p.name()));
        }
        cfg.push('\n');
    }
    cfg
}

fn generator_spec(env: &Env, test: Test, size: usize, socks: &[PathBuf; 2], tag: &str) -> Spec {
    let vdevs = socks
        .iter()
        .zip([MAC1, MAC2])
        .enumerate()
        .map(|(i, (s, mac))| {
            format!(
                "net_virtio_user{i},path={},mac={mac},queue_size=1024,mrg_rxbuf=1",
                s.display()
            )
        })
        .collect();
    let (mode, peers) = match test {
        Test::Vm2vm => ("mac", [format!("0,{MAC2}"), format!("1,{MAC1}")]),
        Test::GuestTx => (
            "txonly",
            [format!("0,{UNKNOWN_MAC}"), format!("1,{UNKNOWN_MAC}")],
        ),
        Test::GuestRx => ("rxonly", [format!("0,{MAC2}"), format!("1,{MAC1}")]),
    };
    Spec {
        name: "generator".into(),
        program: env.testpmd.clone(),
        cpu: env.generator_cpu,
        file_prefix: format!("qbench-gen-{}", std::process::id()),
        vdevs,
        mode: mode.into(),
        peers: peers.to_vec(),
        txpkts: size,
        burst_stats: true,
        log: env.log_dir.join(format!("{tag}-generator.log")),
    }
}

fn anchor_spec(env: &Env, test: Test, size: usize, socks: &[PathBuf; 2], tag: &str) -> Spec {
    let vdevs = socks
        .iter()
        .enumerate()
        .map(|(i, s)| format!("net_vhost{i},iface={},queues=1", s.display()))
        .collect();
    let mode = match test {
        Test::Vm2vm => "io",
        Test::GuestTx => "rxonly",
        Test::GuestRx => "txonly",
    };
    Spec {
        name: "anchor".into(),
        program: env.testpmd.clone(),
        cpu: env.backend_cpu,
        file_prefix: format!("qbench-anchor-{}", std::process::id()),
        vdevs,
        mode: mode.into(),
        // With the default paired topology a txonly stream sends on port N to peer N.
        peers: vec![format!("0,{MAC1}"), format!("1,{MAC2}")],
        txpkts: size,
        burst_stats: false,
        log: env.log_dir.join(format!("{tag}-anchor.log")),
    }
}

enum Running {
    Quiverd(Quiverd),
    Anchor(Testpmd),
}

enum BackendCounters {
    Quiverd(Counters),
    Anchor(Vec<PortStats>, Vec<FwdStats>),
}

impl Running {
    fn pid(&self) -> i32 {
        match self {
            Running::Quiverd(q) => q.proc.pid(),
            Running::Anchor(a) => a.proc.pid(),
        }
    }

    fn counters(&mut self) -> Result<BackendCounters> {
        Ok(match self {
            Running::Quiverd(q) => BackendCounters::Quiverd(q.counters()?),
            Running::Anchor(a) => BackendCounters::Anchor(a.port_stats()?, a.fwd_stats()?),
        })
    }

    fn log(&self) -> &Path {
        match self {
            Running::Quiverd(q) => q.log(),
            Running::Anchor(a) => a.log(),
        }
    }
}

fn sum<T>(v: &[T], f: impl Fn(&T) -> u64) -> u64 {
    v.iter().map(f).sum()
}

/// Counters at both ends of the window.
struct Snapshot {
    at: Instant,
    gen_ports: Vec<PortStats>,
    gen_fwd: Vec<FwdStats>,
    backend: BackendCounters,
    cpu: f64,
    gen_cpu: f64,
    backend_cpu_busy: f64,
    gen_cpu_busy: f64,
}

fn snapshot(env: &Env, gen: &mut Testpmd, backend: &mut Running) -> Result<Snapshot> {
    let at = Instant::now();
    let backend_cpu_busy = cpu_busy_seconds(env.backend_cpu)?;
    let gen_cpu_busy = cpu_busy_seconds(env.generator_cpu)?;
    let gen_ports = gen.port_stats()?;
    let gen_fwd = gen.fwd_stats()?;
    let backend_counters = backend.counters()?;
    let cpu = cpu_seconds(backend.pid())?;
    let gen_cpu = cpu_seconds(gen.proc.pid())?;
    Ok(Snapshot {
        at,
        gen_ports,
        gen_fwd,
        backend: backend_counters,
        cpu,
        gen_cpu,
        backend_cpu_busy,
        gen_cpu_busy,
    })
}

/// Runs one measurement (quiverd with `tx_reclaim = reclaim` when given); every
/// process is gone when it returns.
pub fn measure(
    env: &Env,
    test: Test,
    size: usize,
    backend: Backend,
    reclaim: Option<Policy>,
    run: usize,
) -> Result<Sample> {
    let policy = reclaim.map_or(String::new(), |p| format!("-{}", p.name()));
    let tag = format!("{}-{size}-{}{policy}-{run}", test.name(), backend.name());
    let dir = env.sock_dir.join(&tag);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let socks = [dir.join("vm1.sock"), dir.join("vm2.sock")];
    for s in &socks {
        let _ = std::fs::remove_file(s);
    }
    let mut running = match backend {
        Backend::Quiverd => {
            let qdir = env.log_dir.join(&tag);
            std::fs::create_dir_all(&qdir)?;
            Running::Quiverd(Quiverd::start(
                &env.quiverd,
                env.backend_cpu,
                &qdir,
                &with_busy_poll(
                    quiverd_config(test, size, &socks, reclaim),
                    env.busy_poll_us,
                ),
                &socks,
            )?)
        }
        Backend::Anchor => {
            let mut a = Testpmd::start(&anchor_spec(env, test, size, &socks, &tag))?;
            a.wait_prompt(STARTUP)?;
            let deadline = Instant::now() + STARTUP;
            while !socks.iter().all(|s| s.exists()) {
                if Instant::now() > deadline {
                    bail!("the anchor made no sockets; log {}", a.log().display());
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            a.command("start")?;
            Running::Anchor(a)
        }
    };
    let mut gen = Testpmd::start(&generator_spec(env, test, size, &socks, &tag))?;
    gen.wait_prompt(STARTUP)?;
    if let Running::Quiverd(q) = &mut running {
        let deadline = Instant::now() + STARTUP;
        while !q.all_connected()? {
            if Instant::now() > deadline {
                bail!(
                    "the generator never connected to quiverd; logs {} {}",
                    gen.log().display(),
                    q.log().display()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    match test {
        Test::Vm2vm => gen.command(&format!("start tx_first {}", env.tx_first))?,
        _ => gen.command("start")?,
    }
    env.sleep(env.warmup)?;
    let mut a = snapshot(env, &mut gen, &mut running)?;
    // The generator's forward statistics (and RX burst sizes) restart with the window.
    gen.clear_fwd_stats()?;
    a.gen_fwd = vec![FwdStats::default(); a.gen_fwd.len()];
    env.sleep(env.window)?;
    let b = snapshot(env, &mut gen, &mut running)?;
    gen.quit();
    match &mut running {
        Running::Quiverd(q) => q.proc.finish(Duration::ZERO),
        Running::Anchor(t) => t.quit(),
    }
    let _ = std::fs::remove_dir_all(&dir);
    let log = running.log().to_path_buf();
    sample(test, size, backend, run, &a, &b)
        .map(|s| Sample { reclaim, ..s })
        .with_context(|| format!("backend log {}", log.display()))
}

fn sample(
    test: Test,
    size: usize,
    backend: Backend,
    run: usize,
    a: &Snapshot,
    b: &Snapshot,
) -> Result<Sample> {
    let d = |f: &dyn Fn(&Snapshot) -> u64| f(b).saturating_sub(f(a));
    let gen_rx = d(&|s| sum(&s.gen_ports, |p| p.rx_packets));
    let gen_rx_bytes = d(&|s| sum(&s.gen_ports, |p| p.rx_bytes));
    let gen_tx = d(&|s| sum(&s.gen_fwd, |p| p.tx_packets));
    let gen_tx_full = d(&|s| sum(&s.gen_fwd, |p| p.tx_dropped));
    let backend_val =
        |f: &dyn Fn(&BackendCounters) -> u64| f(&b.backend).saturating_sub(f(&a.backend));
    let q = |f: fn(&Counters) -> u64| {
        backend_val(&|c| match c {
            BackendCounters::Quiverd(c) => f(c),
            BackendCounters::Anchor(..) => 0,
        })
    };
    let an = |f: &dyn Fn(&[PortStats], &[FwdStats]) -> u64| {
        backend_val(&|c| match c {
            BackendCounters::Anchor(p, fw) => f(p, fw),
            BackendCounters::Quiverd(_) => 0,
        })
    };
    let (frames, bytes, sent) = match (test, backend) {
        (Test::Vm2vm | Test::GuestRx, Backend::Quiverd) => {
            (gen_rx, gen_rx_bytes, q(|c| c.vnic_rx_packets))
        }
        (Test::Vm2vm | Test::GuestRx, Backend::Anchor) => {
            (gen_rx, gen_rx_bytes, an(&|p, _| sum(p, |s| s.tx_packets)))
        }
        (Test::GuestTx, Backend::Quiverd) => {
            (q(|c| c.uplink_tx_packets), q(|c| c.uplink_tx_bytes), gen_tx)
        }
        (Test::GuestTx, Backend::Anchor) => (
            an(&|p, _| sum(p, |s| s.rx_packets)),
            an(&|p, _| sum(p, |s| s.rx_bytes)),
            gen_tx,
        ),
    };
    let (reclaim_switches, deadline_flushes) = match (&a.backend, &b.backend) {
        (BackendCounters::Quiverd(a), BackendCounters::Quiverd(b)) => (
            b.reclaim_switches,
            b.deadline_flushes.saturating_sub(a.deadline_flushes),
        ),
        _ => (0, 0),
    };
    let backend_drops = match backend {
        Backend::Quiverd => q(|c| c.drops),
        Backend::Anchor => an(&|p, fw| sum(fw, |s| s.tx_dropped) + sum(p, |s| s.rx_missed)),
    };
    let polls = sum(&b.gen_fwd, |f| f.rx_bursts);
    let weighted = |f: fn(&FwdStats) -> f64| {
        if polls == 0 {
            0.0
        } else {
            b.gen_fwd
                .iter()
                .map(|s| f(s) * s.rx_bursts as f64)
                .sum::<f64>()
                / polls as f64
        }
    };
    let secs = b.at.duration_since(a.at).as_secs_f64();
    if secs <= 0.0 {
        bail!("empty window");
    }
    Ok(Sample {
        test,
        size,
        backend,
        reclaim: None,
        run,
        secs,
        frames,
        bytes,
        sent,
        backend_cpu: (b.cpu - a.cpu) * 100.0 / secs,
        backend_cpu_other: ((b.backend_cpu_busy - a.backend_cpu_busy) - (b.cpu - a.cpu)).max(0.0)
            * 100.0
            / secs,
        generator_cpu_other: ((b.gen_cpu_busy - a.gen_cpu_busy) - (b.gen_cpu - a.gen_cpu)).max(0.0)
            * 100.0
            / secs,
        gen_tx,
        gen_tx_full,
        backend_drops,
        gen_rx_full_pct: weighted(|f| f.rx_full_pct),
        gen_rx_empty_pct: weighted(|f| f.rx_empty_pct),
        reclaim_switches,
        deadline_flushes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quiverd_configs_have_the_uplink_each_test_needs() {
        let socks = [PathBuf::from("/t/vm1.sock"), PathBuf::from("/t/vm2.sock")];
        let v = quiverd_config(Test::Vm2vm, 64, &socks, None);
        assert_eq!(with_busy_poll(v.clone(), 0), v);
        assert_eq!(
            with_busy_poll(v.clone(), 50)
                .matches("busy_poll_us = 50\n")
                .count(),
            2
        );
        assert!(!v.contains("[[uplink]]") && !v.contains("tx_reclaim"));
        assert_eq!(v.matches("[[vnic]]").count(), 2);
        let b = quiverd_config(Test::Vm2vm, 64, &socks, Some(Policy::Batched));
        assert_eq!(b.matches("tx_reclaim = \"batched\"").count(), 2);
        let tx = quiverd_config(Test::GuestTx, 64, &socks, None);
        assert!(tx.contains("kind = \"sink\"") && tx.matches("uplink = \"sink\"").count() == 2);
        let rx = quiverd_config(Test::GuestRx, 1500, &socks, None);
        assert!(rx.contains("kind = \"source\"") && rx.contains("source_frame_len = 1500"));
        assert!(rx.contains("mtu = 1500"));
    }
}
