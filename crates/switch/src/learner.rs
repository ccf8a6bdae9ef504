//! MAC addresses learned from uplinks: which uplink a remote station is
//! behind, and when it was last heard.

use std::collections::hash_map::Entry;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{PoisonError, RwLock};

use quiver_wire::MacAddr;

use crate::hasher::{mac_key, split_key, FxHashMap};
use crate::{PortMap, UplinkId, VlanId};

/// One learned station, as shown to operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LearnedMac {
    /// VLAN it was heard on.
    pub vlan: VlanId,
    /// Its MAC.
    pub mac: MacAddr,
    /// The uplink it is behind.
    pub uplink: UplinkId,
    /// When it was last heard, in the caller's seconds clock.
    pub last_seen: u64,
}

/// What [`Learner::learn`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LearnOutcome {
    /// New entry.
    Inserted,
    /// Existing entry; its timestamp (or uplink) was updated.
    Refreshed,
    /// Existing entry, already current: nothing written.
    Unchanged,
    /// Table full: not inserted, `learn_overflow` counted.
    Overflow,
    /// A local port's MAC heard from the uplink: not learned,
    /// `mac_conflict` counted.
    Conflict,
    /// A group address: never learned (IEEE 802.1Q-2018 §8.7: learning is
    /// from individual source addresses only).
    NotUnicast,
}

#[derive(Debug)]
struct Slot {
    uplink: AtomicU32,
    last_seen: AtomicU64,
}

/// The learned-MAC table: `(vlan, mac) → (uplink, last_seen)`, bounded.
///
/// Written from the uplink receive path once per frame: an existing entry is
/// refreshed under the read lock with one atomic load (and a store only when
/// the second changed), so concurrent pollers do not serialize; the write
/// lock is taken only to insert or age.
#[derive(Debug)]
pub struct Learner {
    table: RwLock<FxHashMap<u64, Slot>>,
    capacity: usize,
    learn_overflow: AtomicU64,
    mac_conflict: AtomicU64,
}

impl Default for Learner {
    fn default() -> Self {
        Self::new(Self::DEFAULT_CAPACITY)
    }
}

impl Learner {
    /// Default bound on entries.
    pub const DEFAULT_CAPACITY: usize = 4096;

    /// An empty table holding at most `capacity` entries.
    pub fn new(capacity: usize) -> Self {
        Self {
            table: RwLock::new(FxHashMap::default()),
            capacity,
            learn_overflow: AtomicU64::new(0),
            mac_conflict: AtomicU64::new(0),
        }
    }

    /// Records that `mac` on `vlan` was heard from `uplink` at `now_secs`.
    /// `map` is the caller's current snapshot, used to refuse local MACs.
    #[inline]
    pub fn learn(
        &self,
        map: &PortMap,
        vlan: VlanId,
        mac: MacAddr,
        uplink: UplinkId,
        now_secs: u64,
    ) -> LearnOutcome {
        if mac.is_multicast() {
            return LearnOutcome::NotUnicast;
        }
        if map.is_local(vlan, mac) {
            self.mac_conflict.fetch_add(1, Ordering::Relaxed);
            return LearnOutcome::Conflict;
        }
        let key = mac_key(vlan, mac);
        {
            let table = self.table.read().unwrap_or_else(PoisonError::into_inner);
            if let Some(slot) = table.get(&key) {
                return refresh(slot, uplink, now_secs);
            }
        }
        let mut table = self.table.write().unwrap_or_else(PoisonError::into_inner);
        let len = table.len();
        match table.entry(key) {
            // Another poller inserted it between our two locks.
            Entry::Occupied(o) => refresh(o.get(), uplink, now_secs),
            Entry::Vacant(_) if len >= self.capacity => {
                self.learn_overflow.fetch_add(1, Ordering::Relaxed);
                LearnOutcome::Overflow
            }
            Entry::Vacant(v) => {
                v.insert(Slot {
                    uplink: AtomicU32::new(uplink.0),
                    last_seen: AtomicU64::new(now_secs),
                });
                LearnOutcome::Inserted
            }
        }
    }

    /// The entry for `mac` on `vlan`.
    pub fn lookup(&self, vlan: VlanId, mac: MacAddr) -> Option<LearnedMac> {
        let table = self.table.read().unwrap_or_else(PoisonError::into_inner);
        table.get(&mac_key(vlan, mac)).map(|slot| LearnedMac {
            vlan,
            mac,
            uplink: UplinkId(slot.uplink.load(Ordering::Relaxed)),
            last_seen: slot.last_seen.load(Ordering::Relaxed),
        })
    }

    /// Removes entries not heard for more than `max_age_secs`; returns how
    /// many were removed.
    pub fn age(&self, now_secs: u64, max_age_secs: u64) -> usize {
        self.remove_where(|_, slot| {
            now_secs.saturating_sub(slot.last_seen.load(Ordering::Relaxed)) > max_age_secs
        })
    }

    /// Removes entries that are now local MACs in `map` (after a port map
    /// change); returns how many were removed.
    pub fn purge_local(&self, map: &PortMap) -> usize {
        self.remove_where(|key, _| {
            let (vlan, mac) = split_key(key);
            map.is_local(vlan, mac)
        })
    }

