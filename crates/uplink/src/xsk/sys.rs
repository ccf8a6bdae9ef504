//! Raw AF_XDP interfaces (`<linux/if_xdp.h>`): the structs the socket options
//! and `bind` exchange with the kernel, and typed wrappers around the calls.
//!
//! Like `crate::sys`, this is FFI quarantine: every option number is paired
//! here with the type the kernel reads or writes for it.

use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;

use libc::{c_int, c_void, socklen_t};

/// `AF_XDP` / `PF_XDP` from `<linux/socket.h>`.
pub(crate) const AF_XDP: c_int = 44;
/// [`AF_XDP`] as `sxdp_family` holds it.
pub(crate) const AF_XDP_FAMILY: u16 = 44;
/// `SOL_XDP` from `<linux/socket.h>`.
pub(crate) const SOL_XDP: c_int = 283;

/// `sxdp_flags` bits.
/// Bind to the UMEM of the socket `sxdp_shared_umem_fd`; on the same
/// (device, queue) the two also share its fill and completion rings.
pub(crate) const XDP_SHARED_UMEM: u16 = 1 << 0;
pub(crate) const XDP_COPY: u16 = 1 << 1;
pub(crate) const XDP_ZEROCOPY: u16 = 1 << 2;
pub(crate) const XDP_USE_NEED_WAKEUP: u16 = 1 << 3;

/// Ring `flags` bit: the kernel needs a syscall to make progress.
pub(crate) const XDP_RING_NEED_WAKEUP: u32 = 1 << 0;

/// `mmap` offsets of the four rings.
pub(crate) const XDP_PGOFF_RX_RING: i64 = 0;
pub(crate) const XDP_PGOFF_TX_RING: i64 = 0x8000_0000;
pub(crate) const XDP_UMEM_PGOFF_FILL_RING: i64 = 0x1_0000_0000;
pub(crate) const XDP_UMEM_PGOFF_COMPLETION_RING: i64 = 0x1_8000_0000;

/// `struct sockaddr_xdp`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct SockaddrXdp {
    pub family: u16,
    pub flags: u16,
    pub ifindex: u32,
    pub queue_id: u32,
    pub shared_umem_fd: u32,
}

/// `struct xdp_ring_offset`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct RingOffset {
    pub producer: u64,
    pub consumer: u64,
    pub desc: u64,
    pub flags: u64,
}

/// `struct xdp_mmap_offsets` (the v2 layout, with `flags`; Linux ≥ 5.4).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct MmapOffsets {
    pub rx: RingOffset,
    pub tx: RingOffset,
    pub fr: RingOffset,
    pub cr: RingOffset,
}

/// `struct xdp_umem_reg`. Linux 6.8 added `tx_metadata_len` in what was tail
/// padding before, so the size (32) is the same for every kernel that takes
/// `flags`; zero means "no metadata" to those that know the field.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct UmemReg {
    pub addr: u64,
    pub len: u64,
    pub chunk_size: u32,
    pub headroom: u32,
    pub flags: u32,
    pub tx_metadata_len: u32,
}

/// `struct xdp_desc`: one RX or TX ring entry.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct XdpDesc {
    pub addr: u64,
    pub len: u32,
    pub options: u32,
}

/// `SOL_XDP` socket options, each with the value type the kernel expects.
#[derive(Clone, Copy, Debug)]
pub(crate) enum RingOpt {
    Rx,
    Tx,
    Fill,
    Completion,
}

impl RingOpt {
    fn optname(self) -> c_int {
        match self {
            RingOpt::Rx => 2,         // XDP_RX_RING
            RingOpt::Tx => 3,         // XDP_TX_RING
            RingOpt::Fill => 5,       // XDP_UMEM_FILL_RING
            RingOpt::Completion => 6, // XDP_UMEM_COMPLETION_RING
        }
    }

