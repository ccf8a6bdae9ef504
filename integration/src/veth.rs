//! Two network namespaces joined by a multi-queue veth pair: quiverd's uplink on one
//! end (`ifname`, in `wire`), the "network" on the other (`peer`, in `host`). Both
//! ends are up, IPv6 is off in both namespaces (no router solicitations or MLD in
//! the counts), and dropping the pair deletes the namespaces and with them the veth.

use anyhow::{ensure, Result};
use quiver_uplink::netns::{unique_name, NetnsGuard};

/// Runs a command in `ns`; its stdout, or an error with its stderr.
pub fn ns_run(ns: &NetnsGuard, args: &[&str]) -> Result<String> {
    let out = ns.exec(args)?;
    ensure!(
        out.status.success(),
        "{args:?} in {}: {}",
        ns.name(),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The pair. Field order is drop order.
pub struct VethPair {
    /// quiverd's side, holding `ifname`.
    pub wire: NetnsGuard,
    /// The network side, holding `peer`.
    pub host: NetnsGuard,
    pub ifname: String,
    pub peer: String,
}

impl VethPair {
    /// A pair with `queues` RX and TX queues on both ends; `tag` (2 letters) goes
    /// into the names.
    pub fn new(tag: &str, queues: u16) -> Result<VethPair> {
        let wire = NetnsGuard::new(unique_name(&format!("{tag}w")))?;
        let host = NetnsGuard::new(unique_name(&format!("{tag}h")))?;
        for ns in [&wire, &host] {
            ns_run(
                ns,
                &[
                    "sysctl",
                    "-qw",
                    "net.ipv6.conf.all.disable_ipv6=1",
                    "net.ipv6.conf.default.disable_ipv6=1",
                ],
            )?;
        }
        let (ifname, peer) = (
            unique_name(&format!("{tag}a")),
            unique_name(&format!("{tag}b")),
        );
        let q = queues.to_string();
        ns_run(
            &wire,
            &[
                "ip",
                "link",
                "add",
                &ifname,
                "numtxqueues",
                &q,
                "numrxqueues",
                &q,
                "type",
                "veth",
                "peer",
                "name",
                &peer,
                "numtxqueues",
                &q,
                "numrxqueues",
                &q,
                "netns",
                host.name(),
            ],
        )?;
        ns_run(&wire, &["ip", "link", "set", &ifname, "up"])?;
        ns_run(&host, &["ip", "link", "set", &peer, "up"])?;
        Ok(VethPair {
            wire,
            host,
            ifname,
            peer,
        })
    }
}
