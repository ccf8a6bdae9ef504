//! DPDK virtio-user against a QEMU guest through quiverd (issue 3, "DPDK virtio-user"),
//! with QEMU 7.2 and 10.0.
//!
//! One guest (VNIC `vm1`) pings an address in a loop. On the other side is `dpdk-testpmd`
//! with one `net_virtio_user` port (`queues=2,cq=1`) in `icmpecho` forwarding mode,
//! which answers ARP requests and ICMP echo requests itself: the guest's pings succeed
//! only if frames flow both ways between testpmd and the guest. testpmd is restarted
//! for every row of the matrix: queue_size 256 and 1024 × mrg_rxbuf 0/1 × in_order 0/1
//! against VNIC `vm2` (quiverd listens), then with `server=1` against VNIC `vm3`
//! (`mode = "client"`: quiverd connects). Each row must bring 3 good pings in a row,
//! and testpmd and quiverd must both count frames on the port. The guest stays up the
//! whole time, so the rows also show a VNIC's front-end going and coming back.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use quiver_integration::pingloop::{ping_loop_script, pings, resumed, wait_pings};
use quiver_integration::qemu::{
    prerequisites, serial, test_subnet, GuestImage, QemuVersion, Vm, VmSpec,
};
use quiver_integration::testpmd::{self, forward_rx_packets, Port, Testpmd};
use quiver_integration::{vnic_total, Quiverd};

const MAC1: &str = "52:54:00:00:00:01";
const MAC2: &str = "52:54:00:00:00:02";
const MAC3: &str = "52:54:00:00:00:03";
/// Boot until the guest's ping loop runs (it fails until testpmd answers).
const BOOT_TIMEOUT: Duration = Duration::from_secs(300);
/// testpmd start-up plus good pings, per row.
const ROW_TIMEOUT: Duration = Duration::from_secs(60);
/// Good pings in a row that make a row pass.
const GOOD_PINGS: usize = 3;

/// One testpmd run: its port's devargs and the VNIC it attaches to.
#[derive(Clone, Copy, Debug)]
struct Row {
    vnic: &'static str,
    mac: &'static str,
    queue_size: u16,
    mrg_rxbuf: bool,
    in_order: bool,
    /// testpmd listens (`server=1`), quiverd connects.
    server: bool,
}

fn rows() -> Vec<Row> {
    let mut rows = Vec::new();
    for queue_size in [256, 1024] {
        for mrg_rxbuf in [false, true] {
            for in_order in [false, true] {
                rows.push(Row {
                    vnic: "vm2",
                    mac: MAC2,
                    queue_size,
                    mrg_rxbuf,
                    in_order,
                    server: false,
                });
            }
        }
    }
    rows.push(Row {
        vnic: "vm3",
        mac: MAC3,
        queue_size: 1024,
        mrg_rxbuf: true,
        in_order: false,
        server: true,
    });
    rows
}

fn vnic(name: &str, mac: &str, extra: &str) -> String {
    format!(
        "[[vnic]]\nname = \"{name}\"\nsocket = \"@DIR@/{name}.sock\"\nmac = \"{mac}\"\n{extra}\n"
    )
}

fn guest_pings_testpmd(version: QemuVersion) -> Result<()> {
    let Some(qemu) = prerequisites(version) else {
        return Ok(());
    };
    if !testpmd::available()? {
        return Ok(());
    }
    let _serial = serial();
    let image = GuestImage::get()?;
    let cfg = format!(
        "{}{}{}",
        vnic("vm1", MAC1, ""),
        vnic("vm2", MAC2, "queue_pairs = 2\n"),
        vnic("vm3", MAC3, "queue_pairs = 2\nmode = \"client\"\n"),
    );
    let q = Quiverd::start("testpmd-guest", &cfg)?;
    let [guest_ip, peer_ip]: [Ipv4Addr; 2] = test_subnet(219);
    let mut spec = VmSpec::new(&q.config, "vm1");
    spec.ip = Some(format!("{guest_ip}/24"));
    // testpmd's MAC changes between vm2 and vm3: forget it before every ping.
    spec.script = ping_loop_script(peer_ip, true);
    let started = Instant::now();
    let mut vm = Vm::boot(&qemu, &image, &spec)?;
    wait_pings(&mut vm, &q, "the guest's ping loop", BOOT_TIMEOUT, |p| {
        (!p.is_empty()).then_some(())
    })?;
    eprintln!("{version}: guest up after {:?}", started.elapsed());

    for row in rows() {
        let row_started = Instant::now();
        let port = Port {
            queues: 2,
            queue_size: row.queue_size,
            mrg_rxbuf: row.mrg_rxbuf,
            in_order: row.in_order,
            cq: true,
            server: row.server,
            ..Port::new(&q.dir.path().join(format!("{}.sock", row.vnic)), row.mac)
        };
        let before = q.stats()?;
        let seen = vm.console_text().len();
        let mut tp = Testpmd::start(
            q.dir.path(),
            &[port],
            &[
                "--rxq=2".into(),
                "--txq=2".into(),
                "--nb-cores=1".into(),
                "--forward-mode=icmpecho".into(),
                "--auto-start".into(),
            ],
        )?;
        let good = wait_pings(&mut vm, &q, &format!("{row:?}: pings"), ROW_TIMEOUT, |p| {
            let first = p.iter().position(|x| x.end > seen)?;
            resumed(p, first, GOOD_PINGS)
        });
        let good = match good {
            Ok(i) => i,
            Err(e) => {
                tp.check_running()?;
                return Err(e.context(format!("--- testpmd ---\n{}", tp.log_text())));
            }
        };
        let output = tp.finish()?;
        let after = q.stats()?;
        let delta = |f: &str| {
            vnic_total(&after, row.vnic, f).saturating_sub(vnic_total(&before, row.vnic, f))
        };
        let (rx, tx) = (delta("rx_packets"), delta("tx_packets"));
        let tp_rx = forward_rx_packets(&output);
        let p = pings(&vm.console_text());
        eprintln!(
            "{version}: {row:?}: {GOOD_PINGS} good pings after {:?} (guest uptime {:.1} s); \
             quiverd {} rx {rx} tx {tx}; testpmd (port, RX-packets) {tp_rx:?}",
            row_started.elapsed(),
            p[good].uptime,
            row.vnic
        );
        ensure!(
            rx >= GOOD_PINGS as u64 && tx >= GOOD_PINGS as u64,
            "{row:?}: quiverd counted rx {rx} tx {tx} on {}\n{output}",
            row.vnic
        );
        ensure!(
            tp_rx
                .iter()
                .any(|(port, n)| *port == 0 && *n >= GOOD_PINGS as u64),
            "{row:?}: testpmd RX-packets {tp_rx:?}\n{output}"
        );
    }
    eprintln!(
        "{version}: every testpmd row exchanged frames with the guest; test {:?}",
        started.elapsed()
    );
    Ok(())
}

#[test]
fn qemu72_guest_and_testpmd_exchange_frames() -> Result<()> {
    guest_pings_testpmd(QemuVersion::V7_2)
}

#[test]
fn qemu10_guest_and_testpmd_exchange_frames() -> Result<()> {
    guest_pings_testpmd(QemuVersion::V10)
}
