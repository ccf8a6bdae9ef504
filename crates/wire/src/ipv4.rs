//! IPv4 headers (RFC 791 §3.1).

use std::net::Ipv4Addr;

use crate::checksum::{expected_checksum, internet_checksum, ones_complement_sum};
use crate::WireError;

mod field {
    use std::ops::Range;
    pub const VER_IHL: usize = 0;
    pub const DSCP_ECN: usize = 1;
    pub const LENGTH: Range<usize> = 2..4;
    pub const IDENT: Range<usize> = 4..6;
    pub const FLG_OFF: Range<usize> = 6..8;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: Range<usize> = 10..12;
    pub const SRC: Range<usize> = 12..16;
    pub const DST: Range<usize> = 16..20;
}

/// The IPv4 `Protocol` field (IANA protocol numbers).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IpProtocol {
    /// 1, RFC 792.
    Icmp,
    /// 6.
    Tcp,
    /// 17.
    Udp,
    /// Anything else.
    Unknown(u8),
}

impl From<u8> for IpProtocol {
    fn from(v: u8) -> Self {
        match v {
            1 => Self::Icmp,
            6 => Self::Tcp,
            17 => Self::Udp,
            v => Self::Unknown(v),
        }
    }
}

impl From<IpProtocol> for u8 {
    fn from(p: IpProtocol) -> Self {
        match p {
            IpProtocol::Icmp => 1,
            IpProtocol::Tcp => 6,
            IpProtocol::Udp => 17,
            IpProtocol::Unknown(v) => v,
        }
    }
}

