//! Real guests carrying real traffic (issue 3, items 2 and 3), against QEMU 7.2 and 10.0.
//!
//! - Offloads: iperf3 TCP in both directions between two guests through quiverd, and
//!   between a guest and a namespace host through a TAP uplink. The guests negotiated
//!   HOST_TSO4/6 (`ethtool -k eth0` shows `tx-tcp-segmentation: on`), so they hand
//!   quiverd GSO frames with partial checksums; no receiver may count a checksum error
//!   (`InCsumErrors` of /proc/net/snmp, Tcp and Udp). Throughput lands in the test output.
//! - MTU 9000: VNIC `mtu = 9000`, QEMU `host_mtu=9000`, guest eth0 at 9000; 8972-byte
//!   pings (9000-byte IPv4 packets) pass unfragmented. Busybox ping has no `-M do`, but
//!   Linux sets DF on pings that fit the route's MTU and fragments locally otherwise, so
//!   the guests check `FragCreates`/`ReasmReqds` stay 0 and eth0's packet counters grow
//!   by about one frame per ping (a 1500-byte path would need 7 fragments each).
//!
//! Same fixture and serial group as `qemu_ping.rs`: under TCG two guests fill two cores.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use quiver_integration::nshost::NsHost;
use quiver_integration::qemu::{
    condense, ping_script, prerequisites, serial, test_subnet, wait_echoes_script, GuestImage,
    QemuVersion, Vm, VmSpec,
};
use quiver_integration::{have, vnic_all_drops, vnic_total, Quiverd};

const MAC1: &str = "52:54:00:00:00:01";
const MAC2: &str = "52:54:00:00:00:02";
/// Boot plus script, under TCG on a busy machine.
const GUEST_TIMEOUT: Duration = Duration::from_secs(300);
/// How long a guest keeps retrying to reach its peer (which may still be booting).
const REACH_SECS: u32 = 45;
/// Seconds of each iperf3 run: enough for a TCP window to open, short under TCG.
const IPERF_SECS: u32 = 3;
/// Large pings each way in the MTU test.
const BIG_PINGS: u32 = 3;
/// ICMP payload that makes a 9000-byte IPv4 packet (20 IP + 8 ICMP header bytes).
const BIG_PAYLOAD: u32 = 9000 - 28;

fn vnic(name: &str, mac: &str, extra: &str) -> String {
    format!(
        "[[vnic]]\nname = \"{name}\"\nsocket = \"@DIR@/{name}.sock\"\nmac = \"{mac}\"\n{extra}\n"
    )
}

/// Guest shell: `snmp PROTO FIELD` prints a counter of /proc/net/snmp.
const SNMP_FN: &str = "snmp() { awk -v p=\"$1:\" -v f=\"$2\" '$1 == p { if (!h) { for (i = 2; i <= NF; i++) if ($i == f) c = i; h = 1 } else print $c }' /proc/net/snmp; }\n";

/// Guest shell: the NIC negotiated TSO (the device offered HOST_TSO4) and no TCP or UDP
/// segment arrived with a bad checksum; exits 3 or 4 otherwise.
fn offload_checks_script() -> String {
    format!(
        "{SNMP_FN}\
         ethtool -k eth0 | grep -E 'checksumming|segmentation' | sed 's/^/ETHTOOL /'\n\
         ethtool -k eth0 | grep -q 'tx-tcp-segmentation: on' || {{ echo 'TSO not negotiated'; exit 3; }}\n\
         bad=0\n\
         for p in Tcp Udp; do n=$(snmp $p InCsumErrors); echo \"CSUM $p InCsumErrors=$n\"; [ \"$n\" = 0 ] || bad=1; done\n\
         [ $bad = 0 ] || exit 4\n"
    )
}

/// Guest shell: `iperf TAG ARGS...` runs `iperf3 -f m ARGS...`, retrying while the server
/// is not listening yet (it may be restarting between runs), and prints iperf3's output
/// with each line prefixed `IPERF-TAG `; returns iperf3's exit code.
const IPERF_FN: &str = "iperf() {\n  tag=$1; shift; i=0\n  while :; do\n    iperf3 -f m \"$@\" >/tmp/iperf.out 2>&1; r=$?\n    [ $r = 0 ] && break\n    grep -qE 'unable to connect|refused' /tmp/iperf.out || break\n    i=$((i + 1)); [ $i -ge 30 ] && break\n    sleep 1\n  done\n  sed \"s/^/IPERF-$tag /\" /tmp/iperf.out\n  return $r\n}\n";

