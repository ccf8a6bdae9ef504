//! Real guests through link and daemon lifecycle events (issue 3, items 5 and 6): a
//! QEMU guest pings a namespace host through a TAP uplink while
//! - QMP `set_link off` then `on` takes its NIC's link away and gives it back: the
//!   guest sees carrier drop and return, and its pings resume;
//! - quiverd is killed with SIGKILL and restarted, with QEMU as the socket client
//!   (`reconnect`) and with QEMU listening (`server=on,wait=off`, quiverd in client
//!   mode): pings resume without rebooting the guest. The TAP lives in the test's
//!   namespace with `persist = true`, so it and its address outlive quiverd. The
//!   outage is printed, measured on the host (SIGKILL to the first good ping seen on
//!   the console) and in the guest (last good ping before to first good ping after).
//!
//! The guest script prints one line per ping, `Q <uptime> <carrier> ok|fail`; the host
//! reads the console and acts at the right moments. Guests are slow under TCG, so the
//! tests take turns (`SERIAL`); QEMU 10.0 is skipped, with a message, when
//! `scripts/setup-vm.sh` has not unpacked it.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use quiver_integration::qemu::{
    condense, prerequisites, serial, test_subnet, GuestImage, Qemu, QemuVersion, Qmp, Vm, VmSpec,
};
use quiver_integration::{vnic_total, Quiverd};
use quiver_uplink::netns::{unique_name, NetnsGuard};

const MAC1: &str = "52:54:00:00:00:01";
/// Boot until the first good ping, under TCG on a busy machine.
const FIRST_PING_TIMEOUT: Duration = Duration::from_secs(240);
/// How long the guest's ping loop runs at most (the host stops it earlier).
const LOOP_SECS: u32 = 600;
/// How long each phase (carrier change, resumed pings) may take.
const PHASE_TIMEOUT: Duration = Duration::from_secs(60);
/// Good pings required after the event before the test calls traffic resumed.
const RESUMED_PINGS: usize = 3;

/// Which end of the vhost-user socket listens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Listener {
    /// quiverd listens; QEMU connects and reconnects.
    Quiverd,
    /// QEMU listens (`server=on,wait=off`); quiverd connects and retries.
    Qemu,
}

/// One ping of the guest's loop.
#[derive(Clone, Copy, Debug)]
struct Ping {
    /// Guest uptime in seconds when the ping finished.
    uptime: f64,
    carrier: bool,
    ok: bool,
    /// Byte offset of the line's end in the console file.
    end: usize,
}

/// The guest script: pings `host` forever (bounded), one `Q` line per ping.
fn ping_loop_script(host: Ipv4Addr) -> String {
    format!(
        "end=$(( $(cut -d. -f1 /proc/uptime) + {LOOP_SECS} ))\n\
         while [ \"$(cut -d. -f1 /proc/uptime)\" -lt $end ]; do\n  \
           if ping -c 1 -W 1 {host} >/dev/null 2>&1; then r=ok; else r=fail; fi\n  \
           echo \"Q $(cut -d' ' -f1 /proc/uptime) $(cat /sys/class/net/eth0/carrier 2>/dev/null || echo 0) $r\"\n  \
           sleep 0.2\n\
         done\n"
    )
}

/// The `Q` lines of a console text.
fn pings(console: &str) -> Vec<Ping> {
    let mut out = Vec::new();
    let mut end = 0;
    for line in console.split_inclusive('\n') {
        end += line.len();
        if !line.ends_with('\n') {
            break; // not yet complete
        }
        let mut w = line.trim_end().split(' ');
        if w.next() != Some("Q") {
            continue;
        }
        let (Some(up), Some(c), Some(r)) = (w.next(), w.next(), w.next()) else {
            continue;
        };
        let Ok(uptime) = up.parse() else { continue };
        out.push(Ping {
            uptime,
            carrier: c == "1",
            ok: r == "ok",
            end,
        });
    }
    out
}

