//! The running switch: uplinks with their pollers, VNICs with their sessions, and the
//! fabric they share. `apply` moves it to a new configuration, touching only what
//! changed (SIGHUP reload).

use std::collections::BTreeMap;
use std::sync::Arc;

use quiver_switch::{PortId, PortMap, PortMapError, PortSpec, UplinkId};
use quiver_uplink::{
    open_af_packet, open_tap, AfPacketConfig, AfPacketError, NoneUplink, RingConfig, Sink, Source,
    SourceConfig, SourceError, TapConfig, TapError, Uplink,
};

use quiver_uplink::{open_af_xdp, AfXdpConfig, AfXdpError, UplinkError};

use crate::config::{Config, UplinkConfig, UplinkKindCfg, VnicConfig};
use crate::fabric::Fabric;
use crate::session::{Session, SessionError};
use crate::uplink_port::UplinkPort;
use crate::uplink_rx::Poller;
use crate::vnic::Vnic;

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("uplink {name}: cannot open TAP {ifname}")]
    Tap {
        name: String,
        ifname: String,
        #[source]
        source: Box<TapError>,
    },
    #[error("uplink {name}: cannot open AF_PACKET on {ifname}")]
    AfPacket {
        name: String,
        ifname: String,
        #[source]
        source: Box<AfPacketError>,
    },
    #[error("uplink {name}: cannot open af_xdp on {ifname}")]
    AfXdp {
        name: String,
        ifname: String,
        #[source]
        source: Box<AfXdpError>,
    },
    #[error("uplink {name}: cannot tell its classifier the VNICs' addresses")]
    Classes {
        name: String,
        #[source]
        source: Box<UplinkError>,
    },
    #[error("uplink {name}: cannot build its source")]
    Source {
        name: String,
        #[source]
        source: SourceError,
    },
    #[error("uplink {name}: cannot start its pollers")]
    Poller {
        name: String,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid switching table")]
    PortMap(#[source] PortMapError),
    #[error("cannot serve a VNIC")]
    Session(#[source] Box<SessionError>),
}

struct RunningUplink {
    port: Arc<UplinkPort>,
    poller: Option<Poller>,
}

struct RunningVnic {
    vnic: Arc<Vnic>,
    session: Session,
}

/// What `apply` changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ApplySummary {
    pub added: Vec<String>,
    pub removed: Vec<String>,
    pub kept: Vec<String>,
}

pub struct Daemon {
    fabric: Arc<Fabric>,
    uplinks: BTreeMap<String, RunningUplink>,
    vnics: BTreeMap<String, RunningVnic>,
}

/// `TUN_F_*` offload flags (linux/if_tun.h).
const TUN_F_CSUM: libc::c_uint = 0x01;
const TUN_F_TSO4: libc::c_uint = 0x02;
const TUN_F_TSO6: libc::c_uint = 0x04;

fn open_uplink(cfg: &UplinkConfig) -> Result<Arc<dyn Uplink>, DaemonError> {
    match cfg.kind {
        UplinkKindCfg::None => Ok(Arc::new(NoneUplink)),
        UplinkKindCfg::Sink => Ok(Arc::new(Sink::new(&cfg.name, cfg.queues))),
        UplinkKindCfg::Source => {
            // Config validation guarantees the settings; an empty list fails below.
            let (dst, src, frame_len) = cfg.source.as_ref().map_or((Vec::new(), [0; 6], 0), |s| {
                (s.dst.iter().map(|m| m.0).collect(), s.src.0, s.frame_len)
            });
            let source = Source::new(
                &cfg.name,
                &SourceConfig {
                    dst,
                    src,
                    frame_len,
                    queues: cfg.queues,
                },
            )
            .map_err(|source| DaemonError::Source {
                name: cfg.name.clone(),
                source,
            })?;
            Ok(Arc::new(source))
        }
        UplinkKindCfg::AfPacket => {
            let dev = open_af_packet(&AfPacketConfig {
                ifname: cfg.ifname.clone(),
                queues: cfg.queues,
                netns: cfg.netns.clone(),
                ring: RingConfig::default(),
            })
            .map_err(|source| DaemonError::AfPacket {
                name: cfg.name.clone(),
                ifname: cfg.ifname.clone(),
                source: Box::new(source),
            })?;
            Ok(Arc::new(dev))
        }
        UplinkKindCfg::AfXdp => {
            let dev = open_af_xdp(&AfXdpConfig {
                ifname: cfg.ifname.clone(),
                queues: cfg.queues,
                netns: cfg.netns.clone(),
                mode: cfg.xdp_mode.unwrap_or_default(),
            })
            .map_err(|source| DaemonError::AfXdp {
                name: cfg.name.clone(),
                ifname: cfg.ifname.clone(),
                source: Box::new(source),
            })?;
            Ok(Arc::new(dev))
        }
        UplinkKindCfg::Tap => {
            let tap = open_tap(&TapConfig {
                ifname: cfg.ifname.clone(),
                queues: cfg.queues,
                netns: cfg.netns.clone(),
                persist: cfg.persist,
                mtu: None,
            })
            .map_err(|source| DaemonError::Tap {
                name: cfg.name.clone(),
                ifname: cfg.ifname.clone(),
                source: Box::new(source),
            })?;
            // Let the kernel hand over partial checksums and TSO super-frames: quiver
            // passes them to guests that take them and finishes them for the others.
            if let Err(e) = tap.set_offload(TUN_F_CSUM | TUN_F_TSO4 | TUN_F_TSO6) {
                log::warn!(
                    "uplink {}: no TAP offloads, frames arrive segmented: {}",
                    cfg.name,
                    crate::report(&e)
                );
            }
            Ok(Arc::new(tap))
        }
    }
}

fn smallest_free(used: impl Iterator<Item = u32>) -> u32 {
    let mut used: Vec<u32> = used.collect();
    used.sort_unstable();
    let mut id = 0;
    for u in used {
        if u == id {
            id += 1;
        } else if u > id {
            break;
        }
    }
    id
}

fn port_spec(v: &VnicConfig, id: PortId, uplinks: &BTreeMap<String, Arc<UplinkPort>>) -> PortSpec {
    PortSpec {
        id,
        name: v.name.clone(),
        vlan: v.vlan.unwrap_or(0),
        macs: vec![v.mac],
        uplink: v.uplink.as_ref().and_then(|u| uplinks.get(u)).map(|u| u.id),
        allow_spoof: v.allow_spoof,
    }
}

impl Daemon {
    /// Starts everything in `cfg`; on error nothing is left running.
    pub fn start(cfg: &Config) -> Result<Daemon, DaemonError> {
        let mut d = Daemon {
            fabric: Arc::new(Fabric::new()),
            uplinks: BTreeMap::new(),
            vnics: BTreeMap::new(),
        };
        match d.apply(cfg) {
            Ok(_) => Ok(d),
            Err(e) => {
                d.shutdown();
                Err(e)
            }
        }
    }

    pub fn fabric(&self) -> &Arc<Fabric> {
        &self.fabric
    }

    pub fn vnics(&self) -> impl Iterator<Item = &Arc<Vnic>> {
        self.vnics.values().map(|r| &r.vnic)
    }

    pub fn uplinks(&self) -> impl Iterator<Item = &Arc<UplinkPort>> {
        self.uplinks.values().map(|r| &r.port)
    }

    /// Moves to `cfg`. New uplinks are opened and the new table validated before
    /// anything running is touched; unchanged VNICs keep their connection.
    pub fn apply(&mut self, cfg: &Config) -> Result<ApplySummary, DaemonError> {
        // 1. Uplinks: keep identical ones, open new or changed ones.
        let mut next_uplinks: BTreeMap<String, Arc<UplinkPort>> = BTreeMap::new();
        let mut opened: Vec<Arc<UplinkPort>> = Vec::new();
        for u in &cfg.uplinks {
            match self.uplinks.get(&u.name) {
                Some(r) if r.port.cfg == *u => {
                    next_uplinks.insert(u.name.clone(), r.port.clone());
                }
                _ => {
                    let used = next_uplinks
                        .values()
                        .map(|p| p.id.0)
                        .chain(self.uplinks.values().map(|r| r.port.id.0));
                    let id = UplinkId(smallest_free(used));
                    let dev = open_uplink(u)?;
                    let port = Arc::new(UplinkPort::new(id, u.clone(), dev));
                    opened.push(port.clone());
                    next_uplinks.insert(u.name.clone(), port);
                }
            }
        }
        // 2. VNICs: a VNIC is kept if its config and its uplink object are unchanged.
        let mut kept: BTreeMap<String, Arc<Vnic>> = BTreeMap::new();
        let mut to_add: Vec<&VnicConfig> = Vec::new();
        for v in &cfg.vnics {
            let same_uplink = |r: &RunningVnic| match &v.uplink {
                None => true,
                Some(u) => match (self.uplinks.get(u), next_uplinks.get(u)) {
                    (Some(old), Some(new)) => Arc::ptr_eq(&old.port, new),
                    _ => false,
                },
            } && r.vnic.cfg.same_but_rings(v);
            match self.vnics.get(&v.name) {
                Some(r) if same_uplink(r) => {
                    kept.insert(v.name.clone(), r.vnic.clone());
                }
                _ => to_add.push(v),
            }
        }
        // Port ids: kept VNICs keep theirs; new ones take free ids.
        let mut ids: Vec<u32> = kept.values().map(|v| v.port.0).collect();
        let mut added: Vec<Arc<Vnic>> = Vec::new();
        for v in &to_add {
            let id = smallest_free(ids.iter().copied());
            ids.push(id);
            added.push(Arc::new(Vnic::new((*v).clone(), PortId(id))));
        }
        let specs: Vec<PortSpec> = kept
            .values()
            .chain(added.iter())
            .map(|v| port_spec(&v.cfg, v.port, &next_uplinks))
            .collect();
        let map = PortMap::new(specs).map_err(DaemonError::PortMap)?;
        // Classifying uplinks (af_xdp) steer only their VNICs' (MAC, VLAN) to
        // quiver; set before any poller runs, so a failure leaves nothing started.
        for (name, port) in &next_uplinks {
            let classes: Vec<([u8; 6], u16)> = kept
                .values()
                .chain(added.iter())
                .filter(|v| v.cfg.uplink.as_deref() == Some(name.as_str()))
                .map(|v| (v.cfg.mac.0, v.cfg.vlan.unwrap_or(0)))
                .collect();
            port.dev
                .set_classes(&classes)
                .map_err(|source| DaemonError::Classes {
                    name: name.clone(),
                    source: Box::new(source),
                })?;
        }

        // 3. Validated: stop what goes away, then start what comes.
        let mut summary = ApplySummary::default();
        let names: Vec<String> = self.vnics.keys().cloned().collect();
        for name in names {
            if !kept.contains_key(&name) {
                if let Some(r) = self.vnics.remove(&name) {
                    r.session.stop();
                    r.vnic.set_conn(None);
                    summary.removed.push(name);
                }
            }
        }
        summary.kept = kept.keys().cloned().collect();
        let mut table: Vec<Option<Arc<Vnic>>> = Vec::new();
        for v in kept.values().chain(added.iter()) {
            let i = v.port.0 as usize;
            if table.len() <= i {
                table.resize(i + 1, None);
            }
            table[i] = Some(v.clone());
        }
        let mut uplink_table: Vec<Option<Arc<UplinkPort>>> = Vec::new();
        for u in next_uplinks.values() {
            let i = u.id.0 as usize;
            if uplink_table.len() <= i {
                uplink_table.resize(i + 1, None);
            }
            uplink_table[i] = Some(u.clone());
        }
        self.fabric.publish(map, table, uplink_table);
        // Rings: removed VNICs give theirs back, kept ones keep their place in the
        // queue, new ones queue behind; steering rules follow.
        for (name, port) in &next_uplinks {
            let on_uplink = |v: &&VnicConfig| v.uplink.as_deref() == Some(name.as_str());
            let mut order: Vec<&VnicConfig> = cfg
                .vnics
                .iter()
                .filter(on_uplink)
                .filter(|v| kept.contains_key(&v.name))
                .collect();
            order.extend(
                cfg.vnics
                    .iter()
                    .filter(on_uplink)
                    .filter(|v| !kept.contains_key(&v.name)),
            );
            port.assign_rings(&order);
        }
        // Connected VNICs that gained or lost rings open or close their own paths.
        for v in kept.values() {
            crate::dedicated::sync(v, &self.fabric);
        }

        // Uplinks: stop pollers of removed/replaced ones, start new ones.
        let names: Vec<String> = self.uplinks.keys().cloned().collect();
        for name in names {
            let keep = match (self.uplinks.get(&name), next_uplinks.get(&name)) {
                (Some(old), Some(new)) => Arc::ptr_eq(&old.port, new),
                _ => false,
            };
            if !keep {
                if let Some(r) = self.uplinks.remove(&name) {
                    if let Some(p) = r.poller {
                        p.stop();
                    }
                }
            }
        }
        for port in opened {
            let poller = Poller::start(port.clone(), self.fabric.clone()).map_err(|source| {
                DaemonError::Poller {
                    name: port.cfg.name.clone(),
                    source,
                }
            })?;
            self.uplinks.insert(
                port.cfg.name.clone(),
                RunningUplink {
                    port,
                    poller: Some(poller),
                },
            );
        }
        let mut first_error = None;
        for vnic in added {
            match Session::start(vnic.clone(), self.fabric.clone()) {
                Ok(session) => {
                    summary.added.push(vnic.cfg.name.clone());
                    self.vnics
                        .insert(vnic.cfg.name.clone(), RunningVnic { vnic, session });
                }
                Err(e) => {
                    log::error!("{}", crate::report(&e));
                    first_error.get_or_insert(DaemonError::Session(Box::new(e)));
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(summary),
        }
    }

    /// Stops every VNIC (removing server sockets) and uplink.
    pub fn shutdown(&mut self) {
        for (_, r) in std::mem::take(&mut self.vnics) {
            r.session.stop();
        }
        for (_, r) in std::mem::take(&mut self.uplinks) {
            if let Some(p) = r.poller {
                p.stop();
            }
        }
    }
}
