//! Hardware flow steering: one ntuple rule per VNIC MAC (and VLAN) that sends its
//! frames to the VNIC's dedicated RX ring, as `ethtool -N DEV flow-type ether dst MAC
//! [vlan V m 0xf000] action Q` does, through the SIOCETHTOOL ioctls
//! ETHTOOL_SRXCLSRLINS / ETHTOOL_SRXCLSRLDEL (`<linux/ethtool.h>`).
//!
//! [`Steering`] holds the decision logic: probe once, install a rule per VNIC on the
//! first of its rings, remove it when the VNIC goes or loses its rings, and fall back
//! to software classification for good when the driver says it cannot (EOPNOTSUPP,
//! EINVAL) or for one VNIC when its table is full. It works on any [`FlowSteering`]
//! driver: [`EthtoolSteering`] for a real NIC, or a fake in tests (no NIC on the
//! development machines has a classifier; veth and TAP answer EOPNOTSUPP).

use std::collections::BTreeMap;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// `SIOCETHTOOL` from `<linux/sockios.h>`.
const SIOCETHTOOL: libc::c_ulong = 0x8946;
/// `ETHTOOL_GRXCLSRLCNT`: number of classification rules (probe).
const ETHTOOL_GRXCLSRLCNT: u32 = 0x2e;
/// `ETHTOOL_SRXCLSRLDEL`: delete a classification rule.
const ETHTOOL_SRXCLSRLDEL: u32 = 0x31;
/// `ETHTOOL_SRXCLSRLINS`: insert a classification rule.
const ETHTOOL_SRXCLSRLINS: u32 = 0x32;
/// `ETHER_FLOW`: match on the Ethernet header.
const ETHER_FLOW: u32 = 0x12;
/// `FLOW_EXT`: the `h_ext`/`m_ext` fields (VLAN TCI) are valid.
const FLOW_EXT: u32 = 0x8000_0000;
/// `RX_CLS_LOC_ANY`: let the driver choose the rule's location.
const RX_CLS_LOC_ANY: u32 = 0xffff_ffff;
/// VLAN id bits of a TCI (priority bits are kept for later flow-control lanes).
const VLAN_VID_MASK: u16 = 0x0fff;

/// `struct ethtool_flow_ext`.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct FlowExt {
    padding: [u8; 2],
    h_dest: [u8; 6],
    /// Big endian.
    vlan_etype: u16,
    /// Big endian.
    vlan_tci: u16,
    data: [u32; 2],
}

/// `struct ethtool_rx_flow_spec`. `h_u`/`m_u` are `union ethtool_flow_union` (52
/// bytes); for ETHER_FLOW they hold a `struct ethhdr`: destination MAC first.
#[repr(C)]
#[derive(Clone, Copy)]
struct RxFlowSpec {
    flow_type: u32,
    h_u: [u8; 52],
    h_ext: FlowExt,
    m_u: [u8; 52],
    m_ext: FlowExt,
    ring_cookie: u64,
    location: u32,
}

/// `struct ethtool_rxnfc` without its flexible `rule_locs` tail (unused by the
/// commands here).
#[repr(C)]
#[derive(Clone, Copy)]
struct RxNfc {
    cmd: u32,
    flow_type: u32,
    data: u64,
    fs: RxFlowSpec,
    rule_cnt: u32,
}

impl RxNfc {
    fn new(cmd: u32) -> Self {
        RxNfc {
            cmd,
            flow_type: 0,
            data: 0,
            fs: RxFlowSpec {
                flow_type: 0,
                h_u: [0; 52],
                h_ext: FlowExt::default(),
                m_u: [0; 52],
                m_ext: FlowExt::default(),
                ring_cookie: 0,
                location: 0,
            },
            rule_cnt: 0,
        }
    }