    /// The `mmap` page offset of this ring.
    pub(crate) fn pgoff(self) -> i64 {
        match self {
            RingOpt::Rx => XDP_PGOFF_RX_RING,
            RingOpt::Tx => XDP_PGOFF_TX_RING,
            RingOpt::Fill => XDP_UMEM_PGOFF_FILL_RING,
            RingOpt::Completion => XDP_UMEM_PGOFF_COMPLETION_RING,
        }
    }
}
const XDP_MMAP_OFFSETS: c_int = 1;
const XDP_UMEM_REG: c_int = 4;

fn check(ret: c_int) -> io::Result<()> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// `socket(AF_XDP, SOCK_RAW | SOCK_CLOEXEC, 0)`.
pub(crate) fn socket() -> io::Result<OwnedFd> {
    // SAFETY: plain syscall with integer arguments; no memory of ours is passed.
    let fd = unsafe { libc::socket(AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by socket(2), is valid and owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `setsockopt(SOL_XDP, XDP_UMEM_REG)`.
pub(crate) fn register_umem(fd: BorrowedFd<'_>, reg: &UmemReg) -> io::Result<()> {
    // SAFETY: `fd` is borrowed and stays open; the kernel reads at most
    // `size_of::<UmemReg>()` bytes from `reg`, a live repr(C) xdp_umem_reg.
    check(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            SOL_XDP,
            XDP_UMEM_REG,
            (reg as *const UmemReg).cast::<c_void>(),
            socklen(size_of::<UmemReg>()),
        )
    })
}

/// `setsockopt(SOL_XDP, XDP_*_RING)`: give a ring `entries` slots (a power of two).
pub(crate) fn set_ring_size(fd: BorrowedFd<'_>, ring: RingOpt, entries: u32) -> io::Result<()> {
    // SAFETY: `fd` is borrowed and stays open; the kernel reads one `int` from
    // `entries`, which lives on this stack frame for the call.
    check(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            SOL_XDP,
            ring.optname(),
            (&entries as *const u32).cast::<c_void>(),
            socklen(size_of::<u32>()),
        )
    })
}

/// `getsockopt(SOL_XDP, XDP_MMAP_OFFSETS)`.
pub(crate) fn mmap_offsets(fd: BorrowedFd<'_>) -> io::Result<MmapOffsets> {
    let mut off = MmapOffsets::default();
    let mut len = socklen(size_of::<MmapOffsets>());
    // SAFETY: `fd` is borrowed and stays open; the kernel writes at most `len`
    // bytes into `off`, a live, exclusively borrowed repr(C) xdp_mmap_offsets,
    // and writes the length it used into `len`.
    check(unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            SOL_XDP,
            XDP_MMAP_OFFSETS,
            (&mut off as *mut MmapOffsets).cast::<c_void>(),
            &mut len,
        )
    })?;
    if len as usize != size_of::<MmapOffsets>() {
        // A pre-5.4 kernel answers with the v1 layout (no ring flags).
        return Err(io::Error::from_raw_os_error(libc::EOPNOTSUPP));
    }
    Ok(off)
}

/// `bind(fd, sockaddr_xdp)`.
pub(crate) fn bind(fd: BorrowedFd<'_>, addr: &SockaddrXdp) -> io::Result<()> {
    // SAFETY: `fd` is borrowed and stays open; the kernel reads
    // `size_of::<SockaddrXdp>()` bytes from `addr`, a live repr(C) sockaddr_xdp.
    check(unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (addr as *const SockaddrXdp).cast::<libc::sockaddr>(),
            socklen(size_of::<SockaddrXdp>()),
        )
    })
}

/// `sendto(fd, NULL, 0, MSG_DONTWAIT)`: ask the kernel to process the TX ring.
/// EAGAIN / EBUSY / ENOBUFS / ENETDOWN mean "not now": the descriptors stay
/// in the ring and go with the next kick.
pub(crate) fn kick_tx(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: `fd` is borrowed and stays open; a zero-length send with null
    // buffer and address makes the kernel read no memory of ours.
    let ret = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            std::ptr::null(),
            0,
            libc::MSG_DONTWAIT,
            std::ptr::null(),
            0,
        )
    };
    if ret >= 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EAGAIN | libc::EBUSY | libc::ENOBUFS | libc::ENETDOWN | libc::EINTR) => Ok(()),
        _ => Err(err),
    }
}

