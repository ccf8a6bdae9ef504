//! Raw Linux interfaces: the `struct ifreq` layout and the handful of ioctls the
//! uplinks issue, each behind a typed, safe wrapper.
//!
//! This is the crate's FFI quarantine (smoltcp's `phy/sys`): every ioctl request
//! number is paired here with the argument type the kernel expects, so callers
//! cannot pass a request that reads or writes more memory than they provide.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

use libc::{c_int, c_short, c_ulong};

/// `IFNAMSIZ` from `<linux/if.h>`: interface names are at most 15 bytes + NUL.
pub(crate) const IFNAMSIZ: usize = 16;

/// `IFF_TAP | IFF_NO_PI | IFF_VNET_HDR | IFF_MULTI_QUEUE` as the `c_short`
/// that `ifr_flags` holds (`<linux/if_tun.h>`). Checked against libc in tests.
pub(crate) const TAP_FLAGS: c_short = 0x0002 | 0x1000 | 0x4000 | 0x0100;

/// `IFF_UP` from `<linux/if.h>` as the `c_short` that `ifr_flags` holds.
pub(crate) const IFF_UP: c_short = 0x1;

/// `struct ifreq` from `<linux/if.h>`: a 16-byte name and a 24-byte union.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct IfReq {
    name: [u8; IFNAMSIZ],
    data: IfReqData,
}

/// The `ifr_ifru` union, reduced to the members quiver uses. `_size` pins the
/// size (24) and alignment (8, from `struct ifmap`'s `unsigned long`s and the
/// pointer members) to the kernel's.
#[repr(C)]
#[derive(Clone, Copy)]
union IfReqData {
    flags: c_short,
    int: c_int,
    _size: [u64; 3],
}

impl IfReq {
    /// An all-zero request naming `name`. The caller has validated `name`
    /// (shorter than [`IFNAMSIZ`], no NUL), so it is always NUL-terminated.
    pub(crate) fn new(name: &str) -> Self {
        let mut ifr = IfReq {
            name: [0; IFNAMSIZ],
            data: IfReqData { _size: [0; 3] },
        };
        let len = name.len().min(IFNAMSIZ - 1);
        ifr.name[..len].copy_from_slice(&name.as_bytes()[..len]);
        ifr
    }

    /// The name the kernel wrote back (TUNSETIFF resolves `%d` templates).
    pub(crate) fn name(&self) -> String {
        let end = self.name.iter().position(|&b| b == 0).unwrap_or(IFNAMSIZ);
        String::from_utf8_lossy(&self.name[..end]).into_owned()
    }

    pub(crate) fn flags(&self) -> c_short {
        // SAFETY: the union is zero-initialised in `new` and every member is a
        // plain integer, so any bit pattern is a valid `c_short`.
        unsafe { self.data.flags }
    }

    pub(crate) fn set_flags(&mut self, flags: c_short) {
        self.data.flags = flags;
    }

    pub(crate) fn set_int(&mut self, value: c_int) {
        self.data.int = value;
    }
}

/// Ioctls whose argument is a pointer to a `struct ifreq`.
#[derive(Clone, Copy, Debug)]
pub(crate) enum IfReqIoctl {
    /// `TUNSETIFF`: attach the tun fd to (or create) the named interface.
    TunSetIff,
    /// `TUNGETIFF`: read back the name and flags of the attached interface.
    TunGetIff,
    /// `SIOCGIFFLAGS`.
    GetFlags,
    /// `SIOCSIFFLAGS`.
    SetFlags,
    /// `SIOCSIFMTU` (`ifr_mtu` is an `int`).
    SetMtu,
    /// `SIOCGIFINDEX` (`ifr_ifindex` is an `int`); used to test existence.
    GetIndex,
}

impl IfReqIoctl {
    fn request(self) -> libc::Ioctl {
        match self {
            IfReqIoctl::TunSetIff => libc::TUNSETIFF,
            IfReqIoctl::TunGetIff => libc::TUNGETIFF,
            IfReqIoctl::GetFlags => libc::SIOCGIFFLAGS,
            IfReqIoctl::SetFlags => libc::SIOCSIFFLAGS,
            IfReqIoctl::SetMtu => libc::SIOCSIFMTU,
            IfReqIoctl::GetIndex => libc::SIOCGIFINDEX,
        }
    }
}

