//! Ring groups: which of an uplink's receive rings each VNIC holds.
//!
//! An uplink has `n` RX rings. Ring 0 always belongs to the default (shared) group:
//! frames of every VNIC without dedicated rings arrive there (and on any other ring
//! not held by a VNIC) and are classified in software. A VNIC asks for `k` dedicated
//! rings (`rings = k`); rings are granted in request order while free — all `k` if
//! they are, otherwise as many as are left (at least one makes the VNIC dedicated),
//! otherwise none and the VNIC waits in the shared group. When a VNIC goes, its rings
//! go first to waiting or short VNICs, oldest request first.
//!
//! The table is pure bookkeeping: it says which rings changed hands, and the daemon
//! moves steering rules and pollers accordingly.

use std::collections::BTreeMap;

/// The ring that always stays in the shared group.
pub const DEFAULT_RING: usize = 0;

/// How a VNIC's received frames reach it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RingPath {
    /// Classified in software on the shared group (no rings, or none wanted).
    Shared,
    /// Holds these rings (possibly fewer than wanted).
    Dedicated(Vec<usize>),
}

/// A ring changing hands: `ring` now belongs to `to` (`None` = the shared group).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RingMove<K> {
    pub ring: usize,
    pub from: Option<K>,
    pub to: Option<K>,
}

/// The assignment of one uplink's rings.
#[derive(Clone, Debug)]
pub struct RingTable<K: Ord + Clone> {
    /// `owner[r]`: the VNIC holding ring r; `owner[0]` is always `None`.
    owner: Vec<Option<K>>,
    /// Rings wanted per VNIC, with the order of its request.
    wanted: BTreeMap<K, (u64, usize)>,
    next_order: u64,
}

impl<K: Ord + Clone> RingTable<K> {
    /// A table for an uplink with `rings` RX rings (at least the default one).
    pub fn new(rings: usize) -> Self {
        RingTable {
            owner: vec![None; rings.max(1)],
            wanted: BTreeMap::new(),
            next_order: 0,
        }
    }

    pub fn rings(&self) -> usize {
        self.owner.len()
    }

    /// Rings that no VNIC holds (the shared group), ring 0 first.
    pub fn shared(&self) -> Vec<usize> {
        (0..self.owner.len())
            .filter(|&r| self.owner[r].is_none())
            .collect()
    }

    /// Rings `vnic` holds, in ring order.
    pub fn held(&self, vnic: &K) -> Vec<usize> {
        (0..self.owner.len())
            .filter(|&r| self.owner[r].as_ref() == Some(vnic))
            .collect()
    }

    pub fn path(&self, vnic: &K) -> RingPath {
        let held = self.held(vnic);
        if held.is_empty() {
            RingPath::Shared
        } else {
            RingPath::Dedicated(held)
        }
    }

    /// The VNICs in the table (asked for rings at some point, not removed).
    pub fn vnics(&self) -> impl Iterator<Item = &K> {
        self.wanted.keys()
    }

    /// Rings `vnic` asked for (0 if unknown).
    pub fn wanted(&self, vnic: &K) -> usize {
        self.wanted.get(vnic).map_or(0, |w| w.1)
    }

    /// `vnic` wants `k` dedicated rings (0 = shared). A VNIC already in the table
    /// keeps its place in the queue; asking for fewer rings gives the surplus back
    /// (to others waiting). Returns the rings that changed hands.
    pub fn request(&mut self, vnic: K, k: usize) -> Vec<RingMove<K>> {
        let order = match self.wanted.get(&vnic) {
            Some(&(order, _)) => order,
            None => {
                self.next_order += 1;
                self.next_order
            }
        };
        self.wanted.insert(vnic.clone(), (order, k));
        let mut moves = Vec::new();
        // Surplus back to the shared group, highest rings first.
        let held = self.held(&vnic);
        for &r in held.iter().rev().take(held.len().saturating_sub(k)) {
            self.owner[r] = None;
            moves.push(RingMove {
                ring: r,
                from: Some(vnic.clone()),
                to: None,
            });
        }
        moves.extend(self.grant());
        moves
    }

