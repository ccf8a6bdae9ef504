//! The `af_packet` uplink: an existing interface (a NIC, or a veth in tests),
//! optionally in another network namespace, read through TPACKET_V3 mmap rings.
//!
//! Per queue one AF_PACKET socket: TPACKET_V3, PACKET_VNET_HDR (offload info in
//! both directions, as on a TAP), an RX ring, PACKET_QDISC_BYPASS,
//! PACKET_IGNORE_OUTGOING and a socket filter doing the same inside a fanout
//! group (frames this host transmits are not received back), bound
//! to the interface for ETH_P_ALL, the interface put in promiscuous mode (so a
//! NIC does not filter the guests' MACs away; undone when the socket closes),
//! and joined to one PACKET_FANOUT group shared by all queues of the uplink, so
//! each socket is one receive "ring".
//!
//! Fanout mode: PACKET_FANOUT_HASH. The kernel sends all frames of one flow (its
//! skb hash) to the same socket, so a flow keeps its order through its poller
//! and the VNIC queue it feeds, and flows spread over the sockets however many
//! CPUs the senders run on. PACKET_FANOUT_CPU would follow the receiving CPU:
//! on a veth that is the sender's CPU, so one busy sender fills one socket, and
//! a sender that migrates between CPUs reorders its own flow.
//!
//! TX is one `sendmsg` per frame on the queue's socket (no TX ring), with the
//! 10-byte virtio_net_hdr the kernel expects, taken from our 12-byte one.
//!
//! Offloads (PACKET_VNET_HDR, as on a TAP with TUN_F_CSUM|TSO4|TSO6): received
//! frames carry NEEDS_CSUM with csum_start/csum_offset when the sender left the
//! checksum to the "NIC" (a veth peer's stack does), and GSO super-frames
//! (TCPv4/v6; the kernel also reports UDP_L4 for UDP_SEGMENT senders) arrive
//! whole with gso_type/gso_size, up to 64 KiB: the default 128 KiB blocks hold
//! them. On TX the kernel completes checksums and segments what the device
//! cannot take. The kernel reads and writes this header in host byte order,
//! which is VIRTIO 1.x's little endian on the hosts quiver runs on.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::net::UnixDatagram;
use std::sync::atomic::{AtomicU64, Ordering};

use libc::c_int;

use crate::netns::{self, NetnsError};
use crate::packet_ring::RxRing;
use crate::packet_sys::{
    self, IntOpt, PacketMreq, RingMap, TpacketReq3, ETH_P_ALL, PACKET_FANOUT_FLAG_UNIQUEID,
    PACKET_FANOUT_HASH, PACKET_MR_PROMISC, PACKET_VNET_HDR_LEN, TPACKET3_HDRLEN, TPACKET_V3,
};
use crate::sys::{self, IfReq, IfReqIoctl, IFNAMSIZ};
use crate::uplink::{Capabilities, Uplink, UplinkKind, UplinkQueue, VNET_HDR_LEN};

/// Sockets in one fanout group (the kernel's default `PACKET_FANOUT_MAX`).
pub const MAX_AF_PACKET_QUEUES: usize = 256;

/// Most iovecs one `send` passes on (quiverd sends at most 64 frame segments, a
/// header and a VLAN tag; the header may be split in two here).
const MAX_SEND_IOV: usize = 72;

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum AfPacketError {
    #[error("invalid interface name {ifname:?}")]
    InvalidName { ifname: String },
    #[error("invalid queue count {queues} for {ifname} (expected 1..={MAX_AF_PACKET_QUEUES})")]
    InvalidQueues { ifname: String, queues: usize },
    #[error("invalid ring geometry for {ifname}: {reason}")]
    InvalidRing { ifname: String, reason: String },
    #[error("network namespace {name} not found (create it with `ip netns add {name}`)")]
    NetnsNotFound { name: String },
    #[error("cannot open AF_PACKET uplink {ifname} in its network namespace")]
    Netns {
        ifname: String,
        #[source]
        source: NetnsError,
    },
    #[error("interface {ifname} not found in {place} (kind = \"af_packet\" uses an existing interface and never creates one: create it first, or use kind = \"tap\")")]
    NotFound { ifname: String, place: String },
    #[error("cannot look up interface {ifname}")]
    Lookup {
        ifname: String,
        #[source]
        source: io::Error,
    },
    #[error("no permission to open AF_PACKET sockets on {ifname}: quiverd needs CAP_NET_RAW (run it as root, or `setcap cap_net_raw,cap_net_admin+ep` its binary)")]
    Permission {
        ifname: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot open AF_PACKET socket {queue} on {ifname}")]
    Socket {
        ifname: String,
        queue: usize,
        #[source]
        source: io::Error,
    },
    #[error("cannot set {step} on AF_PACKET socket {queue} of {ifname}")]
    Setup {
        ifname: String,
        queue: usize,
        step: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("cannot map the {bytes}-byte RX ring of AF_PACKET socket {queue} on {ifname}")]
    Map {
        ifname: String,
        queue: usize,
        bytes: usize,
        #[source]
        source: io::Error,
    },
}

/// Geometry of each socket's TPACKET_V3 RX ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RingConfig {
    /// Bytes per block: a multiple of the page size, a power of two, and large
    /// enough for the largest frame (a 64 KiB GSO super-frame and its headers).
    pub block_size: u32,
    /// Blocks per ring.
    pub block_nr: u32,
    /// Milliseconds after which the kernel hands over a block that is not full:
    /// the latency bound of a lightly loaded ring (`tp_retire_blk_tov`).
    pub retire_ms: u32,
}

