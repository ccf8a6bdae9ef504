//! quiver-bench: quiverd against DPDK's vhost PMD (the anchor), same machine, same run,
//! same generator (`dpdk-testpmd` with `net_virtio_user` ports), alternating A B A B.
//! See benches/README.md.

mod paths;
mod proc;
mod quiverd;
mod reclaim;
mod report;
mod scenario;
mod testpmd;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Parser;

use crate::reclaim::{LatencyRun, LatencySpec, Part, Policy, Wait};
use crate::scenario::{Backend, Env, Sample, Test};

/// Packet rate of quiverd against DPDK's vhost PMD, measured side by side.
///
/// Each test and frame size runs --runs times; each run measures quiverd, then the
/// anchor (A B A B ...), each pinned to --backend-cpu with the generator on
/// --generator-cpu. Needs root (hugepages) and dpdk-testpmd.
///
/// With --reclaim, compares quiverd's transmit-descriptor reclaim policies instead
/// (no anchor): throughput windows and a low-rate latency test per policy, see
/// benches/README.md.
#[derive(Parser, Debug)]
#[command(name = "quiver-bench", version, about, long_about)]
struct Args {
    /// Measured runs per backend, test and size.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Seconds of traffic before the window opens.
    #[arg(long, default_value_t = 3.0)]
    warmup: f64,
    /// Seconds the measurement window lasts.
    #[arg(long, default_value_t = 5.0)]
    window: f64,
    /// Tests to run [default: vm2vm,guest-tx,guest-rx; with --reclaim: vm2vm,guest-tx].
    #[arg(long, value_enum, value_delimiter = ',')]
    tests: Option<Vec<Test>>,
    /// Frame sizes (bytes, testpmd --txpkts) [default: 64,1500; with --reclaim: 64].
    #[arg(long, value_delimiter = ',')]
    sizes: Option<Vec<usize>>,
    /// Backends to run (both, for ratios).
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Backend::Quiverd, Backend::Anchor])]
    backends: Vec<Backend>,
    /// Where results go (default target/bench-results/<UTC timestamp>).
    #[arg(long)]
    out: Option<PathBuf>,
    /// quiverd binary (default: the one next to this program).
    #[arg(long)]
    quiverd: Option<PathBuf>,
    #[arg(long, default_value = "dpdk-testpmd")]
    testpmd: PathBuf,
    #[arg(long, default_value_t = 0)]
    backend_cpu: usize,
    #[arg(long, default_value_t = 1)]
    generator_cpu: usize,
    /// vm.nr_hugepages is raised to at least this for the run, then restored.
    #[arg(long, default_value_t = 1024)]
    hugepages: u64,
    /// quiverd's adaptive busy poll on every VNIC, in microseconds (`busy_poll_us`;
    /// 0 = off, quiverd's default). Run once with and once without to compare.
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=1000))]
    busy_poll_us: u32,
    /// Bursts of 32 frames per port that seed the vm2vm loops (`start tx_first N`).
    #[arg(long, default_value_t = 64)]
    tx_first: u32,
    /// Compare these `tx_reclaim` policies of quiverd (each run tries each in turn)
    /// instead of quiverd against the anchor.
    #[arg(long, value_enum, value_delimiter = ',')]
    reclaim: Vec<Policy>,
    /// With --reclaim: which halves run (throughput windows need dpdk-testpmd and
    /// hugepages; latency only quiverd).
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Part::Throughput, Part::Latency])]
    reclaim_parts: Vec<Part>,
    /// With --reclaim: timed samples per quantity, policy and run.
    #[arg(long, default_value_t = 2000)]
    latency_samples: usize,
    /// With --reclaim: untimed frames sent first in each latency run.
    #[arg(long, default_value_t = 200)]
    latency_warmup: usize,
    /// With --reclaim: microseconds between the latency test's frames.
    #[arg(long, default_value_t = 1000)]
    latency_interval_us: u64,
    /// With --reclaim: how the latency driver waits for the rings: sleeping on the call
    /// eventfds (block) or spinning (poll).
    #[arg(long, value_enum, default_value_t = Wait::Block)]
    latency_wait: Wait,
    /// With --reclaim: frame length of the latency test (bytes).
    #[arg(long, default_value_t = 64)]
    latency_frame: usize,
}

fn check_program(p: &Path) -> Result<()> {
    let ok = std::process::Command::new("sh")
        .arg("-c")
        .arg("command -v \"$0\" >/dev/null 2>&1")
        .arg(p)
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        bail!("{} not found (dpdk-testpmd comes with Debian's dpdk-dev; quiverd with `cargo build --release`)", p.display());
    }
    Ok(())
}

