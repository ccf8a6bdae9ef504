//! An uplink as a switch port: the opened device, its id, counters, and which of its
//! RX rings each VNIC holds (with the NIC steering rules that follow).

use std::sync::{Arc, Mutex, PoisonError};

use quiver_switch::{QueueCounters, RingMove, RingTable, UplinkId};
use quiver_uplink::steering::{EthtoolSteering, FlowSteering, SteerPath, Steering};
use quiver_uplink::Uplink;

use crate::config::{UplinkConfig, VnicConfig};

/// Ring ownership and steering rules of one uplink.
pub struct Rings {
    pub table: RingTable<String>,
    /// `None` for uplinks without a NIC (sink, source, none).
    steering: Option<Steering<Box<dyn FlowSteering>>>,
}

/// How a VNIC's frames from this uplink are classified to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RingStatus {
    pub wanted: usize,
    pub held: Vec<usize>,
    /// "hardware" (a NIC rule steers them to a held ring), "xdp" (the uplink's XDP
    /// program redirects them to sockets of the VNIC's own, read by its workers) or
    /// "software" (the uplink's pollers classify the shared queues).
    pub path: &'static str,
}

pub struct UplinkPort {
    pub id: UplinkId,
    pub cfg: UplinkConfig,
    pub dev: Arc<dyn Uplink>,
    /// One set per uplink queue: rx = from the wire, tx = to the wire.
    pub counters: Box<[QueueCounters]>,
    /// The device carries virtio_net_hdr offload info (read once, not per frame).
    pub vnet_hdr: bool,
    rings: Mutex<Rings>,
}

impl UplinkPort {
    pub fn new(id: UplinkId, cfg: UplinkConfig, dev: Arc<dyn Uplink>) -> Self {
        let n = dev.num_queues().max(1);
        let caps = dev.capabilities();
        let vnet_hdr = caps.vnet_hdr;
        // Rings are the device's receive rings: af_xdp's extra queue (broadcasts via a
        // packet socket) is not one a NIC rule could steer to. Sink has none: its one
        // shared group stays.
        let rings = caps.rx_rings.clamp(1, n);
        let steering = dev.ifname().map(|ifname| {
            let driver: Box<dyn FlowSteering> =
                match EthtoolSteering::open(ifname, cfg.netns.as_deref()) {
                    Ok(e) => Box::new(e),
                    Err(e) => {
                        log::warn!(
                            "uplink {}: cannot ask {ifname} about flow steering: {e}",
                            cfg.name
                        );
                        Box::new(NoSteering(ifname.to_string()))
                    }
                };
            Steering::new(driver)
        });
        UplinkPort {
            id,
            cfg,
            dev,
            counters: (0..n).map(|_| QueueCounters::new()).collect(),
            vnet_hdr,
            rings: Mutex::new(Rings {
                table: RingTable::new(rings),
                steering,
            }),
        }
    }

    /// Moves ring ownership to the VNICs now on this uplink (`vnics`, oldest first),
    /// then points each VNIC's steering rule at the first ring it holds.
    pub fn assign_rings(&self, vnics: &[&VnicConfig]) {
        let mut r = self.rings.lock().unwrap_or_else(PoisonError::into_inner);
        let gone: Vec<String> = r
            .table
            .vnics()
            .filter(|name| !vnics.iter().any(|v| &v.name == *name))
            .cloned()
            .collect();
        for name in &gone {
            for m in r.table.remove(name) {
                self.log_move(&m);
            }
            if let Some(s) = r.steering.as_mut() {
                s.release(name);
            }
        }
        for v in vnics {
            for m in r.table.request(v.name.clone(), usize::from(v.rings)) {
                self.log_move(&m);
            }
        }
        let Rings { table, steering } = &mut *r;
        if let Some(s) = steering.as_mut() {
            for v in vnics {
                let ring = table
                    .held(&v.name)
                    .first()
                    .and_then(|&r| u32::try_from(r).ok());
                s.assign(&v.name, v.mac.0, v.vlan, ring);
            }
        }
    }

    fn log_move(&self, m: &RingMove<String>) {
        let group = |v: &Option<String>| v.clone().unwrap_or_else(|| "the shared group".into());
        log::info!(
            "uplink {}: ring {} from {} to {}",
            self.cfg.name,
            m.ring,
            group(&m.from),
            group(&m.to)
        );
    }

    /// The rings `vnic` holds and how its frames reach it (`dedicated`: whether its
    /// own receive paths are open now).
    pub fn ring_status(&self, vnic: &str, dedicated: bool) -> RingStatus {
        let r = self.rings.lock().unwrap_or_else(PoisonError::into_inner);
        let hardware = r
            .steering
            .as_ref()
            .is_some_and(|s| matches!(s.path(vnic), SteerPath::Hardware { .. }));
        let path = if hardware {
            "hardware"
        } else if dedicated {
            "xdp"
        } else {
            "software"
        };
        RingStatus {
            wanted: r.table.wanted(&vnic.to_string()),
            held: r.table.held(&vnic.to_string()),
            path,
        }
    }
}

/// The steering driver when the interface cannot even be asked (no socket): every
/// request is "unsupported".
struct NoSteering(String);

impl FlowSteering for NoSteering {
    fn probe(&self) -> Result<(), quiver_uplink::steering::SteerError> {
        Err(self.unsupported())
    }

    fn insert(
        &self,
        _rule: &quiver_uplink::steering::MacRule,
    ) -> Result<u32, quiver_uplink::steering::SteerError> {
        Err(self.unsupported())
    }

    fn remove(&self, _location: u32) -> Result<(), quiver_uplink::steering::SteerError> {
        Err(self.unsupported())
    }
}

impl NoSteering {
    fn unsupported(&self) -> quiver_uplink::steering::SteerError {
        quiver_uplink::steering::SteerError::Unsupported {
            ifname: self.0.clone(),
            source: std::io::Error::from_raw_os_error(libc::EOPNOTSUPP),
        }
    }
}