impl Default for RingConfig {
    /// 32 blocks × 128 KiB = 4 MiB per socket, handed over after at most 1 ms.
    /// A block must hold a 64 KiB GSO frame, hence 128 KiB rather than 64.
    fn default() -> Self {
        RingConfig {
            block_size: 128 << 10,
            block_nr: 32,
            retire_ms: 1,
        }
    }
}

/// `tp_frame_size`: TPACKET_V3 packs frames of any size into a block; this only
/// has to satisfy the kernel's checks (≥ TPACKET3_HDRLEN, 16-aligned, dividing
/// the block size).
const FRAME_SIZE: u32 = 2048;

/// How to open an AF_PACKET uplink.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AfPacketConfig {
    /// The existing interface (≤ 15 bytes).
    pub ifname: String,
    /// Sockets in the fanout group, 1..=[`MAX_AF_PACKET_QUEUES`].
    pub queues: usize,
    /// Network namespace (`ip netns add` name) of the interface; `None` = ours.
    pub netns: Option<String>,
    pub ring: RingConfig,
}

/// Frames an AF_PACKET queue did not hand up, by reason.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AfPacketCounters {
    /// Dropped by the kernel because the RX ring was full (PACKET_STATISTICS).
    pub ring_full: u64,
    /// Times the kernel froze the ring because every block was ours.
    pub ring_freezes: u64,
    /// Longer than the ring block or than the caller's buffer.
    pub truncated: u64,
    /// Frame headers pointing outside their block.
    pub malformed: u64,
}

/// One socket of the fanout group: an RX ring and a TX path.
///
/// Thread safety: several threads may `send` at once (one `sendmsg` = one
/// frame). `recv` takes a lock on the ring cursor, so concurrent readers are
/// safe but split the frames between them.
#[derive(Debug)]
pub struct AfPacketQueue {
    ring: RxRing,
    fd: OwnedFd,
    ring_full: AtomicU64,
    ring_freezes: AtomicU64,
}

impl AfPacketQueue {
    /// The drop counters. Reads (and so resets) the kernel's PACKET_STATISTICS,
    /// adding them to totals kept here.
    pub fn counters(&self) -> AfPacketCounters {
        if let Ok(stats) = packet_sys::get_stats(self.fd.as_fd()) {
            self.ring_full
                .fetch_add(u64::from(stats.tp_drops), Ordering::Relaxed);
            self.ring_freezes
                .fetch_add(u64::from(stats.tp_freeze_q_cnt), Ordering::Relaxed);
        }
        AfPacketCounters {
            ring_full: self.ring_full.load(Ordering::Relaxed),
            ring_freezes: self.ring_freezes.load(Ordering::Relaxed),
            truncated: self.ring.counters.truncated.load(Ordering::Relaxed),
            malformed: self.ring.counters.malformed.load(Ordering::Relaxed),
        }
    }
}

impl AsFd for AfPacketQueue {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl UplinkQueue for AfPacketQueue {
    /// Readable when the kernel has handed over a block (full, or after
    /// `retire_ms`).
    fn rx_fd(&self) -> Option<RawFd> {
        Some(self.fd.as_raw_fd())
    }

    /// Copies the next frame out of the ring: the 12-byte virtio_net_hdr (the
    /// kernel's 10 bytes + `num_buffers` 0) and the frame with its VLAN tag put
    /// back. Frames that do not fit `buf` are skipped and counted (`truncated`).
    ///
    /// With nothing to read, returns the socket's pending error if there is one
    /// (ENETDOWN when the interface went down or away), clearing it: otherwise
    /// poll(2) would keep reporting POLLERR and the poller would spin.
    fn recv(&self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        if let Some(n) = self.ring.recv(buf) {
            return Ok(Some(n));
        }
        match packet_sys::take_error(self.fd.as_fd())? {
            Some(err) => Err(err),
            None => Ok(None),
        }
    }

