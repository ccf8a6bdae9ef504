//! One AF_XDP socket with its own UMEM ([`Xsk`]: the four rings shared with the
//! kernel, fill, completion, RX, TX, and the frame bookkeeping around them), and
//! the receive-only sockets that share its UMEM on the same queue ([`XskRx`]).
//!
//! The UMEM is [`FRAMES`] frames of [`FRAME_SIZE`] bytes. The first half
//! belongs to the receive side: each of its frames is in the fill ring, in the
//! kernel, in the RX ring of one of the queue's sockets, or (briefly) being
//! copied out by a reader. The second half belongs to the transmit side: free,
//! in the TX ring, or in the kernel until the completion ring hands it back.
//! The RX ring, the fill ring and the transmit side each have their own lock,
//! so the uplink poller, the dedicated readers and the VNIC workers wait for
//! each other only to hand frames back to the fill ring, once per batch. Lock
//! order: an RX ring's lock before the fill ring's, never the other way.
//!
//! An [`XskRx`] is bound with `XDP_SHARED_UMEM` to the same (device, queue) as
//! its [`Xsk`], so the kernel gives it no fill or completion ring of its own:
//! it takes its frames from the owner's fill ring, and its reader returns them
//! there. A frame left in its RX ring when it closes would be lost to the pool
//! for good, hence [`XskRx::drain`].
//!
//! The ring protocol follows the kernel's `tools/lib/bpf/xsk.h`: the producer
//! publishes entries with a Release store of its index, the consumer reads the
//! index with Acquire before touching the entries, and releases them with a
//! Release store of its own index.

mod sys;

use std::io;
use std::marker::PhantomData;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::uplink::{WireFrame, VNET_HDR_LEN};
use sys::{Mmap, MmapOffsets, RingOffset, RingOpt, SockaddrXdp, UmemReg, XdpDesc};

pub(crate) use sys::{bpf_map_delete_u32, rx_queue_count};

/// Bytes per UMEM frame (the kernel's default chunk size; copy mode and the
/// aligned-chunk mode need a power of two between 2048 and the page size).
pub(crate) const FRAME_SIZE: usize = CHUNK_SIZE as usize;
/// The longest frame an af_xdp uplink receives: the kernel puts a received frame
/// `XDP_PACKET_HEADROOM` (256) bytes into its UMEM frame (`xsk_pool` frame_len =
/// chunk size - headroom - XDP_PACKET_HEADROOM); longer frames are dropped by the
/// kernel.
pub const AF_XDP_MAX_FRAME: usize = FRAME_SIZE - 256;
/// [`FRAME_SIZE`] as the kernel's `chunk_size`.
const CHUNK_SIZE: u32 = 2048;
/// Frames per UMEM: half for receive, half for transmit.
pub(crate) const FRAMES: usize = 4096;
/// Entries per ring: each side's frames fit in its rings exactly.
const RING_SIZE: u32 = 2048;
const _: () = assert!(RING_SIZE as usize * 2 == FRAMES);
/// Most frames one [`XskRx::recv_burst`] takes (its scratch arrays live on
/// the stack).
pub(crate) const MAX_BURST: usize = 256;
/// Completions reaped at once.
const COMPLETION_BATCH: u32 = 64;

/// How a socket ended up bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BindMode {
    /// The driver DMAs straight into the UMEM.
    ZeroCopy,
    /// The kernel copies frames between its buffers and the UMEM.
    Copy,
}

/// One mmap'd ring of entries `T` (a `u64` frame address for fill and
/// completion, an [`XdpDesc`] for RX and TX).
struct Ring<T> {
    _map: Mmap,
    producer: *const AtomicU32,
    consumer: *const AtomicU32,
    flags: *const AtomicU32,
    entries: *mut T,
    mask: u32,
    /// Producer rings: our next slot. Consumer rings: the kernel's producer
    /// index as last read.
    cached_prod: u32,
    /// Producer rings: the kernel's consumer index + size as last read.
    /// Consumer rings: our next slot.
    cached_cons: u32,
    _entry: PhantomData<T>,
}

// SAFETY: the raw pointers point into `map`, which the ring owns; the kernel's
// side is reached only through atomics, and each ring is used by one thread at
// a time (it sits behind the socket side's Mutex).
unsafe impl<T: Send> Send for Ring<T> {}

