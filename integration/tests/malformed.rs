//! Malformed guest input through a real socket: every bad TX chain is completed with
//! used length 0 and counted, and the next good frame still flows; a read-only RX chain
//! is completed empty; an avail-index jump stops only that queue.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use quiver_integration::{vnic_drops, Quiverd};
use quiver_testdriver::{seq_frame, DriverConfig, Guest, QueueSel, RawDesc};

const MAC1: [u8; 6] = [0x52, 0x54, 0, 0, 0, 1];
const MAC2: [u8; 6] = [0x52, 0x54, 0, 0, 0, 2];
const WAIT: Duration = Duration::from_secs(5);
const NEXT: u16 = 1;
const WRITE: u16 = 2;
const INDIRECT: u16 = 4;

const CONFIG: &str = r#"
[[vnic]]
name = "vm1"
socket = "@DIR@/vm1.sock"
mac = "52:54:00:00:00:01"
mtu = 1500

[[vnic]]
name = "vm2"
socket = "@DIR@/vm2.sock"
mac = "52:54:00:00:00:02"
mtu = 1500
"#;

fn connect(q: &Quiverd, name: &str, cfg: DriverConfig) -> Result<Guest> {
    Guest::connect(&q.dir.path().join(format!("{name}.sock")), cfg, WAIT)
        .with_context(|| format!("connecting {name}"))
}

fn good_frame_flows(g1: &mut Guest, g2: &mut Guest, seq: u64) -> Result<()> {
    g1.send(0, &seq_frame(MAC2, MAC1, 5, seq, 100))?;
    let (_, f) = g2
        .recv_any(WAIT)?
        .context("good frame after a bad chain never arrived")?;
    ensure!(
        quiver_testdriver::parse_seq_frame(&f.data) == Some((5, seq)),
        "wrong frame"
    );
    Ok(())
}

/// A guest buffer holding a zero virtio header and a 100-byte frame to vm2.
fn frame_buf(g: &mut Guest, len: usize) -> Result<u64> {
    let gpa = g.alloc_buf(len as u64)?;
    let mut bytes = vec![0u8; 12];
    bytes.extend(seq_frame(MAC2, MAC1, 6, 0, len.saturating_sub(12).max(64)));
    bytes.truncate(len);
    g.write_mem(gpa, &bytes)?;
    Ok(gpa)
}

/// (name, indirect table contents, the chain, the drop counter it must raise)
type Case = (
    &'static str,
    Option<Vec<RawDesc>>,
    Vec<RawDesc>,
    &'static str,
);

#[test]
fn bad_tx_chains_are_completed_empty_and_counted() -> Result<()> {
    let q = Quiverd::start("malformed", CONFIG)?;
    let cfg = DriverConfig {
        indirect: true,
        ..DriverConfig::default()
    };
    let mut g1 = connect(
        &q,
        "vm1",
        DriverConfig {
            mac: MAC1,
            ..cfg.clone()
        },
    )?;
    let mut g2 = connect(
        &q,
        "vm2",
        DriverConfig {
            mac: MAC2,
            ..cfg.clone()
        },
    )?;
    let mem = g1.mem_size();
    let buf = frame_buf(&mut g1, 112)?;
    let big = frame_buf(&mut g1, 12 + 1600)?;
    let table = g1.alloc_buf(256)?;
    let d = |addr: u64, len: u32, flags: u16, next: Option<u16>| RawDesc {
        addr,
        len,
        flags,
        next,
    };
    let write_table =
        |g: &mut Guest, descs: &[RawDesc]| g.write_mem(table, &RawDesc::encode_table(descs));

    // (name, table contents for an indirect case, chain, counter)
    let cases: Vec<Case> = vec![
        (
            "write-only TX descriptor",
            None,
            vec![d(buf, 112, WRITE, None)],
            "bad_chain",
        ),
        (
            "address out of guest memory",
            None,
            vec![d(mem + 0x1000, 112, 0, None)],
            "bad_chain",
        ),
        (
            "address + length overflow",
            None,
            vec![d(u64::MAX - 16, 112, 0, None)],
            "bad_chain",
        ),
        ("zero length", None, vec![d(buf, 0, 0, None)], "bad_chain"),
        (
            "next >= queue size",
            None,
            vec![d(buf, 12, NEXT, Some(256 + 7))],
            "bad_chain",
        ),
        (
            "header shorter than virtio_net_hdr",
            None,
            vec![d(buf, 8, 0, None)],
            "bad_chain",
        ),
        (
            "frame over the MTU",
            None,
            vec![d(big, 12 + 1600, 0, None)],
            "oversize",
        ),
        (
            "descriptor loop (indirect)",
            Some(vec![
                d(buf, 12, NEXT, Some(1)),
                d(buf + 12, 50, NEXT, Some(0)),
            ]),
            vec![d(table, 32, INDIRECT, None)],
            "bad_chain",
        ),
        (
            "nested indirect table",
            Some(vec![
                d(buf, 12, NEXT, Some(1)),
                d(table, 32, INDIRECT, None),
            ]),
            vec![d(table, 32, INDIRECT, None)],
            "bad_chain",
        ),
        (
            "misaligned indirect table length",
            Some(vec![d(buf, 112, 0, None)]),
            vec![d(table, 24, INDIRECT, None)],
            "bad_chain",
        ),
        (
            "indirect table outside guest memory",
            None,
            vec![d(mem - 8, 32, INDIRECT, None)],
            "bad_chain",
        ),
    ];
    for (seq, (name, table_descs, chain, counter)) in (0u64..).zip(cases) {
        if let Some(t) = &table_descs {
            write_table(&mut g1, t)?;
        }
        let before = vnic_drops(&q.stats()?, "vm1", counter);
        let used_before = g1.used_entries(QueueSel::Tx(0)).len();
        let head = g1
            .post_raw(QueueSel::Tx(0), &chain)
            .with_context(|| name.to_string())?;
        // Earlier good frames' completions may be reaped in the same pass: wait for
        // this head specifically.
        let deadline = std::time::Instant::now() + WAIT;
        loop {
            let used = g1.used_entries(QueueSel::Tx(0));
            if used[used_before..].contains(&(u32::from(head), 0)) {
                break;
            }
            ensure!(
                std::time::Instant::now() < deadline,
                "{name}: chain {head} not completed with length 0: {:?}",
                &used[used_before..]
            );
            g1.wait_used(QueueSel::Tx(0), used.len() + 1, Duration::from_millis(100))?;
        }
        q.wait_stats(&format!("{name}: {counter} counted"), WAIT, |s| {
            vnic_drops(s, "vm1", counter) == before + 1
        })?;
        good_frame_flows(&mut g1, &mut g2, seq).with_context(|| name.to_string())?;
    }
    ensure!(
        q.log_text().contains("dropped chain"),
        "bad chains are logged (rate-limited)"
    );
    Ok(())
}

