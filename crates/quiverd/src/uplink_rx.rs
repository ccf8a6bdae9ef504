//! Uplink pollers: one thread per uplink queue reads frames from the wire, learns
//! their source MACs, and delivers them (grouped by destination VNIC) straight into
//! the VNICs' RX rings. Idle pollers sleep in poll(2).
//!
//! A `source` uplink has no fd: its poller generates a burst whenever the last one
//! was taken, as fast as the destination RX rings accept frames. quiverd asks guests
//! not to kick for RX buffers (`Worker::quiet_rx`), so there is no event to wait on
//! when a ring is full: the poller backs off instead, first yielding the CPU, then
//! sleeping 50 µs doubling up to 1 ms while no frame is accepted. Frames offered
//! while a ring is full are dropped and counted (`no_rx_buffers`), as a NIC would.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arrayvec::ArrayVec;
use quiver_switch::{forward, Decision, DropReason, PortId, Source};
use quiver_uplink::{UplinkKind, UplinkQueue, WireFrame};
use quiver_virtio_net::Slice;
use quiver_wire::MacAddr;

use crate::deliver;
use crate::fabric::Fabric;
use crate::uplink_port::UplinkPort;

pub const BURST: usize = 32;
/// virtio_net_hdr + the largest frame the TAP may hand over: a TSO super-frame.
const BUF_LEN: usize = 12 + crate::offload::MAX_SUPER_FRAME;
/// How often an idle poller checks for shutdown.
const POLL_MS: i32 = 200;
/// A source poller that got no frame accepted yields this many times before sleeping.
const SOURCE_YIELDS: u32 = 64;
const SOURCE_MIN_SLEEP: Duration = Duration::from_micros(50);
const SOURCE_MAX_SLEEP: Duration = Duration::from_millis(1);

pub struct Poller {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Poller {
    pub fn start(up: Arc<UplinkPort>, fabric: Arc<Fabric>) -> std::io::Result<Poller> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for qi in 0..up.dev.num_queues() {
            let (up, fabric, stop) = (up.clone(), fabric.clone(), stop.clone());
            let name = format!("up-{}-{qi}", up.cfg.name);
            let t = std::thread::Builder::new()
                .name(name)
                .spawn(move || poll_queue(&up, qi, &fabric, &stop))?;
            threads.push(t);
        }
        Ok(Poller { stop, threads })
    }

    pub fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            let _ = t.join();
        }
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn poll_queue(up: &UplinkPort, qi: usize, fabric: &Fabric, stop: &AtomicBool) {
    let Some(queue) = up.dev.queue(qi) else {
        return;
    };
    let Some(fd) = queue.rx_fd() else {
        if up.dev.kind() == UplinkKind::Source {
            generate(up, qi, queue, fabric, stop);
        }
        return;
    };
    // Only for kinds that cannot lend their frames (see `receive`).
    let mut bufs: Vec<Vec<u8>> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let mut pfd = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: pfd is a valid pollfd on this stack frame and nfds is 1; fd is owned
        // by the uplink, which `up` keeps alive for this thread's lifetime.
        let r = unsafe { libc::poll(&mut pfd, 1, POLL_MS) };
        if r <= 0 {
            continue;
        }
        receive(up, qi, queue, fabric, &mut bufs, BUF_LEN);
    }
}

/// Receives and delivers one burst of `queue`; returns what the VNICs took (see
/// `deliver_burst`). Kinds that lend their frames (`recv_burst`: source, af_xdp)
/// are delivered from where the frames lie; the others are copied into `bufs`
/// first (`buf_len` bytes each, allocated on first use).
fn receive(
    up: &UplinkPort,
    qi: usize,
    queue: &dyn UplinkQueue,
    fabric: &Fabric,
    bufs: &mut Vec<Vec<u8>>,
    buf_len: usize,
) -> u64 {
    let mut accepted = 0;
    let lent = queue.recv_burst(BURST, &mut |frames| {
        accepted = deliver_burst(up, qi, qi, fabric, frames);
    });
    let failed = |e: std::io::Error| {
        log::warn!("uplink {} queue {qi}: receive failed: {e}", up.cfg.name);
        std::thread::sleep(Duration::from_millis(100));
    };
    match lent {
        Some(Ok(_)) => return accepted,
        Some(Err(e)) => {
            failed(e);
            return 0;
        }
        None => {}
    }
    if bufs.is_empty() {
        *bufs = (0..BURST).map(|_| vec![0u8; buf_len]).collect();
    }
    let mut lens = [0usize; BURST];
    let mut n = 0;
    while n < BURST {
        match queue.recv(&mut bufs[n]) {
            Ok(Some(len)) => {
                lens[n] = len;
                n += 1;
            }
            Ok(None) => break,
            Err(e) => {
                failed(e);
                break;
            }
        }
    }
    if n == 0 {
        return 0;
    }
    deliver_burst(up, qi, qi, fabric, &wire_frames(&bufs[..n], &lens[..n]))
}

