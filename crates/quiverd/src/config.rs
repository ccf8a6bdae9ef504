//! The TOML configuration: `[[uplink]]` and `[[vnic]]` tables, parsed once into a
//! validated `Config`. Every error names the file, the field and the reason.

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};

use quiver_uplink::XdpMode;
use quiver_wire::MacAddr;

use crate::reclaim::ReclaimPolicy;
use serde::Deserialize;

/// A configuration error: `file: field: reason`.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{file}: {field}: {reason}")]
pub struct ConfigError {
    pub file: String,
    pub field: String,
    pub reason: String,
}

/// How a VNIC's socket is used.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum SocketMode {
    /// quiverd listens; the front-end connects (QEMU `reconnect`).
    #[default]
    Server,
    /// quiverd connects to a socket the front-end listens on, and retries.
    Client,
}

impl fmt::Display for SocketMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SocketMode::Server => "server",
            SocketMode::Client => "client",
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UplinkKindCfg {
    Tap,
    /// An existing interface with quiver's XDP classifier and AF_XDP sockets.
    #[serde(rename = "af_xdp")]
    AfXdp,
    /// An existing interface through AF_PACKET TPACKET_V3 rings in a fanout group.
    #[serde(rename = "af_packet")]
    AfPacket,
    None,
    /// Counts and drops what is sent to it (benchmarks: guest TX alone).
    Sink,
    /// Generates frames toward the VNICs (benchmarks: guest RX alone).
    Source,
}

impl UplinkKindCfg {
    fn as_str(self) -> &'static str {
        match self {
            UplinkKindCfg::Tap => "tap",
            UplinkKindCfg::AfXdp => "af_xdp",
            UplinkKindCfg::AfPacket => "af_packet",
            UplinkKindCfg::None => "none",
            UplinkKindCfg::Sink => "sink",
            UplinkKindCfg::Source => "source",
        }
    }
}

/// `source_dst`: one MAC or a list of them.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    uplink: Vec<RawUplink>,
    #[serde(default)]
    vnic: Vec<RawVnic>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUplink {
    name: String,
    kind: UplinkKindCfg,
    ifname: Option<String>,
    queues: Option<u32>,
    netns: Option<String>,
    #[serde(default)]
    persist: bool,
    xdp_mode: Option<String>,
    source_dst: Option<OneOrMany>,
    source_src: Option<String>,
    source_frame_len: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVnic {
    name: String,
    socket: PathBuf,
    #[serde(default)]
    mode: SocketMode,
    socket_mode: Option<String>,
    socket_owner: Option<String>,
    socket_group: Option<String>,
    mac: String,
    queue_pairs: Option<u32>,
    queue_size: Option<u32>,
    uplink: Option<String>,
    vlan: Option<u32>,
    mtu: Option<u32>,
    #[serde(default)]
    allow_spoof: bool,
    tx_reclaim: Option<String>,
    rings: Option<u32>,
    busy_poll_us: Option<u32>,
}

/// A validated uplink.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UplinkConfig {
    pub name: String,
    pub kind: UplinkKindCfg,
    pub ifname: String,
    pub queues: usize,
    pub netns: Option<String>,
    pub persist: bool,
    /// Where an `af_xdp` uplink's XDP program runs; `None` for the other kinds.
    pub xdp_mode: Option<XdpMode>,
    /// What a `source` uplink generates; `None` for the other kinds.
    pub source: Option<SourceSettings>,
}

/// The frames a `source` uplink generates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceSettings {
    /// Destination MACs, used round-robin.
    pub dst: Vec<MacAddr>,
    pub src: MacAddr,
    /// Ethernet frame length without FCS.
    pub frame_len: usize,
}

/// Most dedicated rings one VNIC may ask for.
const MAX_RINGS: u32 = 64;
/// Longest busy poll (1 ms: beyond that an idle poll costs more than a wakeup).
const MAX_BUSY_POLL_US: u32 = 1000;
/// Source MAC of generated frames unless `source_src` says otherwise: locally
/// administered, so it never collides with a vendor's.
pub const DEFAULT_SOURCE_SRC: MacAddr = MacAddr([0x02, 0x00, 0x00, 0x00, 0x00, 0xfe]);
/// Frame length of generated frames unless `source_frame_len` says otherwise.
pub const DEFAULT_SOURCE_FRAME_LEN: u32 = 64;

