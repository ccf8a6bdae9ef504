//! The vhost-user-backend glue: one `NetBackend` per front-end connection.
//!
//! It implements `VhostUserBackend` (not the `Mut` variant behind one lock): each
//! worker thread serves one queue pair and keeps its scratch state in its own slot, so
//! workers of one device never contend.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use quiver_virtio_net::{offered_features, offered_protocol_features, NetConfigSpace};
use vhost::vhost_user::message::VhostUserProtocolFeatures;
use vhost_user_backend::VhostUserBackend;
use vm_memory::{GuestMemoryAtomic, GuestMemoryMmap};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::event::{
    new_event_consumer_and_notifier, EventConsumer, EventFlag, EventNotifier,
};

use crate::dedicated::first_event;
use crate::fabric::Fabric;
use crate::vnic::{Conn, Vnic};
use crate::vring::Vring;
use crate::worker::Worker;

/// Guest memory as the backend sees it.
pub type Mem = GuestMemoryAtomic<GuestMemoryMmap<()>>;

/// Event ids within one worker: its pair's RX then TX queue (vhost-user-backend numbers
/// a thread's queues from 0 in queue order).
pub const EV_RX: u16 = 0;
pub const EV_TX: u16 = 1;

/// Event id of a worker's reclaim deadline timer: vhost-user-backend reserves
/// 0..=num_queues (queues and its exit event) in every worker's epoll.
pub fn deadline_event(pairs: u16) -> u16 {
    2 * pairs + 1
}

struct Inner {
    vnic: Arc<Vnic>,
    fabric: Arc<Fabric>,
    /// Set right after vhost-user-backend has created the vrings (see `vring`).
    conn: OnceLock<Arc<Conn>>,
    workers: Box<[Mutex<Worker>]>,
    /// The exit eventfds handed to vhost-user-backend, which registers them in its
    /// workers' epolls with `into_raw_fd` and never closes them (0.24): closed when
    /// the last clone of the backend goes, or every reconnect would leak one.
    exit_fds: Mutex<Vec<RawFd>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        let fds = std::mem::take(
            self.exit_fds
                .get_mut()
                .unwrap_or_else(PoisonError::into_inner),
        );
        for fd in fds {
            // SAFETY: `fd` is the consumer end created in `exit_event`. vhost-user-backend
            // turned it into a raw fd it never closes; its only user, a worker's epoll
            // handler, held a clone of this backend, so it is gone now. The fd stayed
            // open until here (its number cannot have been reused) and is closed once.
            drop(unsafe { <OwnedFd as FromRawFd>::from_raw_fd(fd) });
        }
    }
}

/// The device for one connection (fresh per connection: no state leaks across guests).
#[derive(Clone)]
pub struct NetBackend(Arc<Inner>);

impl NetBackend {
    pub fn new(vnic: Arc<Vnic>, fabric: Arc<Fabric>) -> Self {
        let pairs = usize::from(vnic.cfg.queue_pairs);
        let policy = vnic.cfg.tx_reclaim;
        let busy_poll = std::time::Duration::from_micros(u64::from(vnic.cfg.busy_poll_us));
        let workers = (0..pairs)
            .map(|p| Mutex::new(Worker::new(p, policy, busy_poll)))
            .collect();
        NetBackend(Arc::new(Inner {
            vnic,
            fabric,
            conn: OnceLock::new(),
            workers,
            exit_fds: Mutex::new(Vec::new()),
        }))
    }

    /// Each worker's reclaim deadline timer, by worker (thread) index.
    pub fn timer_fds(&self) -> Vec<Option<RawFd>> {
        self.0
            .workers
            .iter()
            .map(|w| w.lock().unwrap_or_else(PoisonError::into_inner).timer_fd())
            .collect()
    }

    pub fn queue_pairs(&self) -> u16 {
        self.0.vnic.cfg.queue_pairs
    }

    /// Worker `t` must not defer completions (its timer is not in its epoll).
    pub fn disable_deferral(&self, t: usize) {
        if let Some(w) = self.0.workers.get(t) {
            w.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .drop_timer();
        }
    }

    /// Attaches the connection's data-path handles (once).
    pub fn set_conn(&self, conn: Arc<Conn>) {
        let _ = self.0.conn.set(conn);
    }
}

