//! The AF_XDP uplink: an XDP classifier on a kernel interface redirects the
//! unicast frames of quiver's VNICs (by destination MAC and VLAN) into one
//! AF_XDP socket per queue; everything else carries on to the kernel stack,
//! broadcast and multicast included, so the host keeps using the interface
//! (ARP for its own address, IPv6 neighbour discovery).
//!
//! quiverd still floods group frames to the VNICs: one AF_PACKET socket on the
//! interface ([`group::GroupSocket`]) taps the broadcast and multicast frames
//! the kernel receives. It is the uplink's last queue: [`Uplink::num_queues`]
//! is `queues + 1`, queue `queues` reads group frames only and transmits
//! through the packet socket (so quiverd's per-pair choice of a transmit queue
//! and its per-queue counters work unchanged). [`Capabilities`] still counts
//! the hardware queues only.
//!
//! Opening = look the interface up, load `bpf/classify.c` (built by build.rs,
//! embedded below) with aya, open and bind one [`Xsk`] per queue `0..queues`
//! and put each into the `xsks` XSKMAP at its queue index, open the group
//! socket, then attach the program (native mode, or generic "skb" mode). With
//! a netns, all of it runs on a helper thread inside that namespace. Dropping
//! the uplink closes the program's bpf_link, which detaches it.
//!
//! Frames carry no offload information over AF_XDP: received frames get an
//! all-zero virtio_net_hdr, and [`Capabilities::vnet_hdr`] is false so the
//! daemon finishes checksums and segments TSO frames before sending.
//!
//! [`Uplink::dedicate`] gives one VNIC a receive-only socket of its own on every
//! AF_XDP queue ([`dedicated::AfXdpDedicated`]), sharing the queue socket's
//! UMEM and fill ring (`XDP_SHARED_UMEM`); the VNIC's group frames still come
//! through the group socket. The classifier's `vnic_macs` value is the VNIC's
//! column: 0 = the queues' shared sockets, c ≥ 1 = the dedicated sockets at
//! XSKMAP index
//! `c * MAX_AF_XDP_QUEUES + queue`. Setting up, sockets go into the XSKMAP before
//! the column goes into `vnic_macs`; tearing down (any one of the set dropping)
//! the column goes back to 0 first, then the socket leaves the XSKMAP, then its
//! RX ring is drained into the fill ring (twice, 1 ms apart, for redirects still
//! in flight on another CPU), then it closes.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, RawFd};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use aya::maps::{HashMap, Map, MapData, MapError, PerCpuArray, XskMap};
use aya::programs::{ProgramError, Xdp, XdpFlags};
use aya::{Ebpf, EbpfError, EbpfLoader};

use crate::netns::{self, NetnsError};
use crate::uplink::{
    Capabilities, DedicatedRx, Uplink, UplinkError, UplinkKind, UplinkQueue, WireFrame,
};
use crate::xsk::{BindMode, Xsk, XskError, XskRx, XskTarget};

mod dedicated;
mod group;

use group::GroupSocket;

/// The classifier, compiled by build.rs.
static CLASSIFY_O: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/classify.o"));

/// The most queues an af_xdp uplink may use: the width of one column of the
/// `xsks` XSKMAP (`MAX_QUEUES` in classify.c).
pub const MAX_AF_XDP_QUEUES: usize = 64;
/// The most VNICs with dedicated sockets at once on one uplink: the XSKMAP's
/// columns beyond the shared one (`MAX_DEDICATED` in classify.c).
pub const MAX_DEDICATED: usize = 63;
/// RX ring entries of a dedicated socket: the most frames of its queue's pool
/// a VNIC that falls behind can hold (the pool has `FRAMES / 2` = 2048).
pub const DEDICATED_RING_SIZE: u32 = 512;
/// How long a dedicated socket being closed waits, out of the XSKMAP, for
/// frames another CPU's NAPI poll redirected to it just before.
const IN_FLIGHT_GRACE: Duration = Duration::from_millis(1);
/// Entries of the `vnic_macs` map.
pub const MAX_CLASSES: usize = 4096;

