//! A tiny FxHash-style hasher for the switch's integer keys, and the packing
//! of (VLAN, MAC) into one `u64` key.
//!
//! The tables are keyed by small integers produced by the switch itself (a
//! MAC is 48 bits, a VID 12): SipHash's DoS resistance buys nothing when the
//! table of VNIC MACs is built from configuration, and the learner is
//! bounded. One multiply per word is what a per-frame lookup can afford.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use quiver_wire::MacAddr;

use crate::VlanId;

/// The multiplier of rustc's FxHash (a 64-bit odd constant close to 2^64/φ).
const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

/// FxHash: `hash = (hash.rotl(5) ^ word) * SEED` per word.
#[derive(Debug, Default, Clone, Copy)]
pub struct FxHasher {
    hash: u64,
}

impl FxHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(SEED);
    }
}

impl Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
    }
    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(i.into());
    }
    #[inline]
    fn write_u16(&mut self, i: u16) {
        self.add(i.into());
    }
    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.add(i.into());
    }
    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }
    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }
    /// One multiply leaves the low bits of the product depending only on the
    /// low bits of the key, and hashbrown picks the bucket from the low bits:
    /// keys differing only in the VLAN bits (48..60) would share a bucket.
    /// Fold the high half down and multiply again, then fold once more so the
    /// top bits (hashbrown's 7-bit tag) are mixed too.
    #[inline]
    fn finish(&self) -> u64 {
        let h = (self.hash ^ (self.hash >> 32)).wrapping_mul(SEED);
        h ^ (h >> 29)
    }
}

/// `BuildHasher` for [`FxHasher`].
pub type FxBuildHasher = BuildHasherDefault<FxHasher>;

/// A `HashMap` using [`FxHasher`].
pub type FxHashMap<K, V> = HashMap<K, V, FxBuildHasher>;

/// Packs (VLAN, MAC) as `vid << 48 | mac`: one integer compare per probe.
#[inline]
pub(crate) const fn mac_key(vlan: VlanId, mac: MacAddr) -> u64 {
    ((vlan as u64) << 48) | mac.to_u64()
}

/// Inverse of [`mac_key`].
pub(crate) const fn split_key(key: u64) -> (VlanId, MacAddr) {
    let b = key.to_be_bytes();
    (
        u16::from_be_bytes([b[0], b[1]]),
        MacAddr([b[2], b[3], b[4], b[5], b[6], b[7]]),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::hash::BuildHasher;

    #[test]
    fn key_roundtrip_table() {
        let cases = [
            (0, MacAddr([0x52, 0x54, 0, 0, 0, 1])),
            (4094, MacAddr::BROADCAST),
            (100, MacAddr::ZERO),
        ];
        for (vlan, mac) in cases {
            assert_eq!(split_key(mac_key(vlan, mac)), (vlan, mac));
        }
        assert_ne!(mac_key(1, MacAddr::ZERO), mac_key(2, MacAddr::ZERO));
    }

    #[test]
    fn spreads_keys_over_buckets_and_tags() {
        let b = FxBuildHasher::default();
        let mac = MacAddr([0x52, 0x54, 0, 0, 0, 1]);
        // (what varies, keys): each set of 256 keys must spread over both the
        // low 8 bits (bucket) and the top 7 bits (tag) of the hash.
        let sets: [(&str, Vec<u64>); 3] = [
            ("vlan", (0..256u16).map(|v| mac_key(v, mac)).collect()),
            (
                "last octet",
                (0..=255u8)
                    .map(|o| mac_key(10, MacAddr([2, 0, 0, 0, 0, o])))
                    .collect(),
            ),
            (
                "second octet",
                (0..=255u8)
                    .map(|o| mac_key(10, MacAddr([2, o, 0, 0, 0, 1])))
                    .collect(),
            ),
        ];
        for (name, keys) in sets {
            let low: HashSet<u64> = keys.iter().map(|k| b.hash_one(k) & 0xff).collect();
            let top: HashSet<u64> = keys.iter().map(|k| b.hash_one(k) >> 57).collect();
            assert!(low.len() > 128, "{name}: {} buckets", low.len());
            assert!(top.len() > 64, "{name}: {} tags", top.len());
        }
    }

    #[test]
    fn write_bytes_matches_words() {
        let mut a = FxHasher::default();
        a.write(&[1, 0, 0, 0, 0, 0, 0, 0, 2]);
        let mut b = FxHasher::default();
        b.write_u64(1);
        b.write_u64(2);
        assert_eq!(a.finish(), b.finish());
    }
}
