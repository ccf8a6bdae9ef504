//! Tests for TSO/USO segmentation: every segment is checked against the
//! fixture spec with the reference checksum, never with the code under test.

use super::*;
use crate::offload::fixtures::{
    FrameSpec, L4Kind, XorShift, TCP_ACK, TCP_CWR, TCP_ECE, TCP_FIN, TCP_PSH,
};

fn u16v(v: usize) -> u16 {
    u16::try_from(v).unwrap()
}

/// The header a Linux guest sends with `spec`'s frame.
fn hdr_for(spec: &FrameSpec, gso_size: u16) -> VirtioNetHdr {
    let gso_type = match (spec.l4, spec.v6) {
        (L4Kind::Tcp, false) => VirtioNetHdr::GSO_TCPV4,
        (L4Kind::Tcp, true) => VirtioNetHdr::GSO_TCPV6,
        (L4Kind::Udp, _) => VirtioNetHdr::GSO_UDP_L4,
    };
    VirtioNetHdr {
        flags: VirtioNetHdr::NEEDS_CSUM,
        gso_type,
        hdr_len: u16v(spec.hlen()),
        gso_size,
        csum_start: u16v(spec.l4_off()),
        csum_offset: u16v(spec.csum_offset()),
        num_buffers: 0,
    }
}

/// Segments into an `out` of exactly `out_len` bytes, collecting copies.
fn run(frame: &[u8], hdr: &VirtioNetHdr, out_len: usize) -> Result<Vec<Vec<u8>>, OffloadError> {
    let mut out = vec![0u8; out_len];
    let mut segs = Vec::new();
    let n = segment(frame, hdr, &mut out, |s| segs.push(s.to_vec()));
    if n.is_err() {
        assert!(segs.is_empty(), "emitted before failing");
    }
    assert_eq!(n?, segs.len());
    Ok(segs)
}

