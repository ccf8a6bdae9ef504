//! The two ends of the measured path, each on a thread of its own (pinned, its CPU time
//! read from /proc by thread id): the sender, a raw AF_PACKET socket in the sending
//! namespace (sendmmsg, 64 frames a call), and the receiving guest, a
//! testdriver vhost-user front-end that drains the VNIC's RX ring.

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use quiver_testdriver::{DriverConfig, DriverError, Guest};
use quiver_uplink::netns::NETNS_RUN_DIR;

use crate::topo::VNIC_MAC;

/// Source MAC of the sender's frames.
pub const SENDER_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x77];
/// Frames per sendmmsg(2) call; each a flow of its own (UDP source port), so the
/// kernel's flow hash spreads them over the uplink's queues.
pub const BURST: usize = 64;

fn ip_checksum(hdr: &[u8]) -> u16 {
    let mut sum: u32 = hdr
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c.get(1).copied().unwrap_or(0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !u16::try_from(sum).unwrap_or(0xffff)
}

/// A `len`-byte (no FCS; at least 42) IPv4/UDP frame from SENDER_MAC to `dst`, UDP
/// source port `sport`.
pub fn udp_frame(dst: [u8; 6], sport: u16, len: usize) -> Vec<u8> {
    udp_frame_from(SENDER_MAC, dst, sport, len)
}

/// The same from `src`.
pub fn udp_frame_from(src: [u8; 6], dst: [u8; 6], sport: u16, len: usize) -> Vec<u8> {
    let len = len.max(42);
    let mut f = Vec::with_capacity(len);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&[0x08, 0x00]);
    let ip_len = u16::try_from(len - 14).unwrap_or(u16::MAX);
    let mut ip = [0u8; 20];
    ip[0] = 0x45;
    ip[2..4].copy_from_slice(&ip_len.to_be_bytes());
    ip[8] = 64;
    ip[9] = 17;
    ip[12..16].copy_from_slice(&[10, 215, 0, 77]);
    ip[16..20].copy_from_slice(&[10, 215, 0, 2]);
    let csum = ip_checksum(&ip);
    ip[10..12].copy_from_slice(&csum.to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&sport.to_be_bytes());
    f.extend_from_slice(&9u16.to_be_bytes());
    f.extend_from_slice(&(ip_len - 20).to_be_bytes());
    f.extend_from_slice(&[0, 0]); // no UDP checksum
    f.resize(len, 0);
    f
}

/// The calling thread's id (for /proc/<tid>/stat).
pub fn gettid() -> i32 {
    // SAFETY: gettid(2) has no preconditions.
    unsafe { libc::gettid() }
}

/// Pins the calling thread to `cpu`.
pub fn pin_thread(cpu: usize) -> Result<()> {
    // SAFETY: all-zero is a valid (empty) cpu_set_t.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    ensure!(cpu < libc::CPU_SETSIZE as usize, "CPU {cpu} out of range");
    // SAFETY: cpu is below CPU_SETSIZE, so CPU_SET stays inside `set`.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: `set` is a live cpu_set_t of the size passed; pid 0 is this thread.
    let r = unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
    ensure!(
        r == 0,
        "pinning to CPU {cpu}: {}",
        std::io::Error::last_os_error()
    );
    Ok(())
}

/// A thread of the measurement: its id (for CPU time), stopped and joined on drop.
pub struct Worker {
    pub tid: i32,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<Result<()>>>,
}

impl Worker {
    /// Stops the thread and returns how it ended.
    pub fn finish(mut self) -> Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        match self.handle.take().map(JoinHandle::join) {
            Some(Ok(r)) => r,
            Some(Err(_)) => bail!("thread panicked"),
            None => Ok(()),
        }
    }

    /// Whether the thread ended early (an error it will return from `finish`).
    pub fn ended(&self) -> bool {
        self.handle.as_ref().is_none_or(JoinHandle::is_finished)
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Starts `body` on a thread named `name`; returns once it reported its thread id
/// (body calls `ready` after its setup) or failed setting up.
fn spawn_worker(
    name: &str,
    body: impl FnOnce(Arc<AtomicBool>, &dyn Fn(i32)) -> Result<()> + Send + 'static,
) -> Result<Worker> {
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel::<i32>();
    let stop2 = stop.clone();
    let handle = std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            let ready = move |tid: i32| {
                let _ = tx.send(tid);
            };
            body(stop2, &ready)
        })
        .with_context(|| format!("starting thread {name}"))?;
    match rx.recv_timeout(Duration::from_secs(15)) {
        Ok(tid) => Ok(Worker {
            tid,
            stop,
            handle: Some(handle),
        }),
        Err(_) => {
            stop.store(true, Ordering::Relaxed);
            match handle.join() {
                Ok(Err(e)) => Err(e.context(format!("{name} did not start"))),
                _ => bail!("{name} did not start within 15 s"),
            }
        }
    }
}

