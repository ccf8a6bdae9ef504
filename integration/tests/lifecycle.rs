//! VNIC lifecycle: front-end disconnect/reconnect, SIGHUP adding and removing a VNIC,
//! ring stop/restart on the same connection (QEMU set_link off/on), queue pairs
//! disabled and re-enabled (guest `ethtool -L`), client mode, and clean shutdown —
//! while other VNICs carry traffic without losing a frame.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use quiver_integration::{vnic_all_drops, vnic_drops, vnic_total, Quiverd};
use quiver_testdriver::{parse_seq_frame, seq_frame, DriverConfig, Guest, QueueSel};
use quiver_uplink::netns::{unique_name, NetnsGuard};

const MAC1: [u8; 6] = [0x52, 0x54, 0, 0, 0, 1];
const MAC2: [u8; 6] = [0x52, 0x54, 0, 0, 0, 2];
const MAC3: [u8; 6] = [0x52, 0x54, 0, 0, 0, 3];
const WAIT: Duration = Duration::from_secs(5);

fn vnic(name: &str, mac: u8, extra: &str) -> String {
    format!(
        "[[vnic]]\nname = \"{name}\"\nsocket = \"@DIR@/{name}.sock\"\nmac = \"52:54:00:00:00:{mac:02x}\"\n{extra}\n"
    )
}

fn sock(q: &Quiverd, name: &str) -> PathBuf {
    q.dir.path().join(format!("{name}.sock"))
}

fn connect(q: &Quiverd, name: &str, mac: [u8; 6], pairs: u16) -> Result<Guest> {
    let cfg = DriverConfig {
        mac,
        queue_pairs: pairs,
        ..DriverConfig::default()
    };
    Guest::connect(&sock(q, name), cfg, WAIT).with_context(|| format!("connecting {name}"))
}

/// A vm1→vm2 stream with contiguous sequence numbers, advanced one window at a time.
struct Stream {
    next_tx: u64,
    next_rx: u64,
}

impl Stream {
    const ID: u32 = 42;

    fn window(
        &mut self,
        a: &mut Guest,
        b: &mut Guest,
        n: u64,
        mid: impl FnOnce() -> Result<()>,
    ) -> Result<()> {
        for _ in 0..n {
            a.send(0, &seq_frame(MAC2, MAC1, Self::ID, self.next_tx, 200))?;
            self.next_tx += 1;
        }
        // Whatever happens elsewhere happens while this window is in flight.
        mid()?;
        while self.next_rx < self.next_tx {
            let (_, f) = b
                .recv_any(WAIT)?
                .with_context(|| format!("frame {} of the stream never arrived", self.next_rx))?;
            if let Some((Self::ID, seq)) = parse_seq_frame(&f.data) {
                ensure!(
                    seq == self.next_rx,
                    "seq {seq} where {} was expected",
                    self.next_rx
                );
                self.next_rx += 1;
            }
        }
        a.reclaim_tx(0);
        Ok(())
    }
}

fn exchange(a: &mut Guest, b: &mut Guest, dst: [u8; 6], src: [u8; 6], stream: u32) -> Result<()> {
    for s in 0..5 {
        a.send(0, &seq_frame(dst, src, stream, s, 100))?;
    }
    let mut got = 0;
    while got < 5 {
        let (_, f) = b
            .recv_any(WAIT)?
            .with_context(|| format!("stream {stream} frame {got} lost"))?;
        if parse_seq_frame(&f.data).is_some_and(|(sid, _)| sid == stream) {
            got += 1;
        }
    }
    a.reclaim_tx(0);
    Ok(())
}