/// `recvfrom(fd, NULL, 0, MSG_DONTWAIT)`: wake the kernel to refill from the
/// fill ring (needed only when the fill ring asks for it).
pub(crate) fn kick_rx(fd: BorrowedFd<'_>) {
    // SAFETY: `fd` is borrowed and stays open; a zero-length receive with null
    // buffer and address makes the kernel write no memory of ours.
    let _ = unsafe {
        libc::recvfrom(
            fd.as_raw_fd(),
            std::ptr::null_mut(),
            0,
            libc::MSG_DONTWAIT,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        )
    };
}

/// `BPF_MAP_DELETE_ELEM` from `<linux/bpf.h>`.
const BPF_MAP_DELETE_ELEM: c_int = 3;

/// The `BPF_MAP_*_ELEM` member of `union bpf_attr`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct BpfMapElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

/// `bpf(BPF_MAP_DELETE_ELEM)` of the `u32` key `key` (an XSKMAP index: aya
/// 0.13's `XskMap` can set an entry but not clear one). Clearing an empty
/// XSKMAP entry succeeds.
pub(crate) fn bpf_map_delete_u32(map: BorrowedFd<'_>, key: u32) -> io::Result<()> {
    let attr = BpfMapElemAttr {
        map_fd: u32::try_from(map.as_raw_fd())
            .map_err(|_e| io::Error::from_raw_os_error(libc::EBADF))?,
        key: (&key as *const u32) as u64,
        ..BpfMapElemAttr::default()
    };
    // SAFETY: `map` is borrowed and stays open for the call; the kernel reads
    // `size_of::<BpfMapElemAttr>()` bytes from `attr`, a live repr(C) prefix
    // of union bpf_attr (it treats the rest as zero), and through `attr.key`
    // reads the map's key size (4 bytes for an XSKMAP) from `key`, which
    // lives on this stack frame for the call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_DELETE_ELEM,
            &attr as *const BpfMapElemAttr,
            size_of::<BpfMapElemAttr>(),
        )
    };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `struct ethtool_channels` (`<linux/ethtool.h>`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct EthtoolChannels {
    pub cmd: u32,
    pub max_rx: u32,
    pub max_tx: u32,
    pub max_other: u32,
    pub max_combined: u32,
    pub rx_count: u32,
    pub tx_count: u32,
    pub other_count: u32,
    pub combined_count: u32,
}

/// `ETHTOOL_GCHANNELS`.
const ETHTOOL_GCHANNELS: u32 = 0x3c;

/// `struct ifreq` with the `ifr_data` pointer member, for SIOCETHTOOL.
#[repr(C)]
struct IfReqData {
    name: [u8; crate::sys::IFNAMSIZ],
    data: *mut c_void,
    _pad: [u64; 2],
}

/// Receive queues of `ifname` in the calling thread's network namespace, as the
/// driver reports them (`ethtool -l`): dedicated RX channels plus combined ones.
pub(crate) fn rx_queue_count(ifname: &str) -> io::Result<u32> {
    let mut ch = EthtoolChannels {
        cmd: ETHTOOL_GCHANNELS,
        ..EthtoolChannels::default()
    };
    let mut ifr = IfReqData {
        name: [0; crate::sys::IFNAMSIZ],
        data: (&mut ch as *mut EthtoolChannels).cast(),
        _pad: [0; 2],
    };
    let len = ifname.len().min(crate::sys::IFNAMSIZ - 1);
    ifr.name[..len].copy_from_slice(&ifname.as_bytes()[..len]);
    // SAFETY: plain syscall with integer arguments; no memory of ours is passed.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` was just returned by socket(2) and is owned by nobody else.
    let sock = unsafe { OwnedFd::from_raw_fd(raw) };
    // SAFETY: `sock` is open for the call; SIOCETHTOOL reads the ifreq (a live
    // repr(C) struct with a NUL-terminated name) and, for ETHTOOL_GCHANNELS,
    // reads and writes one `struct ethtool_channels` through `ifr.data`, which
    // points at the live, exclusively borrowed `ch`.
    check(unsafe {
        libc::ioctl(
            sock.as_raw_fd(),
            libc::SIOCETHTOOL,
            &mut ifr as *mut IfReqData,
        )
    })?;
    Ok(ch.rx_count.saturating_add(ch.combined_count))
}

fn socklen(n: usize) -> socklen_t {
    // Every size passed here is a small struct size, far below socklen_t::MAX.
    socklen_t::try_from(n).unwrap_or(socklen_t::MAX)
}

/// A private or shared memory mapping, unmapped on drop.
#[derive(Debug)]
pub(crate) struct Mmap {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain memory owned by this value; which parts may be
// touched from which thread is ruled by the ring protocol in `xsk.rs`, which
// guards every access with a lock or an atomic.
unsafe impl Send for Mmap {}
// SAFETY: as above: `Mmap` itself only hands out its base pointer and length.
unsafe impl Sync for Mmap {}

impl Mmap {
    /// Anonymous private memory for a UMEM, populated up front.
    pub(crate) fn anonymous(len: usize) -> io::Result<Mmap> {
        // SAFETY: a fresh anonymous mapping aliases no existing memory.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        Self::from_raw(ptr, len)
    }

    /// One of the socket's rings, shared with the kernel.
    pub(crate) fn ring(fd: BorrowedFd<'_>, ring: RingOpt, len: usize) -> io::Result<Mmap> {
        // SAFETY: `fd` is borrowed and stays open for the call; the kernel
        // maps its ring at a fresh address, aliasing no memory of ours.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd.as_raw_fd(),
                ring.pgoff(),
            )
        };
        Self::from_raw(ptr, len)
    }

    fn from_raw(ptr: *mut c_void, len: usize) -> io::Result<Mmap> {
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(ptr.cast::<u8>())
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOMEM))?;
        Ok(Mmap { ptr, len })
    }

    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

