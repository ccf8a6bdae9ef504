//! The guest: memory, queue pairs and the vhost-user session, put together
//! the way QEMU and the Linux virtio-net driver do it.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::{Duration, Instant};

use vhost::vhost_user::VhostUserProtocolFeatures;

use crate::arena::TxArena;
use crate::bump::BumpAlloc;
use crate::config::{DriverConfig, QueueSel, RxFrame, MAX_FRAME_NO_GSO, NET_HDR_LEN};
use crate::error::DriverError;
use crate::layout::{valid_queue_size, RingLayout, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use crate::mem::GuestMem;
use crate::session::{Session, VIRTIO_NET_F_MAC};
use crate::stats::DriverStats;
use crate::vring::{DescSpec, Token, Vring};

const PAGE: u64 = 4096;
/// Bytes left between RX buffers.
const BUF_GAP: u64 = 64;
/// Largest TX arena per pair.
const TX_ARENA_MAX: u64 = 2 << 20;
/// Smallest TX arena per pair: one 64 KiB frame plus header, table and gaps.
const TX_ARENA_MIN: u64 = 256 << 10;

/// A mergeable frame whose buffers have not all been used yet.
#[derive(Debug)]
pub(crate) struct Partial {
    pub hdr: [u8; NET_HDR_LEN],
    pub num_buffers: u16,
    pub remaining: u16,
    pub data: Vec<u8>,
}

/// One RX/TX queue pair.
#[derive(Debug)]
pub(crate) struct Pair {
    pub rx: Vring,
    pub tx: Vring,
    /// RX buffer of each descriptor slot.
    pub rx_bufs: Vec<u64>,
    /// Bytes per RX descriptor.
    pub rx_desc_len: u32,
    /// Descriptors per RX chain (1 with MRG_RXBUF, else 2).
    pub rx_chain_descs: usize,
    pub rx_partial: Option<Partial>,
    /// Frames taken off the ring while waiting for something else.
    pub rx_stash: VecDeque<RxFrame>,
    pub arena: TxArena,
}

/// A VM's virtio-net device as seen from inside: a vhost-user front-end plus driver.
#[derive(Debug)]
pub struct Guest {
    pub(crate) cfg: DriverConfig,
    pub(crate) session: Session,
    pub(crate) pairs: Vec<Pair>,
    pub(crate) misc: BumpAlloc,
    pub(crate) mac: Option<[u8; 6]>,
    pub(crate) bases: Option<Vec<u16>>,
    pub(crate) rr: usize,
    // Last: unmapped after the session (and its socket) is gone.
    pub(crate) mem: GuestMem,
}

fn invalid(field: &'static str, value: u64, reason: &'static str) -> DriverError {
    DriverError::InvalidConfig {
        field,
        value,
        reason,
    }
}

fn validate(cfg: &DriverConfig) -> Result<(), DriverError> {
    if cfg.queue_pairs == 0 || cfg.queue_pairs > 128 {
        return Err(invalid(
            "queue_pairs",
            cfg.queue_pairs.into(),
            "must be 1..=128",
        ));
    }
    if !valid_queue_size(cfg.queue_size) || cfg.queue_size < 2 {
        return Err(invalid(
            "queue_size",
            cfg.queue_size.into(),
            "must be a power of two in 2..=32768",
        ));
    }
    if cfg.rx_reserve >= cfg.queue_size {
        return Err(invalid(
            "rx_reserve",
            cfg.rx_reserve.into(),
            "must be below queue_size",
        ));
    }
    if cfg.mrg_rxbuf {
        if cfg.rx_buf_len < 64 {
            return Err(invalid(
                "rx_buf_len",
                cfg.rx_buf_len.into(),
                "mergeable buffers must be at least 64 bytes",
            ));
        }
    } else if u64::from(cfg.rx_buf_len / 2) * 2 < NET_HDR_LEN as u64 + u64::from(MAX_FRAME_NO_GSO) {
        // VIRTIO 1.2 §5.1.6.3.1: without MRG_RXBUF every chain must hold a whole frame.
        return Err(invalid(
            "rx_buf_len",
            cfg.rx_buf_len.into(),
            "without mrg_rxbuf must hold 12 + 1514 bytes",
        ));
    }
    Ok(())
}

/// Wait until one of `fds` is readable or `timeout` passes.
pub(crate) fn wait_readable(fds: &[RawFd], timeout: Duration) -> Result<(), DriverError> {
    let mut pfds: Vec<libc::pollfd> = fds
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let ms = libc::c_int::try_from(timeout.as_millis().max(1)).unwrap_or(libc::c_int::MAX);
    let n = libc::nfds_t::try_from(pfds.len()).unwrap_or(0);
    // SAFETY: pfds is a live, correctly sized array of pollfd for the whole call.
    let r = unsafe { libc::poll(pfds.as_mut_ptr(), n, ms) };
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(DriverError::Socket(e));
        }
    }
    Ok(())
}

