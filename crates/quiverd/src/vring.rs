//! quiver's vring type for vhost-user-backend.
//!
//! It is the crate's `VringMutex` plus one thing: every vring it creates is also
//! recorded for the thread that created it. vhost-user-backend builds a device's vrings
//! inside `VhostUserDaemon::new` and hands them only to that device's own workers, but
//! VM-to-VM delivery has another VNIC's worker (or an uplink poller) write straight into
//! this device's RX rings. The connection loop drains the record right after `new`
//! returns on the same thread, so the handles reach the switch without guessing.

use std::cell::RefCell;
use std::fs::File;
use std::io;

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
pub struct Vring(VringMutex<Mem>);

impl<'a> VringStateGuard<'a, Mem> for Vring {
    type G = <VringMutex<Mem> as VringStateGuard<'a, Mem>>::G;
}

impl<'a> VringStateMutGuard<'a, Mem> for Vring {
    type G = <VringMutex<Mem> as VringStateMutGuard<'a, Mem>>::G;
}

impl VringT<Mem> for Vring {
    fn new(mem: Mem, max_queue_size: u16) -> Result<Self, VirtQueError> {
        let inner = VringMutex::new(mem, max_queue_size)?;
        CREATED.with(|c| c.borrow_mut().push(inner.clone()));
        Ok(Vring(inner))
    }

    fn get_ref(&self) -> <Self as VringStateGuard<'_, Mem>>::G {
        self.0.get_ref()
    }

    fn get_mut(&self) -> <Self as VringStateMutGuard<'_, Mem>>::G {
        self.0.get_mut()
    }

    fn add_used(&self, desc_index: u16, len: u32) -> Result<(), VirtQueError> {
        self.0.add_used(desc_index, len)
    }

    fn signal_used_queue(&self) -> io::Result<()> {
        self.0.signal_used_queue()
    }

    fn enable_notification(&self) -> Result<bool, VirtQueError> {
        self.0.enable_notification()
    }

    fn disable_notification(&self) -> Result<(), VirtQueError> {
        self.0.disable_notification()
    }

    fn needs_notification(&self) -> Result<bool, VirtQueError> {
        self.0.needs_notification()
    }

    fn set_enabled(&self, enabled: bool) {
        self.0.set_enabled(enabled)
    }

    fn set_queue_info(&self, desc: u64, avail: u64, used: u64) -> Result<(), VirtQueError> {
        self.0.set_queue_info(desc, avail, used)
    }

    fn queue_next_avail(&self) -> u16 {
        self.0.queue_next_avail()
    }

    fn set_queue_next_avail(&self, base: u16) {
        self.0.set_queue_next_avail(base)
    }

    fn set_queue_next_used(&self, idx: u16) {
        self.0.set_queue_next_used(idx)
    }

    fn queue_used_idx(&self) -> Result<u16, VirtQueError> {
        self.0.queue_used_idx()
    }

    fn set_queue_size(&self, num: u16) {
        self.0.set_queue_size(num)
    }

    fn set_queue_event_idx(&self, enabled: bool) {
        self.0.set_queue_event_idx(enabled)
    }

    fn set_queue_ready(&self, ready: bool) {
        self.0.set_queue_ready(ready)
    }

    fn set_kick(&self, file: Option<File>) {
        self.0.set_kick(file)
    }

    fn read_kick(&self) -> io::Result<bool> {
        self.0.read_kick()
    }

    fn set_call(&self, file: Option<File>) {
        self.0.set_call(file)
    }

    fn set_err(&self, file: Option<File>) {
        self.0.set_err(file)
    }
}
