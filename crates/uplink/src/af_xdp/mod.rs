//! The AF_XDP uplink: an XDP classifier on a kernel interface redirects the
//! frames of quiver's VNICs (by destination MAC and VLAN) and every broadcast /
//! multicast frame into one AF_XDP socket per queue; everything else carries on
//! to the kernel stack.
//!
//! Opening = look the interface up, load `bpf/classify.c` (built by build.rs,
//! embedded below) with aya, open and bind one [`Xsk`] per queue `0..queues`
//! and put each into the `xsks` XSKMAP at its queue index, then attach the
//! program (native mode, or generic "skb" mode). With a netns, all of it runs
//! on a helper thread inside that namespace. Dropping the uplink closes the
//! program's bpf_link, which detaches it.
//!
//! Frames carry no offload information over AF_XDP: received frames get an
//! all-zero virtio_net_hdr, and [`Capabilities::vnet_hdr`] is false so the
//! daemon finishes checksums and segments TSO frames before sending.
//!
//! [`Uplink::dedicate`] gives one VNIC a receive-only socket of its own on every
//! queue ([`AfXdpDedicated`]), sharing the queue socket's UMEM and fill ring
//! (`XDP_SHARED_UMEM`). The classifier's `vnic_macs` value is the VNIC's column:
//! 0 = the queues' shared sockets, c ≥ 1 = the dedicated sockets at XSKMAP index
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
use crate::uplink::{Capabilities, DedicatedRx, Uplink, UplinkError, UplinkKind, UplinkQueue};
use crate::xsk::{BindMode, Xsk, XskError, XskRx, XskTarget};

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
    /// Queues `0..queues` get a socket each.
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

/// One queue of an af_xdp uplink: its shared AF_XDP socket, owner of the
/// queue's UMEM (which dedicated sockets of the queue hold on to as well).
#[derive(Debug)]
pub struct AfXdpQueue {
    xsk: Arc<Xsk>,
}

impl UplinkQueue for AfXdpQueue {
    fn rx_fd(&self) -> Option<RawFd> {
        Some(self.xsk.raw_fd())
    }

    /// One frame from the RX ring, after a zeroed virtio_net_hdr. A frame
    /// longer than `buf` allows is cut short (like a TAP read).
    fn recv(&self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        self.xsk.recv(buf)
    }

