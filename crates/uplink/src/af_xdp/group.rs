//! The group-frame socket of an af_xdp uplink: one AF_PACKET socket on the
//! interface that reads every broadcast and multicast frame the kernel stack
//! receives, so quiverd can flood it to the VNICs while the host's own stack
//! still gets it (ARP, IPv6 neighbour discovery).
//!
//! The XDP classifier passes group frames to the kernel (XDP_PASS); the socket
//! taps them on the way in (`ETH_P_ALL`), behind a classic BPF filter that
//! keeps only frames with the group bit in their destination MAC and drops
//! the ones this host transmits. They are read through a small TPACKET_V3
//! ring ([`RxRing`]), which also puts back the VLAN tag the kernel took off.
//! Frames sent on it go out through the same socket.

use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::Ordering;

use libc::c_int;

use crate::packet_ring::RxRing;
use crate::packet_sys::{
    self, IntOpt, RingMap, SockFilter, TpacketReq3, DROP_OUTGOING, ETH_P_ALL, TPACKET3_HDRLEN,
    TPACKET_V3,
};
use crate::uplink::VNET_HDR_LEN;

/// Ring geometry: 8 blocks of 64 KiB (512 KiB), handed over after at most
/// 1 ms. Group frames are few and MTU-sized; a longer one is skipped and
/// counted ([`GroupSocket::skipped`]).
const BLOCK_SIZE: u32 = 64 << 10;
const BLOCK_NR: u32 = 8;
const RETIRE_MS: u32 = 1;
/// Only checked by the kernel for TPACKET_V3 (frames are packed in blocks).
const FRAME_SIZE: u32 = 2048;
const _: () = assert!(FRAME_SIZE as usize >= TPACKET3_HDRLEN);
/// Most iovecs of one transmitted frame (the header's own included).
const MAX_SEND_IOV: usize = 72;

/// Classic BPF opcodes `DROP_OUTGOING` does not use (`<linux/filter.h>`;
/// checked against libc in tests). `BPF_LD | BPF_B | BPF_ABS`.
const LD_B_ABS: u16 = 0x30;
/// `BPF_JMP | BPF_JSET | BPF_K`.
const JSET_K: u16 = 0x45;

/// Keeps a frame whole when it is not one this host sends (`pkt_type !=
/// PACKET_OUTGOING`: [`DROP_OUTGOING`]'s first three instructions) and its
/// destination MAC has the group bit (IEEE 802 I/G bit, the low bit of the
/// first byte); drops everything else. The socket runs it on the frame from
/// its MAC header (SOCK_RAW).
pub(super) const GROUP_ONLY: [SockFilter; 7] = {
    let [load_pkttype, outgoing, drop, accept] = DROP_OUTGOING;
    [
        load_pkttype,
        // outgoing -> drop (insn 2), else insn 3
        outgoing,
        drop,
        SockFilter {
            code: LD_B_ABS,
            jt: 0,
            jf: 0,
            k: 0,
        },
        // group bit -> accept (insn 6), else drop (insn 5)
        SockFilter {
            code: JSET_K,
            jt: 1,
            jf: 0,
            k: 1,
        },
        drop,
        accept,
    ]
};

/// One step of opening the socket, for the error.
#[derive(Debug)]
pub(super) struct OpenError {
    pub step: &'static str,
    pub source: io::Error,
}

/// The socket and its mapped receive ring.
#[derive(Debug)]
pub(super) struct GroupSocket {
    // Field order = drop order: the mapping goes before the socket.
    ring: RxRing,
    fd: OwnedFd,
}

impl GroupSocket {
    /// Opens the socket on `ifindex`, in the calling thread's network namespace.
    pub(super) fn open(ifindex: c_int) -> Result<GroupSocket, OpenError> {
        let step = |step: &'static str| move |source| OpenError { step, source };
        // Protocol 0 until bind: nothing is received before the filter is on.
        let fd = packet_sys::packet_socket().map_err(step("socket"))?;
        let sock = fd.as_fd();
        packet_sys::attach_filter(sock, &GROUP_ONLY).map_err(step("SO_ATTACH_FILTER"))?;
        packet_sys::set_int(sock, IntOpt::Version, TPACKET_V3).map_err(step("PACKET_VERSION"))?;
        let req = TpacketReq3 {
            tp_block_size: BLOCK_SIZE,
            tp_block_nr: BLOCK_NR,
            tp_frame_size: FRAME_SIZE,
            tp_frame_nr: (BLOCK_SIZE / FRAME_SIZE) * BLOCK_NR,
            tp_retire_blk_tov: RETIRE_MS,
            tp_sizeof_priv: 0,
            tp_feature_req_word: 0,
        };
        packet_sys::set_rx_ring(sock, &req).map_err(step("PACKET_RX_RING"))?;
        let (block_size, block_nr) = (BLOCK_SIZE as usize, BLOCK_NR as usize);
        let map = RingMap::map(sock, block_size * block_nr).map_err(step("mmap"))?;
        let ring = RxRing::new(map, block_size, block_nr, false);
        // Saves the kernel cloning every frame the host sends only for the
        // filter to drop it; the filter alone is enough where this is missing.
        if let Err(e) = packet_sys::set_int(sock, IntOpt::IgnoreOutgoing, 1) {
            log::debug!("group socket: no PACKET_IGNORE_OUTGOING ({e}); the filter drops them");
        }
        packet_sys::bind(sock, ifindex, ETH_P_ALL).map_err(step("bind"))?;
        Ok(GroupSocket { ring, fd })
    }