    fn remove_where(&self, mut remove: impl FnMut(u64, &Slot) -> bool) -> usize {
        let mut table = self.table.write().unwrap_or_else(PoisonError::into_inner);
        let before = table.len();
        table.retain(|&key, slot| !remove(key, slot));
        before - table.len()
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.table
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// No entries.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bound on entries.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Inserts refused because the table was full.
    pub fn learn_overflow(&self) -> u64 {
        self.learn_overflow.load(Ordering::Relaxed)
    }

    /// Local MACs heard from an uplink.
    pub fn mac_conflict(&self) -> u64 {
        self.mac_conflict.load(Ordering::Relaxed)
    }

    /// All entries, sorted by (VLAN, MAC), for display.
    pub fn entries(&self) -> Vec<LearnedMac> {
        let table = self.table.read().unwrap_or_else(PoisonError::into_inner);
        let mut out: Vec<LearnedMac> = table
            .iter()
            .map(|(&key, slot)| {
                let (vlan, mac) = split_key(key);
                LearnedMac {
                    vlan,
                    mac,
                    uplink: UplinkId(slot.uplink.load(Ordering::Relaxed)),
                    last_seen: slot.last_seen.load(Ordering::Relaxed),
                }
            })
            .collect();
        out.sort_unstable();
        out
    }
}

/// Updates an existing slot, writing only what changed (a store dirties the
/// cache line every other poller reads).
#[inline]
fn refresh(slot: &Slot, uplink: UplinkId, now_secs: u64) -> LearnOutcome {
    let mut outcome = LearnOutcome::Unchanged;
    if slot.last_seen.load(Ordering::Relaxed) != now_secs {
        slot.last_seen.store(now_secs, Ordering::Relaxed);
        outcome = LearnOutcome::Refreshed;
    }
    if slot.uplink.load(Ordering::Relaxed) != uplink.0 {
        log::trace!("learned MAC moved to {uplink}");
        slot.uplink.store(uplink.0, Ordering::Relaxed);
        outcome = LearnOutcome::Refreshed;
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{PortId, PortSpec};

    fn mac(last: u8) -> MacAddr {
        MacAddr([0x02, 0, 0, 0, 0, last])
    }
    const U0: UplinkId = UplinkId(0);
    const U1: UplinkId = UplinkId(1);

    fn map() -> PortMap {
        PortMap::new(vec![PortSpec {
            id: PortId(1),
            name: "vm1".into(),
            vlan: 10,
            macs: vec![mac(0xaa)],
            uplink: Some(U0),
            allow_spoof: false,
        }])
        .unwrap()
    }

    #[test]
    fn learn_sequence_table() {
        use LearnOutcome::*;
        let map = map();
        let l = Learner::new(3);
        // (vlan, mac, uplink, now, outcome)
        let steps = [
            (10, mac(1), U0, 100, Inserted),
            (10, mac(1), U0, 100, Unchanged),
            (10, mac(1), U0, 105, Refreshed),
            (10, mac(1), U1, 105, Refreshed),
            (20, mac(1), U0, 106, Inserted),
            (10, mac(0xaa), U0, 106, Conflict),
            (20, mac(0xaa), U0, 106, Inserted), // not local on VLAN 20
            (10, mac(2), U0, 107, Overflow),
            (10, MacAddr::BROADCAST, U0, 107, NotUnicast),
            (10, MacAddr([0x01, 0, 0x5e, 0, 0, 1]), U0, 107, NotUnicast),
            (10, mac(1), U0, 108, Refreshed), // existing entries refresh when full
        ];
        for (i, (vlan, m, up, now, want)) in steps.into_iter().enumerate() {
            assert_eq!(l.learn(&map, vlan, m, up, now), want, "step {i}");
        }
        assert_eq!(l.len(), 3);
        assert_eq!(l.capacity(), 3);
        assert_eq!(l.learn_overflow(), 1);
        assert_eq!(l.mac_conflict(), 1);
        assert_eq!(
            l.lookup(10, mac(1)),
            Some(LearnedMac {
                vlan: 10,
                mac: mac(1),
                uplink: U0,
                last_seen: 108
            })
        );
        assert_eq!(l.lookup(10, mac(2)), None);
        let listed: Vec<(VlanId, MacAddr)> = l.entries().iter().map(|e| (e.vlan, e.mac)).collect();
        assert_eq!(listed, [(10, mac(1)), (20, mac(1)), (20, mac(0xaa))]);
    }

    #[test]
    fn age_table() {
        let map = map();
        // (max_age, now, remaining after aging entries seen at 100, 110, 120)
        let cases = [
            (30, 130, 3),
            (20, 130, 2),
            (19, 130, 1),
            (10, 130, 1),
            (9, 130, 0),
            (0, 120, 1),
            (0, 121, 0),
        ];
        for (max_age, now, remaining) in cases {
            let l = Learner::default();
            for (i, t) in [(0, 100), (1, 110), (2, 120)] {
                l.learn(&map, 10, mac(i), U0, t);
            }
            let removed = l.age(now, max_age);
            assert_eq!(
                (removed, l.len()),
                (3 - remaining, remaining),
                "max_age {max_age} now {now}"
            );
        }
    }

    #[test]
    fn purge_local_after_map_change() {
        let l = Learner::default();
        assert!(l.is_empty());
        l.learn(&PortMap::empty(), 10, mac(0xaa), U0, 1);
        l.learn(&PortMap::empty(), 10, mac(0xbb), U0, 1);
        assert_eq!(l.purge_local(&map()), 1);
        assert_eq!(l.lookup(10, mac(0xaa)), None);
        assert_eq!(l.len(), 1);
    }
}
