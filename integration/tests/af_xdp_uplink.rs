//! The af_xdp uplink on a 4-queue veth pair made by the test: quiverd's end (in one
//! namespace) gets the XDP classifier, one AF_XDP socket per queue and a packet
//! socket for broadcast / multicast (the uplink's fifth queue), the far end lives in
//! a "host" namespace with an address.
//!
//! - frames from the host reach the VNIC owning their destination MAC (+VLAN), none
//!   misclassified, counted per VNIC and per uplink queue; broadcast reaches every
//!   VNIC of the VLAN through the group socket; tagged frames are classified per
//!   VLAN. vm1 and vm3 hold a ring (`rings = 1`): the classifier redirects their
//!   frames to sockets of their own, read by their own workers ("xdp" path; vm3's
//!   with a busy poll); vm2 is served from the shared sockets by the uplink's
//!   pollers ("software" path);
//! - frames for other MACs and broadcasts still reach the kernel (XDP_PASS): the
//!   host pings the quiverd-side interface's own address, resolving it with ARP;
//! - guest TX reaches the host namespace;
//! - a second quiverd on the same interface fails to start, naming the cause and
//!   suggesting another kind.

use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use quiver_integration::tcp::{check_tcp, tcp_frame};
use quiver_integration::veth::{ns_run, VethPair};
use quiver_integration::{is_root, vnic_all_drops, vnic_total, Quiverd};
use quiver_testdriver::{DriverConfig, Guest};
use quiver_uplink::netns::NetnsGuard;

const MAC1: [u8; 6] = [0x52, 0x54, 0, 0, 0, 1];
const MAC2: [u8; 6] = [0x52, 0x54, 0, 0, 0, 2];
const MAC3: [u8; 6] = [0x52, 0x54, 0, 0, 0, 3];
/// Source MAC of every frame the test injects from the host namespace.
const HOST_SRC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x77];
const ETHERTYPE: [u8; 2] = [0x88, 0xb5];
const WAIT: Duration = Duration::from_secs(5);

/// Addresses of the two veth ends, varied per process to keep parallel runs apart.
fn subnet() -> (Ipv4Addr, Ipv4Addr) {
    let x = u8::try_from(std::process::id() % 200).unwrap_or(0) + 20;
    (Ipv4Addr::new(10, 214, x, 1), Ipv4Addr::new(10, 214, x, 2))
}

struct Setup {
    // Field order = drop order: quiverd stops before the namespaces (and with them
    // the veth pair) go.
    q: Quiverd,
    /// Where quiverd's end (`a`) lives.
    qns: NetnsGuard,
    /// Where the far end (`b`) lives.
    hns: NetnsGuard,
    a: String,
    b: String,
}

/// Two namespaces joined by a veth pair with 4 queues each way; `a` (quiverd's)
/// gets `a_ip`, `b` gets `b_ip`. Everything lives in the namespaces, so dropping
/// the guards removes it all however the test ends.
fn veth_pair() -> Result<(NetnsGuard, NetnsGuard, String, String)> {
    let VethPair {
        wire,
        host,
        ifname,
        peer,
    } = VethPair::new("qx", 4)?;
    let (a_ip, b_ip) = subnet();
    ns_run(
        &wire,
        &["ip", "addr", "add", &format!("{a_ip}/24"), "dev", &ifname],
    )?;
    ns_run(
        &host,
        &["ip", "addr", "add", &format!("{b_ip}/24"), "dev", &peer],
    )?;
    Ok((wire, host, ifname, peer))
}

fn config(a: &str, qns: &str) -> String {
    format!(
        "[[uplink]]\nname = \"up0\"\nkind = \"af_xdp\"\nifname = \"{a}\"\nqueues = 4\nnetns = \"{qns}\"\n\n\
         [[vnic]]\nname = \"vm1\"\nsocket = \"@DIR@/vm1.sock\"\nmac = \"52:54:00:00:00:01\"\nuplink = \"up0\"\nrings = 1\n\n\
         [[vnic]]\nname = \"vm2\"\nsocket = \"@DIR@/vm2.sock\"\nmac = \"52:54:00:00:00:02\"\nuplink = \"up0\"\n\n\
         [[vnic]]\nname = \"vm3\"\nsocket = \"@DIR@/vm3.sock\"\nmac = \"52:54:00:00:00:03\"\nuplink = \"up0\"\nvlan = 100\nrings = 1\nbusy_poll_us = 50\n"
    )
}

fn setup() -> Result<Setup> {
    let (qns, hns, a, b) = veth_pair()?;
    let q = Quiverd::start("afxdp", &config(&a, qns.name()))?;
    Ok(Setup { q, qns, hns, a, b })
}

