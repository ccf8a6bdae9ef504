//! Raw AF_PACKET interfaces for the `af_packet` uplink: the structs of
//! `<linux/if_packet.h>` a TPACKET_V3 ring uses, and typed wrappers around the
//! socket calls, so that `af_packet.rs` and `packet_ring.rs` hold no FFI of their
//! own beyond reading the mapped ring.
//!
//! Every `setsockopt` is paired here with the argument type the kernel reads for
//! that option, so a caller cannot hand the kernel a shorter buffer than it reads.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;

use libc::{c_int, c_uint, c_void, socklen_t};

/// `AF_PACKET` as the `unsigned short` of `sll_family` (17; checked in tests).
const AF_PACKET_FAMILY: u16 = 17;

/// `ETH_P_ALL` (`<linux/if_ether.h>`): every protocol.
pub(crate) const ETH_P_ALL: u16 = 0x0003;

/// `SOL_PACKET` options (`<linux/if_packet.h>`).
pub(crate) const PACKET_ADD_MEMBERSHIP: c_int = 1;
pub(crate) const PACKET_RX_RING: c_int = 5;
pub(crate) const PACKET_STATISTICS: c_int = 6;
pub(crate) const PACKET_VERSION: c_int = 10;
pub(crate) const PACKET_VNET_HDR: c_int = 15;
pub(crate) const PACKET_FANOUT: c_int = 18;
pub(crate) const PACKET_QDISC_BYPASS: c_int = 20;
pub(crate) const PACKET_IGNORE_OUTGOING: c_int = 23;

/// `enum tpacket_versions`: TPACKET_V1 = 0, V2 = 1, V3 = 2.
pub(crate) const TPACKET_V3: c_int = 2;

/// `PACKET_MR_PROMISC` for `struct packet_mreq.mr_type`.
pub(crate) const PACKET_MR_PROMISC: u16 = 1;

/// Fanout modes and flags (the upper 16 bits of the PACKET_FANOUT argument).
pub(crate) const PACKET_FANOUT_HASH: u16 = 0;
pub(crate) const PACKET_FANOUT_FLAG_UNIQUEID: u16 = 0x2000;

/// `tp_status` / `block_status` bits.
pub(crate) const TP_STATUS_KERNEL: u32 = 0;
pub(crate) const TP_STATUS_USER: u32 = 1 << 0;
pub(crate) const TP_STATUS_VLAN_VALID: u32 = 1 << 4;
pub(crate) const TP_STATUS_VLAN_TPID_VALID: u32 = 1 << 6;

/// `PACKET_OUTGOING` (`<linux/if_packet.h>`): `skb->pkt_type` of a frame this
/// host transmits, as packet taps see it.
pub(crate) const PACKET_OUTGOING: u32 = 4;

/// `TPACKET_ALIGNMENT`: frame headers and data offsets are 16-byte aligned.
pub(crate) const TPACKET_ALIGNMENT: usize = 16;

/// `struct virtio_net_hdr` as AF_PACKET reads and writes it with PACKET_VNET_HDR
/// (10 bytes: no `num_buffers`; host byte order, i.e. little endian on the hosts
/// quiver runs on). Linux 6.1 has no PACKET_VNET_HDR_SZ to ask for 12.
pub(crate) const PACKET_VNET_HDR_LEN: usize = 10;

/// `struct tpacket_req3`: the PACKET_RX_RING request for TPACKET_V3.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct TpacketReq3 {
    pub tp_block_size: c_uint,
    pub tp_block_nr: c_uint,
    pub tp_frame_size: c_uint,
    pub tp_frame_nr: c_uint,
    pub tp_retire_blk_tov: c_uint,
    pub tp_sizeof_priv: c_uint,
    pub tp_feature_req_word: c_uint,
}

/// `struct tpacket_bd_ts`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct TpacketBdTs {
    pub ts_sec: c_uint,
    pub ts_usec_or_nsec: c_uint,
}

/// `struct tpacket_hdr_v1`, the only member of `union tpacket_bd_header_u`.
/// `seq_num` is an `__aligned_u64`, hence the 8-byte alignment.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct TpacketHdrV1 {
    pub block_status: u32,
    pub num_pkts: u32,
    pub offset_to_first_pkt: u32,
    pub blk_len: u32,
    pub seq_num: u64,
    pub ts_first_pkt: TpacketBdTs,
    pub ts_last_pkt: TpacketBdTs,
}