/// Guest shell: iperf3 client to `server`, forward (guest sends) then reverse.
fn iperf_client_script(server: &str) -> String {
    format!(
        "{}{IPERF_FN}\
         iperf fwd -c {server} -t {IPERF_SECS} || exit 1\n\
         iperf rev -c {server} -t {IPERF_SECS} -R || exit 2\n",
        ping_script(server, 1, REACH_SECS)
    )
}

/// One iperf3 summary line of the console: `(role, Mbit/s, rest of the line)`.
fn iperf_summaries(console: &str, tag: &str) -> Vec<(String, f64, String)> {
    let prefix = format!("IPERF-{tag} ");
    console
        .lines()
        .filter_map(|l| l.trim_end_matches('\r').strip_prefix(&prefix))
        .filter_map(|l| {
            let role = l.split_whitespace().last()?;
            if role != "sender" && role != "receiver" {
                return None;
            }
            let words: Vec<&str> = l.split_whitespace().collect();
            let at = words.iter().position(|w| *w == "Mbits/sec")?;
            let rate = words.get(at.checked_sub(1)?)?.parse().ok()?;
            Some((role.to_string(), rate, l.trim().to_string()))
        })
        .collect()
}

/// Prints the sender and receiver summaries of the `fwd` and `rev` runs in `vm`'s
/// console and fails when one is missing.
fn report_iperf(what: &str, vm: &Vm) -> Result<()> {
    let console = vm.console_text();
    for (tag, dir) in [("fwd", "client sends"), ("rev", "server sends (-R)")] {
        let s = iperf_summaries(&console, tag);
        ensure!(
            s.iter().any(|(r, _, _)| r == "sender") && s.iter().any(|(r, _, _)| r == "receiver"),
            "{}: no iperf3 {tag} summary\n{}",
            vm.name,
            vm.diagnostics()
        );
        for (role, rate, line) in s {
            eprintln!("{what}, {dir}: {role} {rate} Mbit/s ({line})");
        }
    }
    Ok(())
}

fn ensure_ok(vm: &mut Vm, q: &Quiverd) -> Result<()> {
    let rc = vm.wait_result(GUEST_TIMEOUT)?;
    ensure!(
        rc == 0,
        "{}: script failed ({rc})\n{}\n--- quiverd log (condensed) ---\n{}",
        vm.name,
        vm.diagnostics(),
        condense(&q.log_text())
    );
    Ok(())
}

/// Two guests: vm1 serves two iperf3 runs (`-s -1` twice), vm2 runs one forward and
/// one reverse; both then check offloads and checksum counters.
fn guests_iperf3(version: QemuVersion) -> Result<()> {
    let Some(qemu) = prerequisites(version) else {
        return Ok(());
    };
    let _serial = serial();
    let image = GuestImage::get()?;
    let cfg = format!("{}{}", vnic("vm1", MAC1, ""), vnic("vm2", MAC2, ""));
    let q = Quiverd::start("qemu-iperf", &cfg)?;
    let [ip1, ip2] = test_subnet(216);
    let started = Instant::now();
    let mut server = VmSpec::new(&q.config, "vm1");
    server.ip = Some(format!("{ip1}/24"));
    server.script = format!(
        "for run in 1 2; do timeout 240 iperf3 -s -1 >/tmp/s 2>&1 || {{ cat /tmp/s; exit 1; }}; done\n{}",
        offload_checks_script()
    );
    let mut client = VmSpec::new(&q.config, "vm2");
    client.ip = Some(format!("{ip2}/24"));
    client.script = format!(
        "{}{}",
        iperf_client_script(&ip1.to_string()),
        offload_checks_script()
    );
    let mut vms = vec![
        Vm::boot(&qemu, &image, &server)?,
        Vm::boot(&qemu, &image, &client)?,
    ];
    for vm in &mut vms {
        ensure_ok(vm, &q)?;
    }
    eprintln!(
        "{version}: iperf3 both ways between two guests in {:?}",
        started.elapsed()
    );
    report_iperf(&format!("{version} guest-guest"), &vms[1])?;
    let s = q.stats()?;
    for name in ["vm1", "vm2"] {
        eprintln!(
            "{version}: quiverd {name}: rx_packets {} tx_packets {} drops {} {}",
            vnic_total(&s, name, "rx_packets"),
            vnic_total(&s, name, "tx_packets"),
            vnic_all_drops(&s, name),
            s["vnics"][name]["total"]["drops"]
        );
    }
    Ok(())
}

