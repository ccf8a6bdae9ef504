use super::*;
use crate::uplink::{DedicatedRx, VNET_HDR_LEN};
use std::mem::{offset_of, size_of};

#[test]
fn class_key_matches_the_c_struct() {
    assert_eq!(size_of::<ClassKey>(), 8);
    assert_eq!(offset_of!(ClassKey, vlan), 6);
}

#[test]
fn permission_errors_are_found_anywhere_in_the_chain() {
    let eperm = io::Error::from_raw_os_error(libc::EPERM);
    assert!(permission_denied(&eperm));
    let wrapped = AfXdpError::Socket {
        ifname: "x".into(),
        queue: 0,
        source: XskError::Socket(io::Error::from_raw_os_error(libc::EACCES)),
    };
    assert!(permission_denied(&wrapped));
    assert!(!permission_denied(&io::Error::from_raw_os_error(
        libc::EINVAL
    )));
}

#[test]
fn embedded_object_is_bpf_elf() {
    // ELF, 64-bit, little endian, machine EM_BPF (247).
    assert_eq!(&CLASSIFY_O[..4], b"\x7fELF");
    assert_eq!(CLASSIFY_O[4], 2);
    assert_eq!(u16::from_le_bytes([CLASSIFY_O[18], CLASSIFY_O[19]]), 247);
}

#[test]
fn bad_configs_are_refused_before_touching_the_kernel() {
    let cfg = |ifname: &str, queues| AfXdpConfig {
        ifname: ifname.to_owned(),
        queues,
        netns: None,
        mode: XdpMode::Native,
    };
    assert!(matches!(
        open_af_xdp(&cfg("", 1)),
        Err(AfXdpError::InvalidName { .. })
    ));
    assert!(matches!(
        open_af_xdp(&cfg("0123456789abcdef", 1)),
        Err(AfXdpError::InvalidName { .. })
    ));
    assert!(matches!(
        open_af_xdp(&cfg("lo", 0)),
        Err(AfXdpError::InvalidQueues { queues: 0, .. })
    ));
    assert!(matches!(
        open_af_xdp(&cfg("lo", MAX_AF_XDP_QUEUES + 1)),
        Err(AfXdpError::InvalidQueues { .. })
    ));
    assert!(matches!(
        open_af_xdp(&cfg("qv-no-such-if", 1)),
        Err(AfXdpError::NoSuchInterface { .. })
    ));
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and touches no memory.
    unsafe { libc::geteuid() == 0 }
}