/// The frames of a burst received into `bufs` (virtio_net_hdr first).
fn wire_frames<'a>(bufs: &'a [Vec<u8>], lens: &[usize]) -> ArrayVec<WireFrame<'a>, BURST> {
    bufs.iter()
        .zip(lens)
        .map(|(buf, &len)| {
            let len = len.min(buf.len());
            let mut hdr = [0u8; 12];
            if let Some(h) = buf.get(..12) {
                hdr.copy_from_slice(h);
            }
            WireFrame {
                hdr,
                data: &buf[12.min(len)..len],
            }
        })
        .collect()
}

/// The poller of a source queue: a burst at a time, backing off while no frame is
/// accepted (see the module comment).
fn generate(
    up: &UplinkPort,
    qi: usize,
    queue: &dyn UplinkQueue,
    fabric: &Fabric,
    stop: &AtomicBool,
) {
    // Generated frames are at most MAX_SOURCE_FRAME: no need for TAP-sized buffers.
    let buf_len = 12 + quiver_uplink::MAX_SOURCE_FRAME;
    let mut bufs: Vec<Vec<u8>> = Vec::new();
    let mut idle = 0u32;
    let mut sleep = SOURCE_MIN_SLEEP;
    while !stop.load(Ordering::Relaxed) {
        let accepted = receive(up, qi, queue, fabric, &mut bufs, buf_len);
        if accepted > 0 {
            idle = 0;
            sleep = SOURCE_MIN_SLEEP;
        } else if idle < SOURCE_YIELDS {
            idle += 1;
            std::thread::yield_now();
        } else {
            std::thread::sleep(sleep);
            sleep = (sleep * 2).min(SOURCE_MAX_SLEEP);
        }
    }
}

/// Frames received so far by every queue of `vnic` (toward the guest).
fn vnic_rx(vnic: &crate::vnic::Vnic) -> u64 {
    vnic.counters
        .iter()
        .map(|c| c.snapshot().rx_packets)
        .fold(0, u64::wrapping_add)
}

/// What a route depends on: (802.1Q-tagged, VLAN id, destination MAC).
type RouteKey = (bool, u16, MacAddr);

/// Where one received frame goes, and the bytes it carries there.
#[derive(Clone, Copy)]
struct Routed {
    port: Option<PortId>,
    flood_vlan: Option<u16>,
    /// Byte range of the frame in its buffer, and whether the 802.1Q tag is stripped.
    strip_tag: bool,
}

