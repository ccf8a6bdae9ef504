//! `struct virtio_net_hdr` as used with VIRTIO_F_VERSION_1 (VIRTIO 1.2 §5.1.6).

use crate::WireError;

/// The 12-byte virtio-net header that precedes every frame in a virtqueue
/// buffer. With VIRTIO_F_VERSION_1 the header always includes `num_buffers`
/// (§5.1.6: "The legacy driver only presented num_buffers if
/// VIRTIO_NET_F_MRG_RXBUF was negotiated"), and every field is little-endian.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VirtioNetHdr {
    /// `VIRTIO_NET_HDR_F_*` bits.
    pub flags: u8,
    /// `VIRTIO_NET_HDR_GSO_*` value, possibly with [`VirtioNetHdr::GSO_ECN`].
    pub gso_type: u8,
    /// Length of the headers to copy into each segment.
    pub hdr_len: u16,
    /// Maximum segment payload size.
    pub gso_size: u16,
    /// Where checksumming starts, from the start of the frame.
    pub csum_start: u16,
    /// Where the checksum goes, from `csum_start`.
    pub csum_offset: u16,
    /// Number of merged RX buffers (§5.1.6.4); 0 on TX.
    pub num_buffers: u16,
}

impl VirtioNetHdr {
    /// Size on the wire with VERSION_1 (or legacy MRG_RXBUF).
    pub const LEN: usize = 12;

    /// `VIRTIO_NET_HDR_F_NEEDS_CSUM`: checksum from `csum_start` still to do.
    pub const NEEDS_CSUM: u8 = 1;
    /// `VIRTIO_NET_HDR_F_DATA_VALID`: the checksum has been validated.
    pub const DATA_VALID: u8 = 2;
    /// `VIRTIO_NET_HDR_F_RSC_INFO`.
    pub const RSC_INFO: u8 = 4;

    /// `VIRTIO_NET_HDR_GSO_NONE`.
    pub const GSO_NONE: u8 = 0;
    /// `VIRTIO_NET_HDR_GSO_TCPV4`.
    pub const GSO_TCPV4: u8 = 1;
    /// `VIRTIO_NET_HDR_GSO_UDP` (UFO).
    pub const GSO_UDP: u8 = 3;
    /// `VIRTIO_NET_HDR_GSO_TCPV6`.
    pub const GSO_TCPV6: u8 = 4;
    /// `VIRTIO_NET_HDR_GSO_UDP_L4` (USO).
    pub const GSO_UDP_L4: u8 = 5;
    /// `VIRTIO_NET_HDR_GSO_ECN`, or-ed into `gso_type`.
    pub const GSO_ECN: u8 = 0x80;

    /// Decodes the first 12 bytes of `bytes`.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, WireError> {
        let b: &[u8; Self::LEN] = bytes
            .get(..Self::LEN)
            .and_then(|s| s.try_into().ok())
            .ok_or(WireError::Truncated {
                need: Self::LEN,
                got: bytes.len(),
            })?;
        let le = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        Ok(Self {
            flags: b[0],
            gso_type: b[1],
            hdr_len: le(2),
            gso_size: le(4),
            csum_start: le(6),
            csum_offset: le(8),
            num_buffers: le(10),
        })
    }

    /// Encodes the header.
    pub fn to_bytes(&self) -> [u8; Self::LEN] {
        let mut b = [0u8; Self::LEN];
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_le_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_le_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_le_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_le_bytes());
        b[10..12].copy_from_slice(&self.num_buffers.to_le_bytes());
        b
    }

    /// Writes the header into the first 12 bytes of `out`.
    pub fn write_to(&self, out: &mut [u8]) -> Result<(), WireError> {
        let got = out.len();
        let dst = out.get_mut(..Self::LEN).ok_or(WireError::Truncated {
            need: Self::LEN,
            got,
        })?;
        dst.copy_from_slice(&self.to_bytes());
        Ok(())
    }

    /// The GSO type without the ECN bit.
    pub const fn gso_kind(&self) -> u8 {
        self.gso_type & !Self::GSO_ECN
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip() {
        let hdr = VirtioNetHdr {
            flags: VirtioNetHdr::NEEDS_CSUM,
            gso_type: VirtioNetHdr::GSO_TCPV4 | VirtioNetHdr::GSO_ECN,
            hdr_len: 0x0102,
            gso_size: 1448,
            csum_start: 34,
            csum_offset: 16,
            num_buffers: 3,
        };
        let b = hdr.to_bytes();
        assert_eq!(b, [1, 0x81, 2, 1, 0xa8, 5, 34, 0, 16, 0, 3, 0]);
        assert_eq!(VirtioNetHdr::from_bytes(&b), Ok(hdr));
        assert_eq!(hdr.gso_kind(), VirtioNetHdr::GSO_TCPV4);
    }

    #[test]
    fn lengths_table() {
        let buf = [0u8; 20];
        for len in 0..20 {
            let got = VirtioNetHdr::from_bytes(&buf[..len]);
            if len < 12 {
                assert_eq!(got, Err(WireError::Truncated { need: 12, got: len }));
            } else {
                assert_eq!(got, Ok(VirtioNetHdr::default()));
            }
            let mut out = [0xffu8; 20];
            let w = VirtioNetHdr::default().write_to(&mut out[..len]);
            if len < 12 {
                assert_eq!(w, Err(WireError::Truncated { need: 12, got: len }));
            } else {
                assert_eq!(w, Ok(()));
                assert_eq!(&out[..12], &[0; 12]);
            }
        }
    }
}