fn ns_ok(ns: &netns::NetnsGuard, args: &[&str]) {
    let out = ns.exec(args).unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Sends `count` copies of `frame` from `dev` in `ns` through a packet socket.
fn inject(ns: &netns::NetnsGuard, dev: &str, frame: &[u8], count: usize) {
    let bytes: Vec<String> = frame.iter().map(u8::to_string).collect();
    let script = format!(
        "import socket\ns=socket.socket(socket.AF_PACKET,socket.SOCK_RAW)\ns.bind(('{dev}',0))\n\
         f=bytes([{}])\n[s.send(f) for _ in range({count})]\n",
        bytes.join(",")
    );
    ns_ok(ns, &["python3", "-c", &script]);
}

/// Frames the uplink's queues receive, each with the index of the queue it
/// came from, until `want` of them or 3 s.
fn recv_all(up: &AfXdp, want: usize) -> Vec<(usize, Vec<u8>)> {
    recv_kept(up, want, |_| true)
}

/// Frames (virtio_net_hdr first) for which `keep` holds, with their queue's
/// index, until `want` of them or 3 s; the others are read and dropped.
fn recv_kept(up: &AfXdp, want: usize, keep: impl Fn(&[u8]) -> bool) -> Vec<(usize, Vec<u8>)> {
    let mut got = Vec::new();
    let mut buf = vec![0u8; 4096];
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    while got.len() < want && std::time::Instant::now() < deadline {
        let mut idle = true;
        for q in 0..up.num_queues() {
            let queue = up.queue(q).unwrap();
            while let Some(n) = queue.recv(&mut buf).unwrap() {
                if keep(&buf[..n]) {
                    got.push((q, buf[..n].to_vec()));
                }
                idle = false;
            }
        }
        if idle {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
    got
}

/// A veth pair inside a test namespace: frames to a registered MAC and
/// broadcasts reach the sockets, others do not; frames sent go out.
#[test]
fn veth_frames_are_classified_into_the_sockets() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    classify_on_veth(XdpMode::Native);
}

/// The same in generic XDP: what a driver without native XDP falls back to.
#[test]
fn veth_frames_are_classified_in_skb_mode() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    classify_on_veth(XdpMode::Skb);
}

/// A fresh test namespace holding a veth pair `xa`/`xb`, 2 queues each way, up,
/// without IPv6 (its ND / MLD frames would muddle the counts).
fn two_queue_veth(prefix: &str) -> netns::NetnsGuard {
    let ns = netns::NetnsGuard::new(netns::unique_name(prefix)).unwrap();
    ns_ok(
        &ns,
        &["sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1"],
    );
    ns_ok(
        &ns,
        &[
            "ip",
            "link",
            "add",
            "xa",
            "numtxqueues",
            "2",
            "numrxqueues",
            "2",
            "type",
            "veth",
            "peer",
            "name",
            "xb",
            "numtxqueues",
            "2",
            "numrxqueues",
            "2",
        ],
    );
    ns_ok(&ns, &["ip", "link", "set", "xa", "up"]);
    ns_ok(&ns, &["ip", "link", "set", "xb", "up"]);
    ns
}

fn classify_on_veth(mode: XdpMode) {
    let ns = two_queue_veth("qvx");
    let up = open_af_xdp(&AfXdpConfig {
        ifname: "xa".into(),
        queues: 2,
        netns: Some(ns.name().to_owned()),
        mode,
    })
    .unwrap();
    assert_eq!(up.mode(), mode);
    // What the queue-count warning compares against (`ethtool -l`).
    let rx_queues = netns::run_in(ns.name(), || crate::xsk::rx_queue_count("xa"));
    assert_eq!(rx_queues.unwrap().unwrap(), 2);
    assert!(!up.capabilities().vnet_hdr);
    // Two AF_XDP queues and the group socket; the capabilities count the
    // hardware queues only.
    assert_eq!(up.num_queues(), 3);
    assert_eq!(up.capabilities().rx_rings, 2);
    assert_eq!(up.capabilities().tx_rings, 2);
    let group_q = 2;
    assert!(up.queue(group_q).unwrap().rx_fd().is_some());
    let mac = [0x52, 0x54, 0, 0, 0, 9];
    up.set_classes(&[(mac, 0), ([0x52, 0x54, 0, 0, 0, 10], 7)])
        .unwrap();

    let frame = |dst: [u8; 6], tag: Option<u16>| {
        let mut f = dst.to_vec();
        f.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x77]);
        if let Some(v) = tag {
            f.extend_from_slice(&[0x81, 0, 0, u8::try_from(v).unwrap()]);
        }
        f.extend_from_slice(&[0x88, 0xb5]);
        f.extend_from_slice(&[0xab; 50]);
        f
    };
    let (_, passed_before) = up.verdicts();
    inject(&ns, "xb", &frame(mac, None), 5);
    inject(&ns, "xb", &frame([0xff; 6], None), 2);
    inject(&ns, "xb", &frame([0x01, 0, 0x5e, 0, 0, 0x42], Some(7)), 2);
    inject(&ns, "xb", &frame([0x52, 0x54, 0, 0, 0, 10], Some(7)), 3);
    // Not ours: wrong MAC, and right MAC on the wrong VLAN.
    inject(&ns, "xb", &frame([0x52, 0x54, 0, 0, 0, 11], None), 4);
    inject(&ns, "xb", &frame([0x52, 0x54, 0, 0, 0, 10], Some(8)), 4);
    // The kernel's own IPv6 multicast (MLD, ND) from xb comes too: keep
    // only the injected frames (source 02:00:00:00:00:77).
    let got: Vec<(usize, Vec<u8>)> = recv_all(&up, 12)
        .into_iter()
        .filter(|(_, f)| f[18..24] == [0x02, 0, 0, 0, 0, 0x77])
        .collect();
    assert_eq!(got.len(), 12, "{got:02x?}");
    for (_, f) in &got {
        assert_eq!(&f[..VNET_HDR_LEN], &[0u8; VNET_HDR_LEN]);
    }
    let to = |dst: [u8; 6]| got.iter().filter(move |(_, f)| f[12..18] == dst);
    // Unicast through the AF_XDP sockets, group frames through the group
    // socket only (each once), VLAN tag put back.
    assert_eq!(to(mac).count(), 5);
    assert!(to(mac).all(|(q, _)| *q < group_q));
    assert_eq!(to([0x52, 0x54, 0, 0, 0, 10]).count(), 3);
    assert!(to([0x52, 0x54, 0, 0, 0, 10]).all(|(q, _)| *q < group_q));
    assert_eq!(to([0xff; 6]).count(), 2);
    assert!(to([0xff; 6]).all(|(q, f)| *q == group_q && f.len() == VNET_HDR_LEN + 64));
    let mcast: Vec<_> = to([0x01, 0, 0x5e, 0, 0, 0x42]).collect();
    assert_eq!(mcast.len(), 2);
    assert!(mcast.iter().all(|(q, f)| *q == group_q
        && f[24..28] == [0x81, 0, 0, 7]
        && f.len() == VNET_HDR_LEN + 68));
    let (redirected, passed) = up.verdicts();
    assert!(redirected >= 8, "redirected {redirected}");
    // The kernel got the 4 group frames and the 8 foreign ones.
    assert!(passed - passed_before >= 12, "passed {passed}");
    assert_eq!(counter(&up, "group_skipped"), 0);

    // Dropping the class stops the redirect.
    up.set_classes(&[]).unwrap();
    inject(&ns, "xb", &frame(mac, None), 3);
    assert!(!recv_all(&up, 1)
        .iter()
        .any(|(_, f)| f[18..24] == [0x02, 0, 0, 0, 0, 0x77]));

    // A group frame longer than the reader's buffer is skipped and counted.
    inject(&ns, "xb", &frame([0xff; 6], None), 1);
    let mut small = [0u8; VNET_HDR_LEN + 32];
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    while counter(&up, "group_skipped") == 0 && std::time::Instant::now() < deadline {
        while up
            .queue(group_q)
            .unwrap()
            .recv(&mut small)
            .unwrap()
            .is_some()
        {}
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(counter(&up, "group_skipped"), 1);

    // Transmit: 20 frames (more than one completion batch's worth of kicks)
    // on an AF_XDP queue, 10 broadcasts on the group socket's queue.
    let mut hdr = [0u8; VNET_HDR_LEN];
    hdr[0] = 0;
    let out = frame([0x02, 0, 0, 0, 0, 0x77], None);
    let before = tx_packets(&ns, "xb");
    for i in 0..30 {
        let (q, out) = if i < 20 {
            (0, out.clone())
        } else {
            (group_q, frame([0xff; 6], None))
        };
        let iov = [
            libc::iovec {
                iov_base: hdr.as_mut_ptr().cast(),
                iov_len: hdr.len(),
            },
            libc::iovec {
                iov_base: out.as_ptr().cast_mut().cast(),
                iov_len: out.len(),
            },
        ];
        // SAFETY: both iovecs point at live local buffers of their length.
        let n = unsafe { up.queue(q).unwrap().send(&iov) }.unwrap();
        assert_eq!(n, VNET_HDR_LEN + out.len());
    }
    // The AF_XDP queue transmits a batch with one syscall: at flush (or every 32).
    std::thread::sleep(std::time::Duration::from_millis(100));
    assert_eq!(tx_packets(&ns, "xb") - before, 10);
    up.queue(0).unwrap().flush().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(100));
    assert_eq!(tx_packets(&ns, "xb") - before, 30);
    // The group socket does not read back the broadcasts it sent.
    assert!(recv_all(&up, 1).iter().all(|(_, f)| f[18..24] != SRC));
    drop(up);
    let out = ns.exec(&["ip", "link", "show", "xa"]).unwrap();
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("xdp"),
        "XDP program still attached after drop"
    );
}