impl<T: Copy> Ring<T> {
    /// Maps ring `which` of `fd`, laid out as `off` says, with `size` entries.
    fn map(fd: BorrowedFd<'_>, which: RingOpt, off: &RingOffset, size: u32) -> io::Result<Self> {
        let invalid = || io::Error::from_raw_os_error(libc::EINVAL);
        let offset = |o: u64| usize::try_from(o).map_err(|_e| invalid());
        let (producer, consumer, flags, desc) = (
            offset(off.producer)?,
            offset(off.consumer)?,
            offset(off.flags)?,
            offset(off.desc)?,
        );
        let len = (size as usize)
            .checked_mul(std::mem::size_of::<T>())
            .and_then(|n| n.checked_add(desc))
            .ok_or_else(invalid)?;
        // The kernel's offsets must leave every index and the entries inside
        // the mapping, aligned: check rather than trust.
        for (o, width) in [
            (producer, 4),
            (consumer, 4),
            (flags, 4),
            (desc, std::mem::align_of::<T>()),
        ] {
            if o % width != 0 || o.checked_add(width).is_none_or(|end| end > len) {
                return Err(invalid());
            }
        }
        let map = Mmap::ring(fd, which, len)?;
        let base = map.as_ptr();
        // The offsets were checked to lie inside the mapping just above, so
        // these `wrapping_add`s never wrap and stay in bounds.
        let mut ring = Ring {
            producer: base.wrapping_add(producer).cast::<AtomicU32>(),
            consumer: base.wrapping_add(consumer).cast::<AtomicU32>(),
            flags: base.wrapping_add(flags).cast::<AtomicU32>(),
            entries: base.wrapping_add(desc).cast::<T>(),
            mask: size - 1,
            cached_prod: 0,
            cached_cons: 0,
            _map: map,
            _entry: PhantomData,
        };
        ring.cached_prod = ring.producer().load(Ordering::Relaxed);
        ring.cached_cons = ring.consumer().load(Ordering::Relaxed);
        Ok(ring)
    }

    fn producer(&self) -> &AtomicU32 {
        // SAFETY: `producer` points at an aligned u32 inside `self.map`, which
        // lives as long as self (checked in `map`); the kernel writes it only
        // atomically, so viewing it as an AtomicU32 is sound.
        unsafe { &*self.producer }
    }

    fn consumer(&self) -> &AtomicU32 {
        // SAFETY: as for `producer`.
        unsafe { &*self.consumer }
    }

    fn needs_wakeup(&self) -> bool {
        // SAFETY: as for `producer`.
        let flags = unsafe { &*self.flags };
        flags.load(Ordering::Relaxed) & sys::XDP_RING_NEED_WAKEUP != 0
    }

    fn size(&self) -> u32 {
        self.mask + 1
    }

    fn slot(&self, index: u32) -> *mut T {
        // `index & mask` < size, and the mapping holds `size` entries after
        // `entries` (checked in `map`).
        self.entries.wrapping_add((index & self.mask) as usize)
    }

    // --- producer side (fill, TX) ---

    /// Free slots, at least `want` if there are that many.
    fn free(&mut self, want: u32) -> u32 {
        let free = self.cached_cons.wrapping_sub(self.cached_prod);
        if free >= want {
            return free;
        }
        self.cached_cons = self
            .consumer()
            .load(Ordering::Acquire)
            .wrapping_add(self.size());
        self.cached_cons.wrapping_sub(self.cached_prod)
    }

    /// Writes `entry` into the next free slot; the caller checked `free`.
    fn put(&mut self, entry: T) {
        // SAFETY: the slot is inside the mapping (see `slot`) and, being free,
        // is not read by the kernel until `submit` publishes it.
        unsafe { self.slot(self.cached_prod).write_volatile(entry) };
        self.cached_prod = self.cached_prod.wrapping_add(1);
    }

    /// Publishes every `put` so far.
    fn submit(&self) {
        self.producer().store(self.cached_prod, Ordering::Release);
    }

    // --- consumer side (RX, completion) ---

    /// Entries ready to read.
    fn available(&mut self) -> u32 {
        let ready = self.cached_prod.wrapping_sub(self.cached_cons);
        if ready > 0 {
            return ready;
        }
        self.cached_prod = self.producer().load(Ordering::Acquire);
        self.cached_prod.wrapping_sub(self.cached_cons)
    }