/// A 64-byte test frame from HOST_SRC, optionally 802.1Q-tagged, carrying `id`.
fn frame(dst: [u8; 6], vlan: Option<u16>, id: u8) -> Vec<u8> {
    let mut f = dst.to_vec();
    f.extend_from_slice(&HOST_SRC);
    if let Some(v) = vlan {
        f.extend_from_slice(&[0x81, 0x00]);
        f.extend_from_slice(&v.to_be_bytes());
    }
    f.extend_from_slice(&ETHERTYPE);
    f.extend_from_slice(b"quiver-xdp");
    f.push(id);
    f.resize(64, 0);
    f
}

/// Sends each `(frame, count)` from `dev` in `ns` through a packet socket.
fn inject(ns: &NetnsGuard, dev: &str, frames: &[(Vec<u8>, usize)]) -> Result<()> {
    let mut script = format!(
        "import socket\ns=socket.socket(socket.AF_PACKET,socket.SOCK_RAW)\ns.bind(('{dev}',0))\n"
    );
    for (f, count) in frames {
        let bytes: Vec<String> = f.iter().map(u8::to_string).collect();
        script.push_str(&format!(
            "f=bytes([{}])\nfor _ in range({count}): s.send(f)\n",
            bytes.join(",")
        ));
    }
    ns_run(ns, &["python3", "-c", &script])?;
    Ok(())
}

/// The test frames (from HOST_SRC) a guest receives until none came for 500 ms.
fn drain(g: &mut Guest) -> Result<Vec<Vec<u8>>> {
    let mut got = Vec::new();
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        match g.recv_any(Duration::from_millis(500))? {
            Some((_, f)) if f.data.len() >= 14 && f.data[6..12] == HOST_SRC => {
                got.push(f.data.clone())
            }
            Some(_) => {} // the kernel's own multicast (IPv6 ND / MLD)
            None => break,
        }
    }
    Ok(got)
}

