//! One queue pair's worker: guest TX bursts, switched and delivered.
//!
//! A burst pops up to `BURST` TX chains under the TX vring lock, classifies each frame
//! (anti-spoofing, VLAN, switching table), delivers frames grouped by destination (one
//! RX-ring lock and one used-index publish per destination), then completes all chains
//! with one used-index publish and at most one call. Because a burst finishes under the
//! lock, GET_VRING_BASE (which takes it) always sees an exact base.
//!
//! When the chains are handed back is the reclaim policy's choice (`reclaim.rs`): after
//! every burst, or in batches, with a deadline timer that publishes what is left.

use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use arrayvec::ArrayVec;
use quiver_switch::{check_source, forward, Decision, DropReason, PortId, Source, UplinkId};
use quiver_virtio_net::ChainError;
use quiver_virtio_net::{PopError, TxError, TxFrame, TxReader};
use vhost_user_backend::VringT;
use virtio_bindings::virtio_net::{VIRTIO_NET_F_HOST_TSO4, VIRTIO_NET_F_HOST_TSO6};
use virtio_bindings::virtio_ring::{VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC};
use virtio_queue::QueueT;
use vm_memory::GuestAddressSpace;
use vmm_sys_util::timerfd::TimerFd;

use crate::dedicated::RxPath;
use crate::deliver::{self, RxItem};
use crate::fabric::{Fabric, FabricView};
use crate::offload;
use crate::ratelimit::RateLimiter;
use crate::reclaim::{Reclaim, ReclaimPolicy, DEADLINE};
use crate::uplink_rx;
use crate::vnic::{Conn, Vnic};
use crate::vq;
use crate::vring::Vring;
use crate::warn_limited;

/// TX chains taken per burst.
pub const BURST: usize = 64;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Dest {
    Port(PortId),
    Uplink(UplinkId),
    Flood,
}

struct Pending<'m> {
    frame: TxFrame<'m>,
    dest: Dest,
    vlan: u16,
}

/// Per-pair state, owned by the pair's worker thread.
pub struct Worker {
    pair: usize,
    log: RateLimiter,
    reclaim: Reclaim,
    /// Publishes deferred TX completions at the deadline; without it (timerfd_create
    /// failed) completions are never deferred.
    timer: Option<TimerFd>,
    /// When the armed deadline passes (`None`: not armed); a busy-polling worker
    /// checks it itself.
    deadline_at: Option<Instant>,
    /// How long an emptied TX ring is polled before the worker sleeps (0 = never).
    busy_poll: Duration,
    /// The uplink queue this burst sent to, flushed at its end. A worker sends to
    /// one: its VNIC's uplink, queue `pair % queues`.
    unflushed: Option<(UplinkId, usize)>,
}

impl Worker {
    pub fn new(pair: usize, policy: ReclaimPolicy, busy_poll: Duration) -> Self {
        let timer = match TimerFd::new() {
            Ok(t) => Some(t),
            Err(e) => {
                log::warn!("queue pair {pair}: no reclaim timer ({e}): TX completions are published every burst");
                None
            }
        };
        Worker {
            pair,
            log: RateLimiter::new(Duration::from_secs(5), 10),
            reclaim: Reclaim::new(policy),
            timer,
            deadline_at: None,
            busy_poll,
            unflushed: None,
        }
    }

    /// The deadline timer's fd, for the worker's epoll.
    pub fn timer_fd(&self) -> Option<RawFd> {
        self.timer.as_ref().map(AsRawFd::as_raw_fd)
    }

    /// Gives up the deadline timer: completions are published every burst.
    pub fn drop_timer(&mut self) {
        self.timer = None;
        self.deadline_at = None;
    }

    /// Arms the deadline for completions just deferred (once: a later burst does not
    /// push it back).
    fn arm_deadline(&mut self) -> bool {
        if self.deadline_at.is_some() {
            return true;
        }
        let Some(timer) = self.timer.as_mut() else {
            return false;
        };
        if timer.reset(DEADLINE, None).is_err() {
            return false;
        }
        self.deadline_at = Some(Instant::now() + DEADLINE);
        true
    }

