//! Real guests (issue 3, item 1): Linux's virtio_net driver in QEMU guests attached to
//! quiverd VNICs. Two guests ping each other through quiverd, and a guest pings a
//! namespace host through a TAP uplink; each against QEMU 7.2 and QEMU 10.0.
//!
//! Guests boot the `vm-images/` image (built on first use, then cached). Under TCG a boot
//! takes 15–30 s and two guests fill both cores of a small CI machine, so the tests take
//! turns (`SERIAL`). QEMU 10.0 is skipped, with a message, when `scripts/setup-vm.sh` has
//! not unpacked it.

use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use quiver_integration::nshost::NsHost;
use quiver_integration::qemu::{
    condense, ping_script, prerequisites, serial, test_subnet, wait_echoes_script, GuestImage,
    QemuVersion, Vm, VmSpec,
};
use quiver_integration::{vnic_total, Quiverd};

const MAC1: &str = "52:54:00:00:00:01";
const MAC2: &str = "52:54:00:00:00:02";
/// Boot plus script, under TCG on a busy machine.
const GUEST_TIMEOUT: Duration = Duration::from_secs(300);
/// How long a guest keeps retrying to reach its peer (which may still be booting).
const REACH_SECS: u32 = 45;
const PINGS: u32 = 3;

fn vnic(name: &str, mac: &str, uplink: bool) -> String {
    let uplink = if uplink { "uplink = \"up0\"\n" } else { "" };
    format!(
        "[[vnic]]\nname = \"{name}\"\nsocket = \"@DIR@/{name}.sock\"\nmac = \"{mac}\"\n{uplink}\n"
    )
}

/// Two guests on two VNICs ping each other; each waits until the other's pings have
/// arrived before it powers off.
fn guests_ping_each_other(version: QemuVersion) -> Result<()> {
    let Some(qemu) = prerequisites(version) else {
        return Ok(());
    };
    let _serial = serial();
    let image = GuestImage::get()?;
    let cfg = format!("{}{}", vnic("vm1", MAC1, false), vnic("vm2", MAC2, false));
    let q = Quiverd::start("qemu-ping", &cfg)?;
    let ips = test_subnet(215);
    let started = Instant::now();
    let mut vms = Vec::new();
    for (i, name) in ["vm1", "vm2"].into_iter().enumerate() {
        let peer = ips[1 - i].to_string();
        let mut spec = VmSpec::new(&q.config, name);
        spec.ip = Some(format!("{}/24", ips[i]));
        spec.script = format!(
            "{}{}",
            ping_script(&peer, PINGS, REACH_SECS),
            wait_echoes_script(PINGS, REACH_SECS)
        );
        vms.push(Vm::boot(&qemu, &image, &spec)?);
    }
    for vm in &mut vms {
        let rc = vm.wait_result(GUEST_TIMEOUT)?;
        ensure!(
            rc == 0,
            "{}: script failed ({rc})\n{}\n--- quiverd log (condensed) ---\n{}",
            vm.name,
            vm.diagnostics(),
            condense(&q.log_text())
        );
    }
    eprintln!(
        "{version}: two guests pinged each other in {:?}",
        started.elapsed()
    );
    let s = q.stats()?;
    for name in ["vm1", "vm2"] {
        ensure!(
            vnic_total(&s, name, "rx_packets") >= u64::from(PINGS) * 2
                && vnic_total(&s, name, "tx_packets") >= u64::from(PINGS) * 2,
            "{name}: quiverd counted too few frames: {:#}",
            s["vnics"][name]
        );
    }
    Ok(())
}

/// A guest on a VNIC with a TAP uplink in the test's namespace pings the namespace's
/// kernel.
fn guest_pings_namespace_host(version: QemuVersion) -> Result<()> {
    let Some(qemu) = prerequisites(version) else {
        return Ok(());
    };
    let _serial = serial();
    let image = GuestImage::get()?;
    let host = NsHost::new("qt")?;
    let cfg = format!("{}{}", host.uplink_config(), vnic("vm1", MAC1, true));
    let q = Quiverd::start("qemu-ns", &cfg)?;
    let [host_ip, guest_ip] = test_subnet(214);
    host.configure(host_ip)?;
    let started = Instant::now();
    let mut spec = VmSpec::new(&q.config, "vm1");
    spec.ip = Some(format!("{guest_ip}/24"));
    spec.script = ping_script(&host_ip.to_string(), PINGS, REACH_SECS);
    let mut vm = Vm::boot(&qemu, &image, &spec)?;
    let rc = vm.wait_result(GUEST_TIMEOUT)?;
    ensure!(
        rc == 0,
        "{}: script failed ({rc})\n{}\n--- quiverd log (condensed) ---\n{}",
        vm.name,
        vm.diagnostics(),
        condense(&q.log_text())
    );
    eprintln!(
        "{version}: guest pinged the namespace host in {:?}",
        started.elapsed()
    );
    let neigh = host.run(&["ip", "neigh", "show", "dev", &host.ifname])?;
    ensure!(
        neigh.contains(MAC1),
        "the namespace did not learn the guest's MAC: {neigh}"
    );
    Ok(())
}

#[test]
fn qemu72_guests_ping_each_other() -> Result<()> {
    guests_ping_each_other(QemuVersion::V7_2)
}

#[test]
fn qemu10_guests_ping_each_other() -> Result<()> {
    guests_ping_each_other(QemuVersion::V10)
}

#[test]
fn qemu72_guest_pings_namespace_host() -> Result<()> {
    guest_pings_namespace_host(QemuVersion::V7_2)
}

#[test]
fn qemu10_guest_pings_namespace_host() -> Result<()> {
    guest_pings_namespace_host(QemuVersion::V10)
}