/// The counter `field` of `proto` in a /proc/net/snmp text.
fn snmp_counter(snmp: &str, proto: &str, field: &str) -> Option<u64> {
    let prefix = format!("{proto}:");
    let mut lines = snmp.lines().filter(|l| l.starts_with(&prefix));
    let names: Vec<&str> = lines.next()?.split_whitespace().collect();
    let values: Vec<&str> = lines.next()?.split_whitespace().collect();
    let at = names.iter().position(|n| *n == field)?;
    values.get(at)?.parse().ok()
}

/// A guest on a VNIC with a TAP uplink runs iperf3 against a server in the test's
/// namespace, both directions; guest and namespace count no checksum errors.
fn guest_iperf3_namespace_host(version: QemuVersion) -> Result<()> {
    let Some(qemu) = prerequisites(version) else {
        return Ok(());
    };
    if !have("iperf3") {
        eprintln!("skipped: iperf3 not installed on the host");
        return Ok(());
    }
    let _serial = serial();
    let image = GuestImage::get()?;
    let host = NsHost::new("qt")?;
    let cfg = format!(
        "{}{}",
        host.uplink_config(),
        vnic("vm1", MAC1, "uplink = \"up0\"\n")
    );
    let q = Quiverd::start("qemu-iperf-ns", &cfg)?;
    let [host_ip, guest_ip] = test_subnet(217);
    host.configure(host_ip)?;
    let server_log = q.dir.path().join("iperf3-server.log");
    let _server = host.spawn(&["iperf3", "-s", "-B", &host_ip.to_string()], &server_log)?;
    let started = Instant::now();
    let mut spec = VmSpec::new(&q.config, "vm1");
    spec.ip = Some(format!("{guest_ip}/24"));
    spec.script = format!(
        "{}{}",
        iperf_client_script(&host_ip.to_string()),
        offload_checks_script()
    );
    let mut vm = Vm::boot(&qemu, &image, &spec)?;
    ensure_ok(&mut vm, &q).map_err(|e| {
        let server = std::fs::read_to_string(&server_log).unwrap_or_default();
        e.context(format!("--- namespace iperf3 server ---\n{server}"))
    })?;
    eprintln!(
        "{version}: iperf3 both ways between a guest and the namespace host in {:?}",
        started.elapsed()
    );
    report_iperf(&format!("{version} guest-namespace"), &vm)?;
    let snmp = host.run(&["cat", "/proc/net/snmp"])?;
    for proto in ["Tcp", "Udp"] {
        let n = snmp_counter(&snmp, proto, "InCsumErrors")
            .with_context(|| format!("no {proto} InCsumErrors in the namespace's snmp"))?;
        eprintln!("{version}: namespace {proto} InCsumErrors={n}");
        ensure!(n == 0, "the namespace counted {n} {proto} checksum errors");
    }
    let s = q.stats()?;
    eprintln!(
        "{version}: quiverd vm1: rx_packets {} tx_packets {} drops {} {}",
        vnic_total(&s, "vm1", "rx_packets"),
        vnic_total(&s, "vm1", "tx_packets"),
        vnic_all_drops(&s, "vm1"),
        s["vnics"]["vm1"]["total"]["drops"]
    );
    Ok(())
}

/// Guest shell for the MTU test: reach the peer with small pings, then send
/// `BIG_PINGS` 9000-byte pings, wait for the peer's, and check nothing was fragmented.
fn big_ping_script(peer: &str) -> String {
    // In the window: our pings and their replies, the peer's pings and our replies, and
    // a few stray small frames (ARP, IPv6 ND/MLD, a late small ping; 11 frames seen for
    // 6 big ones). Fragmented at 1500, each big packet would be 7 frames (42 in all).
    // The peer's first big ping may arrive before the baseline is read, so the byte
    // check counts only the replies to our own big pings.
    let max_frames = 2 * BIG_PINGS + 10;
    format!(
        "{SNMP_FN}\
         [ \"$(cat /sys/class/net/eth0/mtu)\" = 9000 ] || {{ echo \"eth0 mtu $(cat /sys/class/net/eth0/mtu)\"; exit 5; }}\n\
         {reach}\
         st() {{ cat /sys/class/net/eth0/statistics/$1; }}\n\
         tx0=$(st tx_packets); rx0=$(st rx_packets); rxb0=$(st rx_bytes)\n\
         ping -c {BIG_PINGS} -s {BIG_PAYLOAD} -W 5 {peer} || exit 1\n\
         {echoes}\
         tx=$(($(st tx_packets) - tx0)); rx=$(($(st rx_packets) - rx0)); rxb=$(($(st rx_bytes) - rxb0))\n\
         fc=$(snmp Ip FragCreates); rr=$(snmp Ip ReasmReqds)\n\
         echo \"BIGPING tx_frames=$tx rx_frames=$rx rx_bytes=$rxb FragCreates=$fc ReasmReqds=$rr\"\n\
         ip -s link show eth0\n\
         [ \"$fc\" = 0 ] && [ \"$rr\" = 0 ] || exit 6\n\
         [ $tx -le {max_frames} ] && [ $rx -le {max_frames} ] || exit 7\n\
         [ $rxb -ge $(({BIG_PINGS} * 9000)) ] || exit 8\n",
        reach = ping_script(peer, 1, REACH_SECS),
        // The peer's one small and BIG_PINGS large pings.
        echoes = wait_echoes_script(BIG_PINGS + 1, REACH_SECS),
    )
}

