//! The TAP uplink: a multi-queue TAP device with virtio_net_hdr, one tun fd
//! per queue, optionally living in another network namespace.
//!
//! Opening = per queue: open `/dev/net/tun` (O_NONBLOCK | O_CLOEXEC),
//! `TUNSETIFF` with `IFF_TAP | IFF_NO_PI | IFF_VNET_HDR | IFF_MULTI_QUEUE`, then
//! `TUNGETIFF` to check the kernel kept those flags; `TUNSETVNETLE` 1 and
//! `TUNSETVNETHDRSZ` 12; then device-wide `TUNSETOFFLOAD` 0, `SIOCSIFMTU`,
//! `IFF_UP` via `SIOCGIFFLAGS`/`SIOCSIFFLAGS`, and last `TUNSETPERSIST`.
//! With a netns, all of it runs on a helper thread inside that namespace.

use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixDatagram;

use libc::{c_int, c_uint, c_ulong};

use crate::netns::{self, NetnsError};
use crate::sys::{self, IfReq, IfReqIoctl, IntIoctl, ValueIoctl, IFNAMSIZ};
use crate::uplink::{Capabilities, Uplink, UplinkKind, UplinkQueue, VNET_HDR_LEN};

/// The tun driver's limit on queues per device (`MAX_TAP_QUEUES`).
pub const MAX_TAP_QUEUES: usize = 256;

const TUN_PATH: &str = "/dev/net/tun";

