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

use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, RawFd};
use std::sync::Mutex;

use aya::maps::{HashMap, MapData, MapError, PerCpuArray, XskMap};
use aya::programs::{ProgramError, Xdp, XdpFlags};
use aya::{Ebpf, EbpfError, EbpfLoader};

use crate::netns::{self, NetnsError};
use crate::uplink::{Capabilities, Uplink, UplinkError, UplinkKind, UplinkQueue};
use crate::xsk::{BindMode, Xsk, XskError, XskTarget};

/// The classifier, compiled by build.rs.
static CLASSIFY_O: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/classify.o"));

/// Entries of the `xsks` XSKMAP: the most queues an af_xdp uplink may use.
pub const MAX_AF_XDP_QUEUES: usize = 64;
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

/// One queue of an af_xdp uplink: one AF_XDP socket.
#[derive(Debug)]
pub struct AfXdpQueue {
    xsk: Xsk,
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

/// An interface with quiver's XDP classifier and one AF_XDP socket per queue.
pub struct AfXdp {
    ifname: String,
    netns: Option<String>,
    // Field order = drop order: the program (and its link) goes first, so no
    // frame is redirected to a socket being closed.
    _program: Ebpf,
    classes: Mutex<HashMap<MapData, ClassKey, u32>>,
    verdicts: PerCpuArray<MapData, u64>,
    _xsks: XskMap<MapData>,
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
    /// toward quiver, frames passed to the kernel).
    pub fn verdicts(&self) -> (u64, u64) {
        let sum = |i: u32| {
            self.verdicts
                .get(&i, 0)
                .map_or(0, |v| v.iter().fold(0u64, |a, b| a.wrapping_add(*b)))
        };
        (sum(0), sum(1))
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
        let mut map = self
            .classes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Add first, then remove the stale ones: a VNIC kept across a reload
        // never misses a frame.
        for (slot, key) in want.iter().enumerate() {
            let slot = u32::try_from(slot).unwrap_or(u32::MAX);
            map.insert(*key, slot, 0).map_err(map_err)?;
        }
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
        vec![("xdp_redirected", redirected), ("xdp_passed", passed)]
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
    let mut xsks: XskMap<MapData> =
        XskMap::try_from(take(&mut program, "xsks")?).map_err(map_err("xsks"))?;

    // Sockets first: the program redirects only to queues that have one.
    let mut queues = Vec::with_capacity(cfg.queues);
    for queue in 0..cfg.queues {
        let socket_err = |source| AfXdpError::Socket {
            ifname: ifname.clone(),
            queue,
            source,
        };
        let xsk = Xsk::open(XskTarget {
            ifindex,
            queue: u32::try_from(queue).unwrap_or(u32::MAX),
            try_zero_copy: true,
        })
        .map_err(socket_err)?;
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
        classes: Mutex::new(classes),
        verdicts,
        _xsks: xsks,
        queues,
        mode,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::uplink::VNET_HDR_LEN;
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