/// Source MAC of every injected frame.
const SRC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x77];
const MAC_A: [u8; 6] = [0x52, 0x54, 0, 0, 0, 0x0a];
const MAC_B: [u8; 6] = [0x52, 0x54, 0, 0, 0, 0x0b];

fn test_frame(dst: [u8; 6], tag: Option<u16>) -> Vec<u8> {
    let mut f = dst.to_vec();
    f.extend_from_slice(&SRC);
    if let Some(v) = tag {
        f.extend_from_slice(&[0x81, 0, 0, u8::try_from(v).unwrap()]);
    }
    f.extend_from_slice(&[0x88, 0xb5]);
    f.extend_from_slice(&[0xab; 50]);
    f
}

/// An af_xdp uplink on `xa` (2 queues) of a veth pair `xa`/`xb` in a
/// fresh test namespace, with classes A (untagged) and B (VLAN 7).
fn veth_uplink() -> (netns::NetnsGuard, AfXdp) {
    let ns = two_queue_veth("qvd");
    let up = open_af_xdp(&AfXdpConfig {
        ifname: "xa".into(),
        queues: 2,
        netns: Some(ns.name().to_owned()),
        mode: XdpMode::Native,
    })
    .unwrap();
    up.set_classes(&[(MAC_A, 0), (MAC_B, 7)]).unwrap();
    (ns, up)
}