    /// One `sendmsg` of the frame, behind the first 10 bytes of the header.
    /// Returns the bytes taken from `iov` (header included), like a TAP write.
    unsafe fn send(&self, iov: &[libc::iovec]) -> io::Result<usize> {
        let mut out = [libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        }; MAX_SEND_IOV];
        let mut n = 0;
        let mut pos = 0usize;
        for v in iov {
            let (start, end) = (pos, pos.saturating_add(v.iov_len));
            pos = end;
            // Keep [0, 10) and [12, ..) of the logical stream: drop num_buffers.
            let keep = [
                (start, end.min(PACKET_VNET_HDR_LEN)),
                (start.max(VNET_HDR_LEN), end),
            ];
            for (lo, hi) in keep {
                if lo >= hi {
                    continue;
                }
                let slot = out.get_mut(n).ok_or_else(|| {
                    io::Error::new(io::ErrorKind::InvalidInput, "too many iovecs for one frame")
                })?;
                *slot = libc::iovec {
                    // lo - start < iov_len: inside the caller's buffer.
                    iov_base: v.iov_base.cast::<u8>().wrapping_add(lo - start).cast(),
                    iov_len: hi - lo,
                };
                n += 1;
            }
        }
        if pos <= VNET_HDR_LEN {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "no frame behind the virtio_net_hdr",
            ));
        }
        // SAFETY: each iovec in `out[..n]` is a sub-range of one of the caller's
        // iovecs, which the caller guarantees readable for the call.
        let sent = unsafe { packet_sys::send_iov(self.fd.as_fd(), &out[..n]) }?;
        Ok(sent + (VNET_HDR_LEN - PACKET_VNET_HDR_LEN))
    }
}

/// An AF_PACKET uplink: one socket per queue in one fanout group. Dropping it
/// closes the sockets (leaving promiscuous mode); the interface stays.
#[derive(Debug)]
pub struct AfPacket {
    ifname: String,
    netns: Option<String>,
    fanout_id: u16,
    queues: Vec<AfPacketQueue>,
}

impl AfPacket {
    /// The queues, in index order.
    pub fn queues(&self) -> &[AfPacketQueue] {
        &self.queues
    }

    /// The namespace the interface lives in (`None` = the daemon's).
    pub fn netns(&self) -> Option<&str> {
        self.netns.as_deref()
    }

    /// The PACKET_FANOUT group id the kernel picked.
    pub fn fanout_id(&self) -> u16 {
        self.fanout_id
    }
}

impl Uplink for AfPacket {
    fn name(&self) -> &str {
        &self.ifname
    }

    fn kernel_counters(&self) -> Vec<(&'static str, u64)> {
        let mut sum = AfPacketCounters::default();
        for q in &self.queues {
            let c = q.counters();
            sum.ring_full += c.ring_full;
            sum.ring_freezes += c.ring_freezes;
            sum.truncated += c.truncated;
            sum.malformed += c.malformed;
        }
        vec![
            ("ring_full", sum.ring_full),
            ("ring_freezes", sum.ring_freezes),
            ("truncated", sum.truncated),
            ("malformed", sum.malformed),
        ]
    }

    fn kind(&self) -> UplinkKind {
        UplinkKind::AfPacket
    }

    fn num_queues(&self) -> usize {
        self.queues.len()
    }

    fn queue(&self, index: usize) -> Option<&dyn UplinkQueue> {
        self.queues.get(index).map(|q| q as &dyn UplinkQueue)
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            rx_rings: self.queues.len(),
            tx_rings: self.queues.len(),
            vnet_hdr: true,
            // The ring is mapped, but every frame is copied into guest memory.
            zero_copy: false,
            hw_steering: false,
        }
    }

    fn ifname(&self) -> Option<&str> {
        Some(&self.ifname)
    }
}

/// Open `cfg.queues` AF_PACKET sockets on the existing interface `cfg.ifname`,
/// inside `cfg.netns` if given. Never changes the calling thread's namespace.
pub fn open_af_packet(cfg: &AfPacketConfig) -> Result<AfPacket, AfPacketError> {
    validate(cfg)?;
    let Some(ns) = cfg.netns.as_deref() else {
        return open_here(cfg);
    };
    netns::run_in(ns, || open_here(cfg)).map_err(|source| match source {
        NetnsError::NotFound { name } => AfPacketError::NetnsNotFound { name },
        source => AfPacketError::Netns {
            ifname: cfg.ifname.clone(),
            source,
        },
    })?
}