/// A view of an IPv4 packet.
///
/// [`Ipv4Packet::new_checked`] checks version 4, IHL ≥ 5, the header fits the
/// buffer and `header_len ≤ total_len ≤ buffer length`; after that no accessor
/// can panic. It does not verify the checksum: call
/// [`Ipv4Packet::verify_checksum`] (a switch forwards frames it need not trust).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    /// Minimum header length (IHL 5).
    pub const MIN_HLEN: usize = 20;

    /// Wraps `buffer` without checks.
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps `buffer` after checking the fields listed on the type.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let got = buffer.as_ref().len();
        if got < Self::MIN_HLEN {
            return Err(WireError::Truncated {
                need: Self::MIN_HLEN,
                got,
            });
        }
        let p = Self::new_unchecked(buffer);
        if p.version() != 4 {
            return Err(WireError::BadVersion {
                version: p.version(),
            });
        }
        let ihl = p.b()[field::VER_IHL] & 0x0f;
        if ihl < 5 {
            return Err(WireError::BadHeaderLen { ihl });
        }
        let header_len = p.header_len();
        if got < header_len {
            return Err(WireError::Truncated {
                need: header_len,
                got,
            });
        }
        let total_len = p.total_len();
        if usize::from(total_len) < header_len {
            return Err(WireError::BadTotalLen {
                total_len,
                header_len,
            });
        }
        if got < usize::from(total_len) {
            return Err(WireError::Truncated {
                need: total_len.into(),
                got,
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

    fn addr(&self, at: std::ops::Range<usize>) -> Ipv4Addr {
        let b = &self.b()[at];
        Ipv4Addr::new(b[0], b[1], b[2], b[3])
    }

    /// The version nibble.
    pub fn version(&self) -> u8 {
        self.b()[field::VER_IHL] >> 4
    }
    /// IHL × 4, in bytes.
    pub fn header_len(&self) -> usize {
        usize::from(self.b()[field::VER_IHL] & 0x0f) * 4
    }
    /// DSCP (RFC 2474).
    pub fn dscp(&self) -> u8 {
        self.b()[field::DSCP_ECN] >> 2
    }
    /// ECN (RFC 3168).
    pub fn ecn(&self) -> u8 {
        self.b()[field::DSCP_ECN] & 0x03
    }
    /// Total length: header + payload.
    pub fn total_len(&self) -> u16 {
        self.be16(field::LENGTH)
    }
    /// Identification.
    pub fn ident(&self) -> u16 {
        self.be16(field::IDENT)
    }
    /// The DF flag.
    pub fn dont_frag(&self) -> bool {
        self.be16(field::FLG_OFF) & 0x4000 != 0
    }
    /// The MF flag.
    pub fn more_frags(&self) -> bool {
        self.be16(field::FLG_OFF) & 0x2000 != 0
    }
    /// Fragment offset, in bytes.
    pub fn frag_offset(&self) -> u16 {
        (self.be16(field::FLG_OFF) & 0x1fff) << 3
    }
    /// Time to live.
    pub fn ttl(&self) -> u8 {
        self.b()[field::TTL]
    }
    /// The payload protocol.
    pub fn protocol(&self) -> IpProtocol {
        self.b()[field::PROTOCOL].into()
    }
    /// The stored header checksum.
    pub fn checksum(&self) -> u16 {
        self.be16(field::CHECKSUM)
    }
    /// Source address.
    pub fn src_addr(&self) -> Ipv4Addr {
        self.addr(field::SRC)
    }
    /// Destination address.
    pub fn dst_addr(&self) -> Ipv4Addr {
        self.addr(field::DST)
    }

    /// Verifies the header checksum (RFC 791 §3.1 "Header Checksum").
    pub fn verify_checksum(&self) -> Result<(), WireError> {
        let sum = ones_complement_sum(&self.b()[..self.header_len()]);
        if sum == 0xffff {
            return Ok(());
        }
        let stored = self.checksum();
        Err(WireError::BadChecksum {
            stored,
            computed: expected_checksum(sum, stored),
        })
    }

    /// The payload: from the end of the header to `total_len` (Ethernet
    /// padding after it is excluded).
    pub fn payload(&self) -> &[u8] {
        &self.b()[self.header_len()..usize::from(self.total_len())]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    fn bm(&mut self) -> &mut [u8] {
        self.buffer.as_mut()
    }

    /// Sets the TTL (the checksum must be filled again after).
    pub fn set_ttl(&mut self, ttl: u8) {
        self.bm()[field::TTL] = ttl;
    }
    /// Sets the source address.
    pub fn set_src_addr(&mut self, a: Ipv4Addr) {
        self.bm()[field::SRC].copy_from_slice(&a.octets());
    }
    /// Sets the destination address.
    pub fn set_dst_addr(&mut self, a: Ipv4Addr) {
        self.bm()[field::DST].copy_from_slice(&a.octets());
    }
    /// Computes and stores the header checksum.
    pub fn fill_checksum(&mut self) {
        let hl = self.header_len();
        self.bm()[field::CHECKSUM].copy_from_slice(&[0, 0]);
        let c = internet_checksum(&self.buffer.as_ref()[..hl]);
        self.bm()[field::CHECKSUM].copy_from_slice(&c.to_be_bytes());
    }
    /// The payload, mutably.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let (start, end) = (self.header_len(), usize::from(self.total_len()));
        &mut self.bm()[start..end]
    }
}

/// A minimal IPv4 header (IHL 5, no options, DF clear), and its builder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv4Repr {
    /// Source address.
    pub src: Ipv4Addr,
    /// Destination address.
    pub dst: Ipv4Addr,
    /// Payload protocol.
    pub protocol: IpProtocol,
    /// Payload length in bytes.
    pub payload_len: usize,
    /// Time to live.
    pub ttl: u8,
}

impl Ipv4Repr {
    /// Bytes [`Ipv4Repr::emit`] writes.
    pub const HLEN: usize = 20;

    /// Reads a checked packet after verifying its checksum.
    pub fn parse<T: AsRef<[u8]>>(p: &Ipv4Packet<T>) -> Result<Self, WireError> {
        p.verify_checksum()?;
        Ok(Self {
            src: p.src_addr(),
            dst: p.dst_addr(),
            protocol: p.protocol(),
            payload_len: p.payload().len(),
            ttl: p.ttl(),
        })
    }

    /// Writes the 20-byte header, with checksum, into the start of `out`.
    /// The payload is the caller's to write after it.
    pub fn emit(&self, out: &mut [u8]) -> Result<(), WireError> {
        let total = Self::HLEN + self.payload_len;
        let Ok(total_len) = u16::try_from(total) else {
            return Err(WireError::TooLong {
                len: total,
                max: u16::MAX.into(),
            });
        };
        let got = out.len();
        let b = out.get_mut(..Self::HLEN).ok_or(WireError::Truncated {
            need: Self::HLEN,
            got,
        })?;
        b.fill(0);
        b[field::VER_IHL] = 0x45;
        b[field::LENGTH].copy_from_slice(&total_len.to_be_bytes());
        b[field::TTL] = self.ttl;
        b[field::PROTOCOL] = self.protocol.into();
        b[field::SRC].copy_from_slice(&self.src.octets());
        b[field::DST].copy_from_slice(&self.dst.octets());
        let c = internet_checksum(b);
        b[field::CHECKSUM].copy_from_slice(&c.to_be_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(payload: &[u8]) -> Vec<u8> {
        let repr = Ipv4Repr {
            src: Ipv4Addr::new(10, 0, 0, 1),
            dst: Ipv4Addr::new(10, 0, 0, 2),
            protocol: IpProtocol::Icmp,
            payload_len: payload.len(),
            ttl: 64,
        };
        let mut b = vec![0u8; 20];
        repr.emit(&mut b).unwrap();
        b.extend_from_slice(payload);
        b
    }

    #[test]
    fn emit_parse_roundtrip() {
        let mut b = sample(&[1, 2, 3]);
        b.extend_from_slice(&[0xee; 5]); // Ethernet padding
        let p = Ipv4Packet::new_checked(&b[..]).unwrap();
        assert_eq!(p.version(), 4);
        assert_eq!(p.header_len(), 20);
        assert_eq!(p.total_len(), 23);
        assert_eq!(p.protocol(), IpProtocol::Icmp);
        assert_eq!(p.payload(), &[1, 2, 3]);
        assert!(!p.dont_frag() && !p.more_frags() && p.frag_offset() == 0);
        assert_eq!((p.dscp(), p.ecn(), p.ident()), (0, 0, 0));
        assert_eq!(p.verify_checksum(), Ok(()));
        let r = Ipv4Repr::parse(&p).unwrap();
        assert_eq!(r.payload_len, 3);
        assert_eq!(r.dst, Ipv4Addr::new(10, 0, 0, 2));
    }

    #[test]
    fn malformed_table() {
        let good = sample(&[0; 8]);
        let patch = |at: usize, v: &[u8]| {
            let mut b = good.clone();
            b[at..at + v.len()].copy_from_slice(v);
            b
        };
        let cases: Vec<(Vec<u8>, WireError)> = vec![
            (
                good[..19].to_vec(),
                WireError::Truncated { need: 20, got: 19 },
            ),
            (patch(0, &[0x65]), WireError::BadVersion { version: 6 }),
            (patch(0, &[0x44]), WireError::BadHeaderLen { ihl: 4 }),
            (
                patch(0, &[0x4f]),
                WireError::Truncated { need: 60, got: 28 },
            ),
            (
                patch(2, &[0, 19]),
                WireError::BadTotalLen {
                    total_len: 19,
                    header_len: 20,
                },
            ),
            (
                patch(2, &[0, 29]),
                WireError::Truncated { need: 29, got: 28 },
            ),
        ];
        for (buf, want) in cases {
            assert_eq!(
                Ipv4Packet::new_checked(&buf[..]).map(|_| ()),
                Err(want),
                "{buf:?}"
            );
        }
    }

    #[test]
    fn checksum_verify_and_fill() {
        let mut b = sample(&[]);
        let good = u16::from_be_bytes([b[10], b[11]]);
        b[10] ^= 0x01;
        let stored = u16::from_be_bytes([b[10], b[11]]);
        let mut p = Ipv4Packet::new_checked(&mut b[..]).unwrap();
        assert_eq!(
            p.verify_checksum(),
            Err(WireError::BadChecksum {
                stored,
                computed: good
            })
        );
        assert!(Ipv4Repr::parse(&p).is_err());
        p.set_ttl(1);
        p.set_src_addr(Ipv4Addr::new(1, 2, 3, 4));
        p.fill_checksum();
        assert_eq!(p.verify_checksum(), Ok(()));
        assert_eq!(p.src_addr(), Ipv4Addr::new(1, 2, 3, 4));
    }

    #[test]
    fn emit_too_long() {
        let repr = Ipv4Repr {
            src: Ipv4Addr::UNSPECIFIED,
            dst: Ipv4Addr::UNSPECIFIED,
            protocol: IpProtocol::Udp,
            payload_len: 65_516,
            ttl: 1,
        };
        let mut b = [0u8; 20];
        assert_eq!(
            repr.emit(&mut b),
            Err(WireError::TooLong {
                len: 65_536,
                max: 65_535
            })
        );
    }

    #[test]
    fn protocol_roundtrip() {
        for v in 0..=255u8 {
            assert_eq!(u8::from(IpProtocol::from(v)), v);
        }
    }
}
