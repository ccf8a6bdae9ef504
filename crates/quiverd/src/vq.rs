//! Bridging vhost-user-backend's per-vring state and quiver's `SplitRing`: open a
//! burst's view from the queue's addresses and indices, and close it by writing the
//! indices back, publishing the used index once and calling the guest if it asked.

use quiver_virtio_net::{GuestMem, RingError, SplitRing};
use vhost_user_backend::VringState;
use virtio_queue::QueueT;

use crate::backend::Mem;
use crate::deliver::ring_addrs;

/// quiver's view of a started vring for one burst.
pub fn open<'m>(
    mem: &'m GuestMem,
    st: &VringState<Mem>,
    event_idx: bool,
) -> Result<SplitRing<'m>, RingError> {
    let queue = st.get_queue();
    SplitRing::new(
        mem,
        ring_addrs(queue),
        event_idx,
        queue.next_avail(),
        queue.next_used(),
    )
}

/// `open` for a ring whose completions may have been left unpublished (TX rings under
/// batched reclaim): the last published used index is read from guest memory.
pub fn open_resumed<'m>(
    mem: &'m GuestMem,
    st: &VringState<Mem>,
    event_idx: bool,
) -> Result<SplitRing<'m>, RingError> {
    let mut ring = open(mem, st, event_idx)?;
    ring.resume_published()?;
    Ok(ring)
}

/// Ends a burst without publishing: the used elements are written and the indices
/// stored, the used index stays where the guest last saw it (deferred reclaim; a later
/// `close` publishes everything).
pub fn close_deferred(st: &mut VringState<Mem>, ring: &SplitRing<'_>) {
    let queue = st.get_queue_mut();
    queue.set_next_avail(ring.next_avail());
    queue.set_next_used(ring.next_used());
}

/// Ends a burst: indices back into the vring state, one used-index publish, and one
/// call if the guest's suppression state asks for it.
pub fn close(st: &mut VringState<Mem>, ring: &mut SplitRing<'_>) -> Result<(), RingError> {
    let notify = ring.publish_used();
    let queue = st.get_queue_mut();
    queue.set_next_avail(ring.next_avail());
    queue.set_next_used(ring.next_used());
    if notify? {
        // A failed call write (front-end gone) is not a ring error.
        let _ = st.signal_used_queue();
    }
    Ok(())
}