    /// ETHTOOL_SRXCLSRLINS for `rule` at a location the driver picks.
    fn insert(rule: &MacRule) -> Self {
        let mut n = RxNfc::new(ETHTOOL_SRXCLSRLINS);
        n.fs.flow_type = ETHER_FLOW;
        n.fs.h_u[..6].copy_from_slice(&rule.mac);
        // The kernel API's mask: 1 bits are compared (ethtool(8) inverts its `m`).
        n.fs.m_u[..6].copy_from_slice(&[0xff; 6]);
        if let Some(vlan) = rule.vlan {
            n.fs.flow_type |= FLOW_EXT;
            n.fs.h_ext.vlan_tci = (vlan & VLAN_VID_MASK).to_be();
            n.fs.m_ext.vlan_tci = VLAN_VID_MASK.to_be();
        }
        n.fs.ring_cookie = u64::from(rule.ring);
        n.fs.location = RX_CLS_LOC_ANY;
        n
    }
}

/// `struct ifreq` with `ifr_data` pointing at the ethtool command.
#[repr(C)]
struct EthtoolIfReq {
    name: [u8; 16],
    data: *mut libc::c_void,
    _rest: [u8; 16],
}

/// Frames to `mac` (tagged `vlan`, if given) go to RX ring `ring`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MacRule {
    pub mac: [u8; 6],
    pub vlan: Option<u16>,
    pub ring: u32,
}

/// Why a rule could not be installed or removed.
#[derive(Debug, thiserror::Error)]
pub enum SteerError {
    /// The driver has no ntuple filters (or not for Ethernet-header rules).
    #[error("{ifname}: the driver cannot steer by MAC (ntuple filters: {source})")]
    Unsupported {
        ifname: String,
        #[source]
        source: io::Error,
    },
    /// Anything else, e.g. a full rule table (ENOSPC).
    #[error("{ifname}: ethtool rule request failed: {source}")]
    Failed {
        ifname: String,
        #[source]
        source: io::Error,
    },
}

impl SteerError {
    fn from_os(ifname: &str, source: io::Error) -> Self {
        let unsupported = matches!(source.raw_os_error(), Some(libc::EOPNOTSUPP | libc::EINVAL));
        let ifname = ifname.to_string();
        if unsupported {
            SteerError::Unsupported { ifname, source }
        } else {
            SteerError::Failed { ifname, source }
        }
    }
}

/// A NIC's flow-steering rule table.
pub trait FlowSteering: Send {
    /// Whether the driver has rules at all (no side effect).
    fn probe(&self) -> Result<(), SteerError>;
    /// Installs `rule`; returns its location (the handle to remove it).
    fn insert(&self, rule: &MacRule) -> Result<u32, SteerError>;
    fn remove(&self, location: u32) -> Result<(), SteerError>;
}

impl<T: FlowSteering + ?Sized> FlowSteering for Box<T> {
    fn probe(&self) -> Result<(), SteerError> {
        (**self).probe()
    }

    fn insert(&self, rule: &MacRule) -> Result<u32, SteerError> {
        (**self).insert(rule)
    }

    fn remove(&self, location: u32) -> Result<(), SteerError> {
        (**self).remove(location)
    }
}

/// Rules through SIOCETHTOOL on a real interface.
pub struct EthtoolSteering {
    ifname: String,
    /// An AF_INET datagram socket in the interface's namespace (ioctl target).
    sock: OwnedFd,
}

impl EthtoolSteering {
    /// For `ifname` in `netns` (quiverd's own namespace when `None`).
    pub fn open(ifname: &str, netns: Option<&str>) -> io::Result<Self> {
        let make = || -> io::Result<OwnedFd> {
            // SAFETY: socket(2) with constant arguments; the result is checked.
            let fd =
                unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: `fd` is a new descriptor owned by nobody else.
            Ok(unsafe { OwnedFd::from_raw_fd(fd) })
        };
        let sock = match netns {
            None => make()?,
            Some(ns) => crate::netns::run_in(ns, make).map_err(io::Error::other)??,
        };
        if ifname.is_empty() || ifname.len() >= 16 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("bad interface name {ifname:?}"),
            ));
        }
        Ok(EthtoolSteering {
            ifname: ifname.to_string(),
            sock,
        })
    }

    fn ioctl(&self, cmd: &mut RxNfc) -> Result<(), SteerError> {
        let mut ifr = EthtoolIfReq {
            name: [0; 16],
            data: (cmd as *mut RxNfc).cast(),
            _rest: [0; 16],
        };
        ifr.name[..self.ifname.len()].copy_from_slice(self.ifname.as_bytes());
        // SAFETY: SIOCETHTOOL takes a `struct ifreq` whose ifr_data points at an
        // ethtool command; `ifr` and `cmd` are live, correctly laid out (see the
        // layout tests) and large enough for every command used here (none of them
        // writes past `struct ethtool_rxnfc`'s fixed part).
        let r = unsafe { libc::ioctl(self.sock.as_raw_fd(), SIOCETHTOOL, &mut ifr) };
        if r < 0 {
            return Err(SteerError::from_os(
                &self.ifname,
                io::Error::last_os_error(),
            ));
        }
        Ok(())
    }
}

