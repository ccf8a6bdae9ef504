//! ARP for IPv4 over Ethernet (RFC 826).

use std::net::Ipv4Addr;

use crate::{MacAddr, WireError};

mod field {
    use std::ops::Range;
    pub const HTYPE: Range<usize> = 0..2;
    pub const PTYPE: Range<usize> = 2..4;
    pub const HLEN: usize = 4;
    pub const PLEN: usize = 5;
    pub const OPER: Range<usize> = 6..8;
    pub const SHA: Range<usize> = 8..14;
    pub const SPA: Range<usize> = 14..18;
    pub const THA: Range<usize> = 18..24;
    pub const TPA: Range<usize> = 24..28;
}

/// `ar$hrd` for Ethernet (RFC 826; IANA ARP hardware type 1).
pub const ARP_HTYPE_ETHERNET: u16 = 1;
/// `ar$pro` for IPv4.
pub const ARP_PTYPE_IPV4: u16 = 0x0800;

/// An ARP operation code (`ar$op`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ArpOperation {
    /// 1.
    Request,
    /// 2.
    Reply,
    /// Anything else (RARP, InARP, ...).
    Unknown(u16),
}

impl From<u16> for ArpOperation {
    fn from(v: u16) -> Self {
        match v {
            1 => Self::Request,
            2 => Self::Reply,
            v => Self::Unknown(v),
        }
    }
}

impl From<ArpOperation> for u16 {
    fn from(op: ArpOperation) -> Self {
        match op {
            ArpOperation::Request => 1,
            ArpOperation::Reply => 2,
            ArpOperation::Unknown(v) => v,
        }
    }
}

/// A view of an Ethernet/IPv4 ARP packet (28 bytes).
///
/// [`ArpPacket::new_checked`] checks the length and that the hardware and
/// protocol types and lengths are Ethernet/IPv4, so the fixed offsets of the
/// address fields are right and no accessor can panic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArpPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> ArpPacket<T> {
    /// The length of an Ethernet/IPv4 ARP packet.
    pub const LEN: usize = 28;

    /// Wraps `buffer` without checks.
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps `buffer` after checking length and types.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let got = buffer.as_ref().len();
        if got < Self::LEN {
            return Err(WireError::Truncated {
                need: Self::LEN,
                got,
            });
        }
        let p = Self::new_unchecked(buffer);
        let (htype, ptype, hlen, plen) = (
            p.hardware_type(),
            p.protocol_type(),
            p.hardware_len(),
            p.protocol_len(),
        );
        if htype != ARP_HTYPE_ETHERNET || ptype != ARP_PTYPE_IPV4 || hlen != 6 || plen != 4 {
            return Err(WireError::UnsupportedArp {
                htype,
                ptype,
                hlen,
                plen,
            });
        }
        Ok(p)
    }

    /// Gives the buffer back.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    fn b(&self) -> &[u8] {
        self.buffer.as_ref()
    }

    fn be16(&self, at: std::ops::Range<usize>) -> u16 {
        u16::from_be_bytes([self.b()[at.start], self.b()[at.start + 1]])
    }

    fn mac(&self, at: std::ops::Range<usize>) -> MacAddr {
        let mut o = [0u8; 6];
        o.copy_from_slice(&self.b()[at]);
        MacAddr(o)
    }

    fn ip(&self, at: std::ops::Range<usize>) -> Ipv4Addr {
        let b = &self.b()[at];
        Ipv4Addr::new(b[0], b[1], b[2], b[3])
    }

    /// `ar$hrd`.
    pub fn hardware_type(&self) -> u16 {
        self.be16(field::HTYPE)
    }
    /// `ar$pro`.
    pub fn protocol_type(&self) -> u16 {
        self.be16(field::PTYPE)
    }
    /// `ar$hln`.
    pub fn hardware_len(&self) -> u8 {
        self.b()[field::HLEN]
    }
    /// `ar$pln`.
    pub fn protocol_len(&self) -> u8 {
        self.b()[field::PLEN]
    }
    /// `ar$op`.
    pub fn operation(&self) -> ArpOperation {
        self.be16(field::OPER).into()
    }
    /// `ar$sha`.
    pub fn sender_mac(&self) -> MacAddr {
        self.mac(field::SHA)
    }
    /// `ar$spa`.
    pub fn sender_ip(&self) -> Ipv4Addr {
        self.ip(field::SPA)
    }
    /// `ar$tha`.
    pub fn target_mac(&self) -> MacAddr {
        self.mac(field::THA)
    }
    /// `ar$tpa`.
    pub fn target_ip(&self) -> Ipv4Addr {
        self.ip(field::TPA)
    }
}

/// A parsed Ethernet/IPv4 ARP packet, and its builder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ArpRepr {
    /// Request or reply.
    pub op: ArpOperation,
    /// Sender hardware address.
    pub sender_mac: MacAddr,
    /// Sender protocol address.
    pub sender_ip: Ipv4Addr,
    /// Target hardware address (zero in a request).
    pub target_mac: MacAddr,
    /// Target protocol address.
    pub target_ip: Ipv4Addr,
}

impl ArpRepr {
    /// Bytes [`ArpRepr::emit`] writes.
    pub const LEN: usize = 28;

