//! A testdriver guest reaches a namespace host through the TAP uplink: ARP and ICMP are
//! answered by the namespace's kernel. An access-VLAN VNIC's frames leave tagged (seen
//! by tcpdump in the namespace) and tagged frames from the namespace arrive untagged.

use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use quiver_integration::veth::ns_run;
use quiver_integration::{have, is_root, Quiverd};
use quiver_testdriver::{DriverConfig, Guest};
use quiver_uplink::netns::{unique_name, NetnsGuard};
use quiver_wire::{
    build_arp, build_icmpv4_echo, ArpOperation, ArpRepr, EtherType, EthernetFrame, Icmpv4Echo,
    Icmpv4Packet, Ipv4Endpoints, Ipv4Packet, MacAddr,
};

const MAC1: [u8; 6] = [0x52, 0x54, 0, 0, 0, 1];
const MAC2: [u8; 6] = [0x52, 0x54, 0, 0, 0, 2];
const WAIT: Duration = Duration::from_secs(5);

/// Addresses inside the test's own namespace, varied per process to keep parallel runs apart.
fn subnet() -> (Ipv4Addr, Ipv4Addr) {
    let x = u8::try_from(std::process::id() % 200).unwrap_or(0) + 20;
    (Ipv4Addr::new(10, 213, x, 1), Ipv4Addr::new(10, 213, x, 2))
}

struct Setup {
    ns: NetnsGuard,
    ifname: String,
    q: Quiverd,
}

fn setup(vlan_vnic: bool) -> Result<Setup> {
    let ns = NetnsGuard::new(unique_name("qns"))?;
    let ifname = unique_name("qt");
    let mut cfg = format!(
        "[[uplink]]\nname = \"up0\"\nkind = \"tap\"\nifname = \"{ifname}\"\nqueues = 2\nnetns = \"{}\"\n\n\
         [[vnic]]\nname = \"vm1\"\nsocket = \"@DIR@/vm1.sock\"\nmac = \"52:54:00:00:00:01\"\nuplink = \"up0\"\n",
        ns.name()
    );
    if vlan_vnic {
        cfg.push_str("\n[[vnic]]\nname = \"vm2\"\nsocket = \"@DIR@/vm2.sock\"\nmac = \"52:54:00:00:00:02\"\nuplink = \"up0\"\nvlan = 100\n");
    }
    let q = Quiverd::start("tap", &cfg)?;
    Ok(Setup { ns, ifname, q })
}

/// Receives frames until `pick` returns Some, or fails after WAIT.
fn recv_until<T>(g: &mut Guest, what: &str, mut pick: impl FnMut(&[u8]) -> Option<T>) -> Result<T> {
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        if let Some((_, f)) = g.recv_any(Duration::from_millis(200))? {
            if let Some(v) = pick(&f.data) {
                return Ok(v);
            }
        }
    }
    bail!("no {what} within {WAIT:?}")
}

