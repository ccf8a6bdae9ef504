//! quiver-uplink: the physical side of the switch.
//!
//! - `uplink` — the [`Uplink`] / [`UplinkQueue`] traits the daemon codes
//!   against, [`UplinkKind`] and [`Capabilities`].
//! - `tap` — [`Tap`]: a multi-queue TAP with virtio_net_hdr (one tun fd per
//!   queue), opened or created by [`open_tap`], optionally in another netns.
//! - `af_packet` — [`AfPacket`]: an existing interface read through TPACKET_V3
//!   mmap rings, one AF_PACKET socket per queue in one fanout group
//!   ([`open_af_packet`]); `packet_ring` reads a ring, `packet_sys` is its FFI.
//! - `none` — [`NoneUplink`]: zero queues, for an isolated switch.
//! - `sink` — [`Sink`]: in memory, counts and drops every frame sent to it.
//! - `source` — [`Source`]: in memory, an endless generator of prebuilt frames
//!   toward the VNICs. Sink and source let benchmarks measure the switch alone.
//! - [`netns`] — running work inside a named network namespace on a helper
//!   thread, and fixtures for tests ([`netns::NetnsGuard`], [`netns::exec`]).
//! - [`steering`] — hardware flow steering (ethtool ntuple rules per VNIC MAC)
//!   and the decision logic around it, with a fake driver in its tests.
//! - `af_xdp` — [`AfXdp`]: an XDP classifier (`bpf/classify.c`, loaded with
//!   aya) redirecting the VNICs' frames into one AF_XDP socket per queue,
//!   opened by [`open_af_xdp`].
//! - `xsk` — one AF_XDP socket with its UMEM and four mmap'd rings; its `sys`
//!   submodule holds the `<linux/if_xdp.h>` structs.
//! - `sys` — the FFI quarantine: `struct ifreq` and typed ioctl wrappers.

mod af_packet;
mod af_xdp;
pub mod netns;
mod none;
mod packet_ring;
mod packet_sys;
mod sink;
mod source;
pub mod steering;
mod sys;
mod tap;
mod uplink;
mod xsk;

pub use af_packet::{
    open_af_packet, AfPacket, AfPacketConfig, AfPacketCounters, AfPacketError, AfPacketQueue,
    RingConfig, MAX_AF_PACKET_QUEUES,
};
pub use af_xdp::{
    open_af_xdp, AfXdp, AfXdpConfig, AfXdpError, AfXdpQueue, XdpMode, MAX_AF_XDP_QUEUES,
};
pub use netns::NetnsError;
pub use none::NoneUplink;
pub use sink::{Sink, SinkQueue};
pub use source::{
    Source, SourceConfig, SourceError, SourceQueue, MAX_SOURCE_FRAME, MIN_SOURCE_FRAME,
};
pub use tap::{open_tap, Tap, TapConfig, TapError, TapQueue, MAX_TAP_QUEUES};
pub use uplink::{
    Capabilities, DedicatedRx, Uplink, UplinkError, UplinkKind, UplinkQueue, WireFrame,
    VNET_HDR_LEN,
};
pub use xsk::{XskError, AF_XDP_MAX_FRAME};
