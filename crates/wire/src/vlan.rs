//! The IEEE 802.1Q tag control information (TCI).

/// The length of an 802.1Q tag: TPID (2) + TCI (2).
pub const VLAN_HLEN: usize = 4;

/// A decoded 802.1Q TCI (IEEE 802.1Q-2018 §9.6): priority code point, drop
/// eligible indicator and VLAN identifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct VlanTag {
    /// Priority code point, 0..=7.
    pub pcp: u8,
    /// Drop eligible indicator.
    pub dei: bool,
    /// VLAN identifier, 0..=4095 (0: priority tag only, 4095: reserved).
    pub vid: u16,
}

impl VlanTag {
    /// The largest VID usable for a VLAN (4095 is reserved, §9.6 Table 9-2).
    pub const MAX_VID: u16 = 4094;

    /// Decodes a TCI. Total: every u16 is a valid TCI.
    pub const fn from_tci(tci: u16) -> Self {
        Self {
            // `tci >> 13` is at most 7, so the narrowing is lossless.
            #[allow(clippy::cast_possible_truncation)]
            pcp: (tci >> 13) as u8,
            dei: tci & 0x1000 != 0,
            vid: tci & 0x0fff,
        }
    }

    /// Encodes the TCI; out-of-range `pcp`/`vid` bits are masked off.
    pub const fn to_tci(self) -> u16 {
        ((self.pcp as u16 & 0x7) << 13) | ((self.dei as u16) << 12) | (self.vid & 0x0fff)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tci_table() {
        let cases = [
            (
                0x0000,
                VlanTag {
                    pcp: 0,
                    dei: false,
                    vid: 0,
                },
            ),
            (
                0x0064,
                VlanTag {
                    pcp: 0,
                    dei: false,
                    vid: 100,
                },
            ),
            (
                0xa064,
                VlanTag {
                    pcp: 5,
                    dei: false,
                    vid: 100,
                },
            ),
            (
                0xf0ff,
                VlanTag {
                    pcp: 7,
                    dei: true,
                    vid: 0x0ff,
                },
            ),
            (
                0x1ffe,
                VlanTag {
                    pcp: 0,
                    dei: true,
                    vid: 4094,
                },
            ),
        ];
        for (tci, tag) in cases {
            assert_eq!(VlanTag::from_tci(tci), tag, "{tci:#06x}");
            assert_eq!(tag.to_tci(), tci, "{tag:?}");
        }
    }

    #[test]
    fn to_tci_masks_out_of_range() {
        let tag = VlanTag {
            pcp: 0xff,
            dei: false,
            vid: 0xffff,
        };
        assert_eq!(tag.to_tci(), 0xefff);
    }
}