    /// Reads the next entry; the caller checked `available`.
    fn take(&mut self) -> T {
        // SAFETY: the slot is inside the mapping (see `slot`), and the Acquire
        // load in `available` made the kernel's write of it visible; the
        // kernel does not reuse it until `release` stores our index.
        let entry = unsafe { self.slot(self.cached_cons).read_volatile() };
        self.cached_cons = self.cached_cons.wrapping_add(1);
        entry
    }

    /// Hands every `take`n slot back to the kernel.
    fn release(&self) {
        self.consumer().store(self.cached_cons, Ordering::Release);
    }
}

struct TxSide {
    tx: Ring<XdpDesc>,
    completion: Ring<u64>,
    /// UMEM addresses of transmit frames nobody uses.
    free: Vec<u64>,
    /// Frames queued since the kernel was last asked to transmit.
    unkicked: u32,
}

/// Frames queued before `send` asks the kernel to transmit without waiting for
/// `flush`: copy mode sends at most 32 descriptors per syscall (`TX_BATCH_SIZE`
/// in net/xdp/xsk.c), so one syscall per 32 frames.
const TX_KICK_BATCH: u32 = 32;

/// What a socket is bound to.
#[derive(Clone, Copy, Debug)]
pub(crate) struct XskTarget {
    pub ifindex: u32,
    pub queue: u32,
    /// Try zero-copy before copy mode.
    pub try_zero_copy: bool,
}

/// An AF_XDP socket bound to one queue of one interface, with its own UMEM.
pub(crate) struct Xsk {
    // Field order = drop order: rings and socket before the UMEM they use.
    rx: Mutex<Ring<XdpDesc>>,
    /// The queue's fill ring: every socket of the queue takes its frames from
    /// it, and every reader gives them back here.
    fill: Mutex<Ring<u64>>,
    tx: Mutex<TxSide>,
    fd: OwnedFd,
    umem: Mmap,
    target: XskTarget,
    mode: BindMode,
    need_wakeup: bool,
}

impl std::fmt::Debug for Xsk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Xsk")
            .field("fd", &self.fd)
            .field("mode", &self.mode)
            .field("need_wakeup", &self.need_wakeup)
            .finish_non_exhaustive()
    }
}