/// Where the XDP program runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum XdpMode {
    /// In the driver (`XDP_FLAGS_DRV_MODE`); falls back to `Skb` with a warning
    /// when the driver has no XDP support.
    #[default]
    Native,
    /// Generic XDP on the skb (`XDP_FLAGS_SKB_MODE`): works on every device, slower.
    Skb,
}

impl XdpMode {
    /// The config-file spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            XdpMode::Native => "native",
            XdpMode::Skb => "skb",
        }
    }
}

/// How to open an af_xdp uplink.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AfXdpConfig {
    /// The existing interface to attach to.
    pub ifname: String,
    /// Queues `0..queues` get an AF_XDP socket each (the uplink has one
    /// queue more: the group socket).
    pub queues: usize,
    /// Network namespace the interface lives in; `None` = ours.
    pub netns: Option<String>,
    pub mode: XdpMode,
}

const SUGGESTION: &str = "use kind = \"af_packet\" or \"tap\" where AF_XDP is unavailable";

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum AfXdpError {
    #[error("invalid interface name {ifname:?}")]
    InvalidName { ifname: String },
    #[error("invalid queue count {queues} for {ifname} (expected 1..={MAX_AF_XDP_QUEUES})")]
    InvalidQueues { ifname: String, queues: usize },
    #[error("interface {ifname} not found")]
    NoSuchInterface { ifname: String },
    #[error("network namespace {name} not found (create it with `ip netns add {name}`)")]
    NetnsNotFound { name: String },
    #[error("cannot open af_xdp uplink {ifname} in its network namespace")]
    Netns {
        ifname: String,
        #[source]
        source: NetnsError,
    },
    #[error("not permitted to load the XDP classifier for {ifname}: needs root (CAP_BPF and CAP_NET_ADMIN); {SUGGESTION}")]
    NotPermitted {
        ifname: String,
        #[source]
        source: Box<EbpfError>,
    },
    #[error("cannot load the XDP classifier for {ifname} ({SUGGESTION})")]
    Load {
        ifname: String,
        #[source]
        source: Box<EbpfError>,
    },
    #[error("cannot load the XDP program for {ifname} ({SUGGESTION})")]
    Program {
        ifname: String,
        #[source]
        source: Box<ProgramError>,
    },
    #[error("cannot attach the XDP program to {ifname} in {mode} mode (another XDP program attached? {SUGGESTION})")]
    Attach {
        ifname: String,
        mode: &'static str,
        #[source]
        source: Box<ProgramError>,
    },
    #[error("the XDP classifier lacks its map {map}")]
    MissingMap { map: &'static str },
    #[error("cannot use the XDP classifier's map {map} on {ifname}")]
    Map {
        ifname: String,
        map: &'static str,
        #[source]
        source: Box<MapError>,
    },
    #[error("cannot open an AF_XDP socket on {ifname} queue {queue} ({SUGGESTION})")]
    Socket {
        ifname: String,
        queue: usize,
        #[source]
        source: XskError,
    },
    #[error("cannot open the broadcast / multicast socket on {ifname} ({step})")]
    GroupSocket {
        ifname: String,
        step: &'static str,
        #[source]
        source: io::Error,
    },
    #[error("{count} classes exceed the classifier's {MAX_CLASSES} entries on {ifname}")]
    TooManyClasses { ifname: String, count: usize },
    #[error("{mac:02x?} VLAN {vlan} is not a class of {ifname}: set_classes first")]
    NotAClass {
        ifname: String,
        mac: [u8; 6],
        vlan: u16,
    },
    #[error("{mac:02x?} VLAN {vlan} already has dedicated sockets on {ifname}")]
    AlreadyDedicated {
        ifname: String,
        mac: [u8; 6],
        vlan: u16,
    },
    #[error("all {MAX_DEDICATED} dedicated socket columns of {ifname} are in use")]
    NoFreeColumn { ifname: String },
    #[error("cannot open a dedicated AF_XDP socket on {ifname} queue {queue}")]
    DedicatedSocket {
        ifname: String,
        queue: usize,
        #[source]
        source: XskError,
    },
}

/// Key of the `vnic_macs` map: `struct class_key` in classify.c.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct ClassKey {
    mac: [u8; 6],
    /// VLAN id in host order; 0 = untagged.
    vlan: u16,
}

