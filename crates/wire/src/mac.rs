//! 48-bit IEEE 802 MAC addresses.

use std::fmt;
use std::str::FromStr;

/// Why a string is not a MAC address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MacParseError {
    /// Not six two-digit hex octets joined by one kind of separator.
    #[error("invalid MAC address {text:?}: want six hex octets like 52:54:00:00:00:01")]
    Invalid { text: String },
}

/// A 48-bit MAC address, octets in transmission order.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// The length of an address on the wire.
    pub const LEN: usize = 6;
    /// ff:ff:ff:ff:ff:ff.
    pub const BROADCAST: Self = Self([0xff; 6]);
    /// 00:00:00:00:00:00.
    pub const ZERO: Self = Self([0; 6]);

    /// An address from its octets.
    pub const fn new(octets: [u8; 6]) -> Self {
        Self(octets)
    }

    /// An address from the first six bytes of `bytes`, `None` if shorter.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        bytes.get(..Self::LEN)?.try_into().ok().map(Self)
    }

    /// The octets in transmission order.
    pub const fn octets(&self) -> [u8; 6] {
        self.0
    }

    /// The address as the low 48 bits of a `u64` (first octet most significant).
    /// Handy as a hash key: one integer compare instead of six bytes.
    pub const fn to_u64(&self) -> u64 {
        let o = self.0;
        u64::from_be_bytes([0, 0, o[0], o[1], o[2], o[3], o[4], o[5]])
    }

    /// ff:ff:ff:ff:ff:ff.
    pub const fn is_broadcast(&self) -> bool {
        self.to_u64() == 0xffff_ffff_ffff
    }

    /// The I/G bit (IEEE 802-2014 §8.2) is set: a group address. Broadcast is
    /// a multicast address too.
    pub const fn is_multicast(&self) -> bool {
        self.0[0] & 0x01 != 0
    }

    /// An individual (non-group) address.
    pub const fn is_unicast(&self) -> bool {
        !self.is_multicast()
    }

    /// The U/L bit is set: a locally administered address.
    pub const fn is_local(&self) -> bool {
        self.0[0] & 0x02 != 0
    }

    /// 00:00:00:00:00:00, never a valid station address.
    pub const fn is_zero(&self) -> bool {
        self.to_u64() == 0
    }
}

impl From<[u8; 6]> for MacAddr {
    fn from(octets: [u8; 6]) -> Self {
        Self(octets)
    }
}

impl From<MacAddr> for [u8; 6] {
    fn from(mac: MacAddr) -> Self {
        mac.0
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let o = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            o[0], o[1], o[2], o[3], o[4], o[5]
        )
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for MacAddr {
    type Err = MacParseError;

    /// Accepts `52:54:00:00:00:01` or `52-54-00-00-00-01` (one separator kind,
    /// exactly two hex digits per octet, either case).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || MacParseError::Invalid { text: s.to_owned() };
        let sep = match s.as_bytes().get(2) {
            Some(b':') => ':',
            Some(b'-') => '-',
            _ => return Err(invalid()),
        };
        let mut octets = [0u8; 6];
        let mut parts = s.split(sep);
        for octet in &mut octets {
            let part = parts.next().ok_or_else(invalid)?;
            let &[hi, lo] = part.as_bytes() else {
                return Err(invalid());
            };
            *octet =
                (hex_value(hi).ok_or_else(invalid)? << 4) | hex_value(lo).ok_or_else(invalid)?;
        }
        if parts.next().is_some() {
            return Err(invalid());
        }
        Ok(Self(octets))
    }
}

