//! ICMPv4 echo request / reply (RFC 792, "Echo or Echo Reply Message").

use crate::checksum::{expected_checksum, internet_checksum, ones_complement_sum};
use crate::WireError;

mod field {
    use std::ops::Range;
    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: Range<usize> = 2..4;
    pub const IDENT: Range<usize> = 4..6;
    pub const SEQ: Range<usize> = 6..8;
    pub const DATA: usize = 8;
}

/// An ICMPv4 message type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Icmpv4Type {
    /// 0.
    EchoReply,
    /// 3.
    DestUnreachable,
    /// 8.
    EchoRequest,
    /// 11.
    TimeExceeded,
    /// Anything else.
    Unknown(u8),
}

impl From<u8> for Icmpv4Type {
    fn from(v: u8) -> Self {
        match v {
            0 => Self::EchoReply,
            3 => Self::DestUnreachable,
            8 => Self::EchoRequest,
            11 => Self::TimeExceeded,
            v => Self::Unknown(v),
        }
    }
}

impl From<Icmpv4Type> for u8 {
    fn from(t: Icmpv4Type) -> Self {
        match t {
            Icmpv4Type::EchoReply => 0,
            Icmpv4Type::DestUnreachable => 3,
            Icmpv4Type::EchoRequest => 8,
            Icmpv4Type::TimeExceeded => 11,
            Icmpv4Type::Unknown(v) => v,
        }
    }
}

/// A view of an ICMPv4 message; the buffer is the whole IPv4 payload (the
/// checksum covers all of it).
///
/// [`Icmpv4Packet::new_checked`] checks the 8-byte header is there; then no
/// accessor can panic. `ident`/`seq_no` are meaningful for echo messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Icmpv4Packet<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> Icmpv4Packet<T> {
    /// The header length (type, code, checksum, 4 bytes of rest-of-header).
    pub const HLEN: usize = 8;

    /// Wraps `buffer` without checks.
    pub const fn new_unchecked(buffer: T) -> Self {
        Self { buffer }
    }

    /// Wraps `buffer` after checking its length.
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let got = buffer.as_ref().len();
        if got < Self::HLEN {
            return Err(WireError::Truncated {
                need: Self::HLEN,
                got,
            });
        }
        Ok(Self::new_unchecked(buffer))
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

    /// The message type.
    pub fn msg_type(&self) -> Icmpv4Type {
        self.b()[field::TYPE].into()
    }
    /// The code.
    pub fn code(&self) -> u8 {
        self.b()[field::CODE]
    }
    /// The stored checksum.
    pub fn checksum(&self) -> u16 {
        self.be16(field::CHECKSUM)
    }
    /// Echo identifier.
    pub fn ident(&self) -> u16 {
        self.be16(field::IDENT)
    }
    /// Echo sequence number.
    pub fn seq_no(&self) -> u16 {
        self.be16(field::SEQ)
    }
    /// Everything after the 8-byte header.
    pub fn data(&self) -> &[u8] {
        &self.b()[field::DATA..]
    }

    /// Verifies the checksum over the whole message (RFC 792).
    pub fn verify_checksum(&self) -> Result<(), WireError> {
        let sum = ones_complement_sum(self.b());
        if sum == 0xffff {
            return Ok(());
        }
        let stored = self.checksum();
        Err(WireError::BadChecksum {
            stored,
            computed: expected_checksum(sum, stored),
        })
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Icmpv4Packet<T> {
    /// Computes and stores the checksum over the whole buffer.
    pub fn fill_checksum(&mut self) {
        self.buffer.as_mut()[field::CHECKSUM].copy_from_slice(&[0, 0]);
        let c = internet_checksum(self.buffer.as_ref());
        self.buffer.as_mut()[field::CHECKSUM].copy_from_slice(&c.to_be_bytes());
    }
}

/// An ICMPv4 echo request or reply, and its builder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Icmpv4Echo<'a> {
    /// `true` for a request (type 8), `false` for a reply (type 0).
    pub request: bool,
    /// Identifier.
    pub ident: u16,
    /// Sequence number.
    pub seq_no: u16,
    /// Echo data.
    pub data: &'a [u8],
}

impl<'a> Icmpv4Echo<'a> {
    /// Parses a checked message, verifying its checksum.
    pub fn parse<T: AsRef<[u8]> + ?Sized>(p: &Icmpv4Packet<&'a T>) -> Result<Self, WireError> {
        let request = match (p.msg_type(), p.code()) {
            (Icmpv4Type::EchoRequest, 0) => true,
            (Icmpv4Type::EchoReply, 0) => false,
            (t, code) => {
                return Err(WireError::UnsupportedIcmp {
                    msg_type: t.into(),
                    code,
                });
            }
        };
        p.verify_checksum()?;
        Ok(Self {
            request,
            ident: p.ident(),
            seq_no: p.seq_no(),
            data: {
                let buf: &'a T = p.buffer;
                &buf.as_ref()[field::DATA..]
            },
        })
    }

