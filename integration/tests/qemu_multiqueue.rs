//! Multiqueue with a real guest (issue 3, item 4), against QEMU 7.2 and 10.0.
//!
//! The VNIC offers 4 queue pairs (`queue_pairs = 4`; `quiverd qemu-args` gives QEMU
//! `queues=4` and `mq=on,vectors=10`), the guest has 2 vCPUs, and the uplink is a
//! 4-queue TAP in the test's namespace. While iperf3 runs 4 TCP streams each way
//! (`--bidir -P 4`) between the guest and the namespace host, the guest changes its
//! channels with `ethtool -L eth0 combined 1`, then 4, then 2. QEMU handles the
//! guest's control-queue command itself and tells quiverd with SET_VRING_ENABLE.
//!
//! Checked:
//! - iperf3 succeeds, and the server (in the namespace, `-J`) counts bytes in both
//!   directions in every one-second interval: traffic never stops;
//! - quiverd's per-queue counters, read between the guest's phase markers, show
//!   traffic only on the enabled pairs: pair 0 alone with 1 channel, pairs 0–1 with 2,
//!   and more than one pair with 4 (with 2, all flows may hash to one pair).

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use quiver_integration::nshost::NsHost;
use quiver_integration::qemu::{
    condense, ping_script, prerequisites, serial, test_subnet, GuestImage, QemuVersion, Vm, VmSpec,
};
use quiver_integration::{have, vnic_drops, Quiverd};
use serde_json::Value;

const MAC1: &str = "52:54:00:00:00:01";
const PAIRS: usize = 4;
/// Boot until the first marker, under TCG on a busy machine.
const BOOT_TIMEOUT: Duration = Duration::from_secs(300);
/// Longest wait for the next phase marker.
const MARKER_TIMEOUT: Duration = Duration::from_secs(90);
/// How long a guest keeps retrying to reach the namespace host.
const REACH_SECS: u32 = 45;
/// Seconds of traffic measured in each phase, between its START and END markers.
const PHASE_SECS: u32 = 8;
/// Seconds between a channel change and the START marker, and between the END
/// marker and the next change: the host reads the counters inside these margins.
const MARGIN_SECS: u32 = 2;
/// The phases: channels set with `ethtool -L eth0 combined N`, in order.
const PHASES: [usize; 3] = [1, 4, 2];

/// Guest script: reach the host, set 1 channel, start iperf3 in the background, then
/// for each phase change channels and print `PHASE-N-START` / `PHASE-N-END` around
/// `PHASE_SECS` of traffic.
fn guest_script(host: &str) -> String {
    let per_phase = 2 * MARGIN_SECS + PHASE_SECS;
    let iperf_secs = PHASES.iter().map(|_| per_phase).sum::<u32>() + 2;
    let mut s = format!(
        "{reach}\
         ethtool -l eth0 | sed 's/^/CHANNELS /'\n\
         ethtool -L eth0 combined 1 || exit 3\n\
         iperf3 -c {host} --bidir -P 4 -t {iperf_secs} >/tmp/iperf 2>&1 &\n\
         iperf=$!\n",
        reach = ping_script(host, 1, REACH_SECS),
    );
    for (i, n) in PHASES.iter().enumerate() {
        if i > 0 {
            s.push_str(&format!("ethtool -L eth0 combined {n} || exit {}\n", 4 + i));
        }
        s.push_str(&format!(
            "sleep {MARGIN_SECS}\necho PHASE-{n}-START\nsleep {PHASE_SECS}\n\
             echo PHASE-{n}-END\nsleep {MARGIN_SECS}\n"
        ));
    }
    s.push_str(
        "wait $iperf; rc=$?\n\
         sed 's/^/IPERF /' /tmp/iperf | tail -n 14\n\
         ethtool -l eth0 | sed 's/^/CHANNELS /'\n\
         [ $rc = 0 ] || exit 2\n",
    );
    s
}

