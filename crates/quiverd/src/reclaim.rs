//! Adaptive transmit-descriptor reclaim: when the chains a guest transmitted are handed
//! back (used index published, guest notified).
//!
//! Publishing after every burst returns descriptors early, which sparse senders and a
//! guest whose ring is nearly full need (Linux frees an skb, and TCP small queues let
//! the next one go, only when its descriptor comes back). Under bulk traffic it costs
//! a used-index store, a fence and often an eventfd write per burst. Batched reclaim
//! writes used elements as chains complete but publishes them together, up to
//! `BATCH` chains or when a short deadline passes.
//!
//! The adaptive policy (the default) picks per TX queue from the observed pattern: an
//! average of chains per wakeup at or above `BULK_ENTER` is bulk (batch), at or below
//! `BULK_LEAVE` sparse (eager), with hysteresis in between. Whatever the mode, a ring
//! that is three quarters in flight is reclaimed at once, so the guest never starves.
//! Deferred completions are published by the deadline timer, by the next burst, or
//! before the front-end reads the ring's base (GET_VRING_BASE), never lost.

use std::fmt;
use std::time::Duration;

use std::str::FromStr;

/// Chains completed together under batched reclaim (at most half the ring).
pub const BATCH: u16 = 256;
/// Longest a completed chain waits for its used-index publish.
pub const DEADLINE: Duration = Duration::from_micros(200);
/// Average chains per wakeup (×1) from which the adaptive policy batches...
const BULK_ENTER: u32 = 32;
/// ... and at or below which it goes back to eager.
const BULK_LEAVE: u32 = 8;
/// Fixed-point scale of the moving average.
const SCALE: u32 = 16;

/// The policy, per VNIC (`tx_reclaim` in the configuration).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ReclaimPolicy {
    /// Chosen per queue from the transmission pattern and the ring's fill level.
    #[default]
    Adaptive,
    /// Publish after every burst.
    Eager,
    /// Publish every `BATCH` chains, or at the deadline, or when the ring is nearly full.
    Batched,
}

impl fmt::Display for ReclaimPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ReclaimPolicy::Adaptive => "adaptive",
            ReclaimPolicy::Eager => "eager",
            ReclaimPolicy::Batched => "batched",
        })
    }
}

impl FromStr for ReclaimPolicy {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "adaptive" => Ok(ReclaimPolicy::Adaptive),
            "eager" => Ok(ReclaimPolicy::Eager),
            "batched" => Ok(ReclaimPolicy::Batched),
            _ => Err(()),
        }
    }
}

/// One TX queue's reclaim state, owned by its worker.
#[derive(Debug)]
pub struct Reclaim {
    policy: ReclaimPolicy,
    /// Moving average of chains per wakeup, ×SCALE.
    avg: u32,
    bulk: bool,
}

impl Reclaim {
    pub fn new(policy: ReclaimPolicy) -> Self {
        Reclaim {
            policy,
            avg: 0,
            bulk: policy == ReclaimPolicy::Batched,
        }
    }

    /// Whether completions are batched now.
    #[cfg(test)]
    pub fn batching(&self) -> bool {
        self.bulk
    }

    /// Records a wakeup that found `chains` chains (all its bursts together); true
    /// when that changed the mode (bulk ↔ sparse), for the counters.
    pub fn observe(&mut self, chains: usize) -> bool {
        let chains = u32::try_from(chains).unwrap_or(u32::MAX).min(4096);
        // avg += (x - avg) / 8, in fixed point.
        self.avg = self.avg - self.avg / 8 + chains * SCALE / 8;
        if self.policy != ReclaimPolicy::Adaptive {
            return false;
        }
        let bulk = if self.bulk {
            self.avg > BULK_LEAVE * SCALE
        } else {
            self.avg >= BULK_ENTER * SCALE
        };
        let switched = bulk != self.bulk;
        self.bulk = bulk;
        switched
    }

    /// Whether to publish now, with `unpublished` chains completed but not yet handed
    /// back and `in_flight` chains the guest has posted and not got back (of `size`).
    pub fn publish_now(&self, unpublished: u16, in_flight: u16, size: u16) -> bool {
        if !self.bulk {
            return true;
        }
        let batch = BATCH.min(size / 2).max(1);
        let nearly_full = u32::from(in_flight) * 4 >= u32::from(size) * 3;
        unpublished >= batch || nearly_full
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_policies_never_switch() {
        let mut eager = Reclaim::new(ReclaimPolicy::Eager);
        let mut batched = Reclaim::new(ReclaimPolicy::Batched);
        let mut switched = false;
        for _ in 0..100 {
            switched |= eager.observe(64);
            switched |= batched.observe(1);
        }
        assert!(!eager.batching() && batched.batching());
        assert!(!switched, "a fixed policy changed mode");
        assert!(eager.publish_now(1, 1, 256));
        assert!(!batched.publish_now(1, 1, 256));
    }

    #[test]
    fn adaptive_batches_bulk_and_returns_to_eager_when_sparse() {
        let mut r = Reclaim::new(ReclaimPolicy::Adaptive);
        let mut switches = 0;
        assert!(!r.batching(), "starts eager");
        // A few single-chain wakeups: still eager.
        for _ in 0..50 {
            switches += u32::from(r.observe(1));
        }
        assert!(!r.batching());
        // Streaming: 64-chain wakeups turn batching on within a handful of wakeups.
        let mut n = 0;
        while !r.batching() {
            switches += u32::from(r.observe(64));
            n += 1;
            assert!(n < 20, "never switched to batching");
        }
        // Hysteresis: averages between LEAVE and ENTER keep the mode.
        for _ in 0..50 {
            switches += u32::from(r.observe(16));
        }
        assert!(r.batching());
        // Sparse again: back to eager.
        n = 0;
        while r.batching() {
            switches += u32::from(r.observe(1));
            n += 1;
            assert!(n < 40, "never went back to eager");
        }
        assert_eq!(switches, 2);
    }

    #[test]
    fn batching_publishes_full_batches_and_nearly_full_rings() {
        let r = Reclaim::new(ReclaimPolicy::Batched);
        assert!(!r.publish_now(64, 64, 1024));
        assert!(r.publish_now(256, 300, 1024));
        // Three quarters in flight: reclaim now, whatever the batch.
        assert!(r.publish_now(10, 768, 1024));
        assert!(!r.publish_now(10, 767, 1024));
        // Small rings batch at most half the ring.
        assert!(r.publish_now(32, 40, 64));
        assert!(!r.publish_now(31, 40, 64));
    }
}