    /// The reply to this request (same ident, sequence number and data).
    pub const fn reply(&self) -> Self {
        Self {
            request: false,
            ..*self
        }
    }

    /// Bytes [`Icmpv4Echo::emit`] writes.
    pub const fn buffer_len(&self) -> usize {
        field::DATA + self.data.len()
    }

    /// Writes the message with its checksum into the start of `out`.
    pub fn emit(&self, out: &mut [u8]) -> Result<(), WireError> {
        let need = self.buffer_len();
        let got = out.len();
        let b = out
            .get_mut(..need)
            .ok_or(WireError::Truncated { need, got })?;
        let ty = if self.request {
            Icmpv4Type::EchoRequest
        } else {
            Icmpv4Type::EchoReply
        };
        b[field::TYPE] = ty.into();
        b[field::CODE] = 0;
        b[field::IDENT].copy_from_slice(&self.ident.to_be_bytes());
        b[field::SEQ].copy_from_slice(&self.seq_no.to_be_bytes());
        b[field::DATA..].copy_from_slice(self.data);
        Icmpv4Packet::new_unchecked(b).fill_checksum();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_roundtrip() {
        let req = Icmpv4Echo {
            request: true,
            ident: 0x1234,
            seq_no: 7,
            data: b"hello",
        };
        let mut buf = [0u8; 13];
        req.emit(&mut buf).unwrap();
        assert_eq!(buf[0], 8);
        let p = Icmpv4Packet::new_checked(&buf[..]).unwrap();
        assert_eq!(p.verify_checksum(), Ok(()));
        let got = Icmpv4Echo::parse(&p).unwrap();
        assert_eq!(got, req);
        let mut out = [0u8; 13];
        got.reply().emit(&mut out).unwrap();
        let p = Icmpv4Packet::new_checked(&out[..]).unwrap();
        assert_eq!(p.msg_type(), Icmpv4Type::EchoReply);
        assert_eq!(Icmpv4Echo::parse(&p).unwrap().data, b"hello");
    }

    #[test]
    fn malformed_table() {
        let mut good = [0u8; 12];
        Icmpv4Echo {
            request: true,
            ident: 1,
            seq_no: 2,
            data: &[9; 4],
        }
        .emit(&mut good)
        .unwrap();
        let stored = u16::from_be_bytes([good[2], good[3]]);
        let patch = |at: usize, v: u8| {
            let mut b = good;
            b[at] = v;
            b
        };
        let bad_sum = patch(11, 8);
        let bad_stored = u16::from_be_bytes([bad_sum[2], bad_sum[3]]);
        let mut fixed = bad_sum;
        Icmpv4Packet::new_unchecked(&mut fixed[..]).fill_checksum();
        let computed = u16::from_be_bytes([fixed[2], fixed[3]]);
        let cases: Vec<(&[u8], WireError)> = vec![
            (&good[..7], WireError::Truncated { need: 8, got: 7 }),
            (
                &bad_sum,
                WireError::BadChecksum {
                    stored: bad_stored,
                    computed,
                },
            ),
        ];
        for (buf, want) in cases {
            let r = Icmpv4Packet::new_checked(buf).and_then(|p| Icmpv4Echo::parse(&p).map(|_| ()));
            assert_eq!(r, Err(want));
        }
        let unreach = patch(0, 3);
        let p = Icmpv4Packet::new_checked(&unreach[..]).unwrap();
        assert_eq!(
            Icmpv4Echo::parse(&p),
            Err(WireError::UnsupportedIcmp {
                msg_type: 3,
                code: 0
            })
        );
        let code = patch(1, 1);
        let p = Icmpv4Packet::new_checked(&code[..]).unwrap();
        assert_eq!(
            Icmpv4Echo::parse(&p),
            Err(WireError::UnsupportedIcmp {
                msg_type: 8,
                code: 1
            })
        );
        assert_eq!(
            stored,
            Icmpv4Packet::new_checked(&good[..]).unwrap().checksum()
        );
    }

    #[test]
    fn emit_too_short() {
        let mut buf = [0u8; 9];
        let r = Icmpv4Echo {
            request: false,
            ident: 0,
            seq_no: 0,
            data: &[1, 2],
        }
        .emit(&mut buf);
        assert_eq!(r, Err(WireError::Truncated { need: 10, got: 9 }));
    }
}
