//! The network around quiverd for one measurement: namespaces, the uplink's interface
//! (a TAP quiverd creates, or one end of a 4-queue veth pair), quiverd's configuration,
//! and the kernel's counters of those interfaces.
//!
//! Everything lives in namespaces named by `unique_name` and deleted by their guards,
//! so a run that fails (or is interrupted) half-way leaves nothing behind.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use quiver_uplink::netns::{unique_name, NetnsGuard};
use serde_json::Value;

use crate::quiverd::Quiverd;

/// The uplink kinds measured.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub enum Kind {
    Tap,
    #[value(name = "af_packet", alias = "af-packet")]
    AfPacket,
    #[value(name = "af_xdp", alias = "af-xdp")]
    AfXdp,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Tap => "tap",
            Kind::AfPacket => "af_packet",
            Kind::AfXdp => "af_xdp",
        }
    }
}

/// The receiving VNIC's MAC: every frame the sender makes goes to it.
pub const VNIC_MAC: [u8; 6] = [0x52, 0x54, 0, 0, 0, 1];

/// What a measurement needs to know about the network it built.
pub struct Topo {
    // Field order is drop order: quiverd closes its sockets (and the TAP) before the
    // namespaces, and with them the veth pair, go.
    pub quiverd: Quiverd,
    _namespaces: Vec<NetnsGuard>,
    /// Where the sender's packet socket lives and the interface it is bound to.
    pub send_ns: String,
    pub send_dev: String,
    /// Interfaces whose drop counters are read: (namespace, name).
    pub devs: Vec<(String, String)>,
    /// Which of `devs` is the namespace's side (the TAP, the far veth end): its
    /// rx_packets count what quiverd sent to the namespace.
    pub far: usize,
    /// The VNIC's vhost-user socket.
    pub socket: PathBuf,
}

/// How quiverd is started for a measurement.
pub struct QuiverdSpec<'a> {
    pub program: &'a Path,
    pub cpu: usize,
    /// Run directory: configuration, stats file, log.
    pub dir: &'a Path,
    /// Directory of the vhost-user socket (short path, /tmp).
    pub sock_dir: &'a Path,
    pub queues: usize,
    /// Dedicated rings the VNIC asks for (`rings = K`; 0 = the shared group).
    pub rings: u16,
    /// The VNIC's `busy_poll_us` (0 = off).
    pub busy_poll_us: u32,
}