/// Which step of making a socket failed.
#[derive(Debug, thiserror::Error)]
pub enum XskError {
    #[error("cannot create an AF_XDP socket")]
    Socket(#[source] io::Error),
    #[error("cannot allocate the UMEM")]
    Umem(#[source] io::Error),
    #[error("cannot register the UMEM")]
    RegisterUmem(#[source] io::Error),
    #[error("cannot set up the socket's rings")]
    Rings(#[source] io::Error),
    #[error("cannot bind to queue {queue}")]
    Bind {
        queue: u32,
        #[source]
        source: io::Error,
    },
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves the rings consistent (indices are
    // only published at the end), so a poisoned lock is still usable.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Xsk {
    /// Creates the socket, its UMEM and rings, and binds it to `target`.
    pub(crate) fn open(target: XskTarget) -> Result<Xsk, XskError> {
        let umem = Mmap::anonymous(FRAMES * FRAME_SIZE).map_err(XskError::Umem)?;
        // Zero-copy may be refused (EOPNOTSUPP on drivers without it, e.g.
        // veth), and a failed bind can leave the UMEM half-attached to the
        // device: each attempt gets a fresh socket.
        let mut attempts: Vec<(u16, BindMode)> = Vec::new();
        if target.try_zero_copy {
            attempts.push((
                sys::XDP_ZEROCOPY | sys::XDP_USE_NEED_WAKEUP,
                BindMode::ZeroCopy,
            ));
        }
        attempts.push((sys::XDP_COPY | sys::XDP_USE_NEED_WAKEUP, BindMode::Copy));
        // Kernels before 5.4 know no XDP_USE_NEED_WAKEUP.
        attempts.push((sys::XDP_COPY, BindMode::Copy));
        let mut last = None;
        for (flags, mode) in attempts {
            let fd = sys::socket().map_err(XskError::Socket)?;
            let (rx, fill, tx) = Self::setup(fd.as_fd(), &umem)?;
            let addr = SockaddrXdp {
                family: sys::AF_XDP_FAMILY,
                flags,
                ifindex: target.ifindex,
                queue_id: target.queue,
                shared_umem_fd: 0,
            };
            match sys::bind(fd.as_fd(), &addr) {
                Ok(()) => {
                    return Ok(Xsk {
                        rx: Mutex::new(rx),
                        fill: Mutex::new(fill),
                        tx: Mutex::new(tx),
                        fd,
                        umem,
                        target,
                        mode,
                        need_wakeup: flags & sys::XDP_USE_NEED_WAKEUP != 0,
                    })
                }
                Err(e) => {
                    log::debug!(
                        "AF_XDP bind to ifindex {} queue {} with flags {flags:#x} failed: {e}",
                        target.ifindex,
                        target.queue
                    );
                    // Only "this mode is not supported" is worth another try.
                    let retry = matches!(
                        e.raw_os_error(),
                        Some(libc::EOPNOTSUPP | libc::EINVAL | libc::EPROTONOSUPPORT)
                    );
                    last = Some(e);
                    if !retry {
                        break;
                    }
                }
            }
        }
        Err(XskError::Bind {
            queue: target.queue,
            source: last.unwrap_or_else(|| io::Error::from_raw_os_error(libc::EINVAL)),
        })
    }

    /// Registers the UMEM and maps the four rings of a fresh socket; fills
    /// the fill ring with every receive frame.
    fn setup(
        fd: BorrowedFd<'_>,
        umem: &Mmap,
    ) -> Result<(Ring<XdpDesc>, Ring<u64>, TxSide), XskError> {
        let reg = UmemReg {
            addr: umem.as_ptr() as u64,
            len: umem.len() as u64,
            chunk_size: CHUNK_SIZE,
            headroom: 0,
            flags: 0,
            tx_metadata_len: 0,
        };
        sys::register_umem(fd, &reg).map_err(XskError::RegisterUmem)?;
        for ring in [RingOpt::Fill, RingOpt::Completion, RingOpt::Rx, RingOpt::Tx] {
            sys::set_ring_size(fd, ring, RING_SIZE).map_err(XskError::Rings)?;
        }
        let off: MmapOffsets = sys::mmap_offsets(fd).map_err(XskError::Rings)?;
        let mut fill =
            Ring::<u64>::map(fd, RingOpt::Fill, &off.fr, RING_SIZE).map_err(XskError::Rings)?;
        let completion = Ring::<u64>::map(fd, RingOpt::Completion, &off.cr, RING_SIZE)
            .map_err(XskError::Rings)?;
        let rx =
            Ring::<XdpDesc>::map(fd, RingOpt::Rx, &off.rx, RING_SIZE).map_err(XskError::Rings)?;
        let tx =
            Ring::<XdpDesc>::map(fd, RingOpt::Tx, &off.tx, RING_SIZE).map_err(XskError::Rings)?;
        let half = FRAMES / 2;
        if fill.free(RING_SIZE) < RING_SIZE {
            return Err(XskError::Rings(io::Error::from_raw_os_error(libc::EINVAL)));
        }
        for i in 0..half {
            fill.put((i * FRAME_SIZE) as u64);
        }
        fill.submit();
        let free = (half..FRAMES).map(|i| (i * FRAME_SIZE) as u64).collect();
        Ok((
            rx,
            fill,
            TxSide {
                tx,
                completion,
                free,
                unkicked: 0,
            },
        ))
    }

    /// Opens a receive-only socket on this socket's (device, queue), sharing
    /// its UMEM and, through it, its fill ring, with an RX ring of `entries`
    /// slots (a power of two): the most frames of the pool it can hold.
    pub(crate) fn open_rx(self: &Arc<Self>, entries: u32) -> Result<XskRx, XskError> {
        let fd = sys::socket().map_err(XskError::Socket)?;
        // No UMEM registration and no fill / completion ring: the kernel
        // refuses both on a socket sharing a UMEM on the same queue.
        sys::set_ring_size(fd.as_fd(), RingOpt::Rx, entries).map_err(XskError::Rings)?;
        let off = sys::mmap_offsets(fd.as_fd()).map_err(XskError::Rings)?;
        let rx = Ring::<XdpDesc>::map(fd.as_fd(), RingOpt::Rx, &off.rx, entries)
            .map_err(XskError::Rings)?;
        let bind_err = |source| XskError::Bind {
            queue: self.target.queue,
            source,
        };
        let owner_fd = u32::try_from(self.fd.as_raw_fd())
            .map_err(|_e| bind_err(io::Error::from_raw_os_error(libc::EBADF)))?;
        // A sharing socket takes its mode (copy / zero-copy, need_wakeup) from
        // the owner: the kernel refuses those flags here.
        let addr = SockaddrXdp {
            family: sys::AF_XDP_FAMILY,
            flags: sys::XDP_SHARED_UMEM,
            ifindex: self.target.ifindex,
            queue_id: self.target.queue,
            shared_umem_fd: owner_fd,
        };
        sys::bind(fd.as_fd(), &addr).map_err(bind_err)?;
        Ok(XskRx {
            rx: Mutex::new(rx),
            fd,
            owner: Arc::clone(self),
        })
    }

    pub(crate) fn mode(&self) -> BindMode {
        self.mode
    }

    pub(crate) fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// The frame at UMEM address `addr`, `len` bytes, if it lies inside the
    /// UMEM (the kernel's descriptor is checked, not trusted).
    fn frame_ptr(&self, addr: u64, len: usize) -> Option<*mut u8> {
        let start = usize::try_from(addr).ok()?;
        let end = start.checked_add(len)?;
        (end <= self.umem.len()).then(|| self.umem.as_ptr().wrapping_add(start))
    }

    /// The received frame `desc` describes, if it lies inside one chunk of
    /// the receive half (the kernel's descriptor is checked, not trusted).
    fn rx_frame(&self, desc: XdpDesc) -> Option<&[u8]> {
        let start = usize::try_from(desc.addr).ok()?;
        let len = usize::try_from(desc.len).ok()?;
        let in_chunk = (start % FRAME_SIZE).checked_add(len)? <= FRAME_SIZE;
        if !in_chunk || start >= FRAMES / 2 * FRAME_SIZE {
            return None;
        }
        let ptr = self.frame_ptr(desc.addr, len)?;
        // SAFETY: `ptr..ptr+len` lies inside one chunk of the UMEM (checked
        // above and in frame_ptr), which lives as long as `self`. The chunk
        // came off an RX ring, so the kernel does not write it until the
        // caller gives it back to the fill ring, which it does only after the
        // last use of this slice (the slice borrows `self`, and callers give
        // it back in the same call, after the slice is gone).
        Some(unsafe { std::slice::from_raw_parts(ptr, len) })
    }

    /// The start of the receive chunk holding UMEM address `addr`; `None` for
    /// an address outside the receive half (only a kernel bug could produce
    /// one, and it must not become a fill-ring entry).
    fn rx_chunk(addr: u64) -> Option<u64> {
        let a = usize::try_from(addr).ok()?;
        (a < FRAMES / 2 * FRAME_SIZE).then(|| (a - a % FRAME_SIZE) as u64)
    }

    /// Gives `chunks` back to the queue's fill ring under its lock, with one
    /// submit, then wakes the kernel through `kick` if the ring asks for it.
    fn refill(&self, chunks: &[u64], kick: BorrowedFd<'_>) {
        let mut fill = lock(&self.fill);
        if !chunks.is_empty() {
            // The receive half has exactly as many frames as the fill ring has
            // slots, so there is always room; never overwrite if there is not.
            let room = fill.free(u32::try_from(chunks.len()).unwrap_or(u32::MAX));
            let n = chunks.len().min(room as usize);
            if n < chunks.len() {
                log::warn!(
                    "AF_XDP queue {}: fill ring full, {} frame(s) lost to the pool",
                    self.target.queue,
                    chunks.len() - n
                );
            }
            for &chunk in &chunks[..n] {
                fill.put(chunk);
            }
            fill.submit();
        }
        if self.need_wakeup && fill.needs_wakeup() {
            drop(fill);
            sys::kick_rx(kick);
        }
    }

    /// Takes one received frame: a zeroed virtio_net_hdr then the frame go to
    /// `buf` (a frame longer than `buf` has room for is cut short, like a TAP
    /// read), and the frame's UMEM chunk goes straight back to the fill ring.
    /// quiverd reads bursts (`recv_burst`); this is for one-frame readers.
    pub(crate) fn recv(&self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        let Some(room) = buf.len().checked_sub(VNET_HDR_LEN) else {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        };
        let mut copied = 0;
        let n = self.recv_burst(1, &mut |frames| {
            if let Some(f) = frames.first() {
                copied = f.data.len().min(room);
                buf[..VNET_HDR_LEN].copy_from_slice(&f.hdr);
                buf[VNET_HDR_LEN..VNET_HDR_LEN + copied].copy_from_slice(&f.data[..copied]);
            }
        });
        Ok((n > 0).then_some(VNET_HDR_LEN + copied))
    }

    /// The shared socket's frames a burst at a time, as [`XskRx::recv_burst`].
    /// Wakes the kernel when idle if the fill ring asks for it.
    pub(crate) fn recv_burst(&self, max: usize, f: &mut dyn FnMut(&[WireFrame<'_>])) -> usize {
        let mut rx = lock(&self.rx);
        let n = take_burst(self, &mut rx, self.fd.as_fd(), max, f);
        if n == 0 && self.need_wakeup {
            self.refill(&[], self.fd.as_fd());
        }
        n
    }

    /// Queues one frame for transmission: the iovecs' bytes after the
    /// [`VNET_HDR_LEN`]-byte header are copied into a free transmit frame.
    /// Returns the bytes taken from `iov` (header included), like `writev`.
    ///
    /// # Safety
    /// Every iovec must point to memory readable for `iov_len` bytes for the
    /// duration of the call.
    pub(crate) unsafe fn send(&self, iov: &[libc::iovec]) -> io::Result<usize> {
        let total = iov
            .iter()
            .try_fold(0usize, |acc, v| acc.checked_add(v.iov_len))
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
        let Some(frame_len) = total.checked_sub(VNET_HDR_LEN) else {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        };
        if frame_len > FRAME_SIZE {
            return Err(io::Error::from_raw_os_error(libc::EMSGSIZE));
        }
        let mut side = lock(&self.tx);
        let side = &mut *side;
        self.reap(side);
        if side.free.is_empty() || side.tx.free(1) == 0 {
            // Everything is in flight: push the kernel, then look again.
            side.unkicked = 0;
            sys::kick_tx(self.fd.as_fd())?;
            self.reap(side);
            if side.free.is_empty() || side.tx.free(1) == 0 {
                return Err(io::Error::from_raw_os_error(libc::ENOBUFS));
            }
        }
        let Some(addr) = side.free.pop() else {
            return Err(io::Error::from_raw_os_error(libc::ENOBUFS));
        };
        let Some(dst) = self.frame_ptr(addr, FRAME_SIZE) else {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        };
        let mut skip = VNET_HDR_LEN;
        let mut at = 0usize;
        for v in iov {
            let (base, len) = (v.iov_base.cast::<u8>().cast_const(), v.iov_len);
            let s = skip.min(len);
            skip -= s;
            let n = len - s;
            if n == 0 {
                continue;
            }
            // SAFETY: the caller guarantees `base..base+len` is readable; `s <=
            // len`. `dst` is a whole UMEM frame owned by the transmit side (it
            // came off the free list, so the kernel is not reading it), and
            // `at + n <= frame_len <= FRAME_SIZE` since the lengths sum to
            // `total`. Guest memory and the UMEM never overlap.
            unsafe { std::ptr::copy_nonoverlapping(base.add(s), dst.add(at), n) };
            at += n;
        }
        side.tx.put(XdpDesc {
            addr,
            // frame_len <= FRAME_SIZE, checked above.
            len: u32::try_from(frame_len).unwrap_or(CHUNK_SIZE),
            options: 0,
        });
        side.tx.submit();
        side.unkicked += 1;
        if side.unkicked >= TX_KICK_BATCH {
            self.kick(side)?;
        }
        Ok(total)
    }

    /// Asks the kernel to transmit what `send` queued since the last time.
    pub(crate) fn flush(&self) -> io::Result<()> {
        let mut side = lock(&self.tx);
        if side.unkicked == 0 {
            return Ok(());
        }
        self.kick(&mut side)
    }

    fn kick(&self, side: &mut TxSide) -> io::Result<()> {
        side.unkicked = 0;
        // Copy mode transmits only from within a syscall; zero-copy drivers
        // say through the flag whether they need one.
        if !self.need_wakeup || side.tx.needs_wakeup() {
            sys::kick_tx(self.fd.as_fd())?;
        }
        Ok(())
    }

    /// Moves completed transmit frames back to the free list.
    fn reap(&self, side: &mut TxSide) {
        let n = side.completion.available().min(COMPLETION_BATCH);
        for _ in 0..n {
            let addr = side.completion.take();
            // Only addresses of the transmit half can come back; anything else
            // would be a kernel bug, and is not trusted with a frame.
            if self.frame_ptr(addr, FRAME_SIZE).is_some()
                && addr >= (FRAMES / 2 * FRAME_SIZE) as u64
            {
                side.free.push(addr - addr % FRAME_SIZE as u64);
            }
        }
        if n > 0 {
            side.completion.release();
        }
    }
}

impl AsFd for Xsk {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// A receive-only AF_XDP socket sharing the UMEM and the fill ring of its
/// queue's [`Xsk`] (see the module documentation).
pub(crate) struct XskRx {
    // Field order = drop order: the ring and the socket before the owner,
    // whose UMEM they use.
    rx: Mutex<Ring<XdpDesc>>,
    fd: OwnedFd,
    owner: Arc<Xsk>,
}

impl std::fmt::Debug for XskRx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XskRx")
            .field("fd", &self.fd)
            .field("queue", &self.owner.target.queue)
            .finish_non_exhaustive()
    }
}

/// Chunks taken off an RX ring, on their way back to the fill ring: given back
/// on drop, so a panicking frame consumer loses none of them.
struct Taken<'a> {
    owner: &'a Xsk,
    kick: BorrowedFd<'a>,
    chunks: [u64; MAX_BURST],
    len: usize,
}

impl Drop for Taken<'_> {
    fn drop(&mut self) {
        self.owner.refill(&self.chunks[..self.len], self.kick);
    }
}

/// Takes up to `max` (at most [`MAX_BURST`]) frames off `rx`, an RX ring of a
/// socket on `owner`'s queue, hands them to `f` at once, and gives their chunks
/// back to the fill ring in one batch when `f` returns (or panics). Returns the
/// number of frames handed to `f`.
fn take_burst(
    owner: &Xsk,
    rx: &mut Ring<XdpDesc>,
    kick: BorrowedFd<'_>,
    max: usize,
    f: &mut dyn FnMut(&[WireFrame<'_>]),
) -> usize {
    let want = u32::try_from(max.min(MAX_BURST)).unwrap_or(0);
    let n = rx.available().min(want);
    if n == 0 {
        return 0;
    }
    let mut taken = Taken {
        owner,
        kick,
        chunks: [0; MAX_BURST],
        len: 0,
    };
    // No offload info crosses AF_XDP: every header is zero.
    let mut frames = [WireFrame {
        hdr: [0; VNET_HDR_LEN],
        data: &[],
    }; MAX_BURST];
    let mut good = 0;
    for _ in 0..n {
        let desc = rx.take();
        if let Some(chunk) = Xsk::rx_chunk(desc.addr) {
            taken.chunks[taken.len] = chunk;
            taken.len += 1;
        }
        if let Some(frame) = owner.rx_frame(desc) {
            frames[good].data = frame;
            good += 1;
        } else {
            log::trace!(
                "AF_XDP queue {}: RX descriptor {desc:?} outside the receive frames",
                owner.target.queue
            );
        }
    }
    // The descriptors are copied out; the frames stay ours until `taken` gives
    // them back, after `f` (or when `f` panics).
    rx.release();
    if good > 0 {
        f(&frames[..good]);
    }
    good
}

impl XskRx {
    pub(crate) fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Takes up to `max` (at most [`MAX_BURST`]) received frames and hands
    /// them to `f` at once; their chunks go back to the fill ring in one batch
    /// when `f` returns. Returns the number of frames handed to `f`.
    pub(crate) fn recv_burst(&self, max: usize, f: &mut dyn FnMut(&[WireFrame<'_>])) -> usize {
        let mut rx = lock(&self.rx);
        take_burst(&self.owner, &mut rx, self.fd.as_fd(), max, f)
    }

    /// Takes every frame waiting in the RX ring and gives it straight back to
    /// the fill ring. Returns how many there were.
    pub(crate) fn drain(&self) -> usize {
        let mut chunks = Vec::new();
        let mut rx = lock(&self.rx);
        loop {
            let n = rx.available();
            if n == 0 {
                break;
            }
            for _ in 0..n {
                if let Some(chunk) = Xsk::rx_chunk(rx.take().addr) {
                    chunks.push(chunk);
                }
            }
            rx.release();
        }
        drop(rx);
        self.owner.refill(&chunks, self.fd.as_fd());
        chunks.len()
    }
}