    /// `vnic` is gone: its rings go to others waiting. Returns the rings that changed
    /// hands.
    pub fn remove(&mut self, vnic: &K) -> Vec<RingMove<K>> {
        self.wanted.remove(vnic);
        let mut moves = Vec::new();
        for r in 0..self.owner.len() {
            if self.owner[r].as_ref() == Some(vnic) {
                self.owner[r] = None;
                moves.push(RingMove {
                    ring: r,
                    from: Some(vnic.clone()),
                    to: None,
                });
            }
        }
        let granted = self.grant();
        // A ring freed and granted again in one step is one move, not two.
        for g in granted {
            match moves.iter_mut().find(|m| m.ring == g.ring) {
                Some(m) => m.to = g.to,
                None => moves.push(g),
            }
        }
        moves
    }

    /// Hands free rings to VNICs holding fewer than they want, oldest request first.
    fn grant(&mut self) -> Vec<RingMove<K>> {
        let mut queue: Vec<(u64, K, usize)> = self
            .wanted
            .iter()
            .map(|(v, &(order, k))| (order, v.clone(), k))
            .collect();
        queue.sort();
        let mut moves = Vec::new();
        for (_, vnic, k) in queue {
            let mut have = self.held(&vnic).len();
            while have < k {
                let Some(r) = (1..self.owner.len()).find(|&r| self.owner[r].is_none()) else {
                    return moves;
                };
                self.owner[r] = Some(vnic.clone());
                have += 1;
                moves.push(RingMove {
                    ring: r,
                    from: None,
                    to: Some(vnic.clone()),
                });
            }
        }
        moves
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_zero_is_never_granted() {
        let mut t = RingTable::new(1);
        assert!(t.request("a", 2).is_empty());
        assert_eq!(t.path(&"a"), RingPath::Shared);
        assert_eq!(t.shared(), vec![0]);
    }

    #[test]
    fn third_vnic_waits_in_software_until_one_goes() {
        // 4 rings, 3 VNICs wanting 2 each: a gets 1,2; b gets the last one (3); c
        // waits in the shared group.
        let mut t = RingTable::new(4);
        t.request("a", 2);
        t.request("b", 2);
        t.request("c", 2);
        assert_eq!(t.path(&"a"), RingPath::Dedicated(vec![1, 2]));
        assert_eq!(t.path(&"b"), RingPath::Dedicated(vec![3]));
        assert_eq!(t.path(&"c"), RingPath::Shared);
        assert_eq!(t.shared(), vec![0]);
        // a goes: b is topped up first (older request), then c is promoted.
        let moves = t.remove(&"a");
        assert_eq!(
            moves,
            vec![
                RingMove {
                    ring: 1,
                    from: Some("a"),
                    to: Some("b")
                },
                RingMove {
                    ring: 2,
                    from: Some("a"),
                    to: Some("c")
                },
            ]
        );
        assert_eq!(t.path(&"b"), RingPath::Dedicated(vec![1, 3]));
        assert_eq!(t.path(&"c"), RingPath::Dedicated(vec![2]));
    }

    #[test]
    fn asking_for_fewer_gives_rings_back_and_zero_means_shared() {
        let mut t = RingTable::new(4);
        t.request("a", 3);
        t.request("b", 1);
        assert_eq!(t.path(&"b"), RingPath::Shared);
        let moves = t.request("a", 1);
        assert_eq!(t.held(&"a"), vec![1]);
        assert_eq!(t.held(&"b"), vec![2]);
        // 3 and 2 given back, 2 granted to b.
        assert_eq!(moves.len(), 3, "{moves:?}");
        t.request("a", 0);
        assert_eq!(t.path(&"a"), RingPath::Shared);
        assert_eq!(t.wanted(&"a"), 0);
        t.request("c", 2);
        assert_eq!(t.held(&"c"), vec![1, 3]);
        // b asked before c: when c goes, b is first to get more.
        t.request("b", 3);
        assert_eq!(t.held(&"b"), vec![2]);
        t.remove(&"c");
        assert_eq!(t.held(&"b"), vec![1, 2, 3]);
    }

    #[test]
    fn removing_an_unknown_vnic_changes_nothing() {
        let mut t = RingTable::new(4);
        t.request("a", 1);
        assert!(t.remove(&"zz").is_empty());
        assert_eq!(t.held(&"a"), vec![1]);
    }
}
