//! uplink-bench: namespace → uplink → VNIC (and back) packet rate of quiverd's `tap`,
//! `af_packet` and `af_xdp` uplinks, in one run, alternating kinds (tap, af_packet,
//! af_xdp, tap, ...), with where each run's time went. See benches/README.md, "Uplink
//! kinds".

#[path = "../../paths.rs"]
mod paths;
#[allow(dead_code)]
#[path = "../../proc.rs"]
mod proc;
#[allow(dead_code)]
#[path = "../../quiverd.rs"]
mod quiverd;
mod topo;
mod traffic;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use serde_json::Value;

use crate::topo::{DevCounters, Kind, QuiverdSpec, Topo};
use crate::traffic::{SendCounters, Worker};

/// Which way the frames go.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
enum Dir {
    /// Namespace → uplink → VNIC: a raw socket in the namespace sends, a guest drains.
    Rx,
    /// VNIC → uplink → namespace: the guest sends, the namespace's interface counts.
    Tx,
}

impl Dir {
    fn name(self) -> &'static str {
        match self {
            Dir::Rx => "rx",
            Dir::Tx => "tx",
        }
    }

    fn title(self) -> &'static str {
        match self {
            Dir::Rx => "namespace -> uplink -> VNIC",
            Dir::Tx => "VNIC -> uplink -> namespace",
        }
    }
}

/// Namespace → uplink → VNIC packet rate of the tap, af_packet and af_xdp uplinks.
///
/// For each run, direction and kind (tap, af_packet, af_xdp, tap, ...): namespaces and
/// the uplink's interface are made, quiverd starts pinned to --quiverd-cpu with one VNIC
/// on the uplink. rx: a testdriver guest drains the VNIC, a raw AF_PACKET socket pinned
/// to --sender-cpu sends 64-byte frames to the VNIC's MAC; tx: the guest, pinned to
/// --sender-cpu, sends to the namespace. After --warmup the frames that arrived in
/// --window are counted. Needs root and two CPUs.
#[derive(Parser, Debug)]
#[command(name = "uplink-bench", version, about, long_about)]
struct Args {
    /// Measured runs per kind.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Seconds of traffic before the window opens.
    #[arg(long, default_value_t = 2.0)]
    warmup: f64,
    /// Seconds the measurement window lasts.
    #[arg(long, default_value_t = 5.0)]
    window: f64,
    /// Directions: rx = namespace → uplink → VNIC, tx = VNIC → uplink → namespace (the
    /// guest sends, from --sender-cpu).
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Dir::Rx, Dir::Tx])]
    directions: Vec<Dir>,
    /// Uplink kinds, measured in this order within each run.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Kind::Tap, Kind::AfPacket, Kind::AfXdp])]
    kinds: Vec<Kind>,
    /// Frame length in bytes, without FCS.
    #[arg(long, default_value_t = 64)]
    frame_len: usize,
    /// Uplink queues (TAP queues, veth queues each way; one quiverd poller each).
    #[arg(long, default_value_t = 4)]
    queues: usize,
    /// Dedicated uplink rings the VNIC asks for (`rings = K`; 0 = the shared group).
    #[arg(long, default_value_t = 0)]
    rings: u16,
    /// The VNIC's `busy_poll_us`: how long its workers keep polling an emptied TX ring
    /// or dedicated receive path before sleeping (0 = off).
    #[arg(long, default_value_t = 0)]
    busy_poll_us: u32,
    /// CPU of quiverd (all its threads, `taskset`).
    #[arg(long, default_value_t = 0)]
    quiverd_cpu: usize,
    /// CPU of the sending thread (and so of the kernel's transmit path it runs).
    #[arg(long, default_value_t = 1)]
    sender_cpu: usize,
    /// CPU of the receiving guest's thread, or `any` to leave it to the scheduler.
    /// Default: quiverd's CPU (both ends of the virtio ring on one CPU; the sender's
    /// CPU also runs the kernel's receive work of the veth kinds).
    #[arg(long, default_value = "0")]
    guest_cpu: String,
    /// Nice value of quiverd's threads, the sender and the guest during a run (the
    /// machine is shared: other processes get the leftovers); 0 leaves them alone.
    #[arg(long, default_value_t = -10, allow_hyphen_values = true)]
    nice: i32,
    /// Where results go (default target/bench-results/<UTC timestamp>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// quiverd binary (default: the one next to this program).
    #[arg(long)]
    quiverd: Option<PathBuf>,
}

/// A directory removed on drop (the socket).
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct Env {
    quiverd: PathBuf,
    quiverd_cpu: usize,
    sender_cpu: usize,
    guest_cpu: Option<usize>,
    queues: usize,
    rings: u16,
    busy_poll_us: u32,
    frame_len: usize,
    nice: i32,
    warmup: Duration,
    window: Duration,
    log_dir: PathBuf,
    sock_dir: PathBuf,
    stop: Arc<AtomicBool>,
}

/// Counters at one end of the window.
struct Snapshot {
    at: Instant,
    sent: u64,
    sender_busy: u64,
    guest_got: u64,
    vnic_rx: u64,
    vnic_tx: u64,
    vnic_drops: u64,
    uplink_rx: u64,
    uplink_tx: u64,
    /// rx_packets of the namespace's interface (the TAP, the far veth end).
    far_rx: u64,
    uplink_drops: u64,
    /// The uplink's kernel-side counters as quiverd reports them (af_packet ring
    /// drops, af_xdp XDP verdicts).
    kernel: Vec<(String, u64)>,
    dev: Vec<DevCounters>,
    softnet_dropped: u64,
    /// quiverd's threads: (id, name, CPU seconds, run-queue wait seconds).
    threads: Vec<(i32, String, f64, f64)>,
    sender_cpu: f64,
    guest_cpu: f64,
    sender_wait: f64,
    guest_wait: f64,
    /// Busy and softirq seconds of every CPU.
    cpus: Vec<(f64, f64)>,
}

