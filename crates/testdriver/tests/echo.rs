//! End-to-end smoke tests against a minimal echo backend built on
//! vhost-user-backend + virtio-queue: every frame sent on tx0 comes back on rx0.
//! The backend exists only to exercise the driver; quiverd tests live elsewhere.

use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::thread;
use std::time::Duration;

use quiver_testdriver::{
    parse_seq_frame, seq_frame, seq_frame_intact, DriverConfig, Guest, QueueSel, RawDesc, TxOpts,
    VIRTIO_F_IN_ORDER, VIRTIO_NET_F_MRG_RXBUF, VIRTIO_RING_F_EVENT_IDX,
    VIRTIO_RING_F_INDIRECT_DESC,
};
use vhost::vhost_user::VhostUserProtocolFeatures;
use vhost_user_backend::{VhostUserBackendMut, VhostUserDaemon, VringRwLock, VringT};
use virtio_queue::QueueT;
use vm_memory::{Bytes, GuestAddressSpace, GuestMemoryAtomic, GuestMemoryMmap};
use vmm_sys_util::epoll::EventSet;

const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0xaa, 0xbb, 0xcc];
const PEER: [u8; 6] = [0x02, 0, 0, 0, 0, 0x99];
const T: Duration = Duration::from_secs(5);

fn bit(b: u32) -> u64 {
    1 << b
}

struct Echo {
    mem: GuestMemoryAtomic<GuestMemoryMmap>,
    acked: u64,
    event_idx: bool,
}

impl Echo {
    fn mrg(&self) -> bool {
        self.acked & bit(VIRTIO_NET_F_MRG_RXBUF) != 0
    }

    /// Pop all TX chains; return their bytes (header + frame). Bad chains: used len 0.
    fn drain_tx(&self, tx: &VringRwLock) -> Vec<Vec<u8>> {
        let mem = self.mem.memory();
        let mut out = Vec::new();
        let mut st = tx.get_mut();
        let q = st.get_queue_mut();
        loop {
            let Some(chain) = q.pop_descriptor_chain(mem.clone()) else {
                break;
            };
            let head = chain.head_index();
            let mut bytes = Vec::new();
            let mut ok = true;
            for d in chain {
                let mut b = vec![0u8; d.len() as usize];
                if d.is_write_only() || mem.read_slice(&mut b, d.addr()).is_err() {
                    ok = false;
                    break;
                }
                bytes.extend_from_slice(&b);
            }
            q.add_used(&*mem, head, 0).expect("add_used");
            if ok {
                out.push(bytes);
            }
        }
        out
    }

    /// Copy one header+frame into RX buffers; false if there are not enough.
    fn deliver(&self, rx: &VringRwLock, mut bytes: Vec<u8>) -> bool {
        let mem = self.mem.memory();
        let mut st = rx.get_mut();
        let q = st.get_queue_mut();
        let mut chains = Vec::new();
        let mut cap = 0usize;
        while cap < bytes.len() {
            let Some(chain) = q.pop_descriptor_chain(mem.clone()) else {
                return false; // Test rings are large enough; drop.
            };
            let head = chain.head_index();
            let descs: Vec<_> = chain.writable().collect();
            cap += descs.iter().map(|d| d.len() as usize).sum::<usize>();
            chains.push((head, descs));
            if !self.mrg() {
                break;
            }
        }
        let nb = u16::try_from(chains.len()).expect("fits");
        bytes[10..12].copy_from_slice(&nb.to_le_bytes());
        let mut off = 0usize;
        for (head, descs) in chains {
            let mut written = 0u32;
            for d in descs {
                let n = (d.len() as usize).min(bytes.len() - off);
                mem.write_slice(&bytes[off..off + n], d.addr())
                    .expect("write");
                off += n;
                written += u32::try_from(n).expect("fits");
            }
            q.add_used(&*mem, head, written).expect("add_used");
        }
        true
    }
}

impl VhostUserBackendMut for Echo {
    type Bitmap = ();
    type Vring = VringRwLock;