fn one_segment_len(spec: &FrameSpec, gso_size: u16) -> usize {
    spec.hlen() + usize::from(gso_size).min(spec.payload_len)
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Copies of `b` with the byte ranges in `skip` zeroed: what must not
/// change between the original headers and a segment's.
fn masked(b: &[u8], skip: &[(usize, usize)]) -> Vec<u8> {
    let mut v = b.to_vec();
    for &(from, to) in skip {
        v[from..to].fill(0);
    }
    v
}

/// Checks everything the brief promises about `segs`, independently of
/// the code under test: offsets come from the spec, checksums from the
/// reference sum.
fn check_segments(spec: &FrameSpec, orig: &[u8], segs: &[Vec<u8>], gso_size: u16) {
    let gso = usize::from(gso_size);
    let (l3, l4, hlen) = (spec.l3(), spec.l4_off(), spec.hlen());
    let want_count = spec.payload_len.div_ceil(gso).max(1);
    assert_eq!(segs.len(), want_count, "{spec:?} gso {gso}");
    let mut payload = Vec::new();
    for (i, seg) in segs.iter().enumerate() {
        let ctx = format!("{spec:?} gso {gso} segment {i}");
        let (first, last) = (i == 0, i + 1 == segs.len());
        let n = seg.len() - hlen;
        assert!(n <= gso, "{ctx}: {n} payload bytes");
        if !last {
            assert_eq!(n, gso, "{ctx}: only the last may be short");
        }
        assert_eq!(seg[..l3], orig[..l3], "{ctx}: L2 header");
        if spec.v6 {
            assert_eq!(
                usize::from(be16(seg, l3 + 4)),
                seg.len() - l4,
                "{ctx}: payload length"
            );
            assert_eq!(
                masked(&seg[l3..l4], &[(4, 6)]),
                masked(&orig[l3..l4], &[(4, 6)]),
                "{ctx}"
            );
        } else {
            assert_eq!(
                usize::from(be16(seg, l3 + 2)),
                seg.len() - l3,
                "{ctx}: total length"
            );
            let id = spec.ip_id.wrapping_add(u16v(i));
            assert_eq!(be16(seg, l3 + 4), id, "{ctx}: ip id");
            assert!(spec.ip_csum_ok(seg), "{ctx}: IPv4 header checksum");
            let skip = [(2, 6), (10, 12)];
            assert_eq!(
                masked(&seg[l3..l4], &skip),
                masked(&orig[l3..l4], &skip),
                "{ctx}"
            );
        }
        match spec.l4 {
            L4Kind::Tcp => {
                let offset = u32::try_from(i * gso).unwrap();
                assert_eq!(
                    be32(seg, l4 + 4),
                    spec.seq.wrapping_add(offset),
                    "{ctx}: seq"
                );
                let mut flags = spec.tcp_flags;
                if !last {
                    flags &= !(TCP_FIN | TCP_PSH);
                }
                if !first {
                    flags &= !TCP_CWR;
                }
                assert_eq!(seg[l4 + 13], flags, "{ctx}: flags");
                let skip = [(4, 8), (13, 14), (16, 18)];
                assert_eq!(
                    masked(&seg[l4..hlen], &skip),
                    masked(&orig[l4..hlen], &skip),
                    "{ctx}"
                );
            }
            L4Kind::Udp => {
                assert_eq!(
                    usize::from(be16(seg, l4 + 4)),
                    seg.len() - l4,
                    "{ctx}: UDP length"
                );
                assert_eq!(seg[l4..l4 + 4], orig[l4..l4 + 4], "{ctx}: ports");
                assert_ne!(be16(seg, l4 + 6), 0, "{ctx}: UDP checksum 0 means none");
            }
        }
        assert!(spec.l4_csum_ok(seg), "{ctx}: L4 checksum");
        payload.extend_from_slice(&seg[hlen..]);
    }
    assert_eq!(
        payload,
        spec.payload(),
        "{spec:?} gso {gso}: reassembled payload"
    );
}

#[test]
fn tso_table() {
    let all_flags = TCP_ACK | TCP_PSH | TCP_FIN | TCP_CWR | TCP_ECE;
    let specs = [
        FrameSpec::v4(L4Kind::Tcp, 10_000),
        FrameSpec::v4(L4Kind::Tcp, 10_000).flags(all_flags),
        FrameSpec::v6(L4Kind::Tcp, 10_000),
        FrameSpec::v6(L4Kind::Tcp, 10_000).flags(all_flags),
        FrameSpec::v4(L4Kind::Tcp, 10_000).vlan(),
        FrameSpec::v6(L4Kind::Tcp, 10_000).vlan(),
        FrameSpec::v4(L4Kind::Tcp, 10_000).ip_options(12),
        FrameSpec::v4(L4Kind::Tcp, 10_000)
            .ip_options(40)
            .tcp_options(40)
            .vlan(),
        FrameSpec::v6(L4Kind::Tcp, 10_001).tcp_options(12),
    ];
    // (gso_size, segments for 10 000 bytes)
    for (gso, segs_10k) in [(1448u16, 7), (1000, 10)] {
        for spec in specs {
            let orig = spec.build_partial();
            let hdr = hdr_for(&spec, gso);
            let segs = run(&orig, &hdr, one_segment_len(&spec, gso)).unwrap();
            if spec.payload_len == 10_000 {
                assert_eq!(segs.len(), segs_10k);
            }
            check_segments(&spec, &orig, &segs, gso);

            // NEEDS_CSUM or not, whatever the checksum field holds, and
            // with or without ECN: the same segments.
            let mut garbage = spec.build();
            let c = spec.l4_off() + spec.csum_offset();
            garbage[c..c + 2].copy_from_slice(&[0xde, 0xad]);
            let variants = [
                (spec.build(), VirtioNetHdr { flags: 0, ..hdr }),
                (
                    garbage,
                    VirtioNetHdr {
                        flags: 0,
                        hdr_len: 0,
                        ..hdr
                    },
                ),
                (
                    orig.clone(),
                    VirtioNetHdr {
                        gso_type: hdr.gso_type | VirtioNetHdr::GSO_ECN,
                        ..hdr
                    },
                ),
                (
                    orig.clone(),
                    VirtioNetHdr {
                        hdr_len: u16v(spec.hlen() + 200),
                        ..hdr
                    },
                ),
            ];
            for (frame, hdr) in variants {
                assert_eq!(
                    run(&frame, &hdr, one_segment_len(&spec, gso)).unwrap(),
                    segs,
                    "{hdr:?}"
                );
            }
        }
    }
}

#[test]
fn uso_table() {
    for spec in [
        FrameSpec::v4(L4Kind::Udp, 10_000),
        FrameSpec::v6(L4Kind::Udp, 10_000).vlan(),
        FrameSpec::v4(L4Kind::Udp, 2801).ip_options(4),
    ] {
        for gso in [1400u16, 1000, 1] {
            let orig = spec.build_partial();
            let segs = run(&orig, &hdr_for(&spec, gso), one_segment_len(&spec, gso)).unwrap();
            check_segments(&spec, &orig, &segs, gso);
        }
    }
}

#[test]
fn edge_sizes_table() {
    // (spec, gso_size, segments)
    let cases = [
        (FrameSpec::v4(L4Kind::Tcp, 1448 * 5), 1448u16, 5),
        (FrameSpec::v6(L4Kind::Tcp, 1000 * 7), 1000, 7),
        (FrameSpec::v4(L4Kind::Tcp, 1449), 1448, 2),
        (FrameSpec::v4(L4Kind::Tcp, 500), 1448, 1),
        (FrameSpec::v6(L4Kind::Udp, 1448), 1448, 1),
        (FrameSpec::v4(L4Kind::Tcp, 0), 1448, 1),
        (FrameSpec::v4(L4Kind::Tcp, 65_535 - 40), 65_535, 1),
        (FrameSpec::v4(L4Kind::Tcp, 65_535 - 40), 1, 65_495),
        (
            FrameSpec::v4(L4Kind::Tcp, 3000).seq(u32::MAX - 1000),
            1448,
            3,
        ),
    ];
    for (spec, gso, count) in cases {
        let orig = spec.build_partial();
        let segs = run(&orig, &hdr_for(&spec, gso), one_segment_len(&spec, gso)).unwrap();
        assert_eq!(segs.len(), count, "{spec:?}");
        check_segments(&spec, &orig, &segs, gso);
        if count == 1 {
            // One segment is the frame with its checksum completed.
            assert_eq!(segs[0], spec.build(), "{spec:?}");
        }
    }
}

#[test]
fn ip_id_wraps() {
    let spec = FrameSpec {
        ip_id: 0xfffe,
        ..FrameSpec::v4(L4Kind::Tcp, 4000)
    };
    let segs = run(&spec.build(), &hdr_for(&spec, 1000), 2000).unwrap();
    let ids: Vec<u16> = segs.iter().map(|s| be16(s, 14 + 4)).collect();
    assert_eq!(ids, [0xfffe, 0xffff, 0, 1]);
    check_segments(&spec, &spec.build(), &segs, 1000);
}

#[test]
fn ethernet_padding_is_dropped() {
    let spec = FrameSpec::v4(L4Kind::Tcp, 3000);
    let mut frame = spec.build_partial();
    frame.extend_from_slice(&[0xee; 10]);
    let segs = run(&frame, &hdr_for(&spec, 1448), 2000).unwrap();
    check_segments(&spec, &frame, &segs, 1448);
}

#[test]
fn out_buffer_holds_one_segment() {
    let spec = FrameSpec::v6(L4Kind::Tcp, 5000).vlan();
    let hdr = hdr_for(&spec, 1448);
    let need = one_segment_len(&spec, 1448);
    assert!(run(&spec.build(), &hdr, need).is_ok());
    assert_eq!(
        run(&spec.build(), &hdr, need - 1),
        Err(OffloadError::OutTooSmall {
            need,
            got: need - 1
        })
    );
    assert_eq!(
        run(&spec.build(), &hdr, 0),
        Err(OffloadError::OutTooSmall { need, got: 0 })
    );
}

#[test]
fn malformed_table() {
    let tcp4 = FrameSpec::v4(L4Kind::Tcp, 3000);
    let tcp6 = FrameSpec::v6(L4Kind::Tcp, 3000);
    let udp4 = FrameSpec::v4(L4Kind::Udp, 3000);
    let (f4, f6, fu) = (tcp4.build(), tcp6.build(), udp4.build());
    let (h4, h6, hu) = (
        hdr_for(&tcp4, 1448),
        hdr_for(&tcp6, 1448),
        hdr_for(&udp4, 1448),
    );
    let with = |h: VirtioNetHdr, gso_type: u8| VirtioNetHdr { gso_type, ..h };
    let patch = |base: &[u8], at: usize, v: &[u8]| {
        let mut b = base.to_vec();
        b[at..at + v.len()].copy_from_slice(v);
        b
    };
    // A frame whose IP length ends inside the TCP header.
    let mut short_tcp = f4[..14 + 20 + 19].to_vec();
    short_tcp[16..18].copy_from_slice(&39u16.to_be_bytes());
    let bad_gso = |gso_type: u8, gso_size: u16| OffloadError::BadGso { gso_type, gso_size };
    let cases: Vec<(&str, Vec<u8>, VirtioNetHdr, OffloadError)> = vec![
        (
            "gso none",
            f4.clone(),
            with(h4, VirtioNetHdr::GSO_NONE),
            bad_gso(0, 1448),
        ),
        (
            "ufo",
            fu.clone(),
            with(hu, VirtioNetHdr::GSO_UDP),
            bad_gso(3, 1448),
        ),
        ("unknown gso 2", f4.clone(), with(h4, 2), bad_gso(2, 1448)),
        (
            "unknown gso 0x7f",
            f4.clone(),
            with(h4, 0x7f),
            bad_gso(0x7f, 1448),
        ),
        (
            "uso with ecn",
            fu.clone(),
            with(hu, 0x85),
            bad_gso(0x85, 1448),
        ),
        (
            "gso size 0",
            f4.clone(),
            VirtioNetHdr { gso_size: 0, ..h4 },
            bad_gso(1, 0),
        ),
        (
            "tcpv4 on ipv6",
            f6.clone(),
            with(h6, VirtioNetHdr::GSO_TCPV4),
            OffloadError::GsoVersionMismatch {
                gso_type: 1,
                ip_version: 6,
            },
        ),
        (
            "tcpv6 on ipv4",
            f4.clone(),
            with(h4, VirtioNetHdr::GSO_TCPV6),
            OffloadError::GsoVersionMismatch {
                gso_type: 4,
                ip_version: 4,
            },
        ),
        (
            "tcpv4 on udp",
            fu.clone(),
            with(hu, VirtioNetHdr::GSO_TCPV4),
            OffloadError::UnsupportedL4 { proto: 17 },
        ),
        (
            "uso on tcp",
            f4.clone(),
            with(h4, VirtioNetHdr::GSO_UDP_L4),
            OffloadError::UnsupportedL4 { proto: 6 },
        ),
        (
            "icmp",
            patch(&f4, 23, &[1]),
            h4,
            OffloadError::UnsupportedL4 { proto: 1 },
        ),
        (
            "ipv6 hop-by-hop",
            patch(&f6, 20, &[0]),
            h6,
            OffloadError::UnsupportedL4 { proto: 0 },
        ),
        (
            "hdr_len short of headers",
            f4.clone(),
            VirtioNetHdr { hdr_len: 53, ..h4 },
            OffloadError::HdrLen {
                hdr_len: 53,
                headers: 54,
                frame_len: f4.len(),
            },
        ),
        (
            "hdr_len past frame",
            f4.clone(),
            VirtioNetHdr {
                hdr_len: u16v(f4.len() + 1),
                ..h4
            },
            OffloadError::HdrLen {
                hdr_len: u16v(f4.len() + 1),
                headers: 54,
                frame_len: f4.len(),
            },
        ),
        (
            "tcp data offset 4",
            patch(&f4, 46, &[0x40]),
            VirtioNetHdr { hdr_len: 0, ..h4 },
            OffloadError::BadTcpDataOffset { data_offset: 4 },
        ),
        (
            "tcp data offset past ip end",
            patch(
                &patch(&f4[..14 + 20 + 40], 46, &[0xf0]),
                16,
                &60u16.to_be_bytes(),
            ),
            VirtioNetHdr { hdr_len: 0, ..h4 },
            OffloadError::Truncated {
                need: 14 + 20 + 60,
                got: 14 + 60,
            },
        ),
        (
            "tcp header cut",
            short_tcp,
            h4,
            OffloadError::Truncated { need: 54, got: 53 },
        ),
        (
            "arp",
            patch(&f4, 12, &[0x08, 0x06]),
            h4,
            OffloadError::NotIp { ethertype: 0x0806 },
        ),
        (
            "fragment",
            patch(&f4, 20, &[0x20]),
            h4,
            OffloadError::Fragment {
                offset: 0,
                more: true,
            },
        ),
        (
            "short frame",
            f4[..10].to_vec(),
            h4,
            OffloadError::Ethernet(crate::WireError::Truncated { need: 14, got: 10 }),
        ),
    ];
    for (name, frame, hdr, want) in cases {
        assert_eq!(run(&frame, &hdr, 4096), Err(want), "{name}");
    }
}

#[test]
fn every_prefix_is_an_error_not_a_panic() {
    for spec in [
        FrameSpec::v4(L4Kind::Tcp, 100)
            .vlan()
            .ip_options(8)
            .tcp_options(12),
        FrameSpec::v6(L4Kind::Udp, 100),
    ] {
        let frame = spec.build();
        let hdr = VirtioNetHdr {
            hdr_len: 0,
            ..hdr_for(&spec, 10)
        };
        for len in 0..frame.len() {
            assert!(
                run(&frame[..len], &hdr, 4096).is_err(),
                "{spec:?} len {len}"
            );
            // The same prefix with the IP length claiming just that much.
            let mut cut = frame[..len].to_vec();
            let l3 = spec.l3();
            if len >= spec.l4_off() {
                let (at, v) = if spec.v6 {
                    (l3 + 4, len - spec.l4_off())
                } else {
                    (l3 + 2, len - l3)
                };
                cut[at..at + 2].copy_from_slice(&u16v(v).to_be_bytes());
                let got = run(&cut, &hdr, 4096);
                assert_eq!(
                    got.is_ok(),
                    len >= spec.hlen(),
                    "{spec:?} len {len}: {got:?}"
                );
            }
        }
    }
}

#[test]
fn random_sizes_reassemble() {
    let mut rng = XorShift(0x2545_f491_4f6c_dd1d);
    for round in 0..300 {
        let l4 = if rng.next() % 3 == 0 {
            L4Kind::Udp
        } else {
            L4Kind::Tcp
        };
        let v6 = rng.next() % 2 == 0;
        let mut spec = if v6 {
            FrameSpec::v6(l4, 0)
        } else {
            FrameSpec::v4(l4, 0)
        };
        spec.vlan = rng.next() % 2 == 0;
        spec.ip_options = if v6 { 0 } else { 4 * rng.range(0, 10) };
        spec.tcp_options = if l4 == L4Kind::Tcp {
            4 * rng.range(0, 10)
        } else {
            0
        };
        spec.payload_len = rng.range(0, 20_000);
        spec.tcp_flags = u8::try_from(rng.next() & 0xff).unwrap();
        spec.seq = u32::try_from(rng.next() >> 32).unwrap();
        spec.ip_id = u16::try_from(rng.next() & 0xffff).unwrap();
        spec.seed = rng.next();
        let gso = u16v(rng.range(1, 9000));
        let orig = if round % 2 == 0 {
            spec.build_partial()
        } else {
            spec.build()
        };
        let hdr = hdr_for(&spec, gso);
        let segs = run(&orig, &hdr, one_segment_len(&spec, gso)).unwrap();
        check_segments(&spec, &orig, &segs, gso);
    }
}

#[test]
fn random_corruption_never_panics() {
    let mut rng = XorShift(0xdead_beef_cafe_f00d);
    let bases = [
        FrameSpec::v4(L4Kind::Tcp, 300)
            .vlan()
            .ip_options(8)
            .tcp_options(8),
        FrameSpec::v6(L4Kind::Tcp, 300),
        FrameSpec::v6(L4Kind::Udp, 300).vlan(),
    ];
    let mut ok = 0;
    for _ in 0..20_000 {
        let spec = bases[rng.range(0, bases.len() - 1)];
        let mut frame = spec.build();
        for _ in 0..rng.range(1, 4) {
            let at = rng.range(0, spec.hlen() - 1);
            frame[at] = u8::try_from(rng.next() & 0xff).unwrap();
        }
        frame.truncate(rng.range(spec.hlen() - 20, frame.len()));
        let hdr = VirtioNetHdr {
            gso_type: [1u8, 4, 5, 0x81, 0x84][rng.range(0, 4)],
            gso_size: u16v(rng.range(0, 400)),
            hdr_len: u16v(rng.range(0, 120)),
            ..VirtioNetHdr::default()
        };
        let out_len = rng.range(0, 600);
        if let Ok(segs) = run(&frame, &hdr, out_len) {
            ok += 1;
            assert!(segs.iter().all(|s| s.len() <= out_len));
        }
    }
    assert!(ok > 0, "corruption too heavy: nothing segmented");
}