/// A directory removed on drop (the sockets).
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn run(args: Args) -> Result<()> {
    if args.runs == 0 || args.window <= 0.0 || args.warmup < 0.0 {
        bail!("--runs must be at least 1, --window positive and --warmup not negative");
    }
    if args.backend_cpu == args.generator_cpu {
        bail!("--backend-cpu and --generator-cpu must differ");
    }
    let reclaiming = !args.reclaim.is_empty();
    if reclaiming && (args.latency_samples == 0 || args.latency_interval_us == 0) {
        bail!("--latency-samples and --latency-interval-us must be at least 1");
    }
    let throughput = !reclaiming || args.reclaim_parts.contains(&Part::Throughput);
    let quiverd = args.quiverd.clone().unwrap_or_else(paths::default_quiverd);
    check_program(&quiverd)?;
    check_program(Path::new("taskset"))?;
    if throughput {
        check_program(&args.testpmd)?;
        check_program(Path::new("stdbuf"))?;
    }
    let out = args.out.clone().unwrap_or_else(paths::new_results_dir);
    let log_dir = out.join("logs");
    std::fs::create_dir_all(&log_dir).with_context(|| format!("creating {}", log_dir.display()))?;
    let sock_dir = TempDir(std::env::temp_dir().join(format!("qbench-{}", std::process::id())));
    std::fs::create_dir_all(&sock_dir.0)?;
    // Ctrl-C ends the measurement in progress; the results so far are written and the
    // hugepages restored (the children get the terminal's SIGINT themselves).
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(sig, stop.clone()).context("installing signal handlers")?;
    }
    let _hugepages = if throughput {
        let h = proc::Hugepages::ensure(args.hugepages)?;
        if let Some(free) = proc::free_hugepages() {
            // Two testpmd processes with 32768 mbufs each need a few hundred MiB.
            if free < 256 {
                eprintln!("warning: only {free} free hugepages; testpmd may fail to start");
            }
        }
        Some(h)
    } else {
        None
    };
    let env = Env {
        quiverd,
        testpmd: args.testpmd.clone(),
        backend_cpu: args.backend_cpu,
        generator_cpu: args.generator_cpu,
        warmup: Duration::from_secs_f64(args.warmup),
        window: Duration::from_secs_f64(args.window),
        tx_first: args.tx_first,
        busy_poll_us: args.busy_poll_us,
        sock_dir: sock_dir.0.clone(),
        log_dir,
        stop: stop.clone(),
    };
    if reclaiming {
        return run_reclaim(&args, &env, &out);
    }
    let tests = args
        .tests
        .clone()
        .unwrap_or_else(|| vec![Test::Vm2vm, Test::GuestTx, Test::GuestRx]);
    let sizes = args.sizes.clone().unwrap_or_else(|| vec![64, 1500]);
    let mut samples: Vec<Sample> = Vec::new();
    let mut failures: Vec<String> = Vec::new();
    for &test in &tests {
        for &size in &sizes {
            for run in 0..args.runs {
                for &backend in &args.backends {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let what = format!("{} {size}B {} run {run}", test.name(), backend.name());
                    window(
                        &env,
                        &what,
                        test,
                        size,
                        backend,
                        None,
                        run,
                        &mut samples,
                        &mut failures,
                    );
                }
            }
        }
    }
    let groups = report::groups(&samples);
    let table = report::table(&groups);
    println!("{table}");
    std::fs::write(out.join("table.txt"), &table)?;
    std::fs::write(out.join("samples.tsv"), report::samples_tsv(&samples))?;
    std::fs::write(out.join("summary.tsv"), report::summary_tsv(&groups))?;
    let title = format!(
        "quiverd / DPDK vhost PMD, {} runs, {}s windows",
        args.runs, args.window
    );
    report::ratio_svg(&groups, &out.join("ratios.svg"), &title)?;
    println!(
        "results: {} (table.txt, samples.tsv, summary.tsv, ratios.svg, logs/)",
        out.display()
    );
    check_failures(&out, &failures)
}

fn check_failures(out: &Path, failures: &[String]) -> Result<()> {
    if !failures.is_empty() {
        std::fs::write(out.join("failures.txt"), failures.join("\n") + "\n")?;
        bail!(
            "{} of the measurements failed (failures.txt)",
            failures.len()
        );
    }
    Ok(())
}

/// One throughput window, logged and collected (or its failure).
#[allow(clippy::too_many_arguments)]
fn window(
    env: &Env,
    what: &str,
    test: Test,
    size: usize,
    backend: Backend,
    reclaim: Option<Policy>,
    run: usize,
    samples: &mut Vec<Sample>,
    failures: &mut Vec<String>,
) {
    match scenario::measure(env, test, size, backend, reclaim, run) {
        Ok(s) => {
            let policy = if reclaim.is_some() {
                format!(
                    ", reclaim mode switches {} deadline flushes {}",
                    s.reclaim_switches, s.deadline_flushes
                )
            } else {
                String::new()
            };
            eprintln!(
                "{what}: {:.3} Mpps {:.2} Gbit/s, backend CPU {:.0}% (others {:.0}% of it, {:.0}% of the generator's), generator TX ring full {:.1}%, RX polls full {:.1}%, backend drops {}{policy}{}{}",
                s.mpps(),
                s.gbps(),
                s.backend_cpu,
                s.backend_cpu_other,
                s.generator_cpu_other,
                s.gen_tx_full_pct(),
                s.gen_rx_full_pct,
                s.backend_drops,
                if s.backend_bound() { "" } else { " [not backend-bound]" },
                if s.noisy() { " [noisy]" } else { "" },
            );
            samples.push(s);
        }
        Err(e) => {
            eprintln!("{what}: FAILED: {e:#}");
            failures.push(format!("{what}: {e:#}"));
        }
    }
}