#[test]
fn guest_reaches_a_namespace_host_with_arp_and_icmp() -> Result<()> {
    if !is_root() {
        eprintln!("skipped: needs root for namespaces and TAP");
        return Ok(());
    }
    let s = setup(false)?;
    let (host_ip, guest_ip) = subnet();
    ns_run(
        &s.ns,
        &[
            "ip",
            "addr",
            "add",
            &format!("{host_ip}/24"),
            "dev",
            &s.ifname,
        ],
    )?;
    ns_run(&s.ns, &["ip", "link", "set", &s.ifname, "up"])?;
    let mut g = Guest::connect(
        &s.q.dir.path().join("vm1.sock"),
        DriverConfig {
            mac: MAC1,
            ..DriverConfig::default()
        },
        WAIT,
    )?;

    // ARP: who has host_ip? The namespace's kernel answers.
    let mut frame = Vec::new();
    build_arp(
        &ArpRepr::request(MacAddr(MAC1), guest_ip, host_ip),
        None,
        &mut frame,
    )?;
    g.send(0, &frame)?;
    let host_mac = recv_until(&mut g, "ARP reply", |f| {
        let eth = EthernetFrame::new_checked(f).ok()?;
        if eth.ethertype() != EtherType::Arp {
            return None;
        }
        let arp = ArpRepr::parse_bytes(eth.payload()).ok()?;
        (arp.op == ArpOperation::Reply
            && arp.sender_ip == host_ip
            && arp.target_mac == MacAddr(MAC1))
        .then_some(arp.sender_mac)
    })?;

    // ICMP echo: the kernel replies.
    for seq in 0..3u16 {
        let ends = Ipv4Endpoints {
            src_mac: MacAddr(MAC1),
            dst_mac: host_mac,
            src_ip: guest_ip,
            dst_ip: host_ip,
        };
        let echo = Icmpv4Echo {
            request: true,
            ident: 0x5157,
            seq_no: seq,
            data: b"quiver ping payload",
        };
        build_icmpv4_echo(&ends, None, &echo, &mut frame)?;
        g.send(0, &frame)?;
        recv_until(&mut g, "ICMP echo reply", |f| {
            let eth = EthernetFrame::new_checked(f).ok()?;
            let ip = Ipv4Packet::new_checked(eth.payload()).ok()?;
            let icmp = Icmpv4Packet::new_checked(ip.payload()).ok()?;
            let e = Icmpv4Echo::parse(&icmp).ok()?;
            (!e.request && e.seq_no == seq && ip.src_addr() == host_ip).then_some(())
        })
        .with_context(|| format!("ping {seq}"))?;
    }
    let stats = s.q.stats()?;
    ensure!(
        stats["uplinks"]["up0"]["total"]["tx_packets"].as_u64() >= Some(4),
        "uplink tx: {stats:#}"
    );
    ensure!(
        stats["uplinks"]["up0"]["total"]["rx_packets"].as_u64() >= Some(4),
        "uplink rx: {stats:#}"
    );
    ensure!(
        stats["learned_macs"].as_u64() >= Some(1),
        "host MAC learned: {stats:#}"
    );
    Ok(())
}

#[test]
fn access_vlan_is_tagged_on_the_uplink_and_stripped_toward_the_guest() -> Result<()> {
    if !is_root() || !have("tcpdump") {
        eprintln!("skipped: needs root and tcpdump");
        return Ok(());
    }
    let s = setup(true)?;
    ns_run(&s.ns, &["ip", "link", "set", &s.ifname, "up"])?;
    let mut g2 = Guest::connect(
        &s.q.dir.path().join("vm2.sock"),
        DriverConfig {
            mac: MAC2,
            ..DriverConfig::default()
        },
        WAIT,
    )?;

    // Guest → uplink: captured in the namespace with the 802.1Q tag of VLAN 100.
    let cap = Command::new("ip")
        .args([
            "netns",
            "exec",
            s.ns.name(),
            "timeout",
            "8",
            "tcpdump",
            "-i",
            &s.ifname,
            "-e",
            "-n",
            "-l",
            "-c",
            "1",
        ])
        .arg("vlan 100 and ether src 52:54:00:00:00:02")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    std::thread::sleep(Duration::from_millis(1500)); // tcpdump attaches its filter
    let (host_ip, guest_ip) = subnet();
    let mut frame = Vec::new();
    build_arp(
        &ArpRepr::request(MacAddr(MAC2), guest_ip, host_ip),
        None,
        &mut frame,
    )?;
    for _ in 0..5 {
        g2.send(0, &frame)?;
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = cap.wait_with_output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(
        text.contains("vlan 100"),
        "no VLAN 100 frame captured: {text} {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Uplink → guest: a frame tagged 100 from the namespace arrives untagged.
    let script = format!(
        "import socket\ns=socket.socket(socket.AF_PACKET,socket.SOCK_RAW)\ns.bind(('{}',0))\n\
         f=bytes([0x52,0x54,0,0,0,2, 0x02,0,0,0,0,0x77, 0x81,0x00,0x00,100, 0x88,0xb5])+b'quiver-vlan-test'+bytes(40)\n\
         [s.send(f) for _ in range(3)]\n",
        s.ifname
    );
    ns_run(&s.ns, &["python3", "-c", &script])?;
    recv_until(&mut g2, "untagged frame from VLAN 100", |f| {
        (f.len() >= 14 && f[6..12] == [0x02, 0, 0, 0, 0, 0x77]).then(|| f.to_vec())
    })
    .and_then(|f| {
        ensure!(
            f[12..14] == [0x88, 0xb5],
            "tag not stripped: {:02x?}",
            &f[..18]
        );
        ensure!(&f[14..30] == b"quiver-vlan-test", "payload moved");
        Ok(())
    })?;
    Ok(())
}