    /// Copies the frame (without its virtio_net_hdr, which AF_XDP cannot
    /// carry) into a transmit frame and kicks the kernel. `ENOBUFS` when
    /// every transmit frame is still in flight.
    unsafe fn send(&self, iov: &[libc::iovec]) -> io::Result<usize> {
        // SAFETY: the caller upholds this fn's contract, which is Xsk::send's.
        unsafe { self.xsk.send(iov) }
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

    /// Whether every socket is bound in zero-copy mode.
    pub fn zero_copy(&self) -> bool {
        !self.queues.is_empty()
            && self
                .queues
                .iter()
                .all(|q| q.xsk.mode() == BindMode::ZeroCopy)
    }

    /// The classifier's verdict counters summed over CPUs: (frames redirected
    /// toward quiver, to shared and dedicated sockets alike; frames passed to
    /// the kernel).
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

    /// See [`Uplink::dedicate`]: one [`AfXdpDedicated`] per queue.
    pub fn dedicate_sockets(
        &self,
        mac: [u8; 6],
        vlan: u16,
    ) -> Result<Vec<AfXdpDedicated>, AfXdpError> {
        let key = ClassKey { mac, vlan };
        // Held throughout: no other dedicate takes the same column meanwhile.
        let mut steering = lock(&self.steering);
        match steering.classes.get(&key, 0) {
            Ok(_) => {}
            Err(MapError::KeyNotFound) => {
                return Err(AfXdpError::NotAClass {
                    ifname: self.ifname.clone(),
                    mac,
                    vlan,
                })
            }
            Err(e) => return Err(steering.map_err("vnic_macs")(e)),
        }
        if steering.column_of(&key) != 0 {
            return Err(AfXdpError::AlreadyDedicated {
                ifname: self.ifname.clone(),
                mac,
                vlan,
            });
        }
        let Some(column) = (1..=MAX_DEDICATED).find(|&c| steering.users[c] == 0) else {
            return Err(AfXdpError::NoFreeColumn {
                ifname: self.ifname.clone(),
            });
        };
        let column = u32::try_from(column).unwrap_or(u32::MAX);
        // The sockets must be created in the interface's namespace: bind
        // looks the ifindex up in the socket's. None is in the XSKMAP yet, so
        // on error they close holding no frame.
        let open_all = || -> Result<Vec<XskRx>, AfXdpError> {
            self.queues
                .iter()
                .enumerate()
                .map(|(queue, q)| {
                    q.xsk.open_rx(DEDICATED_RING_SIZE).map_err(|source| {
                        AfXdpError::DedicatedSocket {
                            ifname: self.ifname.clone(),
                            queue,
                            source,
                        }
                    })
                })
                .collect()
        };
        let sockets = match self.netns.as_deref() {
            None => open_all()?,
            Some(ns) => netns::run_in(ns, open_all).map_err(|source| AfXdpError::Netns {
                ifname: self.ifname.clone(),
                source,
            })??,
        };
        // Every socket in the XSKMAP before the first frame is steered to the
        // column: the classifier never finds half a set.
        let mut set: Vec<AfXdpDedicated> = Vec::with_capacity(self.queues.len());
        let mut result = Ok(());
        for (queue, rx) in sockets.into_iter().enumerate() {
            steering.users[column as usize] += 1;
            let set_result = steering.set_socket(xsk_index(column, queue), &rx);
            // Pushed even when the XSKMAP refused it: its drop undoes the rest.
            set.push(AfXdpDedicated {
                rx,
                queue,
                key,
                column,
                steering: Arc::clone(&self.steering),
            });
            if let Err(e) = set_result {
                result = Err(e);
                break;
            }
        }
        if result.is_ok() {
            steering.dedicated.push((key, column));
            result = steering
                .classes
                .insert(key, column, 0)
                .map_err(steering.map_err("vnic_macs"));
        }
        // The set's drop takes the lock.
        drop(steering);
        match result {
            Ok(()) => {
                log::info!(
                    "af_xdp {}: {mac:02x?} VLAN {vlan} has dedicated sockets (column {column})",
                    self.ifname
                );
                Ok(set)
            }
            Err(e) => {
                drop(set);
                Err(e)
            }
        }
    }
}

/// A VNIC's dedicated receive path on one queue of an af_xdp uplink: an AF_XDP
/// socket sharing the UMEM and fill ring of the queue's shared socket, into
/// which the classifier steers that VNIC's frames arriving on the queue.
///
/// Dropping it (any one of the VNIC's set) steers the VNIC back to the shared
/// sockets, takes this socket out of the XSKMAP, gives every frame in its RX
/// ring back to the fill ring (again after [`IN_FLIGHT_GRACE`]), then closes it.
pub struct AfXdpDedicated {
    // Dropped after `Drop::drop` has undone the steering: the socket (its
    // `XskRx` holds the queue's socket and UMEM alive until then).
    rx: XskRx,
    queue: usize,
    key: ClassKey,
    column: u32,
    steering: Arc<Mutex<Steering>>,
}

impl std::fmt::Debug for AfXdpDedicated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AfXdpDedicated")
            .field("rx", &self.rx)
            .field("queue", &self.queue)
            .field("key", &self.key)
            .field("column", &self.column)
            .finish_non_exhaustive()
    }
}

impl DedicatedRx for AfXdpDedicated {
    fn queue(&self) -> usize {
        self.queue
    }

    fn fd(&self) -> RawFd {
        self.rx.raw_fd()
    }

    /// At most [`crate::xsk::MAX_BURST`] (256) frames per call.
    fn recv_burst(&self, max: usize, f: &mut dyn FnMut(&[&[u8]])) -> io::Result<usize> {
        Ok(self.rx.recv_burst(max, f))
    }
}

