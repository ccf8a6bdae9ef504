//! The shared switch state: the current port map, its generation, the
//! learner and the global counters.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use crate::{Learner, PortMap, QueueCounters};

/// State shared by every worker and the control path.
///
/// Workers do not lock per frame: each keeps a [`PortMapCache`], calls
/// [`PortMapCache::refresh`] once per burst (one atomic load when nothing
/// changed), and passes the cached map to [`crate::forward`].
#[derive(Debug)]
pub struct Switch {
    map: RwLock<Arc<PortMap>>,
    /// Bumped, under the write lock, on every [`Switch::replace`].
    generation: AtomicU64,
    learner: Learner,
    counters: QueueCounters,
}

impl Switch {
    /// A switch over `map` with a default-sized learner.
    pub fn new(map: PortMap) -> Self {
        Self::with_learner(map, Learner::default())
    }

    /// A switch over `map` with `learner`.
    pub fn with_learner(map: PortMap, learner: Learner) -> Self {
        Self {
            map: RwLock::new(Arc::new(map)),
            generation: AtomicU64::new(0),
            learner,
            counters: QueueCounters::new(),
        }
    }

    /// The current generation. `Acquire` pairs with the `Release` in
    /// [`Switch::replace`]: a worker that sees a new number and then takes a
    /// [`Switch::snapshot`] gets that map or a newer one.
    #[inline]
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// The current map and its generation (consistent: both read under the
    /// read lock, and `replace` changes both under the write lock).
    pub fn snapshot(&self) -> (u64, Arc<PortMap>) {
        let map = self.map.read().unwrap_or_else(PoisonError::into_inner);
        (self.generation.load(Ordering::Acquire), Arc::clone(&map))
    }

    /// Installs `map`, drops learned entries that are now local MACs, and
    /// returns the new generation. Workers pick it up at their next burst.
    pub fn replace(&self, map: PortMap) -> u64 {
        let map = Arc::new(map);
        let generation = {
            let mut cur = self.map.write().unwrap_or_else(PoisonError::into_inner);
            *cur = Arc::clone(&map);
            self.generation.fetch_add(1, Ordering::Release) + 1
        };
        let purged = self.learner.purge_local(&map);
        log::info!(
            "switch: port map generation {generation}: {} ports, {purged} learned MACs now local",
            map.len()
        );
        generation
    }

    /// The learned-MAC table.
    pub fn learner(&self) -> &Learner {
        &self.learner
    }

    /// Counters for what no queue owns (e.g. drops before a port is known).
    pub fn counters(&self) -> &QueueCounters {
        &self.counters
    }
}

/// A worker's cached copy of the current port map.
#[derive(Debug, Clone)]
pub struct PortMapCache {
    generation: u64,
    map: Arc<PortMap>,
}

impl PortMapCache {
    /// The switch's current map.
    pub fn new(switch: &Switch) -> Self {
        let (generation, map) = switch.snapshot();
        Self { generation, map }
    }

    /// Picks up a newer map if there is one; `true` if it changed. Call once
    /// per burst.
    #[inline]
    pub fn refresh(&mut self, switch: &Switch) -> bool {
        if switch.generation() == self.generation {
            return false;
        }
        (self.generation, self.map) = switch.snapshot();
        true
    }

    /// The cached map.
    #[inline]
    pub fn map(&self) -> &PortMap {
        &self.map
    }

    /// The cached map's generation.
    pub fn generation(&self) -> u64 {
        self.generation
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{forward, Decision, LearnOutcome, PortId, PortSpec, Source, UplinkId};
    use quiver_wire::MacAddr;

    const MAC: MacAddr = MacAddr([0x52, 0x54, 0, 0, 0, 1]);

    fn one_port() -> PortMap {
        PortMap::new(vec![PortSpec {
            id: PortId(1),
            name: "vm1".into(),
            vlan: 0,
            macs: vec![MAC],
            uplink: None,
            allow_spoof: false,
        }])
        .unwrap()
    }

    #[test]
    fn replace_bumps_generation_and_cache_follows() {
        let sw = Switch::new(PortMap::empty());
        let mut cache = PortMapCache::new(&sw);
        assert_eq!((sw.generation(), cache.generation()), (0, 0));
        assert!(!cache.refresh(&sw));
        fn to_port(c: &PortMapCache) -> Decision<'_> {
            forward(c.map(), Source::Uplink(UplinkId(0)), 0, MAC)
        }
        assert_eq!(to_port(&cache), Decision::Drop(crate::DropReason::NoRoute));

        assert_eq!(sw.replace(one_port()), 1);
        assert_eq!(sw.generation(), 1);
        assert!(cache.refresh(&sw));
        assert!(!cache.refresh(&sw));
        assert_eq!(cache.generation(), 1);
        assert_eq!(to_port(&cache), Decision::Port(PortId(1)));
        let (generation, map) = sw.snapshot();
        assert_eq!((generation, map.len()), (1, 1));
    }

    #[test]
    fn replace_purges_learned_local_macs() {
        let sw = Switch::with_learner(PortMap::empty(), Learner::new(8));
        let (_, map) = sw.snapshot();
        assert_eq!(
            sw.learner().learn(&map, 0, MAC, UplinkId(0), 1),
            LearnOutcome::Inserted
        );
        sw.replace(one_port());
        assert!(sw.learner().is_empty());
        sw.counters().add_drop(crate::DropReason::UnknownPort, 1);
        assert_eq!(sw.counters().snapshot().total_drops(), 1);
    }
}
