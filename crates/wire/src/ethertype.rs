//! The EtherType field (IEEE 802.3 §3.2.6, IEEE Registration Authority list).

/// An EtherType; values this crate does not name stay `Unknown`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EtherType {
    /// 0x0800, RFC 894.
    Ipv4,
    /// 0x0806, RFC 826.
    Arp,
    /// 0x86dd, RFC 2464.
    Ipv6,
    /// 0x8100, IEEE 802.1Q customer VLAN tag (C-TAG).
    Vlan,
    /// 0x88a8, IEEE 802.1ad service VLAN tag (S-TAG).
    QinQ,
    /// 0x8808, IEEE 802.3 Annex 31B MAC control (PAUSE, PFC).
    MacControl,
    /// Anything else.
    Unknown(u16),
}

impl EtherType {
    /// The numeric value as carried on the wire.
    pub const fn to_u16(self) -> u16 {
        match self {
            Self::Ipv4 => 0x0800,
            Self::Arp => 0x0806,
            Self::Ipv6 => 0x86dd,
            Self::Vlan => 0x8100,
            Self::QinQ => 0x88a8,
            Self::MacControl => 0x8808,
            Self::Unknown(v) => v,
        }
    }

    /// The named variant for `value`, or `Unknown(value)`.
    pub const fn from_u16(value: u16) -> Self {
        match value {
            0x0800 => Self::Ipv4,
            0x0806 => Self::Arp,
            0x86dd => Self::Ipv6,
            0x8100 => Self::Vlan,
            0x88a8 => Self::QinQ,
            0x8808 => Self::MacControl,
            v => Self::Unknown(v),
        }
    }
}

impl From<u16> for EtherType {
    fn from(value: u16) -> Self {
        Self::from_u16(value)
    }
}

impl From<EtherType> for u16 {
    fn from(value: EtherType) -> Self {
        value.to_u16()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_table() {
        let cases = [
            (0x0800, EtherType::Ipv4),
            (0x0806, EtherType::Arp),
            (0x86dd, EtherType::Ipv6),
            (0x8100, EtherType::Vlan),
            (0x88a8, EtherType::QinQ),
            (0x8808, EtherType::MacControl),
            (0x1234, EtherType::Unknown(0x1234)),
        ];
        for (raw, ty) in cases {
            assert_eq!(EtherType::from(raw), ty);
            assert_eq!(u16::from(ty), raw);
        }
    }
}
