//! The reclaim comparison (`--reclaim adaptive,eager,batched`): quiverd's
//! transmit-descriptor reclaim policies (`tx_reclaim` on both VNICs) side by side, each
//! run trying every policy in turn (A B C A B C ...), quiverd on `--backend-cpu`.
//!
//! - throughput: the harness's own windows (`scenario::measure`, testpmd generator on
//!   `--generator-cpu`), quiverd only, once per policy.
//! - latency: two testdriver guests (quiver's own vhost-user front-end) on quiverd's two
//!   VNICs, driven by one thread pinned to `--generator-cpu`. Guest A (vm1) sends one
//!   64-byte frame every `--latency-interval-us`; B (vm2) receives it and sends it back;
//!   A receives it. Per frame: one-way (A send → B has it), round trip (A send → A has
//!   the echo) and TX completion (A send → A's driver sees the chain in its used ring,
//!   the one thing reclaim changes directly).
//!
//! With `--latency-wait block` (the default) the driver sleeps in poll(2) on the call
//! eventfds, as a guest kernel waits for interrupts; one thread cannot wait for A's TX
//! completion and the echo at once, so frames alternate between a round-trip frame and
//! a TX-completion frame (the same traffic, different things timed), `--latency-samples`
//! of each. With `--latency-wait poll` it spins on the rings (like a DPDK guest) and
//! times all three on every frame: no wake-up latency of the driver in the numbers.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use quiver_testdriver::{parse_seq_frame, seq_frame, DriverConfig, Guest, QueueSel};

use crate::proc::{cpu_busy_seconds, cpu_seconds};
use crate::quiverd::Quiverd;
use crate::report::spread;
use crate::scenario::{quiverd_config, Env, Sample, Test};

/// quiverd's `tx_reclaim` values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, clap::ValueEnum)]
pub enum Policy {
    Adaptive,
    Eager,
    Batched,
}

impl Policy {
    pub fn name(self) -> &'static str {
        match self {
            Policy::Adaptive => "adaptive",
            Policy::Eager => "eager",
            Policy::Batched => "batched",
        }
    }
}

/// The halves of the comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum Part {
    Throughput,
    Latency,
}

/// How the latency driver waits for the rings.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Wait {
    /// poll(2) on the call eventfds (a guest waiting for interrupts).
    Block,
    /// Spin on the used rings (a polling guest).
    Poll,
}

impl Wait {
    pub fn name(self) -> &'static str {
        match self {
            Wait::Block => "block",
            Wait::Poll => "poll",
        }
    }
}

/// How the latency part runs.
#[derive(Clone, Copy, Debug)]
pub struct LatencySpec {
    /// Timed frames per quantity and run.
    pub samples: usize,
    /// Frames sent before the timed ones (not recorded).
    pub warmup: usize,
    pub interval: Duration,
    pub wait: Wait,
    pub frame_len: usize,
}

const MAC1: [u8; 6] = [0x52, 0x54, 0, 0, 0, 1];
const MAC2: [u8; 6] = [0x52, 0x54, 0, 0, 0, 2];
/// Stream ids of the frames A → B and of the echoes B → A.
const OUT: u32 = 1;
const BACK: u32 = 2;
/// Longest wait for any one frame, completion or connection.
const WAIT: Duration = Duration::from_secs(2);
/// quiverd's VNICs and the guests' rings (as the throughput windows use).
const QUEUE_SIZE: u16 = 1024;

/// One timed frame; µs, `None` where this frame did not time it.
#[derive(Clone, Copy, Debug, Default)]
pub struct FrameTimes {
    pub seq: u64,
    pub one_way: Option<f64>,
    pub rtt: Option<f64>,
    pub tx_done: Option<f64>,
}