fn validate(cfg: &AfPacketConfig) -> Result<(), AfPacketError> {
    let name = &cfg.ifname;
    let bad = name.is_empty()
        || name.len() >= IFNAMSIZ
        || name == "."
        || name == ".."
        || name
            .chars()
            .any(|c| c == '/' || c == ':' || c == '%' || c == '\0' || c.is_whitespace());
    if bad {
        return Err(AfPacketError::InvalidName {
            ifname: name.clone(),
        });
    }
    if cfg.queues == 0 || cfg.queues > MAX_AF_PACKET_QUEUES {
        return Err(AfPacketError::InvalidQueues {
            ifname: name.clone(),
            queues: cfg.queues,
        });
    }
    let ring = cfg.ring;
    let reason = if !ring.block_size.is_power_of_two() || ring.block_size < 4096 {
        Some(format!(
            "block_size {} is not a power of two of at least 4096",
            ring.block_size
        ))
    } else if ring.block_size < FRAME_SIZE {
        Some(format!(
            "block_size {} is below {FRAME_SIZE}",
            ring.block_size
        ))
    } else if ring.block_nr == 0 {
        Some("block_nr is 0".to_owned())
    } else if ring_bytes(ring).is_none() {
        Some(format!(
            "{} blocks of {} bytes overflow",
            ring.block_nr, ring.block_size
        ))
    } else {
        None
    };
    match reason {
        Some(reason) => Err(AfPacketError::InvalidRing {
            ifname: name.clone(),
            reason,
        }),
        None => Ok(()),
    }
}

/// Bytes of one ring, if they fit the kernel's `unsigned int` frame count.
fn ring_bytes(ring: RingConfig) -> Option<usize> {
    let per_block = ring.block_size / FRAME_SIZE;
    per_block.checked_mul(ring.block_nr)?;
    usize::try_from(ring.block_size)
        .ok()?
        .checked_mul(usize::try_from(ring.block_nr).ok()?)
}

/// Everything after namespace selection; runs in the interface's namespace.
fn open_here(cfg: &AfPacketConfig) -> Result<AfPacket, AfPacketError> {
    let ifname = &cfg.ifname;
    let ifindex = packet_sys::ifindex(ifname).map_err(|source| {
        if source.raw_os_error() == Some(libc::ENODEV) {
            AfPacketError::NotFound {
                ifname: ifname.clone(),
                place: match &cfg.netns {
                    Some(ns) => format!("network namespace {ns}"),
                    None => "quiverd's network namespace".to_owned(),
                },
            }
        } else {
            AfPacketError::Lookup {
                ifname: ifname.clone(),
                source,
            }
        }
    })?;
    warn_if_down(ifname);
    let mut fanout_id = None;
    let mut queues = Vec::with_capacity(cfg.queues);
    for index in 0..cfg.queues {
        let (queue, id) = open_queue(cfg, index, ifindex, fanout_id)?;
        fanout_id = Some(id);
        queues.push(queue);
    }
    let fanout_id = fanout_id.unwrap_or(0);
    log::debug!(
        "AF_PACKET uplink on {ifname} (ifindex {ifindex}) with {} sockets in fanout group {fanout_id} in netns {:?}",
        queues.len(),
        cfg.netns
    );
    Ok(AfPacket {
        ifname: ifname.clone(),
        netns: cfg.netns.clone(),
        fanout_id,
        queues,
    })
}

/// An interface that is down receives nothing; quiverd leaves its state to the
/// operator (it did not create it), but says so.
fn warn_if_down(ifname: &str) {
    let Ok(ctl) = UnixDatagram::unbound() else {
        return;
    };
    let mut ifr = IfReq::new(ifname);
    if sys::ioctl_ifreq(ctl.as_fd(), IfReqIoctl::GetFlags, &mut ifr).is_ok()
        && ifr.flags() & sys::IFF_UP == 0
    {
        log::warn!("AF_PACKET uplink {ifname} is down: no frames until `ip link set {ifname} up`");
    }
}

