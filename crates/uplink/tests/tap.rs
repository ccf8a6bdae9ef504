//! TAP uplink against the real kernel (needs root): every test makes its own
//! network namespace and interface names from the pid and a counter, and removes
//! them through Drop guards.

#![allow(clippy::unwrap_used)] // test helpers outside #[test] fns

use std::process::Command;
use std::time::{Duration, Instant};

use quiver_uplink::netns::{self, unique_name, NetnsGuard};
use quiver_uplink::{open_tap, Tap, TapConfig, TapError, Uplink, UplinkKind, VNET_HDR_LEN};

const OUR_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];

/// Deletes an interface (inside `ns` if given) on drop, whatever happened.
struct LinkGuard {
    ns: Option<String>,
    ifname: String,
}

impl Drop for LinkGuard {
    fn drop(&mut self) {
        let mut cmd = Command::new("ip");
        if let Some(ns) = &self.ns {
            cmd.args(["-n", ns]);
        }
        // Fails harmlessly when the interface is already gone.
        let _ = cmd.args(["link", "del", &self.ifname]).output();
    }
}

fn config(ifname: &str, queues: usize, netns: Option<&str>, persist: bool) -> TapConfig {
    TapConfig {
        ifname: ifname.to_owned(),
        queues,
        netns: netns.map(str::to_owned),
        persist,
        mtu: Some(1500),
    }
}

fn link_exists(ns: &str, ifname: &str) -> bool {
    netns::exec(ns, &["ip", "link", "show", "dev", ifname])
        .unwrap()
        .status
        .success()
}

fn ns_cmd(ns: &NetnsGuard, args: &[&str]) {
    let out = ns.exec(args).unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// ARP request "who-has `target` tell `sender`" from [`OUR_MAC`], broadcast.
fn arp_request(sender: [u8; 4], target: [u8; 4]) -> Vec<u8> {
    let mut f = Vec::with_capacity(42);
    f.extend_from_slice(&[0xff; 6]);
    f.extend_from_slice(&OUR_MAC);
    f.extend_from_slice(&[0x08, 0x06]); // ethertype ARP
    f.extend_from_slice(&[0x00, 0x01, 0x08, 0x00, 6, 4]); // Ethernet / IPv4
    f.extend_from_slice(&[0x00, 0x01]); // request
    f.extend_from_slice(&OUR_MAC);
    f.extend_from_slice(&sender);
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&target);
    f
}