pub fn ns_run(ns: &str, args: &[&str]) -> Result<String> {
    let out = quiver_uplink::netns::exec(ns, args)
        .with_context(|| format!("ip netns exec {ns} {args:?}"))?;
    ensure!(
        out.status.success(),
        "ip netns exec {ns} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A namespace without IPv6 (no router solicitations or MLD on the measured path).
fn quiet_namespace(prefix: &str) -> Result<NetnsGuard> {
    let ns = NetnsGuard::new(unique_name(prefix))
        .with_context(|| format!("creating a network namespace ({prefix}...); run as root"))?;
    ns_run(
        ns.name(),
        &[
            "sysctl",
            "-qw",
            "net.ipv6.conf.all.disable_ipv6=1",
            "net.ipv6.conf.default.disable_ipv6=1",
        ],
    )?;
    Ok(ns)
}

pub fn config(kind: Kind, ifname: &str, ns: &str, spec: &QuiverdSpec, socket: &Path) -> String {
    let mut cfg = format!(
        "[[uplink]]\nname = \"up0\"\nkind = \"{}\"\nifname = \"{ifname}\"\nqueues = {}\nnetns = \"{ns}\"\n\n\
         [[vnic]]\nname = \"vm1\"\nsocket = \"{}\"\nmac = \"52:54:00:00:00:01\"\nuplink = \"up0\"\nqueue_size = 1024\n",
        kind.name(),
        spec.queues,
        socket.display(),
    );
    if spec.rings > 0 {
        cfg.push_str(&format!("rings = {}\n", spec.rings));
    }
    if spec.busy_poll_us > 0 {
        cfg.push_str(&format!("busy_poll_us = {}\n", spec.busy_poll_us));
    }
    cfg
}

/// Builds the network for `kind` and starts quiverd on it.
///
/// - tap: one namespace; quiverd creates the TAP in it (`netns =`), the bench brings it
///   up; the sender's socket is bound to the TAP inside that namespace, so what it sends
///   is what quiverd reads from the TAP.
/// - af_packet, af_xdp: quiverd's namespace holds one end of a veth pair (`queues` TX
///   and RX queues each way), the "host" namespace the other end, where the sender is.
pub fn build(kind: Kind, spec: &QuiverdSpec) -> Result<Topo> {
    let socket = spec.sock_dir.join("vm1.sock");
    let queues = spec.queues.to_string();
    let start = |cfg: &str| {
        Quiverd::start(
            spec.program,
            spec.cpu,
            spec.dir,
            cfg,
            std::slice::from_ref(&socket),
        )
    };
    match kind {
        Kind::Tap => {
            let ns = quiet_namespace("qbt")?;
            let tap = unique_name("qbt");
            let quiverd = start(&config(kind, &tap, ns.name(), spec, &socket))?;
            ns_run(ns.name(), &["ip", "link", "set", &tap, "up"])?;
            let n = ns.name().to_owned();
            Ok(Topo {
                quiverd,
                send_ns: n.clone(),
                send_dev: tap.clone(),
                devs: vec![(n, tap)],
                far: 0,
                _namespaces: vec![ns],
                socket,
            })
        }
        Kind::AfPacket | Kind::AfXdp => {
            let qns = quiet_namespace("qbq")?;
            let hns = quiet_namespace("qbh")?;
            let (a, b) = (unique_name("qba"), unique_name("qbb"));
            ns_run(
                hns.name(),
                &[
                    "ip",
                    "link",
                    "add",
                    &a,
                    "numtxqueues",
                    &queues,
                    "numrxqueues",
                    &queues,
                    "type",
                    "veth",
                    "peer",
                    "name",
                    &b,
                    "numtxqueues",
                    &queues,
                    "numrxqueues",
                    &queues,
                ],
            )?;
            ns_run(hns.name(), &["ip", "link", "set", &a, "netns", qns.name()])?;
            ns_run(qns.name(), &["ip", "link", "set", &a, "up"])?;
            ns_run(hns.name(), &["ip", "link", "set", &b, "up"])?;
            let quiverd = start(&config(kind, &a, qns.name(), spec, &socket))?;
            // The veth pair is up once both ends are; give the carrier a moment.
            std::thread::sleep(Duration::from_millis(200));
            let (q, h) = (qns.name().to_owned(), hns.name().to_owned());
            Ok(Topo {
                quiverd,
                send_ns: h.clone(),
                send_dev: b.clone(),
                devs: vec![(q, a), (h, b)],
                far: 1,
                _namespaces: vec![qns, hns],
                socket,
            })
        }
    }
}

/// Kernel counters of one interface (`ip -s -j link`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DevCounters {
    pub rx_packets: u64,
    pub tx_packets: u64,
    pub rx_dropped: u64,
    pub tx_dropped: u64,
}

pub fn parse_dev_counters(json: &str) -> Result<DevCounters> {
    let v: Value = serde_json::from_str(json).context("parsing `ip -s -j link` output")?;
    let s = &v[0]["stats64"];
    let get = |dir: &str, f: &str| s[dir][f].as_u64().unwrap_or(0);
    ensure!(s.is_object(), "`ip -s -j link` without stats64: {json}");
    Ok(DevCounters {
        rx_packets: get("rx", "packets"),
        tx_packets: get("tx", "packets"),
        rx_dropped: get("rx", "dropped"),
        tx_dropped: get("tx", "dropped"),
    })
}

pub fn dev_counters(ns: &str, dev: &str) -> Result<DevCounters> {
    let out = ns_run(ns, &["ip", "-s", "-j", "link", "show", "dev", dev])?;
    parse_dev_counters(&out)
}

/// Frames the kernel dropped for want of backlog space, all CPUs
/// (/proc/net/softnet_stat, second column).
pub fn softnet_dropped() -> u64 {
    std::fs::read_to_string("/proc/net/softnet_stat")
        .map(|t| parse_softnet_dropped(&t))
        .unwrap_or(0)
}

pub fn parse_softnet_dropped(text: &str) -> u64 {
    text.lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter_map(|h| u64::from_str_radix(h, 16).ok())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_names_the_kind_the_interface_and_the_namespace() {
        let spec = QuiverdSpec {
            program: Path::new("quiverd"),
            cpu: 0,
            dir: Path::new("/t"),
            sock_dir: Path::new("/s"),
            queues: 4,
            rings: 0,
            busy_poll_us: 0,
        };
        let c = config(Kind::AfXdp, "qba1", "qbq1", &spec, Path::new("/s/vm1.sock"));
        assert!(c.contains("kind = \"af_xdp\"") && c.contains("ifname = \"qba1\""));
        assert!(c.contains("queues = 4") && c.contains("netns = \"qbq1\""));
        assert!(c.contains("socket = \"/s/vm1.sock\"") && !c.contains("rings"));
        let r = config(
            Kind::Tap,
            "t",
            "n",
            &QuiverdSpec { rings: 2, ..spec },
            Path::new("/s/vm1.sock"),
        );
        assert!(r.contains("kind = \"tap\"") && r.contains("rings = 2"));
    }

    #[test]
    fn parses_ip_link_json_and_softnet_stat() {
        let j = r#"[{"ifname":"x","stats64":{"rx":{"bytes":1,"packets":5,"dropped":2},"tx":{"packets":7,"dropped":3}}}]"#;
        assert_eq!(
            parse_dev_counters(j).ok(),
            Some(DevCounters {
                rx_packets: 5,
                tx_packets: 7,
                rx_dropped: 2,
                tx_dropped: 3
            })
        );
        assert!(parse_dev_counters("[{}]").is_err());
        let s = "0000a000 00000010 00000000\n0000b000 00000001 00000000\n";
        assert_eq!(parse_softnet_dropped(s), 17);
    }
}
