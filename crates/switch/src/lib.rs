//! quiver's switching logic: which port or uplink a frame goes to, whether
//! its source may send it, which remote MACs sit behind which uplink, and
//! the counters that name every drop. No I/O, no virtio, no threads: the
//! daemon's workers call these pure functions on a snapshot per burst.
//!
//! Modules:
//! - `port`: [`PortId`], [`UplinkId`], [`VlanId`], [`PortSpec`].
//! - `port_map`: [`PortMap`], the validated immutable switching table
//!   (O(1) lookups), and [`PortMapError`].
//! - `forward`: the per-frame [`forward`] decision ([`Source`],
//!   [`Decision`], [`FloodPorts`]) and anti-spoofing [`check_source`].
//! - `learner`: [`Learner`], MACs learned from uplinks, bounded and aged.
//! - `switch`: [`Switch`], the shared state (current map + generation,
//!   learner, global counters), and the workers' [`PortMapCache`].
//! - `drop_reason`: [`DropReason`], one named counter per drop path.
//! - `counters`: [`QueueCounters`] (atomic, cache-line aligned) and
//!   [`CounterSnapshot`].
//! - `hasher`: [`FxHasher`], the integer-key hasher behind every table.
//! - `rings`: [`RingTable`], which uplink RX rings each VNIC holds.
#![deny(unsafe_code)]

mod counters;
mod drop_reason;
mod forward;
mod hasher;
mod learner;
mod port;
mod port_map;
mod rings;
mod switch;

pub use counters::{CounterSnapshot, QueueCounters};
pub use drop_reason::DropReason;
pub use forward::{check_source, forward, Decision, FloodPorts, Source};
pub use hasher::{FxBuildHasher, FxHashMap, FxHasher};
pub use learner::{LearnOutcome, LearnedMac, Learner};
pub use port::{PortId, PortSpec, UplinkId, VlanId, MAX_VLAN, NATIVE_VLAN};
pub use port_map::{PortMap, PortMapError};
pub use rings::{RingMove, RingPath, RingTable, DEFAULT_RING};
pub use switch::{PortMapCache, Switch};