/// [`VNET_HDR_LEN`] as the `int` that `TUNSETVNETHDRSZ` reads.
const VNET_HDR_SZ: c_int = 12;
const _: () = assert!(VNET_HDR_SZ as usize == VNET_HDR_LEN);

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum TapError {
    #[error("invalid interface name {ifname:?}")]
    InvalidName { ifname: String },
    #[error("invalid queue count {queues} for {ifname} (expected 1..={MAX_TAP_QUEUES})")]
    InvalidQueues { ifname: String, queues: usize },
    #[error("invalid MTU {mtu} for {ifname}")]
    InvalidMtu { ifname: String, mtu: u32 },
    #[error("network namespace {name} not found (create it with `ip netns add {name}`)")]
    NetnsNotFound { name: String },
    #[error("cannot open TAP {ifname} in its network namespace")]
    Netns {
        ifname: String,
        #[source]
        source: NetnsError,
    },
    #[error("cannot open {TUN_PATH}")]
    OpenTun {
        #[source]
        source: io::Error,
    },
    #[error("cannot open control socket for {ifname}")]
    ControlSocket {
        ifname: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot look up interface {ifname}")]
    Lookup {
        ifname: String,
        #[source]
        source: io::Error,
    },
    #[error("existing interface {ifname} is not a multi-queue TAP")]
    NotMultiQueueTap {
        ifname: String,
        #[source]
        source: io::Error,
    },
    #[error("TAP {ifname} already has the maximum of {limit} queues")]
    TooManyQueues {
        ifname: String,
        limit: usize,
        #[source]
        source: io::Error,
    },
    #[error("cannot attach queue {queue} to TAP {ifname}")]
    Attach {
        ifname: String,
        queue: usize,
        #[source]
        source: io::Error,
    },
    #[error("TAP {ifname} has flags {got:#06x}, lacking {missing:#06x} (IFF_TAP|IFF_NO_PI|IFF_VNET_HDR|IFF_MULTI_QUEUE)")]
    Flags {
        ifname: String,
        got: i16,
        missing: i16,
    },
    #[error("cannot set vnet header size on TAP {ifname}")]
    VnetHdr {
        ifname: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot set offloads {flags:#x} on TAP {ifname}")]
    Offload {
        ifname: String,
        flags: c_uint,
        #[source]
        source: io::Error,
    },
    #[error("cannot set persist={persist} on TAP {ifname}")]
    Persist {
        ifname: String,
        persist: bool,
        #[source]
        source: io::Error,
    },
    #[error("cannot set MTU {mtu} on {ifname}")]
    Mtu {
        ifname: String,
        mtu: u32,
        #[source]
        source: io::Error,
    },
    #[error("cannot bring {ifname} up")]
    LinkUp {
        ifname: String,
        #[source]
        source: io::Error,
    },
}

/// How to open a TAP uplink.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TapConfig {
    /// Interface name (≤ 15 bytes). A `%d` template lets the kernel pick.
    pub ifname: String,
    /// Queues (tun fds) to attach, 1..=[`MAX_TAP_QUEUES`].
    pub queues: usize,
    /// Network namespace (`ip netns add` name) the TAP lives in; `None` = ours.
    pub netns: Option<String>,
    /// Keep the interface (and its addresses) after quiver closes its fds.
    pub persist: bool,
    /// MTU to set; `None` leaves the current one.
    pub mtu: Option<u32>,
}

/// One queue of a TAP: one non-blocking, close-on-exec tun fd.
///
/// Thread safety: several threads may call [`UplinkQueue::send`] on the same
/// queue at once, since each `writev` on a tun fd delivers exactly one whole
/// frame. `recv` is likewise one `read` = one whole frame, but two concurrent
/// readers of one queue would split its frames between them.
#[derive(Debug)]
pub struct TapQueue {
    fd: OwnedFd,
}

impl AsFd for TapQueue {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl UplinkQueue for TapQueue {
    fn rx_fd(&self) -> Option<RawFd> {
        Some(self.fd.as_raw_fd())
    }

    /// One `read`. `buf` should hold [`VNET_HDR_LEN`] + the largest frame (MTU +
    /// 14 (+4 for a VLAN tag), or 64 KiB once GSO offloads are on): the kernel
    /// silently truncates a longer frame to `buf.len()` (the returned length
    /// never exceeds it), and fails the read with `EINVAL` when `buf` cannot
    /// even hold the header; either way that frame is consumed.
    fn recv(&self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        loop {
            // SAFETY: the fd is owned by self and outlives the call; `buf` is an
            // exclusively borrowed, writable slice of exactly `buf.len()` bytes.
            let n = unsafe { libc::read(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            if let Ok(n) = usize::try_from(n) {
                // tun_put_user() writes a 10-byte virtio_net_hdr and skips the
                // rest of the configured 12: zero `num_buffers` ourselves.
                if let Some(num_buffers) = buf.get_mut(10..VNET_HDR_LEN) {
                    num_buffers.fill(0);
                }
                return Ok(Some(n));
            }
            let err = io::Error::last_os_error();
            match err.kind() {
                io::ErrorKind::WouldBlock => return Ok(None),
                io::ErrorKind::Interrupted => continue,
                _ => return Err(err),
            }
        }
    }

    /// One `writev` of the whole frame.
    unsafe fn send(&self, iov: &[libc::iovec]) -> io::Result<usize> {
        let count = c_int::try_from(iov.len())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        loop {
            // SAFETY: the fd is owned by self and outlives the call; `iov` is a
            // live slice of `count` iovecs, and the caller upholds this fn's
            // contract that each one is readable for `iov_len` bytes.
            let n = unsafe { libc::writev(self.fd.as_raw_fd(), iov.as_ptr(), count) };
            if let Ok(n) = usize::try_from(n) {
                return Ok(n);
            }
            let err = io::Error::last_os_error();
            if err.kind() != io::ErrorKind::Interrupted {
                return Err(err);
            }
        }
    }
}

/// A multi-queue TAP uplink. Dropping it closes every queue's fd; a TAP that is
/// not persistent then disappears.
#[derive(Debug)]
pub struct Tap {
    ifname: String,
    netns: Option<String>,
    queues: Vec<TapQueue>,
    created: bool,
}

impl Tap {
    /// The queues, in index order.
    pub fn queues(&self) -> &[TapQueue] {
        &self.queues
    }

    /// The namespace the TAP lives in (`None` = the daemon's).
    pub fn netns(&self) -> Option<&str> {
        self.netns.as_deref()
    }

    /// Whether `open_tap` created the interface (as opposed to attaching to an
    /// existing one).
    pub fn created(&self) -> bool {
        self.created
    }

    /// `TUNSETOFFLOAD`: tell the kernel which `TUN_F_*` offloads (checksum,
    /// TSO, UFO…) this reader accepts in received frames' vnet headers.
    /// The setting is device-wide. `open_tap` sets 0.
    pub fn set_offload(&self, flags: c_uint) -> Result<(), TapError> {
        for queue in &self.queues {
            sys::ioctl_value(
                queue.as_fd(),
                ValueIoctl::TunSetOffload,
                c_ulong::from(flags),
            )
            .map_err(|source| TapError::Offload {
                ifname: self.ifname.clone(),
                flags,
                source,
            })?;
        }
        Ok(())
    }
}

impl Uplink for Tap {
    fn name(&self) -> &str {
        &self.ifname
    }

    fn kind(&self) -> UplinkKind {
        UplinkKind::Tap
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
            zero_copy: false,
            hw_steering: false,
        }
    }

    fn ifname(&self) -> Option<&str> {
        Some(&self.ifname)
    }
}

/// Open (or create) the TAP `cfg.ifname` with `cfg.queues` queues, bring it up
/// and set its MTU, inside `cfg.netns` if given. Never changes the calling
/// thread's namespace.
///
/// An existing TAP must be multi-queue with vnet headers; its persistence is
/// left alone when `cfg.persist` is false (only a TAP we created is made
/// non-persistent). "Created" is decided by a lookup just before attaching, so
/// a TAP made by someone else in between counts as ours.
pub fn open_tap(cfg: &TapConfig) -> Result<Tap, TapError> {
    validate(cfg)?;
    let Some(ns) = cfg.netns.as_deref() else {
        return open_here(cfg);
    };
    netns::run_in(ns, || open_here(cfg)).map_err(|source| match source {
        NetnsError::NotFound { name } => TapError::NetnsNotFound { name },
        source => TapError::Netns {
            ifname: cfg.ifname.clone(),
            source,
        },
    })?
}

fn validate(cfg: &TapConfig) -> Result<(), TapError> {
    // The kernel's dev_valid_name(), plus at most one `%d` template.
    let name = &cfg.ifname;
    let bad = name.is_empty()
        || name.len() >= IFNAMSIZ
        || name == "."
        || name == ".."
        || name
            .chars()
            .any(|c| c == '/' || c == ':' || c == '\0' || c.is_whitespace())
        || name.matches('%').count() > 1
        || (name.contains('%') && !name.contains("%d"));
    if bad {
        return Err(TapError::InvalidName {
            ifname: name.clone(),
        });
    }
    if cfg.queues == 0 || cfg.queues > MAX_TAP_QUEUES {
        return Err(TapError::InvalidQueues {
            ifname: name.clone(),
            queues: cfg.queues,
        });
    }
    if let Some(mtu) = cfg.mtu {
        if c_int::try_from(mtu).is_err() {
            return Err(TapError::InvalidMtu {
                ifname: name.clone(),
                mtu,
            });
        }
    }
    Ok(())
}

/// Everything after namespace selection; runs in the TAP's namespace.
fn open_here(cfg: &TapConfig) -> Result<Tap, TapError> {
    // Bound to the current (helper thread's) namespace at creation.
    let ctl = UnixDatagram::unbound().map_err(|source| TapError::ControlSocket {
        ifname: cfg.ifname.clone(),
        source,
    })?;
    let existed = !cfg.ifname.contains('%') && link_exists(ctl.as_fd(), &cfg.ifname)?;

    let mut ifname = cfg.ifname.clone();
    let mut queues = Vec::with_capacity(cfg.queues);
    for index in 0..cfg.queues {
        let (queue, name) = attach_queue(&ifname, index, existed)?;
        // TUNSETIFF resolved any `%d` template on the first queue.
        ifname = name;
        queues.push(queue);
    }
    let tap = Tap {
        ifname,
        netns: cfg.netns.clone(),
        queues,
        created: !existed,
    };

    for queue in &tap.queues {
        let fd = queue.as_fd();
        let vnet = |source| TapError::VnetHdr {
            ifname: tap.ifname.clone(),
            source,
        };
        // VIRTIO 1.x headers are little endian and 12 bytes (virtio_net_hdr_v1).
        sys::ioctl_int(fd, IntIoctl::TunSetVnetLe, 1).map_err(vnet)?;
        sys::ioctl_int(fd, IntIoctl::TunSetVnetHdrSz, VNET_HDR_SZ).map_err(vnet)?;
    }
    tap.set_offload(0)?;
    if let Some(mtu) = cfg.mtu {
        set_mtu(ctl.as_fd(), &tap.ifname, mtu)?;
    }
    link_up(ctl.as_fd(), &tap.ifname)?;
    // Last, so that a failure above drops a TAP we created instead of leaking it.
    if cfg.persist || !existed {
        sys::ioctl_value(
            tap.queues[0].as_fd(),
            ValueIoctl::TunSetPersist,
            c_ulong::from(cfg.persist),
        )
        .map_err(|source| TapError::Persist {
            ifname: tap.ifname.clone(),
            persist: cfg.persist,
            source,
        })?;
    }
    log::debug!(
        "TAP {} {} with {} queues in netns {:?}",
        tap.ifname,
        if existed { "opened" } else { "created" },
        tap.queues.len(),
        tap.netns
    );
    Ok(tap)
}

/// Whether `ifname` exists in the current namespace (SIOCGIFINDEX).
fn link_exists(ctl: BorrowedFd<'_>, ifname: &str) -> Result<bool, TapError> {
    let mut ifr = IfReq::new(ifname);
    match sys::ioctl_ifreq(ctl, IfReqIoctl::GetIndex, &mut ifr) {
        Ok(()) => Ok(true),
        Err(err) if err.raw_os_error() == Some(libc::ENODEV) => Ok(false),
        Err(source) => Err(TapError::Lookup {
            ifname: ifname.to_owned(),
            source,
        }),
    }
}

/// Open one tun fd and attach it to `ifname`; returns it with the name the
/// kernel reports.
fn attach_queue(ifname: &str, index: usize, existed: bool) -> Result<(TapQueue, String), TapError> {
    // std opens with O_CLOEXEC; the data path wants O_NONBLOCK.
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(TUN_PATH)
        .map_err(|source| TapError::OpenTun { source })?;
    let fd = OwnedFd::from(file);

    let mut ifr = IfReq::new(ifname);
    ifr.set_flags(sys::TAP_FLAGS);
    if let Err(source) = sys::ioctl_ifreq(fd.as_fd(), IfReqIoctl::TunSetIff, &mut ifr) {
        let ifname = ifname.to_owned();
        // tun_set_iff(): EINVAL for an existing device that is not a TAP or whose
        // IFF_MULTI_QUEUE differs; E2BIG past MAX_TAP_QUEUES.
        return Err(match source.raw_os_error() {
            Some(libc::EINVAL) if existed || index > 0 => {
                TapError::NotMultiQueueTap { ifname, source }
            }
            Some(libc::E2BIG) => TapError::TooManyQueues {
                ifname,
                limit: MAX_TAP_QUEUES,
                source,
            },
            _ => TapError::Attach {
                ifname,
                queue: index,
                source,
            },
        });
    }

    // Check the kernel's answer: when other queues are already attached, the
    // kernel keeps the device's flags and ignores ours (e.g. no IFF_VNET_HDR).
    let mut got = IfReq::new(ifname);
    sys::ioctl_ifreq(fd.as_fd(), IfReqIoctl::TunGetIff, &mut got).map_err(|source| {
        TapError::Attach {
            ifname: ifname.to_owned(),
            queue: index,
            source,
        }
    })?;
    let missing = sys::TAP_FLAGS & !got.flags();
    if missing != 0 {
        return Err(TapError::Flags {
            ifname: got.name(),
            got: got.flags(),
            missing,
        });
    }
    Ok((TapQueue { fd }, got.name()))
}

fn set_mtu(ctl: BorrowedFd<'_>, ifname: &str, mtu: u32) -> Result<(), TapError> {
    let mtu_err = |source| TapError::Mtu {
        ifname: ifname.to_owned(),
        mtu,
        source,
    };
    let value = c_int::try_from(mtu)
        .map_err(|e| mtu_err(io::Error::new(io::ErrorKind::InvalidInput, e)))?;
    let mut ifr = IfReq::new(ifname);
    ifr.set_int(value);
    sys::ioctl_ifreq(ctl, IfReqIoctl::SetMtu, &mut ifr).map_err(mtu_err)
}

fn link_up(ctl: BorrowedFd<'_>, ifname: &str) -> Result<(), TapError> {
    let up_err = |source| TapError::LinkUp {
        ifname: ifname.to_owned(),
        source,
    };
    let mut ifr = IfReq::new(ifname);
    sys::ioctl_ifreq(ctl, IfReqIoctl::GetFlags, &mut ifr).map_err(up_err)?;
    if ifr.flags() & sys::IFF_UP == 0 {
        ifr.set_flags(ifr.flags() | sys::IFF_UP);
        sys::ioctl_ifreq(ctl, IfReqIoctl::SetFlags, &mut ifr).map_err(up_err)?;
    }
    Ok(())
}