impl Guest {
    /// Connect to a backend listening on `socket` (quiverd "server" mode); retries until `timeout`.
    pub fn connect(
        socket: &Path,
        cfg: DriverConfig,
        timeout: Duration,
    ) -> Result<Guest, DriverError> {
        validate(&cfg)?;
        let deadline = Instant::now() + timeout;
        let stream = loop {
            match UnixStream::connect(socket) {
                Ok(s) => break s,
                Err(source) if Instant::now() >= deadline => {
                    return Err(DriverError::Connect {
                        path: socket.to_path_buf(),
                        source,
                    })
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        };
        Self::start(stream, cfg)
    }

    /// Listen on `socket` and accept one backend connection (quiverd "client" mode).
    pub fn listen(
        socket: &Path,
        cfg: DriverConfig,
        timeout: Duration,
    ) -> Result<Guest, DriverError> {
        validate(&cfg)?;
        let lerr = |source| DriverError::Listen {
            path: socket.to_path_buf(),
            source,
        };
        match std::fs::remove_file(socket) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(lerr(e)),
            _ => {}
        }
        let listener = UnixListener::bind(socket).map_err(lerr)?;
        listener.set_nonblocking(true).map_err(lerr)?;
        let deadline = Instant::now() + timeout;
        let stream = loop {
            match listener.accept() {
                Ok((s, _)) => break s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let now = Instant::now();
                    if now >= deadline {
                        return Err(DriverError::AcceptTimeout {
                            path: socket.to_path_buf(),
                        });
                    }
                    wait_readable(&[listener.as_raw_fd()], deadline - now)?;
                }
                Err(e) => return Err(lerr(e)),
            }
        };
        stream.set_nonblocking(false).map_err(DriverError::Socket)?;
        Self::start(stream, cfg)
    }

    fn start(stream: UnixStream, cfg: DriverConfig) -> Result<Guest, DriverError> {
        let mem = GuestMem::new(cfg.mem_size)?;
        let (pairs, misc) = Self::lay_out(&cfg, &mem)?;
        let session = Session::negotiate(stream, &cfg)?;
        let mut g = Guest {
            cfg,
            session,
            pairs,
            misc,
            mac: None,
            bases: None,
            rr: 0,
            mem,
        };
        g.session.set_mem(&g.mem, true)?;
        // Like Linux, fill RX rings before the device starts (DRIVER_OK).
        for p in 0..g.pairs.len() {
            let chains =
                usize::from(g.cfg.queue_size - g.cfg.rx_reserve) / g.pairs[p].rx_chain_descs;
            g.refill_rx(p, chains)?;
        }
        g.start_rings(None)?;
        if g.session
            .protocol()
            .contains(VhostUserProtocolFeatures::CONFIG)
            && g.session.has(VIRTIO_NET_F_MAC)
        {
            let c = g.session.read_config(0, 6)?;
            g.mac = c.get(..6).and_then(|m| m.try_into().ok());
        }
        Ok(g)
    }