#[test]
fn reconnecting_one_vnic_does_not_disturb_another() -> Result<()> {
    let cfg = [vnic("vm1", 1, ""), vnic("vm2", 2, ""), vnic("vm3", 3, "")].concat();
    let q = Quiverd::start("reconnect", &cfg)?;
    let mut g1 = connect(&q, "vm1", MAC1, 1)?;
    let mut g2 = connect(&q, "vm2", MAC2, 1)?;
    let mut st = Stream {
        next_tx: 0,
        next_rx: 0,
    };
    let mut g3 = Some(connect(&q, "vm3", MAC3, 1)?);
    for round in 0..6 {
        st.window(&mut g1, &mut g2, 64, || {
            // Drop vm3's connection, then come back with fresh device state.
            if let Some(g) = g3.take() {
                g.disconnect();
            }
            Ok(())
        })?;
        st.window(&mut g1, &mut g2, 64, || Ok(()))?;
        let mut g = connect(&q, "vm3", MAC3, 1).with_context(|| format!("round {round}"))?;
        exchange(&mut g, &mut g1, MAC1, MAC3, 100 + round)
            .with_context(|| format!("round {round}: vm3 after reconnect"))?;
        g3 = Some(g);
    }
    let s = q.stats()?;
    ensure!(
        vnic_all_drops(&s, "vm1") == 0 && vnic_all_drops(&s, "vm2") == 0,
        "drops: {s:#}"
    );
    ensure!(
        vnic_total(&s, "vm2", "rx_packets") == st.next_tx,
        "vm2 rx: {s:#}"
    );
    ensure!(
        s["vnics"]["vm3"]["connects"].as_u64() == Some(7),
        "vm3 connects: {s:#}"
    );
    ensure!(
        s["vnics"]["vm1"]["connects"].as_u64() == Some(1),
        "vm1 reconnected: {s:#}"
    );
    Ok(())
}

/// Open descriptors of process `pid`.
fn open_fds(pid: i32) -> Result<usize> {
    Ok(std::fs::read_dir(format!("/proc/{pid}/fd"))?.count())
}

/// Waits until quiverd counts `n` disconnects of `vnic`.
fn wait_disconnects(q: &Quiverd, vnic: &str, n: u64) -> Result<()> {
    q.wait_stats("disconnect", WAIT, |s| {
        s["vnics"][vnic]["disconnects"].as_u64() == Some(n)
    })?;
    Ok(())
}

#[test]
fn reconnects_leave_no_descriptors_behind() -> Result<()> {
    let q = Quiverd::start("fdleak", &vnic("vm1", 1, "queue_pairs = 2"))?;
    // One connection first: anything opened once (lazily) is then open already.
    connect(&q, "vm1", MAC1, 2)?.disconnect();
    wait_disconnects(&q, "vm1", 1)?;
    let before = open_fds(q.pid())?;
    for round in 2..=11 {
        connect(&q, "vm1", MAC1, 2)?.disconnect();
        wait_disconnects(&q, "vm1", round)?;
    }
    // The session thread tears the old device down right after counting the
    // disconnect; give it a moment.
    let deadline = std::time::Instant::now() + WAIT;
    let mut after = open_fds(q.pid())?;
    while after > before && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        after = open_fds(q.pid())?;
    }
    ensure!(
        after <= before,
        "quiverd had {before} descriptors open after one connection, {after} after ten more"
    );
    Ok(())
}

/// `(held rings, path)` of a VNIC in quiverd's stats.
fn rings(s: &serde_json::Value, vnic: &str) -> (Vec<u64>, String) {
    let r = &s["vnics"][vnic]["rings"];
    let held = r["held"]
        .as_array()
        .map(|a| a.iter().filter_map(serde_json::Value::as_u64).collect())
        .unwrap_or_default();
    (held, r["path"].as_str().unwrap_or("").to_string())
}

