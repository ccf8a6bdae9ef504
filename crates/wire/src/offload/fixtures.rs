//! Test fixtures: frames built byte by byte and a reference checksum that
//! shares no code with the module under test.

// Test code: lengths here are small and chosen by the tests.
#![allow(clippy::cast_possible_truncation)]

/// The L4 protocol of a fixture frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum L4Kind {
    Tcp,
    Udp,
}

impl L4Kind {
    pub fn number(self) -> u8 {
        match self {
            Self::Tcp => 6,
            Self::Udp => 17,
        }
    }
}

pub const TCP_FIN: u8 = 0x01;
pub const TCP_PSH: u8 = 0x08;
pub const TCP_ACK: u8 = 0x10;
pub const TCP_ECE: u8 = 0x40;
pub const TCP_CWR: u8 = 0x80;

/// What to build: Ethernet [+ 802.1Q] + IPv4 (with options) or IPv6 +
/// TCP (with options) or UDP + a pseudo-random payload.
#[derive(Debug, Clone, Copy)]
pub struct FrameSpec {
    pub v6: bool,
    pub l4: L4Kind,
    pub payload_len: usize,
    pub vlan: bool,
    pub ip_options: usize,
    pub tcp_options: usize,
    pub tcp_flags: u8,
    pub seq: u32,
    pub ip_id: u16,
    pub seed: u64,
}

impl FrameSpec {
    pub fn v4(l4: L4Kind, payload_len: usize) -> Self {
        Self {
            v6: false,
            l4,
            payload_len,
            vlan: false,
            ip_options: 0,
            tcp_options: 0,
            tcp_flags: TCP_ACK | TCP_PSH,
            seq: 0x1000_0000,
            ip_id: 0x4242,
            seed: 0x9e37_79b9_7f4a_7c15,
        }
    }

    pub fn v6(l4: L4Kind, payload_len: usize) -> Self {
        Self {
            v6: true,
            ..Self::v4(l4, payload_len)
        }
    }

    pub fn vlan(self) -> Self {
        Self { vlan: true, ..self }
    }

    /// IPv4 options of `len` bytes (a multiple of 4, at most 40).
    pub fn ip_options(self, len: usize) -> Self {
        Self {
            ip_options: len,
            ..self
        }
    }

    /// TCP options of `len` bytes (a multiple of 4, at most 40).
    pub fn tcp_options(self, len: usize) -> Self {
        Self {
            tcp_options: len,
            ..self
        }
    }

    pub fn flags(self, tcp_flags: u8) -> Self {
        Self { tcp_flags, ..self }
    }

    pub fn seq(self, seq: u32) -> Self {
        Self { seq, ..self }
    }

    pub fn l3(&self) -> usize {
        if self.vlan {
            18
        } else {
            14
        }
    }

    pub fn l4_off(&self) -> usize {
        self.l3() + if self.v6 { 40 } else { 20 + self.ip_options }
    }

    pub fn l4_hlen(&self) -> usize {
        match self.l4 {
            L4Kind::Tcp => 20 + self.tcp_options,
            L4Kind::Udp => 8,
        }
    }

    /// Everything up to the payload.
    pub fn hlen(&self) -> usize {
        self.l4_off() + self.l4_hlen()
    }

    /// Where the L4 checksum field is, from the L4 header.
    pub fn csum_offset(&self) -> usize {
        match self.l4 {
            L4Kind::Tcp => 16,
            L4Kind::Udp => 6,
        }
    }

    pub fn payload(&self) -> Vec<u8> {
        let mut rng = XorShift(self.seed | 1);
        (0..self.payload_len).map(|_| rng.next() as u8).collect()
    }

    /// The frame with every checksum (IPv4 header, L4) correct.
    pub fn build(&self) -> Vec<u8> {
        let mut f = self.build_zero_csum();
        let (l4, c) = (self.l4_off(), self.l4_off() + self.csum_offset());
        let mut sum = !ref_sum(&[&self.pseudo_header(&f), &f[l4..]]);
        if sum == 0 && self.l4 == L4Kind::Udp {
            sum = 0xffff;
        }
        f[c..c + 2].copy_from_slice(&sum.to_be_bytes());
        f
    }

    /// The frame as a Linux guest hands it over with NEEDS_CSUM: the L4
    /// checksum field holds the folded pseudo-header sum (not complemented),
    /// as `tcp_v4_send_check` leaves it.
    pub fn build_partial(&self) -> Vec<u8> {
        let mut f = self.build_zero_csum();
        let c = self.l4_off() + self.csum_offset();
        let seed = ref_sum(&[&self.pseudo_header(&f)]);
        f[c..c + 2].copy_from_slice(&seed.to_be_bytes());
        f
    }

