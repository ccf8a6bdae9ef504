//! The `Uplink` and `UplinkQueue` traits the daemon codes against, the kinds of
//! uplink, and what each can do.

use std::fmt;
use std::io;
use std::os::fd::RawFd;
use std::str::FromStr;

/// Length of the virtio_net_hdr that precedes every frame crossing an uplink
/// queue: `struct virtio_net_hdr_v1` (VIRTIO 1.2 §5.1.6), little endian.
pub const VNET_HDR_LEN: usize = 12;

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum UplinkError {
    /// A kind name that is not one of `tap`, `none`, `sink`, `source`, `af_xdp`, `af_packet`.
    #[error("unknown uplink kind {kind:?} (expected \"tap\", \"none\", \"sink\", \"source\", \"af_xdp\" or \"af_packet\")")]
    UnknownKind { kind: String },
    /// A classifying uplink could not take the VNICs' addresses.
    #[error("cannot program the classifier of uplink {uplink}")]
    Classes {
        uplink: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// One received frame, borrowed from the uplink's own buffer for the length of a
/// [`UplinkQueue::recv_burst`] call: its virtio_net_hdr (all zero for kinds without
/// offload info) and the Ethernet frame.
#[derive(Clone, Copy, Debug)]
pub struct WireFrame<'a> {
    pub hdr: [u8; VNET_HDR_LEN],
    pub data: &'a [u8],
}

/// One direction-agnostic hardware-ish queue of an uplink.
pub trait UplinkQueue: Send + Sync {
    /// Fd that becomes readable when frames are waiting (for epoll); `None` if
    /// this kind never receives.
    fn rx_fd(&self) -> Option<RawFd>;

    /// Non-blocking receive of one frame into `buf`: a 12-byte virtio_net_hdr
    /// (VIRTIO 1.2 §5.1.6, little endian; all zero when the kind has no offload
    /// info) followed by the Ethernet frame. `Ok(None)` when nothing is waiting.
    fn recv(&self, buf: &mut [u8]) -> io::Result<Option<usize>>;

    /// Takes up to `max` waiting frames and hands them to `f` in one call, where
    /// they lie (no copy into a buffer of the caller's); they are valid during the
    /// call only. `Ok(0)` when nothing is waiting. `None` when this kind cannot:
    /// use [`UplinkQueue::recv`].
    fn recv_burst(
        &self,
        _max: usize,
        _f: &mut dyn FnMut(&[WireFrame<'_>]),
    ) -> Option<io::Result<usize>> {
        None
    }

    /// Transmit one frame. `iov` = 12-byte virtio_net_hdr followed by the frame
    /// bytes, possibly split across many iovecs.
    ///
    /// # Safety
    /// Every iovec must point to memory readable for `iov_len` bytes for the
    /// duration of the call.
    ///
    /// A kind may queue the frame and transmit it only at the next [`flush`]
    /// (or once it has queued a batch): callers flush after every burst.
    ///
    /// [`flush`]: UplinkQueue::flush
    unsafe fn send(&self, iov: &[libc::iovec]) -> io::Result<usize>;

    /// Transmits what `send` queued and has not transmitted yet (af_xdp: one
    /// syscall per burst instead of one per frame).
    fn flush(&self) -> io::Result<()> {
        Ok(())
    }
}

/// A receive path that carries one VNIC's frames only, on one uplink queue: the
/// VNIC's dedicated ring, realised on af_xdp by the XDP classifier redirecting the
/// VNIC's (MAC, VLAN) into an AF_XDP socket of its own on that queue. The VNIC's
/// own worker reads it, so these frames never pass through another thread.
///
/// Dropping it steers the VNIC's frames back to the shared queues first, then gives
/// every buffer it still holds back to the queue's pool, then closes it: nothing is
/// lost but the frames in flight in the socket at that moment.
pub trait DedicatedRx: Send + Sync {
    /// The uplink queue this path belongs to.
    fn queue(&self) -> usize;

    /// Readable while frames are waiting (for the worker's epoll).
    fn fd(&self) -> RawFd;

    /// Takes up to `max` waiting frames and hands them to `f` in one call, where
    /// they lie (the kinds that dedicate carry no offload info: the headers are
    /// zero). The frames are valid during the call only; their buffers go back to
    /// the queue's pool when `f` returns. Returns how many frames were taken (0
    /// when none was waiting).
    fn recv_burst(&self, max: usize, f: &mut dyn FnMut(&[WireFrame<'_>])) -> io::Result<usize>;
}

/// The physical side of the switch: a NIC (or TAP / veth for tests) with a
/// number of queues.
pub trait Uplink: Send + Sync {
    /// Name to show in logs and the control API.
    fn name(&self) -> &str;
    fn kind(&self) -> UplinkKind;
    fn num_queues(&self) -> usize;
    /// Queue `index`, `None` when `index >= num_queues()`.
    fn queue(&self, index: usize) -> Option<&dyn UplinkQueue>;
    fn capabilities(&self) -> Capabilities;
    /// The kernel interface behind the uplink, if there is one.
    fn ifname(&self) -> Option<&str>;

    /// Counters the uplink keeps below quiver's own (kernel ring drops, XDP verdicts),
    /// by name, summed over its queues; empty when it has none.
    fn kernel_counters(&self) -> Vec<(&'static str, u64)> {
        Vec::new()
    }

    /// The (destination MAC, VLAN id; 0 = untagged) pairs of the VNICs on this
    /// uplink, replacing the previous set. Uplinks that classify before
    /// quiver sees a frame (af_xdp) steer these to their sockets; the others
    /// receive everything anyway and ignore the call.
    fn set_classes(&self, _classes: &[([u8; 6], u16)]) -> Result<(), UplinkError> {
        Ok(())
    }

    /// Gives the VNIC with (destination MAC, VLAN id; 0 = untagged) receive paths
    /// of its own, one per queue, and steers its frames into them (the pair must
    /// be among the classes of [`Uplink::set_classes`]). `Ok(None)` when this kind
    /// cannot: the VNIC stays on the shared queues. Dropping the paths undoes it.
    fn dedicate(
        &self,
        _mac: [u8; 6],
        _vlan: u16,
    ) -> Result<Option<Vec<Box<dyn DedicatedRx>>>, UplinkError> {
        Ok(None)
    }
}

/// What an uplink offers the switch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Capabilities {
    /// Receive rings (queues that deliver frames from the wire).
    pub rx_rings: usize,
    /// Transmit rings.
    pub tx_rings: usize,
    /// Frames carry a meaningful virtio_net_hdr (offload info) in both directions.
    pub vnet_hdr: bool,
    /// Frames can be received without a copy into a private buffer.
    pub zero_copy: bool,
    /// The uplink can steer frames to a ring by destination MAC in hardware.
    pub hw_steering: bool,
}

/// Kinds of uplink. Spelled `tap` / `af_packet` / `none` / `sink` / `source` / `af_xdp` in config files
/// and the API.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UplinkKind {
    /// A multi-queue TAP device (`/dev/net/tun`).
    Tap,
    /// An existing interface read through TPACKET_V3 rings in a fanout group.
    AfPacket,
    /// No uplink: an isolated switch.
    None,
    /// In memory: counts and drops every frame sent to it (benchmarks).
    Sink,
    /// In memory: generates frames toward the VNICs without end (benchmarks).
    Source,
    /// An XDP classifier redirecting into AF_XDP sockets, one per queue.
    AfXdp,
}

impl UplinkKind {
    /// The config-file spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            UplinkKind::Tap => "tap",
            UplinkKind::AfPacket => "af_packet",
            UplinkKind::None => "none",
            UplinkKind::Sink => "sink",
            UplinkKind::Source => "source",
            UplinkKind::AfXdp => "af_xdp",
        }
    }
}

impl fmt::Display for UplinkKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for UplinkKind {
    type Err = UplinkError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "tap" => Ok(UplinkKind::Tap),
            "af_packet" => Ok(UplinkKind::AfPacket),
            "none" => Ok(UplinkKind::None),
            "sink" => Ok(UplinkKind::Sink),
            "source" => Ok(UplinkKind::Source),
            "af_xdp" => Ok(UplinkKind::AfXdp),
            _ => Err(UplinkError::UnknownKind { kind: s.to_owned() }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_round_trips_through_strings() {
        for kind in [
            UplinkKind::Tap,
            UplinkKind::AfPacket,
            UplinkKind::None,
            UplinkKind::Sink,
            UplinkKind::Source,
            UplinkKind::AfXdp,
        ] {
            assert_eq!(kind.to_string().parse::<UplinkKind>().unwrap(), kind);
        }
        assert_eq!("tap".parse::<UplinkKind>().unwrap(), UplinkKind::Tap);
    }

    #[test]
    fn unknown_kind_names_the_offending_value() {
        let err = "af_xdpp".parse::<UplinkKind>().unwrap_err();
        assert!(matches!(&err, UplinkError::UnknownKind { kind } if kind == "af_xdpp"));
        assert!(err.to_string().contains("af_xdpp"));
    }
}
