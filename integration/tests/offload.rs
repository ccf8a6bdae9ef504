//! Checksum and segmentation offloads guest to guest: a TSO super-frame reaches a
//! guest that negotiated GUEST_TSO4 as is (one frame, header kept), and a guest that
//! did not as MSS-sized segments with valid checksums; a partial checksum is completed
//! for a guest without GUEST_CSUM.

use std::time::Duration;

use anyhow::{ensure, Context, Result};
use quiver_integration::tcp::{check_tcp, tcp_frame};
use quiver_integration::{vnic_all_drops, Quiverd};
use quiver_testdriver::{DriverConfig, Guest, TxOpts};

const MAC1: [u8; 6] = [0x52, 0x54, 0, 0, 0, 1];
const MAC2: [u8; 6] = [0x52, 0x54, 0, 0, 0, 2];
const WAIT: Duration = Duration::from_secs(5);

const CSUM: u64 = 1 << 0;
const GUEST_CSUM: u64 = 1 << 1;
const GUEST_TSO4: u64 = 1 << 7;
const HOST_TSO4: u64 = 1 << 11;

const CONFIG: &str = r#"
[[vnic]]
name = "vm1"
socket = "@DIR@/vm1.sock"
mac = "52:54:00:00:00:01"

[[vnic]]
name = "vm2"
socket = "@DIR@/vm2.sock"
mac = "52:54:00:00:00:02"
"#;

fn hdr(flags: u8, gso_type: u8, hdr_len: u16, gso_size: u16) -> [u8; 12] {
    let mut h = [0u8; 12];
    h[0] = flags;
    h[1] = gso_type;
    h[2..4].copy_from_slice(&hdr_len.to_le_bytes());
    h[4..6].copy_from_slice(&gso_size.to_le_bytes());
    h[6..8].copy_from_slice(&34u16.to_le_bytes()); // csum_start: the TCP header
    h[8..10].copy_from_slice(&16u16.to_le_bytes()); // csum_offset: TCP checksum
    h
}

fn guests(q: &Quiverd, rx_features: u64) -> Result<(Guest, Guest)> {
    let g1 = Guest::connect(
        &q.dir.path().join("vm1.sock"),
        DriverConfig {
            mac: MAC1,
            extra_features: CSUM | HOST_TSO4,
            mem_size: 32 << 20,
            ..DriverConfig::default()
        },
        WAIT,
    )?;
    let g2 = Guest::connect(
        &q.dir.path().join("vm2.sock"),
        DriverConfig {
            mac: MAC2,
            extra_features: rx_features,
            mem_size: 32 << 20,
            ..DriverConfig::default()
        },
        WAIT,
    )?;
    Ok((g1, g2))
}

fn payload(n: usize) -> Vec<u8> {
    (0..n)
        .map(|i| u8::try_from(i * 7 % 251).unwrap_or(0))
        .collect()
}

#[test]
fn tso_frame_kept_for_a_tso_guest_and_segmented_for_another() -> Result<()> {
    let data = payload(20_000);
    let frame = tcp_frame(MAC2, MAC1, 1000, &data);
    let tso = hdr(1, 1, 54, 1448);
    let opts = TxOpts {
        hdr: tso,
        split_at: vec![12 + 54, 12 + 54 + 4096],
        indirect: false,
    };

    // A receiver with GUEST_CSUM|GUEST_TSO4 gets the super-frame and its header.
    let q = Quiverd::start("tso-keep", CONFIG)?;
    let (mut g1, mut g2) = guests(&q, CSUM | GUEST_CSUM | GUEST_TSO4)?;
    g1.send_opts(0, &frame, &opts)?;
    let (_, f) = g2.recv_any(WAIT)?.context("super-frame lost")?;
    ensure!(
        f.data == frame,
        "super-frame changed on the way ({} bytes)",
        f.data.len()
    );
    ensure!(
        f.hdr[1] == 1 && f.hdr[4..6] == 1448u16.to_le_bytes(),
        "GSO header lost: {:?}",
        f.hdr
    );
    ensure!(f.num_buffers > 1, "a 20 kB frame in one 2 kB buffer?");
    drop((g1, g2));
    drop(q);

    // A receiver without offloads gets MSS-sized segments, each checksummed.
    let q = Quiverd::start("tso-seg", CONFIG)?;
    let (mut g1, mut g2) = guests(&q, 0)?;
    g1.send_opts(0, &frame, &opts)?;
    let mut got = Vec::new();
    let mut next_seq = 1000u32;
    while got.len() < data.len() {
        let (_, f) = g2
            .recv_any(WAIT)?
            .with_context(|| format!("segment at {} lost", got.len()))?;
        ensure!(
            f.hdr[0] == 0 && f.hdr[1] == 0,
            "segment with offload flags {:?}",
            f.hdr
        );
        ensure!(
            f.data.len() <= 14 + 40 + 1448,
            "segment of {} bytes",
            f.data.len()
        );
        let (seq, p) = check_tcp(&f.data)?;
        ensure!(seq == next_seq, "seq {seq} where {next_seq} was expected");
        next_seq += u32::try_from(p.len()).unwrap_or(0);
        got.extend(p);
    }
    ensure!(got == data, "payload differs after segmentation");
    let s = q.stats()?;
    ensure!(vnic_all_drops(&s, "vm2") == 0, "drops: {s:#}");
    Ok(())
}

#[test]
fn partial_checksum_is_completed_for_a_guest_without_guest_csum() -> Result<()> {
    let q = Quiverd::start("csum", CONFIG)?;
    let (mut g1, mut g2) = guests(&q, 0)?;
    let data = payload(999);
    let frame = tcp_frame(MAC2, MAC1, 77, &data);
    g1.send_opts(
        0,
        &frame,
        &TxOpts {
            hdr: hdr(1, 0, 0, 0),
            ..TxOpts::default()
        },
    )?;
    let (_, f) = g2.recv_any(WAIT)?.context("frame lost")?;
    let (seq, p) = check_tcp(&f.data)?;
    ensure!(seq == 77 && p == data, "frame changed");
    // A guest with GUEST_CSUM would get NEEDS_CSUM instead; this one must not.
    ensure!(
        f.hdr[0] & 1 == 0,
        "NEEDS_CSUM passed to a guest without GUEST_CSUM"
    );
    Ok(())
}
