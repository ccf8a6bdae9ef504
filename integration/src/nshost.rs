//! A host in a network namespace behind a TAP uplink: the far end of the guests'
//! traffic in the QEMU tests. The namespace and (for a `persist` TAP) the interface are
//! removed on drop.

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use anyhow::{Context, Result};
use quiver_uplink::netns::{unique_name, NetnsGuard};

/// A namespace and the name of quiverd's TAP uplink `up0` inside it.
pub struct NsHost {
    pub ns: NetnsGuard,
    pub ifname: String,
    queues: u16,
    persist: bool,
}

impl NsHost {
    /// A fresh namespace; `tag` (a few letters) goes into its and the TAP's names.
    pub fn new(tag: &str) -> Result<NsHost> {
        Ok(NsHost {
            ns: NetnsGuard::new(unique_name(&format!("{tag}n")))?,
            ifname: unique_name(tag),
            queues: 1,
            persist: false,
        })
    }

    /// TAP queues (`queues =` of the uplink).
    pub fn with_queues(mut self, queues: u16) -> NsHost {
        self.queues = queues;
        self
    }

    /// `persist = true`: the TAP and its address outlive quiverd.
    pub fn persistent(mut self) -> NsHost {
        self.persist = true;
        self
    }

    /// The `[[uplink]]` section for quiverd's configuration, named `up0`.
    pub fn uplink_config(&self) -> String {
        format!(
            "[[uplink]]\nname = \"up0\"\nkind = \"tap\"\nifname = \"{}\"\nnetns = \"{}\"\n\
             queues = {}\npersist = {}\n\n",
            self.ifname,
            self.ns.name(),
            self.queues,
            self.persist
        )
    }

    /// Gives the TAP (created by quiverd) `ip`/24 and brings it up.
    pub fn configure(&self, ip: Ipv4Addr) -> Result<()> {
        let cidr = format!("{ip}/24");
        self.run(&["ip", "addr", "add", &cidr, "dev", &self.ifname])?;
        self.run(&["ip", "link", "set", &self.ifname, "up"])?;
        Ok(())
    }

    /// Runs a command in the namespace; its stdout, or an error with its stderr.
    pub fn run(&self, args: &[&str]) -> Result<String> {
        crate::veth::ns_run(&self.ns, args)
    }

    /// Starts a long-running command in the namespace, its output going to `log`.
    pub fn spawn(&self, args: &[&str], log: &Path) -> Result<NsChild> {
        let out = std::fs::File::create(log).with_context(|| log.display().to_string())?;
        let child = Command::new("ip")
            .args(["netns", "exec", self.ns.name()])
            .args(args)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("starting {args:?} in {}", self.ns.name()))?;
        Ok(NsChild(child))
    }

    /// The TAP's addresses (`ip -br addr` without the name and operstate, which
    /// follows whether quiverd has the TAP open); empty if it cannot be read.
    pub fn addr(&self) -> String {
        self.run(&["ip", "-br", "addr", "show", "dev", &self.ifname])
            .map(|text| {
                text.split_whitespace()
                    .skip(2)
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .unwrap_or_default()
    }
}

impl Drop for NsHost {
    fn drop(&mut self) {
        if self.persist {
            // A persistent TAP outlives quiverd; remove it before the namespace goes.
            let _ = self.ns.exec(&["ip", "link", "del", &self.ifname]);
        }
    }
}

/// A process started in a namespace, killed on drop.
pub struct NsChild(pub Child);

impl Drop for NsChild {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