    /// The deadline passed: publish whatever completions are still deferred.
    pub fn deadline(&mut self, vnic: &Vnic, conn: &Conn) {
        if let Some(timer) = self.timer.as_mut() {
            // Readable, so the read does not block; it only clears the expiry.
            let _ = timer.wait();
        }
        self.deadline_at = None;
        if flush_tx(vnic, conn, 2 * self.pair + 1) {
            vnic.events
                .reclaim_deadline_flushes
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    pub fn process_tx(&mut self, vnic: &Vnic, conn: &Conn, fabric: &Fabric, tx: &Vring) {
        let q = 2 * self.pair + 1;
        if conn.is_broken(q) {
            return;
        }
        let view = fabric.load();
        let mem = conn.mem.memory();
        let tso = conn.has(VIRTIO_NET_F_HOST_TSO4) || conn.has(VIRTIO_NET_F_HOST_TSO6);
        let reader = TxReader {
            indirect: conn.has(VIRTIO_RING_F_INDIRECT_DESC),
            max_frame: vnic.cfg.max_frame(),
            max_gso_frame: if tso { offload::MAX_SUPER_FRAME } else { 0 },
        };
        let event_idx = conn.has(VIRTIO_RING_F_EVENT_IDX);
        let counters = vnic.counters(self.pair);
        let mut chains = 0usize;
        // Busy poll: since when the ring has been found empty.
        let mut idle_since: Option<Instant> = None;
        loop {
            let mut st = tx.get_mut();
            if !st.get_queue().ready() {
                break;
            }
            // A started but disabled ring is still drained: its chains are completed
            // and discarded (see vring.rs).
            let discard = !tx.front_end_enabled();
            let mut ring = match vq::open_resumed(&mem, &st, event_idx) {
                Ok(ring) => ring,
                Err(e) => {
                    vnic.ring_stopped(conn, q, &e);
                    return;
                }
            };
            let _ = ring.disable_notification();
            let mut heads: ArrayVec<u16, BURST> = ArrayVec::new();
            let mut batch: ArrayVec<Pending<'_>, BURST> = ArrayVec::new();
            let mut drained = false;
            let mut ring_error = None;
            while !heads.is_full() {
                let head = match ring.pop() {
                    Ok(head) => head,
                    Err(PopError::Empty) => {
                        drained = true;
                        break;
                    }
                    Err(PopError::Ring(e)) => {
                        ring_error = Some(e);
                        break;
                    }
                };
                match reader.read(&mem, &ring, head) {
                    Ok(_) if discard => {
                        heads.push(head);
                        counters.add_drop(DropReason::QueueDisabled, 1);
                    }
                    Ok(frame) => {
                        heads.push(head);
                        match self.classify(vnic, &view, &frame) {
                            Ok((dest, vlan)) => batch.push(Pending { frame, dest, vlan }),
                            Err(reason) => counters.add_drop(reason, 1),
                        }
                    }
                    Err(e) => {
                        // A head outside the queue cannot be completed: skip it.
                        if !matches!(e, TxError::Chain(ChainError::HeadOutOfRange { .. })) {
                            heads.push(head);
                        }
                        let reason = match e {
                            TxError::Oversize { .. } => DropReason::Oversize,
                            TxError::Undersize { .. } => DropReason::Undersize,
                            _ => DropReason::BadChain,
                        };
                        counters.add_drop(reason, 1);
                        warn_limited!(
                            self.log,
                            "{}: TX queue {}: dropped chain {head}: {e}",
                            vnic.cfg.name,
                            self.pair
                        );
                    }
                }
            }
            let (packets, bytes) = self.deliver(vnic, &view, &batch);
            counters.add_tx(packets, bytes);
            drop(batch);
            for head in &heads {
                if let Err(e) = ring.add_used(*head, 0) {
                    ring_error = Some(e);
                    break;
                }
            }
            chains += heads.len();
            if !heads.is_empty() {
                idle_since = None;
            }
            // Adaptive busy poll: after traffic, an emptied ring is polled for
            // `busy_poll` with kicks still off, so a streaming guest need not kick;
            // a quiet one is left alone and the worker sleeps.
            let spin = drained
                && ring_error.is_none()
                && chains > 0
                && !self.busy_poll.is_zero()
                && idle_since.get_or_insert_with(Instant::now).elapsed() < self.busy_poll;
            // While spinning the deadline timer cannot run on this thread: check it.
            let overdue = spin && self.deadline_at.is_some_and(|d| Instant::now() >= d);
            let publish = ring_error.is_some()
                || overdue
                || self
                    .reclaim
                    .publish_now(ring.unpublished(), ring.in_flight(), ring.size())
                || !self.arm_deadline();
            if publish {
                if let Err(e) = vq::close(&mut st, &mut ring) {
                    ring_error.get_or_insert(e);
                }
            } else {
                vq::close_deferred(&mut st, &ring);
            }
            // Drained: re-arm kicks, and go on if the guest added chains meanwhile.
            let more = if spin {
                true
            } else if drained && ring_error.is_none() {
                ring.enable_notification().unwrap_or(false)
            } else {
                !drained
            };
            drop(st);
            if let Some(e) = ring_error {
                vnic.ring_stopped(conn, q, &e);
                break;
            }
            if !more {
                break;
            }
            if spin {
                // Other workers pinned to this CPU get their turn.
                std::thread::yield_now();
            }
        }
        if self.reclaim.observe(chains) {
            vnic.events
                .reclaim_switches
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Frames on one of the VNIC's dedicated receive paths: switched like any frame
    /// from the uplink (source learning, VLAN tag), and written to this worker's own
    /// RX ring first. A bounded number of bursts at a time (epoll calls again while
    /// more wait); with busy polling, an emptied path is polled for `busy_poll` after
    /// its last frame before the worker sleeps.
    pub fn process_dedicated(&mut self, vnic: &Vnic, fabric: &Fabric, path: &RxPath) {
        const BURSTS: usize = 64;
        let view = fabric.load();
        let Some(up) = view.uplink(path.uplink) else {
            return;
        };
        let q = path.rx.queue();
        let pair = self.pair;
        let mut idle_since: Option<Instant> = None;
        let mut bursts = 0;
        while bursts < BURSTS {
            let taken = path.rx.recv_burst(uplink_rx::BURST, &mut |frames| {
                uplink_rx::deliver_burst(up, q, pair, fabric, frames);
            });
            match taken {
                Ok(0) => {
                    // Other workers pinned to this CPU get their turn while spinning.
                    let spin = !self.busy_poll.is_zero()
                        && idle_since.get_or_insert_with(Instant::now).elapsed() < self.busy_poll;
                    if !spin {
                        break;
                    }
                    std::thread::yield_now();
                }
                Ok(_) => {
                    idle_since = None;
                    bursts += 1;
                }
                Err(e) => {
                    warn_limited!(
                        self.log,
                        "{}: dedicated receive path on uplink {} queue {q}: {e}",
                        vnic.cfg.name,
                        up.cfg.name
                    );
                    break;
                }
            }
        }
    }

    /// The guest posted RX buffers. Frames never wait for them (senders write straight
    /// into the ring or drop), so ask the guest not to kick for RX at all.
    pub fn quiet_rx(&mut self, conn: &Conn, rx: &Vring) {
        let st = rx.get_mut();
        if !st.get_queue().ready() || conn.is_broken(2 * self.pair) {
            return;
        }
        let mem = conn.mem.memory();
        if let Ok(mut ring) = vq::open(&mem, &st, conn.has(VIRTIO_RING_F_EVENT_IDX)) {
            let _ = ring.suppress_kicks();
        }
    }

    /// Anti-spoofing, VLAN and the switching decision for one guest frame.
    fn classify(
        &mut self,
        vnic: &Vnic,
        view: &FabricView,
        frame: &TxFrame<'_>,
    ) -> Result<(Dest, u16), DropReason> {
        let mut eth = [0u8; 14];
        if frame.peek(&mut eth) < 14 {
            return Err(DropReason::Undersize);
        }
        let dst = quiver_wire::MacAddr([eth[0], eth[1], eth[2], eth[3], eth[4], eth[5]]);
        let src = quiver_wire::MacAddr([eth[6], eth[7], eth[8], eth[9], eth[10], eth[11]]);
        let tagged = eth[12] == 0x81 && eth[13] == 0x00;
        let vlan = match vnic.cfg.vlan {
            // An access port's guest sends untagged frames only.
            Some(_) if tagged => return Err(DropReason::VlanMismatch),
            Some(v) => v,
            None => 0,
        };
        if let Err(reason) = check_source(&view.map, vnic.port, src) {
            if reason == DropReason::Spoofed {
                warn_limited!(
                    self.log,
                    "{}: dropped frame from {src}: the VNIC owns {} (set allow_spoof = true to permit)",
                    vnic.cfg.name,
                    vnic.cfg.mac
                );
            }
            return Err(reason);
        }
        match forward(&view.map, Source::Port(vnic.port), vlan, dst) {
            Decision::Port(p) => Ok((Dest::Port(p), vlan)),
            Decision::Uplink(u) => Ok((Dest::Uplink(u), vlan)),
            Decision::Flood { .. } => Ok((Dest::Flood, vlan)),
            Decision::Drop(reason) => Err(reason),
        }
    }

    /// Delivers a burst grouped by destination; returns frames and bytes sent on.
    fn deliver(&mut self, vnic: &Vnic, view: &FabricView, batch: &[Pending<'_>]) -> (u64, u64) {
        let mut done = [false; BURST];
        let (mut packets, mut bytes) = (0u64, 0u64);
        for i in 0..batch.len() {
            if done[i] {
                continue;
            }
            let dest = batch[i].dest;
            let mut group: ArrayVec<RxItem<'_>, BURST> = ArrayVec::new();
            for (j, p) in batch.iter().enumerate().skip(i) {
                if !done[j] && p.dest == dest {
                    done[j] = true;
                    packets += 1;
                    bytes += p.frame.len as u64;
                    group.push(RxItem {
                        hdr: p.frame.hdr,
                        segs: &p.frame.segs[..],
                        len: p.frame.len,
                    });
                }
            }
            match dest {
                Dest::Port(p) => match view.vnic(p) {
                    Some(dst) => deliver::to_vnic(dst, self.pair, &group),
                    None => vnic
                        .counters(self.pair)
                        .add_drop(DropReason::NoRoute, group.len() as u64),
                },
                Dest::Uplink(u) => {
                    for item in &group {
                        self.send_uplink(vnic, view, u, item);
                    }
                }
                Dest::Flood => {
                    let floods = batch.iter().skip(i).filter(|p| p.dest == Dest::Flood);
                    for p in floods {
                        self.flood(vnic, view, p);
                    }
                }
            }
        }
        self.flush_uplinks(vnic, view);
        (packets, bytes)
    }

    /// Has the uplink queue this burst sent to transmit what it queued.
    fn flush_uplinks(&mut self, vnic: &Vnic, view: &FabricView) {
        if let Some(target) = self.unflushed.take() {
            self.flush_uplink(vnic, view, target);
        }
    }

    fn flush_uplink(&mut self, vnic: &Vnic, view: &FabricView, (u, qi): (UplinkId, usize)) {
        let Some(up) = view.uplink(u) else { return };
        let Some(queue) = up.dev.queue(qi) else {
            return;
        };
        if let Err(e) = queue.flush() {
            warn_limited!(
                self.log,
                "{}: uplink {} flush failed: {e}",
                vnic.cfg.name,
                up.cfg.name
            );
        }
    }

    /// Broadcast/multicast: every other port on the VLAN, and the port's uplink.
    fn flood(&mut self, vnic: &Vnic, view: &FabricView, p: &Pending<'_>) {
        let item: [RxItem<'_>; 1] = [RxItem {
            hdr: p.frame.hdr,
            segs: &p.frame.segs[..],
            len: p.frame.len,
        }];
        for port in view.map.flood_set(p.vlan) {
            if *port == vnic.port {
                continue;
            }
            if let Some(dst) = view.vnic(*port) {
                deliver::to_vnic(dst, self.pair, &item);
            }
        }
        if let Some(u) = view.map.port(vnic.port).and_then(|s| s.uplink) {
            self.send_uplink(vnic, view, u, &item[0]);
        }
    }

    fn send_uplink(&mut self, vnic: &Vnic, view: &FabricView, u: UplinkId, item: &RxItem<'_>) {
        let Some(up) = view.uplink(u) else {
            vnic.counters(self.pair).add_drop(DropReason::NoRoute, 1);
            return;
        };
        let nq = up.dev.num_queues();
        if nq == 0 {
            vnic.counters(self.pair).add_drop(DropReason::NoRoute, 1);
            return;
        }
        let qi = self.pair % nq;
        let Some(queue) = up.dev.queue(qi) else {
            return;
        };
        let tag = vnic.cfg.vlan.map(deliver::vlan_tag);
        let sent = if up.vnet_hdr {
            deliver::to_uplink(queue, &item.hdr, item.segs, tag)
        } else {
            deliver::to_plain_uplink(queue, item, tag)
        };
        // Should another queue come up mid-burst, the previous one is flushed now.
        if let Some(prev) = self.unflushed.replace((u, qi)).filter(|p| *p != (u, qi)) {
            self.flush_uplink(vnic, view, prev);
        }
        match sent {
            Ok(n) => up.counters[qi].add_tx(1, n.saturating_sub(12) as u64),
            Err(e) => {
                up.counters[qi].add_drop(DropReason::UplinkError, 1);
                warn_limited!(
                    self.log,
                    "{}: uplink {} send failed: {e}",
                    vnic.cfg.name,
                    up.cfg.name
                );
            }
        }
    }
}

/// Publishes the TX completions of queue `q` that reclaim left unpublished, and calls
/// the guest if it asked. Used at the deadline and before the front-end reads the
/// ring's base (GET_VRING_BASE), so a deferred completion is never lost. Returns
/// whether there was anything to publish.
pub fn flush_tx(vnic: &Vnic, conn: &Conn, q: usize) -> bool {
    let Some(tx) = conn.vrings.get(q) else {
        return false;
    };
    if conn.is_broken(q) {
        return false;
    }
    let mut st = tx.get_mut();
    let mem = conn.mem.memory();
    let mut ring = match vq::open_resumed(&mem, &st, conn.has(VIRTIO_RING_F_EVENT_IDX)) {
        Ok(ring) => ring,
        // Never started, or unmapped: nothing of ours to publish.
        Err(_) => return false,
    };
    if ring.unpublished() == 0 {
        return false;
    }
    if let Err(e) = vq::close(&mut st, &mut ring) {
        drop(st);
        vnic.ring_stopped(conn, q, &e);
    }
    true
}
