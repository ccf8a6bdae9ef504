//! A VNIC: its configuration, counters and the current front-end connection's
//! data-path handles (guest memory, vrings), which other workers use to write
//! straight into its RX rings.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use quiver_switch::{PortId, QueueCounters};
use vhost_user_backend::VringMutex;

use crate::backend::Mem;
use crate::config::VnicConfig;
use crate::dedicated::{Dedicated, Handlers, Slot};
use crate::ratelimit::RateLimiter;
use crate::warn_limited;

/// Events that are not per-queue traffic.
#[derive(Default)]
pub struct VnicEvents {
    pub connects: AtomicU64,
    pub disconnects: AtomicU64,
    /// Rings stopped because the guest corrupted them.
    pub ring_errors: AtomicU64,
    /// TX reclaim mode changes (eager <-> batched) of the adaptive policy.
    pub reclaim_switches: AtomicU64,
    /// Completions published by the reclaim deadline timer rather than a burst.
    pub reclaim_deadline_flushes: AtomicU64,
}

pub struct Vnic {
    pub cfg: VnicConfig,
    pub port: PortId,
    /// Per queue pair: rx = toward the guest, tx = from the guest.
    pub counters: Box<[QueueCounters]>,
    pub events: VnicEvents,
    conn: ArcSwapOption<Conn>,
    /// Guest-triggered warnings about this VNIC's rings.
    log: Mutex<RateLimiter>,
}

impl Vnic {
    pub fn new(cfg: VnicConfig, port: PortId) -> Self {
        let pairs = usize::from(cfg.queue_pairs);
        Vnic {
            cfg,
            port,
            counters: (0..pairs).map(|_| QueueCounters::new()).collect(),
            events: VnicEvents::default(),
            conn: ArcSwapOption::empty(),
            log: Mutex::new(RateLimiter::new(Duration::from_secs(5), 5)),
        }
    }

    pub fn conn(&self) -> Option<Arc<Conn>> {
        self.conn.load_full()
    }

    pub fn set_conn(&self, conn: Option<Arc<Conn>>) {
        self.conn.store(conn);
    }

    /// Stops virtqueue `q` of this connection after a ring error until the front-end
    /// restarts it: counted and logged (rate-limited: the guest controls how often).
    pub fn ring_stopped(&self, conn: &Conn, q: usize, e: &dyn std::fmt::Display) {
        conn.set_broken(q, true);
        self.events.ring_errors.fetch_add(1, Ordering::Relaxed);
        let mut log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
        let dir = if q % 2 == 0 { "RX" } else { "TX" };
        warn_limited!(log, "{}: {dir} queue {} stopped: {e}", self.cfg.name, q / 2);
    }

    pub fn counters(&self, pair: usize) -> &QueueCounters {
        // pair < queue_pairs is guaranteed by callers; fall back to pair 0.
        self.counters.get(pair).unwrap_or_else(|| &self.counters[0])
    }
}

/// One front-end connection's handles.
pub struct Conn {
    pub mem: Mem,
    /// Indexed by virtqueue: rx0, tx0, rx1, tx1, ...
    pub vrings: Vec<VringMutex<Mem>>,
    /// Negotiated virtio features (0 until SET_FEATURES).
    pub features: AtomicU64,
    /// Queues stopped after a ring error, until the front-end stops/restarts them.
    pub broken: Box<[AtomicBool]>,
    /// Receive paths of the VNIC's own on its uplink (see `dedicated`).
    pub dedicated: Slot,
}

impl Conn {
    pub fn new(mem: Mem, vrings: Vec<VringMutex<Mem>>, handlers: Handlers, pairs: u16) -> Self {
        let n = vrings.len();
        Conn {
            mem,
            vrings,
            features: AtomicU64::new(0),
            broken: (0..n).map(|_| AtomicBool::new(false)).collect(),
            dedicated: Mutex::new(Dedicated::new(handlers, pairs)),
        }
    }

    /// Whether the VNIC's frames come through its dedicated receive paths now.
    pub fn dedicated_open(&self) -> bool {
        self.dedicated
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_open()
    }

    pub fn features(&self) -> u64 {
        self.features.load(Ordering::Acquire)
    }

    pub fn has(&self, bit: u32) -> bool {
        self.features() & (1u64 << bit) != 0
    }

    pub fn is_broken(&self, queue: usize) -> bool {
        self.broken
            .get(queue)
            .is_none_or(|b| b.load(Ordering::Relaxed))
    }

    pub fn set_broken(&self, queue: usize, broken: bool) {
        if let Some(b) = self.broken.get(queue) {
            b.store(broken, Ordering::Relaxed);
        }
    }
}