/// `--reclaim`: quiverd's reclaim policies, alternating within each run; throughput
/// windows first, then the latency runs.
fn run_reclaim(args: &Args, env: &Env, out: &Path) -> Result<()> {
    let policies = &args.reclaim;
    let mut failures: Vec<String> = Vec::new();
    let mut text = String::new();
    let stopped = || env.stop.load(Ordering::Relaxed);
    if args.reclaim_parts.contains(&Part::Throughput) {
        let tests = args
            .tests
            .clone()
            .unwrap_or_else(|| vec![Test::Vm2vm, Test::GuestTx]);
        let sizes = args.sizes.clone().unwrap_or_else(|| vec![64]);
        let mut samples: Vec<Sample> = Vec::new();
        for &test in &tests {
            for &size in &sizes {
                for run in 0..args.runs {
                    for &p in policies {
                        if stopped() {
                            break;
                        }
                        let what =
                            format!("{} {size}B quiverd {} run {run}", test.name(), p.name());
                        let q = Backend::Quiverd;
                        window(
                            env,
                            &what,
                            test,
                            size,
                            q,
                            Some(p),
                            run,
                            &mut samples,
                            &mut failures,
                        );
                    }
                }
            }
        }
        text.push_str(&reclaim::throughput_table(&samples, policies));
        std::fs::write(
            out.join("reclaim-throughput.tsv"),
            reclaim::throughput_tsv(&samples),
        )?;
    }
    if args.reclaim_parts.contains(&Part::Latency) && !stopped() {
        let spec = LatencySpec {
            samples: args.latency_samples,
            warmup: args.latency_warmup,
            interval: Duration::from_micros(args.latency_interval_us),
            wait: args.latency_wait,
            frame_len: args.latency_frame,
        };
        let mut runs: Vec<LatencyRun> = Vec::new();
        // The driver (both guests) runs on a thread of its own, pinned like the generator.
        std::thread::scope(|s| -> Result<()> {
            let h = s.spawn(|| -> Result<()> {
                reclaim::pin_thread(env.generator_cpu)?;
                for run in 0..args.runs {
                    for &p in policies {
                        if stopped() {
                            return Ok(());
                        }
                        let what = format!("latency {} run {run}", p.name());
                        match reclaim::measure_latency(env, &spec, p, run) {
                            Ok(r) => {
                                let (rtt, tx) = (r.rtt(), r.tx_done());
                                let pc = |v: &[f64], q| reclaim::percentile(v, q).unwrap_or(f64::NAN);
                                eprintln!(
                                    "{what}: RTT p50 {:.1} p99 {:.1} µs, TX done p50 {:.1} p99 {:.1} µs, deadline flushes {}+{}, switches {}, quiverd CPU {:.1}% (others {:.0}% of it, {:.0}% of the driver's){}",
                                    pc(&rtt, 50.0),
                                    pc(&rtt, 99.0),
                                    pc(&tx, 50.0),
                                    pc(&tx, 99.0),
                                    r.flushes_a,
                                    r.flushes_b,
                                    r.switches,
                                    r.backend_cpu,
                                    r.backend_cpu_other,
                                    r.driver_cpu_other,
                                    if r.noisy() { " [noisy]" } else { "" }
                                );
                                runs.push(r);
                            }
                            Err(e) => {
                                eprintln!("{what}: FAILED: {e:#}");
                                failures.push(format!("{what}: {e:#}"));
                            }
                        }
                    }
                }
                Ok(())
            });
            h.join()
                .map_err(|_| anyhow::anyhow!("the latency driver thread panicked"))?
        })?;
        if !text.is_empty() {
            text.push('\n');
        }
        text.push_str(&reclaim::latency_table(&runs, policies, &spec));
        std::fs::write(
            out.join("reclaim-latency.tsv"),
            reclaim::latency_tsv(&runs, &spec),
        )?;
        std::fs::write(
            out.join("reclaim-latency-frames.tsv"),
            reclaim::frames_tsv(&runs),
        )?;
    }
    println!("{text}");
    std::fs::write(out.join("table.txt"), &text)?;
    println!(
        "results: {} (table.txt, reclaim-throughput.tsv, reclaim-latency.tsv, reclaim-latency-frames.tsv, logs/)",
        out.display()
    );
    check_failures(out, &failures)
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("quiver-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}
