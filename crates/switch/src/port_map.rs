//! The switching table: an immutable, validated snapshot of all ports.

use std::collections::hash_map::Entry;

use quiver_wire::MacAddr;

use crate::hasher::{mac_key, FxHashMap};
use crate::{PortId, PortSpec, VlanId, MAX_VLAN};

/// Why a set of port specs does not make a port map.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PortMapError {
    /// Two specs share an id.
    #[error("duplicate {id}: {first:?} and {second:?}")]
    DuplicatePort {
        id: PortId,
        first: String,
        second: String,
    },
    /// A (VLAN, MAC) claimed twice, by two ports or twice by one.
    #[error("MAC {mac} on VLAN {vlan} claimed by both {first_name:?} ({first}) and {second_name:?} ({second})")]
    DuplicateMac {
        mac: MacAddr,
        vlan: VlanId,
        first: PortId,
        first_name: String,
        second: PortId,
        second_name: String,
    },
    /// A group address as a station address.
    #[error("{port} ({name:?}) has multicast MAC {mac}")]
    MulticastMac {
        port: PortId,
        name: String,
        mac: MacAddr,
    },
    /// 00:00:00:00:00:00 as a station address.
    #[error("{port} ({name:?}) has the all-zero MAC")]
    ZeroMac { port: PortId, name: String },
    /// VLAN outside 0..=4094.
    #[error("{port} ({name:?}) has VLAN {vlan}, want 0 (untagged) or 1..=4094")]
    BadVlan {
        port: PortId,
        name: String,
        vlan: VlanId,
    },
}

/// An immutable snapshot of the ports, built once per configuration change
/// and shared by every worker behind an `Arc` (see [`crate::Switch`]).
///
/// Every lookup is O(1): one FxHash probe keyed by a packed `u64`.
#[derive(Debug, Default, Clone)]
pub struct PortMap {
    /// Sorted by id.
    ports: Vec<PortSpec>,
    /// Port id → index into `ports`.
    index: FxHashMap<PortId, usize>,
    /// `mac_key(vlan, mac)` → owning port.
    table: FxHashMap<u64, PortId>,
    /// VLAN → ports on it, sorted.
    flood: FxHashMap<VlanId, Box<[PortId]>>,
}

impl PortMap {
    /// A map with no ports.
    pub fn empty() -> Self {
        Self::default()
    }

    /// Validates `specs` and builds the lookup tables.
    pub fn new(mut specs: Vec<PortSpec>) -> Result<Self, PortMapError> {
        specs.sort_by_key(|s| s.id);
        for pair in specs.windows(2) {
            if let [a, b] = pair {
                if a.id == b.id {
                    return Err(PortMapError::DuplicatePort {
                        id: a.id,
                        first: a.name.clone(),
                        second: b.name.clone(),
                    });
                }
            }
        }
        let mut index = FxHashMap::default();
        let mut table = FxHashMap::default();
        let mut flood: FxHashMap<VlanId, Vec<PortId>> = FxHashMap::default();
        for (i, spec) in specs.iter().enumerate() {
            if spec.vlan > MAX_VLAN {
                return Err(PortMapError::BadVlan {
                    port: spec.id,
                    name: spec.name.clone(),
                    vlan: spec.vlan,
                });
            }
            index.insert(spec.id, i);
            flood.entry(spec.vlan).or_default().push(spec.id);
            for &mac in &spec.macs {
                check_station_mac(spec, mac)?;
                match table.entry(mac_key(spec.vlan, mac)) {
                    Entry::Vacant(v) => {
                        v.insert(spec.id);
                    }
                    Entry::Occupied(o) => {
                        let first = *o.get();
                        let first_name = specs
                            .iter()
                            .find(|s| s.id == first)
                            .map(|s| s.name.clone())
                            .unwrap_or_default();
                        return Err(PortMapError::DuplicateMac {
                            mac,
                            vlan: spec.vlan,
                            first,
                            first_name,
                            second: spec.id,
                            second_name: spec.name.clone(),
                        });
                    }
                }
            }
        }
        // `specs` is sorted by id, so every flood set is sorted already.
        let flood = flood
            .into_iter()
            .map(|(vlan, ports)| (vlan, ports.into_boxed_slice()))
            .collect();
        Ok(Self {
            ports: specs,
            index,
            table,
            flood,
        })
    }

    /// The port owning `dst` on `vlan`.
    #[inline]
    pub fn lookup(&self, vlan: VlanId, dst: MacAddr) -> Option<PortId> {
        self.table.get(&mac_key(vlan, dst)).copied()
    }

    /// Ports on `vlan`, sorted by id; empty for a VLAN with no ports.
    #[inline]
    pub fn flood_set(&self, vlan: VlanId) -> &[PortId] {
        self.flood.get(&vlan).map_or(&[], |p| p)
    }

    /// The spec of port `id`.
    #[inline]
    pub fn port(&self, id: PortId) -> Option<&PortSpec> {
        self.ports.get(*self.index.get(&id)?)
    }

    /// Whether `port` owns `src_mac` on its VLAN (primary or secondary).
    #[inline]
    pub fn owns(&self, port: PortId, src_mac: MacAddr) -> bool {
        self.port(port)
            .is_some_and(|p| self.lookup(p.vlan, src_mac) == Some(port))
    }