/// One measured window.
#[derive(Clone, Debug)]
struct Sample {
    kind: Kind,
    run: usize,
    secs: f64,
    dir: Dir,
    /// Rates (frames/s) along the path. rx: sent by the sender, read by quiverd from
    /// the uplink (`q_in`), written into the VNIC's RX ring (`delivered`), taken by the
    /// guest (`tail`). tx: sent by the guest, taken by quiverd from the VNIC's TX ring
    /// (`q_in`), written to the uplink by quiverd (`tail`), received by the namespace's
    /// interface (`delivered`).
    sent: f64,
    q_in: f64,
    delivered: f64,
    tail: f64,
    /// Frames the kernel lost: rx between the sender and quiverd (sent - uplink rx),
    /// tx between quiverd and the namespace (uplink tx - interface rx); and the
    /// kernel drop counters that saw some of them (interfaces + softnet backlog).
    lost_kernel: u64,
    kernel_drops: u64,
    /// quiverd's own drop counters (uplink and VNIC; no_rx_buffers = guest slow).
    quiverd_drops: u64,
    sender_busy: u64,
    /// CPU % (of one CPU) in the window.
    pollers_cpu: f64,
    poller_max_cpu: f64,
    vnic_worker_cpu: f64,
    quiverd_cpu: f64,
    sender_cpu: f64,
    guest_cpu: f64,
    /// Time (% of the window) quiverd's threads (summed), the sender and the guest
    /// were runnable but waited for their CPU: > 10 means CPU contention held them back.
    quiverd_wait: f64,
    sender_wait: f64,
    guest_wait: f64,
    /// Busy and softirq % of the quiverd CPU and the sender CPU.
    qcpu_busy: f64,
    qcpu_softirq: f64,
    scpu_busy: f64,
    scpu_softirq: f64,
    /// What else (other processes: the machine is shared) kept quiverd's CPU and the
    /// sender's CPU busy: busy - softirq - the bench's own threads there, %.
    qcpu_others: f64,
    scpu_others: f64,
    /// The uplink's kernel-side counters in the window: "name count, ...".
    kernel_detail: String,
    /// quiverd's threads that used ≥ 1 % of a CPU: "name pct, ...".
    thread_detail: String,
    bottleneck: String,
}

impl Sample {
    fn mpps(&self) -> f64 {
        self.delivered / 1e6
    }

    /// quiverd's CPU time per frame delivered, ns: what the uplink kind costs quiverd,
    /// whoever limited the rate.
    fn quiverd_ns_per_frame(&self) -> f64 {
        if self.delivered > 0.0 {
            self.quiverd_cpu / 100.0 * 1e9 / self.delivered
        } else {
            f64::NAN
        }
    }
}

/// Busy and softirq seconds of `cpu` since boot (/proc/stat).
fn cpu_times(cpu: usize) -> (f64, f64) {
    let busy = proc::cpu_busy_seconds(cpu).unwrap_or(0.0);
    let softirq = std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|t| {
            let name = format!("cpu{cpu}");
            t.lines()
                .find(|l| l.split_whitespace().next() == Some(name.as_str()))
                .and_then(|l| l.split_whitespace().nth(7))
                .and_then(|v| v.parse::<u64>().ok())
        })
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = if hz > 0 { hz as f64 } else { 100.0 };
    (busy, softirq as f64 / hz)
}

/// User + system CPU seconds of thread `tid` of process `pid`. (/proc/<tid>/stat
/// would be the whole process's.)
fn thread_cpu_seconds(pid: i32, tid: i32) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")).ok()?;
    stat_cpu_seconds(&text)
}

/// utime + stime (fields 14 and 15) of a /proc stat line, in seconds.
fn stat_cpu_seconds(stat: &str) -> Option<f64> {
    // Fields after the command name, which is in parentheses and may hold spaces.
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state).
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
    let ticks = field(14)? + field(15)?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = if hz > 0 { hz as f64 } else { 100.0 };
    Some(ticks as f64 / hz)
}

/// Sets the nice value of thread `tid`.
fn renice(tid: i32, nice: i32) -> Result<()> {
    let who = libc::id_t::try_from(tid).context("thread id")?;
    // SAFETY: setpriority(2) takes no pointers; on Linux PRIO_PROCESS with a thread id
    // changes that thread only.
    let r = unsafe { libc::setpriority(libc::PRIO_PROCESS, who, nice) };
    if r != 0 {
        bail!(
            "setpriority({tid}, {nice}): {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

/// Seconds thread `tid` of `pid` was runnable but waited for a CPU
/// (/proc/PID/task/TID/schedstat, second field, ns).
fn thread_wait_seconds(pid: i32, tid: i32) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/schedstat")).ok()?;
    let ns: u64 = text.split_whitespace().nth(1)?.parse().ok()?;
    Some(ns as f64 / 1e9)
}

/// quiverd's threads with their names and CPU seconds.
fn threads_of(pid: i32) -> Vec<(i32, String, f64, f64)> {
    let dir = format!("/proc/{pid}/task");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()))
        .filter_map(|tid| {
            let comm = std::fs::read_to_string(format!("{dir}/{tid}/comm")).ok()?;
            let secs = thread_cpu_seconds(pid, tid)?;
            let wait = thread_wait_seconds(pid, tid).unwrap_or(0.0);
            Some((tid, comm.trim().to_owned(), secs, wait))
        })
        .collect()
}

fn sum_drops(total: &Value) -> u64 {
    total["drops"]
        .as_object()
        .map_or(0, |m| m.values().filter_map(Value::as_u64).sum())
}