/// `struct tpacket_block_desc`: the header at the start of every ring block.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct TpacketBlockDesc {
    pub version: u32,
    pub offset_to_priv: u32,
    pub hdr: TpacketHdrV1,
}

/// `struct tpacket_hdr_variant1`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct TpacketHdrVariant1 {
    pub tp_rxhash: u32,
    pub tp_vlan_tci: u32,
    pub tp_vlan_tpid: u16,
    pub tp_padding: u16,
}

/// `struct tpacket3_hdr`: the header in front of every frame in a block.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Tpacket3Hdr {
    pub tp_next_offset: u32,
    pub tp_sec: u32,
    pub tp_nsec: u32,
    pub tp_snaplen: u32,
    pub tp_len: u32,
    pub tp_status: u32,
    pub tp_mac: u16,
    pub tp_net: u16,
    pub hv1: TpacketHdrVariant1,
    pub tp_padding: [u8; 8],
}

/// `struct sockaddr_ll` (`<linux/if_packet.h>`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct SockaddrLl {
    pub sll_family: u16,
    /// Network byte order.
    pub sll_protocol: u16,
    pub sll_ifindex: c_int,
    pub sll_hatype: u16,
    pub sll_pkttype: u8,
    pub sll_halen: u8,
    pub sll_addr: [u8; 8],
}

/// `struct packet_mreq`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct PacketMreq {
    pub mr_ifindex: c_int,
    pub mr_type: u16,
    pub mr_alen: u16,
    pub mr_address: [u8; 8],
}

/// `struct tpacket_stats_v3`: what PACKET_STATISTICS returns (and resets).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct TpacketStatsV3 {
    pub tp_packets: c_uint,
    pub tp_drops: c_uint,
    pub tp_freeze_q_cnt: c_uint,
}

/// `struct sock_filter` (`<linux/filter.h>`): one classic BPF instruction.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct SockFilter {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

/// `struct sock_fprog`.
#[repr(C)]
#[derive(Debug)]
struct SockFprog {
    len: u16,
    filter: *const SockFilter,
}

/// Classic BPF opcodes and the ancillary offset used below (`<linux/filter.h>`).
/// `BPF_LD | BPF_W | BPF_ABS` = 0x00 | 0x00 | 0x20.
const BPF_LD_W_ABS: u16 = 0x20;
/// `BPF_JMP | BPF_JEQ | BPF_K` = 0x05 | 0x10 | 0x00.
const BPF_JMP_JEQ_K: u16 = 0x15;
/// `BPF_RET | BPF_K` = 0x06 | 0x00.
const BPF_RET_K: u16 = 0x06;
const SKF_AD_OFF: u32 = 0xffff_f000;
const SKF_AD_PKTTYPE: u32 = 4;

/// A socket filter that drops frames this host transmits (`pkt_type ==
/// PACKET_OUTGOING`) and keeps everything else whole. PACKET_IGNORE_OUTGOING does
/// the same for a lone socket, but the hook of a fanout group does not inherit it
/// (Linux < 6.6 has no PACKET_FANOUT_FLAG_IGNORE_OUTGOING); the filter runs per
/// socket after fanout on every kernel.
pub(crate) const DROP_OUTGOING: [SockFilter; 4] = [
    SockFilter {
        code: BPF_LD_W_ABS,
        jt: 0,
        jf: 0,
        k: SKF_AD_OFF + SKF_AD_PKTTYPE,
    },
    SockFilter {
        code: BPF_JMP_JEQ_K,
        jt: 0,
        jf: 1,
        k: PACKET_OUTGOING,
    },
    SockFilter {
        code: BPF_RET_K,
        jt: 0,
        jf: 0,
        k: 0,
    },
    SockFilter {
        code: BPF_RET_K,
        jt: 0,
        jf: 0,
        k: u32::MAX,
    },
];

/// `SO_ATTACH_FILTER` with a classic BPF program.
pub(crate) fn attach_filter(fd: BorrowedFd<'_>, prog: &[SockFilter]) -> io::Result<()> {
    let prog_len =
        u16::try_from(prog.len()).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let fprog = SockFprog {
        len: prog_len,
        filter: prog.as_ptr(),
    };
    let len = socklen_t::try_from(size_of::<SockFprog>())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: `fd` is borrowed, so open for the call; `fprog` is a repr(C)
    // sock_fprog (layout checked in tests) whose `filter` points to `len` live
    // instructions; the kernel copies them during the call and keeps no pointer.
    cvt(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_FILTER,
            (&fprog as *const SockFprog).cast::<c_void>(),
            len,
        )
    })
    .map(drop)
}