/// Polls the guest's console until `pred` finds what it wants in the `Q` lines.
fn wait_pings<T>(
    vm: &mut Vm,
    q: &Quiverd,
    what: &str,
    timeout: Duration,
    pred: impl Fn(&[Ping]) -> Option<T>,
) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(t) = pred(&pings(&vm.console_text())) {
            return Ok(t);
        }
        if Instant::now() > deadline {
            bail!(
                "{}: {what}: not within {timeout:?}\n{}\n--- quiverd log (condensed) ---\n{}",
                vm.name,
                vm.diagnostics(),
                condense(&q.log_text())
            );
        }
        ensure!(
            !vm.console_text().contains("QUIVER-RESULT "),
            "{}: the guest's ping loop ended early\n{}",
            vm.name,
            vm.diagnostics()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Index of the first of `n` consecutive good pings with carrier, at or after `from`.
fn resumed(p: &[Ping], from: usize, n: usize) -> Option<usize> {
    (from..p.len()).find(|&i| p.len() >= i + n && p[i..i + n].iter().all(|x| x.ok && x.carrier))
}

/// A namespace with a TAP uplink (`persist = true`) named `ifname` and its address.
struct Uplink {
    ns: NetnsGuard,
    ifname: String,
}

impl Uplink {
    fn config(&self) -> String {
        format!(
            "[[uplink]]\nname = \"up0\"\nkind = \"tap\"\nifname = \"{}\"\nnetns = \"{}\"\npersist = true\n\n",
            self.ifname,
            self.ns.name()
        )
    }

    fn configure(&self, host_ip: Ipv4Addr) -> Result<()> {
        for args in [
            vec![
                "ip".to_string(),
                "addr".into(),
                "add".into(),
                format!("{host_ip}/24"),
                "dev".into(),
                self.ifname.clone(),
            ],
            vec![
                "ip".into(),
                "link".into(),
                "set".into(),
                self.ifname.clone(),
                "up".into(),
            ],
        ] {
            let out = self.ns.exec(&args).with_context(|| format!("{args:?}"))?;
            ensure!(
                out.status.success(),
                "{args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// The TAP's addresses (`ip -br addr` without the name and operstate, which
    /// follows whether quiverd has the TAP open).
    fn addr(&self) -> String {
        self.ns
            .exec(&["ip", "-br", "addr", "show", "dev", &self.ifname])
            .map(|o| {
                let text = String::from_utf8_lossy(&o.stdout).to_string();
                text.split_whitespace()
                    .skip(2)
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default()
    }
}

impl Drop for Uplink {
    fn drop(&mut self) {
        // A persistent TAP outlives quiverd; remove it before the namespace goes.
        let _ = self.ns.exec(&["ip", "link", "del", &self.ifname]);
    }
}

/// quiverd with one VNIC `vm1` on the uplink, and the guest booted and pinging the
/// namespace host; returns once the first ping has succeeded.
struct Setup {
    vm: Vm,
    q: Quiverd,
    uplink: Uplink,
    qmp_path: PathBuf,
    booted: Instant,
}

fn setup(qemu: &Qemu, tag: &str, listener: Listener) -> Result<Setup> {
    let image = GuestImage::get()?;
    let uplink = Uplink {
        ns: NetnsGuard::new(unique_name("qln"))?,
        ifname: unique_name("ql"),
    };
    let mode = match listener {
        Listener::Quiverd => "",
        Listener::Qemu => "mode = \"client\"\n",
    };
    let cfg = format!(
        "{}[[vnic]]\nname = \"vm1\"\nsocket = \"@DIR@/vm1.sock\"\nmac = \"{MAC1}\"\nuplink = \"up0\"\n{mode}",
        uplink.config()
    );
    let q = Quiverd::start(tag, &cfg)?;
    let [host_ip, guest_ip] = test_subnet(213);
    uplink.configure(host_ip)?;
    let socket = q.dir.path().join("vm1.sock");
    let mut spec = VmSpec::new("vm1", &socket, MAC1);
    spec.ip = Some(format!("{guest_ip}/24"));
    spec.script = ping_loop_script(host_ip);
    let booted = Instant::now();
    let reconnect = qemu.reconnect_arg();
    let mut qmp_path = PathBuf::new();
    let vm = Vm::boot_edited(qemu, &image, &spec, |dir: &Path, args: &mut Vec<String>| {
        qmp_path = dir.join("qmp.sock");
        if listener == Listener::Qemu {
            for a in args.iter_mut() {
                if a.starts_with("socket,id=c0,") {
                    *a = a.replace(reconnect, "server=on,wait=off");
                }
            }
        }
        args.push("-qmp".into());
        args.push(format!("unix:{},server=on,wait=off", qmp_path.display()));
    })?;
    let mut s = Setup {
        vm,
        q,
        uplink,
        qmp_path,
        booted,
    };
    wait_pings(
        &mut s.vm,
        &s.q,
        "first good ping",
        FIRST_PING_TIMEOUT,
        |p| p.iter().any(|x| x.ok).then_some(()),
    )?;
    eprintln!(
        "{}: guest reached the namespace host {:?} after boot",
        qemu.version,
        s.booted.elapsed()
    );
    Ok(s)
}

/// Item 5: QMP set_link off, then on, while the guest pings the namespace host.
fn set_link_off_on(version: QemuVersion) -> Result<()> {
    let Some(qemu) = prerequisites(version) else {
        return Ok(());
    };
    let _serial = serial();
    let started = Instant::now();
    let mut s = setup(&qemu, "qemu-link", Listener::Quiverd)?;
    let mut qmp = Qmp::connect(&s.qmp_path, Duration::from_secs(10))?;

    let before = pings(&s.vm.console_text()).len();
    let off_at = Instant::now();
    qmp.set_link("n0", false)?;
    // Carrier gone and pings failing: the link is really down for the guest.
    let down = wait_pings(
        &mut s.vm,
        &s.q,
        "carrier down after set_link off",
        PHASE_TIMEOUT,
        |p| (before..p.len()).find(|&i| !p[i].carrier && !p[i].ok),
    )?;
    let down_after = off_at.elapsed();
    // A few more pings while down, all failing.
    let down_until = wait_pings(&mut s.vm, &s.q, "pings while down", PHASE_TIMEOUT, |p| {
        (p.len() >= down + 3).then_some(p.len())
    })?;
    let while_down = pings(&s.vm.console_text());
    ensure!(
        while_down[down..down_until].iter().all(|x| !x.ok),
        "a ping succeeded while the link was off: {:?}",
        &while_down[down..down_until]
    );

    let on_at = Instant::now();
    qmp.set_link("n0", true)?;
    let back = wait_pings(
        &mut s.vm,
        &s.q,
        "pings after set_link on",
        PHASE_TIMEOUT,
        |p| resumed(p, down_until, RESUMED_PINGS),
    )?;
    let back_after = on_at.elapsed();
    let p = pings(&s.vm.console_text());
    eprintln!(
        "{version}: set_link off: guest saw carrier 0 after {down_after:?} ({:.1} s guest time); \
         set_link on: pings back after {back_after:?} (guest: {:.1} s without a good ping); \
         test {:?}",
        p[down].uptime - p[before.saturating_sub(1)].uptime,
        p[back].uptime - p[down].uptime,
        started.elapsed()
    );
    Ok(())
}

/// Item 6: SIGKILL quiverd and restart it while the guest pings the namespace host.
/// The restarted quiverd's own counters prove the traffic goes through it; the
/// outage may be shorter than the guest's ping interval (a client-mode quiverd
/// reconnects at once), so a failed ping is reported, not required.
fn kill_restart(version: QemuVersion, listener: Listener) -> Result<()> {
    let Some(qemu) = prerequisites(version) else {
        return Ok(());
    };
    let _serial = serial();
    let started = Instant::now();
    let tag = match listener {
        Listener::Quiverd => "qemu-kill-srv",
        Listener::Qemu => "qemu-kill-cli",
    };
    let mut s = setup(&qemu, tag, listener)?;
    let addr_before = s.uplink.addr();

    let before = pings(&s.vm.console_text());
    let last_before = before.len().saturating_sub(1);
    let killed = Instant::now();
    s.q.kill_and_restart()?;
    let restarted = killed.elapsed();
    let addr_after = s.uplink.addr();
    ensure!(
        addr_after == addr_before,
        "the persistent TAP changed across the restart: {addr_before:?} → {addr_after:?}"
    );
    // A guest ping and its reply through the new process: traffic has resumed.
    let q = &s.q;
    q.wait_stats(
        "the guest's traffic through the restarted quiverd",
        PHASE_TIMEOUT,
        |v| vnic_total(v, "vm1", "rx_packets") > 0 && vnic_total(v, "vm1", "tx_packets") > 0,
    )
    .with_context(|| format!("{}\n{}", s.vm.diagnostics(), condense(&q.log_text())))?;
    let host_outage = killed.elapsed();
    let seen = s.vm.console_text().len();
    // Then good pings in a row, all finished after that moment.
    let back = wait_pings(
        &mut s.vm,
        &s.q,
        "pings resuming after the restart",
        PHASE_TIMEOUT,
        |p| {
            let first = p.iter().position(|x| x.end > seen)?;
            resumed(p, first, RESUMED_PINGS)
        },
    )?;
    let p = pings(&s.vm.console_text());
    let window = &p[last_before..=back];
    let good: Vec<f64> = window.iter().filter(|x| x.ok).map(|x| x.uptime).collect();
    let guest_gap = good.windows(2).map(|w| w[1] - w[0]).fold(0.0, f64::max);
    let failed = window.iter().filter(|x| !x.ok).count();
    let no_carrier = window.iter().filter(|x| !x.carrier).count();
    let s2 = s.q.stats()?;
    eprintln!(
        "{version}, {listener:?} listens: quiverd SIGKILLed and back in {restarted:?}; \
         outage {host_outage:?} host-side (SIGKILL until the new quiverd counted the \
         guest's frames both ways), {guest_gap:.2} s guest-side (longest gap between \
         good pings; ~0.3 s without an outage); {failed} pings failed, {no_carrier} \
         without carrier; new quiverd rx/tx {}/{}; TAP kept {addr_after:?}; test {:?}",
        vnic_total(&s2, "vm1", "rx_packets"),
        vnic_total(&s2, "vm1", "tx_packets"),
        started.elapsed()
    );
    Ok(())
}

#[test]
fn qemu72_set_link_off_on_guest_loses_and_regains_carrier() -> Result<()> {
    set_link_off_on(QemuVersion::V7_2)
}

#[test]
fn qemu72_quiverd_sigkill_restart_server_mode_traffic_resumes() -> Result<()> {
    kill_restart(QemuVersion::V7_2, Listener::Quiverd)
}

#[test]
fn qemu72_quiverd_sigkill_restart_client_mode_traffic_resumes() -> Result<()> {
    kill_restart(QemuVersion::V7_2, Listener::Qemu)
}

#[test]
fn qemu10_set_link_off_on_guest_loses_and_regains_carrier() -> Result<()> {
    set_link_off_on(QemuVersion::V10)
}

#[test]
fn qemu10_quiverd_sigkill_restart_server_mode_traffic_resumes() -> Result<()> {
    kill_restart(QemuVersion::V10, Listener::Quiverd)
}

#[test]
fn qemu10_quiverd_sigkill_restart_client_mode_traffic_resumes() -> Result<()> {
    kill_restart(QemuVersion::V10, Listener::Qemu)
}
