//! Where a frame's L3 and L4 headers start, found by parsing, not by
//! trusting the guest's `csum_start`/`hdr_len`.

use super::{get16, OffloadError};
use crate::{EtherType, EthernetFrame, IpProtocol, Ipv4Packet};

/// The IPv6 fixed header length (RFC 8200 §3).
pub(super) const IPV6_HLEN: usize = 40;

/// The IP version of a frame's network header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IpVersion {
    /// IPv4 (RFC 791).
    V4,
    /// IPv6 (RFC 8200).
    V6,
}

impl IpVersion {
    /// 4 or 6.
    pub const fn number(self) -> u8 {
        match self {
            Self::V4 => 4,
            Self::V6 => 6,
        }
    }
}

/// The layout of an IP frame as [`l4_offsets`] found it. Every offset is
/// from the start of the frame and `l3_offset < l4_offset <= ip_end <=
/// frame.len()`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct L4Info {
    /// Start of the IP header: 14, or 18 after an 802.1Q tag.
    pub l3_offset: usize,
    /// Start of the L4 header (after IPv4 options).
    pub l4_offset: usize,
    /// End of the IP packet as its length field says; bytes after it are
    /// Ethernet padding.
    pub ip_end: usize,
    /// IPv4 or IPv6.
    pub version: IpVersion,
    /// The IPv4 protocol or IPv6 next header.
    pub proto: IpProtocol,
}

/// Finds the L3 and L4 headers of an Ethernet [+ 802.1Q] + IPv4/IPv6 frame.
///
/// Checks the Ethernet header, the IPv4 header as
/// [`Ipv4Packet::new_checked`] does (the header checksum is not verified:
/// it is recomputed wherever it matters), the IPv6 fixed header, and that
/// the IP length fits the frame. IPv4 fragments are rejected (their L4
/// header is absent or partial), and so are IPv6 extension headers, which
/// are not walked.
pub fn l4_offsets(frame: &[u8]) -> Result<L4Info, OffloadError> {
    let eth = EthernetFrame::new_checked(frame).map_err(OffloadError::Ethernet)?;
    let l3_offset = eth.header_len();
    match eth.inner_ethertype() {
        EtherType::Ipv4 => {
            let ip = Ipv4Packet::new_checked(eth.payload()).map_err(OffloadError::Ipv4)?;
            if ip.more_frags() || ip.frag_offset() != 0 {
                return Err(OffloadError::Fragment {
                    offset: ip.frag_offset(),
                    more: ip.more_frags(),
                });
            }
            Ok(L4Info {
                l3_offset,
                l4_offset: l3_offset + ip.header_len(),
                ip_end: l3_offset + usize::from(ip.total_len()),
                version: IpVersion::V4,
                proto: ip.protocol(),
            })
        }
        EtherType::Ipv6 => {
            let ip = eth.payload();
            if ip.len() < IPV6_HLEN {
                return Err(OffloadError::Truncated {
                    need: l3_offset + IPV6_HLEN,
                    got: frame.len(),
                });
            }
            let version = ip[0] >> 4;
            if version != 6 {
                return Err(OffloadError::BadIpv6Version { version });
            }
            let l4_offset = l3_offset + IPV6_HLEN;
            let ip_end = l4_offset + usize::from(get16(ip, 4));
            if ip_end > frame.len() {
                return Err(OffloadError::Truncated {
                    need: ip_end,
                    got: frame.len(),
                });
            }
            let next_header = ip[6];
            if is_ipv6_extension(next_header) {
                return Err(OffloadError::UnsupportedL4 { proto: next_header });
            }
            Ok(L4Info {
                l3_offset,
                l4_offset,
                ip_end,
                version: IpVersion::V6,
                proto: next_header.into(),
            })
        }
        other => Err(OffloadError::NotIp {
            ethertype: other.to_u16(),
        }),
    }
}

