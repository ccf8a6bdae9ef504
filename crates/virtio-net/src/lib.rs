//! quiver's virtio-net device model (VIRTIO 1.2 §5.1) over split virtqueues (§2.7).
//!
//! No threads, no sockets: callers hand in guest memory and ring addresses, this crate
//! walks and completes descriptor chains.
//!
//! - `features`: the virtio and vhost-user feature bits quiver offers, and config space.
//! - `ring`: quiver's own split-ring accessor: avail/used indices, batched used-index
//!   publish, EVENT_IDX and flag based notification suppression in both directions.
//! - `chain`: walking one descriptor chain (direct and indirect) into validated segments.
//! - `segs`: mapped guest buffers and the scatter-gather copy between them.
//! - `tx`: a TX chain to a frame (virtio_net_hdr + frame segments).
//! - `rx`: a frame into one or more RX chains (mergeable RX buffers).

mod chain;
mod features;
mod ring;
mod rx;
mod segs;
mod tx;

pub use chain::{ChainError, DescChain, Seg, MAX_CHAIN_SEGS};
pub use features::{
    offered_features, offered_protocol_features, NetConfigSpace, VIRTIO_NET_HDR_LEN,
};
pub use ring::{PopError, RingAddrs, RingError, SplitRing};
pub use rx::{BadChains, RxError, RxOutcome, RxWriter};
pub use segs::{copy_segs, SegList, SegListFull, INLINE_SEGS, MAX_FRAME_SEGS};
pub use tx::{TxError, TxFrame, TxReader};

/// Guest memory as vhost-user-backend maps it (no dirty-page bitmap).
pub type GuestMem = vm_memory::GuestMemoryMmap<()>;
/// A mapped run of guest (or host) memory.
pub type Slice<'a> = vm_memory::VolatileSlice<'a, ()>;
