//! quiver-bench: quiverd against DPDK's vhost PMD (the anchor), same machine, same run,
//! same generator (`dpdk-testpmd` with `net_virtio_user` ports), alternating A B A B.
//! See benches/README.md.

mod proc;
mod quiverd;
mod report;
mod scenario;
mod testpmd;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use clap::Parser;

use crate::scenario::{Backend, Env, Sample, Test};

/// Packet rate of quiverd against DPDK's vhost PMD, measured side by side.
///
/// Each test and frame size runs --runs times; each run measures quiverd, then the
/// anchor (A B A B ...), each pinned to --backend-cpu with the generator on
/// --generator-cpu. Needs root (hugepages) and dpdk-testpmd.
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
    /// Tests to run.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Test::Vm2vm, Test::GuestTx, Test::GuestRx])]
    tests: Vec<Test>,
    /// Frame sizes (bytes, testpmd --txpkts).
    #[arg(long, value_delimiter = ',', default_values_t = [64usize, 1500])]
    sizes: Vec<usize>,
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
    /// Bursts of 32 frames per port that seed the vm2vm loops (`start tx_first N`).
    #[arg(long, default_value_t = 64)]
    tx_first: u32,
}

fn utc_stamp() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn default_quiverd() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("quiverd")))
        .unwrap_or_else(|| PathBuf::from("target/release/quiverd"))
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
    let quiverd = args.quiverd.clone().unwrap_or_else(default_quiverd);
    check_program(&quiverd)?;
    check_program(&args.testpmd)?;
    check_program(Path::new("taskset"))?;
    check_program(Path::new("stdbuf"))?;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("target/bench-results").join(utc_stamp()));
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
    let _hugepages = proc::Hugepages::ensure(args.hugepages)?;
    if let Some(free) = proc::free_hugepages() {
        // Two testpmd processes with 32768 mbufs each need a few hundred MiB.
        if free < 256 {
            eprintln!("warning: only {free} free hugepages; testpmd may fail to start");
        }
    }
    let env = Env {
        quiverd,
        testpmd: args.testpmd.clone(),
        backend_cpu: args.backend_cpu,
        generator_cpu: args.generator_cpu,
        warmup: Duration::from_secs_f64(args.warmup),
        window: Duration::from_secs_f64(args.window),
        tx_first: args.tx_first,
        sock_dir: sock_dir.0.clone(),
        log_dir,
        stop: stop.clone(),
    };
    let mut samples: Vec<Sample> = Vec::new();
    let mut failures: Vec<String> = Vec::new();
    for &test in &args.tests {
        for &size in &args.sizes {
            for run in 0..args.runs {
                for &backend in &args.backends {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let what = format!("{} {size}B {} run {run}", test.name(), backend.name());
                    match scenario::measure(&env, test, size, backend, run) {
                        Ok(s) => {
                            eprintln!(
                                "{what}: {:.3} Mpps {:.2} Gbit/s, backend CPU {:.0}% (others {:.0}% of it, {:.0}% of the generator's), generator TX ring full {:.1}%, RX polls full {:.1}%, backend drops {}{}{}",
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
    if !failures.is_empty() {
        std::fs::write(out.join("failures.txt"), failures.join("\n") + "\n")?;
        bail!(
            "{} of the measurements failed (failures.txt)",
            failures.len()
        );
    }
    Ok(())
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