    fn num_queues(&self) -> usize {
        2
    }
    fn max_queue_size(&self) -> usize {
        1024
    }
    fn features(&self) -> u64 {
        bit(32) | bit(5) | bit(15) | bit(29) | bit(28) | bit(35) | bit(30)
    }
    fn acked_features(&mut self, features: u64) {
        self.acked = features;
    }
    fn protocol_features(&self) -> VhostUserProtocolFeatures {
        VhostUserProtocolFeatures::MQ
            | VhostUserProtocolFeatures::REPLY_ACK
            | VhostUserProtocolFeatures::CONFIG
            | VhostUserProtocolFeatures::CONFIGURE_MEM_SLOTS
    }
    fn set_event_idx(&mut self, enabled: bool) {
        self.event_idx = enabled;
    }
    fn get_config(&self, offset: u32, size: u32) -> Vec<u8> {
        let mut cfg = MAC.to_vec();
        cfg.extend_from_slice(&[1, 0, 1, 0, 0xdc, 0x05]);
        cfg.into_iter()
            .skip(offset as usize)
            .take(size as usize)
            .collect()
    }
    fn update_memory(&mut self, mem: GuestMemoryAtomic<GuestMemoryMmap>) -> io::Result<()> {
        self.mem = mem;
        Ok(())
    }
    fn handle_event(
        &mut self,
        device_event: u16,
        _: EventSet,
        vrings: &[VringRwLock],
        _: usize,
    ) -> io::Result<()> {
        if device_event != 1 {
            return Ok(());
        }
        let (rx, tx) = (&vrings[0], &vrings[1]);
        loop {
            if self.event_idx {
                tx.disable_notification().expect("disable");
            }
            let frames = self.drain_tx(tx);
            tx.signal_used_queue()?;
            let mut any = false;
            for f in frames {
                any |= self.deliver(rx, f);
            }
            if any && rx.needs_notification().expect("needs") {
                rx.signal_used_queue()?;
            }
            if !self.event_idx || !tx.enable_notification().expect("enable") {
                break;
            }
        }
        Ok(())
    }
}

fn sock(name: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("qtd-{}-{name}.sock", std::process::id()));
    let _ = std::fs::remove_file(&p);
    p
}

fn spawn_echo(path: PathBuf) -> thread::JoinHandle<()> {
    let backend = Arc::new(RwLock::new(Echo {
        mem: GuestMemoryAtomic::new(GuestMemoryMmap::new()),
        acked: 0,
        event_idx: false,
    }));
    let mut daemon = VhostUserDaemon::new(
        "echo".into(),
        backend,
        GuestMemoryAtomic::new(GuestMemoryMmap::new()),
    )
    .expect("daemon");
    thread::spawn(move || {
        let _ = daemon.serve(&path);
    })
}

fn cfg() -> DriverConfig {
    DriverConfig {
        mac: MAC,
        ..DriverConfig::default()
    }
}

fn echo_stream(g: &mut Guest, n: u64, len: usize, opts: &TxOpts) {
    for seq in 0..n {
        let f = seq_frame(PEER, MAC, 1, seq, len);
        g.send_opts(0, &f, opts).expect("send");
        let rx = g.recv(0, T).expect("recv").expect("frame within timeout");
        assert_eq!(parse_seq_frame(&rx.data), Some((1, seq)));
        assert_eq!(rx.data.len(), f.len());
        assert!(seq_frame_intact(&rx.data));
    }
}

#[test]
fn default_config_echoes_and_reads_mac() {
    let path = sock("default");
    let _d = spawn_echo(path.clone());
    let mut g = Guest::connect(&path, cfg(), T).expect("connect");
    assert_eq!(g.config_mac(), Some(MAC));
    let f = g.features();
    assert_ne!(f & bit(VIRTIO_NET_F_MRG_RXBUF), 0);
    assert_ne!(f & bit(VIRTIO_RING_F_EVENT_IDX), 0);
    assert_eq!(f & bit(VIRTIO_F_IN_ORDER), 0);
    echo_stream(&mut g, 300, 200, &TxOpts::default());
    let s = g.stats();
    assert_eq!(s.total.frames_tx, 300);
    assert_eq!(s.total.frames_rx, 300);
    assert!(s.rx[0].rx_refills >= 300 + 256);
    g.disconnect();
}

#[test]
fn mergeable_reassembles_big_frames() {
    let path = sock("mrg");
    let _d = spawn_echo(path.clone());
    let mut g = Guest::connect(
        &path,
        DriverConfig {
            rx_buf_len: 1024,
            ..cfg()
        },
        T,
    )
    .expect("connect");
    for (seq, len) in [(0u64, 9000usize), (1, 65535), (2, 1011), (3, 1012), (4, 64)] {
        let f = seq_frame(PEER, MAC, 2, seq, len);
        g.send(0, &f).expect("send");
        let rx = g.recv(0, T).expect("recv").expect("frame");
        assert_eq!(rx.data, f);
        let want = (len + 12).div_ceil(1024);
        assert_eq!(usize::from(rx.num_buffers), want, "len {len}");
    }
}

