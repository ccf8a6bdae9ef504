//! Ethernet II frames (IEEE 802.3 §3.1.1) with an optional 802.1Q tag.

use crate::{EtherType, MacAddr, VlanTag, WireError, VLAN_HLEN};

/// The length of an untagged Ethernet header: dst (6) + src (6) + type (2).
pub const ETH_HLEN: usize = 14;

mod field {
    use std::ops::Range;
    pub const DST: Range<usize> = 0..6;
    pub const SRC: Range<usize> = 6..12;
    pub const ETHERTYPE: Range<usize> = 12..14;
    /// TCI of an 802.1Q tag, right after the 0x8100 TPID.
    pub const TCI: Range<usize> = 14..16;
    pub const INNER_ETHERTYPE: Range<usize> = 16..18;
}

/// A read/write view of an Ethernet frame in `buffer`.
///
/// Built with [`EthernetFrame::new_checked`], no accessor can panic: the
/// length covers the header, including the 802.1Q tag when the outer
/// EtherType is 0x8100. Only [`EthernetFrame::new_unchecked`] views may panic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EthernetFrame<T: AsRef<[u8]>> {
    buffer: T,
}

fn be16(buf: &[u8], at: std::ops::Range<usize>) -> u16 {
    u16::from_be_bytes([buf[at.start], buf[at.start + 1]])
}

fn mac_at(buf: &[u8], at: std::ops::Range<usize>) -> MacAddr {
    let mut o = [0u8; 6];
    o.copy_from_slice(&buf[at]);
    MacAddr(o)
}