/// `TPACKET3_HDRLEN`: the aligned frame header plus a `sockaddr_ll`; the smallest
/// frame size the kernel accepts.
pub(crate) const TPACKET3_HDRLEN: usize =
    align(size_of::<Tpacket3Hdr>(), TPACKET_ALIGNMENT) + size_of::<SockaddrLl>();

/// `x` rounded up to a multiple of `to` (a power of two).
pub(crate) const fn align(x: usize, to: usize) -> usize {
    (x + to - 1) & !(to - 1)
}

fn cvt(ret: c_int) -> io::Result<c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// A new `AF_PACKET`/`SOCK_RAW` socket, close-on-exec, with protocol 0 so that it
/// receives nothing until `bind` names the interface and protocol (no frames of
/// other interfaces slip in between).
pub(crate) fn packet_socket() -> io::Result<OwnedFd> {
    // SAFETY: socket(2) takes no pointers; the returned fd is checked and then
    // owned by exactly one OwnedFd.
    let fd = cvt(unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            0,
        )
    })?;
    // SAFETY: `fd` was just returned by socket(2), is open, and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `SOL_PACKET` options that take one `int`.
#[derive(Clone, Copy, Debug)]
pub(crate) enum IntOpt {
    Version,
    VnetHdr,
    QdiscBypass,
    IgnoreOutgoing,
    /// `fanout id | (type_flags << 16)`.
    Fanout,
}

impl IntOpt {
    fn name(self) -> c_int {
        match self {
            IntOpt::Version => PACKET_VERSION,
            IntOpt::VnetHdr => PACKET_VNET_HDR,
            IntOpt::QdiscBypass => PACKET_QDISC_BYPASS,
            IntOpt::IgnoreOutgoing => PACKET_IGNORE_OUTGOING,
            IntOpt::Fanout => PACKET_FANOUT,
        }
    }
}

/// `setsockopt(fd, SOL_PACKET, opt, &value, sizeof value)` for a typed value.
///
/// # Safety
/// `opt` must be a SOL_PACKET option that reads at most `size_of::<T>()` bytes
/// and keeps no pointer to them.
unsafe fn setsockopt<T>(fd: BorrowedFd<'_>, opt: c_int, value: &T) -> io::Result<()> {
    let len = socklen_t::try_from(size_of::<T>())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: `fd` is borrowed, so open for the call; `value` points to `len`
    // readable bytes that live until the call returns; the caller guarantees the
    // option reads no more than that.
    cvt(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_PACKET,
            opt,
            (value as *const T).cast::<c_void>(),
            len,
        )
    })
    .map(drop)
}

/// Set an `int`-valued SOL_PACKET option.
pub(crate) fn set_int(fd: BorrowedFd<'_>, opt: IntOpt, value: c_int) -> io::Result<()> {
    // SAFETY: every IntOpt reads exactly one `int` (net/packet/af_packet.c
    // packet_setsockopt: `copy_from_sockptr(&val, optval, sizeof(val))`).
    unsafe { setsockopt(fd, opt.name(), &value) }
}

/// PACKET_RX_RING with a TPACKET_V3 request (the version must be set first).
pub(crate) fn set_rx_ring(fd: BorrowedFd<'_>, req: &TpacketReq3) -> io::Result<()> {
    // SAFETY: PACKET_RX_RING reads a `union tpacket_req_u`, of which it copies
    // `sizeof(struct tpacket_req3)` bytes for TPACKET_V3: exactly `TpacketReq3`.
    unsafe { setsockopt(fd, PACKET_RX_RING, req) }
}

/// PACKET_ADD_MEMBERSHIP (e.g. PACKET_MR_PROMISC); dropped when the socket closes.
pub(crate) fn add_membership(fd: BorrowedFd<'_>, mreq: &PacketMreq) -> io::Result<()> {
    // SAFETY: PACKET_ADD_MEMBERSHIP reads at most `sizeof(struct packet_mreq_max)`
    // but accepts (and reads only) `sizeof(struct packet_mreq)` = 16 bytes when
    // that is the length passed.
    unsafe { setsockopt(fd, PACKET_ADD_MEMBERSHIP, mreq) }
}