/// A raw AF_PACKET socket bound to `dev`, made on the calling thread after it entered
/// namespace `ns` (the thread stays there: it is the sender's own).
///
/// Not PACKET_QDISC_BYPASS: with it the kernel picks the transmit queue from the
/// sending CPU (every frame on one veth queue, so one AF_XDP socket); through
/// dev_queue_xmit (noqueue on veth and TAP) the flow hash spreads the 64 flows over
/// the queues as it does for the TAP and the af_packet fanout.
fn packet_socket(ns: &str, dev: &str) -> Result<OwnedFd> {
    let path = format!("{NETNS_RUN_DIR}/{ns}");
    let nsfd = File::open(&path).with_context(|| format!("opening {path}"))?;
    // SAFETY: nsfd is open for the call; setns moves only this thread, which is the
    // sender's own and ends with it.
    if unsafe { libc::setns(nsfd.as_raw_fd(), libc::CLONE_NEWNET) } < 0 {
        bail!("setns {path}: {}", std::io::Error::last_os_error());
    }
    // SAFETY: socket(2) takes no pointers. Protocol 0: send only, nothing is queued
    // to this socket.
    let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
    ensure!(raw >= 0, "socket: {}", std::io::Error::last_os_error());
    // SAFETY: raw was just returned by socket(2) and is owned by nothing else.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let name = std::ffi::CString::new(dev)?;
    // SAFETY: name is NUL-terminated and outlives the call.
    let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
    ensure!(ifindex != 0, "no interface {dev} in namespace {ns}");
    // SAFETY: all-zero is a valid sockaddr_ll.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = u16::try_from(libc::AF_PACKET)?;
    sll.sll_ifindex = i32::try_from(ifindex)?;
    let len = libc::socklen_t::try_from(std::mem::size_of::<libc::sockaddr_ll>())?;
    // SAFETY: sll is a sockaddr_ll of `len` bytes living across the call.
    let r = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&sll as *const libc::sockaddr_ll).cast(),
            len,
        )
    };
    ensure!(r == 0, "bind to {dev}: {}", std::io::Error::last_os_error());
    Ok(fd)
}

/// What the sender counts.
#[derive(Default)]
pub struct SendCounters {
    /// Frames sendmmsg(2) accepted.
    pub sent: AtomicU64,
    /// Calls that failed with ENOBUFS / EAGAIN (the device queue was full).
    pub busy: AtomicU64,
}

/// Starts the sender: `frame_len`-byte frames to the VNIC's MAC from `dev` in `ns`, as
/// fast as one thread pinned to `cpu` can, until stopped.
pub fn start_sender(
    ns: &str,
    dev: &str,
    cpu: usize,
    frame_len: usize,
    counters: Arc<SendCounters>,
) -> Result<Worker> {
    let (ns, dev) = (ns.to_owned(), dev.to_owned());
    spawn_worker("sender", move |stop, ready| {
        pin_thread(cpu)?;
        let fd = packet_socket(&ns, &dev)?;
        let frames: Vec<Vec<u8>> = (0..BURST)
            .map(|i| udp_frame(VNIC_MAC, 10_000 + u16::try_from(i).unwrap_or(0), frame_len))
            .collect();
        let mut iovs: Vec<libc::iovec> = frames
            .iter()
            .map(|f| libc::iovec {
                iov_base: f.as_ptr().cast_mut().cast(),
                iov_len: f.len(),
            })
            .collect();
        let mut msgs: Vec<libc::mmsghdr> = iovs
            .iter_mut()
            .map(|iov| {
                // SAFETY: all-zero is a valid mmsghdr (no address, no control data).
                let mut m: libc::mmsghdr = unsafe { std::mem::zeroed() };
                m.msg_hdr.msg_iov = iov;
                m.msg_hdr.msg_iovlen = 1;
                m
            })
            .collect();
        let count = libc::c_uint::try_from(msgs.len())?;
        ready(gettid());
        while !stop.load(Ordering::Relaxed) {
            // SAFETY: every mmsghdr points at one iovec of `iovs`, which points into
            // `frames`; all outlive the call, and `count` is msgs.len().
            let n = unsafe { libc::sendmmsg(fd.as_raw_fd(), msgs.as_mut_ptr(), count, 0) };
            if let Ok(n) = u64::try_from(n) {
                counters.sent.fetch_add(n, Ordering::Relaxed);
                continue;
            }
            let e = std::io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::ENOBUFS | libc::EAGAIN | libc::EINTR) => {
                    counters.busy.fetch_add(1, Ordering::Relaxed);
                }
                _ => bail!("sendmmsg on {dev}: {e}"),
            }
        }
        Ok(())
    })
}

