//! Per-queue packet, byte and drop counters.

use std::iter::Sum;
use std::ops::{Add, AddAssign};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::ser::SerializeMap;

use crate::DropReason;

/// The counters of one queue (or of one global scope), written by the single
/// worker that owns the queue and read by the control path.
///
/// Workers add once per burst, so `Relaxed` suffices: the counters order
/// nothing, and a reader only needs each value to be eventually current.
/// Aligned to its own cache line so two queues' workers never false-share.
#[derive(Debug)]
#[repr(align(64))]
pub struct QueueCounters {
    rx_packets: AtomicU64,
    rx_bytes: AtomicU64,
    tx_packets: AtomicU64,
    tx_bytes: AtomicU64,
    drops: [AtomicU64; DropReason::COUNT],
}

impl Default for QueueCounters {
    fn default() -> Self {
        Self::new()
    }
}

impl QueueCounters {
    /// All zero.
    pub fn new() -> Self {
        Self {
            rx_packets: AtomicU64::new(0),
            rx_bytes: AtomicU64::new(0),
            tx_packets: AtomicU64::new(0),
            tx_bytes: AtomicU64::new(0),
            drops: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }

    /// Counts received frames.
    #[inline]
    pub fn add_rx(&self, packets: u64, bytes: u64) {
        self.rx_packets.fetch_add(packets, Ordering::Relaxed);
        self.rx_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Counts transmitted frames.
    #[inline]
    pub fn add_tx(&self, packets: u64, bytes: u64) {
        self.tx_packets.fetch_add(packets, Ordering::Relaxed);
        self.tx_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Counts `n` frames dropped for `reason`.
    #[inline]
    pub fn add_drop(&self, reason: DropReason, n: u64) {
        self.drops[reason.index()].fetch_add(n, Ordering::Relaxed);
    }

    /// The current values (each read individually; not an atomic cut).
    pub fn snapshot(&self) -> CounterSnapshot {
        CounterSnapshot {
            rx_packets: self.rx_packets.load(Ordering::Relaxed),
            rx_bytes: self.rx_bytes.load(Ordering::Relaxed),
            tx_packets: self.tx_packets.load(Ordering::Relaxed),
            tx_bytes: self.tx_bytes.load(Ordering::Relaxed),
            drops: std::array::from_fn(|i| self.drops[i].load(Ordering::Relaxed)),
        }
    }
}

/// Plain counter values. Sums with `+` (per-queue → per-VNIC totals).
/// Serializes as `{rx_packets, rx_bytes, tx_packets, tx_bytes, drops: {name: n}}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct CounterSnapshot {
    /// Frames received.
    pub rx_packets: u64,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Frames transmitted.
    pub tx_packets: u64,
    /// Bytes transmitted.
    pub tx_bytes: u64,
    /// Drops, indexed by [`DropReason::index`].
    #[serde(serialize_with = "serialize_drops")]
    pub drops: [u64; DropReason::COUNT],
}

impl CounterSnapshot {
    /// Drops for one reason.
    pub const fn drop_count(&self, reason: DropReason) -> u64 {
        self.drops[reason.index()]
    }

    /// Drops for all reasons.
    pub fn total_drops(&self) -> u64 {
        self.drops.iter().fold(0u64, |a, &b| a.wrapping_add(b))
    }

    /// `(reason, count)` for every reason, in index order.
    pub fn drops_by_reason(&self) -> impl Iterator<Item = (DropReason, u64)> + '_ {
        DropReason::ALL.iter().map(|&r| (r, self.drops[r.index()]))
    }
}

fn serialize_drops<S: serde::Serializer>(
    drops: &[u64; DropReason::COUNT],
    s: S,
) -> Result<S::Ok, S::Error> {
    let mut map = s.serialize_map(Some(DropReason::COUNT))?;
    for r in DropReason::ALL {
        map.serialize_entry(r.name(), &drops[r.index()])?;
    }
    map.end()
}

impl AddAssign for CounterSnapshot {
    /// Wrapping: a counter that wrapped in one queue must not panic a sum.
    fn add_assign(&mut self, o: Self) {
        self.rx_packets = self.rx_packets.wrapping_add(o.rx_packets);
        self.rx_bytes = self.rx_bytes.wrapping_add(o.rx_bytes);
        self.tx_packets = self.tx_packets.wrapping_add(o.tx_packets);
        self.tx_bytes = self.tx_bytes.wrapping_add(o.tx_bytes);
        for (a, b) in self.drops.iter_mut().zip(o.drops) {
            *a = a.wrapping_add(b);
        }
    }
}

impl Add for CounterSnapshot {
    type Output = Self;
    fn add(mut self, o: Self) -> Self {
        self += o;
        self
    }
}

impl Sum for CounterSnapshot {
    fn sum<I: Iterator<Item = Self>>(iter: I) -> Self {
        iter.fold(Self::default(), Add::add)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_to_cache_line() {
        assert_eq!(std::mem::align_of::<QueueCounters>(), 64);
        assert_eq!(std::mem::size_of::<QueueCounters>() % 64, 0);
    }

    #[test]
    fn add_and_snapshot_table() {
        let c = QueueCounters::new();
        // (rx (pkts, bytes), tx (pkts, bytes), drop)
        let ops = [
            ((32, 32 * 60), (0, 0), None),
            ((1, 1500), (4, 400), Some((DropReason::Spoofed, 2))),
            ((0, 0), (1, 64), Some((DropReason::RingFull, 5))),
            ((0, 0), (0, 0), Some((DropReason::Spoofed, 1))),
        ];
        for ((rp, rb), (tp, tb), drop) in ops {
            c.add_rx(rp, rb);
            c.add_tx(tp, tb);
            if let Some((r, n)) = drop {
                c.add_drop(r, n);
            }
        }
        let s = c.snapshot();
        assert_eq!((s.rx_packets, s.rx_bytes), (33, 32 * 60 + 1500));
        assert_eq!((s.tx_packets, s.tx_bytes), (5, 464));
        assert_eq!(s.drop_count(DropReason::Spoofed), 3);
        assert_eq!(s.drop_count(DropReason::RingFull), 5);
        assert_eq!(s.drop_count(DropReason::Hairpin), 0);
        assert_eq!(s.total_drops(), 8);
        assert_eq!(s.drops_by_reason().filter(|&(_, n)| n > 0).count(), 2);
    }

    #[test]
    fn snapshots_sum() {
        let queues: Vec<QueueCounters> = (0..3).map(|_| QueueCounters::new()).collect();
        for (i, q) in queues.iter().enumerate() {
            let i = i as u64 + 1;
            q.add_rx(i, 100 * i);
            q.add_tx(2 * i, 10 * i);
            q.add_drop(DropReason::NoRxBuffers, i);
        }
        let total: CounterSnapshot = queues.iter().map(QueueCounters::snapshot).sum();
        assert_eq!(total.rx_packets, 6);
        assert_eq!(total.rx_bytes, 600);
        assert_eq!(total.tx_packets, 12);
        assert_eq!(total.tx_bytes, 60);
        assert_eq!(total.drop_count(DropReason::NoRxBuffers), 6);
        let a = queues[0].snapshot() + queues[1].snapshot();
        assert_eq!(a.rx_packets, 3);
    }

    #[test]
    fn serializes_drops_by_name() {
        let c = QueueCounters::new();
        c.add_drop(DropReason::Hairpin, 7);
        let v = serde_json::to_value(c.snapshot()).unwrap();
        assert_eq!(v["drops"]["hairpin"], 7);
        assert_eq!(v["drops"]["no_route"], 0);
        assert_eq!(v["rx_packets"], 0);
        assert_eq!(v["drops"].as_object().unwrap().len(), DropReason::COUNT);
    }
}