impl Drop for Mmap {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` describe a mapping made in `from_raw` and owned by
        // self; nothing borrows it any more once self is dropped.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{align_of, offset_of};

    // Sizes and offsets from <linux/if_xdp.h>, checked twice: against the
    // numbers of the header and against libc's own transcription.
    #[test]
    fn sockaddr_xdp_layout() {
        assert_eq!(size_of::<SockaddrXdp>(), 16);
        assert_eq!(size_of::<SockaddrXdp>(), size_of::<libc::sockaddr_xdp>());
        assert_eq!(align_of::<SockaddrXdp>(), align_of::<libc::sockaddr_xdp>());
        assert_eq!(offset_of!(SockaddrXdp, flags), 2);
        assert_eq!(offset_of!(SockaddrXdp, ifindex), 4);
        assert_eq!(offset_of!(SockaddrXdp, queue_id), 8);
        assert_eq!(offset_of!(SockaddrXdp, shared_umem_fd), 12);
        assert_eq!(
            offset_of!(SockaddrXdp, queue_id),
            offset_of!(libc::sockaddr_xdp, sxdp_queue_id)
        );
    }

    #[test]
    fn umem_reg_layout() {
        assert_eq!(size_of::<UmemReg>(), 32);
        assert_eq!(size_of::<UmemReg>(), size_of::<libc::xdp_umem_reg>());
        assert_eq!(offset_of!(UmemReg, len), 8);
        assert_eq!(offset_of!(UmemReg, chunk_size), 16);
        assert_eq!(offset_of!(UmemReg, headroom), 20);
        assert_eq!(offset_of!(UmemReg, flags), 24);
        assert_eq!(
            offset_of!(UmemReg, flags),
            offset_of!(libc::xdp_umem_reg, flags)
        );
    }

    #[test]
    fn mmap_offsets_layout() {
        assert_eq!(size_of::<RingOffset>(), 32);
        assert_eq!(size_of::<MmapOffsets>(), 128);
        assert_eq!(
            size_of::<MmapOffsets>(),
            size_of::<libc::xdp_mmap_offsets>()
        );
        assert_eq!(offset_of!(RingOffset, desc), 16);
        assert_eq!(offset_of!(RingOffset, flags), 24);
        assert_eq!(offset_of!(MmapOffsets, tx), 32);
        assert_eq!(offset_of!(MmapOffsets, fr), 64);
        assert_eq!(offset_of!(MmapOffsets, cr), 96);
        assert_eq!(
            offset_of!(MmapOffsets, cr),
            offset_of!(libc::xdp_mmap_offsets, cr)
        );
    }

    #[test]
    fn desc_layout() {
        assert_eq!(size_of::<XdpDesc>(), 16);
        assert_eq!(size_of::<XdpDesc>(), size_of::<libc::xdp_desc>());
        assert_eq!(offset_of!(XdpDesc, len), 8);
        assert_eq!(offset_of!(XdpDesc, options), 12);
    }

    #[test]
    fn bpf_map_elem_attr_layout() {
        assert_eq!(size_of::<BpfMapElemAttr>(), 32);
        assert_eq!(offset_of!(BpfMapElemAttr, key), 8);
        assert_eq!(offset_of!(BpfMapElemAttr, flags), 24);
    }

    #[test]
    fn ethtool_channels_layout() {
        assert_eq!(size_of::<EthtoolChannels>(), 36);
        assert_eq!(offset_of!(EthtoolChannels, rx_count), 20);
        assert_eq!(offset_of!(EthtoolChannels, combined_count), 32);
        assert_eq!(size_of::<IfReqData>(), size_of::<libc::ifreq>());
        assert_eq!(offset_of!(IfReqData, data), 16);
    }

    #[test]
    fn loopback_has_no_channels_to_report() {
        // `lo` has no get_channels: EOPNOTSUPP, not a crash or a bogus count.
        let err = rx_queue_count("lo").unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EOPNOTSUPP));
    }

    #[test]
    fn constants_match_libc() {
        assert_eq!(AF_XDP, libc::AF_XDP);
        assert_eq!(c_int::from(AF_XDP_FAMILY), libc::AF_XDP);
        assert_eq!(SOL_XDP, libc::SOL_XDP);
        assert_eq!(XDP_SHARED_UMEM, libc::XDP_SHARED_UMEM);
        assert_eq!(XDP_COPY, libc::XDP_COPY);
        assert_eq!(XDP_ZEROCOPY, libc::XDP_ZEROCOPY);
        assert_eq!(XDP_USE_NEED_WAKEUP, libc::XDP_USE_NEED_WAKEUP);
        assert_eq!(XDP_RING_NEED_WAKEUP, libc::XDP_RING_NEED_WAKEUP);
        assert_eq!(XDP_MMAP_OFFSETS, libc::XDP_MMAP_OFFSETS);
        assert_eq!(XDP_UMEM_REG, libc::XDP_UMEM_REG);
        assert_eq!(RingOpt::Rx.optname(), libc::XDP_RX_RING);
        assert_eq!(RingOpt::Tx.optname(), libc::XDP_TX_RING);
        assert_eq!(RingOpt::Fill.optname(), libc::XDP_UMEM_FILL_RING);
        assert_eq!(
            RingOpt::Completion.optname(),
            libc::XDP_UMEM_COMPLETION_RING
        );
        assert_eq!(XDP_PGOFF_TX_RING, libc::XDP_PGOFF_TX_RING);
        assert_eq!(
            XDP_UMEM_PGOFF_FILL_RING as u64,
            libc::XDP_UMEM_PGOFF_FILL_RING
        );
        assert_eq!(
            XDP_UMEM_PGOFF_COMPLETION_RING as u64,
            libc::XDP_UMEM_PGOFF_COMPLETION_RING
        );
    }
}