/// One socket: options, ring, bind, promiscuous mode, fanout. `group` is the
/// fanout id of the uplink's first socket, `None` for that first socket.
fn open_queue(
    cfg: &AfPacketConfig,
    index: usize,
    ifindex: c_int,
    group: Option<u16>,
) -> Result<(AfPacketQueue, u16), AfPacketError> {
    let ifname = &cfg.ifname;
    let fd = packet_sys::packet_socket().map_err(|source| {
        if matches!(source.raw_os_error(), Some(libc::EPERM | libc::EACCES)) {
            AfPacketError::Permission {
                ifname: ifname.clone(),
                source,
            }
        } else {
            AfPacketError::Socket {
                ifname: ifname.clone(),
                queue: index,
                source,
            }
        }
    })?;
    let step = |step: &'static str| {
        move |source| AfPacketError::Setup {
            ifname: ifname.clone(),
            queue: index,
            step,
            source,
        }
    };
    let sock = fd.as_fd();
    packet_sys::set_int(sock, IntOpt::Version, TPACKET_V3).map_err(step("PACKET_VERSION"))?;
    // Before the ring: the kernel refuses PACKET_VNET_HDR once a ring exists.
    packet_sys::set_int(sock, IntOpt::VnetHdr, 1).map_err(step("PACKET_VNET_HDR"))?;
    let ring = cfg.ring;
    let req = TpacketReq3 {
        tp_block_size: ring.block_size,
        tp_block_nr: ring.block_nr,
        tp_frame_size: FRAME_SIZE,
        tp_frame_nr: (ring.block_size / FRAME_SIZE) * ring.block_nr,
        tp_retire_blk_tov: ring.retire_ms,
        tp_sizeof_priv: 0,
        tp_feature_req_word: 0,
    };
    const _: () = assert!(FRAME_SIZE as usize >= TPACKET3_HDRLEN);
    packet_sys::set_rx_ring(sock, &req).map_err(step("PACKET_RX_RING"))?;
    // validate() checked the product.
    let bytes = ring_bytes(ring).unwrap_or(0);
    let map = RingMap::map(sock, bytes).map_err(|source| AfPacketError::Map {
        ifname: ifname.clone(),
        queue: index,
        bytes,
        source,
    })?;
    let block_size = usize::try_from(ring.block_size).unwrap_or(0);
    let block_nr = usize::try_from(ring.block_nr).unwrap_or(0);
    let rx = RxRing::new(map, block_size, block_nr, true);
    packet_sys::set_int(sock, IntOpt::QdiscBypass, 1).map_err(step("PACKET_QDISC_BYPASS"))?;
    packet_sys::set_int(sock, IntOpt::IgnoreOutgoing, 1).map_err(step("PACKET_IGNORE_OUTGOING"))?;
    packet_sys::attach_filter(sock, &packet_sys::DROP_OUTGOING)
        .map_err(step("SO_ATTACH_FILTER"))?;
    packet_sys::bind(sock, ifindex, ETH_P_ALL).map_err(step("bind"))?;
    let mreq = PacketMreq {
        mr_ifindex: ifindex,
        mr_type: PACKET_MR_PROMISC,
        ..PacketMreq::default()
    };
    packet_sys::add_membership(sock, &mreq).map_err(step("PACKET_MR_PROMISC"))?;
    // The first socket asks the kernel for an unused group id; the others join it.
    let arg = match group {
        None => u32::from(PACKET_FANOUT_HASH | PACKET_FANOUT_FLAG_UNIQUEID) << 16,
        Some(id) => u32::from(id) | u32::from(PACKET_FANOUT_HASH) << 16,
    };
    packet_sys::set_int(
        sock,
        IntOpt::Fanout,
        c_int::from_ne_bytes(arg.to_ne_bytes()),
    )
    .map_err(step("PACKET_FANOUT"))?;
    let got = packet_sys::get_fanout(sock).map_err(step("PACKET_FANOUT (read back)"))?;
    let id = u16::try_from(got & 0xffff).unwrap_or(0);
    Ok((
        AfPacketQueue {
            ring: rx,
            fd,
            ring_full: AtomicU64::new(0),
            ring_freezes: AtomicU64::new(0),
        },
        id,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::netns::{unique_name, NetnsGuard};
    use std::time::{Duration, Instant};

    fn is_root() -> bool {
        // SAFETY: geteuid has no preconditions.
        unsafe { libc::geteuid() == 0 }
    }

    fn cfg(ifname: &str, netns: Option<&str>) -> AfPacketConfig {
        AfPacketConfig {
            ifname: ifname.to_owned(),
            queues: 2,
            netns: netns.map(str::to_owned),
            ring: RingConfig::default(),
        }
    }

    /// Two namespaces joined by a 4-queue veth pair: `a` in `ns_a` for the uplink,
    /// `b` in `ns_b` for the test's own sockets. Both are removed with the
    /// namespaces.
    struct Pair {
        ns_a: NetnsGuard,
        ns_b: NetnsGuard,
        a: String,
        b: String,
    }

    fn pair() -> Pair {
        let ns_a = NetnsGuard::new(unique_name("qpa")).unwrap();
        let ns_b = NetnsGuard::new(unique_name("qpb")).unwrap();
        let (a, b) = (unique_name("qa"), unique_name("qb"));
        let run = |ns: &NetnsGuard, args: &[&str]| {
            let out = ns.exec(args).unwrap();
            assert!(out.status.success(), "{args:?}: {out:?}");
        };
        run(
            &ns_a,
            &[
                "ip",
                "link",
                "add",
                &a,
                "numtxqueues",
                "4",
                "numrxqueues",
                "4",
                "mtu",
                "9000",
                "type",
                "veth",
                "peer",
                "name",
                &b,
                "netns",
                ns_b.name(),
                "mtu",
                "9000",
            ],
        );
        run(&ns_a, &["ip", "link", "set", &a, "up"]);
        run(&ns_b, &["ip", "link", "set", &b, "up"]);
        Pair { ns_a, ns_b, a, b }
    }

    /// A plain AF_PACKET socket on `b` for sending and capturing.
    fn peer_socket(p: &Pair) -> OwnedFd {
        let b = p.b.clone();
        netns::run_in(p.ns_b.name(), move || {
            let fd = packet_sys::packet_socket().unwrap();
            let index = packet_sys::ifindex(&b).unwrap();
            packet_sys::bind(fd.as_fd(), index, ETH_P_ALL).unwrap();
            fd
        })
        .unwrap()
    }

    fn send_raw(fd: &OwnedFd, frame: &[u8]) {
        let iov = [libc::iovec {
            iov_base: frame.as_ptr().cast_mut().cast(),
            iov_len: frame.len(),
        }];
        // SAFETY: `frame` outlives the call.
        unsafe { packet_sys::send_iov(fd.as_fd(), &iov) }.unwrap();
    }

    fn eth(dst: [u8; 6], ethertype: u16, len: usize, fill: u8) -> Vec<u8> {
        let mut f = vec![fill; len];
        f[..6].copy_from_slice(&dst);
        f[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x77]);
        f[12..14].copy_from_slice(&ethertype.to_be_bytes());
        f
    }

    /// Frames from any queue until `count` arrived or 3 s passed, leaving out
    /// the namespace's own chatter (IPv6 router solicitations and such): only
    /// frames from the test's source MAC count.
    fn recv_all(up: &AfPacket, count: usize) -> Vec<Vec<u8>> {
        let mut got = Vec::new();
        let mut buf = vec![0u8; 70_000];
        let deadline = Instant::now() + Duration::from_secs(3);
        while got.len() < count && Instant::now() < deadline {
            for q in up.queues() {
                while let Some(n) = q.recv(&mut buf).unwrap() {
                    if buf[VNET_HDR_LEN + 6..VNET_HDR_LEN + 12] == [0x02, 0, 0, 0, 0, 0x77] {
                        got.push(buf[..n].to_vec());
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        got
    }

    #[test]
    fn frames_cross_the_veth_both_ways_with_vlan_tags_intact() {
        if !is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        let p = pair();
        let up = open_af_packet(&cfg(&p.a, Some(p.ns_a.name()))).unwrap();
        assert_eq!(up.num_queues(), 2);
        assert_eq!(up.capabilities().rx_rings, 2);
        assert_eq!(up.kind(), UplinkKind::AfPacket);
        let peer = peer_socket(&p);

        // Untagged and VLAN 100 frames, many flows' worth over both sockets.
        let plain = eth([0x52, 0x54, 0, 0, 0, 1], 0x88b5, 60, 0xa1);
        let mut tagged = eth([0x52, 0x54, 0, 0, 0, 2], 0x8100, 64, 0xb2);
        tagged[14..18].copy_from_slice(&[0x00, 100, 0x88, 0xb5]);
        for _ in 0..20 {
            send_raw(&peer, &plain);
            send_raw(&peer, &tagged);
        }
        let got = recv_all(&up, 40);
        assert_eq!(got.len(), 40, "every frame arrives once");
        for f in &got {
            assert_eq!(&f[..12], &[0u8; 12], "no offload info for raw frames");
            let frame = &f[12..];
            assert!(frame == &plain[..] || frame == &tagged[..], "{frame:02x?}");
        }
        assert_eq!(got.iter().filter(|f| f[12..] == tagged[..]).count(), 20);

        // Our own transmissions are not received back (PACKET_IGNORE_OUTGOING),
        // and reach the peer.
        let out = eth([0x02, 0, 0, 0, 0, 0x77], 0x88b5, 100, 0xc3);
        let mut with_hdr = vec![0u8; VNET_HDR_LEN];
        with_hdr.extend_from_slice(&out);
        let iov = [
            libc::iovec {
                iov_base: with_hdr.as_ptr().cast_mut().cast(),
                iov_len: 7,
            },
            libc::iovec {
                iov_base: with_hdr[7..].as_ptr().cast_mut().cast(),
                iov_len: with_hdr.len() - 7,
            },
        ];
        for q in up.queues() {
            // SAFETY: `with_hdr` outlives the call.
            let n = unsafe { UplinkQueue::send(q, &iov) }.unwrap();
            assert_eq!(n, with_hdr.len());
        }
        let mut buf = vec![0u8; 2048];
        let mut seen = 0;
        let deadline = Instant::now() + Duration::from_secs(3);
        while seen < 2 && Instant::now() < deadline {
            // SAFETY: `buf` is writable for its length.
            let n = unsafe { libc::recv(peer.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if let Ok(n) = usize::try_from(n) {
                if buf[..n] == out[..] {
                    seen += 1;
                }
            } else {
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        assert_eq!(seen, 2, "both queues transmit");
        assert!(recv_all(&up, 1).is_empty(), "own TX not looped back");

        // Nor is what another socket of this host sends on the interface: the
        // fanout group's hook sees it as PACKET_OUTGOING and the filter drops it.
        let a = p.a.clone();
        let other = netns::run_in(p.ns_a.name(), move || {
            let fd = packet_sys::packet_socket().unwrap();
            let index = packet_sys::ifindex(&a).unwrap();
            packet_sys::bind(fd.as_fd(), index, ETH_P_ALL).unwrap();
            fd
        })
        .unwrap();
        send_raw(&other, &out);
        assert!(recv_all(&up, 1).is_empty(), "host TX not received");
        let counters = up.queues()[0].counters();
        assert_eq!((counters.truncated, counters.malformed), (0, 0));
    }

    fn poll_in(fd: RawFd, ms: c_int) -> libc::c_short {
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd on the stack.
        let r = unsafe { libc::poll(&mut pfd, 1, ms) };
        if r > 0 {
            pfd.revents
        } else {
            0
        }
    }

    /// Link down: poll reports the error once, `recv` hands it over, and then
    /// poll sleeps again instead of spinning on POLLERR; link up: frames flow.
    #[test]
    fn link_down_is_reported_once_and_link_up_resumes() {
        if !is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        let p = pair();
        let mut c = cfg(&p.a, Some(p.ns_a.name()));
        c.queues = 1;
        let up = open_af_packet(&c).unwrap();
        let q = &up.queues()[0];
        let fd = q.rx_fd().unwrap();
        let set = |state: &str| {
            let out = p.ns_a.exec(&["ip", "link", "set", &p.a, state]).unwrap();
            assert!(out.status.success());
        };
        set("down");
        assert_ne!(poll_in(fd, 1000) & libc::POLLERR, 0, "error reported");
        let mut buf = vec![0u8; 2048];
        let err = q.recv(&mut buf).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENETDOWN));
        assert_eq!(
            poll_in(fd, 100),
            0,
            "no POLLERR spin after the error was taken"
        );
        assert!(q.recv(&mut buf).unwrap().is_none());

        set("up");
        let peer = peer_socket(&p);
        let frame = eth([0x52, 0x54, 0, 0, 0, 1], 0x88b5, 60, 0x5a);
        let deadline = Instant::now() + Duration::from_secs(3);
        let mut got = None;
        while got.is_none() && Instant::now() < deadline {
            send_raw(&peer, &frame);
            std::thread::sleep(Duration::from_millis(20));
            while let Ok(Some(n)) = q.recv(&mut buf) {
                if buf[VNET_HDR_LEN..n] == frame[..] {
                    got = Some(n);
                }
            }
        }
        assert_eq!(got, Some(VNET_HDR_LEN + 60), "frames flow after link up");
    }

    #[test]
    fn frames_longer_than_a_block_or_the_buffer_are_counted_not_handed_up() {
        if !is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        let p = pair();
        let mut c = cfg(&p.a, Some(p.ns_a.name()));
        c.queues = 1;
        c.ring = RingConfig {
            block_size: 4096,
            block_nr: 4,
            retire_ms: 1,
        };
        let up = open_af_packet(&c).unwrap();
        let peer = peer_socket(&p);
        send_raw(&peer, &eth([0x52, 0x54, 0, 0, 0, 1], 0x88b5, 6000, 1));
        send_raw(&peer, &eth([0x52, 0x54, 0, 0, 0, 1], 0x88b5, 1000, 2));
        send_raw(&peer, &eth([0x52, 0x54, 0, 0, 0, 1], 0x88b5, 60, 3));
        let q = &up.queues()[0];
        let mut small = vec![0u8; 200];
        let deadline = Instant::now() + Duration::from_secs(3);
        let mut got = Vec::new();
        while q.counters().truncated < 2 && Instant::now() < deadline {
            if let Some(n) = q.recv(&mut small).unwrap() {
                got.push(n);
            }
        }
        assert_eq!(got, vec![VNET_HDR_LEN + 60]);
        assert_eq!(q.counters().truncated, 2, "6000 > block, 1000 > buffer");
    }

    /// A UDP datagram from the peer's stack leaves its checksum to the "NIC"
    /// (CHECKSUM_PARTIAL across the veth): PACKET_VNET_HDR hands that up as
    /// NEEDS_CSUM with csum_start/csum_offset, as a TAP would.
    #[test]
    fn partial_checksums_arrive_as_needs_csum() {
        if !is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        let p = pair();
        let up = open_af_packet(&cfg(&p.a, Some(p.ns_a.name()))).unwrap();
        let run = |args: &[&str]| {
            let out = p.ns_b.exec(args).unwrap();
            assert!(out.status.success(), "{args:?}: {out:?}");
        };
        run(&["ip", "addr", "add", "10.9.9.1/24", "dev", &p.b]);
        run(&[
            "ip",
            "neigh",
            "add",
            "10.9.9.2",
            "lladdr",
            "52:54:00:00:00:09",
            "dev",
            &p.b,
        ]);
        run(&[
            "python3",
            "-c",
            "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n\
             [s.sendto(b'quiver-csum-test',('10.9.9.2',9)) for _ in range(3)]",
        ]);
        let mut buf = vec![0u8; 70_000];
        let deadline = Instant::now() + Duration::from_secs(3);
        let hdr = loop {
            assert!(Instant::now() < deadline, "no UDP frame");
            let got = up.queues().iter().find_map(|q| {
                let n = q.recv(&mut buf).unwrap()?;
                // IPv4 (ethertype at 12 + 12) carrying UDP (protocol at 12 + 23).
                (n > 12 + 34 && buf[24..26] == [0x08, 0x00] && buf[12 + 23] == 17)
                    .then(|| buf[..12].to_vec())
            });
            match got {
                Some(hdr) => break hdr,
                None => std::thread::sleep(Duration::from_millis(2)),
            }
        };
        assert_eq!(hdr[0] & 1, 1, "NEEDS_CSUM: {hdr:02x?}");
        assert_eq!(u16::from_le_bytes([hdr[6], hdr[7]]), 34, "csum_start");
        assert_eq!(u16::from_le_bytes([hdr[8], hdr[9]]), 6, "csum_offset (UDP)");
    }

    /// A TCP stream from the peer's stack crosses the veth as TSO super-frames:
    /// they arrive whole, larger than the MTU, with gso_type TCPv4 and gso_size.
    #[test]
    fn tso_super_frames_arrive_whole_with_gso_info() {
        if !is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        let p = pair();
        let up = open_af_packet(&cfg(&p.a, Some(p.ns_a.name()))).unwrap();
        let run = |ns: &NetnsGuard, args: &[&str]| {
            let out = ns.exec(args).unwrap();
            assert!(out.status.success(), "{args:?}: {out:?}");
        };
        run(&p.ns_a, &["ip", "addr", "add", "10.9.8.2/24", "dev", &p.a]);
        run(&p.ns_b, &["ip", "addr", "add", "10.9.8.1/24", "dev", &p.b]);
        let server = std::process::Command::new("ip")
            .args(["netns", "exec", p.ns_a.name(), "python3", "-c"])
            .arg(
                "import socket\nl=socket.socket()\nl.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)\n\
                 l.bind(('10.9.8.2',5001))\nl.listen(1)\nl.settimeout(5)\nc,_=l.accept()\n\
                 n=0\nwhile n<2000000:\n  b=c.recv(65536)\n  if not b: break\n  n+=len(b)\n",
            )
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(300));
        run(
            &p.ns_b,
            &[
                "python3",
                "-c",
                "import socket\ns=socket.create_connection(('10.9.8.2',5001),timeout=5)\n\
                 s.sendall(bytes(2000000))\ns.close()",
            ],
        );
        let mut buf = vec![0u8; 70_000];
        let mut biggest = (0usize, [0u8; 12]);
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            for q in up.queues() {
                while let Some(n) = q.recv(&mut buf).unwrap() {
                    if n > biggest.0 {
                        biggest.0 = n;
                        biggest.1.copy_from_slice(&buf[..12]);
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let mut server = server;
        let _ = server.wait();
        let (len, hdr) = biggest;
        assert!(len > VNET_HDR_LEN + 1514, "no super-frame, largest {len}");
        assert_eq!(hdr[1] & 0x7f, 1, "gso_type TCPv4: {hdr:02x?}");
        assert!(
            u16::from_le_bytes([hdr[4], hdr[5]]) > 0,
            "gso_size: {hdr:02x?}"
        );
        assert_eq!(hdr[0] & 1, 1, "NEEDS_CSUM: {hdr:02x?}");
        let counters = up.queues()[0].counters();
        assert_eq!((counters.truncated, counters.malformed), (0, 0));
    }

    #[test]
    fn missing_interface_and_namespace_are_named() {
        if !is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        let err = open_af_packet(&cfg("qv-nope0", None)).unwrap_err();
        assert!(matches!(&err, AfPacketError::NotFound { ifname, .. } if ifname == "qv-nope0"));
        let text = err.to_string();
        assert!(
            text.contains("qv-nope0") && text.contains("never creates"),
            "{text}"
        );

        let ns = unique_name("qv-missing");
        let err = open_af_packet(&cfg("eth0", Some(&ns))).unwrap_err();
        assert!(matches!(&err, AfPacketError::NetnsNotFound { name } if *name == ns));
    }

    #[test]
    fn bad_settings_are_refused_before_any_socket() {
        let mut c = cfg("ok0", None);
        c.queues = 0;
        assert!(matches!(
            open_af_packet(&c),
            Err(AfPacketError::InvalidQueues { queues: 0, .. })
        ));
        for name in ["", "a/b", "0123456789abcdef", "with space"] {
            let err = open_af_packet(&cfg(name, None)).unwrap_err();
            assert!(matches!(err, AfPacketError::InvalidName { .. }), "{name:?}");
        }
        for (block_size, block_nr) in [(3000, 4), (1024, 4), (4096, 0), (1 << 31, 1 << 31)] {
            let mut c = cfg("ok0", None);
            c.ring.block_size = block_size;
            c.ring.block_nr = block_nr;
            let err = open_af_packet(&c).unwrap_err();
            assert!(
                matches!(err, AfPacketError::InvalidRing { .. }),
                "{block_size}x{block_nr}: {err}"
            );
        }
    }
}
