//! quiverd: serves VNICs (vhost-user virtio-net devices, one socket each) on a
//! software switch with uplinks. See README.md for the configuration format.

mod attach;
mod backend;
mod config;
mod daemon;
mod dedicated;
mod deliver;
mod fabric;
mod offload;
mod proxy;
mod ratelimit;
mod reclaim;
mod session;
mod sockperm;
mod stats;
mod uplink_port;
mod uplink_rx;
mod vnic;
mod vq;
mod vring;
mod worker;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};

use crate::config::Config;
use crate::daemon::Daemon;

/// quiver's vhost-user virtual switch daemon.
///
/// Each [[vnic]] in the configuration is a vhost-user virtio-net device on its own unix
/// socket, for QEMU (`-chardev socket,path=SOCK -netdev vhost-user`), Cloud Hypervisor or
/// DPDK virtio-user. Frames are switched between VNICs by MAC (+VLAN) and to uplinks.
///
/// Signals: SIGHUP re-reads the configuration and applies the difference; SIGUSR1 writes
/// the stats file now; SIGTERM/SIGINT shut down and remove the sockets.
///
/// The subcommands print what attaches a VM to a configured VNIC and exit.
#[derive(Parser, Debug)]
#[command(
    name = "quiverd",
    version,
    about,
    long_about,
    subcommand_negates_reqs = true,
    args_conflicts_with_subcommands = true
)]
struct Args {
    #[command(subcommand)]
    command: Option<attach::Command>,
    /// Configuration file (TOML).
    #[arg(short, long, value_name = "FILE", required_unless_present_any = ["check_config", "print_capabilities"])]
    config: Option<PathBuf>,
    /// Validate FILE, print a summary and exit (0 = valid, 2 = invalid).
    #[arg(long, value_name = "FILE", conflicts_with = "config")]
    check_config: Option<PathBuf>,
    /// Print the vhost-user backend capabilities as JSON and exit (QEMU's
    /// vhost-user.rst "Backend program conventions"; other arguments are ignored).
    /// share/50-quiver.json is the matching discovery file for
    /// /usr/share/qemu/vhost-user/.
    #[arg(long)]
    print_capabilities: bool,
    /// Write per-VNIC and per-uplink counters as JSON to FILE (every second and on SIGUSR1).
    #[arg(long, value_name = "FILE")]
    stats_file: Option<PathBuf>,
    /// Log level when RUST_LOG is not set: error, warn, info, debug, trace.
    #[arg(long, default_value = "info")]
    log_level: String,
}

/// Learned uplink MACs not heard from for this long are forgotten (802.1D default).
const MAC_AGE_SECS: u64 = 300;
const MAC_AGING_PERIOD: Duration = Duration::from_secs(10);
/// How often the main loop wakes for housekeeping, and rewrites the stats file.
const HOUSEKEEPING: Duration = Duration::from_secs(1);
const STATS_PERIOD: Duration = Duration::from_secs(1);

/// Formats an error with its chain of causes: "a: b: c".
pub fn report(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}

fn main() -> ExitCode {
    // vhost-user.rst: with --print-capabilities "other options and arguments should be
    // ignored", so it is honoured before clap can refuse any of them.
    if std::env::args_os()
        .skip(1)
        .any(|a| a == "--print-capabilities")
    {
        println!("{}", attach::capabilities());
        return ExitCode::SUCCESS;
    }
    let args = Args::parse();
    if let Some(command) = &args.command {
        return command.run();
    }
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(&args.log_level))
        .format_timestamp_millis()
        .init();
    if let Some(path) = &args.check_config {
        return match Config::load(path) {
            Ok(cfg) => {
                println!(
                    "{}: valid ({} uplinks, {} VNICs)",
                    path.display(),
                    cfg.uplinks.len(),
                    cfg.vnics.len()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("quiverd: {e}");
                ExitCode::from(2)
            }
        };
    }
    let Some(path) = args.config.clone() else {
        eprintln!("quiverd: --config FILE is required");
        return ExitCode::from(2);
    };
    match run(&path, args.stats_file.as_deref()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("quiverd: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Raises the soft limit of open files to the hard limit: each connected VNIC holds
/// ~17 descriptors (socket, eventfds, memory regions), so the common soft limit of
/// 1024 would stop at ~60 VNICs. Returns the limit in effect.
fn raise_fd_limit() -> Option<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one `struct rlimit` into `lim`, a live local.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return None;
    }
    if lim.rlim_cur < lim.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: setrlimit reads one `struct rlimit` from `raised`, a live local.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } == 0 {
            lim = raised;
        }
    }
    Some(lim.rlim_cur)
}