#[test]
fn dedicated_rings_move_on_reload_while_traffic_flows() -> Result<()> {
    let ns = NetnsGuard::new(unique_name("qrn"))?;
    let uplink = format!(
        "[[uplink]]\nname = \"up0\"\nkind = \"tap\"\nifname = \"{}\"\nqueues = 4\nnetns = \"{}\"\n\n",
        unique_name("qr"),
        ns.name()
    );
    let on_uplink = "uplink = \"up0\"\nrings = 2";
    // Asked in this order: vm3 gets rings 1 and 2, vm1 the last one (3), vm2 none.
    let cfg = |with_vm3: bool| {
        let vm3 = if with_vm3 {
            vnic("vm3", 3, on_uplink)
        } else {
            String::new()
        };
        format!(
            "{uplink}{vm3}{}{}",
            vnic("vm1", 1, on_uplink),
            vnic("vm2", 2, on_uplink)
        )
    };
    let q = Quiverd::start("rings", &cfg(true))?;
    let s = q.stats()?;
    ensure!(rings(&s, "vm3").0 == [1, 2], "vm3: {s:#}");
    ensure!(rings(&s, "vm1").0 == [3], "vm1: {s:#}");
    ensure!(
        rings(&s, "vm2") == (vec![], "software".into()),
        "vm2: {s:#}"
    );
    let mut g1 = connect(&q, "vm1", MAC1, 1)?;
    let mut g2 = connect(&q, "vm2", MAC2, 1)?;
    let mut st = Stream {
        next_tx: 0,
        next_rx: 0,
    };
    st.window(&mut g1, &mut g2, 64, || Ok(()))?;
    // Frames the namespace sent before the guests were up may count as not_ready:
    // what counts is that nothing drops from here on.
    let base = q.stats()?;
    let drops = |s: &serde_json::Value| vnic_all_drops(s, "vm1") + vnic_all_drops(s, "vm2");
    // vm3 goes while vm1 streams to vm2: vm1 gets a second ring, vm2 is promoted.
    st.window(&mut g1, &mut g2, 64, || q.reload(&cfg(false)))?;
    let s = q.wait_stats("vm3 removed", WAIT, |s| s["vnics"]["vm3"].is_null())?;
    ensure!(rings(&s, "vm1").0 == [1, 3], "vm1 after reload: {s:#}");
    ensure!(rings(&s, "vm2").0 == [2], "vm2 after reload: {s:#}");
    for _ in 0..4 {
        st.window(&mut g1, &mut g2, 64, || Ok(()))?;
    }
    let s = q.stats()?;
    ensure!(drops(&s) == drops(&base), "drops: {s:#}");
    ensure!(
        s["vnics"]["vm1"]["connects"].as_u64() == Some(1)
            && s["vnics"]["vm2"]["connects"].as_u64() == Some(1),
        "a VNIC was reconnected: {s:#}"
    );
    ensure!(
        vnic_total(&s, "vm2", "rx_packets") >= st.next_tx,
        "vm2 rx: {s:#}"
    );
    Ok(())
}

