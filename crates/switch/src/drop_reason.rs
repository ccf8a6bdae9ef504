//! Why a frame was dropped; each reason is a named counter.

use std::fmt;

/// Why a frame was dropped. The discriminant indexes the per-queue drop
/// counters; [`DropReason::name`] is the counter's stable, snake_case name
/// (append new reasons at the end, never rename).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(usize)]
pub enum DropReason {
    /// Source MAC not owned by the sending port.
    Spoofed,
    /// No port or uplink to deliver to.
    NoRoute,
    /// Destination is the sending port itself.
    Hairpin,
    /// The receiving guest had posted no RX buffers.
    NoRxBuffers,
    /// A malformed descriptor chain.
    BadChain,
    /// Frame longer than the MTU or the receive buffers.
    Oversize,
    /// Frame shorter than an Ethernet header.
    Undersize,
    /// The queue was stopped after a ring error (until the front-end restarts it).
    QueueStopped,
    /// The frame's VLAN is not the sending port's.
    VlanMismatch,
    /// The uplink refused the frame.
    UplinkError,
    /// The destination lane's ring was full.
    RingFull,
    /// Source MAC is multicast/broadcast (IEEE 802-2014 §8.2: never a source).
    BadSourceMac,
    /// The sending port is not in the current port map (removed mid-burst).
    UnknownPort,
    /// A checksum or segmentation offload could not be finished in software.
    OffloadError,
    /// The destination has no front-end connected, or none of its RX rings is
    /// started and enabled yet (a guest still booting).
    NotReady,
    /// Sent on a TX ring the front-end had disabled (the guest just reduced its
    /// queue pairs): completed and discarded, as the vhost-user spec requires.
    QueueDisabled,
}

impl DropReason {
    /// Number of reasons.
    pub const COUNT: usize = 16;

    /// Every reason, in discriminant order.
    pub const ALL: [Self; Self::COUNT] = [
        Self::Spoofed,
        Self::NoRoute,
        Self::Hairpin,
        Self::NoRxBuffers,
        Self::BadChain,
        Self::Oversize,
        Self::Undersize,
        Self::QueueStopped,
        Self::VlanMismatch,
        Self::UplinkError,
        Self::RingFull,
        Self::BadSourceMac,
        Self::UnknownPort,
        Self::OffloadError,
        Self::NotReady,
        Self::QueueDisabled,
    ];

    /// The counter index.
    pub const fn index(self) -> usize {
        self as usize
    }

    /// The stable snake_case counter name.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Spoofed => "spoofed",
            Self::NoRoute => "no_route",
            Self::Hairpin => "hairpin",
            Self::NoRxBuffers => "no_rx_buffers",
            Self::BadChain => "bad_chain",
            Self::Oversize => "oversize",
            Self::Undersize => "undersize",
            Self::QueueStopped => "queue_stopped",
            Self::VlanMismatch => "vlan_mismatch",
            Self::UplinkError => "uplink_error",
            Self::RingFull => "ring_full",
            Self::BadSourceMac => "bad_source_mac",
            Self::UnknownPort => "unknown_port",
            Self::OffloadError => "offload_error",
            Self::NotReady => "not_ready",
            Self::QueueDisabled => "queue_disabled",
        }
    }
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn all_is_in_index_order_with_unique_names() {
        let mut names = HashSet::new();
        for (i, r) in DropReason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
            assert!(names.insert(r.name()), "duplicate {}", r.name());
            assert!(r
                .name()
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b == b'_'));
            assert_eq!(r.to_string(), r.name());
        }
    }
}