/// `getsockopt(fd, SOL_PACKET, opt)` into a `T`.
///
/// # Safety
/// `opt` must write at most `size_of::<T>()` bytes, and any bit pattern it writes
/// must be a valid `T`.
unsafe fn getsockopt<T: Default>(fd: BorrowedFd<'_>, opt: c_int) -> io::Result<T> {
    let mut value = T::default();
    let mut len = socklen_t::try_from(size_of::<T>())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: `fd` is borrowed, so open for the call; `value` and `len` are live
    // locals; the kernel writes at most `len` bytes (it clamps to the length we
    // pass) and the caller guarantees any bytes written form a valid `T`.
    cvt(unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_PACKET,
            opt,
            (&mut value as *mut T).cast::<c_void>(),
            &mut len,
        )
    })?;
    Ok(value)
}

/// PACKET_FANOUT read back: `id | type << 16 | flags << 24` of the socket's group.
pub(crate) fn get_fanout(fd: BorrowedFd<'_>) -> io::Result<u32> {
    // SAFETY: PACKET_FANOUT writes one `int`; every bit pattern is a valid u32.
    unsafe { getsockopt::<u32>(fd, PACKET_FANOUT) }
}

/// PACKET_STATISTICS for a TPACKET_V3 socket; the kernel resets its counters.
pub(crate) fn get_stats(fd: BorrowedFd<'_>) -> io::Result<TpacketStatsV3> {
    // SAFETY: for TPACKET_V3 the kernel writes a `struct tpacket_stats_v3`
    // (clamped to the length we pass): three u32s, any bit pattern valid.
    unsafe { getsockopt::<TpacketStatsV3>(fd, PACKET_STATISTICS) }
}

/// `SO_ERROR`: the socket's pending error, which reading clears. The kernel sets
/// ENETDOWN on a packet socket when its interface goes down or away, and poll(2)
/// reports POLLERR until it is read.
pub(crate) fn take_error(fd: BorrowedFd<'_>) -> io::Result<Option<io::Error>> {
    let mut value: c_int = 0;
    let mut len = socklen_t::try_from(size_of::<c_int>())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: `fd` is borrowed, so open for the call; SO_ERROR writes one `int`
    // into `value`, a live local, and its length into `len`.
    cvt(unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ERROR,
            (&mut value as *mut c_int).cast::<c_void>(),
            &mut len,
        )
    })?;
    Ok((value != 0).then(|| io::Error::from_raw_os_error(value)))
}

/// `bind(2)` to `ifindex`, receiving `protocol` (host byte order).
pub(crate) fn bind(fd: BorrowedFd<'_>, ifindex: c_int, protocol: u16) -> io::Result<()> {
    let sll = SockaddrLl {
        sll_family: AF_PACKET_FAMILY,
        sll_protocol: protocol.to_be(),
        sll_ifindex: ifindex,
        ..SockaddrLl::default()
    };
    let len = socklen_t::try_from(size_of::<SockaddrLl>())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: `fd` is borrowed, so open for the call; `sll` is a repr(C)
    // sockaddr_ll (layout checked in tests) living until the call returns, and
    // `len` is its size.
    cvt(unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&sll as *const SockaddrLl).cast::<libc::sockaddr>(),
            len,
        )
    })
    .map(drop)
}