/// Issue an ifreq ioctl on `fd`.
pub(crate) fn ioctl_ifreq(fd: BorrowedFd<'_>, op: IfReqIoctl, ifr: &mut IfReq) -> io::Result<()> {
    // SAFETY: `fd` is borrowed, so it stays open for the call; every request in
    // `IfReqIoctl` reads and writes at most one `struct ifreq`, and `ifr` is a
    // valid, exclusively borrowed repr(C) ifreq (layout checked in tests).
    let ret = unsafe { libc::ioctl(fd.as_raw_fd(), op.request(), ifr as *mut IfReq) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Tun ioctls whose argument is passed by value (an `unsigned long`).
#[derive(Clone, Copy, Debug)]
pub(crate) enum ValueIoctl {
    /// `TUNSETPERSIST`: 1 keeps the interface after the last fd closes.
    TunSetPersist,
    /// `TUNSETOFFLOAD`: `TUN_F_*` offloads the reader accepts.
    TunSetOffload,
}

/// Issue a by-value tun ioctl on `fd`.
pub(crate) fn ioctl_value(fd: BorrowedFd<'_>, op: ValueIoctl, value: c_ulong) -> io::Result<()> {
    let request = match op {
        ValueIoctl::TunSetPersist => libc::TUNSETPERSIST,
        ValueIoctl::TunSetOffload => libc::TUNSETOFFLOAD,
    };
    // SAFETY: `fd` is borrowed, so it stays open for the call; both requests take
    // their argument by value, so the kernel dereferences no memory of ours.
    let ret = unsafe { libc::ioctl(fd.as_raw_fd(), request, value) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Tun ioctls whose argument is a pointer to one `int` the kernel reads.
#[derive(Clone, Copy, Debug)]
pub(crate) enum IntIoctl {
    /// `TUNSETVNETHDRSZ`: size of the virtio_net_hdr prepended to each frame.
    TunSetVnetHdrSz,
    /// `TUNSETVNETLE`: 1 = the vnet header is little endian (VIRTIO 1.x).
    TunSetVnetLe,
}

/// Issue a pointer-to-int tun ioctl on `fd`.
pub(crate) fn ioctl_int(fd: BorrowedFd<'_>, op: IntIoctl, value: c_int) -> io::Result<()> {
    let request = match op {
        IntIoctl::TunSetVnetHdrSz => libc::TUNSETVNETHDRSZ,
        IntIoctl::TunSetVnetLe => libc::TUNSETVNETLE,
    };
    // SAFETY: `fd` is borrowed, so it stays open for the call; both requests read
    // exactly one `int` through the pointer, which points at the local `value`
    // that lives until the call returns.
    let ret = unsafe { libc::ioctl(fd.as_raw_fd(), request, &value as *const c_int) };
    if ret < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{align_of, offset_of, size_of};

    #[test]
    fn ifreq_layout_matches_kernel() {
        assert_eq!(size_of::<IfReq>(), 40);
        assert_eq!(size_of::<IfReq>(), size_of::<libc::ifreq>());
        assert_eq!(align_of::<IfReq>(), align_of::<libc::ifreq>());
        assert_eq!(offset_of!(IfReq, name), offset_of!(libc::ifreq, ifr_name));
        assert_eq!(offset_of!(IfReq, data), offset_of!(libc::ifreq, ifr_ifru));
        assert_eq!(offset_of!(IfReq, data), IFNAMSIZ);
        assert_eq!(size_of::<IfReqData>(), 24);
        assert_eq!(IFNAMSIZ, libc::IFNAMSIZ);
    }

    #[test]
    fn flag_constants_match_libc() {
        assert_eq!(
            c_int::from(TAP_FLAGS),
            libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR | libc::IFF_MULTI_QUEUE
        );
        assert_eq!(c_int::from(IFF_UP), libc::IFF_UP);
    }

    #[test]
    fn ifreq_name_round_trips_and_stays_nul_terminated() {
        let ifr = IfReq::new("qv-tap0");
        assert_eq!(ifr.name(), "qv-tap0");
        let long = IfReq::new("0123456789abcdefXYZ");
        assert_eq!(long.name(), "0123456789abcde");
        assert_eq!(long.name[IFNAMSIZ - 1], 0);
    }

    #[test]
    fn ifreq_union_members_alias() {
        let mut ifr = IfReq::new("x");
        assert_eq!(ifr.flags(), 0);
        ifr.set_flags(IFF_UP);
        assert_eq!(ifr.flags(), IFF_UP);
        ifr.set_int(0x0001_0002);
        #[cfg(target_endian = "little")]
        assert_eq!(ifr.flags(), 2);
    }
}
