//! Feature bits and the virtio-net config space (VIRTIO 1.2 §5.1.3, §5.1.4).

use virtio_bindings::virtio_config::{VIRTIO_F_IN_ORDER, VIRTIO_F_VERSION_1};
use virtio_bindings::virtio_net::{
    VIRTIO_NET_F_CSUM, VIRTIO_NET_F_CTRL_VQ, VIRTIO_NET_F_GUEST_ANNOUNCE, VIRTIO_NET_F_GUEST_CSUM,
    VIRTIO_NET_F_GUEST_TSO4, VIRTIO_NET_F_GUEST_TSO6, VIRTIO_NET_F_HOST_TSO4,
    VIRTIO_NET_F_HOST_TSO6, VIRTIO_NET_F_MAC, VIRTIO_NET_F_MQ, VIRTIO_NET_F_MRG_RXBUF,
    VIRTIO_NET_F_MTU, VIRTIO_NET_F_STATUS, VIRTIO_NET_S_ANNOUNCE, VIRTIO_NET_S_LINK_UP,
};
use virtio_bindings::virtio_ring::{VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC};

/// `struct virtio_net_hdr_v1` (VIRTIO 1.2 §5.1.6): always 12 bytes with VERSION_1.
pub const VIRTIO_NET_HDR_LEN: usize = 12;

/// vhost-user `VHOST_USER_F_PROTOCOL_FEATURES` (bit 30 of the virtio feature word).
const VHOST_USER_F_PROTOCOL_FEATURES: u32 = 30;

/// Virtio features quiver offers.
pub fn offered_features() -> u64 {
    [
        VIRTIO_F_VERSION_1,
        VIRTIO_NET_F_MAC,
        VIRTIO_NET_F_MTU,
        VIRTIO_NET_F_STATUS,
        VIRTIO_NET_F_MRG_RXBUF,
        VIRTIO_RING_F_EVENT_IDX,
        VIRTIO_RING_F_INDIRECT_DESC,
        VIRTIO_F_IN_ORDER,
        VIRTIO_NET_F_MQ,
        // Front-ends (QEMU, DPDK virtio-user) keep the control queue themselves, but
        // VIRTIO 1.2 §5.1.3.1 makes MQ depend on CTRL_VQ, so it must be offered.
        VIRTIO_NET_F_CTRL_VQ,
        VIRTIO_NET_F_GUEST_ANNOUNCE,
        VHOST_USER_F_PROTOCOL_FEATURES,
        // Offloads (§5.1.6.2): quiver finishes checksums and segments in software
        // wherever a destination cannot take a frame as the guest sent it.
        VIRTIO_NET_F_CSUM,
        VIRTIO_NET_F_GUEST_CSUM,
        VIRTIO_NET_F_HOST_TSO4,
        VIRTIO_NET_F_HOST_TSO6,
        VIRTIO_NET_F_GUEST_TSO4,
        VIRTIO_NET_F_GUEST_TSO6,
    ]
    .iter()
    .fold(0u64, |acc, bit| acc | 1u64 << bit)
}

/// vhost-user protocol features: MQ, REPLY_ACK, CONFIG, CONFIGURE_MEM_SLOTS.
///
/// Never offer one whose messages vhost-user-backend rejects (SEND_RARP, NET_SET_MTU,
/// STATUS, INFLIGHT_SHMFD): it drops the connection on them.
pub fn offered_protocol_features() -> u64 {
    const MQ: u32 = 0;
    const REPLY_ACK: u32 = 3;
    const CONFIG: u32 = 9;
    const CONFIGURE_MEM_SLOTS: u32 = 15;
    [MQ, REPLY_ACK, CONFIG, CONFIGURE_MEM_SLOTS]
        .iter()
        .fold(0u64, |acc, bit| acc | 1u64 << bit)
}

/// `struct virtio_net_config` up to and including `mtu` (VIRTIO 1.2 §5.1.4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NetConfigSpace {
    pub mac: [u8; 6],
    pub link_up: bool,
    pub announce: bool,
    pub max_virtqueue_pairs: u16,
    pub mtu: u16,
}

impl NetConfigSpace {
    /// Size of the fields quiver serves: mac(6) status(2) max_virtqueue_pairs(2) mtu(2).
    pub const LEN: usize = 12;

    pub fn to_bytes(&self) -> [u8; Self::LEN] {
        let mut out = [0u8; Self::LEN];
        out[..6].copy_from_slice(&self.mac);
        // VIRTIO_NET_S_LINK_UP = 1, VIRTIO_NET_S_ANNOUNCE = 2 (§5.1.4).
        const _: () = assert!(VIRTIO_NET_S_LINK_UP == 1 && VIRTIO_NET_S_ANNOUNCE == 2);
        let status = u16::from(self.link_up) | u16::from(self.announce) << 1;
        out[6..8].copy_from_slice(&status.to_le_bytes());
        out[8..10].copy_from_slice(&self.max_virtqueue_pairs.to_le_bytes());
        out[10..12].copy_from_slice(&self.mtu.to_le_bytes());
        out
    }

    /// The bytes a GET_CONFIG for `offset..offset+size` returns: the part that exists,
    /// zero beyond it (front-ends ask for the whole struct, including fields not served).
    pub fn read(&self, offset: u32, size: u32) -> Vec<u8> {
        let bytes = self.to_bytes();
        (0..size as usize)
            .map(|i| {
                (offset as usize)
                    .checked_add(i)
                    .and_then(|at| bytes.get(at))
                    .copied()
                    .unwrap_or(0)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offered_features_include_the_required_bits() {
        let f = offered_features();
        for bit in [3u32, 5, 15, 16, 17, 21, 22, 28, 29, 30, 32, 35] {
            assert_ne!(f & (1 << bit), 0, "bit {bit} missing");
        }
        // Offloads: CSUM, GUEST_CSUM, GUEST_TSO4/6, HOST_TSO4/6; never UFO or ECN,
        // which quiver cannot finish in software.
        for bit in [0u32, 1, 7, 8, 11, 12] {
            assert_ne!(f & (1 << bit), 0, "offload bit {bit} missing");
        }
        for bit in [9u32, 10, 13, 14] {
            assert_eq!(f & (1 << bit), 0, "bit {bit} offered");
        }
    }

    #[test]
    fn config_space_layout() {
        let c = NetConfigSpace {
            mac: [0x52, 0x54, 0, 0, 0, 1],
            link_up: true,
            announce: false,
            max_virtqueue_pairs: 4,
            mtu: 9000,
        };
        let b = c.to_bytes();
        assert_eq!(&b[..6], &[0x52, 0x54, 0, 0, 0, 1]);
        assert_eq!(u16::from_le_bytes([b[6], b[7]]), 1);
        assert_eq!(u16::from_le_bytes([b[8], b[9]]), 4);
        assert_eq!(u16::from_le_bytes([b[10], b[11]]), 9000);
        assert_eq!(c.read(6, 4), vec![1, 0, 4, 0]);
        assert_eq!(c.read(10, 6), vec![0x28, 0x23, 0, 0, 0, 0]);
        assert_eq!(c.read(u32::MAX, 2), vec![0, 0]);
    }
}