/// A testdriver front-end on the VNIC's socket (queue size 1024, the VNIC's MAC).
fn connect_guest(socket: &Path) -> Result<Guest> {
    Guest::connect(
        socket,
        DriverConfig {
            mac: VNIC_MAC,
            queue_size: 1024,
            ..DriverConfig::default()
        },
        Duration::from_secs(5),
    )
    .with_context(|| format!("guest connecting to {}", socket.display()))
}

/// Starts the receiving guest: a testdriver front-end on `socket` (queue size 1024,
/// mergeable RX buffers) that takes every frame off its RX ring, counting them in
/// `received`, until stopped. `cpu`: where it runs (None: wherever the scheduler puts
/// it).
pub fn start_guest(
    socket: PathBuf,
    cpu: Option<usize>,
    received: Arc<AtomicU64>,
) -> Result<Worker> {
    spawn_worker("guest", move |stop, ready| {
        if let Some(cpu) = cpu {
            pin_thread(cpu)?;
        }
        let mut g = connect_guest(&socket)?;
        ready(gettid());
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) {
            if g.recv_any(Duration::from_millis(20))?.is_some() {
                n += 1;
                received.store(n, Ordering::Relaxed);
            }
        }
        Ok(())
    })
}

/// Starts the sending guest (VNIC → uplink → namespace): a testdriver front-end on
/// `socket` pinned to `cpu` that queues `frame_len`-byte frames from the VNIC's MAC to
/// SENDER_MAC (no VNIC owns it: quiverd sends them to the uplink) as fast as its TX ring
/// takes them, counting them in `counters` (`busy`: sends that found the ring full),
/// until stopped.
pub fn start_guest_sender(
    socket: PathBuf,
    cpu: usize,
    frame_len: usize,
    counters: Arc<SendCounters>,
) -> Result<Worker> {
    spawn_worker("guest-tx", move |stop, ready| {
        pin_thread(cpu)?;
        let mut g = connect_guest(&socket)?;
        let frames: Vec<Vec<u8>> = (0..BURST)
            .map(|i| {
                let sport = 20_000 + u16::try_from(i).unwrap_or(0);
                udp_frame_from(VNIC_MAC, SENDER_MAC, sport, frame_len)
            })
            .collect();
        ready(gettid());
        let mut i = 0usize;
        while !stop.load(Ordering::Relaxed) {
            match g.send(0, &frames[i % frames.len()]) {
                Ok(()) => {
                    i = i.wrapping_add(1);
                    counters.sent.fetch_add(1, Ordering::Relaxed);
                }
                Err(DriverError::RingFull { .. }) => {
                    counters.busy.fetch_add(1, Ordering::Relaxed);
                    std::thread::yield_now();
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn udp_frames_are_64_bytes_with_a_valid_ip_header() {
        let f = udp_frame(VNIC_MAC, 10_001, 64);
        assert_eq!(f.len(), 64);
        assert_eq!(&f[..6], &VNIC_MAC);
        assert_eq!(&f[12..14], &[0x08, 0x00]);
        assert_eq!(ip_checksum(&f[14..34]), 0, "header checksum verifies");
        assert_eq!(u16::from_be_bytes([f[16], f[17]]), 50);
        assert_eq!(u16::from_be_bytes([f[34], f[35]]), 10_001);
        assert_eq!(u16::from_be_bytes([f[38], f[39]]), 30);
    }
}