fn snapshot(
    env: &Env,
    topo: &mut Topo,
    send: &SendCounters,
    got: &AtomicU64,
    sender: &Worker,
    guest: Option<&Worker>,
) -> Result<Snapshot> {
    let stats = topo.quiverd.stats()?;
    let dev = topo
        .devs
        .iter()
        .map(|(ns, d)| topo::dev_counters(ns, d))
        .collect::<Result<Vec<_>>>()?;
    let vnic = &stats["vnics"]["vm1"]["total"];
    let up = &stats["uplinks"]["up0"]["total"];
    let get = |v: &Value, f: &str| v[f].as_u64().unwrap_or(0);
    let ncpu = env.quiverd_cpu.max(env.sender_cpu) + 1;
    let own = i32::try_from(std::process::id()).unwrap_or(0);
    Ok(Snapshot {
        at: Instant::now(),
        sent: send.sent.load(Ordering::Relaxed),
        sender_busy: send.busy.load(Ordering::Relaxed),
        guest_got: got.load(Ordering::Relaxed),
        vnic_rx: get(vnic, "rx_packets"),
        vnic_tx: get(vnic, "tx_packets"),
        vnic_drops: sum_drops(vnic),
        uplink_rx: get(up, "rx_packets"),
        uplink_tx: get(up, "tx_packets"),
        far_rx: dev.get(topo.far).map_or(0, |c| c.rx_packets),
        uplink_drops: sum_drops(up),
        kernel: stats["uplinks"]["up0"]["kernel"]
            .as_object()
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_u64()?)))
                    .collect()
            })
            .unwrap_or_default(),
        dev,
        softnet_dropped: topo::softnet_dropped(),
        threads: threads_of(topo.quiverd.proc.pid()),
        sender_cpu: thread_cpu_seconds(own, sender.tid).unwrap_or(0.0),
        guest_cpu: guest
            .and_then(|g| thread_cpu_seconds(own, g.tid))
            .unwrap_or(0.0),
        sender_wait: thread_wait_seconds(own, sender.tid).unwrap_or(0.0),
        guest_wait: guest
            .and_then(|g| thread_wait_seconds(own, g.tid))
            .unwrap_or(0.0),
        cpus: (0..ncpu).map(cpu_times).collect(),
    })
}