    pub(super) fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Frames not handed up: longer than the ring captured or than the
    /// caller's buffer, or malformed in the ring.
    pub(super) fn skipped(&self) -> u64 {
        let c = &self.ring.counters;
        c.truncated
            .load(Ordering::Relaxed)
            .wrapping_add(c.malformed.load(Ordering::Relaxed))
    }

    /// The next frame behind a zeroed virtio_net_hdr (VLAN tag put back);
    /// with none waiting, the socket's pending error (ENETDOWN when the
    /// interface went down), which reading clears, else `Ok(None)`.
    pub(super) fn recv(&self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        if let Some(n) = self.ring.recv(buf) {
            return Ok(Some(n));
        }
        match packet_sys::take_error(self.fd.as_fd())? {
            Some(err) => Err(err),
            None => Ok(None),
        }
    }

    /// One `sendmsg` of the frame behind the virtio_net_hdr (the header is
    /// not sent: the socket has no PACKET_VNET_HDR). Returns the bytes taken
    /// from `iov`, header included.
    ///
    /// # Safety
    /// Every iovec must point to memory readable for `iov_len` bytes for the
    /// duration of the call.
    pub(super) unsafe fn send(&self, iov: &[libc::iovec]) -> io::Result<usize> {
        let mut out = [libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        }; MAX_SEND_IOV];
        let n = skip_header(iov, &mut out)?;
        // SAFETY: each iovec in `out[..n]` is a sub-range of one of the
        // caller's iovecs, which the caller guarantees readable for the call.
        let sent = unsafe { packet_sys::send_iov(self.fd.as_fd(), &out[..n]) }?;
        Ok(sent + VNET_HDR_LEN)
    }
}

/// Fills `out` with the parts of `iov` after its first [`VNET_HDR_LEN`] bytes;
/// returns how many. Only pointer arithmetic: nothing is read.
fn skip_header(iov: &[libc::iovec], out: &mut [libc::iovec]) -> io::Result<usize> {
    let mut skip = VNET_HDR_LEN;
    let mut n = 0;
    for v in iov {
        let s = skip.min(v.iov_len);
        skip -= s;
        if s == v.iov_len {
            continue;
        }
        let slot = out.get_mut(n).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "too many iovecs for one frame")
        })?;
        *slot = libc::iovec {
            // s < iov_len: inside the caller's buffer.
            iov_base: v.iov_base.cast::<u8>().wrapping_add(s).cast(),
            iov_len: v.iov_len - s,
        };
        n += 1;
    }
    if n == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "no frame behind the virtio_net_hdr",
        ));
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opcodes_match_libc() {
        assert_eq!(
            u32::from(LD_B_ABS),
            libc::BPF_LD | libc::BPF_B | libc::BPF_ABS
        );
        assert_eq!(
            u32::from(JSET_K),
            libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K
        );
    }

    /// Runs the filter by hand: its jumps land on the intended returns.
    #[test]
    fn filter_keeps_only_incoming_group_frames() {
        let [load_pkttype, outgoing, drop, _] = DROP_OUTGOING;
        let run = |pkttype: u32, first: u8| {
            let mut pc = 0usize;
            let mut a = 0u32;
            loop {
                let i = GROUP_ONLY[pc];
                pc += 1;
                if i == load_pkttype {
                    a = pkttype;
                } else if i.code == LD_B_ABS && i.k == 0 {
                    a = u32::from(first);
                } else if i == outgoing || i.code == JSET_K {
                    let hit = if i.code == JSET_K {
                        a & i.k != 0
                    } else {
                        a == i.k
                    };
                    pc += usize::from(if hit { i.jt } else { i.jf });
                } else if i.code == drop.code {
                    return i.k;
                } else {
                    panic!("unexpected instruction {i:?}");
                }
            }
        };
        // PACKET_HOST 0, BROADCAST 1, MULTICAST 2, OTHERHOST 3, OUTGOING 4.
        assert_eq!(run(1, 0xff), u32::MAX);
        assert_eq!(run(2, 0x33), u32::MAX);
        assert_eq!(run(2, 0x01), u32::MAX);
        assert_eq!(run(0, 0x52), 0);
        assert_eq!(run(3, 0x02), 0);
        assert_eq!(run(4, 0xff), 0);
        assert_eq!(run(4, 0x52), 0);
    }

    #[test]
    fn the_header_is_cut_off_across_iovecs() {
        let buf = [0u8; 64];
        let at = |off: usize, len: usize| libc::iovec {
            iov_base: buf.as_ptr().wrapping_add(off).cast_mut().cast(),
            iov_len: len,
        };
        let empty = at(0, 0);
        let mut out = [empty; 4];
        // Header split 10 + 2, then the frame in two parts.
        let n = skip_header(&[at(0, 10), at(10, 4), at(14, 20)], &mut out).unwrap();
        assert_eq!(n, 2);
        assert_eq!(out[0].iov_base, at(12, 0).iov_base);
        assert_eq!(out[0].iov_len, 2);
        assert_eq!(out[1].iov_len, 20);
        // Header alone, then the frame.
        let n = skip_header(&[at(0, 12), empty, at(12, 30)], &mut out).unwrap();
        assert_eq!((n, out[0].iov_len), (1, 30));
        // No frame at all, and too many pieces.
        assert!(skip_header(&[at(0, 12)], &mut out).is_err());
        assert!(skip_header(&[at(0, 5)], &mut out).is_err());
        let many = [
            at(0, 12),
            at(12, 1),
            at(13, 1),
            at(14, 1),
            at(15, 1),
            at(16, 1),
        ];
        assert!(skip_header(&many, &mut out).is_err());
    }
}