/// Two guests with MTU 9000 end to end ping each other with 9000-byte packets.
fn mtu9000_big_pings(version: QemuVersion) -> Result<()> {
    let Some(qemu) = prerequisites(version) else {
        return Ok(());
    };
    let _serial = serial();
    let image = GuestImage::get()?;
    let cfg = format!(
        "{}{}",
        vnic("vm1", MAC1, "mtu = 9000\n"),
        vnic("vm2", MAC2, "mtu = 9000\n")
    );
    let q = Quiverd::start("qemu-mtu", &cfg)?;
    let ips = test_subnet(218);
    let started = Instant::now();
    let mut vms = Vec::new();
    for (i, name) in ["vm1", "vm2"].into_iter().enumerate() {
        let mut spec = VmSpec::new(&q.config, name);
        spec.ip = Some(format!("{}/24", ips[i]));
        // host_mtu=9000 on the -device and `ip link set eth0 mtu 9000` in the guest.
        spec.mtu = Some(9000);
        spec.script = big_ping_script(&ips[1 - i].to_string());
        vms.push(Vm::boot(&qemu, &image, &spec)?);
    }
    for vm in &mut vms {
        ensure_ok(vm, &q)?;
    }
    eprintln!(
        "{version}: 9000-byte pings both ways in {:?}",
        started.elapsed()
    );
    for vm in &vms {
        if let Some(line) = vm
            .console_text()
            .lines()
            .find(|l| l.starts_with("BIGPING "))
        {
            eprintln!("{version}: {}: {}", vm.name, line.trim_end());
        }
    }
    let s = q.stats()?;
    for name in ["vm1", "vm2"] {
        eprintln!(
            "{version}: quiverd {name}: rx_packets {} rx_bytes {} drops {} {}",
            vnic_total(&s, name, "rx_packets"),
            vnic_total(&s, name, "rx_bytes"),
            vnic_all_drops(&s, name),
            s["vnics"][name]["total"]["drops"]
        );
    }
    Ok(())
}

#[test]
fn qemu72_guests_iperf3_both_directions() -> Result<()> {
    guests_iperf3(QemuVersion::V7_2)
}

#[test]
fn qemu10_guests_iperf3_both_directions() -> Result<()> {
    guests_iperf3(QemuVersion::V10)
}

#[test]
fn qemu72_guest_iperf3_namespace_host() -> Result<()> {
    guest_iperf3_namespace_host(QemuVersion::V7_2)
}

#[test]
fn qemu10_guest_iperf3_namespace_host() -> Result<()> {
    guest_iperf3_namespace_host(QemuVersion::V10)
}

#[test]
fn qemu72_mtu9000_big_pings_unfragmented() -> Result<()> {
    mtu9000_big_pings(QemuVersion::V7_2)
}

#[test]
fn qemu10_mtu9000_big_pings_unfragmented() -> Result<()> {
    mtu9000_big_pings(QemuVersion::V10)
}

#[test]
fn iperf3_summaries_are_parsed() {
    let console = "IPERF-fwd [  5]   0.00-3.00   sec  45.2 MBytes   126 Mbits/sec    2             sender\n\
                   IPERF-fwd [  5]   0.00-3.04   sec  44.9 MBytes   124 Mbits/sec                  receiver\n\
                   IPERF-rev [  5]   0.00-3.00   sec  45.2 MBytes   126 Mbits/sec  sender\n";
    let s = iperf_summaries(console, "fwd");
    assert_eq!(s.len(), 2);
    assert_eq!((s[0].0.as_str(), s[0].1), ("sender", 126.0));
    assert_eq!((s[1].0.as_str(), s[1].1), ("receiver", 124.0));
}
