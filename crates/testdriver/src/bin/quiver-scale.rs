//! quiver-scale: what N connected VNICs cost one quiverd, and whether they slow the
//! traffic of two of them (issue 4, "Scale").
//!
//! It writes a quiverd configuration with N VNICs (vm0 … vm{N-1}) in a private temp
//! directory, starts quiverd (the release build next to this binary by default), and
//! plays every VM with a testdriver front-end from this one process (one thread; an
//! idle guest costs a memfd, a socket and four eventfds here, no thread). From
//! /proc/PID/{status,stat,fd,task} of quiverd it reports:
//!
//! - RSS (VmRSS, RssAnon, RssShmem), threads and fds with no front-end, with vm0 and
//!   vm1, with all N connected (→ cost per idle connected VNIC), and after the others
//!   disconnected again (→ what a connection leaves behind); open fds by kind;
//! - quiverd's CPU over `--idle-secs` with no front-end, and with all N connected and
//!   idle (per thread group);
//! - the VM↔VM rate vm0 → vm1 (64 B frames in windows of `--window`: send the window,
//!   receive all of it, repeat for `--rate-secs`), and quiverd's CPU per delivered
//!   frame, alternately with only vm0 and vm1 connected and with the N-2 others
//!   connected and idle, `--runs` times each (after a 1 s warm-up).
//!
//! Then it prints a table and exits (quiverd is stopped, the directory removed).
//!
//! ```text
//! cargo build --release -p quiver-quiverd -p quiver-testdriver
//! target/release/quiver-scale                 # N = 256
//! target/release/quiver-scale --vnics 2       # the baseline
//! target/release/quiver-scale --help
//! ```
//!
//! The rate is what one testdriver thread can push and pull through quiverd (the
//! driver copies every frame through a Vec), so it is a comparison between the two
//! phases on the same machine, not quiverd's maximum: that is benches/' job.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use clap::Parser;
use quiver_testdriver::{DriverConfig, DriverError, Guest};

/// Measures quiverd with N connected VNICs: RSS per VNIC, threads, idle CPU, and the
/// vm0 → vm1 frame rate with and without N-2 idle others.
#[derive(Parser, Debug)]
#[command(name = "quiver-scale", about, long_about)]
struct Args {
    /// VNICs in the configuration, each with a connected front-end (2..=4096).
    #[arg(short = 'n', long, default_value_t = 256)]
    vnics: u32,
    /// Seconds of each vm0 → vm1 rate measurement.
    #[arg(long, default_value_t = 5.0)]
    rate_secs: f64,
    /// Rate measurements per phase, alternating 2 / N connected (after a 1 s warm-up);
    /// min, median and max shown.
    #[arg(long, default_value_t = 3)]
    runs: u32,
    /// Seconds over which quiverd's idle CPU is measured (with no front-end, and with
    /// all N connected).
    #[arg(long, default_value_t = 10.0)]
    idle_secs: f64,
    /// Ethernet frame length of the rate measurement (60..=1514).
    #[arg(long, default_value_t = 64)]
    frame_len: usize,
    /// Frames sent before the receiver drains them (1..=queue size / 2).
    #[arg(long, default_value_t = 128)]
    window: u32,
    /// Virtqueue size of every VNIC and front-end (power of two, 64..=4096).
    #[arg(long, default_value_t = 256)]
    queue_size: u16,
    /// Guest memory of each idle front-end, MiB (vm0 and vm1 get 16).
    #[arg(long, default_value_t = 4)]
    idle_mem_mib: usize,
    /// Run quiverd without --stats-file (it rewrites the whole file every second).
    #[arg(long)]
    no_stats_file: bool,
    /// The quiverd binary (default: `quiverd` next to this binary, else
    /// target/release/quiverd).
    #[arg(long, value_name = "PATH")]
    quiverd: Option<PathBuf>,
}

/// The validated run.
#[derive(Debug)]
struct Config {
    vnics: u32,
    rate: Duration,
    runs: u32,
    idle: Duration,
    frame_len: usize,
    window: u32,
    queue_size: u16,
    idle_mem: usize,
    stats_file: bool,
    quiverd: PathBuf,
}

