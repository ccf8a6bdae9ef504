//! Frame builders for tests and tools (they allocate; not for the data path).

use std::net::Ipv4Addr;

use crate::{
    ArpRepr, EtherType, Icmpv4Echo, IpProtocol, Ipv4Repr, MacAddr, VlanTag, WireError, ETH_HLEN,
    VLAN_HLEN,
};

/// Replaces the contents of `out` with an Ethernet frame: header, optional
/// 802.1Q tag (TPID 0x8100), then `payload`. No padding to 60 bytes is added.
pub fn build_ethernet(
    dst: MacAddr,
    src: MacAddr,
    vlan: Option<VlanTag>,
    ethertype: EtherType,
    payload: &[u8],
    out: &mut Vec<u8>,
) {
    out.clear();
    out.reserve(ETH_HLEN + VLAN_HLEN + payload.len());
    out.extend_from_slice(&dst.0);
    out.extend_from_slice(&src.0);
    if let Some(tag) = vlan {
        out.extend_from_slice(&EtherType::Vlan.to_u16().to_be_bytes());
        out.extend_from_slice(&tag.to_tci().to_be_bytes());
    }
    out.extend_from_slice(&ethertype.to_u16().to_be_bytes());
    out.extend_from_slice(payload);
}

/// Replaces `out` with a broadcast ARP request frame from `arp.sender_mac`
/// when `arp` is a request, or a unicast frame to `arp.target_mac` otherwise.
pub fn build_arp(arp: &ArpRepr, vlan: Option<VlanTag>, out: &mut Vec<u8>) -> Result<(), WireError> {
    let mut body = [0u8; ArpRepr::LEN];
    arp.emit(&mut body)?;
    let dst = match arp.op {
        crate::ArpOperation::Request => MacAddr::BROADCAST,
        _ => arp.target_mac,
    };
    build_ethernet(dst, arp.sender_mac, vlan, EtherType::Arp, &body, out);
    Ok(())
}

/// Endpoints of an IPv4 frame: link and network addresses of both ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Endpoints {
    /// Source MAC.
    pub src_mac: MacAddr,
    /// Destination MAC.
    pub dst_mac: MacAddr,
    /// Source IPv4 address.
    pub src_ip: Ipv4Addr,
    /// Destination IPv4 address.
    pub dst_ip: Ipv4Addr,
}

/// Replaces `out` with an Ethernet/IPv4/ICMPv4 echo frame (TTL 64).
pub fn build_icmpv4_echo(
    ends: &Ipv4Endpoints,
    vlan: Option<VlanTag>,
    echo: &Icmpv4Echo<'_>,
    out: &mut Vec<u8>,
) -> Result<(), WireError> {
    let icmp_len = echo.buffer_len();
    let mut ip = vec![0u8; Ipv4Repr::HLEN + icmp_len];
    Ipv4Repr {
        src: ends.src_ip,
        dst: ends.dst_ip,
        protocol: IpProtocol::Icmp,
        payload_len: icmp_len,
        ttl: 64,
    }
    .emit(&mut ip)?;
    echo.emit(&mut ip[Ipv4Repr::HLEN..])?;
    build_ethernet(ends.dst_mac, ends.src_mac, vlan, EtherType::Ipv4, &ip, out);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ArpPacket, EthernetFrame, Icmpv4Packet, Ipv4Packet};

    const A: MacAddr = MacAddr([0x52, 0x54, 0, 0, 0, 1]);
    const B: MacAddr = MacAddr([0x52, 0x54, 0, 0, 0, 2]);

    #[test]
    fn ethernet_tagged_and_untagged() {
        let mut out = vec![0xee; 3];
        for vlan in [
            None,
            Some(VlanTag {
                pcp: 3,
                dei: false,
                vid: 42,
            }),
        ] {
            build_ethernet(B, A, vlan, EtherType::Ipv6, &[1, 2], &mut out);
            let f = EthernetFrame::new_checked(&out[..]).unwrap();
            assert_eq!((f.dst(), f.src()), (B, A));
            assert_eq!(f.vlan(), vlan);
            assert_eq!(f.inner_ethertype(), EtherType::Ipv6);
            assert_eq!(f.payload(), &[1, 2]);
        }
    }

    #[test]
    fn arp_request_and_reply_frames() {
        let ip_a = Ipv4Addr::new(192, 0, 2, 1);
        let ip_b = Ipv4Addr::new(192, 0, 2, 2);
        let req = ArpRepr::request(A, ip_a, ip_b);
        let mut out = Vec::new();
        build_arp(&req, None, &mut out).unwrap();
        let f = EthernetFrame::new_checked(&out[..]).unwrap();
        assert_eq!(f.dst(), MacAddr::BROADCAST);
        assert_eq!(f.ethertype(), EtherType::Arp);
        let parsed = ArpRepr::parse(&ArpPacket::new_checked(f.payload()).unwrap());
        assert_eq!(parsed, req);
        build_arp(&parsed.reply(B), None, &mut out).unwrap();
        let f = EthernetFrame::new_checked(&out[..]).unwrap();
        assert_eq!((f.dst(), f.src()), (A, B));
    }

    #[test]
    fn icmp_echo_frame() {
        let ends = Ipv4Endpoints {
            src_mac: A,
            dst_mac: B,
            src_ip: Ipv4Addr::new(192, 0, 2, 1),
            dst_ip: Ipv4Addr::new(192, 0, 2, 2),
        };
        let echo = Icmpv4Echo {
            request: true,
            ident: 9,
            seq_no: 1,
            data: b"ping",
        };
        let mut out = Vec::new();
        let tag = VlanTag {
            pcp: 0,
            dei: false,
            vid: 7,
        };
        build_icmpv4_echo(&ends, Some(tag), &echo, &mut out).unwrap();
        assert_eq!(out.len(), 18 + 20 + 8 + 4);
        let f = EthernetFrame::new_checked(&out[..]).unwrap();
        assert_eq!(f.inner_ethertype(), EtherType::Ipv4);
        let ip = Ipv4Packet::new_checked(f.payload()).unwrap();
        assert_eq!(ip.verify_checksum(), Ok(()));
        assert_eq!(ip.dst_addr(), ends.dst_ip);
        let icmp = Icmpv4Packet::new_checked(ip.payload()).unwrap();
        assert_eq!(Icmpv4Echo::parse(&icmp), Ok(echo));
    }
}