#[test]
fn frames_reach_the_vnic_owning_their_mac_and_vlan() -> Result<()> {
    if !is_root() {
        eprintln!("skipped: needs root for namespaces and XDP");
        return Ok(());
    }
    let s = setup()?;
    let mut g1 = s.q.guest("vm1", MAC1)?;
    let mut g2 = s.q.guest("vm2", MAC2)?;
    let mut g3 = s.q.guest("vm3", MAC3)?;
    // The kernel's own multicast (IPv6 ND of the fresh veth) may have met a VNIC whose
    // rings were not up yet (not_ready): only drops from here on count.
    let base = s.q.stats()?;

    inject(
        &s.hns,
        &s.b,
        &[
            (frame(MAC1, None, 1), 50),
            (frame(MAC2, None, 2), 30),
            (frame([0xff; 6], None, 9), 5),
            (frame(MAC3, Some(100), 3), 4),
            // Not any VNIC's: MAC3 untagged and on another VLAN, an unknown MAC.
            (frame(MAC3, None, 4), 6),
            (frame(MAC3, Some(200), 5), 6),
            (frame([0x52, 0x54, 0, 0, 0, 0x99], None, 6), 6),
        ],
    )?;
    let (f1, f2, f3) = (drain(&mut g1)?, drain(&mut g2)?, drain(&mut g3)?);
    let count = |fs: &[Vec<u8>], dst: [u8; 6], id: u8| {
        fs.iter()
            .filter(|f| f[..6] == dst && f.len() > 24 && f[24] == id)
            .count()
    };
    // vm1: its 50 and the 5 broadcasts, nothing else.
    ensure!(
        count(&f1, MAC1, 1) == 50,
        "vm1 unicast: {}",
        count(&f1, MAC1, 1)
    );
    ensure!(count(&f1, [0xff; 6], 9) == 5, "vm1 broadcast");
    ensure!(f1.len() == 55, "vm1 got {} frames: {f1:02x?}", f1.len());
    ensure!(
        count(&f2, MAC2, 2) == 30,
        "vm2 unicast: {}",
        count(&f2, MAC2, 2)
    );
    ensure!(count(&f2, [0xff; 6], 9) == 5, "vm2 broadcast");
    ensure!(f2.len() == 35, "vm2 got {} frames: {f2:02x?}", f2.len());
    // vm3 (access VLAN 100): only its tagged frames, untagged now; no VLAN-0 broadcast.
    ensure!(f3.len() == 4, "vm3 got {} frames: {f3:02x?}", f3.len());
    for f in &f3 {
        ensure!(
            f[..6] == MAC3 && f[12..14] == ETHERTYPE,
            "tag not stripped: {f:02x?}"
        );
    }

    let stats = s.q.stats()?;
    ensure!(
        vnic_total(&stats, "vm1", "rx_packets") >= 55,
        "vm1: {stats:#}"
    );
    ensure!(
        vnic_total(&stats, "vm2", "rx_packets") >= 35,
        "vm2: {stats:#}"
    );
    ensure!(
        vnic_total(&stats, "vm3", "rx_packets") == 4,
        "vm3: {stats:#}"
    );
    for vm in ["vm1", "vm2", "vm3"] {
        ensure!(
            vnic_all_drops(&stats, vm) == vnic_all_drops(&base, vm),
            "{vm} drops: {stats:#}"
        );
    }
    let path = |vm: &str| stats["vnics"][vm]["rings"]["path"].clone();
    ensure!(
        path("vm1") == "xdp" && path("vm3") == "xdp" && path("vm2") == "software",
        "ring paths: {stats:#}"
    );
    let up = &stats["uplinks"]["up0"];
    ensure!(up["kind"] == "af_xdp", "{up:#}");
    // vm1's 50 and vm3's 4 came through their own sockets.
    ensure!(
        up["kernel"]["xdp_dedicated"].as_u64() >= Some(54),
        "XDP verdicts: {up:#}"
    );
    // The XDP program's own verdicts: the foreign frames and the broadcasts went to
    // the kernel, the VNICs' unicast (50 + 30 + 4) to quiverd's sockets.
    ensure!(
        up["kernel"]["xdp_passed"].as_u64() >= Some(18 + 5)
            && up["kernel"]["xdp_redirected"].as_u64() >= Some(84),
        "XDP verdicts: {up:#}"
    );
    // 4 AF_XDP queues and the group socket's queue, which read the 5 broadcasts.
    let queues = up["queues"].as_array().cloned().unwrap_or_default();
    ensure!(queues.len() == 5, "per-queue counters: {up:#}");
    ensure!(
        queues[4]["rx_packets"].as_u64() >= Some(5),
        "group queue: {up:#}"
    );
    let per_queue: Vec<u64> = queues
        .iter()
        .map(|q| q["rx_packets"].as_u64().unwrap_or(0))
        .collect();
    // The classifier let only the VNICs' frames through and the group socket only
    // the broadcasts (plus the kernel's own multicast): 84 + 5 in all, none of the
    // 18 foreign frames reached quiverd.
    let total: u64 = per_queue.iter().sum();
    ensure!(
        (89..89 + 18).contains(&total),
        "uplink rx per queue {per_queue:?}: {up:#}"
    );
    ensure!(
        up["total"]["rx_packets"].as_u64() == Some(total),
        "uplink total vs queues: {up:#}"
    );
    Ok(())
}

#[test]
fn frames_for_other_macs_still_reach_the_kernel() -> Result<()> {
    if !is_root() {
        eprintln!("skipped: needs root for namespaces and XDP");
        return Ok(());
    }
    let s = setup()?;
    let (a_ip, _) = subnet();
    // No static neighbour entry: the host's ARP request is a broadcast, which the
    // classifier passes to the kernel of quiverd's namespace (quiverd floods a copy).
    // An ICMP echo through a raw socket (no ping binary needed): the kernel of
    // quiverd's namespace answers.
    let script = format!(
        "import socket,struct\n\
         def ck(b):\n  t=sum(struct.unpack('!%dH'%(len(b)//2),b))\n  \
         t=(t>>16)+(t&0xffff)\n  t+=t>>16\n  return ~t&0xffff\n\
         s=socket.socket(socket.AF_INET,socket.SOCK_RAW,socket.IPPROTO_ICMP)\n\
         s.settimeout(2)\nok=0\n\
         for seq in range(3):\n  m=struct.pack('!BBHHH',8,0,0,0x5157,seq)+b'quiver-xdp-pass!'\n  \
         m=m[:2]+struct.pack('!H',ck(m))+m[4:]\n  s.sendto(m,('{a_ip}',0))\n  \
         try:\n    while True:\n      r,a=s.recvfrom(2048)\n      \
         if a[0]=='{a_ip}' and r[20]==0 and struct.unpack('!H',r[26:28])[0]==seq:\n        \
         ok+=1\n        break\n  except socket.timeout:\n    pass\nprint(ok)\n"
    );
    let out = ns_run(&s.hns, &["python3", "-c", &script])?;
    ensure!(out.trim() == "3", "echo replies from {a_ip}: {out:?}");
    // Resolved by ARP, not configured.
    let neigh = ns_run(&s.hns, &["ip", "neigh", "show", &a_ip.to_string()])?;
    ensure!(
        neigh.contains("lladdr") && !neigh.contains("PERMANENT"),
        "neighbour entry: {neigh}"
    );
    // The XDP program is attached in native mode.
    let show = ns_run(&s.qns, &["ip", "link", "show", &s.a])?;
    ensure!(show.contains("xdp"), "no XDP program on {}: {show}", s.a);
    Ok(())
}