/// A validated VNIC.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VnicConfig {
    pub name: String,
    pub socket: PathBuf,
    pub mode: SocketMode,
    pub socket_mode: Option<u32>,
    pub socket_owner: Option<String>,
    pub socket_group: Option<String>,
    pub mac: MacAddr,
    pub queue_pairs: u16,
    pub queue_size: u16,
    pub uplink: Option<String>,
    /// Access VLAN (1..=4094); `None` = untagged.
    pub vlan: Option<u16>,
    pub mtu: u16,
    pub allow_spoof: bool,
    /// When the guest's transmitted chains are handed back (`reclaim.rs`).
    pub tx_reclaim: ReclaimPolicy,
    /// Dedicated uplink RX rings wanted (0 = the shared group).
    pub rings: u16,
    /// Microseconds an emptied TX ring is polled before the worker sleeps (0 = off).
    pub busy_poll_us: u32,
}

impl VnicConfig {
    /// Equal but for `rings`, which changes at run time without restarting the VNIC.
    pub fn same_but_rings(&self, other: &VnicConfig) -> bool {
        VnicConfig {
            rings: other.rings,
            ..self.clone()
        } == *other
    }
}

impl VnicConfig {
    /// Largest frame the VNIC sends or receives: Ethernet header + MTU (+ a VLAN tag a
    /// trunk-style guest may add).
    pub fn max_frame(&self) -> usize {
        usize::from(self.mtu) + 14 + 4
    }
}

/// The whole validated configuration.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Config {
    pub uplinks: Vec<UplinkConfig>,
    pub vnics: Vec<VnicConfig>,
}

/// Limits on what a VNIC may ask for.
pub const MAX_QUEUE_PAIRS: u32 = 16;
pub const MIN_MTU: u32 = 68;
pub const MAX_MTU: u32 = 9216;
const MAX_UPLINK_QUEUES: u32 = 64;

struct Ctx<'a> {
    file: &'a str,
}

impl Ctx<'_> {
    fn err(&self, field: impl Into<String>, reason: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.to_string(),
            field: field.into(),
            reason: reason.into(),
        }
    }
}

fn check_name(ctx: &Ctx<'_>, field: &str, name: &str) -> Result<(), ConfigError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.');
    if ok {
        Ok(())
    } else {
        Err(ctx.err(
            field,
            format!("{name:?} must be 1-64 characters of [A-Za-z0-9._-]"),
        ))
    }
}