impl<T: AsRef<[u8]>> EthernetFrame<T> {
    /// Wraps `buffer` without checking its length.
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps `buffer` after [`Self::check_len`].
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let frame = Self::new_unchecked(buffer);
        frame.check_len()?;
        Ok(frame)
    }

    /// Checks that the buffer holds the whole header (14 or 18 bytes).
    pub fn check_len(&self) -> Result<(), WireError> {
        let got = self.buffer.as_ref().len();
        if got < ETH_HLEN {
            return Err(WireError::Truncated {
                need: ETH_HLEN,
                got,
            });
        }
        let need = self.header_len();
        if got < need {
            return Err(WireError::Truncated { need, got });
        }
        Ok(())
    }

    /// Gives the buffer back.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    /// The destination address.
    pub fn dst(&self) -> MacAddr {
        mac_at(self.buffer.as_ref(), field::DST)
    }

    /// The source address.
    pub fn src(&self) -> MacAddr {
        mac_at(self.buffer.as_ref(), field::SRC)
    }

    /// The outer EtherType (0x8100 for a tagged frame).
    pub fn ethertype(&self) -> EtherType {
        be16(self.buffer.as_ref(), field::ETHERTYPE).into()
    }

    fn is_tagged(&self) -> bool {
        self.ethertype() == EtherType::Vlan
    }

    /// The 802.1Q tag if the outer EtherType is 0x8100 (C-TAG). An 802.1ad
    /// S-TAG (0x88a8) is not decoded here.
    pub fn vlan(&self) -> Option<VlanTag> {
        self.is_tagged()
            .then(|| VlanTag::from_tci(be16(self.buffer.as_ref(), field::TCI)))
    }

    /// The EtherType of the payload: after the 802.1Q tag if there is one,
    /// otherwise the outer one.
    pub fn inner_ethertype(&self) -> EtherType {
        if self.is_tagged() {
            be16(self.buffer.as_ref(), field::INNER_ETHERTYPE).into()
        } else {
            self.ethertype()
        }
    }

    /// 14, or 18 with an 802.1Q tag.
    pub fn header_len(&self) -> usize {
        if self.is_tagged() {
            ETH_HLEN + VLAN_HLEN
        } else {
            ETH_HLEN
        }
    }

    /// Everything after the header (and tag).
    pub fn payload(&self) -> &[u8] {
        &self.buffer.as_ref()[self.header_len()..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> EthernetFrame<T> {
    /// Sets the destination address.
    pub fn set_dst(&mut self, mac: MacAddr) {
        self.buffer.as_mut()[field::DST].copy_from_slice(&mac.0);
    }

    /// Sets the source address.
    pub fn set_src(&mut self, mac: MacAddr) {
        self.buffer.as_mut()[field::SRC].copy_from_slice(&mac.0);
    }

    /// Sets the outer EtherType. Setting `Vlan` on a buffer that was checked
    /// untagged makes later accessors read 4 more bytes: re-check or size the
    /// buffer for the tag first.
    pub fn set_ethertype(&mut self, ty: EtherType) {
        self.buffer.as_mut()[field::ETHERTYPE].copy_from_slice(&ty.to_u16().to_be_bytes());
    }

    /// The payload, mutably.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let at = self.header_len();
        &mut self.buffer.as_mut()[at..]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DST: MacAddr = MacAddr([0x52, 0x54, 0, 0, 0, 2]);
    const SRC: MacAddr = MacAddr([0x52, 0x54, 0, 0, 0, 1]);

    fn untagged() -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&DST.0);
        f.extend_from_slice(&SRC.0);
        f.extend_from_slice(&[0x08, 0x06, 0xaa, 0xbb]);
        f
    }

    fn tagged() -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&DST.0);
        f.extend_from_slice(&SRC.0);
        f.extend_from_slice(&[0x81, 0x00, 0xa0, 0x64, 0x08, 0x00, 0xcc]);
        f
    }

    #[test]
    fn check_len_table() {
        let un = untagged();
        let tg = tagged();
        let cases: &[(&[u8], Result<(), WireError>)] = &[
            (&[], Err(WireError::Truncated { need: 14, got: 0 })),
            (&un[..13], Err(WireError::Truncated { need: 14, got: 13 })),
            (&un[..14], Ok(())),
            (&un, Ok(())),
            (&tg[..14], Err(WireError::Truncated { need: 18, got: 14 })),
            (&tg[..17], Err(WireError::Truncated { need: 18, got: 17 })),
            (&tg[..18], Ok(())),
        ];
        for (buf, want) in cases {
            let got = EthernetFrame::new_checked(*buf).map(|_| ());
            assert_eq!(got, *want, "len {}", buf.len());
        }
    }

    #[test]
    fn untagged_fields() {
        let buf = untagged();
        let f = EthernetFrame::new_checked(&buf[..]).unwrap();
        assert_eq!(f.dst(), DST);
        assert_eq!(f.src(), SRC);
        assert_eq!(f.ethertype(), EtherType::Arp);
        assert_eq!(f.inner_ethertype(), EtherType::Arp);
        assert_eq!(f.vlan(), None);
        assert_eq!(f.header_len(), 14);
        assert_eq!(f.payload(), &[0xaa, 0xbb]);
    }

    #[test]
    fn tagged_fields() {
        let buf = tagged();
        let f = EthernetFrame::new_checked(&buf[..]).unwrap();
        assert_eq!(f.ethertype(), EtherType::Vlan);
        assert_eq!(
            f.vlan(),
            Some(VlanTag {
                pcp: 5,
                dei: false,
                vid: 100
            })
        );
        assert_eq!(f.inner_ethertype(), EtherType::Ipv4);
        assert_eq!(f.header_len(), 18);
        assert_eq!(f.payload(), &[0xcc]);
    }

    #[test]
    fn setters() {
        let mut buf = untagged();
        let mut f = EthernetFrame::new_checked(&mut buf[..]).unwrap();
        f.set_dst(SRC);
        f.set_src(DST);
        f.set_ethertype(EtherType::Unknown(0x1234));
        f.payload_mut()[0] = 0x11;
        assert_eq!(f.dst(), SRC);
        assert_eq!(f.src(), DST);
        assert_eq!(f.ethertype(), EtherType::Unknown(0x1234));
        assert_eq!(&buf[12..], &[0x12, 0x34, 0x11, 0xbb]);
    }
}