#[test]
fn guest_tx_reaches_the_namespace() -> Result<()> {
    if !is_root() {
        eprintln!("skipped: needs root for namespaces and XDP");
        return Ok(());
    }
    let s = setup()?;
    let mut g1 = s.q.guest("vm1", MAC1)?;
    let mut g3 = s.q.guest("vm3", MAC3)?;
    // A listener on `b` counts the test's frames by source MAC (untagged from vm1,
    // tagged with VLAN 100 from vm3).
    // The kernel moves a received 802.1Q tag into the packet's metadata: read it
    // back with PACKET_AUXDATA (struct tpacket_auxdata, TP_STATUS_VLAN_VALID).
    let script = format!(
        "import socket,struct\ns=socket.socket(socket.AF_PACKET,socket.SOCK_RAW,socket.htons(3))\n\
         s.setsockopt(263,8,1)\ns.bind(('{}',0))\ns.settimeout(3)\nn1=n3=0\nprint('ready',flush=True)\n\
         try:\n  while True:\n    f,anc,_,_=s.recvmsg(2048,64)\n    vid=None\n    \
         for lvl,typ,d in anc:\n      \
         if lvl==263 and typ==8 and len(d)>=20:\n        \
         st,_,_,_,_,tci,_=struct.unpack('IIIHHHH',d[:20])\n        \
         vid=(tci&0xfff) if st&0x10 else None\n    \
         if f[12:16]==bytes([0x81,0,0,100]): vid=100; f=f[:12]+f[16:]\n    \
         if f[12:14]!=bytes([0x88,0xb5]): continue\n    \
         if f[6:12]==bytes([0x52,0x54,0,0,0,1]) and vid is None: n1+=1\n    \
         if f[6:12]==bytes([0x52,0x54,0,0,0,3]) and vid==100: n3+=1\n\
         except socket.timeout:\n  pass\nprint(n1,n3)\n",
        s.b
    );
    let listener = Command::new("ip")
        .args(["netns", "exec", s.hns.name(), "python3", "-c", &script])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    // Send only once the listener is bound.
    let mut listener = listener;
    let mut ready = String::new();
    if let Some(out) = listener.stdout.as_mut() {
        std::io::BufRead::read_line(&mut std::io::BufReader::new(out), &mut ready)?;
    }
    ensure!(ready.trim() == "ready", "listener did not start: {ready:?}");
    let to_host = |src: [u8; 6]| {
        let mut f = vec![0x02, 0, 0, 0, 0, 0x55];
        f.extend_from_slice(&src);
        f.extend_from_slice(&ETHERTYPE);
        f.extend_from_slice(b"quiver-xdp-tx");
        f.resize(64, 0);
        f
    };
    for _ in 0..40 {
        g1.send(0, &to_host(MAC1))?;
    }
    for _ in 0..10 {
        g3.send(0, &to_host(MAC3))?;
    }
    let out = listener.wait_with_output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    ensure!(
        text.trim() == "40 10",
        "host saw (vm1, vm3) = {text:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stats = s.q.stats()?;
    ensure!(
        stats["uplinks"]["up0"]["total"]["tx_packets"].as_u64() >= Some(50),
        "uplink tx: {stats:#}"
    );
    Ok(())
}

#[test]
fn a_busy_interface_fails_start_naming_the_cause_and_other_kinds() -> Result<()> {
    if !is_root() {
        eprintln!("skipped: needs root for namespaces and XDP");
        return Ok(());
    }
    let s = setup()?;
    // Same interface, same queues: the AF_XDP sockets cannot bind.
    let second = config(&s.a, s.qns.name()).replace("@DIR@/vm", "@DIR@/other-vm");
    let err = match Quiverd::start("afxdp2", &second) {
        Ok(_) => anyhow::bail!("a second quiverd started on {}", s.a),
        Err(e) => format!("{e:#}"),
    };
    ensure!(err.contains("af_xdp") && err.contains(&s.a), "{err}");
    ensure!(err.contains("af_packet"), "no other kind suggested: {err}");
    // The first one's classifier is still attached and working.
    let mut g1 = s.q.guest("vm1", MAC1)?;
    inject(&s.hns, &s.b, &[(frame(MAC1, None, 7), 3)])?;
    ensure!(drain(&mut g1)?.len() == 3, "first quiverd lost its uplink");

    // A missing interface is named too, and nothing is left behind.
    let missing = config("qx-nosuchif", s.qns.name()).replace("@DIR@/vm", "@DIR@/third-vm");
    let err = match Quiverd::start("afxdp3", &missing) {
        Ok(_) => anyhow::bail!("quiverd started on a missing interface"),
        Err(e) => format!("{e:#}"),
    };
    ensure!(
        err.contains("qx-nosuchif") && err.contains("not found"),
        "{err}"
    );
    Ok(())
}

/// Sends 64-byte frames to MAC1 from `b` in the host namespace as fast as one
/// thread can (sendmmsg bursts of 64 on a packet socket bypassing the qdisc) until
/// `stop`; counts them in `sent`.
fn blast(ns_name: &str, dev: &str, stop: &AtomicBool, sent: &AtomicU64) -> Result<()> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    let ns = std::fs::File::open(format!("/var/run/netns/{ns_name}"))?;
    // SAFETY: `ns` is an open namespace fd for the call; setns moves only this
    // (short-lived, test-owned) thread.
    let entered = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
    ensure!(entered == 0, "setns: {}", std::io::Error::last_os_error());
    // SAFETY: plain syscall, no memory passed.
    let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
    ensure!(raw >= 0, "socket: {}", std::io::Error::last_os_error());
    // SAFETY: `raw` was just returned by socket(2) and is owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let name = std::ffi::CString::new(dev)?;
    // SAFETY: `name` is NUL-terminated and outlives the call.
    let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
    ensure!(ifindex != 0, "no {dev}");
    // SAFETY: sockaddr_ll is plain data; all-zero is a valid value.
    let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sll.sll_family = u16::try_from(libc::AF_PACKET)?;
    sll.sll_ifindex = i32::try_from(ifindex)?;
    // SAFETY: `sll` is a live sockaddr_ll and the length is its size.
    let r = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&sll as *const libc::sockaddr_ll).cast(),
            libc::socklen_t::try_from(std::mem::size_of::<libc::sockaddr_ll>())?,
        )
    };
    ensure!(r == 0, "bind: {}", std::io::Error::last_os_error());
    let one: libc::c_int = 1;
    // SAFETY: PACKET_QDISC_BYPASS reads one int from `one`, live for the call.
    unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_PACKET,
            20, // PACKET_QDISC_BYPASS
            (&one as *const libc::c_int).cast(),
            4,
        )
    };
    let mut f = frame(MAC1, None, 8);
    let mut iov = libc::iovec {
        iov_base: f.as_mut_ptr().cast(),
        iov_len: f.len(),
    };
    // SAFETY: mmsghdr is plain data; all-zero is a valid value.
    let mut msgs: Vec<libc::mmsghdr> = (0..64).map(|_| unsafe { std::mem::zeroed() }).collect();
    for m in &mut msgs {
        m.msg_hdr.msg_iov = &mut iov;
        m.msg_hdr.msg_iovlen = 1;
    }
    while !stop.load(Ordering::Relaxed) {
        // SAFETY: every mmsghdr points at `iov`, which points at `f`; all live for
        // the call, and the count is msgs.len().
        let n = unsafe { libc::sendmmsg(fd.as_raw_fd(), msgs.as_mut_ptr(), 64, 0) };
        if n > 0 {
            sent.fetch_add(u64::try_from(n)?, Ordering::Relaxed);
        }
    }
    Ok(())
}

