//! Errors of the guest driver.

use std::io;
use std::path::PathBuf;

use crate::mem::MemError;
use crate::vring::VringError;

/// Everything that can go wrong while playing a VM.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// The configuration cannot work.
    #[error("invalid driver configuration: {field} = {value}: {reason}")]
    InvalidConfig {
        /// Field name.
        field: &'static str,
        /// Offending value.
        value: u64,
        /// Why.
        reason: &'static str,
    },
    /// Connecting to the backend socket failed until the timeout.
    #[error("cannot connect to {path}")]
    Connect {
        /// Socket path.
        path: PathBuf,
        /// Last cause.
        #[source]
        source: io::Error,
    },
    /// Listening on the socket failed.
    #[error("cannot listen on {path}")]
    Listen {
        /// Socket path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: io::Error,
    },
    /// No backend connected before the timeout.
    #[error("no backend connected to {path} in time")]
    AcceptTimeout {
        /// Socket path.
        path: PathBuf,
    },
    /// Socket setup (timeouts, poll) failed.
    #[error("socket operation failed")]
    Socket(#[source] io::Error),
    /// A vhost-user request failed or got a bad reply.
    #[error("vhost-user {request} failed")]
    Vhost {
        /// Request name.
        request: &'static str,
        /// Cause.
        #[source]
        source: vhost::Error,
    },
    /// The backend does not offer a virtio feature the driver needs.
    #[error("backend does not offer virtio feature bit {bit}")]
    FeatureNotOffered {
        /// Feature bit.
        bit: u32,
    },
    /// The backend offers fewer queues than configured.
    #[error("backend offers {got} queues, need {want}")]
    TooFewQueues {
        /// Needed.
        want: u64,
        /// Offered.
        got: u64,
    },
    /// Creating an eventfd failed.
    #[error("cannot create eventfd")]
    EventFd(#[source] io::Error),
    /// Guest memory access failed.
    #[error("guest memory access failed")]
    Mem(#[from] MemError),
    /// Virtqueue handling failed.
    #[error("virtqueue failure")]
    Vring(#[from] VringError),
    /// Guest memory too small for the rings and buffers.
    #[error("guest memory of {have} bytes is too small, need at least {need}")]
    MemTooSmall {
        /// Needed.
        need: u64,
        /// Configured.
        have: u64,
    },
    /// No such queue pair.
    #[error("no queue pair {pair}, configured {pairs}")]
    NoSuchPair {
        /// Requested.
        pair: u16,
        /// Configured.
        pairs: u16,
    },
    /// Not enough free descriptors.
    #[error("queue {queue}: {want} descriptors needed, {free} free")]
    RingFull {
        /// vhost queue index.
        queue: usize,
        /// Needed.
        want: usize,
        /// Free.
        free: usize,
    },
    /// Not enough TX buffer space.
    #[error("queue {queue}: no TX buffer space for {want} bytes")]
    ArenaFull {
        /// vhost queue index.
        queue: usize,
        /// Bytes needed.
        want: u64,
    },
    /// A feature needed for the request was not negotiated.
    #[error("virtio feature bit {bit} not negotiated")]
    NotNegotiated {
        /// Feature bit.
        bit: u32,
    },
    /// split_at offsets must be strictly increasing and inside header+frame.
    #[error("split offset {offset} invalid for {len} bytes")]
    BadSplit {
        /// Offending offset.
        offset: usize,
        /// Header + frame length.
        len: usize,
    },
    /// The device reported a used length larger than the buffer, or shorter than a header.
    #[error("queue {queue}: used entry {id} has length {len}, buffer holds {cap}")]
    BadUsedLen {
        /// vhost queue index.
        queue: usize,
        /// Used id.
        id: u32,
        /// Used length.
        len: u32,
        /// Buffer capacity.
        cap: u64,
    },
    /// A mergeable frame's first header said num_buffers = 0.
    #[error("queue {queue}: num_buffers is 0")]
    ZeroNumBuffers {
        /// vhost queue index.
        queue: usize,
    },
    /// Guest memory allocation for a test buffer failed.
    #[error("no guest memory left for {want} bytes")]
    OutOfMemory {
        /// Bytes requested.
        want: u64,
    },
}