impl FlowSteering for EthtoolSteering {
    fn probe(&self) -> Result<(), SteerError> {
        self.ioctl(&mut RxNfc::new(ETHTOOL_GRXCLSRLCNT))
    }

    fn insert(&self, rule: &MacRule) -> Result<u32, SteerError> {
        let mut cmd = RxNfc::insert(rule);
        self.ioctl(&mut cmd)?;
        Ok(cmd.fs.location)
    }

    fn remove(&self, location: u32) -> Result<(), SteerError> {
        let mut cmd = RxNfc::new(ETHTOOL_SRXCLSRLDEL);
        cmd.fs.location = location;
        self.ioctl(&mut cmd)
    }
}

/// How a VNIC's frames are classified to it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SteerPath {
    /// A rule in the NIC sends them to the VNIC's ring.
    Hardware { ring: u32 },
    /// quiver classifies them in software.
    Software,
}

impl SteerPath {
    pub fn as_str(self) -> &'static str {
        match self {
            SteerPath::Hardware { .. } => "hardware",
            SteerPath::Software => "software",
        }
    }
}

/// Steering decisions for one uplink: which VNICs have a hardware rule.
pub struct Steering<D: FlowSteering> {
    driver: D,
    /// False once the driver said it cannot steer: no further attempts.
    usable: bool,
    /// Installed rules by VNIC: (rule, location).
    rules: BTreeMap<String, (MacRule, u32)>,
}

impl<D: FlowSteering> Steering<D> {
    /// Probes the driver; a driver without rules leaves every VNIC in software.
    pub fn new(driver: D) -> Self {
        let usable = match driver.probe() {
            Ok(()) => true,
            Err(e) => {
                log::info!("{e}: classifying in software");
                false
            }
        };
        Steering {
            driver,
            usable,
            rules: BTreeMap::new(),
        }
    }

    pub fn hardware_available(&self) -> bool {
        self.usable
    }

    pub fn path(&self, vnic: &str) -> SteerPath {
        match self.rules.get(vnic) {
            Some((rule, _)) => SteerPath::Hardware { ring: rule.ring },
            None => SteerPath::Software,
        }
    }

    /// Points `vnic`'s frames (`mac`, `vlan`) at `ring`, or at the shared group when
    /// `ring` is `None`. Replaces an earlier rule of the VNIC. Returns the path now
    /// serving it.
    pub fn assign(
        &mut self,
        vnic: &str,
        mac: [u8; 6],
        vlan: Option<u16>,
        ring: Option<u32>,
    ) -> SteerPath {
        let want = ring.map(|ring| MacRule { mac, vlan, ring });
        if let Some((rule, _)) = self.rules.get(vnic) {
            if Some(*rule) == want {
                return self.path(vnic);
            }
        }
        // New rule first, then the old one goes: frames are steered somewhere at
        // every moment (a NIC matching both picks either; both lead to this VNIC).
        let old = self.rules.remove(vnic);
        if let (Some(rule), true) = (want, self.usable) {
            match self.driver.insert(&rule) {
                Ok(location) => {
                    self.rules.insert(vnic.to_string(), (rule, location));
                }
                Err(e @ SteerError::Unsupported { .. }) => {
                    log::info!("{e}: classifying in software from now on");
                    self.usable = false;
                }
                Err(e) => log::warn!("{vnic}: {e}: classified in software"),
            }
        }
        if let Some((_, location)) = old {
            if let Err(e) = self.driver.remove(location) {
                log::warn!("{vnic}: removing steering rule {location}: {e}");
            }
        }
        self.path(vnic)
    }