// SAFETY: ClassKey is repr(C), Copy, 8 bytes with no padding (checked in the
// tests), and every bit pattern is a valid value.
unsafe impl aya::Pod for ClassKey {}

/// One queue of an af_xdp uplink: a hardware queue's shared AF_XDP socket,
/// or (the last queue) the group socket.
#[derive(Debug)]
pub struct AfXdpQueue {
    socket: QueueSocket,
}

#[derive(Debug)]
enum QueueSocket {
    /// The queue's shared AF_XDP socket, owner of the queue's UMEM (which
    /// dedicated sockets of the queue hold on to as well).
    Xsk(Arc<Xsk>),
    /// Broadcast and multicast frames the kernel received, on any queue.
    Group(GroupSocket),
}

impl AfXdpQueue {
    fn xsk(&self) -> Option<&Arc<Xsk>> {
        match &self.socket {
            QueueSocket::Xsk(xsk) => Some(xsk),
            QueueSocket::Group(_) => None,
        }
    }
}

impl UplinkQueue for AfXdpQueue {
    fn rx_fd(&self) -> Option<RawFd> {
        Some(match &self.socket {
            QueueSocket::Xsk(xsk) => xsk.raw_fd(),
            QueueSocket::Group(group) => group.raw_fd(),
        })
    }

    /// One frame after a zeroed virtio_net_hdr. From an AF_XDP socket, a
    /// frame longer than `buf` allows is cut short (like a TAP read); the
    /// group socket skips it and counts it (`group_skipped`).
    fn recv(&self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        match &self.socket {
            QueueSocket::Xsk(xsk) => xsk.recv(buf),
            QueueSocket::Group(group) => group.recv(buf),
        }
    }