/// Frames per second from the host namespace into a VNIC, 64-byte frames. A
/// measurement, not a pass/fail test: prints sent / uplink-received / delivered
/// rates. Run with `cargo test --release -p quiver-integration --test af_xdp_uplink
/// -- --ignored --nocapture`.
#[test]
#[ignore = "benchmark"]
fn rate_namespace_to_vnic_64_bytes() -> Result<()> {
    if !is_root() {
        eprintln!("skipped: needs root for namespaces and XDP");
        return Ok(());
    }
    let s = setup()?;
    let mut g1 = s.q.guest("vm1", MAC1)?;
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let sender = {
        let (ns, dev, stop, sent) = (
            s.hns.name().to_owned(),
            s.b.clone(),
            stop.clone(),
            sent.clone(),
        );
        std::thread::spawn(move || blast(&ns, &dev, &stop, &sent))
    };
    let uplink_rx = |v: &serde_json::Value| {
        v["uplinks"]["up0"]["total"]["rx_packets"]
            .as_u64()
            .unwrap_or(0)
    };
    let mut got = 0u64;
    let warmup = Instant::now() + Duration::from_secs(1);
    while Instant::now() < warmup {
        if g1.recv_any(Duration::from_millis(10))?.is_some() {
            got += 1;
        }
    }
    let (t0, s0, st0) = (Instant::now(), sent.load(Ordering::Relaxed), s.q.stats()?);
    let g0 = got;
    while t0.elapsed() < Duration::from_secs(4) {
        if g1.recv_any(Duration::from_millis(10))?.is_some() {
            got += 1;
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    let (s1, st1) = (sent.load(Ordering::Relaxed), s.q.stats()?);
    stop.store(true, Ordering::Relaxed);
    let _ = sender.join();
    let rate = |a: u64, b: u64| (b.saturating_sub(a)) as f64 / secs;
    println!(
        "af_xdp 64 B namespace -> VNIC: sent {:.0}/s, uplink rx {:.0}/s, vm1 rx {:.0}/s (guest took {:.0}/s), vm1 no_rx_buffers {}",
        rate(s0, s1),
        rate(uplink_rx(&st0), uplink_rx(&st1)),
        rate(vnic_total(&st0, "vm1", "rx_packets"), vnic_total(&st1, "vm1", "rx_packets")),
        rate(g0, got),
        st1["vnics"]["vm1"]["total"]["drops"]["no_rx_buffers"],
    );
    Ok(())
}

/// SIGHUP reload keeps the uplink and re-programs the classifier: a VNIC added on
/// reload gets its frames, a removed VNIC's MAC goes back to the kernel.
#[test]
fn reload_reprograms_the_classifier() -> Result<()> {
    if !is_root() {
        eprintln!("skipped: needs root for namespaces and XDP");
        return Ok(());
    }
    let s = setup()?;
    let mac4 = [0x52, 0x54, 0, 0, 0, 4];
    let next = config(&s.a, s.qns.name()).replace(
        "name = \"vm2\"\nsocket = \"@DIR@/vm2.sock\"\nmac = \"52:54:00:00:00:02\"",
        "name = \"vm4\"\nsocket = \"@DIR@/vm4.sock\"\nmac = \"52:54:00:00:00:04\"",
    );
    s.q.reload(&next)?;
    let sock = s.q.dir.path().join("vm4.sock");
    let deadline = Instant::now() + WAIT;
    while !sock.exists() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut g1 = s.q.guest("vm1", MAC1)?;
    let mut g4 = s.q.guest("vm4", mac4)?;
    let before = s.q.stats()?["uplinks"]["up0"]["total"]["rx_packets"]
        .as_u64()
        .unwrap_or(0);
    inject(
        &s.hns,
        &s.b,
        &[
            (frame(mac4, None, 4), 7),
            (frame(MAC1, None, 1), 3),
            (frame(MAC2, None, 2), 9),
        ],
    )?;
    let (f1, f4) = (drain(&mut g1)?, drain(&mut g4)?);
    ensure!(
        f4.len() == 7 && f4.iter().all(|f| f[..6] == mac4),
        "vm4: {f4:02x?}"
    );
    ensure!(
        f1.len() == 3 && f1.iter().all(|f| f[..6] == MAC1),
        "vm1: {f1:02x?}"
    );
    // MAC2's frames were passed to the kernel, not read by quiverd (the kernel's own
    // multicast may add a few).
    let after = s.q.stats()?["uplinks"]["up0"]["total"]["rx_packets"]
        .as_u64()
        .unwrap_or(0);
    ensure!(
        (10..19).contains(&after.saturating_sub(before)),
        "uplink read {} frames",
        after.saturating_sub(before)
    );
    Ok(())
}

/// AF_XDP carries no virtio_net_hdr: a guest's TSO super-frame leaves as
/// MSS-sized segments with correct checksums, finished by quiverd.
#[test]
fn guest_tso_frames_are_segmented_before_the_wire() -> Result<()> {
    if !is_root() {
        eprintln!("skipped: needs root for namespaces and XDP");
        return Ok(());
    }
    let s = setup()?;
    let mut g1 = Guest::connect(
        &s.q.dir.path().join("vm1.sock"),
        DriverConfig {
            mac: MAC1,
            extra_features: (1 << 0) | (1 << 11), // CSUM | HOST_TSO4
            mem_size: 32 << 20,
            ..DriverConfig::default()
        },
        WAIT,
    )?;
    let script = format!(
        "import socket\ns=socket.socket(socket.AF_PACKET,socket.SOCK_RAW,socket.htons(3))\n\
         s.bind(('{}',0))\ns.settimeout(3)\nprint('ready',flush=True)\n\
         try:\n  while True:\n    f=s.recv(65536)\n    \
         if f[6:12]==bytes([0x52,0x54,0,0,0,1]) and f[12:14]==bytes([8,0]): print(f.hex(),flush=True)\n\
         except socket.timeout:\n  pass\n",
        s.b
    );
    let mut listener = Command::new("ip")
        .args(["netns", "exec", s.hns.name(), "python3", "-c", &script])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut ready = String::new();
    if let Some(out) = listener.stdout.as_mut() {
        std::io::BufRead::read_line(&mut std::io::BufReader::new(out), &mut ready)?;
    }
    ensure!(ready.trim() == "ready", "listener did not start: {ready:?}");
    let data: Vec<u8> = (0..20_000usize)
        .map(|i| u8::try_from(i * 7 % 251).unwrap_or(0))
        .collect();
    let mut hdr = [0u8; 12];
    hdr[0] = 1; // NEEDS_CSUM
    hdr[1] = 1; // GSO_TCPV4
    hdr[2..4].copy_from_slice(&54u16.to_le_bytes());
    hdr[4..6].copy_from_slice(&1448u16.to_le_bytes());
    hdr[6..8].copy_from_slice(&34u16.to_le_bytes());
    hdr[8..10].copy_from_slice(&16u16.to_le_bytes());
    let opts = quiver_testdriver::TxOpts {
        hdr,
        ..quiver_testdriver::TxOpts::default()
    };
    g1.send_opts(
        0,
        &tcp_frame([0x02, 0, 0, 0, 0, 0x55], MAC1, 1000, &data),
        &opts,
    )?;
    let out = listener.wait_with_output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut payload = Vec::new();
    let mut segments = 0;
    for line in text.lines() {
        let f: Vec<u8> = (0..line.len() / 2)
            .filter_map(|i| u8::from_str_radix(line.get(2 * i..2 * i + 2)?, 16).ok())
            .collect();
        ensure!(
            f.len() <= 1514 && f.len() >= 54,
            "segment of {} bytes",
            f.len()
        );
        let (_, p) = check_tcp(&f)?;
        payload.extend_from_slice(&p);
        segments += 1;
    }
    ensure!(segments == 14, "{segments} segments: {text}");
    ensure!(payload == data, "payload differs after segmentation");
    Ok(())
}

/// Ring assignment with real sockets: 3 VNICs asking for 2 rings each on a 4-ring
/// uplink (rings 1..=3 can be dedicated). vm3 gets rings 1 and 2, vm1 ring 3: both
/// read sockets of their own ("xdp"); vm2 gets none and is served from the shared
/// sockets ("software"). While the host streams numbered frames to vm1 and vm2,
/// vm3 is removed by a SIGHUP reload: vm2 is promoted and its frames move to
/// sockets of its own mid-stream. Every frame of both streams arrives, no drop.
#[test]
fn a_vnic_promoted_to_its_own_ring_keeps_its_stream() -> Result<()> {
    if !is_root() {
        eprintln!("skipped: needs root for namespaces and XDP");
        return Ok(());
    }
    const FRAMES: usize = 3000;
    let (qns, hns, a, b) = veth_pair()?;
    let uplink = format!(
        "[[uplink]]\nname = \"up0\"\nkind = \"af_xdp\"\nifname = \"{a}\"\nqueues = 4\nnetns = \"{}\"\n\n",
        qns.name()
    );
    let vnic = |name: &str, mac: u8| {
        format!(
            "[[vnic]]\nname = \"{name}\"\nsocket = \"@DIR@/{name}.sock\"\nmac = \"52:54:00:00:00:{mac:02x}\"\nuplink = \"up0\"\nrings = 2\n\n"
        )
    };
    let with_vm3 = format!(
        "{uplink}{}{}{}",
        vnic("vm3", 3),
        vnic("vm1", 1),
        vnic("vm2", 2)
    );
    let without_vm3 = format!("{uplink}{}{}", vnic("vm1", 1), vnic("vm2", 2));
    let q = Quiverd::start("afxdp-rings", &with_vm3)?;
    let mut g1 = q.guest("vm1", MAC1)?;
    let mut g2 = q.guest("vm2", MAC2)?;
    let _g3 = q.guest("vm3", MAC3)?;
    let path = |s: &serde_json::Value, vm: &str| s["vnics"][vm]["rings"]["path"].clone();
    let s = q.wait_stats("vm1 and vm3 on their own sockets", WAIT, |s| {
        path(s, "vm1") == "xdp" && path(s, "vm3") == "xdp"
    })?;
    ensure!(path(&s, "vm2") == "software", "vm2 before: {s:#}");
    let base = q.stats()?;

    // The host sends FRAMES numbered frames to each of vm1 (stream 1) and vm2
    // (stream 2), interleaved, about 3000 a second: long enough to span the reload.
    let script = format!(
        "import socket,struct,time\n\
         s=socket.socket(socket.AF_PACKET,socket.SOCK_RAW)\ns.bind(('{b}',0))\n\
         src=bytes({HOST_SRC:?})\n\
         def f(dst,stream,seq):\n\
         \x20 h=bytes(dst)+src+b'\\x88\\xb5QVR1'+struct.pack('>IQ',stream,seq)\n\
         \x20 return h+bytes(((seq&255)^((i*31)&255)) for i in range(30,64))\n\
         for seq in range({FRAMES}):\n\
         \x20 s.send(f({MAC1:?},1,seq)); s.send(f({MAC2:?},2,seq))\n\
         \x20 if seq%16==15: time.sleep(0.01)\n"
    );
    let mut sender = Command::new("ip")
        .args(["netns", "exec", hns.name(), "python3", "-c", &script])
        .stdin(Stdio::null())
        .spawn()?;
    let mut seen: [Vec<bool>; 2] = [vec![false; FRAMES], vec![false; FRAMES]];
    let mut last = [None::<u64>; 2];
    let mut reordered = [0u64; 2];
    let mut reloaded = false;
    let mut quiet_since = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut got_any = false;
        for (i, g) in [&mut g1, &mut g2].into_iter().enumerate() {
            while let Some((_, f)) = g.recv_any(Duration::from_millis(1))? {
                let Some((stream, seq)) = quiver_testdriver::parse_seq_frame(&f.data) else {
                    continue; // the kernel's own multicast
                };
                let n = usize::try_from(seq).unwrap_or(usize::MAX);
                ensure!(
                    u32::try_from(i + 1) == Ok(stream) && n < FRAMES,
                    "vm{}: frame of stream {stream} seq {seq}",
                    i + 1
                );
                ensure!(
                    quiver_testdriver::seq_frame_intact(&f.data),
                    "corrupt frame {seq}"
                );
                seen[i][n] = true;
                if last[i].is_some_and(|l| seq < l) {
                    reordered[i] += 1;
                }
                last[i] = Some(seq);
                got_any = true;
            }
        }
        // A third of the way through, vm3 goes and vm2 is promoted.
        if !reloaded && last[1].is_some_and(|l| l >= (FRAMES / 3) as u64) {
            q.reload(&without_vm3)?;
            reloaded = true;
        }
        let done = sender.try_wait()?.is_some();
        if got_any {
            quiet_since = Instant::now();
        } else if done && quiet_since.elapsed() > Duration::from_millis(500) {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "the stream did not finish in 60 s"
        );
    }
    ensure!(reloaded, "the stream never reached the reload point");
    let s = q.wait_stats("vm2 promoted", WAIT, |s| {
        s["vnics"]["vm3"].is_null() && path(s, "vm2") == "xdp"
    })?;
    ensure!(path(&s, "vm1") == "xdp", "vm1 after: {s:#}");
    // All of vm1's frames and, after the move, vm2's came through own sockets.
    let dedicated = |s: &serde_json::Value| {
        s["uplinks"]["up0"]["kernel"]["xdp_dedicated"]
            .as_u64()
            .unwrap_or(0)
    };
    ensure!(
        dedicated(&s) - dedicated(&base) > FRAMES as u64,
        "frames through own sockets: {s:#}"
    );
    for (i, seen) in seen.iter().enumerate() {
        let missing: Vec<usize> = (0..seen.len()).filter(|&n| !seen[n]).collect();
        ensure!(
            missing.is_empty(),
            "vm{}: {} of {FRAMES} frames lost, first {:?}; {s:#}",
            i + 1,
            missing.len(),
            &missing[..missing.len().min(10)]
        );
    }
    for vm in ["vm1", "vm2"] {
        ensure!(
            vnic_all_drops(&s, vm) == vnic_all_drops(&base, vm),
            "{vm} drops: {s:#}"
        );
    }
    eprintln!(
        "af_xdp ring move: {FRAMES} frames each to vm1 and vm2, all delivered; out of order: vm1 {}, vm2 {}",
        reordered[0], reordered[1]
    );
    Ok(())
}