/// Poll every queue until a frame matching `pred` arrives or `timeout` passes.
fn recv_matching(tap: &Tap, timeout: Duration, pred: impl Fn(&[u8]) -> bool) -> Option<Vec<u8>> {
    let deadline = Instant::now() + timeout;
    let mut buf = vec![0xaa_u8; VNET_HDR_LEN + 65535];
    while Instant::now() < deadline {
        let mut fds: Vec<libc::pollfd> = (0..tap.num_queues())
            .map(|i| libc::pollfd {
                fd: tap.queue(i).unwrap().rx_fd().unwrap(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        // SAFETY: `fds` is a live Vec of `fds.len()` initialised pollfds.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 100) };
        assert!(n >= 0, "poll: {}", std::io::Error::last_os_error());
        for i in 0..tap.num_queues() {
            while let Some(len) = tap.queue(i).unwrap().recv(&mut buf).unwrap() {
                assert!(len >= VNET_HDR_LEN);
                // num_buffers is never left as stale buffer contents.
                assert_eq!(&buf[10..12], &[0, 0]);
                let frame = &buf[VNET_HDR_LEN..len];
                if pred(frame) {
                    return Some(frame.to_vec());
                }
                buf.fill(0xaa);
            }
        }
    }
    None
}

#[test]
fn arp_round_trip_through_two_queue_tap_in_netns() {
    let ns = NetnsGuard::new(unique_name("qv-arp")).unwrap();
    let ifname = unique_name("qa");
    let _link = LinkGuard {
        ns: Some(ns.name().to_owned()),
        ifname: ifname.clone(),
    };
    let tap = open_tap(&config(&ifname, 2, Some(ns.name()), false)).unwrap();
    assert_eq!(tap.kind(), UplinkKind::Tap);
    assert_eq!(tap.num_queues(), 2);
    assert!(tap.queue(2).is_none());
    assert!(tap.created());
    let caps = tap.capabilities();
    assert_eq!((caps.rx_rings, caps.tx_rings, caps.vnet_hdr), (2, 2, true));
    assert!(link_exists(ns.name(), &ifname), "TAP is in the namespace");
    assert!(
        !std::path::Path::new("/sys/class/net")
            .join(&ifname)
            .exists(),
        "not in ours"
    );

    let pid = std::process::id();
    let (x, y) = (((pid >> 8) & 0xff) as u8, (pid & 0xff) as u8);
    let ours = [10, x, y, 2];
    let theirs = [10, x, y, 1];
    ns_cmd(
        &ns,
        &[
            "ip",
            "addr",
            "add",
            &format!("10.{x}.{y}.1/24"),
            "dev",
            &ifname,
        ],
    );
    let out = ns
        .exec(&["ip", "-o", "link", "show", "dev", &ifname])
        .unwrap();
    let shown = String::from_utf8_lossy(&out.stdout);
    assert!(
        shown.contains("mtu 1500") && shown.contains(",UP"),
        "{shown}"
    );

    let hdr = [0u8; VNET_HDR_LEN];
    let frame = arp_request(ours, theirs);
    // Header, then the frame split in two: the queue takes any iovec layout.
    let iov = [
        libc::iovec {
            iov_base: hdr.as_ptr() as *mut _,
            iov_len: hdr.len(),
        },
        libc::iovec {
            iov_base: frame.as_ptr() as *mut _,
            iov_len: 14,
        },
        libc::iovec {
            iov_base: frame[14..].as_ptr() as *mut _,
            iov_len: frame.len() - 14,
        },
    ];
    // SAFETY: every iovec points into `hdr` / `frame`, alive for the call.
    let sent = unsafe { tap.queue(0).unwrap().send(&iov) }.unwrap();
    assert_eq!(sent, VNET_HDR_LEN + frame.len());

    // Concurrent senders on one queue: each writev is one whole frame.
    std::thread::scope(|scope| {
        for _ in 0..4 {
            scope.spawn(|| {
                // iovecs hold raw pointers (not Sync): each thread builds its own.
                let iov = [
                    libc::iovec {
                        iov_base: hdr.as_ptr() as *mut _,
                        iov_len: hdr.len(),
                    },
                    libc::iovec {
                        iov_base: frame.as_ptr() as *mut _,
                        iov_len: frame.len(),
                    },
                ];
                for _ in 0..10 {
                    // SAFETY: both iovecs point into `hdr` / `frame`, which outlive the scope.
                    let n = unsafe { tap.queue(0).unwrap().send(&iov) }.unwrap();
                    assert_eq!(n, VNET_HDR_LEN + frame.len());
                }
            });
        }
    });

    let reply = recv_matching(&tap, Duration::from_secs(5), |f| {
        f.len() >= 42 && f[0..6] == OUR_MAC && f[12..14] == [0x08, 0x06] && f[20..22] == [0, 2]
    })
    .expect("no ARP reply from the kernel");
    assert_eq!(&reply[28..32], &theirs, "sender IP");
    assert_eq!(&reply[32..38], &OUR_MAC, "target MAC");
    assert_eq!(&reply[38..42], &ours, "target IP");
}

#[test]
fn persistent_tap_survives_drop_and_reopens() {
    let ns = NetnsGuard::new(unique_name("qv-pers")).unwrap();
    let ifname = unique_name("qp");
    let _link = LinkGuard {
        ns: Some(ns.name().to_owned()),
        ifname: ifname.clone(),
    };

    let tap = open_tap(&config(&ifname, 2, Some(ns.name()), true)).unwrap();
    assert!(tap.created());
    drop(tap);
    assert!(
        link_exists(ns.name(), &ifname),
        "persistent TAP outlives its fds"
    );

    // Reopen with more queues; persist=false must not un-persist a TAP we did not create.
    let tap = open_tap(&config(&ifname, 3, Some(ns.name()), false)).unwrap();
    assert!(!tap.created());
    assert_eq!(tap.num_queues(), 3);
    assert_eq!(tap.ifname(), Some(ifname.as_str()));
    drop(tap);
    assert!(link_exists(ns.name(), &ifname));
}

#[test]
fn non_persistent_tap_in_our_namespace_vanishes_on_drop() {
    let ifname = unique_name("qr");
    let _link = LinkGuard {
        ns: None,
        ifname: ifname.clone(),
    };
    let sys = std::path::Path::new("/sys/class/net").join(&ifname);
    let tap = open_tap(&config(&ifname, 1, None, false)).unwrap();
    assert!(sys.exists());
    assert_eq!(tap.netns(), None);
    tap.set_offload(libc::TUN_F_CSUM).unwrap();
    tap.set_offload(0).unwrap();
    drop(tap);
    // The kernel unregisters the device asynchronously (RCU) after the last close.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while sys.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(!sys.exists());
}

#[test]
fn name_template_is_resolved_for_every_queue() {
    let ns = NetnsGuard::new(unique_name("qv-tmpl")).unwrap();
    let tap = open_tap(&config("qvt%d", 2, Some(ns.name()), false)).unwrap();
    let ifname = tap.ifname().unwrap().to_owned();
    assert!(
        ifname.starts_with("qvt") && !ifname.contains('%'),
        "{ifname}"
    );
    assert!(link_exists(ns.name(), &ifname));
}

#[test]
fn single_queue_tap_is_rejected_naming_the_interface() {
    let ns = NetnsGuard::new(unique_name("qv-sq")).unwrap();
    let ifname = unique_name("qs");
    let _link = LinkGuard {
        ns: Some(ns.name().to_owned()),
        ifname: ifname.clone(),
    };
    ns_cmd(&ns, &["ip", "tuntap", "add", "dev", &ifname, "mode", "tap"]);
    let err = open_tap(&config(&ifname, 2, Some(ns.name()), false)).unwrap_err();
    assert!(
        matches!(&err, TapError::NotMultiQueueTap { ifname: n, .. } if *n == ifname),
        "{err:?}"
    );
    assert!(err.to_string().contains(&ifname));
}

#[test]
fn other_interface_with_the_name_is_rejected() {
    let ns = NetnsGuard::new(unique_name("qv-veth")).unwrap();
    let ifname = unique_name("qv");
    let _link = LinkGuard {
        ns: Some(ns.name().to_owned()),
        ifname: ifname.clone(),
    };
    let peer = format!("{ifname}p");
    ns_cmd(
        &ns,
        &[
            "ip", "link", "add", &ifname, "type", "veth", "peer", "name", &peer,
        ],
    );
    let err = open_tap(&config(&ifname, 1, Some(ns.name()), false)).unwrap_err();
    assert!(matches!(&err, TapError::NotMultiQueueTap { .. }), "{err:?}");
}

#[test]
fn missing_netns_is_reported_with_a_hint() {
    let name = unique_name("qv-none");
    let err = open_tap(&config("qvx0", 1, Some(&name), false)).unwrap_err();
    assert!(
        matches!(&err, TapError::NetnsNotFound { name: n } if *n == name),
        "{err:?}"
    );
    assert!(err.to_string().contains(&format!("ip netns add {name}")));
}

#[test]
fn invalid_configs_are_rejected_before_any_syscall() {
    let cases = [
        config("", 1, None, false),
        config("0123456789abcdef", 1, None, false),
        config("a/b", 1, None, false),
        config("a:b", 1, None, false),
        config("a%s", 1, None, false),
    ];
    for cfg in &cases {
        let err = open_tap(cfg).unwrap_err();
        assert!(
            matches!(err, TapError::InvalidName { .. }),
            "{cfg:?}: {err:?}"
        );
    }
    for queues in [0, 257] {
        let err = open_tap(&config("qvx0", queues, None, false)).unwrap_err();
        assert!(matches!(err, TapError::InvalidQueues { queues: q, .. } if q == queues));
    }
    let mut cfg = config("qvx0", 1, None, false);
    cfg.mtu = Some(u32::MAX);
    assert!(matches!(
        open_tap(&cfg).unwrap_err(),
        TapError::InvalidMtu { mtu: u32::MAX, .. }
    ));
}

/// The kernel truncates a frame that does not fit: `recv` never reports more
/// than `buf.len()`, so callers can slice `buf[..n]` safely.
#[test]
fn short_buffer_truncates_without_overrun() {
    let ns = NetnsGuard::new(unique_name("qv-short")).unwrap();
    let ifname = unique_name("qt");
    let _link = LinkGuard {
        ns: Some(ns.name().to_owned()),
        ifname: ifname.clone(),
    };
    let tap = open_tap(&config(&ifname, 1, Some(ns.name()), false)).unwrap();
    ns_cmd(&ns, &["ip", "addr", "add", "10.9.9.1/24", "dev", &ifname]);
    let hdr = [0u8; VNET_HDR_LEN];
    let frame = arp_request([10, 9, 9, 2], [10, 9, 9, 1]);
    let iov = [
        libc::iovec {
            iov_base: hdr.as_ptr() as *mut _,
            iov_len: hdr.len(),
        },
        libc::iovec {
            iov_base: frame.as_ptr() as *mut _,
            iov_len: frame.len(),
        },
    ];
    // SAFETY: both iovecs point into `hdr` / `frame`, alive for the call.
    unsafe { tap.queue(0).unwrap().send(&iov) }.unwrap();

    let queue = tap.queue(0).unwrap();
    let mut small = [0u8; 30];
    let deadline = Instant::now() + Duration::from_secs(5);
    let n = loop {
        if let Some(n) = queue.recv(&mut small).unwrap() {
            break n;
        }
        assert!(Instant::now() < deadline, "no frame from the kernel");
        std::thread::sleep(Duration::from_millis(10));
    };
    // Every frame the kernel sends here (ARP reply, IPv6 ND/MLD) is longer than 18 bytes.
    assert_eq!(n, small.len());
}