    /// Reads a checked packet.
    pub fn parse<T: AsRef<[u8]>>(packet: &ArpPacket<T>) -> Self {
        Self {
            op: packet.operation(),
            sender_mac: packet.sender_mac(),
            sender_ip: packet.sender_ip(),
            target_mac: packet.target_mac(),
            target_ip: packet.target_ip(),
        }
    }

    /// Checks and reads `bytes`.
    pub fn parse_bytes(bytes: &[u8]) -> Result<Self, WireError> {
        Ok(Self::parse(&ArpPacket::new_checked(bytes)?))
    }

    /// A request: who has `target_ip`? Tell `sender_ip`.
    pub const fn request(sender_mac: MacAddr, sender_ip: Ipv4Addr, target_ip: Ipv4Addr) -> Self {
        Self {
            op: ArpOperation::Request,
            sender_mac,
            sender_ip,
            target_mac: MacAddr::ZERO,
            target_ip,
        }
    }

    /// The reply to this request from the station `my_mac` that owns
    /// `self.target_ip` (RFC 826 "Packet Reception": swap, fill in, set reply).
    pub const fn reply(&self, my_mac: MacAddr) -> Self {
        Self {
            op: ArpOperation::Reply,
            sender_mac: my_mac,
            sender_ip: self.target_ip,
            target_mac: self.sender_mac,
            target_ip: self.sender_ip,
        }
    }

    /// Writes the 28-byte packet into the start of `out`.
    pub fn emit(&self, out: &mut [u8]) -> Result<(), WireError> {
        let got = out.len();
        let b = out.get_mut(..Self::LEN).ok_or(WireError::Truncated {
            need: Self::LEN,
            got,
        })?;
        b[field::HTYPE].copy_from_slice(&ARP_HTYPE_ETHERNET.to_be_bytes());
        b[field::PTYPE].copy_from_slice(&ARP_PTYPE_IPV4.to_be_bytes());
        b[field::HLEN] = 6;
        b[field::PLEN] = 4;
        b[field::OPER].copy_from_slice(&u16::from(self.op).to_be_bytes());
        b[field::SHA].copy_from_slice(&self.sender_mac.0);
        b[field::SPA].copy_from_slice(&self.sender_ip.octets());
        b[field::THA].copy_from_slice(&self.target_mac.0);
        b[field::TPA].copy_from_slice(&self.target_ip.octets());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: MacAddr = MacAddr([0x52, 0x54, 0, 0, 0, 1]);
    const B: MacAddr = MacAddr([0x52, 0x54, 0, 0, 0, 2]);

    #[test]
    fn request_reply_roundtrip() {
        let req = ArpRepr::request(A, Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2));
        let mut buf = [0u8; 28];
        req.emit(&mut buf).unwrap();
        assert_eq!(&buf[..8], &[0, 1, 8, 0, 6, 4, 0, 1]);
        assert_eq!(ArpRepr::parse_bytes(&buf), Ok(req));
        let rep = req.reply(B);
        assert_eq!(rep.op, ArpOperation::Reply);
        assert_eq!(rep.sender_ip, Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(rep.target_mac, A);
        rep.emit(&mut buf).unwrap();
        let p = ArpPacket::new_checked(&buf[..]).unwrap();
        assert_eq!(p.operation(), ArpOperation::Reply);
        assert_eq!(p.sender_mac(), B);
        assert_eq!(p.target_ip(), Ipv4Addr::new(10, 0, 0, 1));
    }

    #[test]
    fn malformed_table() {
        let mut good = [0u8; 28];
        ArpRepr::request(A, Ipv4Addr::LOCALHOST, Ipv4Addr::LOCALHOST)
            .emit(&mut good)
            .unwrap();
        let patch = |at: usize, v: &[u8]| {
            let mut b = good;
            b[at..at + v.len()].copy_from_slice(v);
            b
        };
        let unsupported = |htype, ptype, hlen, plen| {
            Err(WireError::UnsupportedArp {
                htype,
                ptype,
                hlen,
                plen,
            })
        };
        let cases: Vec<(Vec<u8>, Result<(), WireError>)> = vec![
            (
                good[..27].to_vec(),
                Err(WireError::Truncated { need: 28, got: 27 }),
            ),
            (vec![], Err(WireError::Truncated { need: 28, got: 0 })),
            (patch(0, &[0, 6]).to_vec(), unsupported(6, 0x0800, 6, 4)),
            (
                patch(2, &[0x86, 0xdd]).to_vec(),
                unsupported(1, 0x86dd, 6, 4),
            ),
            (patch(4, &[8]).to_vec(), unsupported(1, 0x0800, 8, 4)),
            (patch(5, &[16]).to_vec(), unsupported(1, 0x0800, 6, 16)),
            (good.to_vec(), Ok(())),
        ];
        for (buf, want) in cases {
            assert_eq!(
                ArpPacket::new_checked(&buf[..]).map(|_| ()),
                want,
                "{buf:?}"
            );
        }
        let p = ArpPacket::new_checked(patch(6, &[0, 9])).unwrap();
        assert_eq!(p.operation(), ArpOperation::Unknown(9));
    }

    #[test]
    fn emit_too_short() {
        let mut buf = [0u8; 10];
        let r = ArpRepr::request(A, Ipv4Addr::LOCALHOST, Ipv4Addr::LOCALHOST).emit(&mut buf);
        assert_eq!(r, Err(WireError::Truncated { need: 28, got: 10 }));
    }
}