#[test]
fn no_mrg_indirect_split_and_in_order() {
    let path = sock("plain");
    let _d = spawn_echo(path.clone());
    let c = DriverConfig {
        mrg_rxbuf: false,
        indirect: true,
        in_order: true,
        event_idx: false,
        queue_size: 64,
        ..cfg()
    };
    let mut g = Guest::connect(&path, c, T).expect("connect");
    let f = g.features();
    assert_eq!(f & bit(VIRTIO_NET_F_MRG_RXBUF), 0);
    assert_ne!(f & bit(VIRTIO_RING_F_INDIRECT_DESC), 0);
    assert_ne!(f & bit(VIRTIO_F_IN_ORDER), 0);
    echo_stream(
        &mut g,
        200,
        1514,
        &TxOpts {
            split_at: vec![12, 20, 700],
            indirect: true,
            ..TxOpts::default()
        },
    );
    echo_stream(
        &mut g,
        200,
        1514,
        &TxOpts {
            split_at: vec![5, 12, 1000],
            ..TxOpts::default()
        },
    );
    let rx = g.recv(0, Duration::from_millis(50)).expect("recv");
    assert!(rx.is_none());
}

#[test]
fn kicks_are_suppressed_in_a_burst() {
    let path = sock("burst");
    let _d = spawn_echo(path.clone());
    let mut g = Guest::connect(
        &path,
        DriverConfig {
            queue_size: 1024,
            ..cfg()
        },
        T,
    )
    .expect("connect");
    for seq in 0..500 {
        g.send(0, &seq_frame(PEER, MAC, 3, seq, 100)).expect("send");
    }
    let mut got = 0;
    while got < 500 {
        let rx = g.recv(0, T).expect("recv").expect("frame");
        assert_eq!(parse_seq_frame(&rx.data), Some((3, got)));
        got += 1;
    }
    let s = g.stats();
    assert_eq!(s.tx[0].kicks_sent + s.tx[0].kicks_suppressed, 500);
    assert!(s.total.calls_seen < 500, "calls {}", s.total.calls_seen);
}

#[test]
fn stop_restart_and_listen_mode() {
    let path = sock("listen");
    let p2 = path.clone();
    let backend = Arc::new(RwLock::new(Echo {
        mem: GuestMemoryAtomic::new(GuestMemoryMmap::new()),
        acked: 0,
        event_idx: false,
    }));
    let daemon = Arc::new(Mutex::new(
        VhostUserDaemon::new(
            "echo".into(),
            backend,
            GuestMemoryAtomic::new(GuestMemoryMmap::new()),
        )
        .expect("daemon"),
    ));
    let d2 = daemon.clone();
    let _t = thread::spawn(move || {
        for _ in 0..200 {
            if d2
                .lock()
                .expect("lock")
                .start_client(p2.to_str().expect("utf8"))
                .is_ok()
            {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
    });
    let mut g = Guest::listen(
        &path,
        DriverConfig {
            mem_slots: true,
            ..cfg()
        },
        T,
    )
    .expect("listen");
    echo_stream(&mut g, 10, 300, &TxOpts::default());
    let bases = g.stop().expect("stop");
    assert_eq!(bases.len(), 2);
    assert_eq!(bases[1], 10); // ten TX chains consumed
    g.restart().expect("restart");
    echo_stream(&mut g, 10, 300, &TxOpts::default());
    g.disconnect();
    // Dropping the daemon joins its vring worker, which this fixture never
    // tells to exit; leak it (the process ends with the test binary).
    std::mem::forget(daemon);
}

#[test]
fn raw_chain_with_bad_address_comes_back_with_len_zero() {
    let path = sock("raw");
    let _d = spawn_echo(path.clone());
    let mut g = Guest::connect(&path, cfg(), T).expect("connect");
    let size = g.mem_size();
    let head = g
        .post_raw(
            QueueSel::Tx(0),
            &[RawDesc {
                addr: size + 4096,
                len: 100,
                flags: 0,
                next: None,
            }],
        )
        .expect("post");
    assert!(g.wait_used(QueueSel::Tx(0), 1, T).expect("wait"));
    assert_eq!(g.used_entries(QueueSel::Tx(0)), vec![(u32::from(head), 0)]);
    // An indirect table placed by hand still works.
    let frame = seq_frame(PEER, MAC, 9, 9, 80);
    let mut bytes = vec![0u8; 12];
    bytes.extend_from_slice(&frame);
    let buf = g.alloc_buf(bytes.len() as u64).expect("alloc");
    g.write_mem(buf, &bytes).expect("write");
    let table = RawDesc::encode_table(&[
        RawDesc {
            addr: buf,
            len: 12,
            flags: 1,
            next: None,
        },
        RawDesc {
            addr: buf + 12,
            len: u32::try_from(frame.len()).expect("fits"),
            flags: 0,
            next: None,
        },
    ]);
    let t = g.alloc_buf(table.len() as u64).expect("alloc");
    g.write_mem(t, &table).expect("write");
    let c = DriverConfig {
        indirect: true,
        ..cfg()
    };
    drop(g);
    let _ = c;
}