impl Config {
    /// Reads and validates a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: file.clone(),
            field: "(file)".into(),
            reason: format!("cannot read: {e}"),
        })?;
        Config::parse(&file, &text)
    }

    /// Parses and validates configuration text; `file` names it in errors.
    pub fn parse(file: &str, text: &str) -> Result<Config, ConfigError> {
        let ctx = Ctx { file };
        let raw: RawFile = toml::from_str(text).map_err(|e| {
            let (line, col) = e.span().map(|s| line_col(text, s.start)).unwrap_or((0, 0));
            ctx.err(
                format!("line {line}, column {col}"),
                e.message().to_string(),
            )
        })?;
        let mut cfg = Config::default();
        let mut uplink_names = HashSet::new();
        let mut ifnames = HashSet::new();
        for (i, u) in raw.uplink.into_iter().enumerate() {
            let at = |f: &str| format!("uplink[{i}] ({}).{f}", u.name);
            check_name(&ctx, &at("name"), &u.name)?;
            if !uplink_names.insert(u.name.clone()) {
                return Err(ctx.err(at("name"), "duplicate uplink name"));
            }
            let queues = u.queues.unwrap_or(1);
            if queues == 0 || queues > MAX_UPLINK_QUEUES {
                return Err(ctx.err(
                    at("queues"),
                    format!("{queues} is outside 1..={MAX_UPLINK_QUEUES}"),
                ));
            }
            let needs_ifname = matches!(u.kind, UplinkKindCfg::Tap | UplinkKindCfg::AfPacket);
            if u.kind == UplinkKindCfg::AfXdp {
                let name = u.ifname.as_deref().unwrap_or_default();
                if u.ifname.is_none() {
                    return Err(ctx.err(at("ifname"), "required for kind = \"af_xdp\""));
                }
                if name.is_empty() || name.len() > 15 || name.contains(['/', ' ']) {
                    return Err(ctx.err(
                        at("ifname"),
                        format!("{name:?} is not a valid interface name (1-15 characters, no '/' or space)"),
                    ));
                }
                if !ifnames.insert((u.netns.clone(), name.to_owned())) {
                    return Err(ctx.err(at("ifname"), format!("{name} is used by another uplink")));
                }
            }
            let ifname = match (needs_ifname, u.ifname) {
                (true, None) => {
                    return Err(ctx.err(
                        at("ifname"),
                        format!("required for kind = \"{}\"", u.kind.as_str()),
                    ))
                }
                (_, Some(n)) => n,
                (_, None) => String::new(),
            };
            if needs_ifname {
                if ifname.is_empty() || ifname.len() > 15 || ifname.contains(['/', ' ']) {
                    return Err(ctx.err(
                        at("ifname"),
                        format!("{ifname:?} is not a valid interface name (1-15 characters, no '/' or space)"),
                    ));
                }
                let key = (u.netns.clone(), ifname.clone());
                if !ifnames.insert(key) {
                    return Err(
                        ctx.err(at("ifname"), format!("{ifname} is used by another uplink"))
                    );
                }
            }
            if let Some(ns) = &u.netns {
                check_name(&ctx, &at("netns"), ns)?;
            }
            let xdp_mode = match (u.kind, u.xdp_mode.as_deref()) {
                (UplinkKindCfg::AfXdp, None | Some("native")) => Some(XdpMode::Native),
                (UplinkKindCfg::AfXdp, Some("skb")) => Some(XdpMode::Skb),
                (UplinkKindCfg::AfXdp, Some(m)) => {
                    return Err(ctx.err(
                        at("xdp_mode"),
                        format!("{m:?} is not one of \"native\", \"skb\""),
                    ))
                }
                (_, Some(_)) => return Err(ctx.err(at("xdp_mode"), "only for kind = \"af_xdp\"")),
                (_, None) => None,
            };
            if u.persist && u.kind != UplinkKindCfg::Tap {
                return Err(ctx.err(
                    at("persist"),
                    format!(
                        "only for kind = \"tap\" (kind = \"{}\" never creates an interface)",
                        u.kind.as_str()
                    ),
                ));
            }
            let source = source_settings(
                &ctx,
                &at,
                u.kind,
                u.source_dst,
                u.source_src,
                u.source_frame_len,
            )?;
            cfg.uplinks.push(UplinkConfig {
                name: u.name,
                kind: u.kind,
                ifname,
                queues: queues as usize,
                netns: u.netns,
                persist: u.persist,
                xdp_mode,
                source,
            });
        }
        let mut names = HashSet::new();
        let mut sockets = HashSet::new();
        let mut macs = HashSet::new();
        for (i, v) in raw.vnic.into_iter().enumerate() {
            let at = |f: &str| format!("vnic[{i}] ({}).{f}", v.name);
            check_name(&ctx, &at("name"), &v.name)?;
            if !names.insert(v.name.clone()) {
                return Err(ctx.err(at("name"), "duplicate VNIC name"));
            }
            if v.socket.as_os_str().is_empty() || !v.socket.is_absolute() {
                return Err(ctx.err(
                    at("socket"),
                    format!("{:?} must be an absolute path", v.socket),
                ));
            }
            // sun_path holds 108 bytes including the terminating NUL.
            if v.socket.as_os_str().len() > 107 {
                return Err(ctx.err(
                    at("socket"),
                    "longer than a unix socket path may be (107 bytes)",
                ));
            }
            if !sockets.insert(v.socket.clone()) {
                return Err(ctx.err(at("socket"), "used by another VNIC"));
            }
            let busy_poll_us = v.busy_poll_us.unwrap_or(0);
            if busy_poll_us > MAX_BUSY_POLL_US {
                return Err(ctx.err(
                    at("busy_poll_us"),
                    format!("{busy_poll_us} is outside 0..={MAX_BUSY_POLL_US} (microseconds)"),
                ));
            }
            let rings = v.rings.unwrap_or(0);
            if rings > MAX_RINGS {
                return Err(ctx.err(at("rings"), format!("{rings} is outside 0..={MAX_RINGS}")));
            }
            if rings > 0 && v.uplink.is_none() {
                return Err(ctx.err(
                    at("rings"),
                    "dedicated rings are uplink rings: set `uplink` too, or rings = 0",
                ));
            }
            let tx_reclaim = match v.tx_reclaim.as_deref() {
                None => ReclaimPolicy::default(),
                Some(p) => p.parse().map_err(|_e| {
                    ctx.err(
                        at("tx_reclaim"),
                        format!("{p:?} is not one of \"adaptive\", \"eager\", \"batched\""),
                    )
                })?,
            };
            let mac: MacAddr = v.mac.parse().map_err(|_e| {
                ctx.err(
                    at("mac"),
                    format!("{:?} is not a MAC address like 52:54:00:00:00:01", v.mac),
                )
            })?;
            if !mac.is_unicast() || mac.is_zero() {
                return Err(ctx.err(at("mac"), format!("{mac} is not a unicast address")));
            }
            let vlan = match v.vlan {
                None => None,
                Some(id) => Some(
                    u16::try_from(id)
                        .ok()
                        .filter(|id| (1..=4094).contains(id))
                        .ok_or_else(|| ctx.err(at("vlan"), format!("{id} is outside 1..=4094")))?,
                ),
            };
            if !macs.insert((vlan, mac)) {
                return Err(ctx.err(
                    at("mac"),
                    format!("{mac} is already used by another VNIC on this VLAN"),
                ));
            }
            let queue_pairs = v.queue_pairs.unwrap_or(1);
            if queue_pairs == 0 || queue_pairs > MAX_QUEUE_PAIRS {
                return Err(ctx.err(
                    at("queue_pairs"),
                    format!("{queue_pairs} is outside 1..={MAX_QUEUE_PAIRS}"),
                ));
            }
            let queue_size = v.queue_size.unwrap_or(1024);
            if !(64..=32768).contains(&queue_size) || !queue_size.is_power_of_two() {
                return Err(ctx.err(
                    at("queue_size"),
                    format!("{queue_size} is not a power of two in 64..=32768"),
                ));
            }
            let mtu = v.mtu.unwrap_or(1500);
            if !(MIN_MTU..=MAX_MTU).contains(&mtu) {
                return Err(ctx.err(at("mtu"), format!("{mtu} is outside {MIN_MTU}..={MAX_MTU}")));
            }
            if let Some(up) = &v.uplink {
                if !uplink_names.contains(up) {
                    return Err(ctx.err(at("uplink"), format!("no [[uplink]] named {up:?}")));
                }
                // Ethernet header and an 802.1Q tag on the wire.
                let af_xdp = cfg
                    .uplinks
                    .iter()
                    .any(|u| &u.name == up && u.kind == UplinkKindCfg::AfXdp);
                let max = quiver_uplink::AF_XDP_MAX_FRAME - 18;
                if af_xdp && mtu as usize > max {
                    return Err(ctx.err(
                        at("mtu"),
                        format!(
                            "{mtu} does not fit the frames of af_xdp uplink {up:?} (at most {max}: \
                             AF_XDP receives into 2 KiB buffers); use kind = \"af_packet\" or \
                             \"tap\" for larger frames"
                        ),
                    ));
                }
            }
            let socket_mode = match &v.socket_mode {
                None => None,
                Some(s) => Some(
                    u32::from_str_radix(s.trim_start_matches("0o"), 8)
                        .ok()
                        .filter(|m| *m <= 0o777)
                        .ok_or_else(|| {
                            ctx.err(
                                at("socket_mode"),
                                format!("{s:?} is not an octal mode like \"0660\""),
                            )
                        })?,
                ),
            };
            for (field, value) in [
                ("socket_owner", &v.socket_owner),
                ("socket_group", &v.socket_group),
            ] {
                if let Some(name) = value {
                    if name.is_empty() || name.contains([':', '/', '\n']) {
                        return Err(
                            ctx.err(at(field), format!("{name:?} is not a user or group name"))
                        );
                    }
                }
            }
            cfg.vnics.push(VnicConfig {
                name: v.name,
                socket: v.socket,
                mode: v.mode,
                socket_mode,
                socket_owner: v.socket_owner,
                socket_group: v.socket_group,
                mac,
                // Bounded above by MAX_QUEUE_PAIRS, queue_size by 32768, mtu by 9216.
                queue_pairs: u16::try_from(queue_pairs).unwrap_or(1),
                queue_size: u16::try_from(queue_size).unwrap_or(1024),
                uplink: v.uplink,
                vlan,
                mtu: u16::try_from(mtu).unwrap_or(1500),
                allow_spoof: v.allow_spoof,
                tx_reclaim,
                rings: u16::try_from(rings).unwrap_or(0),
                busy_poll_us,
            });
        }
        Ok(cfg)
    }
}