/// One latency run of one policy.
#[derive(Clone, Debug)]
pub struct LatencyRun {
    pub policy: Policy,
    pub run: usize,
    pub frames: Vec<FrameTimes>,
    /// Frames each guest sent, warm-up included.
    pub sent: usize,
    /// Completions quiverd's deadline timer published, on A's and on B's VNIC.
    pub flushes_a: u64,
    pub flushes_b: u64,
    /// Mode changes of the adaptive policy on either VNIC.
    pub switches: u64,
    /// quiverd's CPU time, and what else ran on quiverd's / the driver's CPU, % of the
    /// timed part.
    pub backend_cpu: f64,
    pub backend_cpu_other: f64,
    pub driver_cpu_other: f64,
}

impl LatencyRun {
    fn values(&self, f: impl Fn(&FrameTimes) -> Option<f64>) -> Vec<f64> {
        let mut v: Vec<f64> = self.frames.iter().filter_map(f).collect();
        v.sort_by(f64::total_cmp);
        v
    }

    pub fn rtt(&self) -> Vec<f64> {
        self.values(|f| f.rtt)
    }

    pub fn one_way(&self) -> Vec<f64> {
        self.values(|f| f.one_way)
    }

    pub fn tx_done(&self) -> Vec<f64> {
        self.values(|f| f.tx_done)
    }

    /// Deadline flushes per frame sent (both guests).
    pub fn flushes_per_frame(&self) -> f64 {
        (self.flushes_a + self.flushes_b) as f64 / (2 * self.sent).max(1) as f64
    }

    /// Other work took > 10 % of either CPU.
    pub fn noisy(&self) -> bool {
        self.backend_cpu_other > 10.0 || self.driver_cpu_other > 10.0
    }
}

/// Nearest-rank percentile `p` (0..=100) of sorted `v`.
pub fn percentile(v: &[f64], p: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    // The rank is in 0..=len (p clamped): the cast cannot truncate.
    #[allow(clippy::cast_possible_truncation)]
    let rank = (p.clamp(0.0, 100.0) / 100.0 * v.len() as f64).ceil() as usize;
    v.get(rank.clamp(1, v.len()) - 1).copied()
}

