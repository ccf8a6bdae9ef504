//! An uplink as a switch port: the opened device, its id, counters and pollers.

use std::sync::Arc;

use quiver_switch::{QueueCounters, UplinkId};
use quiver_uplink::Uplink;

use crate::config::UplinkConfig;

pub struct UplinkPort {
    pub id: UplinkId,
    pub cfg: UplinkConfig,
    pub dev: Arc<dyn Uplink>,
    /// One set per uplink queue: rx = from the wire, tx = to the wire.
    pub counters: Box<[QueueCounters]>,
}

impl UplinkPort {
    pub fn new(id: UplinkId, cfg: UplinkConfig, dev: Arc<dyn Uplink>) -> Self {
        let n = dev.num_queues().max(1);
        UplinkPort {
            id,
            cfg,
            dev,
            counters: (0..n).map(|_| QueueCounters::new()).collect(),
        }
    }
}