    /// From an AF_XDP socket: the frames where they lie in the UMEM, with a
    /// zeroed virtio_net_hdr. The group socket has no burst receive.
    fn recv_burst(
        &self,
        max: usize,
        f: &mut dyn FnMut(&[WireFrame<'_>]),
    ) -> Option<io::Result<usize>> {
        let QueueSocket::Xsk(xsk) = &self.socket else {
            return None;
        };
        Some(Ok(xsk.recv_burst(max, f)))
    }

    /// Sends the frame without its virtio_net_hdr (AF_XDP cannot carry one).
    /// On an AF_XDP socket: copied into a transmit frame, and the kernel is
    /// asked to transmit every 32 frames and at `flush`; `ENOBUFS` when every
    /// transmit frame is still in flight. On the group socket: one `sendmsg`.
    unsafe fn send(&self, iov: &[libc::iovec]) -> io::Result<usize> {
        match &self.socket {
            // SAFETY: the caller upholds this fn's contract, which is Xsk::send's.
            QueueSocket::Xsk(xsk) => unsafe { xsk.send(iov) },
            // SAFETY: the caller upholds this fn's contract, which is
            // GroupSocket::send's.
            QueueSocket::Group(group) => unsafe { group.send(iov) },
        }
    }

    /// One transmit syscall for what the AF_XDP socket queued.
    fn flush(&self) -> io::Result<()> {
        match &self.socket {
            QueueSocket::Xsk(xsk) => xsk.flush(),
            QueueSocket::Group(_) => Ok(()),
        }
    }
}

/// The classifier's maps that steer frames, and which VNICs are dedicated;
/// shared with the dedicated sockets, which undo their part on drop.
struct Steering {
    ifname: String,
    /// `vnic_macs`: (MAC, VLAN) -> column.
    classes: HashMap<MapData, ClassKey, u32>,
    /// `xsks`, the XSKMAP (kept as a `Map`: aya's `XskMap` cannot clear an entry).
    xsks: Map,
    /// The column of each VNIC with dedicated sockets.
    dedicated: Vec<(ClassKey, u32)>,
    /// Dedicated sockets alive per column (index 0, the shared column, unused):
    /// a column is free again only once every socket of it is gone.
    users: [usize; MAX_DEDICATED + 1],
}

impl Steering {
    fn map_err(&self, map: &'static str) -> impl Fn(MapError) -> AfXdpError + '_ {
        move |source| AfXdpError::Map {
            ifname: self.ifname.clone(),
            map,
            source: Box::new(source),
        }
    }

    /// The column `key`'s frames go to: its dedicated one, else 0.
    fn column_of(&self, key: &ClassKey) -> u32 {
        self.dedicated
            .iter()
            .find(|(k, _)| k == key)
            .map_or(0, |&(_, c)| c)
    }

    fn set_socket(&mut self, index: u32, xsk: &XskRx) -> Result<(), AfXdpError> {
        let ifname = &self.ifname;
        let map_err = |source| AfXdpError::Map {
            ifname: ifname.clone(),
            map: "xsks",
            source: Box::new(source),
        };
        XskMap::try_from(&mut self.xsks)
            .map_err(map_err)?
            .set(index, xsk.raw_fd(), 0)
            .map_err(map_err)
    }

    fn clear_socket(&self, index: u32) -> io::Result<()> {
        match &self.xsks {
            Map::XskMap(data) => crate::xsk::bpf_map_delete_u32(data.fd().as_fd(), index),
            _ => Err(io::Error::from_raw_os_error(libc::EINVAL)),
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every update of the steering state is a single map write or a Vec
    // change that a panic cannot leave half done: a poisoned lock is usable.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// XSKMAP index of `queue`'s socket in `column`.
fn xsk_index(column: u32, queue: usize) -> u32 {
    // column <= MAX_DEDICATED and queue < MAX_AF_XDP_QUEUES: far below u32::MAX.
    let index = column as usize * MAX_AF_XDP_QUEUES + queue;
    u32::try_from(index).unwrap_or(u32::MAX)
}

/// An interface with quiver's XDP classifier and one AF_XDP socket per queue.
pub struct AfXdp {
    ifname: String,
    netns: Option<String>,
    // Field order = drop order: the program (and its link) goes first, so no
    // frame is redirected to a socket being closed.
    _program: Ebpf,
    steering: Arc<Mutex<Steering>>,
    verdicts: PerCpuArray<MapData, u64>,
    queues: Vec<AfXdpQueue>,
    mode: XdpMode,
}

impl std::fmt::Debug for AfXdp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AfXdp")
            .field("ifname", &self.ifname)
            .field("netns", &self.netns)
            .field("queues", &self.queues)
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl AfXdp {
    /// Where the program ended up running.
    pub fn mode(&self) -> XdpMode {
        self.mode
    }

    /// The queues' shared AF_XDP sockets, in queue order (the group socket
    /// comes after them in `queues`).
    fn xsks(&self) -> impl Iterator<Item = &Arc<Xsk>> {
        self.queues.iter().filter_map(AfXdpQueue::xsk)
    }

    /// Whether every AF_XDP socket is bound in zero-copy mode.
    pub fn zero_copy(&self) -> bool {
        self.xsks().count() > 0 && self.xsks().all(|x| x.mode() == BindMode::ZeroCopy)
    }

    /// Group frames the group socket did not hand up (too long, malformed).
    pub fn group_skipped(&self) -> u64 {
        self.queues
            .iter()
            .map(|q| match &q.socket {
                QueueSocket::Group(group) => group.skipped(),
                QueueSocket::Xsk(_) => 0,
            })
            .sum()
    }

    /// The classifier's verdict counters summed over CPUs: (frames redirected
    /// toward quiver, to shared and dedicated sockets alike; frames passed to
    /// the kernel, broadcast and multicast included).
    pub fn verdicts(&self) -> (u64, u64) {
        (
            self.verdict(0).wrapping_add(self.verdict(2)),
            self.verdict(1),
        )
    }

    /// Frames the classifier redirected to dedicated sockets, summed over CPUs
    /// (a part of `verdicts().0`).
    pub fn dedicated_verdicts(&self) -> u64 {
        self.verdict(2)
    }

    /// Counter `i` of the `verdicts` map summed over CPUs: 0 = to a shared
    /// socket, 1 = passed, 2 = to a dedicated socket.
    fn verdict(&self, i: u32) -> u64 {
        self.verdicts
            .get(&i, 0)
            .map_or(0, |v| v.iter().fold(0u64, |a, b| a.wrapping_add(*b)))
    }

    fn set_classes_inner(&self, classes: &[([u8; 6], u16)]) -> Result<(), AfXdpError> {
        if classes.len() > MAX_CLASSES {
            return Err(AfXdpError::TooManyClasses {
                ifname: self.ifname.clone(),
                count: classes.len(),
            });
        }
        let map_err = |source| AfXdpError::Map {
            ifname: self.ifname.clone(),
            map: "vnic_macs",
            source: Box::new(source),
        };
        let want: Vec<ClassKey> = classes
            .iter()
            .map(|&(mac, vlan)| ClassKey { mac, vlan })
            .collect();
        let mut steering = lock(&self.steering);
        let steering = &mut *steering;
        // Add first, then remove the stale ones: a VNIC kept across a reload
        // never misses a frame. A dedicated VNIC keeps its column.
        for key in &want {
            let column = steering.column_of(key);
            steering.classes.insert(*key, column, 0).map_err(map_err)?;
        }
        let map = &mut steering.classes;
        let stale: Vec<ClassKey> = map
            .keys()
            .filter_map(Result::ok)
            .filter(|k| !want.contains(k))
            .collect();
        for key in stale {
            match map.remove(&key) {
                Ok(()) | Err(MapError::KeyNotFound) => {}
                Err(e) => return Err(map_err(e)),
            }
        }
        Ok(())
    }
}

impl Uplink for AfXdp {
    fn name(&self) -> &str {
        &self.ifname
    }

    fn kernel_counters(&self) -> Vec<(&'static str, u64)> {
        let (redirected, passed) = self.verdicts();
        vec![
            ("xdp_redirected", redirected),
            ("xdp_passed", passed),
            ("xdp_dedicated", self.dedicated_verdicts()),
            ("group_skipped", self.group_skipped()),
        ]
    }

    fn kind(&self) -> UplinkKind {
        UplinkKind::AfXdp
    }

    fn num_queues(&self) -> usize {
        self.queues.len()
    }

    fn queue(&self, index: usize) -> Option<&dyn UplinkQueue> {
        self.queues.get(index).map(|q| q as &dyn UplinkQueue)
    }

    fn capabilities(&self) -> Capabilities {
        // The hardware queues with an AF_XDP socket: the group socket is no
        // ring of the NIC's (it reads frames of every queue).
        let rings = self.xsks().count();
        Capabilities {
            rx_rings: rings,
            tx_rings: rings,
            vnet_hdr: false,
            zero_copy: self.zero_copy(),
            hw_steering: false,
        }
    }

    fn ifname(&self) -> Option<&str> {
        Some(&self.ifname)
    }

    fn set_classes(&self, classes: &[([u8; 6], u16)]) -> Result<(), UplinkError> {
        self.set_classes_inner(classes)
            .map_err(|e| UplinkError::Classes {
                uplink: self.ifname.clone(),
                source: Box::new(e),
            })
    }

    fn dedicate(
        &self,
        mac: [u8; 6],
        vlan: u16,
    ) -> Result<Option<Vec<Box<dyn DedicatedRx>>>, UplinkError> {
        let set = self
            .dedicate_sockets(mac, vlan)
            .map_err(|e| UplinkError::Classes {
                uplink: self.ifname.clone(),
                source: Box::new(e),
            })?;
        Ok(Some(
            set.into_iter()
                .map(|d| Box::new(d) as Box<dyn DedicatedRx>)
                .collect(),
        ))
    }
}

impl Drop for AfXdp {
    fn drop(&mut self) {
        // Dropping `program` closes its bpf_link, which detaches it; say so.
        log::debug!("af_xdp {}: detaching the XDP classifier", self.ifname);
    }
}

/// Opens an af_xdp uplink on `cfg.ifname` (inside `cfg.netns` if given).
/// Never changes the calling thread's namespace; on error nothing stays
/// attached.
pub fn open_af_xdp(cfg: &AfXdpConfig) -> Result<AfXdp, AfXdpError> {
    validate(cfg)?;
    let Some(ns) = cfg.netns.as_deref() else {
        return open_here(cfg);
    };
    netns::run_in(ns, || open_here(cfg)).map_err(|source| match source {
        NetnsError::NotFound { name } => AfXdpError::NetnsNotFound { name },
        source => AfXdpError::Netns {
            ifname: cfg.ifname.clone(),
            source,
        },
    })?
}

fn validate(cfg: &AfXdpConfig) -> Result<(), AfXdpError> {
    let name = &cfg.ifname;
    if name.is_empty()
        || name.len() >= crate::sys::IFNAMSIZ
        || name
            .chars()
            .any(|c| c == '/' || c == '\0' || c.is_whitespace())
    {
        return Err(AfXdpError::InvalidName {
            ifname: name.clone(),
        });
    }
    if cfg.queues == 0 || cfg.queues > MAX_AF_XDP_QUEUES {
        return Err(AfXdpError::InvalidQueues {
            ifname: name.clone(),
            queues: cfg.queues,
        });
    }
    Ok(())
}

/// `e` and its causes, for a log line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}

/// Whether an EPERM / EACCES is somewhere in `e`'s chain of causes.
fn permission_denied(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(e);
    while let Some(c) = cause {
        if c.downcast_ref::<io::Error>()
            .is_some_and(|io| io.kind() == io::ErrorKind::PermissionDenied)
        {
            return true;
        }
        cause = c.source();
    }
    false
}

fn if_index(ifname: &str) -> Result<u32, AfXdpError> {
    let missing = || AfXdpError::NoSuchInterface {
        ifname: ifname.to_owned(),
    };
    let c = CString::new(ifname).map_err(|_e| missing())?;
    // SAFETY: `c` is a NUL-terminated string that lives for the call.
    let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if index == 0 {
        return Err(missing());
    }
    Ok(index)
}

fn open_here(cfg: &AfXdpConfig) -> Result<AfXdp, AfXdpError> {
    let ifname = cfg.ifname.clone();
    let ifindex = if_index(&ifname)?;
    let mut program = EbpfLoader::new().load(CLASSIFY_O).map_err(|source| {
        if permission_denied(&source) {
            AfXdpError::NotPermitted {
                ifname: ifname.clone(),
                source: Box::new(source),
            }
        } else {
            AfXdpError::Load {
                ifname: ifname.clone(),
                source: Box::new(source),
            }
        }
    })?;
    let map_err = |map: &'static str| {
        let ifname = ifname.clone();
        move |source| AfXdpError::Map {
            ifname,
            map,
            source: Box::new(source),
        }
    };
    let take = |program: &mut Ebpf, map: &'static str| {
        program.take_map(map).ok_or(AfXdpError::MissingMap { map })
    };
    let classes: HashMap<MapData, ClassKey, u32> =
        HashMap::try_from(take(&mut program, "vnic_macs")?).map_err(map_err("vnic_macs"))?;
    let verdicts: PerCpuArray<MapData, u64> =
        PerCpuArray::try_from(take(&mut program, "verdicts")?).map_err(map_err("verdicts"))?;
    let mut xsks_map = take(&mut program, "xsks")?;
    let mut xsks: XskMap<&mut MapData> =
        XskMap::try_from(&mut xsks_map).map_err(map_err("xsks"))?;

    // Sockets first: the program redirects only to queues that have one.
    let mut queues = Vec::with_capacity(cfg.queues);
    for queue in 0..cfg.queues {
        let socket_err = |source| AfXdpError::Socket {
            ifname: ifname.clone(),
            queue,
            source,
        };
        let xsk = Arc::new(
            Xsk::open(XskTarget {
                ifindex,
                queue: u32::try_from(queue).unwrap_or(u32::MAX),
                try_zero_copy: true,
            })
            .map_err(socket_err)?,
        );
        xsks.set(u32::try_from(queue).unwrap_or(u32::MAX), xsk.as_fd(), 0)
            .map_err(map_err("xsks"))?;
        queues.push(AfXdpQueue {
            socket: QueueSocket::Xsk(xsk),
        });
    }
    // Before the program is attached: no group frame that bypasses the XSKs
    // goes unread.
    // Interface indexes are positive `int`s in the kernel: this always fits.
    let ifindex_c = libc::c_int::try_from(ifindex).unwrap_or(libc::c_int::MAX);
    let group = GroupSocket::open(ifindex_c).map_err(|e| AfXdpError::GroupSocket {
        ifname: ifname.clone(),
        step: e.step,
        source: e.source,
    })?;
    let xsk_queues = queues.len();

    let prog_err = |source| AfXdpError::Program {
        ifname: ifname.clone(),
        source: Box::new(source),
    };
    let xdp: &mut Xdp = program
        .program_mut("classify")
        .ok_or(AfXdpError::MissingMap { map: "classify" })?
        .try_into()
        .map_err(prog_err)?;
    xdp.load().map_err(prog_err)?;
    let mut mode = cfg.mode;
    if mode == XdpMode::Native {
        if let Err(e) = xdp.attach_to_if_index(ifindex, XdpFlags::DRV_MODE) {
            log::warn!(
                "af_xdp {ifname}: native XDP unavailable ({}), falling back to generic (skb) mode",
                chain(&e)
            );
            mode = XdpMode::Skb;
        }
    }
    if mode == XdpMode::Skb {
        xdp.attach_to_if_index(ifindex, XdpFlags::SKB_MODE)
            .map_err(|source| AfXdpError::Attach {
                ifname: ifname.clone(),
                mode: "skb",
                source: Box::new(source),
            })?;
    }
    // An AF_XDP socket sees only the queue it is bound to: frames the NIC (RSS)
    // puts on a queue without a socket reach the kernel, not the VNICs.
    match crate::xsk::rx_queue_count(&ifname) {
        Ok(n) if usize::try_from(n).is_ok_and(|n| n > xsk_queues) => log::warn!(
            "af_xdp {ifname}: the interface has {n} receive queues but queues = {xsk_queues}: \
             unicast frames arriving on queues {xsk_queues}..{n} bypass quiverd (set queues = {n}, \
             or `ethtool -L {ifname}`)"
        ),
        Ok(_) => {}
        Err(e) => log::debug!("af_xdp {ifname}: cannot read its channel count: {e}"),
    }
    let zero_copy = queues
        .iter()
        .filter_map(AfXdpQueue::xsk)
        .all(|x| x.mode() == BindMode::ZeroCopy);
    queues.push(AfXdpQueue {
        socket: QueueSocket::Group(group),
    });
    log::info!(
        "af_xdp {ifname}: {xsk_queues} AF_XDP queue(s) + 1 for broadcast / multicast, XDP {} mode, {}",
        mode.as_str(),
        if zero_copy { "zero-copy" } else { "copy mode" }
    );
    Ok(AfXdp {
        ifname,
        netns: cfg.netns.clone(),
        _program: program,
        steering: Arc::new(Mutex::new(Steering {
            ifname: cfg.ifname.clone(),
            classes,
            xsks: xsks_map,
            dedicated: Vec::new(),
            users: [0; MAX_DEDICATED + 1],
        })),
        verdicts,
        queues,
        mode,
    })
}

#[cfg(test)]
mod tests;
