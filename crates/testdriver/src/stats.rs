//! Driver-side counters.

/// Counters of one virtqueue, as seen by the driver.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueStats {
    /// Kicks written to the kick eventfd.
    pub kicks_sent: u64,
    /// Kicks skipped because the device asked not to be notified.
    pub kicks_suppressed: u64,
    /// Successful reads of the call eventfd (each may cover several signals).
    pub calls_seen: u64,
    /// Used ring entries consumed.
    pub used_seen: u64,
    /// Frames queued for transmission.
    pub frames_tx: u64,
    /// Frames received (after mergeable reassembly).
    pub frames_rx: u64,
    /// RX chains re-posted after use.
    pub rx_refills: u64,
    /// Used entries whose id is not an outstanding head, or whose length is impossible.
    pub bad_used: u64,
    /// RX buffers completed implicitly by an IN_ORDER batch entry (their data is lost).
    pub rx_lost: u64,
}

impl QueueStats {
    fn add(&mut self, o: &QueueStats) {
        self.kicks_sent += o.kicks_sent;
        self.kicks_suppressed += o.kicks_suppressed;
        self.calls_seen += o.calls_seen;
        self.used_seen += o.used_seen;
        self.frames_tx += o.frames_tx;
        self.frames_rx += o.frames_rx;
        self.rx_refills += o.rx_refills;
        self.bad_used += o.bad_used;
        self.rx_lost += o.rx_lost;
    }
}

/// Counters of every queue of a [`crate::Guest`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DriverStats {
    /// RX queue of each pair.
    pub rx: Vec<QueueStats>,
    /// TX queue of each pair.
    pub tx: Vec<QueueStats>,
    /// Sum over all queues.
    pub total: QueueStats,
}

impl DriverStats {
    /// Build from per-pair (rx, tx) counters.
    pub fn from_pairs(pairs: impl Iterator<Item = (QueueStats, QueueStats)>) -> Self {
        let mut s = DriverStats::default();
        for (rx, tx) in pairs {
            s.total.add(&rx);
            s.total.add(&tx);
            s.rx.push(rx);
            s.tx.push(tx);
        }
        s
    }
}