    fn build_zero_csum(&self) -> Vec<u8> {
        let mut f = vec![0x52, 0x54, 0, 0, 0, 2, 0x52, 0x54, 0, 0, 0, 1];
        if self.vlan {
            f.extend_from_slice(&[0x81, 0x00, 0x20, 0x64]);
        }
        let l4_len = self.l4_hlen() + self.payload_len;
        if self.v6 {
            f.extend_from_slice(&[0x86, 0xdd, 0x60, 0x01, 0x23, 0x45]);
            f.extend_from_slice(&(l4_len as u16).to_be_bytes());
            f.extend_from_slice(&[self.l4.number(), 64]);
            f.extend((0..16).map(|i| 0x20 + i as u8)); // src
            f.extend((0..16).map(|i| 0xfd - i as u8)); // dst
        } else {
            let ihl = 5 + self.ip_options / 4;
            let total = ihl * 4 + l4_len;
            f.extend_from_slice(&[0x08, 0x00, 0x40 | ihl as u8, 0x00]);
            f.extend_from_slice(&(total as u16).to_be_bytes());
            f.extend_from_slice(&self.ip_id.to_be_bytes());
            f.extend_from_slice(&[0x40, 0x00, 64, self.l4.number(), 0, 0]); // DF
            f.extend_from_slice(&[10, 0, 0, 1, 10, 0, 0, 2]);
            // NOPs then EOL: a valid option list of any length.
            f.extend(std::iter::repeat_n(1u8, self.ip_options.saturating_sub(1)));
            f.extend(std::iter::repeat_n(0u8, self.ip_options.min(1)));
            let l3 = self.l3();
            let c = !ref_sum(&[&f[l3..]]);
            f[l3 + 10..l3 + 12].copy_from_slice(&c.to_be_bytes());
        }
        match self.l4 {
            L4Kind::Tcp => {
                f.extend_from_slice(&[0x9c, 0x40, 0x00, 0x50]); // ports 40000 → 80
                f.extend_from_slice(&self.seq.to_be_bytes());
                f.extend_from_slice(&0xa5a5_0001u32.to_be_bytes()); // ack
                let doff = (5 + self.tcp_options / 4) as u8;
                f.extend_from_slice(&[doff << 4, self.tcp_flags, 0xff, 0xff, 0, 0, 0, 0]);
                f.extend(std::iter::repeat_n(1u8, self.tcp_options)); // NOPs
            }
            L4Kind::Udp => {
                f.extend_from_slice(&[0x9c, 0x40, 0x11, 0x94]); // 40000 → 4500
                f.extend_from_slice(&(l4_len as u16).to_be_bytes());
                f.extend_from_slice(&[0, 0]);
            }
        }
        f.extend_from_slice(&self.payload());
        f
    }

    /// The pseudo header of `frame` (RFC 9293 §3.1, RFC 8200 §8.1), taking
    /// the L4 length from the bytes after the L4 offset.
    pub fn pseudo_header(&self, frame: &[u8]) -> Vec<u8> {
        let l3 = self.l3();
        let l4_len = frame.len() - self.l4_off();
        let mut p = Vec::new();
        if self.v6 {
            p.extend_from_slice(&frame[l3 + 8..l3 + 40]);
            p.extend_from_slice(&(l4_len as u32).to_be_bytes());
            p.extend_from_slice(&[0, 0, 0, self.l4.number()]);
        } else {
            p.extend_from_slice(&frame[l3 + 12..l3 + 20]);
            p.extend_from_slice(&[0, self.l4.number()]);
            p.extend_from_slice(&(l4_len as u16).to_be_bytes());
        }
        p
    }

    /// Whether the L4 checksum of `frame` (laid out like this spec) verifies.
    pub fn l4_csum_ok(&self, frame: &[u8]) -> bool {
        ref_sum(&[&self.pseudo_header(frame), &frame[self.l4_off()..]]) == 0xffff
    }

    /// Whether the IPv4 header checksum of `frame` verifies (true for IPv6).
    pub fn ip_csum_ok(&self, frame: &[u8]) -> bool {
        self.v6 || ref_sum(&[&frame[self.l3()..self.l4_off()]]) == 0xffff
    }
}

/// RFC 1071 one's complement sum of the concatenation of `parts`, written
/// the slow, obvious way: big-endian 16-bit words, end-around carry.
pub fn ref_sum(parts: &[&[u8]]) -> u16 {
    let bytes: Vec<u8> = parts.iter().flat_map(|p| p.iter().copied()).collect();
    let mut sum: u64 = 0;
    for (i, b) in bytes.iter().enumerate() {
        sum += if i % 2 == 0 {
            u64::from(*b) << 8
        } else {
            u64::from(*b)
        };
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// Marsaglia's xorshift64: deterministic randomness without a dependency.
pub struct XorShift(pub u64);

impl XorShift {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// Uniform-ish in `lo..=hi`.
    pub fn range(&mut self, lo: usize, hi: usize) -> usize {
        lo + (self.next() % (hi - lo + 1) as u64) as usize
    }
}

#[test]
fn fixtures_are_self_consistent() {
    for spec in [
        FrameSpec::v4(L4Kind::Tcp, 101)
            .ip_options(40)
            .tcp_options(12)
            .vlan(),
        FrameSpec::v6(L4Kind::Udp, 33),
    ] {
        let f = spec.build();
        assert_eq!(f.len(), spec.hlen() + spec.payload_len);
        assert!(spec.ip_csum_ok(&f) && spec.l4_csum_ok(&f), "{spec:?}");
        assert!(!spec.l4_csum_ok(&spec.build_partial()));
    }
    // RFC 1071 §3 worked example.
    assert_eq!(
        ref_sum(&[&[0x00, 0x01, 0xf2], &[0x03, 0xf4, 0xf5, 0xf6, 0xf7]]),
        0xddf2
    );
}
