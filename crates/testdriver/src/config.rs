//! Driver configuration and the per-call option and result types.

use std::time::Duration;

/// Length of `virtio_net_hdr_v1` (VIRTIO 1.2 §5.1.6: VERSION_1 always has num_buffers).
pub const NET_HDR_LEN: usize = 12;
/// Largest frame without GSO: 1500 MTU + Ethernet header.
pub const MAX_FRAME_NO_GSO: u32 = 1514;

/// How the guest driver is set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriverConfig {
    /// MAC the guest believes it has (used by tests as frame source).
    pub mac: [u8; 6],
    /// Queue pairs to set up (rx0, tx0, rx1, tx1, ...).
    pub queue_pairs: u16,
    /// Descriptors per virtqueue (power of two).
    pub queue_size: u16,
    /// Negotiate VIRTIO_NET_F_MRG_RXBUF.
    pub mrg_rxbuf: bool,
    /// Negotiate VIRTIO_RING_F_EVENT_IDX.
    pub event_idx: bool,
    /// Negotiate VIRTIO_F_IN_ORDER.
    pub in_order: bool,
    /// Negotiate VIRTIO_RING_F_INDIRECT_DESC.
    pub indirect: bool,
    /// Guest memory bytes.
    pub mem_size: usize,
    /// Bytes per RX chain. Without MRG_RXBUF a chain is two descriptors of
    /// half this size and must hold header + 1514.
    pub rx_buf_len: u32,
    /// RX descriptors left unposted, for `post_raw` on RX queues.
    pub rx_reserve: u16,
    /// Ack CONFIGURE_MEM_SLOTS and register memory with ADD_MEM_REG instead of SET_MEM_TABLE.
    pub mem_slots: bool,
    /// Bound on every wait for a vhost-user reply.
    pub reply_timeout: Duration,
    /// More virtio feature bits to negotiate (e.g. offloads: CSUM, GUEST_TSO4, ...);
    /// the device must offer them.
    pub extra_features: u64,
}

impl Default for DriverConfig {
    fn default() -> Self {
        DriverConfig {
            mac: [0x52, 0x54, 0x00, 0x12, 0x34, 0x56],
            queue_pairs: 1,
            queue_size: 256,
            mrg_rxbuf: true,
            event_idx: true,
            in_order: false,
            indirect: false,
            mem_size: 16 << 20,
            rx_buf_len: 2048,
            rx_reserve: 0,
            mem_slots: false,
            reply_timeout: Duration::from_secs(5),
            extra_features: 0,
        }
    }
}

/// Options of one transmitted frame.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TxOpts {
    /// Byte offsets into header+frame where a new descriptor starts.
    pub split_at: Vec<usize>,
    /// Put the chain in an indirect table (needs INDIRECT_DESC negotiated).
    pub indirect: bool,
    /// The virtio_net_hdr_v1 to prepend.
    pub hdr: [u8; NET_HDR_LEN],
}

/// One received frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RxFrame {
    /// The virtio_net_hdr_v1 of the first buffer.
    pub hdr: [u8; NET_HDR_LEN],
    /// num_buffers from the header.
    pub num_buffers: u16,
    /// The frame, without header.
    pub data: Vec<u8>,
}

/// A queue of a pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QueueSel {
    /// RX queue of pair n (vhost index 2n).
    Rx(u16),
    /// TX queue of pair n (vhost index 2n+1).
    Tx(u16),
}

impl QueueSel {
    /// The pair.
    pub fn pair(self) -> u16 {
        match self {
            QueueSel::Rx(p) | QueueSel::Tx(p) => p,
        }
    }
}

/// A raw descriptor for `post_raw`; `next: None` follows the chain layout.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RawDesc {
    /// Buffer address (any value; may be outside guest memory).
    pub addr: u64,
    /// Buffer length.
    pub len: u32,
    /// VRING_DESC_F_* flags, written verbatim.
    pub flags: u16,
    /// Explicit next index.
    pub next: Option<u16>,
}

impl RawDesc {
    /// Encode descriptors as an indirect table (next = i+1 when `None`),
    /// to be written with `Guest::write_mem` and referenced by a
    /// VRING_DESC_F_INDIRECT descriptor.
    pub fn encode_table(descs: &[RawDesc]) -> Vec<u8> {
        let mut out = Vec::with_capacity(descs.len() * 16);
        for (i, d) in descs.iter().enumerate() {
            let next = d.next.unwrap_or_else(|| u16::try_from(i + 1).unwrap_or(0));
            out.extend_from_slice(&d.addr.to_le_bytes());
            out.extend_from_slice(&d.len.to_le_bytes());
            out.extend_from_slice(&d.flags.to_le_bytes());
            out.extend_from_slice(&next.to_le_bytes());
        }
        out
    }
}
