//! Frame views for quiver's data path, in smoltcp's style: a view wraps a
//! buffer, `new_checked` validates lengths once, and after that no accessor
//! can panic; unknown field values are kept as `Unknown(..)`. Nothing here
//! allocates except the builders for tests and tools.
//!
//! Modules:
//! - `mac`: [`MacAddr`], parsing, display, serde as a string.
//! - `ethertype`: [`EtherType`].
//! - `vlan`: the IEEE 802.1Q tag, [`VlanTag`].
//! - `ethernet`: [`EthernetFrame`], Ethernet II with an optional 802.1Q tag.
//! - `virtio_net_hdr`: [`VirtioNetHdr`] (VIRTIO 1.2 §5.1.6).
//! - `arp`: [`ArpPacket`] and [`ArpRepr`] for Ethernet/IPv4 (RFC 826).
//! - `ipv4`: [`Ipv4Packet`] and [`Ipv4Repr`] (RFC 791).
//! - `icmpv4`: [`Icmpv4Packet`] and [`Icmpv4Echo`] (RFC 792).
//! - `checksum`: the Internet checksum (RFC 1071).
//! - `offload`: checksum completion and TSO/USO segmentation in software
//!   ([`complete_checksum`], [`segment`], [`l4_offsets`], [`OffloadError`]).
//! - `builder`: whole-frame builders for tests and tools.
//! - `error`: [`WireError`].
#![forbid(unsafe_code)]

mod arp;
mod builder;
mod checksum;
mod error;
mod ethernet;
mod ethertype;
mod icmpv4;
mod ipv4;
mod mac;
mod offload;
mod virtio_net_hdr;
mod vlan;

pub use arp::{ArpOperation, ArpPacket, ArpRepr, ARP_HTYPE_ETHERNET, ARP_PTYPE_IPV4};
pub use builder::{build_arp, build_ethernet, build_icmpv4_echo, Ipv4Endpoints};
pub use checksum::{internet_checksum, ones_complement_sum};
pub use error::WireError;
pub use ethernet::{EthernetFrame, ETH_HLEN};
pub use ethertype::EtherType;
pub use icmpv4::{Icmpv4Echo, Icmpv4Packet, Icmpv4Type};
pub use ipv4::{IpProtocol, Ipv4Packet, Ipv4Repr};
pub use mac::{MacAddr, MacParseError};
pub use offload::{complete_checksum, l4_offsets, segment, IpVersion, L4Info, OffloadError};
pub use virtio_net_hdr::VirtioNetHdr;
pub use vlan::{VlanTag, VLAN_HLEN};
