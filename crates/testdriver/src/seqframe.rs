//! Test frames carrying a stream id and a sequence number.
//!
//! Layout: Ethernet dst, src, EtherType 0x88b5 (IEEE 802 local experimental),
//! then magic "QVR1", stream id (u32 BE), sequence (u64 BE), then filler bytes
//! derived from the sequence number so corruption is detectable.

/// EtherType of sequence frames (IEEE 802 local experimental 1).
pub const SEQ_ETHERTYPE: u16 = 0x88b5;
/// Payload magic.
pub const SEQ_MAGIC: [u8; 4] = *b"QVR1";
/// Smallest frame `seq_frame` builds (without FCS).
pub const SEQ_MIN_LEN: usize = 64;
/// Largest frame `seq_frame` builds.
pub const SEQ_MAX_LEN: usize = 65535;

const HDR: usize = 14 + 4 + 4 + 8;

fn filler(seq: u64, i: usize) -> u8 {
    // Truncation intended: a cheap position- and sequence-dependent pattern.
    #[allow(clippy::cast_possible_truncation)]
    let b = (seq as u8) ^ (i as u8).wrapping_mul(31);
    b
}

/// Build a frame of `len` bytes (clamped to 64..=65535).
pub fn seq_frame(dst: [u8; 6], src: [u8; 6], stream: u32, seq: u64, len: usize) -> Vec<u8> {
    let len = len.clamp(SEQ_MIN_LEN, SEQ_MAX_LEN);
    let mut f = Vec::with_capacity(len);
    f.extend_from_slice(&dst);
    f.extend_from_slice(&src);
    f.extend_from_slice(&SEQ_ETHERTYPE.to_be_bytes());
    f.extend_from_slice(&SEQ_MAGIC);
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(&seq.to_be_bytes());
    for i in HDR..len {
        f.push(filler(seq, i));
    }
    f
}

/// Stream id and sequence number of a frame built by [`seq_frame`].
pub fn parse_seq_frame(frame: &[u8]) -> Option<(u32, u64)> {
    if frame.len() < HDR
        || frame[12..14] != SEQ_ETHERTYPE.to_be_bytes()
        || frame[14..18] != SEQ_MAGIC
    {
        return None;
    }
    let stream = u32::from_be_bytes(frame[18..22].try_into().ok()?);
    let seq = u64::from_be_bytes(frame[22..30].try_into().ok()?);
    Some((stream, seq))
}

/// Whether the filler of a sequence frame is intact (no corruption in transit).
pub fn seq_frame_intact(frame: &[u8]) -> bool {
    match parse_seq_frame(frame) {
        Some((_, seq)) => frame
            .iter()
            .enumerate()
            .skip(HDR)
            .all(|(i, &b)| b == filler(seq, i)),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: [u8; 6] = [2, 0, 0, 0, 0, 1];
    const B: [u8; 6] = [2, 0, 0, 0, 0, 2];

    #[test]
    fn round_trip() {
        for len in [0, 64, 65, 1514, 9000, 65535, 70000] {
            let f = seq_frame(A, B, 7, 0x1122_3344_5566_7788, len);
            assert_eq!(f.len(), len.clamp(64, 65535));
            assert_eq!(&f[0..6], &A);
            assert_eq!(&f[6..12], &B);
            assert_eq!(parse_seq_frame(&f), Some((7, 0x1122_3344_5566_7788)));
            assert!(seq_frame_intact(&f));
        }
    }

    #[test]
    fn rejects_other_frames() {
        let mut f = seq_frame(A, B, 1, 2, 64);
        assert_eq!(parse_seq_frame(&f[..29]), None);
        f[13] = 0;
        assert_eq!(parse_seq_frame(&f), None);
        let mut g = seq_frame(A, B, 1, 2, 64);
        g[14] = b'X';
        assert_eq!(parse_seq_frame(&g), None);
    }

    #[test]
    fn detects_corruption() {
        let mut f = seq_frame(A, B, 1, 2, 100);
        f[80] ^= 1;
        assert!(!seq_frame_intact(&f));
    }
}