    /// `vnic` is gone: its rule goes.
    pub fn release(&mut self, vnic: &str) {
        if let Some((_, location)) = self.rules.remove(vnic) {
            if let Err(e) = self.driver.remove(location) {
                log::warn!("{vnic}: removing steering rule {location}: {e}");
            }
        }
    }

    /// Removes every rule (shutdown).
    pub fn clear(&mut self) {
        let vnics: Vec<String> = self.rules.keys().cloned().collect();
        for v in vnics {
            self.release(&v);
        }
    }
}

impl<D: FlowSteering> Drop for Steering<D> {
    fn drop(&mut self) {
        self.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{offset_of, size_of};
    use std::sync::{Arc, Mutex};

    /// Offsets and sizes from `<linux/ethtool.h>` (x86_64, printed by offsetof).
    #[test]
    fn layouts_match_linux_ethtool_h() {
        assert_eq!(size_of::<FlowExt>(), 20);
        assert_eq!(offset_of!(FlowExt, h_dest), 2);
        assert_eq!(offset_of!(FlowExt, vlan_etype), 8);
        assert_eq!(offset_of!(FlowExt, vlan_tci), 10);
        assert_eq!(offset_of!(FlowExt, data), 12);
        assert_eq!(size_of::<RxFlowSpec>(), 168);
        assert_eq!(offset_of!(RxFlowSpec, h_u), 4);
        assert_eq!(offset_of!(RxFlowSpec, h_ext), 56);
        assert_eq!(offset_of!(RxFlowSpec, m_u), 76);
        assert_eq!(offset_of!(RxFlowSpec, m_ext), 128);
        assert_eq!(offset_of!(RxFlowSpec, ring_cookie), 152);
        assert_eq!(offset_of!(RxFlowSpec, location), 160);
        assert_eq!(size_of::<RxNfc>(), 192);
        assert_eq!(offset_of!(RxNfc, flow_type), 4);
        assert_eq!(offset_of!(RxNfc, data), 8);
        assert_eq!(offset_of!(RxNfc, fs), 16);
        assert_eq!(offset_of!(RxNfc, rule_cnt), 184);
        assert_eq!(size_of::<EthtoolIfReq>(), 40);
        assert_eq!(offset_of!(EthtoolIfReq, data), 16);
    }

    #[test]
    fn insert_command_matches_ethtool_n_ether_dst_vlan() {
        let rule = MacRule {
            mac: [0x52, 0x54, 0, 0, 0, 7],
            vlan: Some(100),
            ring: 3,
        };
        let n = RxNfc::insert(&rule);
        assert_eq!(n.cmd, ETHTOOL_SRXCLSRLINS);
        assert_eq!(n.fs.flow_type, ETHER_FLOW | FLOW_EXT);
        assert_eq!(&n.fs.h_u[..6], &rule.mac);
        assert_eq!(&n.fs.m_u[..6], &[0xff; 6]);
        assert_eq!(
            &n.fs.h_u[6..],
            &[0; 46][..],
            "source MAC and proto unmatched"
        );
        assert_eq!(u16::from_be(n.fs.h_ext.vlan_tci), 100);
        assert_eq!(u16::from_be(n.fs.m_ext.vlan_tci), 0x0fff);
        assert_eq!((n.fs.ring_cookie, n.fs.location), (3, RX_CLS_LOC_ANY));
        let untagged = RxNfc::insert(&MacRule { vlan: None, ..rule });
        assert_eq!(untagged.fs.flow_type, ETHER_FLOW);
        assert_eq!(untagged.fs.m_ext.vlan_tci, 0);
    }

    /// A NIC's rule table: `capacity` rules, or no ntuple support at all.
    #[derive(Clone)]
    struct FakeNic {
        supported: bool,
        capacity: usize,
        rules: Arc<Mutex<BTreeMap<u32, MacRule>>>,
    }

    impl FakeNic {
        fn new(supported: bool, capacity: usize) -> Self {
            FakeNic {
                supported,
                capacity,
                rules: Arc::default(),
            }
        }

        fn table(&self) -> Vec<MacRule> {
            self.rules.lock().expect("fake").values().copied().collect()
        }

        fn err(&self, errno: i32) -> SteerError {
            SteerError::from_os("fake0", io::Error::from_raw_os_error(errno))
        }
    }

    impl FlowSteering for FakeNic {
        fn probe(&self) -> Result<(), SteerError> {
            if self.supported {
                Ok(())
            } else {
                Err(self.err(libc::EOPNOTSUPP))
            }
        }

        fn insert(&self, rule: &MacRule) -> Result<u32, SteerError> {
            if !self.supported {
                return Err(self.err(libc::EOPNOTSUPP));
            }
            let mut rules = self.rules.lock().expect("fake");
            if rules.len() >= self.capacity {
                return Err(self.err(libc::ENOSPC));
            }
            let loc = (0..).find(|l| !rules.contains_key(l)).unwrap_or(0);
            rules.insert(loc, *rule);
            Ok(loc)
        }

        fn remove(&self, location: u32) -> Result<(), SteerError> {
            match self.rules.lock().expect("fake").remove(&location) {
                Some(_) => Ok(()),
                None => Err(self.err(libc::ENOENT)),
            }
        }
    }

    const A: [u8; 6] = [0x52, 0x54, 0, 0, 0, 1];
    const B: [u8; 6] = [0x52, 0x54, 0, 0, 0, 2];

    #[test]
    fn rules_follow_the_ring_assignment() {
        let nic = FakeNic::new(true, 8);
        let mut s = Steering::new(nic.clone());
        assert!(s.hardware_available());
        assert_eq!(
            s.assign("a", A, None, Some(1)),
            SteerPath::Hardware { ring: 1 }
        );
        assert_eq!(
            s.assign("b", B, Some(7), Some(2)),
            SteerPath::Hardware { ring: 2 }
        );
        assert_eq!(nic.table().len(), 2);
        // Moving a to ring 3 replaces its rule; the same assignment again is a no-op.
        assert_eq!(
            s.assign("a", A, None, Some(3)),
            SteerPath::Hardware { ring: 3 }
        );
        assert_eq!(
            s.assign("a", A, None, Some(3)),
            SteerPath::Hardware { ring: 3 }
        );
        let table = nic.table();
        assert_eq!(table.len(), 2);
        assert!(table.iter().any(|r| r.mac == A && r.ring == 3));
        // Losing its rings (shared group) or going removes the rule.
        assert_eq!(s.assign("a", A, None, None), SteerPath::Software);
        s.release("b");
        assert!(nic.table().is_empty());
        // Dropping the steering removes what is left.
        s.assign("a", A, None, Some(1));
        drop(s);
        assert!(nic.table().is_empty());
    }

    #[test]
    fn a_driver_without_ntuple_means_software_for_everyone() {
        let nic = FakeNic::new(false, 8);
        let mut s = Steering::new(nic.clone());
        assert!(!s.hardware_available());
        assert_eq!(s.assign("a", A, None, Some(1)), SteerPath::Software);
        assert!(nic.table().is_empty());
    }

    #[test]
    fn a_full_table_leaves_that_vnic_in_software_only() {
        let nic = FakeNic::new(true, 1);
        let mut s = Steering::new(nic.clone());
        assert_eq!(
            s.assign("a", A, None, Some(1)),
            SteerPath::Hardware { ring: 1 }
        );
        assert_eq!(s.assign("b", B, None, Some(2)), SteerPath::Software);
        assert!(s.hardware_available(), "ENOSPC is not 'unsupported'");
        s.release("a");
        assert_eq!(
            s.assign("b", B, None, Some(2)),
            SteerPath::Hardware { ring: 2 }
        );
    }

    #[test]
    fn loopback_reports_no_ntuple_support() {
        // The loopback device has no ntuple filters on any kernel: the real ioctl
        // path must classify that as unsupported, not as a failure.
        let Ok(e) = EthtoolSteering::open("lo", None) else {
            return; // no AF_INET sockets in this sandbox
        };
        match e.probe() {
            Err(SteerError::Unsupported { .. }) => {}
            other => panic!("lo: expected Unsupported, got {other:?}"),
        }
    }
}