#[test]
fn sighup_adds_and_removes_a_vnic_without_touching_the_others() -> Result<()> {
    let two = [vnic("vm1", 1, ""), vnic("vm2", 2, "")].concat();
    let three = [two.clone(), vnic("vm3", 3, "")].concat();
    let q = Quiverd::start("sighup", &two)?;
    let mut g1 = connect(&q, "vm1", MAC1, 1)?;
    let mut g2 = connect(&q, "vm2", MAC2, 1)?;
    let mut st = Stream {
        next_tx: 0,
        next_rx: 0,
    };
    st.window(&mut g1, &mut g2, 64, || q.reload(&three))?;
    let mut g3 = connect(&q, "vm3", MAC3, 1).context("vm3 after SIGHUP")?;
    st.window(&mut g1, &mut g2, 64, || Ok(()))?;
    exchange(&mut g3, &mut g1, MAC1, MAC3, 7)?;
    exchange(&mut g1, &mut g3, MAC3, MAC1, 8)?;
    st.window(&mut g1, &mut g2, 64, || q.reload(&two))?;
    // vm3's socket goes away and its front-end is disconnected.
    let deadline = std::time::Instant::now() + WAIT;
    while sock(&q, "vm3").exists() {
        ensure!(
            std::time::Instant::now() < deadline,
            "vm3's socket was not removed"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    st.window(&mut g1, &mut g2, 64, || Ok(()))?;
    let s = q.stats()?;
    ensure!(s["vnics"].get("vm3").is_none(), "vm3 still present: {s:#}");
    ensure!(
        vnic_all_drops(&s, "vm1") == 0 && vnic_all_drops(&s, "vm2") == 0,
        "drops: {s:#}"
    );
    ensure!(
        s["vnics"]["vm1"]["connects"].as_u64() == Some(1),
        "vm1 was reconnected: {s:#}"
    );
    ensure!(
        s["vnics"]["vm2"]["connects"].as_u64() == Some(1),
        "vm2 was reconnected: {s:#}"
    );
    // A broken configuration is refused and changes nothing.
    q.reload("[[vnic]]\nname = \"vm1\"\n")?;
    std::thread::sleep(Duration::from_millis(300));
    st.window(&mut g1, &mut g2, 64, || Ok(()))?;
    ensure!(q.log_text().contains("reload refused"), "no refusal logged");
    Ok(())
}

#[test]
fn rings_stopped_and_restarted_on_one_connection_resume_exactly() -> Result<()> {
    let q = Quiverd::start(
        "setlink",
        &[vnic("vm1", 1, ""), vnic("vm2", 2, "")].concat(),
    )?;
    let mut g1 = connect(&q, "vm1", MAC1, 1)?;
    let mut g2 = connect(&q, "vm2", MAC2, 1)?;
    let mut st = Stream {
        next_tx: 0,
        next_rx: 0,
    };
    for _ in 0..3 {
        st.window(&mut g1, &mut g2, 100, || Ok(()))?;
        // As QEMU does for set_link off / on: GET_VRING_BASE on every ring, then the
        // rings are set up again on the same connection.
        let bases = g1.stop()?;
        ensure!(bases.len() == 2, "bases {bases:?}");
        // TX base = every frame sent so far was taken by the device.
        ensure!(
            u64::from(bases[1]) == st.next_tx % 65536,
            "TX base {} after {} frames",
            bases[1],
            st.next_tx
        );
        g1.restart()?;
        let bases = g2.stop()?;
        ensure!(bases.len() == 2, "bases {bases:?}");
        g2.restart()?;
    }
    st.window(&mut g1, &mut g2, 100, || Ok(()))?;
    let s = q.stats()?;
    ensure!(
        vnic_all_drops(&s, "vm1") == 0 && vnic_all_drops(&s, "vm2") == 0,
        "drops: {s:#}"
    );
    Ok(())
}

#[test]
fn frames_go_only_to_enabled_queue_pairs() -> Result<()> {
    let cfg = [
        vnic("vm1", 1, "queue_pairs = 4"),
        vnic("vm2", 2, "queue_pairs = 4"),
    ]
    .concat();
    let q = Quiverd::start("ethtool-l", &cfg)?;
    let mut g1 = connect(&q, "vm1", MAC1, 4)?;
    let mut g2 = connect(&q, "vm2", MAC2, 4)?;
    // Like `ethtool -L eth0 combined 1`, then 4, then 2.
    for active in [1u16, 4, 2] {
        for p in 0..4 {
            g2.set_pair_enabled(p, p < active)?;
        }
        for p in 0..4u16 {
            for s in 0..8 {
                g1.send(
                    p,
                    &seq_frame(MAC2, MAC1, u32::from(active), u64::from(p) * 100 + s, 120),
                )?;
            }
        }
        for n in 0..32 {
            let (pair, f) = g2
                .recv_any(WAIT)?
                .with_context(|| format!("combined {active}: frame {n} lost"))?;
            ensure!(
                pair < active,
                "combined {active}: frame arrived on disabled pair {pair}"
            );
            ensure!(parse_seq_frame(&f.data).is_some());
        }
        for p in 0..4 {
            g1.reclaim_tx(p);
        }
    }
    let s = q.stats()?;
    ensure!(vnic_all_drops(&s, "vm2") == 0, "drops: {s:#}");
    Ok(())
}

/// vhost-user: a started but disabled virtio-net ring "must process and discard any TX
/// packets". A guest that shrinks its queue pairs may have queued chains on a TX ring
/// QEMU then disables; Linux frees those skbs only on completion, so leaving them
/// stalls the sockets that sent them (seen with iperf3 under `ethtool -L`).
#[test]
fn a_disabled_tx_ring_is_drained_and_discarded() -> Result<()> {
    let cfg = [vnic("vm1", 1, "queue_pairs = 2"), vnic("vm2", 2, "")].concat();
    let q = Quiverd::start("tx-disabled", &cfg)?;
    let mut g1 = connect(&q, "vm1", MAC1, 2)?;
    let mut g2 = connect(&q, "vm2", MAC2, 1)?;
    g1.set_pair_enabled(1, false)?;
    for s in 0..5 {
        g1.send(1, &seq_frame(MAC2, MAC1, 7, s, 120))?;
    }
    ensure!(
        g1.wait_used(QueueSel::Tx(1), 5, WAIT)?,
        "chains on the disabled TX ring were never completed: {:?}",
        g1.used_entries(QueueSel::Tx(1))
    );
    q.wait_stats("queue_disabled drops on vm1", WAIT, |s| {
        vnic_drops(s, "vm1", "queue_disabled") == 5
    })?;
    if let Some((pair, f)) = g2.recv_any(Duration::from_millis(300))? {
        anyhow::bail!(
            "a frame sent on a disabled ring reached vm2 (pair {pair}): {:?}",
            parse_seq_frame(&f.data)
        );
    }
    // Enabled again, the ring carries traffic as before.
    g1.set_pair_enabled(1, true)?;
    for s in 5..10 {
        g1.send(1, &seq_frame(MAC2, MAC1, 7, s, 120))?;
    }
    for s in 5..10 {
        let (_, f) = g2
            .recv_any(WAIT)?
            .with_context(|| format!("frame {s} after re-enabling never arrived"))?;
        ensure!(
            parse_seq_frame(&f.data) == Some((7, s)),
            "frame {s} out of order"
        );
    }
    Ok(())
}

#[test]
fn client_mode_connects_and_retries() -> Result<()> {
    let cfg = [vnic("vm1", 1, ""), vnic("vm2", 2, "mode = \"client\"")].concat();
    let q = Quiverd::start("client", &cfg)?;
    let mut g1 = connect(&q, "vm1", MAC1, 1)?;
    for round in 0..2 {
        // The front-end listens; quiverd connects (and keeps retrying until it can).
        let cfg2 = DriverConfig {
            mac: MAC2,
            ..DriverConfig::default()
        };
        let mut g2 = Guest::listen(&sock(&q, "vm2"), cfg2, Duration::from_secs(10))
            .with_context(|| format!("round {round}: quiverd never connected"))?;
        exchange(&mut g1, &mut g2, MAC2, MAC1, 20 + round)?;
        exchange(&mut g2, &mut g1, MAC1, MAC2, 30 + round)?;
        g2.disconnect();
        let _ = std::fs::remove_file(sock(&q, "vm2"));
    }
    Ok(())
}

#[test]
fn sigterm_removes_sockets_and_exits_zero() -> Result<()> {
    let mut q = Quiverd::start(
        "sigterm",
        &[vnic("vm1", 1, ""), vnic("vm2", 2, "")].concat(),
    )?;
    let _g1 = connect(&q, "vm1", MAC1, 1)?;
    let status = q.stop()?;
    ensure!(status.success(), "quiverd exited with {status}");
    ensure!(
        !sock(&q, "vm1").exists() && !sock(&q, "vm2").exists(),
        "sockets left behind"
    );
    Ok(())
}

#[test]
fn restart_after_sigkill_replaces_stale_sockets_and_a_second_instance_is_refused() -> Result<()> {
    let cfg = [vnic("vm1", 1, "socket_mode = \"0600\""), vnic("vm2", 2, "")].concat();
    let mut q = Quiverd::start("sigkill", &cfg)?;
    // A second quiverd on the same sockets must not steal them.
    let out = std::process::Command::new(quiver_integration::quiverd_bin())
        .arg("--config")
        .arg(&q.config)
        .output()?;
    ensure!(
        !out.status.success(),
        "a second quiverd started on live sockets"
    );
    ensure!(
        String::from_utf8_lossy(&out.stderr).contains("in use"),
        "unclear refusal: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut g1 = connect(&q, "vm1", MAC1, 1)?;
    let mut g2 = connect(&q, "vm2", MAC2, 1)?;
    exchange(&mut g1, &mut g2, MAC2, MAC1, 1)?;
    drop((g1, g2));
    // SIGKILL leaves the socket files behind; the new process replaces them.
    q.kill_and_restart()?;
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(sock(&q, "vm1"))?.permissions().mode() & 0o777;
    ensure!(mode == 0o600, "socket mode {mode:o} after restart");
    let mut g1 = connect(&q, "vm1", MAC1, 1)?;
    let mut g2 = connect(&q, "vm2", MAC2, 1)?;
    exchange(&mut g1, &mut g2, MAC2, MAC1, 2)?;
    exchange(&mut g2, &mut g1, MAC1, MAC2, 3)?;
    Ok(())
}