impl Drop for AfXdpDedicated {
    fn drop(&mut self) {
        let mut guard = lock(&self.steering);
        let steering = &mut *guard;
        let ifname = steering.ifname.clone();
        // The first of the set to go steers the VNIC back to the shared
        // sockets (unless set_classes dropped it meanwhile: BPF_EXIST).
        if let Some(i) = steering
            .dedicated
            .iter()
            .position(|&(k, c)| k == self.key && c == self.column)
        {
            steering.dedicated.swap_remove(i);
            if steering.classes.get(&self.key, 0).is_ok() {
                const BPF_EXIST: u64 = 2;
                if let Err(e) = steering.classes.insert(self.key, 0, BPF_EXIST) {
                    log::warn!(
                        "af_xdp {ifname}: cannot steer {:02x?} VLAN {} back to the shared sockets: {}",
                        self.key.mac,
                        self.key.vlan,
                        chain(&e)
                    );
                }
            }
        }
        if let Err(e) = steering.clear_socket(xsk_index(self.column, self.queue)) {
            log::warn!(
                "af_xdp {ifname}: cannot take queue {}'s dedicated socket out of the XSKMAP: {e}",
                self.queue
            );
        }
        steering.users[self.column as usize] =
            steering.users[self.column as usize].saturating_sub(1);
        drop(guard);
        // A frame left in the RX ring when the socket closes is lost to the
        // pool for good: give them all back, then again once the redirects
        // other CPUs' NAPI polls made before the XSKMAP change have landed.
        let mut drained = self.rx.drain();
        std::thread::sleep(IN_FLIGHT_GRACE);
        drained += self.rx.drain();
        log::debug!(
            "af_xdp {ifname}: dedicated socket of {:02x?} VLAN {} on queue {} closed, {drained} frame(s) returned",
            self.key.mac,
            self.key.vlan,
            self.queue
        );
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
        Capabilities {
            rx_rings: self.queues.len(),
            tx_rings: self.queues.len(),
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
        queues.push(AfXdpQueue { xsk });
    }

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
        Ok(n) if usize::try_from(n).is_ok_and(|n| n > queues.len()) => log::warn!(
            "af_xdp {ifname}: the interface has {n} receive queues but queues = {}: frames \
             arriving on queues {}..{n} bypass quiverd (set queues = {n}, or `ethtool -L {ifname}`)",
            queues.len(),
            queues.len()
        ),
        Ok(_) => {}
        Err(e) => log::debug!("af_xdp {ifname}: cannot read its channel count: {e}"),
    }
    let zero_copy = queues.iter().all(|q| q.xsk.mode() == BindMode::ZeroCopy);
    log::info!(
        "af_xdp {ifname}: {} queue(s), XDP {} mode, {}",
        queues.len(),
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
mod tests {
    use super::*;
    use crate::uplink::{DedicatedRx, VNET_HDR_LEN};
    use std::mem::{offset_of, size_of};

    #[test]
    fn class_key_matches_the_c_struct() {
        assert_eq!(size_of::<ClassKey>(), 8);
        assert_eq!(offset_of!(ClassKey, vlan), 6);
    }

    #[test]
    fn permission_errors_are_found_anywhere_in_the_chain() {
        let eperm = io::Error::from_raw_os_error(libc::EPERM);
        assert!(permission_denied(&eperm));
        let wrapped = AfXdpError::Socket {
            ifname: "x".into(),
            queue: 0,
            source: XskError::Socket(io::Error::from_raw_os_error(libc::EACCES)),
        };
        assert!(permission_denied(&wrapped));
        assert!(!permission_denied(&io::Error::from_raw_os_error(
            libc::EINVAL
        )));
    }

    #[test]
    fn embedded_object_is_bpf_elf() {
        // ELF, 64-bit, little endian, machine EM_BPF (247).
        assert_eq!(&CLASSIFY_O[..4], b"\x7fELF");
        assert_eq!(CLASSIFY_O[4], 2);
        assert_eq!(u16::from_le_bytes([CLASSIFY_O[18], CLASSIFY_O[19]]), 247);
    }

    #[test]
    fn bad_configs_are_refused_before_touching_the_kernel() {
        let cfg = |ifname: &str, queues| AfXdpConfig {
            ifname: ifname.to_owned(),
            queues,
            netns: None,
            mode: XdpMode::Native,
        };
        assert!(matches!(
            open_af_xdp(&cfg("", 1)),
            Err(AfXdpError::InvalidName { .. })
        ));
        assert!(matches!(
            open_af_xdp(&cfg("0123456789abcdef", 1)),
            Err(AfXdpError::InvalidName { .. })
        ));
        assert!(matches!(
            open_af_xdp(&cfg("lo", 0)),
            Err(AfXdpError::InvalidQueues { queues: 0, .. })
        ));
        assert!(matches!(
            open_af_xdp(&cfg("lo", MAX_AF_XDP_QUEUES + 1)),
            Err(AfXdpError::InvalidQueues { .. })
        ));
        assert!(matches!(
            open_af_xdp(&cfg("qv-no-such-if", 1)),
            Err(AfXdpError::NoSuchInterface { .. })
        ));
    }

    fn is_root() -> bool {
        // SAFETY: geteuid has no preconditions and touches no memory.
        unsafe { libc::geteuid() == 0 }
    }

    fn ns_ok(ns: &netns::NetnsGuard, args: &[&str]) {
        let out = ns.exec(args).unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Sends `count` copies of `frame` from `dev` in `ns` through a packet socket.
    fn inject(ns: &netns::NetnsGuard, dev: &str, frame: &[u8], count: usize) {
        let bytes: Vec<String> = frame.iter().map(u8::to_string).collect();
        let script = format!(
            "import socket\ns=socket.socket(socket.AF_PACKET,socket.SOCK_RAW)\ns.bind(('{dev}',0))\n\
             f=bytes([{}])\n[s.send(f) for _ in range({count})]\n",
            bytes.join(",")
        );
        ns_ok(ns, &["python3", "-c", &script]);
    }

    fn recv_all(up: &AfXdp, want: usize) -> Vec<Vec<u8>> {
        let mut got = Vec::new();
        let mut buf = vec![0u8; 4096];
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
        while got.len() < want && std::time::Instant::now() < deadline {
            let mut idle = true;
            for q in 0..up.num_queues() {
                let queue = up.queue(q).unwrap();
                while let Some(n) = queue.recv(&mut buf).unwrap() {
                    got.push(buf[..n].to_vec());
                    idle = false;
                }
            }
            if idle {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
        got
    }

    /// A veth pair inside a test namespace: frames to a registered MAC and
    /// broadcasts reach the sockets, others do not; frames sent go out.
    #[test]
    fn veth_frames_are_classified_into_the_sockets() {
        if !is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        classify_on_veth(XdpMode::Native);
    }

    /// The same in generic XDP: what a driver without native XDP falls back to.
    #[test]
    fn veth_frames_are_classified_in_skb_mode() {
        if !is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        classify_on_veth(XdpMode::Skb);
    }

    fn classify_on_veth(mode: XdpMode) {
        let ns = netns::NetnsGuard::new(netns::unique_name("qvx")).unwrap();
        // No IPv6 on the pair: its ND / MLD frames would muddle the counts.
        ns_ok(
            &ns,
            &["sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1"],
        );
        ns_ok(
            &ns,
            &[
                "ip",
                "link",
                "add",
                "xa",
                "numtxqueues",
                "2",
                "numrxqueues",
                "2",
                "type",
                "veth",
                "peer",
                "name",
                "xb",
                "numtxqueues",
                "2",
                "numrxqueues",
                "2",
            ],
        );
        ns_ok(&ns, &["ip", "link", "set", "xa", "up"]);
        ns_ok(&ns, &["ip", "link", "set", "xb", "up"]);
        let up = open_af_xdp(&AfXdpConfig {
            ifname: "xa".into(),
            queues: 2,
            netns: Some(ns.name().to_owned()),
            mode,
        })
        .unwrap();
        assert_eq!(up.mode(), mode);
        // What the queue-count warning compares against (`ethtool -l`).
        let rx_queues = netns::run_in(ns.name(), || crate::xsk::rx_queue_count("xa"));
        assert_eq!(rx_queues.unwrap().unwrap(), 2);
        assert!(!up.capabilities().vnet_hdr);
        let mac = [0x52, 0x54, 0, 0, 0, 9];
        up.set_classes(&[(mac, 0), ([0x52, 0x54, 0, 0, 0, 10], 7)])
            .unwrap();

        let frame = |dst: [u8; 6], tag: Option<u16>| {
            let mut f = dst.to_vec();
            f.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x77]);
            if let Some(v) = tag {
                f.extend_from_slice(&[0x81, 0, 0, u8::try_from(v).unwrap()]);
            }
            f.extend_from_slice(&[0x88, 0xb5]);
            f.extend_from_slice(&[0xab; 50]);
            f
        };
        inject(&ns, "xb", &frame(mac, None), 5);
        inject(&ns, "xb", &frame([0xff; 6], None), 2);
        inject(&ns, "xb", &frame([0x52, 0x54, 0, 0, 0, 10], Some(7)), 3);
        // Not ours: wrong MAC, and right MAC on the wrong VLAN.
        inject(&ns, "xb", &frame([0x52, 0x54, 0, 0, 0, 11], None), 4);
        inject(&ns, "xb", &frame([0x52, 0x54, 0, 0, 0, 10], Some(8)), 4);
        // The kernel's own IPv6 multicast (MLD, ND) from xb comes too: keep
        // only the injected frames (source 02:00:00:00:00:77).
        let got: Vec<Vec<u8>> = recv_all(&up, 10)
            .into_iter()
            .filter(|f| f[18..24] == [0x02, 0, 0, 0, 0, 0x77])
            .collect();
        assert_eq!(got.len(), 10, "{got:02x?}");
        for f in &got {
            assert_eq!(&f[..VNET_HDR_LEN], &[0u8; VNET_HDR_LEN]);
        }
        let to = |dst: [u8; 6]| got.iter().filter(|f| f[12..18] == dst).count();
        assert_eq!(to(mac), 5);
        assert_eq!(to([0xff; 6]), 2);
        assert_eq!(to([0x52, 0x54, 0, 0, 0, 10]), 3);
        let (redirected, passed) = up.verdicts();
        assert!(redirected >= 10, "redirected {redirected}");
        assert!(passed >= 8, "passed {passed}");

        // Dropping the class stops the redirect.
        up.set_classes(&[]).unwrap();
        inject(&ns, "xb", &frame(mac, None), 3);
        assert!(!recv_all(&up, 1)
            .iter()
            .any(|f| f[18..24] == [0x02, 0, 0, 0, 0, 0x77]));

        // Transmit: 20 frames (more than one completion batch's worth of kicks).
        let mut hdr = [0u8; VNET_HDR_LEN];
        hdr[0] = 0;
        let out = frame([0x02, 0, 0, 0, 0, 0x77], None);
        let before = tx_packets(&ns, "xb");
        for _ in 0..20 {
            let iov = [
                libc::iovec {
                    iov_base: hdr.as_mut_ptr().cast(),
                    iov_len: hdr.len(),
                },
                libc::iovec {
                    iov_base: out.as_ptr().cast_mut().cast(),
                    iov_len: out.len(),
                },
            ];
            // SAFETY: both iovecs point at live local buffers of their length.
            let n = unsafe { up.queue(0).unwrap().send(&iov) }.unwrap();
            assert_eq!(n, VNET_HDR_LEN + out.len());
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert_eq!(tx_packets(&ns, "xb") - before, 20);
        drop(up);
        let out = ns.exec(&["ip", "link", "show", "xa"]).unwrap();
        assert!(
            !String::from_utf8_lossy(&out.stdout).contains("xdp"),
            "XDP program still attached after drop"
        );
    }

    /// Source MAC of every injected frame.
    const SRC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x77];
    const MAC_A: [u8; 6] = [0x52, 0x54, 0, 0, 0, 0x0a];
    const MAC_B: [u8; 6] = [0x52, 0x54, 0, 0, 0, 0x0b];

    fn test_frame(dst: [u8; 6], tag: Option<u16>) -> Vec<u8> {
        let mut f = dst.to_vec();
        f.extend_from_slice(&SRC);
        if let Some(v) = tag {
            f.extend_from_slice(&[0x81, 0, 0, u8::try_from(v).unwrap()]);
        }
        f.extend_from_slice(&[0x88, 0xb5]);
        f.extend_from_slice(&[0xab; 50]);
        f
    }

    /// An af_xdp uplink on `xa` (2 queues) of a veth pair `xa`/`xb` in a
    /// fresh test namespace, with classes A (untagged) and B (VLAN 7).
    fn veth_uplink() -> (netns::NetnsGuard, AfXdp) {
        let ns = netns::NetnsGuard::new(netns::unique_name("qvd")).unwrap();
        ns_ok(
            &ns,
            &["sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1"],
        );
        ns_ok(
            &ns,
            &[
                "ip",
                "link",
                "add",
                "xa",
                "numtxqueues",
                "2",
                "numrxqueues",
                "2",
                "type",
                "veth",
                "peer",
                "name",
                "xb",
                "numtxqueues",
                "2",
                "numrxqueues",
                "2",
            ],
        );
        ns_ok(&ns, &["ip", "link", "set", "xa", "up"]);
        ns_ok(&ns, &["ip", "link", "set", "xb", "up"]);
        let up = open_af_xdp(&AfXdpConfig {
            ifname: "xa".into(),
            queues: 2,
            netns: Some(ns.name().to_owned()),
            mode: XdpMode::Native,
        })
        .unwrap();
        up.set_classes(&[(MAC_A, 0), (MAC_B, 7)]).unwrap();
        (ns, up)
    }

    /// Injected frames (from [`SRC`]) the shared sockets receive, until `want`
    /// of them or 3 s; each without its virtio_net_hdr.
    fn recv_shared(up: &AfXdp, want: usize) -> Vec<Vec<u8>> {
        let mut got = Vec::new();
        let mut buf = vec![0u8; 4096];
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
        while got.len() < want && std::time::Instant::now() < deadline {
            let mut idle = true;
            for q in 0..up.num_queues() {
                let queue = up.queue(q).unwrap();
                while let Some(n) = queue.recv(&mut buf).unwrap() {
                    if buf[VNET_HDR_LEN + 6..VNET_HDR_LEN + 12] == SRC {
                        got.push(buf[VNET_HDR_LEN..n].to_vec());
                    }
                    idle = false;
                }
            }
            if idle {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
        got
    }

    /// Reads the shared sockets until they stay empty for 50 ms.
    fn drain_shared(up: &AfXdp) {
        let mut buf = vec![0u8; 4096];
        let mut idle_since = std::time::Instant::now();
        while idle_since.elapsed() < std::time::Duration::from_millis(50) {
            for q in 0..up.num_queues() {
                while up.queue(q).unwrap().recv(&mut buf).unwrap().is_some() {
                    idle_since = std::time::Instant::now();
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    /// Injected frames the dedicated sockets `set` receive, `max` at a time,
    /// until `want` of them or 3 s.
    fn recv_dedicated(set: &[Box<dyn DedicatedRx>], want: usize, max: usize) -> Vec<Vec<u8>> {
        let mut got = Vec::new();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
        while got.len() < want && std::time::Instant::now() < deadline {
            let mut idle = true;
            for d in set {
                let n = d
                    .recv_burst(max, &mut |frames| {
                        assert!(frames.len() <= max);
                        for f in frames {
                            if f[6..12] == SRC {
                                got.push(f.to_vec());
                            }
                        }
                    })
                    .unwrap();
                if n > 0 {
                    idle = false;
                }
            }
            if idle {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
        got
    }

    fn counter(up: &AfXdp, name: &str) -> u64 {
        up.kernel_counters()
            .into_iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v)
            .unwrap()
    }

    /// A dedicated VNIC's frames reach its own sockets only; other classes and
    /// broadcasts stay on the shared sockets; dropping the set (or one of it)
    /// steers the VNIC back to the shared sockets.
    #[test]
    fn dedicated_sockets_take_their_vnics_frames() {
        if !is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        let (ns, up) = veth_uplink();
        assert!(matches!(
            up.dedicate_sockets([0x52, 0x54, 0, 0, 0, 0x0c], 0),
            Err(AfXdpError::NotAClass { .. })
        ));
        let set = up.dedicate(MAC_A, 0).unwrap().unwrap();
        assert_eq!(set.len(), 2);
        assert_eq!(set.iter().map(|d| d.queue()).collect::<Vec<_>>(), [0, 1]);
        assert!(set.iter().all(|d| d.fd() >= 0));
        assert_ne!(set[0].fd(), set[1].fd());
        assert!(matches!(
            up.dedicate_sockets(MAC_A, 0),
            Err(AfXdpError::AlreadyDedicated { .. })
        ));
        // A reload with the same classes keeps A's column.
        up.set_classes(&[(MAC_B, 7), (MAC_A, 0)]).unwrap();

        let dedicated_before = counter(&up, "xdp_dedicated");
        inject(&ns, "xb", &test_frame(MAC_A, None), 5);
        inject(&ns, "xb", &test_frame(MAC_B, Some(7)), 3);
        inject(&ns, "xb", &test_frame([0xff; 6], None), 2);
        // The dedicated fds say when frames wait.
        let mut fds: Vec<libc::pollfd> = set
            .iter()
            .map(|d| libc::pollfd {
                fd: d.fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        // SAFETY: `fds` is a live array of `fds.len()` pollfds for the call.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), 2, 3000) };
        assert!(ready >= 1, "no dedicated socket became readable");
        let got = recv_dedicated(&set, 5, 2);
        assert_eq!(got.len(), 5, "{got:02x?}");
        assert!(got.iter().all(|f| f[..6] == MAC_A && f.len() == 64));
        let shared = recv_shared(&up, 5);
        assert_eq!(shared.len(), 5, "{shared:02x?}");
        assert!(!shared.iter().any(|f| f[..6] == MAC_A), "{shared:02x?}");
        assert_eq!(shared.iter().filter(|f| f[..6] == MAC_B).count(), 3);
        assert_eq!(shared.iter().filter(|f| f[..6] == [0xff; 6]).count(), 2);
        assert!(counter(&up, "xdp_dedicated") - dedicated_before >= 5);
        assert!(counter(&up, "xdp_redirected") >= 10);

        // Dropping the set: A's frames are the shared sockets' again.
        drop(set);
        let dedicated_after = counter(&up, "xdp_dedicated");
        inject(&ns, "xb", &test_frame(MAC_A, None), 4);
        let shared = recv_shared(&up, 4);
        assert_eq!(shared.len(), 4, "{shared:02x?}");
        assert!(shared.iter().all(|f| f[..6] == MAC_A));
        assert_eq!(counter(&up, "xdp_dedicated"), dedicated_after);

        // Dropping one socket of a set is enough; the column is reused only
        // once the whole set is gone.
        let mut set = up.dedicate(MAC_A, 0).unwrap().unwrap();
        let first = set.remove(0);
        drop(first);
        inject(&ns, "xb", &test_frame(MAC_A, None), 4);
        let shared = recv_shared(&up, 4);
        assert_eq!(shared.len(), 4, "{shared:02x?}");
        assert!(recv_dedicated(&set, 1, 8).is_empty());
        let set_b = up.dedicate(MAC_B, 7).unwrap().unwrap();
        inject(&ns, "xb", &test_frame(MAC_B, Some(7)), 3);
        assert_eq!(recv_dedicated(&set_b, 3, 8).len(), 3);
        assert!(recv_dedicated(&set, 1, 8).is_empty());
        drop(set);
        drop(set_b);
        drop(up);
    }

    /// Dedicating and dropping with frames waiting in the dedicated sockets
    /// and more arriving meanwhile loses no frame of the pool: afterwards the
    /// queues still receive more frames than the pool holds.
    #[test]
    fn dropping_dedicated_sockets_leaks_no_frames() {
        if !is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        let (ns, up) = veth_uplink();
        let frame = test_frame(MAC_A, None);
        for _ in 0..20 {
            let set = up.dedicate(MAC_A, 0).unwrap().unwrap();
            inject(&ns, "xb", &frame, 100);
            // At least one arrived, so the other 99 wait in the rings.
            assert_eq!(recv_dedicated(&set, 1, 1).len(), 1);
            std::thread::scope(|s| {
                s.spawn(|| inject(&ns, "xb", &frame, 200));
                std::thread::sleep(std::time::Duration::from_millis(5));
                drop(set);
            });
            // What reached the shared sockets after the drop.
            drain_shared(&up);
        }
        assert!(counter(&up, "xdp_dedicated") >= 20 * 100);
        // The pool has FRAMES / 2 = 2048 receive frames per queue.
        let mut total = 0;
        for _ in 0..8 {
            inject(&ns, "xb", &frame, 500);
            total += recv_shared(&up, 500).len();
        }
        assert!(total >= 3000, "only {total} of 4000 frames received");
    }

    /// Frames received by `dev` in `ns` (its rx_packets).
    fn tx_packets(ns: &netns::NetnsGuard, dev: &str) -> u64 {
        let out = ns
            .exec(&[
                "cat",
                &format!("/sys/class/net/{dev}/statistics/rx_packets"),
            ])
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
    }
}
