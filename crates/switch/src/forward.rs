//! The per-frame forwarding decision and source validation: pure functions of
//! a [`PortMap`] snapshot, so the hot path takes no lock.

use quiver_wire::MacAddr;

use crate::{DropReason, PortId, PortMap, UplinkId, VlanId};

/// Where a frame entered the switch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    /// Sent by a port (a guest's TX).
    Port(PortId),
    /// Received from an uplink.
    Uplink(UplinkId),
}

/// The ports a flood goes to: the VLAN's flood set with the source port
/// skipped. An iterator, so the caller need not filter (and nothing is
/// allocated); `Clone` it to walk it twice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FloodPorts<'a> {
    /// Not yet yielded, sorted.
    ports: &'a [PortId],
    skip: Option<PortId>,
}

impl<'a> FloodPorts<'a> {
    /// `ports` without `skip`.
    pub fn new(ports: &'a [PortId], skip: Option<PortId>) -> Self {
        Self { ports, skip }
    }
}

impl Iterator for FloodPorts<'_> {
    type Item = PortId;

    #[inline]
    fn next(&mut self) -> Option<PortId> {
        while let [first, rest @ ..] = self.ports {
            self.ports = rest;
            if Some(*first) != self.skip {
                return Some(*first);
            }
        }
        None
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.ports.len();
        (n.saturating_sub(usize::from(self.skip.is_some())), Some(n))
    }
}

/// What to do with one frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision<'a> {
    /// Deliver to one local port.
    Port(PortId),
    /// Send out of an uplink.
    Uplink(UplinkId),
    /// Deliver a copy to each of `ports` (source already skipped) and, if
    /// `Some`, to `uplink`. Never empty: a flood with no receiver is
    /// `Drop(NoRoute)`.
    Flood {
        ports: FloodPorts<'a>,
        uplink: Option<UplinkId>,
    },
    /// Drop it and count `reason`.
    Drop(DropReason),
}

/// Decides where a frame from `source`, on `vlan`, to `dst` goes.
///
/// `vlan` is the frame's VLAN as the caller classified it (the tag's VID, or
/// the port's VLAN for an untagged guest frame). Frames never cross VLANs:
/// - from a port whose VLAN is not `vlan`: `Drop(VlanMismatch)`; from a port
///   not in `map`: `Drop(UnknownPort)`;
/// - group `dst` (IEEE 802-2014 §8.2 I/G bit, broadcast included): every port
///   on `vlan` except the source, plus the source port's uplink if it has one.
///   A flood from an uplink reaches every port on `vlan` and no uplink;
/// - `dst` owned by a port on `vlan`: that port, or `Drop(Hairpin)` if it is
///   the source;
/// - unknown unicast from a port: that port's uplink, or `Drop(NoRoute)`;
///   unknown unicast from an uplink: `Drop(NoRoute)`.
///
/// Source-MAC validation is separate: [`check_source`].
#[inline]
pub fn forward(map: &PortMap, source: Source, vlan: VlanId, dst: MacAddr) -> Decision<'_> {
    let (src_port, src_uplink) = match source {
        Source::Port(id) => match map.port(id) {
            Some(spec) if spec.vlan != vlan => return Decision::Drop(DropReason::VlanMismatch),
            Some(spec) => (Some(id), spec.uplink),
            None => return Decision::Drop(DropReason::UnknownPort),
        },
        Source::Uplink(_) => (None, None),
    };
    if dst.is_multicast() {
        let ports = map.flood_set(vlan);
        // A port source is on `vlan` (checked above), so it is in `ports`.
        let receivers = ports.len() - usize::from(src_port.is_some());
        if receivers == 0 && src_uplink.is_none() {
            return Decision::Drop(DropReason::NoRoute);
        }
        return Decision::Flood {
            ports: FloodPorts::new(ports, src_port),
            uplink: src_uplink,
        };
    }
    match map.lookup(vlan, dst) {
        Some(p) if Some(p) == src_port => Decision::Drop(DropReason::Hairpin),
        Some(p) => Decision::Port(p),
        None => src_uplink.map_or(Decision::Drop(DropReason::NoRoute), Decision::Uplink),
    }
}