impl VhostUserBackend for NetBackend {
    type Bitmap = ();
    type Vring = Vring;

    fn num_queues(&self) -> usize {
        2 * usize::from(self.0.vnic.cfg.queue_pairs)
    }

    fn max_queue_size(&self) -> usize {
        usize::from(self.0.vnic.cfg.queue_size)
    }

    fn features(&self) -> u64 {
        offered_features()
    }

    fn acked_features(&self, features: u64) {
        if let Some(conn) = self.0.conn.get() {
            conn.features.store(features, Ordering::Release);
        }
    }

    fn protocol_features(&self) -> VhostUserProtocolFeatures {
        VhostUserProtocolFeatures::from_bits_truncate(offered_protocol_features())
    }

    fn set_event_idx(&self, _enabled: bool) {
        // Read from the negotiated features per burst.
    }

    fn get_config(&self, offset: u32, size: u32) -> Vec<u8> {
        let cfg = &self.0.vnic.cfg;
        NetConfigSpace {
            mac: cfg.mac.0,
            link_up: true,
            announce: false,
            max_virtqueue_pairs: cfg.queue_pairs,
            mtu: cfg.mtu,
        }
        .read(offset, size)
    }

    fn update_memory(&self, _mem: Mem) -> io::Result<()> {
        // The GuestMemoryAtomic shared with vhost-user-backend is updated in place.
        Ok(())
    }

    fn queues_per_thread(&self) -> Vec<u64> {
        (0..self.0.vnic.cfg.queue_pairs)
            .map(|p| 0b11u64 << (2 * p))
            .collect()
    }

    fn exit_event(&self, _thread_index: usize) -> Option<(EventConsumer, EventNotifier)> {
        match new_event_consumer_and_notifier(EventFlag::NONBLOCK | EventFlag::CLOEXEC) {
            Ok(pair) => {
                self.0
                    .exit_fds
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(pair.0.as_raw_fd());
                Some(pair)
            }
            Err(e) => {
                log::error!(
                    "{}: cannot create a worker exit event: {e}",
                    self.0.vnic.cfg.name
                );
                None
            }
        }
    }

    fn stop_vring(&self, queue_index: u32) -> io::Result<()> {
        // GET_VRING_BASE: the worker finishes bursts under the vring lock, so nothing
        // is half-done here, but TX completions deferred by the reclaim policy are
        // published now, before the front-end takes the ring's base. A ring stopped
        // for corruption gets a fresh start.
        if let Some(conn) = self.0.conn.get() {
            let q = queue_index as usize;
            if q % 2 == 1 {
                crate::worker::flush_tx(&self.0.vnic, conn, q);
            }
            conn.set_broken(q, false);
        }
        Ok(())
    }

    fn handle_event(
        &self,
        device_event: u16,
        _evset: EventSet,
        vrings: &[Vring],
        thread_id: usize,
    ) -> io::Result<()> {
        let inner = &self.0;
        let (Some(slot), Some(conn)) = (inner.workers.get(thread_id), inner.conn.get()) else {
            return Ok(());
        };
        let mut worker = slot.lock().unwrap_or_else(PoisonError::into_inner);
        match device_event {
            EV_TX => {
                if let Some(tx) = vrings.get(usize::from(EV_TX)) {
                    worker.process_tx(&inner.vnic, conn, &inner.fabric, tx);
                }
            }
            EV_RX => {
                // New RX buffers. Frames are written straight into RX rings by their
                // senders and never wait here, so there is nothing to flush; keep the
                // guest from kicking again until it wraps (EVENT_IDX), and make sure a
                // call it may be waiting for was sent.
                if let Some(rx) = vrings.get(usize::from(EV_RX)) {
                    worker.quiet_rx(conn, rx);
                }
            }
            e if e == deadline_event(inner.vnic.cfg.queue_pairs) => {
                worker.deadline(&inner.vnic, conn);
            }
            e if e >= first_event(inner.vnic.cfg.queue_pairs) => {
                let k = usize::from(e - first_event(inner.vnic.cfg.queue_pairs));
                let path = conn
                    .dedicated
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .get(k);
                if let Some(path) = path {
                    worker.process_dedicated(&inner.vnic, &inner.fabric, &path);
                }
            }
            _ => {}
        }
        Ok(())
    }
}