/// Sleeps `d` unless a stop is asked for, or a worker ended; Err then.
fn wait(env: &Env, d: Duration, workers: &[&Worker]) -> Result<()> {
    let end = Instant::now() + d;
    while Instant::now() < end {
        if env.stop.load(Ordering::Relaxed) {
            bail!("interrupted");
        }
        if workers.iter().any(|w| w.ended()) {
            bail!("a traffic thread stopped early");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// Where the run's limit was: which CPU saturated (≥ 90 % busy) and where frames
/// were lost along the path (`sent` → `q_in` → ... → `delivered`, in frames).
fn bottleneck(s: &Sample, sent: u64, q_in: u64, q_out: u64, delivered: u64) -> String {
    let (src, dst) = match s.dir {
        Dir::Rx => ("sender", "guest"),
        Dir::Tx => ("guest", "namespace"),
    };
    let side = match (s.qcpu_busy >= 90.0, s.scpu_busy >= 90.0) {
        (true, true) => "both CPUs saturated".to_owned(),
        (true, false) => "quiverd CPU saturated".to_owned(),
        (false, true) => format!("{src} CPU saturated"),
        (false, false) => "no CPU saturated".to_owned(),
    };
    let pct = |a: u64, b: u64| {
        if b == 0 {
            0.0
        } else {
            a as f64 * 100.0 / b as f64
        }
    };
    let lost_before = pct(sent.saturating_sub(q_in), sent);
    let lost_in = pct(q_in.saturating_sub(q_out), q_in);
    let lost_after = pct(q_out.saturating_sub(delivered), q_out);
    let limit = match s.dir {
        Dir::Rx if lost_before >= 1.0 => format!(
            "quiverd's uplink read is the limit: {lost_before:.0}% of the sent frames lost before quiverd"
        ),
        Dir::Rx if lost_in >= 1.0 => {
            format!("the guest is the limit: {lost_in:.0}% lost at the VNIC (RX ring full)")
        }
        Dir::Tx if lost_in >= 1.0 => {
            format!("quiverd dropped {lost_in:.0}% on the way to the uplink")
        }
        Dir::Tx if lost_after >= 1.0 => format!(
            "the kernel is the limit: {lost_after:.0}% of what quiverd wrote to the uplink never reached the {dst}"
        ),
        Dir::Rx => "the sender is the limit: nothing lost".to_owned(),
        Dir::Tx if s.sender_busy > 0 => format!(
            "quiverd is the limit: nothing lost, the guest found its TX ring full {} times",
            s.sender_busy
        ),
        Dir::Tx => "the guest is the limit: nothing lost, its TX ring never filled".to_owned(),
    };
    let waited = s.quiverd_wait.max(s.sender_wait).max(s.guest_wait);
    let held: Vec<String> = [
        ("quiverd", s.quiverd_wait),
        (src, s.sender_wait),
        ("guest", s.guest_wait),
    ]
    .iter()
    .filter(|(_, w)| *w > 10.0)
    .map(|(n, w)| format!("{n} {w:.0}%"))
    .collect();
    let held = if held.is_empty() {
        "no thread waited for its CPU".to_owned()
    } else {
        format!("waited for a CPU: {}", held.join(", "))
    };
    let noisy = if (s.qcpu_others > 10.0 || s.scpu_others > 10.0) && waited > 10.0 {
        " [noisy: other processes on the CPUs and the bench's threads waited for them]"
    } else {
        ""
    };
    format!("{side} ({held}); {limit}{noisy}")
}

fn measure(env: &Env, kind: Kind, dir: Dir, run: usize) -> Result<Sample> {
    let tag = format!("{}-{}-{run}", dir.name(), kind.name());
    let run_dir = env.log_dir.join(&tag);
    std::fs::create_dir_all(&run_dir).with_context(|| format!("creating {}", run_dir.display()))?;
    let sock_dir = env.sock_dir.join(&tag);
    std::fs::create_dir_all(&sock_dir)
        .with_context(|| format!("creating {}", sock_dir.display()))?;
    let _sock_dir = TempDir(sock_dir.clone());
    let spec = QuiverdSpec {
        program: &env.quiverd,
        cpu: env.quiverd_cpu,
        dir: &run_dir,
        sock_dir: &sock_dir,
        queues: env.queues,
        rings: env.rings,
        busy_poll_us: env.busy_poll_us,
    };
    let mut topo = topo::build(kind, &spec)?;
    let got = Arc::new(AtomicU64::new(0));
    let send = Arc::new(SendCounters::default());
    // rx: the guest drains, the raw socket sends. tx: the guest sends (the source, on
    // the sender's CPU); the namespace's interface counts what arrives.
    let (guest, sender) = match dir {
        Dir::Rx => {
            let guest = traffic::start_guest(topo.socket.clone(), env.guest_cpu, got.clone())?;
            let sender = traffic::start_sender(
                &topo.send_ns,
                &topo.send_dev,
                env.sender_cpu,
                env.frame_len,
                send.clone(),
            )?;
            (Some(guest), sender)
        }
        Dir::Tx => {
            let sender = traffic::start_guest_sender(
                topo.socket.clone(),
                env.sender_cpu,
                env.frame_len,
                send.clone(),
            )?;
            (None, sender)
        }
    };
    let workers: Vec<&Worker> = std::iter::once(&sender).chain(guest.as_ref()).collect();
    let result = (|| -> Result<(Snapshot, Snapshot)> {
        if env.nice != 0 {
            // quiverd's threads all exist now (the VNIC's worker came with the guest).
            let mut tids: Vec<i32> = threads_of(topo.quiverd.proc.pid())
                .iter()
                .map(|t| t.0)
                .collect();
            tids.extend(workers.iter().map(|w| w.tid));
            for tid in tids {
                renice(tid, env.nice)?;
            }
        }
        wait(env, env.warmup, &workers)?;
        let a = snapshot(env, &mut topo, &send, &got, &sender, guest.as_ref())?;
        wait(env, env.window, &workers)?;
        let b = snapshot(env, &mut topo, &send, &got, &sender, guest.as_ref())?;
        Ok((a, b))
    })();
    // Stop the sender before the guest, so the guest does not leave frames behind
    // that count as drops; then quiverd and the namespaces (Topo's drop).
    drop(workers);
    let sender_end = sender.finish();
    let guest_end = guest.map_or(Ok(()), Worker::finish);
    let (a, b) = match result {
        Ok(v) => v,
        Err(e) => {
            // A thread that stopped early says why.
            let mut e = e.context(format!("quiverd log {}", topo.quiverd.log().display()));
            for (who, end) in [("sender", &sender_end), ("guest", &guest_end)] {
                if let Err(x) = end {
                    e = e.context(format!("{who}: {x:#}"));
                }
            }
            return Err(e);
        }
    };
    sender_end.context("sender")?;
    guest_end.context("guest")?;
    drop(topo);
    let secs = b.at.duration_since(a.at).as_secs_f64().max(1e-9);
    let d = |x: u64, y: u64| y.saturating_sub(x);
    let rate = |x: u64, y: u64| d(x, y) as f64 / secs;
    let pct = |x: f64, y: f64| (y - x) * 100.0 / secs;
    // The path's counters: source, quiverd in, quiverd out, delivered.
    let path = |s: &Snapshot| match dir {
        Dir::Rx => (s.sent, s.uplink_rx, s.vnic_rx, s.vnic_rx),
        Dir::Tx => (s.sent, s.vnic_tx, s.uplink_tx, s.far_rx),
    };
    let (pa, pb) = (path(&a), path(&b));
    let sent_frames = d(pa.0, pb.0);
    let in_frames = d(pa.1, pb.1);
    let out_frames = d(pa.2, pb.2);
    let delivered_frames = d(pa.3, pb.3);
    // The last column: rx the guest's count, tx quiverd's uplink tx.
    let (tail_a, tail_b) = match dir {
        Dir::Rx => (a.guest_got, b.guest_got),
        Dir::Tx => (pa.2, pb.2),
    };
    let kernel = |s: &Snapshot, name: &str| {
        s.kernel
            .iter()
            .find(|(k, _)| k == name)
            .map_or(0, |(_, v)| *v)
    };
    let dev_drops = |s: &Snapshot| -> u64 {
        s.dev
            .iter()
            .map(|c| c.rx_dropped + c.tx_dropped)
            .sum::<u64>()
            + s.softnet_dropped
            + kernel(s, "ring_full")
    };
    let kernel_detail = b
        .kernel
        .iter()
        .map(|(k, v)| format!("{k} {}", d(kernel(&a, k), *v)))
        .collect::<Vec<_>>()
        .join(", ");
    let thread_sum = |pred: &dyn Fn(&str) -> bool, wait: bool| -> (f64, f64) {
        let mut sum = 0.0f64;
        let mut max = 0.0f64;
        let pick = |t: &(i32, String, f64, f64)| if wait { t.3 } else { t.2 };
        for t in &b.threads {
            if !pred(&t.1) {
                continue;
            }
            let before = a.threads.iter().find(|x| x.0 == t.0).map_or(0.0, pick);
            let p = (pick(t) - before) * 100.0 / secs;
            sum += p;
            max = max.max(p);
        }
        (sum, max)
    };
    let thread_pct = |pred: &dyn Fn(&str) -> bool| thread_sum(pred, false);
    let mut detail: Vec<(String, f64)> = Vec::new();
    for (_, name, _, _) in &b.threads {
        let (p, _) = thread_pct(&|n| n == name);
        if p >= 1.0 && !detail.iter().any(|(n, _)| n == name) {
            detail.push((name.clone(), p));
        }
    }
    detail.sort_by(|x, y| x.0.cmp(&y.0));
    let thread_detail = detail
        .iter()
        .map(|(n, p)| format!("{n} {p:.0}"))
        .collect::<Vec<_>>()
        .join(", ");
    let (pollers_cpu, poller_max_cpu) = thread_pct(&|n| n.starts_with("up-"));
    let (vnic_worker_cpu, _) = thread_pct(&|n| n.starts_with("vnic-"));
    let (quiverd_cpu, _) = thread_pct(&|_| true);
    let (quiverd_wait, _) = thread_sum(&|_| true, true);
    let cpu = |i: usize| {
        let (x, y) = (
            a.cpus.get(i).copied().unwrap_or_default(),
            b.cpus.get(i).copied().unwrap_or_default(),
        );
        (pct(x.0, y.0), pct(x.1, y.1))
    };
    let (qcpu_busy, qcpu_softirq) = cpu(env.quiverd_cpu);
    let (scpu_busy, scpu_softirq) = cpu(env.sender_cpu);
    let mut s = Sample {
        kind,
        run,
        secs,
        dir,
        sent: rate(pa.0, pb.0),
        q_in: rate(pa.1, pb.1),
        delivered: rate(pa.3, pb.3),
        tail: rate(tail_a, tail_b),
        lost_kernel: match dir {
            Dir::Rx => sent_frames.saturating_sub(in_frames),
            Dir::Tx => out_frames.saturating_sub(delivered_frames),
        },
        kernel_drops: d(dev_drops(&a), dev_drops(&b)),
        quiverd_drops: d(a.uplink_drops + a.vnic_drops, b.uplink_drops + b.vnic_drops),
        sender_busy: d(a.sender_busy, b.sender_busy),
        pollers_cpu,
        poller_max_cpu,
        vnic_worker_cpu,
        quiverd_cpu,
        sender_cpu: pct(a.sender_cpu, b.sender_cpu),
        guest_cpu: pct(a.guest_cpu, b.guest_cpu),
        quiverd_wait,
        sender_wait: pct(a.sender_wait, b.sender_wait),
        guest_wait: pct(a.guest_wait, b.guest_wait),
        qcpu_busy,
        qcpu_softirq,
        scpu_busy,
        scpu_softirq,
        qcpu_others: 0.0,
        scpu_others: 0.0,
        kernel_detail,
        thread_detail,
        bottleneck: String::new(),
    };
    let guest_on = |cpu: usize| {
        if env.guest_cpu == Some(cpu) {
            s.guest_cpu
        } else {
            0.0
        }
    };
    s.qcpu_others =
        (s.qcpu_busy - s.qcpu_softirq - s.quiverd_cpu - guest_on(env.quiverd_cpu)).max(0.0);
    s.scpu_others =
        (s.scpu_busy - s.scpu_softirq - s.sender_cpu - guest_on(env.sender_cpu)).max(0.0);
    s.bottleneck = bottleneck(&s, sent_frames, in_frames, out_frames, delivered_frames);
    Ok(s)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Median quiverd ns per frame of `kind` (samples of one direction).
fn median_ns(samples: &[Sample], kind: Kind) -> f64 {
    let mut v: Vec<f64> = samples
        .iter()
        .filter(|s| s.kind == kind)
        .map(Sample::quiverd_ns_per_frame)
        .collect();
    median(&mut v)
}

/// Per kind: (kind, runs, min, median, max) Mpps.
fn summary(samples: &[Sample], kinds: &[Kind]) -> Vec<(Kind, usize, f64, f64, f64)> {
    kinds
        .iter()
        .filter_map(|&k| {
            let mut v: Vec<f64> = samples
                .iter()
                .filter(|s| s.kind == k)
                .map(Sample::mpps)
                .collect();
            if v.is_empty() {
                return None;
            }
            let m = median(&mut v);
            Some((k, v.len(), v[0], m, v[v.len() - 1]))
        })
        .collect()
}

/// The tables of every direction measured.
fn table(samples: &[Sample], kinds: &[Kind], env: &Env) -> String {
    let mut dirs: Vec<Dir> = samples.iter().map(|s| s.dir).collect();
    dirs.sort();
    dirs.dedup();
    dirs.iter()
        .map(|&d| {
            let of: Vec<Sample> = samples.iter().filter(|s| s.dir == d).cloned().collect();
            dir_table(&of, kinds, env, d)
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn dir_table(samples: &[Sample], kinds: &[Kind], env: &Env, dir: Dir) -> String {
    let mut t = String::new();
    let ends = match dir {
        Dir::Rx => format!(
            "sender on CPU {}, receiving guest on {}",
            env.sender_cpu,
            env.guest_cpu
                .map_or("any CPU".to_owned(), |c| format!("CPU {c}"))
        ),
        Dir::Tx => format!("sending guest on CPU {}", env.sender_cpu),
    };
    let _ = writeln!(
        t,
        "{}, {} B frames, {} uplink queues, quiverd on CPU {}, {ends}, nice {}, {:.0} s windows",
        dir.title(),
        env.frame_len,
        env.queues,
        env.quiverd_cpu,
        env.nice,
        env.window.as_secs_f64()
    );
    let _ = writeln!(t);
    let _ = writeln!(
        t,
        "{:<10} {:>4} {:>9} {:>9} {:>9} {:>16}",
        "kind", "runs", "min Mpps", "median", "max", "quiverd ns/frame"
    );
    let sum = summary(samples, kinds);
    for (k, n, lo, med, hi) in &sum {
        let _ = writeln!(
            t,
            "{:<10} {n:>4} {lo:>9.3} {med:>9.3} {hi:>9.3} {:>16.0}",
            k.name(),
            median_ns(samples, *k)
        );
    }
    let find = |k: Kind| sum.iter().find(|s| s.0 == k);
    if let (Some(x), Some(tp)) = (find(Kind::AfXdp), find(Kind::Tap)) {
        let _ = writeln!(
            t,
            "\naf_xdp / tap (median): {:.2}x (range {:.2}x..{:.2}x; goal >= 3x: {})",
            x.3 / tp.3,
            x.2 / tp.4,
            x.4 / tp.2,
            if x.3 / tp.3 >= 3.0 { "met" } else { "NOT met" }
        );
        let _ = writeln!(
            t,
            "quiverd CPU per frame, tap / af_xdp (median): {:.2}x",
            median_ns(samples, Kind::Tap) / median_ns(samples, Kind::AfXdp)
        );
    }
    if let (Some(x), Some(p)) = (find(Kind::AfPacket), find(Kind::Tap)) {
        let _ = writeln!(t, "af_packet / tap (median): {:.2}x", x.3 / p.3);
    }
    let _ = writeln!(
        t,
        "\nper run (CPU %: of one CPU, in the window; qCPU = quiverd's CPU, sCPU = the source's):"
    );
    let cols = match dir {
        Dir::Rx => ["upl rx", "VNIC rx", "guest"],
        Dir::Tx => ["VNIC tx", "upl tx", "ns rx"],
    };
    let _ = writeln!(
        t,
        "{:<10} {:>3} {:>7} {:>7} {:>7} {:>7} {:>6} {:>8} {:>8} {:>8} {:>7} {:>6} {:>6} {:>6} {:>5} {:>5} {:>5} {:>5} {:>5} {:>5} {:>5} {:>5} {:>5}  bottleneck",
        "kind", "run", "sent", cols[0], cols[1], cols[2], "ns/fr", "lost k", "k drops", "q drops", "pollers", "qd all", "src", "guest", "qwait", "swait", "gwait", "qCPU", "qsirq", "qoth", "sCPU", "ssirq", "soth"
    );
    for s in samples {
        let _ = writeln!(
            t,
            "{:<10} {:>3} {:>7.3} {:>7.3} {:>7.3} {:>7.3} {:>6.0} {:>8} {:>8} {:>8} {:>7.0} {:>6.0} {:>6.0} {:>6.0} {:>5.0} {:>5.0} {:>5.0} {:>5.0} {:>5.0} {:>5.0} {:>5.0} {:>5.0} {:>5.0}  {}",
            s.kind.name(),
            s.run,
            s.sent / 1e6,
            s.q_in / 1e6,
            if dir == Dir::Rx { s.delivered } else { s.tail } / 1e6,
            if dir == Dir::Rx { s.tail } else { s.delivered } / 1e6,
            s.quiverd_ns_per_frame(),
            s.lost_kernel,
            s.kernel_drops,
            s.quiverd_drops,
            s.pollers_cpu,
            s.quiverd_cpu,
            s.sender_cpu,
            s.guest_cpu,
            s.quiverd_wait,
            s.sender_wait,
            s.guest_wait,
            s.qcpu_busy,
            s.qcpu_softirq,
            s.qcpu_others,
            s.scpu_busy,
            s.scpu_softirq,
            s.scpu_others,
            s.bottleneck
        );
    }
    let _ = writeln!(
        t,
        "\n{}",
        match dir {
            Dir::Rx => "rates in Mpps: sent (sendmmsg accepted), upl rx (quiverd read from the uplink), VNIC rx (written into the guest's RX ring: the result), guest (taken by the guest); lost k = frames sent but never read by quiverd",
            Dir::Tx => "rates in Mpps: sent (the guest queued), VNIC tx (quiverd took from the guest's TX ring), upl tx (quiverd wrote to the uplink), ns rx (the namespace's interface received: the result); lost k = frames quiverd wrote that never reached the namespace's interface",
        }
    );
    let _ = writeln!(
        t,
        "ns/fr = quiverd's CPU time per frame delivered; k drops = interface + softnet drop counters + af_packet ring drops, q drops = quiverd's drop counters (uplink + VNIC); CPU %: pollers = quiverd's uplink poller threads (up-*), qd all = all of quiverd, src / guest = the bench's source (rx: raw-socket sender, tx: the guest) and receiving guest (rx only); qwait / swait / gwait = time quiverd's threads (summed) / the source / the guest were runnable but waited for a CPU; qCPU / sCPU = busy % of quiverd's / the source's CPU, sirq = its softirq part, oth = other processes there (noisy when > 10 and the bench's threads waited > 10)"
    );
    t
}

/// Columns of runs.tsv. quiverd_in: rx uplink rx, tx VNIC tx; delivered: rx VNIC rx,
/// tx the namespace interface's rx; tail: rx what the guest took, tx uplink tx.
const TSV_HEADER: &str = "direction\tkind\trun\tsecs\tsent_pps\tquiverd_in_pps\tdelivered_pps\ttail_pps\tquiverd_ns_per_frame\tlost_before_quiverd\tkernel_drops\tquiverd_drops\tsender_busy_calls\tpollers_cpu_pct\tpoller_max_cpu_pct\tvnic_worker_cpu_pct\tquiverd_cpu_pct\tsender_cpu_pct\tguest_cpu_pct\tquiverd_wait_pct\tsender_wait_pct\tguest_wait_pct\tquiverd_cpu_busy_pct\tquiverd_cpu_softirq_pct\tsender_cpu_busy_pct\tsender_cpu_softirq_pct\tquiverd_cpu_others_pct\tsender_cpu_others_pct\tuplink_kernel_counters\tquiverd_threads_cpu_pct\tbottleneck\n";

fn runs_tsv(samples: &[Sample]) -> String {
    let mut t = TSV_HEADER.to_owned();
    for s in samples {
        let _ = writeln!(
            t,
            "{}\t{}\t{}\t{:.3}\t{:.0}\t{:.0}\t{:.0}\t{:.0}\t{:.0}\t{}\t{}\t{}\t{}\t{:.1}\t{:.1}\t{:.1}\t{:.1}\t{:.1}\t{:.1}\t{:.1}\t{:.1}\t{:.1}\t{:.1}\t{:.1}\t{:.1}\t{:.1}\t{:.1}\t{:.1}\t{}\t{}\t{}",
            s.dir.name(),
            s.kind.name(),
            s.run,
            s.secs,
            s.sent,
            s.q_in,
            s.delivered,
            s.tail,
            s.quiverd_ns_per_frame(),
            s.lost_kernel,
            s.kernel_drops,
            s.quiverd_drops,
            s.sender_busy,
            s.pollers_cpu,
            s.poller_max_cpu,
            s.vnic_worker_cpu,
            s.quiverd_cpu,
            s.sender_cpu,
            s.guest_cpu,
            s.quiverd_wait,
            s.sender_wait,
            s.guest_wait,
            s.qcpu_busy,
            s.qcpu_softirq,
            s.scpu_busy,
            s.scpu_softirq,
            s.qcpu_others,
            s.scpu_others,
            s.kernel_detail,
            s.thread_detail,
            s.bottleneck
        );
    }
    t
}

fn summary_tsv(samples: &[Sample], kinds: &[Kind]) -> String {
    let mut t = "direction\tkind\truns\tmin_mpps\tmedian_mpps\tmax_mpps\tratio_to_tap_median\tquiverd_ns_per_frame_median\n"
        .to_owned();
    for dir in [Dir::Rx, Dir::Tx] {
        let of: Vec<Sample> = samples.iter().filter(|s| s.dir == dir).cloned().collect();
        let sum = summary(&of, kinds);
        let tap = sum.iter().find(|s| s.0 == Kind::Tap).map(|s| s.3);
        for (k, n, lo, med, hi) in &sum {
            let ratio = tap.map_or(String::new(), |t| format!("{:.3}", med / t));
            let _ = writeln!(
                t,
                "{}\t{}\t{n}\t{lo:.4}\t{med:.4}\t{hi:.4}\t{ratio}\t{:.0}",
                dir.name(),
                k.name(),
                median_ns(&of, *k)
            );
        }
    }
    t
}

fn run(args: Args) -> Result<()> {
    if args.runs == 0 || args.window <= 0.0 || args.warmup < 0.0 || args.queues == 0 {
        bail!(
            "--runs and --queues must be at least 1, --window positive and --warmup not negative"
        );
    }
    if args.kinds.is_empty() || args.directions.is_empty() {
        bail!("--kinds and --directions must not be empty");
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("needs root (network namespaces, veth pairs, TAP, XDP)");
    }
    let guest_cpu = match args.guest_cpu.as_str() {
        "any" => None,
        c => Some(
            c.parse::<usize>()
                .with_context(|| format!("--guest-cpu {c:?}: a CPU number or `any`"))?,
        ),
    };
    if args.quiverd_cpu == args.sender_cpu {
        bail!("--quiverd-cpu and --sender-cpu must differ");
    }
    let quiverd = args.quiverd.clone().unwrap_or_else(paths::default_quiverd);
    if !quiverd.exists() {
        bail!(
            "{} not found (`cargo build --release -p quiver-quiverd`, or --quiverd)",
            quiverd.display()
        );
    }
    let out = args.out.clone().unwrap_or_else(paths::new_results_dir);
    let log_dir = out.join("logs");
    std::fs::create_dir_all(&log_dir).with_context(|| format!("creating {}", log_dir.display()))?;
    let sock_dir = TempDir(std::env::temp_dir().join(format!("qubench-{}", std::process::id())));
    std::fs::create_dir_all(&sock_dir.0)?;
    // Ctrl-C ends the measurement in progress; what was measured is written and the
    // namespaces are deleted.
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone()).context("installing signal handlers")?;
    }
    let env = Env {
        quiverd,
        quiverd_cpu: args.quiverd_cpu,
        sender_cpu: args.sender_cpu,
        guest_cpu,
        queues: args.queues,
        rings: args.rings,
        busy_poll_us: args.busy_poll_us,
        frame_len: args.frame_len,
        nice: args.nice,
        warmup: Duration::from_secs_f64(args.warmup),
        window: Duration::from_secs_f64(args.window),
        log_dir,
        sock_dir: sock_dir.0.clone(),
        stop: stop.clone(),
    };
    let mut samples = Vec::new();
    let mut failures = Vec::new();
    'runs: for run in 0..args.runs {
        for (&dir, &kind) in args
            .directions
            .iter()
            .flat_map(|d| args.kinds.iter().map(move |k| (d, k)))
        {
            if stop.load(Ordering::Relaxed) {
                break 'runs;
            }
            let what = format!("{} {} run {run}", dir.name(), kind.name());
            match measure(&env, kind, dir, run) {
                Ok(s) => {
                    eprintln!(
                        "{what}: {:.3} Mpps delivered (sent {:.3}, quiverd took {:.3}); CPU % pollers {:.0}, quiverd {:.0}, source {:.0}, guest {:.0}; run-queue wait % quiverd {:.0}, source {:.0}, guest {:.0}; quiverd CPU busy {:.0}, source CPU busy {:.0} (softirq {:.0}); others {:.0} / {:.0}; quiverd threads: {}; {}",
                        s.mpps(),
                        s.sent / 1e6,
                        s.q_in / 1e6,
                        s.pollers_cpu,
                        s.quiverd_cpu,
                        s.sender_cpu,
                        s.guest_cpu,
                        s.quiverd_wait,
                        s.sender_wait,
                        s.guest_wait,
                        s.qcpu_busy,
                        s.scpu_busy,
                        s.scpu_softirq,
                        s.qcpu_others,
                        s.scpu_others,
                        s.thread_detail,
                        s.bottleneck
                    );
                    samples.push(s);
                }
                Err(e) => {
                    eprintln!("{what}: FAILED: {e:#}");
                    failures.push(format!("{what}: {e:#}"));
                }
            }
        }
    }
    let text = table(&samples, &args.kinds, &env);
    println!("{text}");
    write(&out.join("table.txt"), &text)?;
    write(&out.join("runs.tsv"), &runs_tsv(&samples))?;
    write(
        &out.join("summary.tsv"),
        &summary_tsv(&samples, &args.kinds),
    )?;
    println!(
        "results: {} (table.txt, runs.tsv, summary.tsv, logs/)",
        out.display()
    );
    if !failures.is_empty() {
        write(&out.join("failures.txt"), &(failures.join("\n") + "\n"))?;
        bail!(
            "{} of the measurements failed (failures.txt)",
            failures.len()
        );
    }
    Ok(())
}

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("uplink-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(kind: Kind, run: usize, mpps: f64) -> Sample {
        Sample {
            kind,
            run,
            secs: 1.0,
            dir: Dir::Rx,
            sent: mpps * 1e6,
            q_in: mpps * 1e6,
            delivered: mpps * 1e6,
            tail: mpps * 1e6,
            lost_kernel: 0,
            kernel_drops: 0,
            quiverd_drops: 0,
            sender_busy: 0,
            pollers_cpu: 0.0,
            poller_max_cpu: 0.0,
            vnic_worker_cpu: 0.0,
            quiverd_cpu: 0.0,
            sender_cpu: 0.0,
            guest_cpu: 0.0,
            quiverd_wait: 0.0,
            sender_wait: 0.0,
            guest_wait: 0.0,
            qcpu_busy: 95.0,
            qcpu_softirq: 0.0,
            scpu_busy: 50.0,
            scpu_softirq: 0.0,
            qcpu_others: 0.0,
            scpu_others: 0.0,
            kernel_detail: String::new(),
            thread_detail: String::new(),
            bottleneck: String::new(),
        }
    }

    #[test]
    fn summary_is_min_median_max_per_kind_in_order() {
        let s = vec![
            sample(Kind::Tap, 0, 0.3),
            sample(Kind::AfXdp, 0, 2.0),
            sample(Kind::Tap, 1, 0.1),
            sample(Kind::AfXdp, 1, 1.0),
            sample(Kind::Tap, 2, 0.2),
        ];
        let sum = summary(&s, &[Kind::Tap, Kind::AfPacket, Kind::AfXdp]);
        assert_eq!(sum.len(), 2);
        assert_eq!(sum[0].0, Kind::Tap);
        assert_eq!(sum[0].1, 3);
        assert!((sum[0].2 - 0.1).abs() < 1e-9 && (sum[0].3 - 0.2).abs() < 1e-9);
        assert!((sum[1].3 - 1.5).abs() < 1e-9 && (sum[1].4 - 2.0).abs() < 1e-9);
        let tsv = summary_tsv(&s, &[Kind::Tap, Kind::AfXdp]);
        assert!(tsv.contains("rx\taf_xdp\t2\t1.0000\t1.5000\t2.0000\t7.500\t"));
    }

    #[test]
    fn bottleneck_names_the_saturated_side_and_the_loss() {
        let mut s = sample(Kind::Tap, 0, 1.0);
        assert_eq!(
            bottleneck(&s, 1_500_000, 1_000_000, 1_000_000, 1_000_000),
            "quiverd CPU saturated (no thread waited for its CPU); quiverd's uplink read is the limit: 33% of the sent frames lost before quiverd"
        );
        s.qcpu_busy = 10.0;
        s.scpu_busy = 99.0;
        s.sender_wait = 30.0;
        let m = 1_000_000;
        assert!(bottleneck(&s, m, m, m, m)
            .starts_with("sender CPU saturated (waited for a CPU: sender 30%); the sender"));
        assert!(bottleneck(&s, 2 * m, 2 * m, m, m).contains("guest is the limit: 50%"));
        s.dir = Dir::Tx;
        let b = bottleneck(&s, m, m, m, m * 9 / 10);
        assert!(
            b.starts_with("guest CPU saturated (waited for a CPU: guest 30%)")
                && b.contains("the kernel is the limit: 10%"),
            "{b}"
        );
    }

    #[test]
    fn stat_line_cpu_time_is_utime_plus_stime() {
        let line = "42 (up-up0 (1)) S 1 42 42 0 -1 4194560 0 0 0 0 250 50 0 0 20 0 1 0";
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        assert_eq!(stat_cpu_seconds(line), Some(300.0 / hz));
        assert_eq!(stat_cpu_seconds("garbage"), None);
    }

    #[test]
    fn runs_tsv_has_one_line_per_run_and_matching_columns() {
        let t = runs_tsv(&[sample(Kind::AfPacket, 0, 1.0)]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].split('\t').count(), lines[1].split('\t').count());
    }
}