/// The index of interface `name` in the calling thread's network namespace.
pub(crate) fn ifindex(name: &str) -> io::Result<c_int> {
    let cname = CString::new(name).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: `cname` is a NUL-terminated string that lives until the call returns.
    let index = unsafe { libc::if_nametoindex(cname.as_ptr()) };
    if index == 0 {
        return Err(io::Error::last_os_error());
    }
    c_int::try_from(index).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// `sendmsg(2)` of one frame from `iov`, without blocking.
///
/// # Safety
/// Every iovec must point to memory readable for `iov_len` bytes for the
/// duration of the call.
pub(crate) unsafe fn send_iov(fd: BorrowedFd<'_>, iov: &[libc::iovec]) -> io::Result<usize> {
    // SAFETY: msghdr is plain data; all-zero is a valid empty message.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov.as_ptr().cast_mut();
    msg.msg_iovlen = iov.len();
    loop {
        // SAFETY: `fd` is borrowed, so open for the call; `msg` names no address
        // and no control data, and its iovecs are readable per this fn's contract;
        // the kernel only reads through them.
        let n = unsafe { libc::sendmsg(fd.as_raw_fd(), &msg, libc::MSG_DONTWAIT) };
        if let Ok(n) = usize::try_from(n) {
            return Ok(n);
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// A shared mapping of a packet socket's ring, unmapped on drop.
#[derive(Debug)]
pub(crate) struct RingMap {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain memory shared with the kernel; RingMap only hands
// out its base pointer, and the ring code synchronises every access to a block
// through its status word (acquire/release) and a mutex on the read cursor.
unsafe impl Send for RingMap {}
// SAFETY: as for Send: `&RingMap` allows no access but through `ptr()`.
unsafe impl Sync for RingMap {}

impl RingMap {
    /// `mmap(MAP_SHARED)` the whole ring of `fd` (`len` = block size × blocks).
    pub(crate) fn map(fd: BorrowedFd<'_>, len: usize) -> io::Result<RingMap> {
        // SAFETY: a fresh mapping at an address the kernel picks aliases no Rust
        // object; `fd` is borrowed, so open for the call, and the mapping keeps the
        // ring alive independently of it.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                // The ring's pages are the kernel's and never swapped: no MAP_LOCKED.
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr =
            NonNull::new(ptr.cast::<u8>()).ok_or_else(|| io::Error::other("mmap returned NULL"))?;
        Ok(RingMap { ptr, len })
    }

    pub(crate) fn ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

impl Drop for RingMap {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly the mapping made in `map`, and no
        // reference into it outlives `self` (the ring borrows `self` for every
        // access).
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{align_of, offset_of};

    /// Sizes and offsets from `<linux/if_packet.h>` (x86_64 / aarch64 LP64), and
    /// cross-checked against the libc crate's definitions.
    #[test]
    fn tpacket_v3_layouts_match_the_kernel() {
        assert_eq!(size_of::<TpacketReq3>(), 28);
        assert_eq!(size_of::<TpacketReq3>(), size_of::<libc::tpacket_req3>());
        assert_eq!(offset_of!(TpacketReq3, tp_retire_blk_tov), 16);
        assert_eq!(offset_of!(TpacketReq3, tp_feature_req_word), 24);

        assert_eq!(size_of::<TpacketHdrV1>(), 40);
        assert_eq!(align_of::<TpacketHdrV1>(), 8);
        assert_eq!(offset_of!(TpacketHdrV1, num_pkts), 4);
        assert_eq!(offset_of!(TpacketHdrV1, offset_to_first_pkt), 8);
        assert_eq!(offset_of!(TpacketHdrV1, blk_len), 12);
        assert_eq!(offset_of!(TpacketHdrV1, seq_num), 16);
        assert_eq!(offset_of!(TpacketHdrV1, ts_last_pkt), 32);

        assert_eq!(size_of::<TpacketBlockDesc>(), 48);
        assert_eq!(
            size_of::<TpacketBlockDesc>(),
            size_of::<libc::tpacket_block_desc>()
        );
        assert_eq!(offset_of!(TpacketBlockDesc, hdr), 8);
        assert_eq!(
            offset_of!(TpacketBlockDesc, hdr) + offset_of!(TpacketHdrV1, block_status),
            8
        );

        assert_eq!(size_of::<Tpacket3Hdr>(), 48);
        assert_eq!(size_of::<Tpacket3Hdr>(), size_of::<libc::tpacket3_hdr>());
        assert_eq!(offset_of!(Tpacket3Hdr, tp_next_offset), 0);
        assert_eq!(offset_of!(Tpacket3Hdr, tp_snaplen), 12);
        assert_eq!(offset_of!(Tpacket3Hdr, tp_len), 16);
        assert_eq!(offset_of!(Tpacket3Hdr, tp_status), 20);
        assert_eq!(offset_of!(Tpacket3Hdr, tp_mac), 24);
        assert_eq!(offset_of!(Tpacket3Hdr, tp_net), 26);
        assert_eq!(offset_of!(Tpacket3Hdr, hv1), 28);
        assert_eq!(
            offset_of!(Tpacket3Hdr, hv1) + offset_of!(TpacketHdrVariant1, tp_vlan_tci),
            32
        );
        assert_eq!(
            offset_of!(Tpacket3Hdr, hv1) + offset_of!(TpacketHdrVariant1, tp_vlan_tpid),
            36
        );
        assert_eq!(
            offset_of!(Tpacket3Hdr, hv1),
            offset_of!(libc::tpacket3_hdr, hv1)
        );

        assert_eq!(size_of::<SockaddrLl>(), 20);
        assert_eq!(size_of::<SockaddrLl>(), size_of::<libc::sockaddr_ll>());
        assert_eq!(offset_of!(SockaddrLl, sll_ifindex), 4);
        assert_eq!(offset_of!(SockaddrLl, sll_addr), 12);
        assert_eq!(size_of::<PacketMreq>(), 16);
        assert_eq!(size_of::<TpacketStatsV3>(), 12);
        assert_eq!(size_of::<SockFilter>(), 8);
        assert_eq!(size_of::<SockFilter>(), size_of::<libc::sock_filter>());
        assert_eq!(offset_of!(SockFilter, k), offset_of!(libc::sock_filter, k));
        assert_eq!(size_of::<SockFprog>(), size_of::<libc::sock_fprog>());
        assert_eq!(
            offset_of!(SockFprog, filter),
            offset_of!(libc::sock_fprog, filter)
        );

        // 48 aligned to 16 stays 48; + 20 for sockaddr_ll.
        assert_eq!(TPACKET3_HDRLEN, 68);
        assert_eq!(TPACKET3_HDRLEN, libc::TPACKET3_HDRLEN);
    }

    #[test]
    fn constants_match_libc() {
        assert_eq!(PACKET_ADD_MEMBERSHIP, libc::PACKET_ADD_MEMBERSHIP);
        assert_eq!(PACKET_RX_RING, libc::PACKET_RX_RING);
        assert_eq!(PACKET_STATISTICS, libc::PACKET_STATISTICS);
        assert_eq!(PACKET_VERSION, libc::PACKET_VERSION);
        assert_eq!(PACKET_VNET_HDR, libc::PACKET_VNET_HDR);
        assert_eq!(PACKET_FANOUT, libc::PACKET_FANOUT);
        assert_eq!(PACKET_QDISC_BYPASS, libc::PACKET_QDISC_BYPASS);
        assert_eq!(PACKET_IGNORE_OUTGOING, libc::PACKET_IGNORE_OUTGOING);
        assert_eq!(c_int::from(PACKET_MR_PROMISC), libc::PACKET_MR_PROMISC);
        assert_eq!(c_uint::from(PACKET_FANOUT_HASH), libc::PACKET_FANOUT_HASH);
        assert_eq!(
            c_uint::from(PACKET_FANOUT_FLAG_UNIQUEID),
            libc::PACKET_FANOUT_FLAG_UNIQUEID
        );
        assert_eq!(TP_STATUS_USER, libc::TP_STATUS_USER);
        assert_eq!(TP_STATUS_VLAN_VALID, libc::TP_STATUS_VLAN_VALID);
        assert_eq!(TP_STATUS_VLAN_TPID_VALID, libc::TP_STATUS_VLAN_TPID_VALID);
        assert_eq!(c_int::from(ETH_P_ALL), libc::ETH_P_ALL);
        assert_eq!(TPACKET_ALIGNMENT, libc::TPACKET_ALIGNMENT);
        assert_eq!(c_int::from(AF_PACKET_FAMILY), libc::AF_PACKET);
        assert_eq!(PACKET_OUTGOING, u32::from(libc::PACKET_OUTGOING));
        assert_eq!(
            u32::from(BPF_LD_W_ABS),
            libc::BPF_LD | libc::BPF_W | libc::BPF_ABS
        );
        assert_eq!(
            u32::from(BPF_JMP_JEQ_K),
            libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K
        );
        assert_eq!(u32::from(BPF_RET_K), libc::BPF_RET | libc::BPF_K);
        assert_eq!(
            SKF_AD_OFF,
            u32::from_ne_bytes(libc::SKF_AD_OFF.to_ne_bytes())
        );
        assert_eq!(i64::from(SKF_AD_PKTTYPE), i64::from(libc::SKF_AD_PKTTYPE));
    }

    #[test]
    fn missing_interface_is_enodev() {
        let err = ifindex("qv-no-such-if").unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENODEV));
    }
}
