//! quiver's vring type for vhost-user-backend.
//!
//! It is the crate's `VringMutex` plus one thing: every vring it creates is also
//! recorded for the thread that created it. vhost-user-backend builds a device's vrings
//! inside `VhostUserDaemon::new` and hands them only to that device's own workers, but
//! VM-to-VM delivery has another VNIC's worker (or an uplink poller) write straight into
//! this device's RX rings. The connection loop drains the record right after `new`
//! returns on the same thread, so the handles reach the switch without guessing.
//!
//! A TX ring's SET_VRING_ENABLE state is kept here too, apart from the crate's. The
//! vhost-user spec says a started but *disabled* virtio-net ring must still be
//! processed: "must not supply any new RX packets, but must process and discard any TX
//! packets". vhost-user-backend instead stops watching a disabled ring's kick. When a
//! guest shrinks its queue pairs (`ethtool -L`), chains it queued on a TX ring just
//! before QEMU disabled it would then never be completed, and Linux's virtio_net frees
//! a sent skb only on completion: the TCP sockets that own them stall for good. So the
//! crate sees a TX ring as always enabled (its kick stays watched while started) and
//! the worker reads the front-end's state from here, discarding what a disabled ring
//! carries.

use std::cell::RefCell;
use std::fs::File;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use vhost_user_backend::{VringMutex, VringStateGuard, VringStateMutGuard, VringT};
use virtio_queue::Error as VirtQueError;

use crate::backend::Mem;

thread_local! {
    static CREATED: RefCell<Vec<VringMutex<Mem>>> = const { RefCell::new(Vec::new()) };
}

/// Takes the vrings created on this thread since the last call, in creation order
/// (vhost-user-backend creates them in queue-index order).
pub fn take_created() -> Vec<VringMutex<Mem>> {
    CREATED.with(|c| std::mem::take(&mut *c.borrow_mut()))
}

/// A `VringMutex` that records itself on creation.
#[derive(Clone)]
pub struct Vring {
    inner: VringMutex<Mem>,
    /// TX rings only: the front-end's SET_VRING_ENABLE state.
    tx_enabled: Option<Arc<AtomicBool>>,
}

impl Vring {
    /// Whether the front-end has enabled this ring (SET_VRING_ENABLE, or SET_FEATURES
    /// without VHOST_USER_F_PROTOCOL_FEATURES).
    pub fn front_end_enabled(&self) -> bool {
        match &self.tx_enabled {
            Some(on) => on.load(Ordering::Acquire),
            None => self.inner.get_ref().is_enabled(),
        }
    }
}

impl<'a> VringStateGuard<'a, Mem> for Vring {
    type G = <VringMutex<Mem> as VringStateGuard<'a, Mem>>::G;
}

impl<'a> VringStateMutGuard<'a, Mem> for Vring {
    type G = <VringMutex<Mem> as VringStateMutGuard<'a, Mem>>::G;
}

impl VringT<Mem> for Vring {
    fn new(mem: Mem, max_queue_size: u16) -> Result<Self, VirtQueError> {
        let inner = VringMutex::new(mem, max_queue_size)?;
        // Rings are created in queue-index order after `take_created`: odd is TX.
        let index = CREATED.with(|c| {
            let mut c = c.borrow_mut();
            c.push(inner.clone());
            c.len() - 1
        });
        let tx_enabled = (index % 2 == 1).then(|| {
            inner.set_enabled(true);
            Arc::new(AtomicBool::new(false))
        });
        Ok(Vring { inner, tx_enabled })
    }

    fn get_ref(&self) -> <Self as VringStateGuard<'_, Mem>>::G {
        self.inner.get_ref()
    }

    fn get_mut(&self) -> <Self as VringStateMutGuard<'_, Mem>>::G {
        self.inner.get_mut()
    }

    fn add_used(&self, desc_index: u16, len: u32) -> Result<(), VirtQueError> {
        self.inner.add_used(desc_index, len)
    }

    fn signal_used_queue(&self) -> io::Result<()> {
        self.inner.signal_used_queue()
    }

    fn enable_notification(&self) -> Result<bool, VirtQueError> {
        self.inner.enable_notification()
    }

    fn disable_notification(&self) -> Result<(), VirtQueError> {
        self.inner.disable_notification()
    }

    fn needs_notification(&self) -> Result<bool, VirtQueError> {
        self.inner.needs_notification()
    }

    fn set_enabled(&self, enabled: bool) {
        match &self.tx_enabled {
            // The crate's own flag stays on (see the module comment).
            Some(on) => on.store(enabled, Ordering::Release),
            None => self.inner.set_enabled(enabled),
        }
    }

    fn set_queue_info(&self, desc: u64, avail: u64, used: u64) -> Result<(), VirtQueError> {
        self.inner.set_queue_info(desc, avail, used)
    }

    fn queue_next_avail(&self) -> u16 {
        self.inner.queue_next_avail()
    }

    fn set_queue_next_avail(&self, base: u16) {
        self.inner.set_queue_next_avail(base)
    }

    fn set_queue_next_used(&self, idx: u16) {
        self.inner.set_queue_next_used(idx)
    }

    fn queue_used_idx(&self) -> Result<u16, VirtQueError> {
        self.inner.queue_used_idx()
    }

    fn set_queue_size(&self, num: u16) {
        self.inner.set_queue_size(num)
    }

    fn set_queue_event_idx(&self, enabled: bool) {
        self.inner.set_queue_event_idx(enabled)
    }

    fn set_queue_ready(&self, ready: bool) {
        self.inner.set_queue_ready(ready)
    }

    fn set_kick(&self, file: Option<File>) {
        self.inner.set_kick(file)
    }

    fn read_kick(&self) -> io::Result<bool> {
        self.inner.read_kick()
    }

    fn set_call(&self, file: Option<File>) {
        self.inner.set_call(file)
    }

    fn set_err(&self, file: Option<File>) {
        self.inner.set_err(file)
    }
}
