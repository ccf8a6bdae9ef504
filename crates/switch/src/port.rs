//! Switch ports: identifiers and their configuration.

use std::fmt;

use quiver_wire::MacAddr;

/// A VLAN identifier as the switch uses it: 0 means untagged (the native
/// VLAN); configured VLANs are `1..=MAX_VLAN` (IEEE 802.1Q-2018 Table 9-2
/// reserves 0 and 4095 as VIDs).
pub type VlanId = u16;

/// The untagged / native VLAN.
pub const NATIVE_VLAN: VlanId = 0;

/// The largest configurable VLAN.
pub const MAX_VLAN: VlanId = 4094;

/// A switch port (one VNIC, or a container endpoint).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortId(pub u32);

impl fmt::Display for PortId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "port {}", self.0)
    }
}

/// An uplink (a physical NIC, veth or TAP).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UplinkId(pub u32);

impl fmt::Display for UplinkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "uplink {}", self.0)
    }
}

/// The switch's view of one port's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortSpec {
    /// Identifier, unique in a [`crate::PortMap`].
    pub id: PortId,
    /// Name for messages (the VNIC name).
    pub name: String,
    /// The port's VLAN; [`NATIVE_VLAN`] (0) for untagged.
    pub vlan: VlanId,
    /// Unicast MACs the port owns: the primary first, then secondaries.
    pub macs: Vec<MacAddr>,
    /// Where unknown unicast and floods from this port go, if anywhere.
    pub uplink: Option<UplinkId>,
    /// Skip source-MAC validation (a port that bridges other stations).
    pub allow_spoof: bool,
}

impl PortSpec {
    /// The primary MAC, if the port has any.
    pub fn primary_mac(&self) -> Option<MacAddr> {
        self.macs.first().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_and_primary() {
        assert_eq!(PortId(3).to_string(), "port 3");
        assert_eq!(UplinkId(1).to_string(), "uplink 1");
        let mac = MacAddr([0x52, 0x54, 0, 0, 0, 1]);
        let spec = PortSpec {
            id: PortId(1),
            name: "vm1".into(),
            vlan: NATIVE_VLAN,
            macs: vec![mac, MacAddr([0x52, 0x54, 0, 0, 0, 2])],
            uplink: None,
            allow_spoof: false,
        };
        assert_eq!(spec.primary_mac(), Some(mac));
    }
}
