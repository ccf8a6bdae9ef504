//! The Internet checksum (RFC 1071).

/// The 16-bit one's complement sum of `data` (odd trailing byte padded with
/// zero, RFC 1071 §4.1), folded, not yet complemented.
pub fn ones_complement_sum(data: &[u8]) -> u16 {
    let mut sum: u64 = 0;
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum += u64::from(u16::from_be_bytes([c[0], c[1]]));
    }
    if let [last] = chunks.remainder() {
        sum += u64::from(u16::from_be_bytes([*last, 0]));
    }
    fold(sum)
}

fn fold(mut sum: u64) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    // The loop leaves at most 16 significant bits.
    #[allow(clippy::cast_possible_truncation)]
    let folded = sum as u16;
    folded
}

/// The checksum to store in a header whose checksum field is zero.
pub fn internet_checksum(data: &[u8]) -> u16 {
    !ones_complement_sum(data)
}

/// The checksum that should be stored, given the sum over the whole header
/// including the `stored` value (for error reports).
pub(crate) fn expected_checksum(sum_with_stored: u16, stored: u16) -> u16 {
    // One's complement subtraction: sum - stored = sum + !stored.
    !fold(u64::from(sum_with_stored) + u64::from(!stored))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc1071_example() {
        // RFC 1071 §3 worked example: sum of 0001 f203 f4f5 f6f7 = ddf2.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(ones_complement_sum(&data), 0xddf2);
        assert_eq!(internet_checksum(&data), !0xddf2);
    }

    #[test]
    fn odd_length_and_expected() {
        assert_eq!(ones_complement_sum(&[0x12, 0x34, 0x56]), 0x1234 + 0x5600);
        let mut data = [0x45u8, 0, 0, 0x1c, 0, 0, 0, 0];
        let c = internet_checksum(&data);
        data[6..8].copy_from_slice(&c.to_be_bytes());
        assert_eq!(ones_complement_sum(&data), 0xffff);
        data[6..8].copy_from_slice(&0x1111u16.to_be_bytes());
        assert_eq!(expected_checksum(ones_complement_sum(&data), 0x1111), c);
    }
}