/// Delivers one burst received on uplink queue `qi`, writing to each VNIC's RX
/// queue pair `hint` (modulo its pairs) first; returns how many frames (copies,
/// for a flood) the VNICs took (measured on their RX counters, so another
/// sender's frames to the same VNIC in the meantime count too: a hint for the
/// source's back-off, not a statistic).
pub fn deliver_burst(
    up: &UplinkPort,
    qi: usize,
    hint: usize,
    fabric: &Fabric,
    frames: &[WireFrame<'_>],
) -> u64 {
    let counters = &up.counters[qi.min(up.counters.len() - 1)];
    let view = fabric.load();
    let now = now_secs();
    let mut routes: ArrayVec<Option<Routed>, BURST> = ArrayVec::new();
    let (mut packets, mut bytes) = (0u64, 0u64);
    // A burst usually comes from few stations: learn each source once per burst, not
    // once per frame (the learner takes a lock).
    let mut learned: ArrayVec<(u16, MacAddr), BURST> = ArrayVec::new();
    let mut last: Option<(RouteKey, Result<Option<Routed>, DropReason>)> = None;
    for f in frames.iter().take(BURST) {
        packets += 1;
        bytes += f.data.len() as u64;
        let frame = f.data;
        if frame.len() < 14 {
            counters.add_drop(DropReason::Undersize, 1);
            routes.push(None);
            continue;
        }
        let dst = MacAddr([frame[0], frame[1], frame[2], frame[3], frame[4], frame[5]]);
        let src = MacAddr([frame[6], frame[7], frame[8], frame[9], frame[10], frame[11]]);
        let tagged = frame[12] == 0x81 && frame[13] == 0x00 && frame.len() >= 18;
        let vlan = if tagged {
            u16::from_be_bytes([frame[14], frame[15]]) & 0x0fff
        } else {
            0
        };
        if !learned.contains(&(vlan, src)) {
            fabric.learner.learn(&view.map, vlan, src, up.id, now);
            let _ = learned.try_push((vlan, src));
        }
        // Bursts mostly go to one destination: decide once per run of equal ones.
        let key = (tagged, vlan, dst);
        let decided = match last {
            Some((k, d)) if k == key => d,
            _ => {
                let d = match forward(&view.map, Source::Uplink(up.id), vlan, dst) {
                    Decision::Port(p) => Ok(Some(Routed {
                        port: Some(p),
                        flood_vlan: None,
                        strip_tag: tagged,
                    })),
                    Decision::Flood { .. } => Ok(Some(Routed {
                        port: None,
                        flood_vlan: Some(vlan),
                        strip_tag: tagged,
                    })),
                    Decision::Uplink(_) => Ok(None),
                    Decision::Drop(reason) => Err(reason),
                };
                last = Some((key, d));
                d
            }
        };
        routes.push(decided.unwrap_or_else(|reason| {
            counters.add_drop(reason, 1);
            None
        }));
    }
    counters.add_rx(packets, bytes);
    // The uplink's header, with offsets moved back when the tag is stripped.
    let hdrs: ArrayVec<[u8; 12], BURST> = frames
        .iter()
        .zip(&routes)
        .map(|(f, route)| {
            let mut h = f.hdr;
            if route.as_ref().is_some_and(|r| r.strip_tag) {
                crate::offload::shift_hdr(&mut h, -4);
            }
            h
        })
        .collect();
    // Views of each frame (without the tag when stripped).
    let mut views: ArrayVec<ArrayVec<Slice<'_>, 2>, BURST> = ArrayVec::new();
    for (f, route) in frames.iter().zip(&routes) {
        let mut v = ArrayVec::new();
        let frame = f.data;
        if route.as_ref().is_some_and(|r| r.strip_tag) {
            v.push(read_only(&frame[..12]));
            v.push(read_only(&frame[16..]));
        } else {
            v.push(read_only(frame));
        }
        views.push(v);
    }
    let frame_len = |v: &ArrayVec<Slice<'_>, 2>| v.iter().map(|s| s.len()).sum::<usize>();
    let item = |i: usize| deliver::RxItem {
        hdr: hdrs[i],
        segs: &views[i][..],
        len: frame_len(&views[i]),
    };
    let mut done = [false; BURST];
    let mut accepted = 0u64;
    for i in 0..routes.len() {
        let Some(route) = &routes[i] else { continue };
        if done[i] {
            continue;
        }
        if let Some(vlan) = route.flood_vlan {
            done[i] = true;
            for port in view.map.flood_set(vlan) {
                let attached = view.map.port(*port).and_then(|s| s.uplink) == Some(up.id);
                if let (true, Some(dst)) = (attached, view.vnic(*port)) {
                    let before = vnic_rx(dst);
                    deliver::to_vnic(dst, hint, &[item(i)]);
                    accepted += vnic_rx(dst).wrapping_sub(before);
                }
            }
            continue;
        }
        let Some(port) = route.port else { continue };
        let mut group: ArrayVec<deliver::RxItem<'_>, BURST> = ArrayVec::new();
        for j in i..routes.len() {
            if !done[j] && routes[j].as_ref().is_some_and(|r| r.port == Some(port)) {
                done[j] = true;
                group.push(item(j));
            }
        }
        match view.vnic(port) {
            Some(dst) if view.map.port(port).and_then(|s| s.uplink) == Some(up.id) => {
                let before = vnic_rx(dst);
                deliver::to_vnic(dst, hint, &group);
                accepted += vnic_rx(dst).wrapping_sub(before);
            }
            _ => counters.add_drop(DropReason::NoRoute, group.len() as u64),
        }
    }
    accepted
}

/// A received frame as a source of copies into guest memory.
fn read_only(bytes: &[u8]) -> Slice<'_> {
    // SAFETY: `bytes` is valid for reads for its length during the returned slice's
    // lifetime, which borrows it. Delivery only reads through the slice (it copies the
    // frame into guest memory), so the shared borrow is never written.
    unsafe { Slice::new(bytes.as_ptr().cast_mut(), bytes.len()) }
}
