//! A VNIC's dedicated receive paths: while it holds a ring of its uplink and a
//! front-end is connected, an uplink that can (af_xdp) steers the VNIC's frames into
//! receive paths of its own, one per uplink queue, and the VNIC's own workers read
//! them: path `k` on uplink queue `q` sits in the epoll of the worker of queue pair
//! `q % pairs` under event id `first_event(pairs) + k`, and its frames go to that
//! pair's RX ring first. No uplink poller touches them, so they never cross threads.
//!
//! The paths belong to one connection (`Conn`): the worker epolls die with it. They
//! are opened when the front-end connects or the VNIC is granted a ring, and closed
//! when it disconnects or loses its rings; closing steers the frames back to the
//! shared queues.

use std::sync::{Arc, Mutex, PoisonError, Weak};

use quiver_switch::UplinkId;
use quiver_uplink::DedicatedRx;
use vhost_user_backend::VringEpollHandler;
use vmm_sys_util::epoll::EventSet;

use crate::backend::{deadline_event, NetBackend};
use crate::fabric::Fabric;
use crate::vnic::Vnic;

/// One connection's worker epolls, by worker (= queue pair) index.
pub type Handlers = Vec<Arc<VringEpollHandler<NetBackend>>>;

/// Weak: a handler holds the backend, which holds the connection, which holds this.
type WeakHandlers = Vec<Weak<VringEpollHandler<NetBackend>>>;

/// One dedicated receive path and the uplink it belongs to.
pub struct RxPath {
    pub uplink: UplinkId,
    pub rx: Box<dyn DedicatedRx>,
}

/// Event id of dedicated path 0 in a worker's epoll (after the reclaim deadline).
pub fn first_event(pairs: u16) -> u16 {
    deadline_event(pairs) + 1
}

/// The worker (queue pair) that reads uplink queue `queue`.
pub fn worker_of(queue: usize, pairs: u16) -> usize {
    queue % usize::from(pairs.max(1))
}

/// One connection's dedicated paths.
pub struct Dedicated {
    handlers: WeakHandlers,
    pairs: u16,
    paths: Vec<Arc<RxPath>>,
}

impl Dedicated {
    pub fn new(handlers: Handlers, pairs: u16) -> Self {
        Dedicated {
            handlers: handlers.iter().map(Arc::downgrade).collect(),
            pairs,
            paths: Vec::new(),
        }
    }

    /// Path `k` (event id `first_event(pairs) + k`).
    pub fn get(&self, k: usize) -> Option<Arc<RxPath>> {
        self.paths.get(k).cloned()
    }

    pub fn is_open(&self) -> bool {
        !self.paths.is_empty()
    }

    fn event(&self, k: usize) -> u64 {
        u64::from(first_event(self.pairs)) + k as u64
    }

    /// Registers `paths` in their workers' epolls; a path that cannot be registered
    /// is dropped (its frames go back to the shared queues) and the error returned.
    fn open(&mut self, uplink: UplinkId, paths: Vec<Box<dyn DedicatedRx>>) -> std::io::Result<()> {
        for rx in paths {
            let k = self.paths.len();
            let t = worker_of(rx.queue(), self.pairs);
            let Some(h) = self.handlers.get(t).and_then(Weak::upgrade) else {
                self.close();
                return Err(std::io::Error::other(format!("no worker {t}")));
            };
            if let Err(e) = h.register_listener(rx.fd(), EventSet::IN, self.event(k)) {
                drop(rx);
                self.close();
                return Err(e);
            }
            self.paths.push(Arc::new(RxPath { uplink, rx }));
        }
        Ok(())
    }

    /// Takes every path out of the epolls and closes it.
    pub fn close(&mut self) {
        for (k, p) in std::mem::take(&mut self.paths).into_iter().enumerate() {
            let t = worker_of(p.rx.queue(), self.pairs);
            if let Some(h) = self.handlers.get(t).and_then(Weak::upgrade) {
                let _ = h.unregister_listener(p.rx.fd(), EventSet::IN, self.event(k));
            }
            // A worker may still hold the path for the rest of a burst: it closes
            // when that burst ends.
        }
    }
}

/// Brings `vnic`'s dedicated paths in line with the rings it holds now.
pub fn sync(vnic: &Vnic, fabric: &Fabric) {
    let Some(conn) = vnic.conn() else {
        return;
    };
    let view = fabric.load();
    let port = view
        .map
        .port(vnic.port)
        .and_then(|s| s.uplink)
        .and_then(|u| view.uplink(u));
    let wanted = port.is_some_and(|p| !p.ring_status(&vnic.cfg.name, false).held.is_empty());
    let mut d = conn
        .dedicated
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    if wanted == d.is_open() {
        return;
    }
    let name = &vnic.cfg.name;
    let Some(port) = port.filter(|_| wanted) else {
        log::info!("{name}: dedicated receive paths closed, back on the shared queues");
        d.close();
        return;
    };
    match port
        .dev
        .dedicate(vnic.cfg.mac.0, vnic.cfg.vlan.unwrap_or(0))
    {
        Ok(Some(paths)) => {
            let n = paths.len();
            match d.open(port.id, paths) {
                Ok(()) => log::info!(
                    "{name}: {n} dedicated receive path(s) on uplink {}, read by its own workers",
                    port.cfg.name
                ),
                Err(e) => log::warn!(
                    "{name}: cannot watch the dedicated receive paths on uplink {} ({e}): \
                     served by the shared queues",
                    port.cfg.name
                ),
            }
        }
        Ok(None) => {}
        Err(e) => log::warn!(
            "{name}: no dedicated receive paths on uplink {}: {}; served by the shared queues",
            port.cfg.name,
            crate::report(&e)
        ),
    }
}

/// The paths of a connection, shared between its workers and `sync`.
pub type Slot = Mutex<Dedicated>;