fn run(path: &std::path::Path, stats_file: Option<&std::path::Path>) -> anyhow::Result<()> {
    let cfg = Config::load(path)?;
    match raise_fd_limit() {
        Some(n) if n < 32 * (cfg.vnics.len() as u64 + 8) => log::warn!(
            "open-file limit {n} is low for {} VNICs (~17 descriptors each when connected): \
             raise it (ulimit -n, LimitNOFILE=)",
            cfg.vnics.len()
        ),
        Some(n) => log::debug!("open-file limit {n}"),
        None => {}
    }
    let mut signals = signal_hook::iterator::Signals::new([SIGHUP, SIGINT, SIGTERM, SIGUSR1])?;
    let mut daemon = Daemon::start(&cfg).map_err(|e| anyhow::anyhow!(report(&e)))?;
    log::info!(
        "quiverd running: {} uplinks, {} VNICs",
        cfg.uplinks.len(),
        cfg.vnics.len()
    );
    let write_stats = |d: &Daemon| {
        if let Some(f) = stats_file {
            if let Err(e) = stats::write(d, f) {
                log::warn!("cannot write stats to {}: {e}", f.display());
            }
        }
    };
    write_stats(&daemon);
    let mut last_aging = std::time::Instant::now();
    // Signals arrive on a channel so the loop sleeps until one comes or the next
    // housekeeping tick: an idle quiverd wakes once a second.
    let (tx, rx) = std::sync::mpsc::channel();
    let signal_thread = std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                if tx.send(sig).is_err() {
                    break;
                }
            }
        })?;
    drop(signal_thread);
    let mut last_stats = std::time::Instant::now();
    loop {
        let mut quit = false;
        let first = match rx.recv_timeout(HOUSEKEEPING) {
            Ok(sig) => Some(sig),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => None,
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => Some(SIGTERM),
        };
        for sig in first.into_iter().chain(rx.try_iter()) {
            match sig {
                SIGHUP => match Config::load(path) {
                    Ok(cfg) => match daemon.apply(&cfg) {
                        Ok(s) => log::info!(
                            "reloaded {}: added {:?}, removed {:?}, {} unchanged",
                            path.display(),
                            s.added,
                            s.removed,
                            s.kept.len()
                        ),
                        Err(e) => {
                            log::error!("reload of {} incomplete: {}", path.display(), report(&e))
                        }
                    },
                    Err(e) => log::error!("reload refused, configuration unchanged: {e}"),
                },
                SIGUSR1 => write_stats(&daemon),
                _ => quit = true,
            }
        }
        if quit {
            break;
        }
        if last_stats.elapsed() >= STATS_PERIOD {
            last_stats = std::time::Instant::now();
            write_stats(&daemon);
        }
        if last_aging.elapsed() >= MAC_AGING_PERIOD {
            last_aging = std::time::Instant::now();
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let aged = daemon.fabric().learner.age(now, MAC_AGE_SECS);
            if aged > 0 {
                log::debug!("aged out {aged} learned MACs");
            }
        }
    }
    log::info!("shutting down");
    daemon.shutdown();
    session::remove_private_dir();
    write_stats(&daemon);
    Ok(())
}