fn parse_mac(ctx: &Ctx<'_>, field: &str, text: &str) -> Result<MacAddr, ConfigError> {
    text.parse().map_err(|_e| {
        ctx.err(
            field,
            format!("{text:?} is not a MAC address like 52:54:00:00:00:01"),
        )
    })
}

/// The `source_*` fields: required (dst) or defaulted for kind = "source", refused for
/// the other kinds.
fn source_settings(
    ctx: &Ctx<'_>,
    at: &dyn Fn(&str) -> String,
    kind: UplinkKindCfg,
    dst: Option<OneOrMany>,
    src: Option<String>,
    frame_len: Option<u32>,
) -> Result<Option<SourceSettings>, ConfigError> {
    if kind != UplinkKindCfg::Source {
        let given = [
            ("source_dst", dst.is_some()),
            ("source_src", src.is_some()),
            ("source_frame_len", frame_len.is_some()),
        ];
        if let Some((field, _)) = given.iter().find(|(_, set)| *set) {
            return Err(ctx.err(
                at(field),
                format!(
                    "only for kind = \"source\" (this uplink is kind = \"{}\")",
                    kind.as_str()
                ),
            ));
        }
        return Ok(None);
    }
    let dst = match dst {
        None => {
            return Err(ctx.err(
                at("source_dst"),
                "required for kind = \"source\": the destination MAC (or a list of them)",
            ))
        }
        Some(OneOrMany::One(m)) => vec![m],
        Some(OneOrMany::Many(list)) => list,
    };
    if dst.is_empty() {
        return Err(ctx.err(at("source_dst"), "an empty list: name at least one MAC"));
    }
    let mut macs = Vec::with_capacity(dst.len());
    for text in &dst {
        let mac = parse_mac(ctx, &at("source_dst"), text)?;
        if mac.is_zero() {
            return Err(ctx.err(at("source_dst"), format!("{mac} is the zero address")));
        }
        macs.push(mac);
    }
    let src = match src {
        None => DEFAULT_SOURCE_SRC,
        Some(text) => {
            let mac = parse_mac(ctx, &at("source_src"), &text)?;
            if !mac.is_unicast() || mac.is_zero() {
                return Err(ctx.err(at("source_src"), format!("{mac} is not a unicast address")));
            }
            mac
        }
    };
    let len = frame_len.unwrap_or(DEFAULT_SOURCE_FRAME_LEN);
    let (min, max) = (
        quiver_uplink::MIN_SOURCE_FRAME,
        quiver_uplink::MAX_SOURCE_FRAME,
    );
    let frame_len = usize::try_from(len)
        .ok()
        .filter(|l| (min..=max).contains(l))
        .ok_or_else(|| {
            ctx.err(
                at("source_frame_len"),
                format!("{len} is outside {min}..={max} (bytes of Ethernet frame without FCS)"),
            )
        })?;
    Ok(Some(SourceSettings {
        dst: macs,
        src,
        frame_len,
    }))
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.len() - before.rfind('\n').map_or(0, |p| p + 1) + 1;
    (line, col)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[[uplink]]
name = "up0"
kind = "tap"
ifname = "quiver0"
queues = 2
netns = "hostside"

[[vnic]]
name = "vm1"
socket = "/run/quiver/vm1.sock"
mac = "52:54:00:00:00:01"
queue_pairs = 2
uplink = "up0"
vlan = 100
socket_mode = "0660"

[[vnic]]
name = "vm2"
socket = "/run/quiver/vm2.sock"
mode = "client"
mac = "52:54:00:00:00:02"
"#;

    #[test]
    fn parses_the_documented_shape_with_defaults() {
        let c = Config::parse("t.toml", GOOD).expect("valid");
        assert_eq!(c.uplinks[0].queues, 2);
        assert_eq!(c.uplinks[0].netns.as_deref(), Some("hostside"));
        let v1 = &c.vnics[0];
        assert_eq!((v1.queue_pairs, v1.queue_size, v1.mtu), (2, 1024, 1500));
        assert_eq!(v1.vlan, Some(100));
        assert_eq!(v1.socket_mode, Some(0o660));
        assert_eq!(c.vnics[1].mode, SocketMode::Client);
        assert_eq!(c.vnics[1].uplink, None);
    }

    #[test]
    fn bad_lines_name_file_field_and_reason() {
        let cases = [
            (
                "mac = \"52:54:00:00:00:01\"",
                "mac = \"zz:54:00:00:00:01\"",
                "vnic[0] (vm1).mac",
            ),
            (
                "mac = \"52:54:00:00:00:01\"",
                "mac = \"ff:ff:ff:ff:ff:ff\"",
                "vnic[0] (vm1).mac",
            ),
            (
                "queue_pairs = 2",
                "queue_pairs = 0",
                "vnic[0] (vm1).queue_pairs",
            ),
            (
                "queue_pairs = 2",
                "queue_pairs = 2\nqueue_size = 1000",
                "vnic[0] (vm1).queue_size",
            ),
            ("vlan = 100", "vlan = 4095", "vnic[0] (vm1).vlan"),
            (
                "uplink = \"up0\"",
                "uplink = \"nope\"",
                "vnic[0] (vm1).uplink",
            ),
            (
                "socket_mode = \"0660\"",
                "socket_mode = \"rw\"",
                "vnic[0] (vm1).socket_mode",
            ),
            (
                "socket = \"/run/quiver/vm1.sock\"",
                "socket = \"vm1.sock\"",
                "vnic[0] (vm1).socket",
            ),
            (
                "mac = \"52:54:00:00:00:02\"",
                "mac = \"52:54:00:00:00:02\"\nmtu = 20",
                "vnic[1] (vm2).mtu",
            ),
            (
                "socket = \"/run/quiver/vm2.sock\"",
                "socket = \"/run/quiver/vm1.sock\"",
                "vnic[1] (vm2).socket",
            ),
            (
                "ifname = \"quiver0\"",
                "ifname = \"a-very-long-interface\"",
                "uplink[0] (up0).ifname",
            ),
            ("queues = 2", "queues = 0", "uplink[0] (up0).queues"),
            ("name = \"vm2\"", "name = \"vm1\"", "vnic[1] (vm1).name"),
        ];
        for (from, to, field) in cases {
            let text = GOOD.replacen(from, to, 1);
            let e = Config::parse("t.toml", &text).expect_err(to);
            assert_eq!(e.file, "t.toml");
            assert_eq!(e.field, field, "{to}: {e}");
            assert!(!e.reason.is_empty());
        }
    }

    #[test]
    fn unknown_fields_and_wrong_types_point_at_the_line() {
        let e = Config::parse("t.toml", &GOOD.replace("queue_pairs = 2", "queue_pair = 2"))
            .expect_err("unknown field");
        assert!(e.field.starts_with("line 13,"), "{e}");
        assert!(e.reason.contains("queue_pair"), "{e}");
        let e = Config::parse(
            "t.toml",
            &GOOD.replace("queue_pairs = 2", "queue_pairs = \"two\""),
        )
        .expect_err("type");
        assert!(e.field.starts_with("line 13,"), "{e}");
        let e = Config::parse("t.toml", &GOOD.replace("kind = \"tap\"", "kind = \"dpdk\""))
            .expect_err("kind");
        assert!(e.reason.contains("dpdk"), "{e}");
    }

    const SOURCE_SINK: &str = r#"
[[uplink]]
name = "gen"
kind = "source"
source_dst = ["52:54:00:00:00:01", "52:54:00:00:00:02"]
source_frame_len = 1500

[[uplink]]
name = "drop"
kind = "sink"
queues = 2

[[uplink]]
name = "one"
kind = "source"
source_dst = "52:54:00:00:00:01"
"#;

    #[test]
    fn sink_and_source_parse_with_defaults() {
        let c = Config::parse("t.toml", SOURCE_SINK).expect("valid");
        let gen = &c.uplinks[0];
        assert_eq!(gen.kind, UplinkKindCfg::Source);
        assert_eq!(gen.ifname, "");
        let s = gen.source.as_ref().expect("source settings");
        assert_eq!(s.frame_len, 1500);
        assert_eq!(s.src, DEFAULT_SOURCE_SRC);
        assert_eq!(
            s.dst,
            vec![
                MacAddr([0x52, 0x54, 0, 0, 0, 1]),
                MacAddr([0x52, 0x54, 0, 0, 0, 2])
            ]
        );
        assert_eq!(
            (c.uplinks[1].kind, c.uplinks[1].queues),
            (UplinkKindCfg::Sink, 2)
        );
        assert_eq!(c.uplinks[1].source, None);
        let one = c.uplinks[2].source.as_ref().expect("source settings");
        assert_eq!(one.dst.len(), 1);
        assert_eq!(one.frame_len, DEFAULT_SOURCE_FRAME_LEN as usize);
    }

    #[test]
    fn bad_source_fields_are_named() {
        let cases = [
            (
                "source_frame_len = 1500",
                "source_frame_len = 59",
                "uplink[0] (gen).source_frame_len",
            ),
            (
                "source_frame_len = 1500",
                "source_frame_len = 9235",
                "uplink[0] (gen).source_frame_len",
            ),
            (
                "source_dst = [\"52:54:00:00:00:01\", \"52:54:00:00:00:02\"]",
                "source_dst = [\"52:54:00:00:00:01\", \"nope\"]",
                "uplink[0] (gen).source_dst",
            ),
            (
                "source_dst = [\"52:54:00:00:00:01\", \"52:54:00:00:00:02\"]",
                "source_dst = []",
                "uplink[0] (gen).source_dst",
            ),
            (
                "source_dst = [\"52:54:00:00:00:01\", \"52:54:00:00:00:02\"]",
                "source_dst = \"00:00:00:00:00:00\"",
                "uplink[0] (gen).source_dst",
            ),
            (
                "source_dst = [\"52:54:00:00:00:01\", \"52:54:00:00:00:02\"]",
                "",
                "uplink[0] (gen).source_dst",
            ),
            (
                "source_frame_len = 1500",
                "source_src = \"ff:ff:ff:ff:ff:ff\"",
                "uplink[0] (gen).source_src",
            ),
            (
                "queues = 2",
                "source_frame_len = 64",
                "uplink[1] (drop).source_frame_len",
            ),
            (
                "queues = 2",
                "source_dst = \"52:54:00:00:00:01\"",
                "uplink[1] (drop).source_dst",
            ),
        ];
        for (from, to, field) in cases {
            let text = SOURCE_SINK.replacen(from, to, 1);
            let e = Config::parse("t.toml", &text).expect_err(to);
            assert_eq!(e.file, "t.toml");
            assert_eq!(e.field, field, "{to}: {e}");
            assert!(!e.reason.is_empty());
        }
        let e = Config::parse(
            "t.toml",
            &GOOD.replace("netns = \"hostside\"", "source_frame_len = 64"),
        )
        .expect_err("tap with a source field");
        assert!(e.reason.contains("only for kind = \"source\""), "{e}");
    }

    const AF_PACKET: &str = r#"
[[uplink]]
name = "wire"
kind = "af_packet"
ifname = "veth0"
queues = 4
netns = "hostside"

[[uplink]]
name = "lone"
kind = "af_packet"
ifname = "eth1"
"#;

    #[test]
    fn af_packet_parses_with_defaults() {
        let c = Config::parse("t.toml", AF_PACKET).expect("valid");
        let w = &c.uplinks[0];
        assert_eq!(w.kind, UplinkKindCfg::AfPacket);
        assert_eq!((w.ifname.as_str(), w.queues), ("veth0", 4));
        assert_eq!(w.netns.as_deref(), Some("hostside"));
        assert_eq!(w.source, None);
        let l = &c.uplinks[1];
        assert_eq!(
            (l.ifname.as_str(), l.queues, l.netns.as_deref()),
            ("eth1", 1, None)
        );
    }

    #[test]
    fn bad_af_packet_fields_are_named() {
        let cases = [
            ("ifname = \"veth0\"\n", "", "uplink[0] (wire).ifname", "required"),
            (
                "ifname = \"veth0\"",
                "ifname = \"a-very-long-interface\"",
                "uplink[0] (wire).ifname",
                "not a valid interface name",
            ),
            ("queues = 4", "queues = 65", "uplink[0] (wire).queues", "outside"),
            (
                "queues = 4",
                "queues = 4\npersist = true",
                "uplink[0] (wire).persist",
                "only for kind = \"tap\"",
            ),
            (
                "queues = 4",
                "source_dst = \"52:54:00:00:00:01\"",
                "uplink[0] (wire).source_dst",
                "only for kind = \"source\"",
            ),
            (
                "ifname = \"eth1\"",
                "ifname = \"eth1\"\nnetns = \"hostside\"\n[[uplink]]\nname = \"again\"\nkind = \"tap\"\nifname = \"eth1\"\nnetns = \"hostside\"",
                "uplink[2] (again).ifname",
                "used by another uplink",
            ),
        ];
        for (from, to, field, reason) in cases {
            let text = AF_PACKET.replacen(from, to, 1);
            let e = Config::parse("t.toml", &text).expect_err(to);
            assert_eq!(e.field, field, "{to}: {e}");
            assert!(e.reason.contains(reason), "{to}: {e}");
        }
        let e = Config::parse("t.toml", &AF_PACKET.replace("af_packet", "afpacket"))
            .expect_err("misspelt kind");
        assert!(e.reason.contains("afpacket"), "{e}");
    }

    const AF_XDP: &str = r#"
[[uplink]]
name = "fast"
kind = "af_xdp"
ifname = "veth0"
queues = 4
netns = "hostside"
"#;

    #[test]
    fn af_xdp_parses_with_native_mode_by_default() {
        let c = Config::parse("t.toml", AF_XDP).expect("valid");
        let u = &c.uplinks[0];
        assert_eq!(u.kind, UplinkKindCfg::AfXdp);
        assert_eq!((u.ifname.as_str(), u.queues), ("veth0", 4));
        assert_eq!(u.netns.as_deref(), Some("hostside"));
        assert_eq!(u.xdp_mode, Some(XdpMode::Native));
        let skb = Config::parse("t.toml", &format!("{AF_XDP}xdp_mode = \"skb\"\n")).expect("valid");
        assert_eq!(skb.uplinks[0].xdp_mode, Some(XdpMode::Skb));
    }

    #[test]
    fn an_mtu_an_af_xdp_uplink_cannot_receive_is_refused() {
        let vnic = |mtu: u32| {
            format!(
                "{AF_XDP}\n[[vnic]]\nname = \"vm1\"\nsocket = \"/tmp/vm1.sock\"\nmac = \"52:54:00:00:00:01\"\nuplink = \"fast\"\nmtu = {mtu}\n"
            )
        };
        for mtu in [1500, 1774] {
            Config::parse("t.toml", &vnic(mtu)).expect("fits");
        }
        for mtu in [1775, 9000] {
            let e = Config::parse("t.toml", &vnic(mtu)).expect_err("too large");
            assert_eq!(e.field, "vnic[0] (vm1).mtu", "{e}");
            assert!(
                e.reason.contains("af_xdp") && e.reason.contains("1774"),
                "{e}"
            );
        }
    }

    #[test]
    fn bad_af_xdp_fields_are_named() {
        let cases = [
            ("ifname = \"veth0\"\n", "", "uplink[0] (fast).ifname", "required for kind = \"af_xdp\""),
            ("ifname = \"veth0\"", "ifname = \"an-interface-name-too-long\"", "uplink[0] (fast).ifname", "not a valid interface name"),
            ("queues = 4", "queues = 65", "uplink[0] (fast).queues", "outside"),
            ("queues = 4", "queues = 4\nxdp_mode = \"hw\"", "uplink[0] (fast).xdp_mode", "not one of"),
            ("kind = \"af_xdp\"", "kind = \"tap\"\nxdp_mode = \"skb\"", "uplink[0] (fast).xdp_mode", "only for kind = \"af_xdp\""),
            (
                "netns = \"hostside\"",
                "netns = \"hostside\"\n[[uplink]]\nname = \"again\"\nkind = \"af_xdp\"\nifname = \"veth0\"\nnetns = \"hostside\"",
                "uplink[1] (again).ifname",
                "used by another uplink",
            ),
        ];
        for (from, to, field, reason) in cases {
            let text = AF_XDP.replacen(from, to, 1);
            let e = Config::parse("t.toml", &text).expect_err(to);
            assert_eq!(e.field, field, "{to}: {e}");
            assert!(e.reason.contains(reason), "{to}: {e}");
        }
    }

    #[test]
    fn tx_reclaim_defaults_to_adaptive_and_names_a_bad_value() {
        let base =
            "[[vnic]]\nname = \"a\"\nsocket = \"/tmp/a.sock\"\nmac = \"52:54:00:00:00:01\"\n";
        let cfg = Config::parse("t.toml", base).expect("valid");
        assert_eq!(cfg.vnics[0].tx_reclaim, ReclaimPolicy::Adaptive);
        let cfg =
            Config::parse("t.toml", &format!("{base}tx_reclaim = \"batched\"\n")).expect("valid");
        assert_eq!(cfg.vnics[0].tx_reclaim, ReclaimPolicy::Batched);
        let e = Config::parse("t.toml", &format!("{base}tx_reclaim = \"lazy\"\n"))
            .expect_err("bad policy");
        assert_eq!(e.field, "vnic[0] (a).tx_reclaim");
        assert!(e.reason.contains("\"lazy\""), "{e}");
    }

    #[test]
    fn rings_need_an_uplink_and_a_sane_count() {
        let base = "[[uplink]]\nname = \"up0\"\nkind = \"none\"\n\n[[vnic]]\nname = \"a\"\nsocket = \"/tmp/a.sock\"\nmac = \"52:54:00:00:00:01\"\n";
        let cfg = Config::parse("t.toml", &format!("{base}uplink = \"up0\"\nrings = 2\n"))
            .expect("valid");
        assert_eq!(cfg.vnics[0].rings, 2);
        assert_eq!(
            Config::parse("t.toml", base).expect("valid").vnics[0].rings,
            0
        );
        let e = Config::parse("t.toml", &format!("{base}rings = 2\n")).expect_err("no uplink");
        assert_eq!(e.field, "vnic[0] (a).rings");
        let e = Config::parse("t.toml", &format!("{base}uplink = \"up0\"\nrings = 65\n"))
            .expect_err("too many");
        assert!(e.reason.contains("0..=64"), "{e}");
        let a = &cfg.vnics[0];
        let b = VnicConfig {
            rings: 0,
            ..a.clone()
        };
        assert!(a.same_but_rings(&b) && a != &b);
    }

    #[test]
    fn missing_file_is_named() {
        let e = Config::load(Path::new("/nonexistent/q.toml")).expect_err("missing");
        assert_eq!(e.file, "/nonexistent/q.toml");
        assert!(e.reason.contains("cannot read"));
    }
}