fn hex_value(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

impl serde::Serialize for MacAddr {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for MacAddr {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = MacAddr;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a MAC address like \"52:54:00:00:00:01\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<MacAddr, E> {
                v.parse().map_err(E::custom)
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_table() {
        let ok = [0x52, 0x54, 0, 0, 0, 1];
        let cases: &[(&str, Option<[u8; 6]>)] = &[
            ("52:54:00:00:00:01", Some(ok)),
            ("52-54-00-00-00-01", Some(ok)),
            ("FF:ff:Ff:fF:ff:ff", Some([0xff; 6])),
            ("52:54:00:00:00", None),
            ("52:54:00:00:00:01:02", None),
            ("52:54-00:00:00:01", None),
            ("5:54:00:00:00:01", None),
            ("525:4:00:00:00:01", None),
            ("52:54:00:00:00:0g", None),
            ("52:54:00:00:00:+1", None),
            ("", None),
            ("52.54.00.00.00.01", None),
            ("52:54:00:00:00:01:", None),
        ];
        for (text, want) in cases {
            let got = text.parse::<MacAddr>();
            match want {
                Some(o) => assert_eq!(got, Ok(MacAddr(*o)), "{text}"),
                None => assert_eq!(
                    got,
                    Err(MacParseError::Invalid {
                        text: (*text).to_owned()
                    }),
                    "{text}"
                ),
            }
        }
    }

    #[test]
    fn error_names_text() {
        let err = "nope".parse::<MacAddr>().unwrap_err();
        assert!(err.to_string().contains("\"nope\""), "{err}");
    }

    #[test]
    fn display_roundtrip() {
        let mac = MacAddr([0x52, 0x54, 0, 0xab, 0xcd, 0xef]);
        assert_eq!(mac.to_string(), "52:54:00:ab:cd:ef");
        assert_eq!(format!("{mac:?}"), "52:54:00:ab:cd:ef");
        assert_eq!(mac.to_string().parse::<MacAddr>(), Ok(mac));
    }

    #[test]
    fn classification_table() {
        // (mac, broadcast, multicast, unicast, zero, local)
        let cases = [
            (MacAddr::BROADCAST, true, true, false, false, true),
            (MacAddr::ZERO, false, false, true, true, false),
            (
                MacAddr([0x01, 0, 0x5e, 0, 0, 1]),
                false,
                true,
                false,
                false,
                false,
            ),
            (
                MacAddr([0x33, 0x33, 0, 0, 0, 1]),
                false,
                true,
                false,
                false,
                true,
            ),
            (
                MacAddr([0x52, 0x54, 0, 0, 0, 1]),
                false,
                false,
                true,
                false,
                true,
            ),
            (
                MacAddr([0x00, 0x1b, 0x21, 1, 2, 3]),
                false,
                false,
                true,
                false,
                false,
            ),
        ];
        for (mac, b, m, u, z, l) in cases {
            assert_eq!(mac.is_broadcast(), b, "{mac}");
            assert_eq!(mac.is_multicast(), m, "{mac}");
            assert_eq!(mac.is_unicast(), u, "{mac}");
            assert_eq!(mac.is_zero(), z, "{mac}");
            assert_eq!(mac.is_local(), l, "{mac}");
        }
    }

    #[test]
    fn to_u64_and_slices() {
        let mac = MacAddr([1, 2, 3, 4, 5, 6]);
        assert_eq!(mac.to_u64(), 0x0102_0304_0506);
        assert_eq!(mac.octets(), [1, 2, 3, 4, 5, 6]);
        assert_eq!(MacAddr::from_slice(&[1, 2, 3, 4, 5, 6, 7]), Some(mac));
        assert_eq!(MacAddr::from_slice(&[1, 2, 3]), None);
    }

    #[test]
    fn serde_as_string() {
        let mac = MacAddr([0x52, 0x54, 0, 0, 0, 1]);
        let json = serde_json::to_string(&mac).unwrap();
        assert_eq!(json, "\"52:54:00:00:00:01\"");
        assert_eq!(serde_json::from_str::<MacAddr>(&json).unwrap(), mac);
        let err = serde_json::from_str::<MacAddr>("\"zz\"").unwrap_err();
        assert!(err.to_string().contains("zz"), "{err}");
    }
}