impl TryFrom<Args> for Config {
    type Error = anyhow::Error;

    fn try_from(a: Args) -> Result<Config> {
        ensure!(
            (2..=4096).contains(&a.vnics),
            "--vnics {}: want 2..=4096",
            a.vnics
        );
        let secs = |name: &str, v: f64| -> Result<Duration> {
            ensure!(
                v.is_finite() && v > 0.0 && v <= 3600.0,
                "--{name} {v}: want 0 < s <= 3600"
            );
            Ok(Duration::from_secs_f64(v))
        };
        ensure!((1..=20).contains(&a.runs), "--runs {}: want 1..=20", a.runs);
        ensure!(
            (60..=1514).contains(&a.frame_len),
            "--frame-len {}: want 60..=1514",
            a.frame_len
        );
        ensure!(
            a.queue_size.is_power_of_two() && (64..=4096).contains(&a.queue_size),
            "--queue-size {}: want a power of two in 64..=4096",
            a.queue_size
        );
        ensure!(
            a.window >= 1 && a.window <= u32::from(a.queue_size / 2),
            "--window {}: want 1..={}",
            a.window,
            a.queue_size / 2
        );
        ensure!(
            (1..=1024).contains(&a.idle_mem_mib),
            "--idle-mem-mib {}: want 1..=1024",
            a.idle_mem_mib
        );
        let quiverd = match a.quiverd {
            Some(p) => p,
            None => default_quiverd(),
        };
        ensure!(
            quiverd.is_file(),
            "quiverd binary {} not found (build it with `cargo build --release -p quiver-quiverd`, or pass --quiverd)",
            quiverd.display()
        );
        Ok(Config {
            vnics: a.vnics,
            rate: secs("rate-secs", a.rate_secs)?,
            runs: a.runs,
            idle: secs("idle-secs", a.idle_secs)?,
            frame_len: a.frame_len,
            window: a.window,
            queue_size: a.queue_size,
            idle_mem: a.idle_mem_mib << 20,
            stats_file: !a.no_stats_file,
            quiverd,
        })
    }
}

fn default_quiverd() -> PathBuf {
    let beside = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("quiverd")));
    match beside {
        Some(p) if p.is_file() => p,
        _ => PathBuf::from("target/release/quiverd"),
    }
}