    /// Whether `mac` is a local port's MAC on `vlan`.
    #[inline]
    pub fn is_local(&self, vlan: VlanId, mac: MacAddr) -> bool {
        self.table.contains_key(&mac_key(vlan, mac))
    }

    /// All ports, sorted by id.
    pub fn ports(&self) -> &[PortSpec] {
        &self.ports
    }

    /// Number of ports.
    pub fn len(&self) -> usize {
        self.ports.len()
    }

    /// No ports at all.
    pub fn is_empty(&self) -> bool {
        self.ports.is_empty()
    }
}

fn check_station_mac(spec: &PortSpec, mac: MacAddr) -> Result<(), PortMapError> {
    if mac.is_multicast() {
        return Err(PortMapError::MulticastMac {
            port: spec.id,
            name: spec.name.clone(),
            mac,
        });
    }
    if mac.is_zero() {
        return Err(PortMapError::ZeroMac {
            port: spec.id,
            name: spec.name.clone(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::UplinkId;

    fn mac(last: u8) -> MacAddr {
        MacAddr([0x52, 0x54, 0, 0, 0, last])
    }

    fn spec(id: u32, vlan: VlanId, macs: &[MacAddr]) -> PortSpec {
        PortSpec {
            id: PortId(id),
            name: format!("vm{id}"),
            vlan,
            macs: macs.to_vec(),
            uplink: Some(UplinkId(0)),
            allow_spoof: false,
        }
    }

    #[test]
    fn lookups() {
        let map = PortMap::new(vec![
            spec(3, 10, &[mac(3)]),
            spec(1, 10, &[mac(1), mac(0x11)]),
            spec(2, 20, &[mac(2)]),
            spec(4, 20, &[mac(1)]), // same MAC on another VLAN is fine
        ])
        .unwrap();
        assert_eq!(map.len(), 4);
        assert_eq!(map.lookup(10, mac(1)), Some(PortId(1)));
        assert_eq!(map.lookup(10, mac(0x11)), Some(PortId(1)));
        assert_eq!(map.lookup(20, mac(1)), Some(PortId(4)));
        assert_eq!(map.lookup(20, mac(3)), None);
        assert_eq!(map.lookup(0, mac(1)), None);
        assert_eq!(map.flood_set(10), &[PortId(1), PortId(3)]);
        assert_eq!(map.flood_set(20), &[PortId(2), PortId(4)]);
        assert_eq!(map.flood_set(30), &[] as &[PortId]);
        assert_eq!(map.port(PortId(2)).map(|p| p.name.as_str()), Some("vm2"));
        assert_eq!(map.port(PortId(9)), None);
        assert!(map.owns(PortId(1), mac(0x11)));
        assert!(!map.owns(PortId(1), mac(3)));
        assert!(!map.owns(PortId(9), mac(1)));
        assert!(map.is_local(20, mac(2)));
        let ids: Vec<u32> = map.ports().iter().map(|p| p.id.0).collect();
        assert_eq!(ids, [1, 2, 3, 4]);
        assert!(PortMap::empty().is_empty());
    }

    #[test]
    fn validation_table() {
        let cases: Vec<(Vec<PortSpec>, PortMapError)> = vec![
            (
                vec![spec(1, 10, &[mac(1)]), spec(2, 10, &[mac(1)])],
                PortMapError::DuplicateMac {
                    mac: mac(1),
                    vlan: 10,
                    first: PortId(1),
                    first_name: "vm1".into(),
                    second: PortId(2),
                    second_name: "vm2".into(),
                },
            ),
            (
                vec![spec(1, 0, &[mac(1), mac(1)])],
                PortMapError::DuplicateMac {
                    mac: mac(1),
                    vlan: 0,
                    first: PortId(1),
                    first_name: "vm1".into(),
                    second: PortId(1),
                    second_name: "vm1".into(),
                },
            ),
            (
                vec![spec(1, 0, &[mac(1), MacAddr([0x01, 0, 0x5e, 0, 0, 1])])],
                PortMapError::MulticastMac {
                    port: PortId(1),
                    name: "vm1".into(),
                    mac: MacAddr([0x01, 0, 0x5e, 0, 0, 1]),
                },
            ),
            (
                vec![spec(1, 0, &[MacAddr::ZERO])],
                PortMapError::ZeroMac {
                    port: PortId(1),
                    name: "vm1".into(),
                },
            ),
            (
                vec![spec(1, 4095, &[mac(1)])],
                PortMapError::BadVlan {
                    port: PortId(1),
                    name: "vm1".into(),
                    vlan: 4095,
                },
            ),
            (
                vec![spec(1, 0, &[mac(1)]), spec(1, 0, &[mac(2)])],
                PortMapError::DuplicatePort {
                    id: PortId(1),
                    first: "vm1".into(),
                    second: "vm1".into(),
                },
            ),
        ];
        for (specs, want) in cases {
            assert_eq!(PortMap::new(specs).unwrap_err(), want);
        }
    }

    #[test]
    fn duplicate_mac_message_names_both_ports() {
        let err = PortMap::new(vec![spec(1, 10, &[mac(1)]), spec(2, 10, &[mac(1)])]).unwrap_err();
        let msg = err.to_string();
        for part in ["52:54:00:00:00:01", "vm1", "vm2", "VLAN 10"] {
            assert!(msg.contains(part), "{msg}");
        }
    }
}