/// Validates the source MAC of a frame sent by `port` (anti-spoofing).
///
/// A group address is never a valid source (IEEE 802-2014 §8.2):
/// `BadSourceMac`, even for `allow_spoof` ports. Otherwise the port must own
/// `src` on its VLAN (primary or secondary MAC) unless it is `allow_spoof`:
/// `Spoofed`. A port not in `map`: `UnknownPort`.
#[inline]
pub fn check_source(map: &PortMap, port: PortId, src: MacAddr) -> Result<(), DropReason> {
    if src.is_multicast() {
        return Err(DropReason::BadSourceMac);
    }
    let spec = map.port(port).ok_or(DropReason::UnknownPort)?;
    if spec.allow_spoof || map.lookup(spec.vlan, src) == Some(port) {
        Ok(())
    } else {
        Err(DropReason::Spoofed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PortSpec;

    fn mac(last: u8) -> MacAddr {
        MacAddr([0x52, 0x54, 0, 0, 0, last])
    }
    const MCAST: MacAddr = MacAddr([0x01, 0x00, 0x5e, 0, 0, 1]);
    const BCAST: MacAddr = MacAddr::BROADCAST;
    const U0: UplinkId = UplinkId(0);

    fn p(id: u32, vlan: VlanId, macs: &[MacAddr], uplink: Option<UplinkId>) -> PortSpec {
        PortSpec {
            id: PortId(id),
            name: format!("vm{id}"),
            vlan,
            macs: macs.to_vec(),
            uplink,
            allow_spoof: id == 9,
        }
    }

    /// Ports 1, 2, 3 on VLAN 10 (3 has no uplink), 4 on VLAN 20, 5 alone on
    /// VLAN 30 without uplink, 9 on VLAN 10 with allow_spoof.
    fn map() -> PortMap {
        PortMap::new(vec![
            p(1, 10, &[mac(1), mac(0x11)], Some(U0)),
            p(2, 10, &[mac(2)], Some(U0)),
            p(3, 10, &[mac(3)], None),
            p(4, 20, &[mac(4)], Some(UplinkId(1))),
            p(5, 30, &[mac(5)], None),
            p(9, 10, &[mac(9)], Some(U0)),
        ])
        .unwrap()
    }

    #[derive(Debug, PartialEq)]
    enum Want {
        Port(u32),
        Uplink(u32),
        Flood(Vec<u32>, Option<u32>),
        Drop(DropReason),
    }

    fn simplify(d: Decision<'_>) -> Want {
        match d {
            Decision::Port(p) => Want::Port(p.0),
            Decision::Uplink(u) => Want::Uplink(u.0),
            Decision::Flood { ports, uplink } => {
                Want::Flood(ports.map(|p| p.0).collect(), uplink.map(|u| u.0))
            }
            Decision::Drop(r) => Want::Drop(r),
        }
    }

    #[test]
    fn forwarding_table() {
        use Source::{Port as P, Uplink as U};
        use Want::*;
        let map = map();
        let cases: Vec<(&str, Source, VlanId, MacAddr, Want)> = vec![
            ("unicast to local", P(PortId(1)), 10, mac(2), Port(2)),
            ("unicast to secondary", P(PortId(2)), 10, mac(0x11), Port(1)),
            ("unicast from uplink", U(U0), 10, mac(3), Port(3)),
            (
                "hairpin",
                P(PortId(1)),
                10,
                mac(0x11),
                Drop(DropReason::Hairpin),
            ),
            ("unknown via uplink", P(PortId(1)), 10, mac(0x77), Uplink(0)),
            (
                "unknown no uplink",
                P(PortId(3)),
                10,
                mac(0x77),
                Drop(DropReason::NoRoute),
            ),
            (
                "unknown from uplink",
                U(U0),
                10,
                mac(0x77),
                Drop(DropReason::NoRoute),
            ),
            (
                "broadcast",
                P(PortId(1)),
                10,
                BCAST,
                Flood(vec![2, 3, 9], Some(0)),
            ),
            (
                "broadcast no uplink",
                P(PortId(3)),
                10,
                BCAST,
                Flood(vec![1, 2, 9], None),
            ),
            (
                "multicast",
                P(PortId(2)),
                10,
                MCAST,
                Flood(vec![1, 3, 9], Some(0)),
            ),
            (
                "broadcast from uplink",
                U(U0),
                10,
                BCAST,
                Flood(vec![1, 2, 3, 9], None),
            ),
            (
                "broadcast lone port",
                P(PortId(4)),
                20,
                BCAST,
                Flood(vec![], Some(1)),
            ),
            (
                "broadcast lone no uplink",
                P(PortId(5)),
                30,
                BCAST,
                Drop(DropReason::NoRoute),
            ),
            (
                "uplink flood empty vlan",
                U(U0),
                99,
                BCAST,
                Drop(DropReason::NoRoute),
            ),
            (
                "isolation: other vlan mac",
                P(PortId(4)),
                20,
                mac(1),
                Uplink(1),
            ),
            (
                "isolation: uplink wrong vlan",
                U(U0),
                20,
                mac(1),
                Drop(DropReason::NoRoute),
            ),
            (
                "isolation: mismatched tag",
                P(PortId(1)),
                20,
                mac(4),
                Drop(DropReason::VlanMismatch),
            ),
            (
                "unknown port",
                P(PortId(42)),
                10,
                mac(1),
                Drop(DropReason::UnknownPort),
            ),
        ];
        for (name, src, vlan, dst, want) in cases {
            assert_eq!(simplify(forward(&map, src, vlan, dst)), want, "{name}");
        }
    }

    #[test]
    fn flood_ports_size_hint() {
        let ports = [PortId(1), PortId(2), PortId(3)];
        let it = FloodPorts::new(&ports, Some(PortId(2)));
        assert_eq!(it.size_hint(), (2, Some(3)));
        assert_eq!(it.clone().count(), 2);
        assert_eq!(FloodPorts::new(&ports, None).count(), 3);
    }

    #[test]
    fn check_source_table() {
        let map = map();
        let cases = [
            ("primary", 1, mac(1), Ok(())),
            ("secondary", 1, mac(0x11), Ok(())),
            ("other port's mac", 1, mac(2), Err(DropReason::Spoofed)),
            ("unknown mac", 2, mac(0x77), Err(DropReason::Spoofed)),
            (
                "own mac, other vlan port",
                4,
                mac(1),
                Err(DropReason::Spoofed),
            ),
            ("multicast source", 1, MCAST, Err(DropReason::BadSourceMac)),
            ("broadcast source", 1, BCAST, Err(DropReason::BadSourceMac)),
            ("allow_spoof", 9, mac(0x77), Ok(())),
            (
                "allow_spoof multicast",
                9,
                MCAST,
                Err(DropReason::BadSourceMac),
            ),
            ("unknown port", 42, mac(1), Err(DropReason::UnknownPort)),
        ];
        for (name, port, src, want) in cases {
            assert_eq!(check_source(&map, PortId(port), src), want, "{name}");
        }
    }
}
