//! quiver-testdriver: a vhost-user front-end plus a virtio-net guest driver,
//! used by quiver's tests to play a VM against quiverd over a real socket.
//!
//! All ring code here is written from VIRTIO 1.2 §2.7 independently of the
//! daemon's (which uses virtio-queue), so a misreading cannot pass both sides.
//! Only the vhost-user message encoding comes from the `vhost` crate.
//!
//! Modules:
//! - `config`: [`DriverConfig`], [`TxOpts`], [`RxFrame`], [`QueueSel`], [`RawDesc`].
//! - `guest`: [`Guest`] — memory layout, connect/listen, control operations.
//! - `rx`, `tx`: the receive and transmit paths of [`Guest`].
//! - `raw`: deliberate misbehaviour (raw chains, avail idx corruption).
//! - `session`: the vhost-user message sequence, in QEMU's order.
//! - `vring`: the driver side of one split virtqueue.
//! - `layout`: split-ring offsets and `vring_need_event`.
//! - `mem`: memfd-backed guest memory; `bump`, `arena`: allocators inside it.
//! - `seqframe`: Ethernet frames carrying stream ids and sequence numbers.
//! - `stats`: driver-side counters; `error`: [`DriverError`].

mod arena;
mod bump;
mod config;
mod error;
mod guest;
pub mod layout;
mod mem;
mod raw;
mod rx;
mod seqframe;
mod session;
mod stats;
mod tx;
mod vring;

pub use config::{DriverConfig, QueueSel, RawDesc, RxFrame, TxOpts, MAX_FRAME_NO_GSO, NET_HDR_LEN};
pub use error::DriverError;
pub use guest::Guest;
pub use mem::MemError;
pub use seqframe::{parse_seq_frame, seq_frame, seq_frame_intact, SEQ_ETHERTYPE};
pub use session::{
    VHOST_USER_F_PROTOCOL_FEATURES, VIRTIO_F_IN_ORDER, VIRTIO_F_VERSION_1, VIRTIO_NET_F_MAC,
    VIRTIO_NET_F_MQ, VIRTIO_NET_F_MRG_RXBUF, VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC,
};
pub use stats::{DriverStats, QueueStats};
pub use vring::VringError;

#[cfg(test)]
mod tests {
    fn send<T: Send>() {}
    fn error<T: std::error::Error + Send + Sync + 'static>() {}

    #[test]
    fn guest_can_move_to_a_thread_and_errors_work_with_anyhow() {
        send::<crate::Guest>();
        error::<crate::DriverError>();
    }
}