/// Injected frames (from [`SRC`]) the shared sockets receive, until `want`
/// of them or 3 s; each without its virtio_net_hdr.
fn recv_shared(up: &AfXdp, want: usize) -> Vec<Vec<u8>> {
    recv_kept(up, want, |f| {
        f.get(VNET_HDR_LEN + 6..VNET_HDR_LEN + 12) == Some(&SRC[..])
    })
    .into_iter()
    .map(|(_, f)| f[VNET_HDR_LEN..].to_vec())
    .collect()
}

/// Reads the shared sockets until they stay empty for 50 ms.
fn drain_shared(up: &AfXdp) {
    let mut buf = vec![0u8; 4096];
    let mut idle_since = std::time::Instant::now();
    while idle_since.elapsed() < std::time::Duration::from_millis(50) {
        for q in 0..up.num_queues() {
            while up.queue(q).unwrap().recv(&mut buf).unwrap().is_some() {
                idle_since = std::time::Instant::now();
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// Injected frames the dedicated sockets `set` receive, `max` at a time,
/// until `want` of them or 3 s.
fn recv_dedicated(set: &[Box<dyn DedicatedRx>], want: usize, max: usize) -> Vec<Vec<u8>> {
    let mut got = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    while got.len() < want && std::time::Instant::now() < deadline {
        let mut idle = true;
        for d in set {
            let n = d
                .recv_burst(max, &mut |frames| {
                    assert!(frames.len() <= max);
                    for f in frames {
                        assert_eq!(f.hdr, [0; VNET_HDR_LEN]);
                        if f.data[6..12] == SRC {
                            got.push(f.data.to_vec());
                        }
                    }
                })
                .unwrap();
            if n > 0 {
                idle = false;
            }
        }
        if idle {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
    got
}

fn counter(up: &AfXdp, name: &str) -> u64 {
    up.kernel_counters()
        .into_iter()
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v)
        .unwrap()
}

/// A dedicated VNIC's frames reach its own sockets only; other classes stay on
/// the shared sockets and broadcasts on the group socket; dropping the set (or
/// one of it) steers the VNIC back to the shared sockets.
#[test]
fn dedicated_sockets_take_their_vnics_frames() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let (ns, up) = veth_uplink();
    assert!(matches!(
        up.dedicate_sockets([0x52, 0x54, 0, 0, 0, 0x0c], 0),
        Err(AfXdpError::NotAClass { .. })
    ));
    let set = up.dedicate(MAC_A, 0).unwrap().unwrap();
    assert_eq!(set.len(), 2);
    assert_eq!(set.iter().map(|d| d.queue()).collect::<Vec<_>>(), [0, 1]);
    assert!(set.iter().all(|d| d.fd() >= 0));
    assert_ne!(set[0].fd(), set[1].fd());
    assert!(matches!(
        up.dedicate_sockets(MAC_A, 0),
        Err(AfXdpError::AlreadyDedicated { .. })
    ));
    // A reload with the same classes keeps A's column.
    up.set_classes(&[(MAC_B, 7), (MAC_A, 0)]).unwrap();

    let dedicated_before = counter(&up, "xdp_dedicated");
    let passed_before = counter(&up, "xdp_passed");
    inject(&ns, "xb", &test_frame(MAC_A, None), 5);
    inject(&ns, "xb", &test_frame(MAC_B, Some(7)), 3);
    inject(&ns, "xb", &test_frame([0xff; 6], None), 2);
    // The dedicated fds say when frames wait.
    let mut fds: Vec<libc::pollfd> = set
        .iter()
        .map(|d| libc::pollfd {
            fd: d.fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    // SAFETY: `fds` is a live array of `fds.len()` pollfds for the call.
    let ready = unsafe { libc::poll(fds.as_mut_ptr(), 2, 3000) };
    assert!(ready >= 1, "no dedicated socket became readable");
    let got = recv_dedicated(&set, 5, 2);
    assert_eq!(got.len(), 5, "{got:02x?}");
    assert!(got.iter().all(|f| f[..6] == MAC_A && f.len() == 64));
    let shared = recv_shared(&up, 5);
    assert_eq!(shared.len(), 5, "{shared:02x?}");
    assert!(!shared.iter().any(|f| f[..6] == MAC_A), "{shared:02x?}");
    assert_eq!(shared.iter().filter(|f| f[..6] == MAC_B).count(), 3);
    assert_eq!(shared.iter().filter(|f| f[..6] == [0xff; 6]).count(), 2);
    assert!(counter(&up, "xdp_dedicated") - dedicated_before >= 5);
    // A's 5 and B's 3; the broadcasts went to the kernel (and the group socket).
    assert!(counter(&up, "xdp_redirected") >= 8);
    assert!(counter(&up, "xdp_passed") - passed_before >= 2);

    // Dropping the set: A's frames are the shared sockets' again.
    drop(set);
    let dedicated_after = counter(&up, "xdp_dedicated");
    inject(&ns, "xb", &test_frame(MAC_A, None), 4);
    let shared = recv_shared(&up, 4);
    assert_eq!(shared.len(), 4, "{shared:02x?}");
    assert!(shared.iter().all(|f| f[..6] == MAC_A));
    assert_eq!(counter(&up, "xdp_dedicated"), dedicated_after);

    // Dropping one socket of a set is enough; the column is reused only
    // once the whole set is gone.
    let mut set = up.dedicate(MAC_A, 0).unwrap().unwrap();
    let first = set.remove(0);
    drop(first);
    inject(&ns, "xb", &test_frame(MAC_A, None), 4);
    let shared = recv_shared(&up, 4);
    assert_eq!(shared.len(), 4, "{shared:02x?}");
    assert!(recv_dedicated(&set, 1, 8).is_empty());
    let set_b = up.dedicate(MAC_B, 7).unwrap().unwrap();
    inject(&ns, "xb", &test_frame(MAC_B, Some(7)), 3);
    assert_eq!(recv_dedicated(&set_b, 3, 8).len(), 3);
    assert!(recv_dedicated(&set, 1, 8).is_empty());
    drop(set);
    drop(set_b);
    drop(up);
}

/// Dedicating and dropping with frames waiting in the dedicated sockets
/// and more arriving meanwhile loses no frame of the pool: afterwards the
/// queues still receive more frames than the pool holds.
#[test]
fn dropping_dedicated_sockets_leaks_no_frames() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let (ns, up) = veth_uplink();
    let frame = test_frame(MAC_A, None);
    for _ in 0..20 {
        let set = up.dedicate(MAC_A, 0).unwrap().unwrap();
        inject(&ns, "xb", &frame, 100);
        // At least one arrived, so the other 99 wait in the rings.
        assert_eq!(recv_dedicated(&set, 1, 1).len(), 1);
        std::thread::scope(|s| {
            s.spawn(|| inject(&ns, "xb", &frame, 200));
            std::thread::sleep(std::time::Duration::from_millis(5));
            drop(set);
        });
        // What reached the shared sockets after the drop.
        drain_shared(&up);
    }
    assert!(counter(&up, "xdp_dedicated") >= 20 * 100);
    // The pool has FRAMES / 2 = 2048 receive frames per queue.
    let mut total = 0;
    for _ in 0..8 {
        inject(&ns, "xb", &frame, 500);
        total += recv_shared(&up, 500).len();
    }
    assert!(total >= 3000, "only {total} of 4000 frames received");
}

/// Frames received by `dev` in `ns` (its rx_packets).
fn tx_packets(ns: &netns::NetnsGuard, dev: &str) -> u64 {
    let out = ns
        .exec(&[
            "cat",
            &format!("/sys/class/net/{dev}/statistics/rx_packets"),
        ])
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
}