#[test]
fn read_only_rx_chain_is_completed_empty() -> Result<()> {
    let q = Quiverd::start("malformed-rx", CONFIG)?;
    let mut g1 = connect(
        &q,
        "vm1",
        DriverConfig {
            mac: MAC1,
            ..DriverConfig::default()
        },
    )?;
    // vm2 keeps 4 RX descriptors back and posts a device-readable chain with them.
    let mut g2 = connect(
        &q,
        "vm2",
        DriverConfig {
            mac: MAC2,
            rx_reserve: 4,
            ..DriverConfig::default()
        },
    )?;
    let buf = g2.alloc_buf(2048)?;
    let head = g2.post_raw(
        QueueSel::Rx(0),
        &[RawDesc {
            addr: buf,
            len: 2048,
            flags: 0,
            next: None,
        }],
    )?;
    // Enough frames to reach the bad chain behind the pre-posted buffers.
    let total = 300u64;
    for s in 0..total {
        g1.send(0, &seq_frame(MAC2, MAC1, 8, s, 80))?;
        if s % 16 == 15 {
            for _ in 0..16 {
                g2.recv_any(WAIT)?
                    .with_context(|| format!("frame near {s} lost"))?;
            }
            g1.reclaim_tx(0);
        }
    }
    while g2.recv_any(Duration::from_millis(500))?.is_some() {}
    ensure!(
        g2.used_entries(QueueSel::Rx(0))
            .contains(&(u32::from(head), 0)),
        "read-only RX chain {head} not completed with length 0"
    );
    q.wait_stats("rx bad_chain", WAIT, |s| {
        vnic_drops(s, "vm2", "bad_chain") == 1
    })?;
    let s = q.stats()?;
    ensure!(
        quiver_integration::vnic_total(&s, "vm2", "rx_packets") == total,
        "every frame still landed: {s:#}"
    );
    Ok(())
}

#[test]
fn avail_index_jump_stops_only_that_queue() -> Result<()> {
    let q = Quiverd::start("malformed-jump", CONFIG)?;
    let mut g1 = connect(
        &q,
        "vm1",
        DriverConfig {
            mac: MAC1,
            ..DriverConfig::default()
        },
    )?;
    let mut g2 = connect(
        &q,
        "vm2",
        DriverConfig {
            mac: MAC2,
            ..DriverConfig::default()
        },
    )?;
    good_frame_flows(&mut g1, &mut g2, 0)?;
    g1.corrupt_avail_idx(QueueSel::Tx(0), 1000)?;
    q.wait_stats("ring error counted", WAIT, |s| {
        s["vnics"]["vm1"]["ring_errors"].as_u64() == Some(1)
    })?;
    // The other direction and the other VNIC keep working.
    g2.send(0, &seq_frame(MAC1, MAC2, 3, 1, 100))?;
    let (_, f) = g1
        .recv_any(WAIT)?
        .context("vm2→vm1 stopped after vm1's TX ring broke")?;
    ensure!(quiver_testdriver::parse_seq_frame(&f.data) == Some((3, 1)));
    ensure!(q.log_text().contains("stopped"), "the stop is logged");
    Ok(())
}