fn main() -> ExitCode {
    let config = match Config::try_from(Args::parse()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("quiver-scale: {e:#}");
            return ExitCode::from(2);
        }
    };
    match run(&config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("quiver-scale: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// VNIC i's MAC: 52:54:00:00:hi:lo of i+1 (never all-zero).
fn mac(i: u32) -> [u8; 6] {
    let [_, a, b, c] = (i + 1).to_be_bytes();
    [0x52, 0x54, 0, a, b, c]
}

fn mac_str(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn quiverd_config(dir: &Path, n: u32, queue_size: u16) -> String {
    let mut s = String::new();
    for i in 0..n {
        let _ = write!(
            s,
            "[[vnic]]\nname = \"vm{i}\"\nsocket = \"{}\"\nmac = \"{}\"\nqueue_pairs = 1\nqueue_size = {queue_size}\n\n",
            dir.join(format!("vm{i}.sock")).display(),
            mac_str(mac(i)),
        );
    }
    s
}

/// A private directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Result<TempDir> {
        let p = std::env::temp_dir().join(format!("quiver-scale-{}", std::process::id()));
        std::fs::create_dir_all(&p).with_context(|| format!("creating {}", p.display()))?;
        Ok(TempDir(p))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The quiverd under test; SIGTERM (then SIGKILL) on drop.
struct Daemon {
    child: Child,
    pid: u32,
    log: PathBuf,
}

impl Daemon {
    fn start(
        bin: &Path,
        dir: &Path,
        config: &str,
        sockets: u32,
        stats_file: bool,
    ) -> Result<Daemon> {
        let cfg = dir.join("quiverd.toml");
        std::fs::write(&cfg, config).with_context(|| format!("writing {}", cfg.display()))?;
        let log = dir.join("quiverd.log");
        let stats = dir.join("stats.json");
        let out =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone().context("duplicating the log fd")?;
        let mut cmd = Command::new(bin);
        cmd.arg("--config").arg(&cfg);
        if stats_file {
            cmd.arg("--stats-file").arg(&stats);
        }
        let child = cmd
            .arg("--log-level")
            .arg("warn")
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let pid = child.id();
        let mut d = Daemon { child, pid, log };
        let deadline = Instant::now() + Duration::from_secs(60);
        // The stats file is first written once quiverd is fully up.
        let all_bound = || {
            (!stats_file || stats.exists())
                && (0..sockets).all(|i| dir.join(format!("vm{i}.sock")).exists())
        };
        while !all_bound() {
            if let Some(status) = d.child.try_wait().context("waiting for quiverd")? {
                bail!("quiverd exited with {status}:\n{}", d.log_tail(20));
            }
            if Instant::now() > deadline {
                bail!(
                    "quiverd did not bind its {sockets} sockets in 60 s:\n{}",
                    d.log_tail(20)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(d)
    }

    fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Lines of the log at WARN or ERROR.
    fn log_problems(&self) -> (usize, String) {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let bad: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("WARN") || l.contains("ERROR"))
            .collect();
        let first = bad.first().copied().unwrap_or("").to_string();
        (bad.len(), first)
    }

    fn alive(&mut self) -> Result<()> {
        if let Some(status) = self.child.try_wait().context("waiting for quiverd")? {
            bail!("quiverd exited with {status}:\n{}", self.log_tail(20));
        }
        Ok(())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Ok(pid) = libc::pid_t::try_from(self.pid) {
            // SAFETY: kill(2) on the pid of a child this process started and has not
            // reaped (so the pid cannot have been reused); no memory is passed.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// quiverd's memory, threads and fds at one moment.
#[derive(Clone, Copy, Debug, Default)]
struct Snapshot {
    rss_kib: u64,
    anon_kib: u64,
    shmem_kib: u64,
    threads: u64,
    fds: u64,
}

fn snapshot(pid: u32) -> Result<Snapshot> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let field = |name: &str| -> Result<u64> {
        let line = text
            .lines()
            .find(|l| l.starts_with(name))
            .with_context(|| format!("{path} has no {name}"))?;
        let value = line[name.len()..]
            .split_whitespace()
            .next()
            .with_context(|| format!("{path}: empty {name}"))?;
        value
            .parse()
            .with_context(|| format!("{path}: {name} {value:?} is not a number"))
    };
    let fd_dir = format!("/proc/{pid}/fd");
    let fds = std::fs::read_dir(&fd_dir)
        .with_context(|| format!("listing {fd_dir}"))?
        .count() as u64;
    Ok(Snapshot {
        rss_kib: field("VmRSS:")?,
        anon_kib: field("RssAnon:")?,
        shmem_kib: field("RssShmem:")?,
        threads: field("Threads:")?,
        fds,
    })
}

/// utime + stime from a /proc/…/stat file, in clock ticks.
fn cpu_ticks(path: &str) -> Result<u64> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?;
    // proc(5): fields after the parenthesised comm, which may itself contain spaces;
    // field 3 (state) is index 0 here, utime (14) index 11, stime (15) index 12.
    let rest = text
        .rsplit_once(')')
        .map(|(_, r)| r)
        .with_context(|| format!("{path}: no comm"))?;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let num = |i: usize| -> Result<u64> {
        f.get(i)
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("{path}: field {} is not a number", i + 3))
    };
    Ok(num(11)? + num(12)?)
}

/// quiverd's threads grouped by name with the VNIC number cut off ("vnic-vm12" →
/// "vnic-vm*"): group → (threads, utime + stime ticks).
fn thread_groups(pid: u32) -> Result<BTreeMap<String, (u64, u64)>> {
    let dir = format!("/proc/{pid}/task");
    let mut groups = BTreeMap::new();
    for entry in std::fs::read_dir(&dir).with_context(|| format!("listing {dir}"))? {
        let Ok(entry) = entry else { continue };
        // A thread may exit between the listing and the reads: skip it.
        let Ok(comm) = std::fs::read_to_string(entry.path().join("comm")) else {
            continue;
        };
        let stat = entry.path().join("stat");
        let Ok(ticks) = cpu_ticks(&stat.to_string_lossy()) else {
            continue;
        };
        let comm = comm.trim();
        let stem = comm.trim_end_matches(|c: char| c.is_ascii_digit());
        let name = if stem.len() < comm.len() {
            format!("{stem}*")
        } else {
            comm.to_string()
        };
        let g = groups.entry(name).or_insert((0, 0));
        g.0 += 1;
        g.1 += ticks;
    }
    Ok(groups)
}

/// quiverd's open fds by kind ("socket", "anon_inode:[eventfd]", "/memfd:…", …).
fn fd_kinds(pid: u32) -> Result<BTreeMap<String, u64>> {
    let dir = format!("/proc/{pid}/fd");
    let mut kinds = BTreeMap::new();
    for entry in std::fs::read_dir(&dir).with_context(|| format!("listing {dir}"))? {
        let Ok(entry) = entry else { continue };
        let Ok(target) = std::fs::read_link(entry.path()) else {
            continue;
        };
        let t = target.to_string_lossy();
        // "socket:[1234]" → "socket"; "anon_inode:[eventfd]" stays;
        // "/memfd:quiver-guest (deleted)" → "/memfd:quiver-guest".
        let kind = match t.split_once(":[") {
            Some((k, inode)) if inode.starts_with(|c: char| c.is_ascii_digit()) => k.to_string(),
            _ => t.trim_end_matches(" (deleted)").to_string(),
        };
        *kinds.entry(kind).or_insert(0) += 1;
    }
    Ok(kinds)
}

fn fmt_kinds(k: &BTreeMap<String, u64>) -> String {
    k.iter()
        .map(|(kind, n)| format!("{kind} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn clock_ticks_per_sec() -> f64 {
    // SAFETY: sysconf only reads a constant of the running system; no memory is passed.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as f64
    } else {
        100.0
    }
}

/// quiverd's CPU seconds while `f` runs, and the wall-clock seconds.
fn cpu_during<T>(pid: u32, f: impl FnOnce() -> Result<T>) -> Result<(T, f64, f64)> {
    let stat = format!("/proc/{pid}/stat");
    let t0 = cpu_ticks(&stat)?;
    let start = Instant::now();
    let out = f()?;
    let wall = start.elapsed().as_secs_f64();
    let t1 = cpu_ticks(&stat)?;
    let cpu = (t1.saturating_sub(t0)) as f64 / clock_ticks_per_sec();
    Ok((out, cpu, wall))
}

fn connect(dir: &Path, i: u32, mem_size: usize, queue_size: u16) -> Result<Guest> {
    let cfg = DriverConfig {
        mac: mac(i),
        queue_size,
        mem_size,
        ..DriverConfig::default()
    };
    let sock = dir.join(format!("vm{i}.sock"));
    Guest::connect(&sock, cfg, Duration::from_secs(10))
        .with_context(|| format!("connecting a front-end to vm{i} ({})", sock.display()))
}

/// Result of one rate run.
#[derive(Clone, Copy, Debug, Default)]
struct Rate {
    frames: u64,
    lost: u64,
    secs: f64,
}

impl Rate {
    fn kpps(&self) -> f64 {
        self.frames as f64 / self.secs / 1e3
    }
}

/// vm0 → vm1 for `dur`: send a window, receive all of it, repeat.
fn rate(a: &mut Guest, b: &mut Guest, cfg: &Config, dur: Duration) -> Result<Rate> {
    let mut frame = vec![0u8; cfg.frame_len];
    frame[..6].copy_from_slice(&mac(1));
    frame[6..12].copy_from_slice(&mac(0));
    // IEEE 802 local experimental EtherType.
    frame[12..14].copy_from_slice(&[0x88, 0xb5]);
    let lost_wait = Duration::from_millis(200);
    let (mut sent, mut received, mut lost) = (0u64, 0u64, 0u64);
    let start = Instant::now();
    while start.elapsed() < dur {
        let mut n = 0;
        while n < cfg.window {
            match a.send(0, &frame) {
                Ok(()) => n += 1,
                // Chains still in flight: receive what is there first.
                Err(DriverError::RingFull { .. } | DriverError::ArenaFull { .. }) if n > 0 => break,
                Err(DriverError::RingFull { .. } | DriverError::ArenaFull { .. }) => {
                    ensure!(
                        start.elapsed() < dur + Duration::from_secs(5),
                        "vm0's TX ring stays full: quiverd does not complete its chains"
                    );
                    a.reclaim_tx(0);
                    std::thread::yield_now();
                }
                Err(e) => return Err(e).context("vm0 send"),
            }
        }
        sent += u64::from(n);
        while received + lost < sent {
            match b.recv(0, lost_wait).context("vm1 receive")? {
                Some(_) => received += 1,
                // Not delivered (dropped by quiverd): count it and go on.
                None => lost = sent - received,
            }
        }
    }
    Ok(Rate {
        frames: received,
        lost,
        secs: start.elapsed().as_secs_f64(),
    })
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// One rate run and what quiverd spent on it.
#[derive(Clone, Copy, Debug)]
struct Run {
    rate: Rate,
    cpu_secs: f64,
    /// This process (the front-ends' driver thread).
    driver_secs: f64,
}

impl Run {
    fn cpu_pct(&self) -> f64 {
        self.cpu_secs / self.rate.secs * 100.0
    }

    /// quiverd CPU time per delivered frame (tick-granular: 1/CLK_TCK per run).
    fn cpu_ns_per_frame(&self) -> f64 {
        if self.rate.frames == 0 {
            return f64::NAN;
        }
        self.cpu_secs / self.rate.frames as f64 * 1e9
    }
}

fn measure(d: &mut Daemon, g0: &mut Guest, g1: &mut Guest, cfg: &Config) -> Result<Run> {
    let me = std::process::id();
    let ((rate, cpu_secs, _), driver_secs, _) =
        cpu_during(me, || cpu_during(d.pid, || rate(g0, g1, cfg, cfg.rate)))?;
    d.alive()?;
    Ok(Run {
        rate,
        cpu_secs,
        driver_secs,
    })
}

/// Front-ends for vm2 … vm{N-1}; the time it took.
fn connect_idle(dir: &Path, cfg: &Config) -> Result<(Vec<Guest>, f64)> {
    let t = Instant::now();
    let mut idle = Vec::with_capacity(cfg.vnics as usize);
    for i in 2..cfg.vnics {
        idle.push(connect(dir, i, cfg.idle_mem, cfg.queue_size)?);
    }
    Ok((idle, t.elapsed().as_secs_f64()))
}

/// (min, median, max) of `v`.
fn spread(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    let (Some(&lo), Some(&hi)) = (v.first(), v.last()) else {
        return (f64::NAN, f64::NAN, f64::NAN);
    };
    let mid = v.len() / 2;
    let med = if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    };
    (lo, med, hi)
}

fn run(cfg: &Config) -> Result<()> {
    let dir = TempDir::new()?;
    let n = cfg.vnics;
    eprintln!(
        "quiver-scale: {} with {n} VNICs in {}",
        cfg.quiverd.display(),
        dir.0.display()
    );
    let mut d = Daemon::start(
        &cfg.quiverd,
        &dir.0,
        &quiverd_config(&dir.0, n, cfg.queue_size),
        n,
        cfg.stats_file,
    )?;
    // Let start-up settle (first stats write, thread creation).
    std::thread::sleep(Duration::from_millis(500));
    let s0 = snapshot(d.pid)?;
    eprintln!(
        "quiver-scale: idle CPU, no front-end, over {:.0} s ...",
        cfg.idle.as_secs_f64()
    );
    let ((), cpu0, wall0) = cpu_during(d.pid, || {
        std::thread::sleep(cfg.idle);
        Ok(())
    })?;

    let mut g0 = connect(&dir.0, 0, 16 << 20, cfg.queue_size)?;
    let mut g1 = connect(&dir.0, 1, 16 << 20, cfg.queue_size)?;
    std::thread::sleep(Duration::from_millis(200));
    let s2 = snapshot(d.pid)?;
    rate(&mut g0, &mut g1, cfg, Duration::from_secs(1))?;
    // Alternate 2 / N connected so that drift on the machine hits both alike.
    let (mut runs2, mut runs_n) = (Vec::new(), Vec::new());
    let mut first = None;
    let mut fds_n = BTreeMap::new();
    let mut fds_2 = BTreeMap::new();
    for r in 1..=cfg.runs {
        eprintln!("quiver-scale: run {r}: vm0 → vm1 with 2 connected ...");
        runs2.push(measure(&mut d, &mut g0, &mut g1, cfg)?);
        let s2b = snapshot(d.pid)?;
        if first.is_none() {
            fds_2 = fd_kinds(d.pid)?;
        }
        eprintln!(
            "quiver-scale: run {r}: connecting {} more front-ends ...",
            n - 2
        );
        let (idle, connect_secs) = connect_idle(&dir.0, cfg)?;
        std::thread::sleep(Duration::from_millis(500));
        d.alive()?;
        if first.is_none() {
            let sn = snapshot(d.pid)?;
            fds_n = fd_kinds(d.pid)?;
            eprintln!(
                "quiver-scale: idle CPU over {:.0} s ...",
                cfg.idle.as_secs_f64()
            );
            let before = thread_groups(d.pid)?;
            let ((), idle_cpu, idle_wall) = cpu_during(d.pid, || {
                std::thread::sleep(cfg.idle);
                Ok(())
            })?;
            let after = thread_groups(d.pid)?;
            first = Some((s2b, sn, connect_secs, idle_cpu, idle_wall, before, after));
        }
        eprintln!("quiver-scale: run {r}: vm0 → vm1 with {n} connected ...");
        runs_n.push(measure(&mut d, &mut g0, &mut g1, cfg)?);
        drop(idle);
        // Let quiverd tear the connections down.
        std::thread::sleep(Duration::from_millis(500));
    }
    let s_end = snapshot(d.pid)?;
    let fds_end = fd_kinds(d.pid)?;
    let Some((s2b, sn, connect_secs, idle_cpu, idle_wall, before, after)) = first else {
        bail!("no run was made");
    };
    let (problems, first_problem) = d.log_problems();

    println!();
    println!(
        "quiverd with {n} VNICs (queue size {}, 1 queue pair each), testdriver front-ends, {}",
        cfg.queue_size,
        if cfg.stats_file {
            "--stats-file (rewritten every second)"
        } else {
            "no stats file"
        }
    );
    println!(
        "{:<40} {:>10} {:>10} {:>10} {:>8} {:>7}",
        "state", "VmRSS", "RssAnon", "RssShmem", "threads", "fds"
    );
    let mut states = vec![
        ("no front-end connected".to_string(), s0),
        ("vm0, vm1 connected".to_string(), s2),
        ("vm0, vm1 after traffic".to_string(), s2b),
    ];
    if n > 2 {
        states.push((format!("all {n} connected"), sn));
        states.push((format!("vm2..vm{} disconnected again", n - 1), s_end));
    }
    for (label, s) in states {
        println!(
            "{label:<40} {:>6.1} MiB {:>6.1} MiB {:>6.1} MiB {:>8} {:>7}",
            mib(s.rss_kib),
            mib(s.anon_kib),
            mib(s.shmem_kib),
            s.threads,
            s.fds
        );
    }
    // Idle front-ends only: what one more connected, idle VNIC costs.
    let idle_n = f64::from(n - 2);
    let per = |a: u64, b: u64| (a as f64 - b as f64) / idle_n;
    if n > 2 {
        println!(
            "{:<40} {:>6.1} KiB {:>6.1} KiB {:>6.1} KiB {:>8.2} {:>7.2}",
            "per idle VNIC connected (all - after)/(N-2)",
            per(sn.rss_kib, s2b.rss_kib),
            per(sn.anon_kib, s2b.anon_kib),
            per(sn.shmem_kib, s2b.shmem_kib),
            per(sn.threads, s2b.threads),
            per(sn.fds, s2b.fds)
        );
        println!("fds, vm0 and vm1 connected: {}", fmt_kinds(&fds_2));
        println!("fds, all {n} connected: {}", fmt_kinds(&fds_n));
        println!(
            "fds after {} connect/disconnect cycles of vm2..vm{}: {}",
            cfg.runs,
            n - 1,
            fmt_kinds(&fds_end)
        );
        println!("connecting {} front-ends took {connect_secs:.2} s", n - 2);
    }
    println!(
        "quiverd CPU, no front-end connected, over {wall0:.1} s: {:.2} % of one core ({cpu0:.2} s)",
        cpu0 / wall0 * 100.0
    );
    println!(
        "quiverd CPU, all {n} connected and idle, over {idle_wall:.1} s: {:.2} % of one core ({idle_cpu:.2} s)",
        idle_cpu / idle_wall * 100.0
    );
    println!(
        "  {:<20} {:>8} {:>12}",
        "thread group", "threads", "idle CPU %"
    );
    for (name, &(count, ticks)) in &after {
        let t0 = before.get(name).map_or(0, |g| g.1);
        let pct = ticks.saturating_sub(t0) as f64 / clock_ticks_per_sec() / idle_wall * 100.0;
        println!("  {name:<20} {count:>8} {pct:>12.2}");
    }
    println!();
    println!(
        "vm0 → vm1, {} B frames, windows of {}, {} runs of {:.0} s each way, alternating (after a 1 s warm-up):",
        cfg.frame_len,
        cfg.window,
        cfg.runs,
        cfg.rate.as_secs_f64()
    );
    println!(
        "{:<22} {:>4} {:>12} {:>10} {:>6} {:>12} {:>16} {:>11}",
        "connected",
        "run",
        "frames",
        "kpps",
        "lost",
        "quiverd CPU",
        "quiverd ns/frame",
        "driver CPU"
    );
    for (label, runs) in [
        ("2".to_string(), &runs2),
        (format!("{n} ({} idle)", n - 2), &runs_n),
    ] {
        for (k, r) in runs.iter().enumerate() {
            println!(
                "{label:<22} {:>4} {:>12} {:>10.1} {:>6} {:>10.1} % {:>16.0} {:>9.1} %",
                k + 1,
                r.rate.frames,
                r.rate.kpps(),
                r.rate.lost,
                r.cpu_pct(),
                r.cpu_ns_per_frame(),
                r.driver_secs / r.rate.secs * 100.0
            );
        }
    }
    let kpps = |runs: &[Run]| spread(runs.iter().map(|r| r.rate.kpps()).collect());
    let ns = |runs: &[Run]| spread(runs.iter().map(|r| r.cpu_ns_per_frame()).collect());
    let (k2, kn) = (kpps(&runs2), kpps(&runs_n));
    let (c2, cn) = (ns(&runs2), ns(&runs_n));
    println!(
        "kpps min/median/max: with 2 {:.1}/{:.1}/{:.1}, with {n} {:.1}/{:.1}/{:.1}; median ratio {n}/2 = {:.3}",
        k2.0, k2.1, k2.2, kn.0, kn.1, kn.2, kn.1 / k2.1
    );
    println!(
        "quiverd ns/frame median: with 2 {:.0}, with {n} {:.0}; ratio {:.3}",
        c2.1,
        cn.1,
        cn.1 / c2.1
    );
    println!("quiverd log: {problems} WARN/ERROR lines {first_problem}");
    drop(g0);
    drop(g1);
    drop(d);
    Ok(())
}
