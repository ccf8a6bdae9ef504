//! IPv4/TCP test frames for the offload tests: built with the checksum left as a
//! guest leaves it for the device (CHECKSUM_PARTIAL), and checked on arrival.

use anyhow::{ensure, Result};

/// The one's-complement sum of `data` as 16-bit big-endian words, added to `acc`.
fn sum16(data: &[u8], mut acc: u32) -> u32 {
    for c in data.chunks(2) {
        let w = if c.len() == 2 {
            u16::from_be_bytes([c[0], c[1]])
        } else {
            u16::from(c[0]) << 8
        };
        acc += u32::from(w);
    }
    acc
}

fn fold(mut acc: u32) -> u16 {
    while acc >> 16 != 0 {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    u16::try_from(acc).unwrap_or(0)
}

/// An Ethernet/IPv4/TCP frame from `src` to `dst` (10.0.0.1:40000 → 10.0.0.2:5201,
/// PSH|ACK, sequence `seq`) carrying `payload`. The IPv4 header checksum is right;
/// the TCP checksum field holds the pseudo-header sum, as Linux leaves it for
/// CHECKSUM_PARTIAL.
pub fn tcp_frame(dst: [u8; 6], src: [u8; 6], seq: u32, payload: &[u8]) -> Vec<u8> {
    let mut f = dst.to_vec();
    f.extend_from_slice(&src);
    f.extend_from_slice(&[0x08, 0x00]);
    let total = u16::try_from(20 + 20 + payload.len()).unwrap_or(u16::MAX);
    let mut ip = vec![
        0x45, 0, 0, 0, 0x12, 0x34, 0x40, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2,
    ];
    ip[2..4].copy_from_slice(&total.to_be_bytes());
    let c = !fold(sum16(&ip, 0));
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    f.extend_from_slice(&ip);
    let mut tcp = vec![0u8; 20];
    tcp[0..2].copy_from_slice(&40000u16.to_be_bytes());
    tcp[2..4].copy_from_slice(&5201u16.to_be_bytes());
    tcp[4..8].copy_from_slice(&seq.to_be_bytes());
    tcp[12] = 5 << 4;
    tcp[13] = 0x18; // PSH|ACK
    tcp[14..16].copy_from_slice(&64240u16.to_be_bytes());
    let l4_len = u32::try_from(20 + payload.len()).unwrap_or(0);
    let pseudo = sum16(&[10, 0, 0, 1, 10, 0, 0, 2], 0) + 6 + l4_len;
    tcp[16..18].copy_from_slice(&fold(pseudo).to_be_bytes());
    f.extend_from_slice(&tcp);
    f.extend_from_slice(payload);
    f
}

/// Verifies the IPv4 header and TCP checksums of a received frame; returns its
/// sequence number and payload.
pub fn check_tcp(f: &[u8]) -> Result<(u32, Vec<u8>)> {
    ensure!(f.len() >= 54 && f[12..14] == [0x08, 0x00], "not IPv4");
    let ip = &f[14..34];
    ensure!(fold(sum16(ip, 0)) == 0xffff, "bad IPv4 header checksum");
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    ensure!(
        14 + total <= f.len() && total >= 40,
        "IPv4 length {total} of a {}-byte frame",
        f.len()
    );
    let l4 = &f[34..14 + total];
    let pseudo = sum16(&ip[12..20], 0) + 6 + u32::try_from(l4.len()).unwrap_or(0);
    ensure!(fold(sum16(l4, pseudo)) == 0xffff, "bad TCP checksum");
    let seq = u32::from_be_bytes([l4[4], l4[5], l4[6], l4[7]]);
    Ok((seq, l4[20..].to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_built_frame_checks_once_its_tcp_checksum_is_finished() {
        let mut f = tcp_frame([2; 6], [4; 6], 7, b"quiver");
        // As built, the field holds only the pseudo-header sum: not a valid checksum.
        assert!(check_tcp(&f).is_err());
        // Finish it as a device would: the complement of the sum over the segment,
        // the field's partial sum included.
        let c = !fold(sum16(&f[34..], 0));
        f[50..52].copy_from_slice(&c.to_be_bytes());
        let (seq, payload) = check_tcp(&f).expect("valid");
        assert_eq!((seq, payload.as_slice()), (7, &b"quiver"[..]));
        f[56] ^= 1;
        assert!(check_tcp(&f).is_err(), "a flipped payload bit is caught");
    }
}