    /// Place rings, RX buffers and TX arenas; page-aligned with gaps between.
    fn lay_out(cfg: &DriverConfig, mem: &GuestMem) -> Result<(Vec<Pair>, BumpAlloc), DriverError> {
        let have = mem.size() as u64;
        let mut bump = BumpAlloc::new(PAGE, have);
        let qs = cfg.queue_size;
        let too_small = |need: u64| DriverError::MemTooSmall { need, have };
        let ring = |bump: &mut BumpAlloc, index: usize| -> Result<Vring, DriverError> {
            let desc = bump
                .alloc(RingLayout::desc_bytes(qs), PAGE, PAGE)
                .ok_or(too_small(have + 1))?;
            let avail = bump
                .alloc(RingLayout::avail_bytes(qs), PAGE, PAGE)
                .ok_or(too_small(have + 1))?;
            let used = bump
                .alloc(RingLayout::used_bytes(qs), PAGE, PAGE)
                .ok_or(too_small(have + 1))?;
            let layout = RingLayout {
                size: qs,
                desc,
                avail,
                used,
            };
            Vring::new(layout, index, cfg.event_idx, cfg.in_order).map_err(DriverError::EventFd)
        };
        let (rx_desc_len, rx_chain_descs) = if cfg.mrg_rxbuf {
            (cfg.rx_buf_len, 1)
        } else {
            (cfg.rx_buf_len / 2, 2)
        };
        let mut pairs = Vec::new();
        let mut rings = Vec::new();
        for p in 0..usize::from(cfg.queue_pairs) {
            rings.push((ring(&mut bump, 2 * p)?, ring(&mut bump, 2 * p + 1)?));
        }
        let mut bufs = Vec::new();
        for _ in 0..cfg.queue_pairs {
            let mut b = Vec::with_capacity(usize::from(qs));
            for _ in 0..qs {
                let gpa = bump
                    .alloc(rx_desc_len.into(), 64, BUF_GAP)
                    .ok_or(too_small(have + u64::from(rx_desc_len) * u64::from(qs)))?;
                b.push(gpa);
            }
            bufs.push(b);
        }
        let per_pair =
            (bump.remaining() / 4 * 3 / u64::from(cfg.queue_pairs)).min(TX_ARENA_MAX) & !(PAGE - 1);
        if per_pair < TX_ARENA_MIN {
            return Err(too_small(
                have + (TX_ARENA_MIN - per_pair) * u64::from(cfg.queue_pairs) * 2,
            ));
        }
        for ((rx, tx), rx_bufs) in rings.into_iter().zip(bufs) {
            let base = bump
                .alloc(per_pair, PAGE, PAGE)
                .ok_or(too_small(have + per_pair))?;
            pairs.push(Pair {
                rx,
                tx,
                rx_bufs,
                rx_desc_len,
                rx_chain_descs,
                rx_partial: None,
                rx_stash: VecDeque::new(),
                arena: TxArena::new(base, per_pair),
            });
        }
        Ok((pairs, bump))
    }

    /// Send the ring setup and enable every ring; `bases` from a previous stop.
    fn start_rings(&mut self, bases: Option<&[u16]>) -> Result<(), DriverError> {
        for p in &self.pairs {
            for r in [&p.rx, &p.tx] {
                let base = bases.and_then(|b| b.get(r.index).copied()).unwrap_or(0);
                self.session.setup_ring(r, &self.mem, base)?;
            }
        }
        for i in 0..2 * self.pairs.len() {
            self.session.enable(i, true)?;
        }
        // Tell the device about the RX buffers posted before it started.
        for p in &mut self.pairs {
            p.rx.notify(&self.mem, true)?;
        }
        Ok(())
    }

    pub(crate) fn pair_index(&self, pair: u16) -> Result<usize, DriverError> {
        let i = usize::from(pair);
        if i >= self.pairs.len() {
            return Err(DriverError::NoSuchPair {
                pair,
                pairs: self.cfg.queue_pairs,
            });
        }
        Ok(i)
    }

    /// Post `n` RX chains on pair `p` and notify if the device wants it.
    pub(crate) fn refill_rx(&mut self, p: usize, n: usize) -> Result<(), DriverError> {
        if n == 0 {
            return Ok(());
        }
        let mem = &self.mem;
        let pair = &mut self.pairs[p];
        let per = pair.rx_chain_descs;
        for _ in 0..n {
            let bufs = &pair.rx_bufs;
            let len = pair.rx_desc_len;
            let head = pair.rx.add_with(
                mem,
                per,
                |i, slot| DescSpec {
                    addr: bufs[usize::from(slot)],
                    len,
                    flags: VRING_DESC_F_WRITE | if i + 1 < per { VRING_DESC_F_NEXT } else { 0 },
                    next: None,
                },
                Token::Rx,
            )?;
            if head.is_none() {
                break;
            }
            pair.rx.stats.rx_refills += 1;
        }
        pair.rx.publish(mem)?;
        pair.rx.notify(mem, false)?;
        Ok(())
    }