/// Pins the calling thread to `cpu`.
pub fn pin_thread(cpu: usize) -> Result<()> {
    if cpu >= libc::CPU_SETSIZE as usize {
        bail!("CPU {cpu} is beyond CPU_SETSIZE");
    }
    // SAFETY: cpu_set_t is a plain bit array; all zeroes is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cpu` is below CPU_SETSIZE (checked above), so the bit is inside `set`.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: `set` is a valid cpu_set_t of the size passed for the whole call; pid 0
    // is the calling thread.
    let r = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    if r != 0 {
        bail!(
            "pinning the latency driver to CPU {cpu}: {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

/// Waits (blocking) for sequence frame (`stream`, `seq`) on `g`'s RX queue; older frames
/// (left over from a frame that timed out) are skipped.
fn recv_seq(g: &mut Guest, who: &str, stream: u32, seq: u64) -> Result<()> {
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let f = g
            .recv(0, left)
            .with_context(|| format!("{who}: receiving frame {seq}"))?;
        match f {
            Some(f) if parse_seq_frame(&f.data) == Some((stream, seq)) => return Ok(()),
            Some(_) => continue,
            None => bail!("{who}: frame {seq} did not arrive within {WAIT:?}"),
        }
    }
}

/// Whether `f` is sequence frame (`stream`, `seq`).
fn is_seq(f: Option<quiver_testdriver::RxFrame>, stream: u32, seq: u64) -> bool {
    f.is_some_and(|f| parse_seq_frame(&f.data) == Some((stream, seq)))
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// The two guests and what A has sent.
struct Pair {
    a: Guest,
    b: Guest,
    len: usize,
    /// Chains A has put on its TX ring so far (all come back one by one).
    a_sent: usize,
}

impl Pair {
    fn send_a(&mut self, seq: u64) -> Result<()> {
        self.a
            .send(0, &seq_frame(MAC2, MAC1, OUT, seq, self.len))
            .with_context(|| format!("A: sending frame {seq}"))?;
        self.a_sent += 1;
        Ok(())
    }

    fn echo_b(&mut self, seq: u64) -> Result<()> {
        self.b
            .send(0, &seq_frame(MAC1, MAC2, BACK, seq, self.len))
            .with_context(|| format!("B: sending echo {seq}"))
    }

    fn wait_tx_done(&mut self, timeout: Duration) -> Result<bool> {
        self.a
            .wait_used(QueueSel::Tx(0), self.a_sent, timeout)
            .context("A: waiting for TX completions")
    }

    /// Blocking: a round-trip frame (`timed_tx == false`) or a TX-completion frame.
    fn frame_block(&mut self, seq: u64, timed_tx: bool) -> Result<FrameTimes> {
        let t0 = Instant::now();
        self.send_a(seq)?;
        let mut t = FrameTimes {
            seq,
            ..FrameTimes::default()
        };
        if timed_tx {
            ensure!(
                self.wait_tx_done(WAIT)?,
                "A: frame {seq} not completed within {WAIT:?}"
            );
            t.tx_done = Some(micros(t0.elapsed()));
        }
        recv_seq(&mut self.b, "B", OUT, seq)?;
        if !timed_tx {
            t.one_way = Some(micros(t0.elapsed()));
        }
        self.echo_b(seq)?;
        recv_seq(&mut self.a, "A", BACK, seq)?;
        if !timed_tx {
            t.rtt = Some(micros(t0.elapsed()));
        }
        Ok(t)
    }

    /// Spinning: all three times of one frame.
    fn frame_poll(&mut self, seq: u64) -> Result<FrameTimes> {
        let t0 = Instant::now();
        self.send_a(seq)?;
        let mut t = FrameTimes {
            seq,
            ..FrameTimes::default()
        };
        let deadline = t0 + WAIT;
        while t.rtt.is_none() || t.tx_done.is_none() {
            if t.one_way.is_none() && is_seq(self.b.recv(0, Duration::ZERO)?, OUT, seq) {
                t.one_way = Some(micros(t0.elapsed()));
                self.echo_b(seq)?;
            }
            if t.tx_done.is_none() && self.wait_tx_done(Duration::ZERO)? {
                t.tx_done = Some(micros(t0.elapsed()));
            }
            if t.one_way.is_some()
                && t.rtt.is_none()
                && is_seq(self.a.recv(0, Duration::ZERO)?, BACK, seq)
            {
                t.rtt = Some(micros(t0.elapsed()));
            }
            if Instant::now() > deadline {
                bail!("frame {seq}: not done within {WAIT:?} ({t:?})");
            }
        }
        Ok(t)
    }
}

/// CPU clocks at one end of the timed part.
struct Clocks {
    at: Instant,
    quiverd: f64,
    me: f64,
    backend_busy: f64,
    driver_busy: f64,
}

fn clocks(env: &Env, quiverd_pid: i32) -> Result<Clocks> {
    let me = i32::try_from(std::process::id()).context("own pid")?;
    Ok(Clocks {
        at: Instant::now(),
        quiverd: cpu_seconds(quiverd_pid)?,
        me: cpu_seconds(me)?,
        backend_busy: cpu_busy_seconds(env.backend_cpu)?,
        driver_busy: cpu_busy_seconds(env.generator_cpu)?,
    })
}

/// One latency run: quiverd with `policy` on both VNICs, two guests, the frames. Call
/// from a thread pinned to the driver's CPU.
pub fn measure_latency(
    env: &Env,
    spec: &LatencySpec,
    policy: Policy,
    run: usize,
) -> Result<LatencyRun> {
    let tag = format!("latency-{}-{run}", policy.name());
    let dir = env.sock_dir.join(&tag);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let socks = [dir.join("vm1.sock"), dir.join("vm2.sock")];
    let qdir = env.log_dir.join(&tag);
    std::fs::create_dir_all(&qdir).with_context(|| format!("creating {}", qdir.display()))?;
    let config = quiverd_config(Test::Vm2vm, spec.frame_len, &socks, Some(policy));
    let mut q = Quiverd::start(&env.quiverd, env.backend_cpu, &qdir, &config, &socks)?;
    let log = q.log().to_path_buf();
    let result = drive(env, spec, policy, run, &mut q, &socks);
    q.proc.finish(Duration::ZERO);
    let _ = std::fs::remove_dir_all(&dir);
    result.with_context(|| format!("quiverd log {}", log.display()))
}

fn drive(
    env: &Env,
    spec: &LatencySpec,
    policy: Policy,
    run: usize,
    q: &mut Quiverd,
    socks: &[PathBuf; 2],
) -> Result<LatencyRun> {
    let guest = |sock: &Path, mac: [u8; 6], who: &str| -> Result<Guest> {
        let cfg = DriverConfig {
            mac,
            queue_size: QUEUE_SIZE,
            ..DriverConfig::default()
        };
        Guest::connect(sock, cfg, WAIT)
            .with_context(|| format!("connecting {who} to {}", sock.display()))
    };
    let mut p = Pair {
        a: guest(&socks[0], MAC1, "guest A")?,
        b: guest(&socks[1], MAC2, "guest B")?,
        len: spec.frame_len,
        a_sent: 0,
    };
    let deadline = Instant::now() + WAIT;
    while !q.all_connected()? {
        if Instant::now() > deadline {
            bail!("quiverd does not show both guests connected");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let per_sample = match spec.wait {
        Wait::Block => 2,
        Wait::Poll => 1,
    };
    let total = spec.warmup + spec.samples * per_sample;
    let mut frames = Vec::with_capacity(spec.samples * per_sample);
    let mut start_clocks = None;
    let start = Instant::now();
    let mut due = start;
    for i in 0..total {
        if env.stop.load(Ordering::Relaxed) {
            bail!("interrupted");
        }
        if i == spec.warmup {
            start_clocks = Some(clocks(env, q.proc.pid())?);
        }
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        due += spec.interval;
        let seq = i as u64;
        let t = match spec.wait {
            Wait::Block => p.frame_block(seq, i % 2 == 1)?,
            Wait::Poll => p.frame_poll(seq)?,
        };
        if i >= spec.warmup {
            frames.push(t);
        }
    }
    let b = clocks(env, q.proc.pid())?;
    let a = start_clocks.context("no timed frames")?;
    // Late completions (batched: the deadline) are published before the counters are read.
    std::thread::sleep(Duration::from_millis(5));
    let stats = q.stats()?;
    let reclaim = |vnic: &str, f: &str| stats["vnics"][vnic]["tx_reclaim"][f].as_u64().unwrap_or(0);
    let secs = b.at.duration_since(a.at).as_secs_f64();
    ensure!(secs > 0.0, "empty run");
    let pct = |x: f64| (x * 100.0 / secs).max(0.0);
    Ok(LatencyRun {
        policy,
        run,
        frames,
        sent: p.a_sent,
        flushes_a: reclaim("vm1", "deadline_flushes"),
        flushes_b: reclaim("vm2", "deadline_flushes"),
        switches: reclaim("vm1", "switches") + reclaim("vm2", "switches"),
        backend_cpu: pct(b.quiverd - a.quiverd),
        backend_cpu_other: pct((b.backend_busy - a.backend_busy) - (b.quiverd - a.quiverd)),
        driver_cpu_other: pct((b.driver_busy - a.driver_busy) - (b.me - a.me)),
    })
}

/// "median [min-max]" of per-run values.
fn across(v: &[f64], prec: usize) -> String {
    match spread(v) {
        Some((lo, m, hi)) => format!("{m:.prec$} [{lo:.prec$}-{hi:.prec$}]"),
        None => "-".into(),
    }
}

/// The policy the others are compared with: eager if it ran, else the first.
fn reference(policies: &[Policy]) -> Option<Policy> {
    policies
        .iter()
        .copied()
        .find(|&p| p == Policy::Eager)
        .or_else(|| policies.first().copied())
}

/// Throughput per test, size and policy; `samples` are quiverd windows with `reclaim` set.
pub fn throughput_table(samples: &[Sample], policies: &[Policy]) -> String {
    let mut out = String::new();
    let refp = reference(policies);
    let _ = writeln!(
        out,
        "reclaim policies: throughput (quiverd, Mpps the receiving side counted; ratio = policy / {} of the same run)",
        refp.map_or("-", Policy::name)
    );
    let _ = writeln!(
        out,
        "{:<9} {:>5} {:<9} {:>4}  {:<24} {:<20} {:>5} {:>6} {:>6} {:>8} {:>8} {:>8} {:>10} {:>6} {:>5}",
        "test", "size", "policy", "runs", "Mpps min / med / max", "ratio med [min-max]", "CPU%",
        "bOth%", "gOth%", "txfull%", "rxfull%", "switches", "flushes/s", "bound", "noisy"
    );
    let mut keys: Vec<(Test, usize)> = samples.iter().map(|s| (s.test, s.size)).collect();
    keys.sort();
    keys.dedup();
    for (test, size) in keys {
        let of = |p: Policy| -> Vec<&Sample> {
            samples
                .iter()
                .filter(|s| s.test == test && s.size == size && s.reclaim == Some(p))
                .collect()
        };
        let base = refp.map(of).unwrap_or_default();
        for &p in policies {
            let v = of(p);
            let mpps: Vec<f64> = v.iter().map(|s| s.mpps()).collect();
            let ratios: Vec<f64> = v
                .iter()
                .filter_map(|s| {
                    let r = base.iter().find(|b| b.run == s.run)?;
                    (r.frames > 0).then(|| s.mpps() / r.mpps())
                })
                .collect();
            let med = |f: &dyn Fn(&Sample) -> f64, prec: usize| {
                let xs: Vec<f64> = v.iter().map(|s| f(s)).collect();
                spread(&xs).map_or("-".into(), |(_, m, _)| format!("{m:.prec$}"))
            };
            let _ = writeln!(
                out,
                "{:<9} {:>5} {:<9} {:>4}  {:<24} {:<20} {:>5} {:>6} {:>6} {:>8} {:>8} {:>8} {:>10} {:>6} {:>5}",
                test.name(),
                size,
                p.name(),
                v.len(),
                spread(&mpps).map_or("-".into(), |(a, b, c)| format!("{a:.3} / {b:.3} / {c:.3}")),
                across(&ratios, 2),
                med(&|s| s.backend_cpu, 0),
                med(&|s| s.backend_cpu_other, 0),
                med(&|s| s.generator_cpu_other, 0),
                med(&Sample::gen_tx_full_pct, 1),
                med(&|s| s.gen_rx_full_pct, 1),
                med(&|s| s.reclaim_switches as f64, 0),
                med(&|s| s.deadline_flushes as f64 / s.secs, 0),
                format!("{}/{}", v.iter().filter(|s| s.backend_bound()).count(), v.len()),
                format!("{}/{}", v.iter().filter(|s| s.noisy()).count(), v.len()),
            );
        }
        out.push('\n');
    }
    out
}

/// Latency per policy: each cell is the median over runs of the run's statistic, with
/// the lowest and highest run in brackets.
pub fn latency_table(runs: &[LatencyRun], policies: &[Policy], spec: &LatencySpec) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "reclaim policies: latency, µs (median of runs [min-max]); one {} B frame every {} µs A -> B -> A, driver waits by {}, {} samples per quantity and run",
        spec.frame_len,
        spec.interval.as_micros(),
        spec.wait.name(),
        spec.samples
    );
    let _ = writeln!(
        out,
        "{:<9} {:>4}  {:<22} {:<22} {:<22} {:<22} {:<22} {:<22} {:<22} {:>8} {:>8} {:>5} {:>6} {:>6} {:>5}",
        "policy", "runs", "RTT p50", "RTT p99", "RTT max", "one-way p50", "TX done p50",
        "TX done p99", "TX done max", "flush/fr", "switches", "CPU%", "bOth%", "dOth%", "noisy"
    );
    for &p in policies {
        let v: Vec<&LatencyRun> = runs.iter().filter(|r| r.policy == p).collect();
        let stat = |f: &dyn Fn(&LatencyRun) -> Vec<f64>, pct: f64| -> String {
            let xs: Vec<f64> = v.iter().filter_map(|r| percentile(&f(r), pct)).collect();
            across(&xs, 1)
        };
        let med = |f: &dyn Fn(&LatencyRun) -> f64, prec: usize| {
            let xs: Vec<f64> = v.iter().map(|r| f(r)).collect();
            spread(&xs).map_or("-".into(), |(_, m, _)| format!("{m:.prec$}"))
        };
        let _ = writeln!(
            out,
            "{:<9} {:>4}  {:<22} {:<22} {:<22} {:<22} {:<22} {:<22} {:<22} {:>8} {:>8} {:>5} {:>6} {:>6} {:>5}",
            p.name(),
            v.len(),
            stat(&LatencyRun::rtt, 50.0),
            stat(&LatencyRun::rtt, 99.0),
            stat(&LatencyRun::rtt, 100.0),
            stat(&LatencyRun::one_way, 50.0),
            stat(&LatencyRun::tx_done, 50.0),
            stat(&LatencyRun::tx_done, 99.0),
            stat(&LatencyRun::tx_done, 100.0),
            med(&LatencyRun::flushes_per_frame, 2),
            med(&|r| r.switches as f64, 0),
            med(&|r| r.backend_cpu, 1),
            med(&|r| r.backend_cpu_other, 0),
            med(&|r| r.driver_cpu_other, 0),
            format!("{}/{}", v.iter().filter(|r| r.noisy()).count(), v.len()),
        );
    }
    out
}

/// Every throughput window of the comparison.
pub fn throughput_tsv(samples: &[Sample]) -> String {
    let mut out = String::from(
        "test\tsize\tpolicy\trun\tsecs\tframes\tmpps\tgbps\tbackend_cpu_pct\tbackend_cpu_other_pct\tgenerator_cpu_other_pct\tgen_tx_full_pct\tgen_rx_full_bursts_pct\tbackend_drops\treclaim_switches\tdeadline_flushes\tbackend_bound\tnoisy\n",
    );
    for s in samples {
        let _ = writeln!(
            out,
            "{}\t{}\t{}\t{}\t{:.3}\t{}\t{:.4}\t{:.4}\t{:.1}\t{:.1}\t{:.1}\t{:.2}\t{:.1}\t{}\t{}\t{}\t{}\t{}",
            s.test.name(),
            s.size,
            s.reclaim.map_or("-", Policy::name),
            s.run,
            s.secs,
            s.frames,
            s.mpps(),
            s.gbps(),
            s.backend_cpu,
            s.backend_cpu_other,
            s.generator_cpu_other,
            s.gen_tx_full_pct(),
            s.gen_rx_full_pct,
            s.backend_drops,
            s.reclaim_switches,
            s.deadline_flushes,
            s.backend_bound(),
            s.noisy()
        );
    }
    out
}

/// One line per latency run: its percentiles and counters.
pub fn latency_tsv(runs: &[LatencyRun], spec: &LatencySpec) -> String {
    let mut out = String::from(
        "policy\trun\twait\tinterval_us\tframe_len\tsamples\tframes_sent\trtt_p50_us\trtt_p99_us\trtt_max_us\tone_way_p50_us\tone_way_p99_us\ttx_done_p50_us\ttx_done_p99_us\ttx_done_max_us\tdeadline_flushes_a\tdeadline_flushes_b\tswitches\tbackend_cpu_pct\tbackend_cpu_other_pct\tdriver_cpu_other_pct\tnoisy\n",
    );
    for r in runs {
        let p = |v: &[f64], q: f64| percentile(v, q).map_or(String::new(), |x| format!("{x:.2}"));
        let (rtt, ow, tx) = (r.rtt(), r.one_way(), r.tx_done());
        let _ = writeln!(
            out,
            "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{:.2}\t{:.1}\t{:.1}\t{}",
            r.policy.name(),
            r.run,
            spec.wait.name(),
            spec.interval.as_micros(),
            spec.frame_len,
            rtt.len().max(tx.len()),
            r.sent,
            p(&rtt, 50.0),
            p(&rtt, 99.0),
            p(&rtt, 100.0),
            p(&ow, 50.0),
            p(&ow, 99.0),
            p(&tx, 50.0),
            p(&tx, 99.0),
            p(&tx, 100.0),
            r.flushes_a,
            r.flushes_b,
            r.switches,
            r.backend_cpu,
            r.backend_cpu_other,
            r.driver_cpu_other,
            r.noisy()
        );
    }
    out
}

/// Every timed frame (µs; empty where the frame did not time it).
pub fn frames_tsv(runs: &[LatencyRun]) -> String {
    let mut out = String::from("policy\trun\tseq\tone_way_us\trtt_us\ttx_done_us\n");
    let f = |x: Option<f64>| x.map_or(String::new(), |x| format!("{x:.2}"));
    for r in runs {
        for t in &r.frames {
            let _ = writeln!(
                out,
                "{}\t{}\t{}\t{}\t{}\t{}",
                r.policy.name(),
                r.run,
                t.seq,
                f(t.one_way),
                f(t.rtt),
                f(t.tx_done)
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(policy: Policy, run: usize, rtts: &[f64], txs: &[f64]) -> LatencyRun {
        let frames = rtts
            .iter()
            .zip(txs)
            .enumerate()
            .map(|(i, (&r, &t))| FrameTimes {
                seq: i as u64,
                one_way: Some(r / 2.0),
                rtt: Some(r),
                tx_done: Some(t),
            })
            .collect();
        LatencyRun {
            policy,
            run,
            frames,
            sent: 3,
            flushes_a: 0,
            flushes_b: 0,
            switches: 0,
            backend_cpu: 1.0,
            backend_cpu_other: 0.0,
            driver_cpu_other: 0.0,
        }
    }

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), Some(50.0));
        assert_eq!(percentile(&v, 99.0), Some(99.0));
        assert_eq!(percentile(&v, 100.0), Some(100.0));
        assert_eq!(percentile(&v, 0.0), Some(1.0));
        assert_eq!(percentile(&[7.0], 99.0), Some(7.0));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn latency_table_shows_median_of_runs() {
        let runs = vec![
            run(Policy::Eager, 0, &[10.0, 20.0, 30.0], &[5.0, 5.0, 6.0]),
            run(Policy::Eager, 1, &[12.0, 22.0, 32.0], &[5.0, 5.0, 7.0]),
            run(Policy::Eager, 2, &[14.0, 24.0, 34.0], &[5.0, 5.0, 8.0]),
            run(
                Policy::Batched,
                0,
                &[10.0, 20.0, 30.0],
                &[205.0, 210.0, 220.0],
            ),
        ];
        let spec = LatencySpec {
            samples: 3,
            warmup: 0,
            interval: Duration::from_millis(1),
            wait: Wait::Poll,
            frame_len: 64,
        };
        let t = latency_table(&runs, &[Policy::Eager, Policy::Batched], &spec);
        assert!(t.contains("22.0 [20.0-24.0]"), "{t}");
        assert!(t.contains("210.0 [210.0-210.0]"), "{t}");
        assert_eq!(latency_tsv(&runs, &spec).lines().count(), 5);
        assert_eq!(frames_tsv(&runs).lines().count(), 13);
    }
}