/// IPv6 extension header numbers (IANA "IPv6 Extension Header Types"):
/// hop-by-hop (0; also the jumbogram carrier, RFC 2675), routing (43),
/// fragment (44), ESP (50), AH (51), destination options (60), mobility
/// (135), HIP (139), shim6 (140), experimental (253, 254).
fn is_ipv6_extension(next_header: u8) -> bool {
    matches!(
        next_header,
        0 | 43 | 44 | 50 | 51 | 60 | 135 | 139 | 140 | 253 | 254
    )
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::{FrameSpec, L4Kind};
    use super::*;
    use crate::WireError;

    #[test]
    fn layouts_table() {
        // (spec, l3, l4, version, proto)
        let cases = [
            (
                FrameSpec::v4(L4Kind::Tcp, 100),
                14,
                34,
                IpVersion::V4,
                IpProtocol::Tcp,
            ),
            (
                FrameSpec::v4(L4Kind::Udp, 3),
                14,
                34,
                IpVersion::V4,
                IpProtocol::Udp,
            ),
            (
                FrameSpec::v6(L4Kind::Tcp, 0),
                14,
                54,
                IpVersion::V6,
                IpProtocol::Tcp,
            ),
            (
                FrameSpec::v4(L4Kind::Tcp, 7).vlan(),
                18,
                38,
                IpVersion::V4,
                IpProtocol::Tcp,
            ),
            (
                FrameSpec::v6(L4Kind::Udp, 9).vlan(),
                18,
                58,
                IpVersion::V6,
                IpProtocol::Udp,
            ),
            (
                FrameSpec::v4(L4Kind::Tcp, 7).ip_options(12),
                14,
                46,
                IpVersion::V4,
                IpProtocol::Tcp,
            ),
        ];
        for (spec, l3, l4, version, proto) in cases {
            let mut frame = spec.build();
            let ip_end = frame.len();
            frame.extend_from_slice(&[0xee; 6]); // Ethernet padding is not IP
            let got = l4_offsets(&frame).unwrap();
            let want = L4Info {
                l3_offset: l3,
                l4_offset: l4,
                ip_end,
                version,
                proto,
            };
            assert_eq!(got, want, "{spec:?}");
        }
    }

    #[test]
    fn malformed_table() {
        let v4 = FrameSpec::v4(L4Kind::Tcp, 10).build();
        let v6 = FrameSpec::v6(L4Kind::Tcp, 10).build();
        let patch = |base: &[u8], at: usize, v: &[u8]| {
            let mut b = base.to_vec();
            b[at..at + v.len()].copy_from_slice(v);
            b
        };
        let cases: Vec<(&str, Vec<u8>, OffloadError)> = vec![
            (
                "short ethernet",
                v4[..13].to_vec(),
                OffloadError::Ethernet(WireError::Truncated { need: 14, got: 13 }),
            ),
            (
                "arp",
                patch(&v4, 12, &[0x08, 0x06]),
                OffloadError::NotIp { ethertype: 0x0806 },
            ),
            (
                "qinq",
                patch(&v4, 12, &[0x88, 0xa8]),
                OffloadError::NotIp { ethertype: 0x88a8 },
            ),
            (
                "short ipv4",
                v4[..33].to_vec(),
                OffloadError::Ipv4(WireError::Truncated { need: 20, got: 19 }),
            ),
            (
                "ihl 4",
                patch(&v4, 14, &[0x44]),
                OffloadError::Ipv4(WireError::BadHeaderLen { ihl: 4 }),
            ),
            (
                "ipv4 total length past frame",
                patch(&v4, 16, &[0x10, 0x00]),
                OffloadError::Ipv4(WireError::Truncated {
                    need: 4096,
                    got: v4.len() - 14,
                }),
            ),
            (
                "more fragments",
                patch(&v4, 20, &[0x20, 0x00]),
                OffloadError::Fragment {
                    offset: 0,
                    more: true,
                },
            ),
            (
                "later fragment",
                patch(&v4, 20, &[0x00, 0x02]),
                OffloadError::Fragment {
                    offset: 16,
                    more: false,
                },
            ),
            (
                "short ipv6",
                v6[..53].to_vec(),
                OffloadError::Truncated { need: 54, got: 53 },
            ),
            (
                "ipv6 version 4",
                patch(&v6, 14, &[0x40]),
                OffloadError::BadIpv6Version { version: 4 },
            ),
            (
                "ipv6 payload length past frame",
                patch(&v6, 18, &[0x01, 0x00]),
                OffloadError::Truncated {
                    need: 54 + 256,
                    got: v6.len(),
                },
            ),
            (
                "hop-by-hop",
                patch(&v6, 20, &[0]),
                OffloadError::UnsupportedL4 { proto: 0 },
            ),
            (
                "ipv6 fragment",
                patch(&v6, 20, &[44]),
                OffloadError::UnsupportedL4 { proto: 44 },
            ),
        ];
        for (name, frame, want) in cases {
            assert_eq!(l4_offsets(&frame), Err(want), "{name}");
        }
    }

    #[test]
    fn wire_error_converts_to_virtio_net_hdr_variant() {
        let err = crate::VirtioNetHdr::from_bytes(&[0; 11]).map_err(OffloadError::from);
        let want = WireError::Truncated { need: 12, got: 11 };
        assert_eq!(err, Err(OffloadError::VirtioNetHdr(want)));
    }

    #[test]
    fn every_prefix_is_an_error_not_a_panic() {
        for spec in [
            FrameSpec::v4(L4Kind::Tcp, 0).vlan().ip_options(8),
            FrameSpec::v6(L4Kind::Udp, 0),
        ] {
            let frame = spec.build();
            for len in 0..frame.len() {
                assert!(l4_offsets(&frame[..len]).is_err(), "{spec:?} len {len}");
            }
            assert!(l4_offsets(&frame).is_ok());
        }
    }
}