    /// Negotiated virtio features.
    pub fn features(&self) -> u64 {
        self.session.features()
    }

    /// Negotiated vhost-user protocol features.
    pub fn protocol_features(&self) -> u64 {
        self.session.protocol().bits()
    }

    /// MAC read from config space with GET_CONFIG, if the backend offers CONFIG and MAC.
    pub fn config_mac(&self) -> Option<[u8; 6]> {
        self.mac
    }

    /// GET_CONFIG of `len` bytes at `offset` (CONFIG protocol feature required).
    pub fn read_config(&mut self, offset: u32, len: u32) -> Result<Vec<u8>, DriverError> {
        self.session.read_config(offset, len)
    }

    /// The configuration this guest was built with.
    pub fn config(&self) -> &DriverConfig {
        &self.cfg
    }

    /// Counters of every queue.
    pub fn stats(&self) -> DriverStats {
        DriverStats::from_pairs(self.pairs.iter().map(|p| (p.rx.stats, p.tx.stats)))
    }

    /// SET_VRING_ENABLE for both rings of `pair`.
    pub fn set_pair_enabled(&mut self, pair: u16, on: bool) -> Result<(), DriverError> {
        let p = self.pair_index(pair)?;
        self.session.enable(2 * p, on)?;
        self.session.enable(2 * p + 1, on)
    }

    /// GET_VRING_BASE on every ring (the backend stops them), returning the bases
    /// indexed by vhost queue index.
    pub fn stop(&mut self) -> Result<Vec<u16>, DriverError> {
        let mut bases = Vec::with_capacity(2 * self.pairs.len());
        for i in 0..2 * self.pairs.len() {
            let b = self.session.get_base(i)?;
            // The base is a 16-bit ring index carried in a 32-bit field.
            bases.push(u16::try_from(b & 0xffff).unwrap_or(0));
        }
        self.bases = Some(bases.clone());
        Ok(bases)
    }

    /// Restart after [`Guest::stop`] on the same connection, as QEMU's
    /// vhost_dev_start does: SET_FEATURES, the memory table, then per ring
    /// NUM/BASE/ADDR/KICK/CALL with the stopped bases, then ENABLE.
    pub fn restart(&mut self) -> Result<(), DriverError> {
        let bases = match self.bases.take() {
            Some(b) => b,
            None => self.stop()?,
        };
        let f = self.session.features();
        self.session.set_features(f)?;
        self.session.set_mem(&self.mem, false)?;
        self.start_rings(Some(&bases))
    }

    /// Close the connection and free guest memory.
    pub fn disconnect(self) {}

    /// Bytes of guest memory.
    pub fn mem_size(&self) -> u64 {
        self.mem.size() as u64
    }

    /// Allocate `len` bytes of guest memory for test buffers (never freed).
    pub fn alloc_buf(&mut self, len: u64) -> Result<u64, DriverError> {
        self.misc
            .alloc(len, 64, BUF_GAP)
            .ok_or(DriverError::OutOfMemory { want: len })
    }

    /// Write bytes into guest memory.
    pub fn write_mem(&mut self, gpa: u64, data: &[u8]) -> Result<(), DriverError> {
        Ok(self.mem.write(gpa, data)?)
    }

    /// Read bytes from guest memory.
    pub fn read_mem(&self, gpa: u64, len: usize) -> Result<Vec<u8>, DriverError> {
        let mut b = vec![0u8; len];
        self.mem.read(gpa, &mut b)?;
        Ok(b)
    }

    /// (shadow avail idx, next used idx to consume) of a queue: what the
    /// driver has posted and what it has seen completed.
    pub fn ring_indices(&self, q: QueueSel) -> Option<(u16, u16)> {
        let p = self.pairs.get(usize::from(q.pair()))?;
        let r = match q {
            QueueSel::Rx(_) => &p.rx,
            QueueSel::Tx(_) => &p.tx,
        };
        Some((r.avail_idx(), r.last_used()))
    }

    /// All used entries consumed so far on a queue, (id, len).
    pub fn used_entries(&self, q: QueueSel) -> Vec<(u32, u32)> {
        let Some(p) = self.pairs.get(usize::from(q.pair())) else {
            return Vec::new();
        };
        match q {
            QueueSel::Rx(_) => p.rx.used_log.clone(),
            QueueSel::Tx(_) => p.tx.used_log.clone(),
        }
    }
}