/// `(rx_packets, tx_packets)` of each queue pair of `vnic`.
fn pair_counters(stats: &Value, vnic: &str) -> Vec<(u64, u64)> {
    let queues = &stats["vnics"][vnic]["queues"];
    (0..PAIRS)
        .map(|p| {
            let q = &queues[p];
            (
                q["rx_packets"].as_u64().unwrap_or(0),
                q["tx_packets"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

/// Per-pair `(rx, tx)` frames between two snapshots.
fn delta(before: &[(u64, u64)], after: &[(u64, u64)]) -> Vec<(u64, u64)> {
    before
        .iter()
        .zip(after)
        .map(|(b, a)| (a.0.saturating_sub(b.0), a.1.saturating_sub(b.1)))
        .collect()
}

/// The server's per-second byte counts, `(client→server, server→client)`, from its
/// `iperf3 -J` report of a `--bidir` test. The last interval, cut short when the test
/// ends, is left out when it is under half a second.
fn server_intervals(report: &Value) -> Vec<(f64, f64)> {
    report["intervals"]
        .as_array()
        .map(|ivs| {
            ivs.iter()
                .filter(|iv| iv["sum"]["seconds"].as_f64().unwrap_or(1.0) >= 0.5)
                .map(|iv| {
                    (
                        iv["sum"]["bytes"].as_f64().unwrap_or(0.0),
                        iv["sum_bidir_reverse"]["bytes"].as_f64().unwrap_or(0.0),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn channels_change_under_iperf3(version: QemuVersion) -> Result<()> {
    let Some(qemu) = prerequisites(version) else {
        return Ok(());
    };
    if !have("iperf3") {
        eprintln!("skipped: iperf3 not installed on the host");
        return Ok(());
    }
    let _serial = serial();
    let image = GuestImage::get()?;
    let host = NsHost::new("qm")?.with_queues(4);
    let cfg = format!(
        "{}[[vnic]]\nname = \"vm1\"\nsocket = \"@DIR@/vm1.sock\"\nmac = \"{MAC1}\"\n\
         uplink = \"up0\"\nqueue_pairs = {PAIRS}\n",
        host.uplink_config()
    );
    let q = Quiverd::start("qemu-mq", &cfg)?;
    let [host_ip, guest_ip] = test_subnet(218);
    host.configure(host_ip)?;
    let report_path = q.dir.path().join("iperf3-server.json");
    let server = host.spawn(
        &["iperf3", "-s", "-1", "-J", "-B", &host_ip.to_string()],
        &report_path,
    )?;

    let mut spec = VmSpec::new(&q.config, "vm1");
    spec.cpus = 2;
    spec.ip = Some(format!("{guest_ip}/24"));
    spec.script = guest_script(&host_ip.to_string());
    let started = Instant::now();
    let mut vm = Vm::boot(&qemu, &image, &spec)?;
    let fail = |vm: &Vm, q: &Quiverd, what: String| {
        anyhow::anyhow!(
            "{what}\n{}\n--- quiverd log (condensed) ---\n{}",
            vm.diagnostics(),
            condense(&q.log_text())
        )
    };

    for (i, &n) in PHASES.iter().enumerate() {
        let timeout = if i == 0 { BOOT_TIMEOUT } else { MARKER_TIMEOUT };
        vm.wait_line(&format!("PHASE-{n}-START"), timeout)?;
        let before = pair_counters(&q.stats()?, "vm1");
        vm.wait_line(&format!("PHASE-{n}-END"), MARKER_TIMEOUT)?;
        let after = pair_counters(&q.stats()?, "vm1");
        let d = delta(&before, &after);
        eprintln!("{version}: combined {n}: per-pair (rx, tx) frames in ~{PHASE_SECS} s: {d:?}");
        let (rx, tx): (u64, u64) = d.iter().fold((0, 0), |a, p| (a.0 + p.0, a.1 + p.1));
        if rx == 0 || tx == 0 {
            return Err(fail(
                &vm,
                &q,
                format!("combined {n}: traffic stopped: per-pair (rx, tx) {d:?}"),
            ));
        }
        let stray: Vec<usize> = (n..PAIRS).filter(|&p| d[p] != (0, 0)).collect();
        if !stray.is_empty() {
            return Err(fail(
                &vm,
                &q,
                format!("combined {n}: frames on disabled pairs {stray:?}: {d:?}"),
            ));
        }
        // With all 4 pairs, 8 flows from 2 vCPUs always spread (XPS gives each CPU
        // two TX queues); with 2, every flow may legitimately hash to one pair.
        let used = d.iter().filter(|p| **p != (0, 0)).count();
        if n == PAIRS && used < 2 {
            return Err(fail(
                &vm,
                &q,
                format!("combined {n}: only {used} pair carried traffic: {d:?}"),
            ));
        }
    }

    let rc = vm.wait_result(MARKER_TIMEOUT)?;
    // Chains the guest left on TX rings it was disabling, completed and discarded.
    eprintln!(
        "{version}: queue_disabled drops: {}",
        vnic_drops(&q.stats()?, "vm1", "queue_disabled")
    );
    if rc != 0 {
        return Err(fail(&vm, &q, format!("guest script failed ({rc})")));
    }
    // The server exits after its one test (`-1`) and writes its report.
    let mut server = server;
    let deadline = Instant::now() + Duration::from_secs(30);
    while server.0.try_wait()?.is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let text = std::fs::read_to_string(&report_path).context("reading the iperf3 report")?;
    let report: Value = serde_json::from_str(&text)
        .with_context(|| format!("iperf3 server report is not JSON: {text}"))?;
    let ivs = server_intervals(&report);
    ensure!(
        ivs.len() >= (PHASE_SECS as usize) * PHASES.len(),
        "iperf3 server reported {} intervals: {text}",
        ivs.len()
    );
    let gaps: Vec<usize> = (0..ivs.len())
        .filter(|&i| ivs[i].0 == 0.0 || ivs[i].1 == 0.0)
        .collect();
    let mbit = |b: f64| b * 8.0 / 1e6;
    let min_up = ivs.iter().map(|i| i.0).fold(f64::MAX, f64::min);
    let min_down = ivs.iter().map(|i| i.1).fold(f64::MAX, f64::min);
    let avg = |f: fn(&(f64, f64)) -> f64| ivs.iter().map(f).sum::<f64>() / ivs.len() as f64;
    eprintln!(
        "{version}: iperf3 --bidir -P 4 over {} s while channels went 1 → 4 → 2: \
         guest→host avg {:.1} (min {:.1}) Mbit/s, host→guest avg {:.1} (min {:.1}) Mbit/s; \
         test {:?}",
        ivs.len(),
        mbit(avg(|i| i.0)),
        mbit(min_up),
        mbit(avg(|i| i.1)),
        mbit(min_down),
        started.elapsed()
    );
    ensure!(
        gaps.is_empty(),
        "traffic stopped in one-second intervals {gaps:?} of {}: {ivs:?}",
        ivs.len()
    );
    Ok(())
}

#[test]
fn qemu72_channels_change_under_iperf3() -> Result<()> {
    channels_change_under_iperf3(QemuVersion::V7_2)
}

#[test]
fn qemu10_channels_change_under_iperf3() -> Result<()> {
    channels_change_under_iperf3(QemuVersion::V10)
}
