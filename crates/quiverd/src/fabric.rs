//! The switch fabric seen by every worker: the switching table plus the runtime
//! objects its port ids name, swapped in as one snapshot so a burst never sees a port
//! in the table that it cannot reach (or the reverse).

use std::sync::Arc;

use arc_swap::ArcSwap;
use quiver_switch::{Learner, PortId, PortMap, UplinkId};

use crate::uplink_port::UplinkPort;
use crate::vnic::Vnic;

/// One consistent view: table and runtime ports.
pub struct FabricView {
    pub map: PortMap,
    vnics: Vec<Option<Arc<Vnic>>>,
    uplinks: Vec<Option<Arc<UplinkPort>>>,
}

impl FabricView {
    pub fn vnic(&self, id: PortId) -> Option<&Arc<Vnic>> {
        self.vnics.get(id.0 as usize).and_then(Option::as_ref)
    }

    pub fn uplink(&self, id: UplinkId) -> Option<&Arc<UplinkPort>> {
        self.uplinks.get(id.0 as usize).and_then(Option::as_ref)
    }
}

/// Shared by the control path (which replaces views) and all workers (which load one
/// per burst).
pub struct Fabric {
    view: ArcSwap<FabricView>,
    pub learner: Learner,
}

/// MACs learned from uplinks, at most.
const LEARNER_CAPACITY: usize = 4096;

impl Fabric {
    pub fn new() -> Self {
        Fabric {
            view: ArcSwap::from_pointee(FabricView {
                map: PortMap::empty(),
                vnics: Vec::new(),
                uplinks: Vec::new(),
            }),
            learner: Learner::new(LEARNER_CAPACITY),
        }
    }

    pub fn load(&self) -> arc_swap::Guard<Arc<FabricView>> {
        self.view.load()
    }

    /// Installs a new view. `vnics[i]` must carry port id i, `uplinks[i]` uplink id i.
    pub fn publish(
        &self,
        map: PortMap,
        vnics: Vec<Option<Arc<Vnic>>>,
        uplinks: Vec<Option<Arc<UplinkPort>>>,
    ) {
        self.learner.purge_local(&map);
        self.view.store(Arc::new(FabricView {
            map,
            vnics,
            uplinks,
        }));
    }
}
