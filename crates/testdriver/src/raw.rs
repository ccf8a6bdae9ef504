//! Misbehaving on purpose: raw chains and ring corruption for malformed-input tests.

use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use crate::config::{QueueSel, RawDesc};
use crate::error::DriverError;
use crate::guest::{wait_readable, Guest};
use crate::vring::{DescSpec, Token};

impl Guest {
    /// Post an arbitrary chain on a queue: `chain` is written verbatim into
    /// free descriptor slots (`next: None` links to the next slot of the
    /// chain), the head goes in the avail ring, and the device is kicked.
    pub fn post_raw(&mut self, q: QueueSel, chain: &[RawDesc]) -> Result<u16, DriverError> {
        let descs: Vec<DescSpec> = chain
            .iter()
            .map(|d| DescSpec {
                addr: d.addr,
                len: d.len,
                flags: d.flags,
                next: d.next,
            })
            .collect();
        let mem = &self.mem;
        let pairs = &mut self.pairs;
        let p = usize::from(q.pair());
        let Some(pair) = pairs.get_mut(p) else {
            return Err(DriverError::NoSuchPair {
                pair: q.pair(),
                pairs: self.cfg.queue_pairs,
            });
        };
        let ring = match q {
            QueueSel::Rx(_) => &mut pair.rx,
            QueueSel::Tx(_) => &mut pair.tx,
        };
        let Some(head) = ring.add(mem, &descs, Token::Raw)? else {
            return Err(DriverError::RingFull {
                queue: ring.index,
                want: descs.len(),
                free: ring.free_descs(),
            });
        };
        ring.publish(mem)?;
        ring.notify(mem, true)?;
        Ok(head)
    }

    /// Bump a queue's avail idx by `n` without adding descriptors, and kick.
    pub fn corrupt_avail_idx(&mut self, q: QueueSel, n: u16) -> Result<(), DriverError> {
        let p = self.pair_index(q.pair())?;
        let mem = &self.mem;
        let ring = match q {
            QueueSel::Rx(_) => &mut self.pairs[p].rx,
            QueueSel::Tx(_) => &mut self.pairs[p].tx,
        };
        ring.bump_avail(n);
        ring.publish(mem)?;
        ring.notify(mem, true)?;
        Ok(())
    }

    /// Process used entries of a queue until at least `count` have been seen
    /// in total (see [`Guest::used_entries`]) or `timeout` passes. RX frames
    /// completed meanwhile are kept for `recv`. Returns whether `count` was reached.
    pub fn wait_used(
        &mut self,
        q: QueueSel,
        count: usize,
        timeout: Duration,
    ) -> Result<bool, DriverError> {
        let p = self.pair_index(q.pair())?;
        let deadline = Instant::now() + timeout;
        loop {
            match q {
                QueueSel::Rx(_) => {
                    while let Some(f) = self.pull_frame(p)? {
                        self.pairs[p].rx_stash.push_back(f);
                    }
                }
                QueueSel::Tx(pair) => {
                    self.reclaim_tx(pair);
                }
            }
            let ring = match q {
                QueueSel::Rx(_) => &mut self.pairs[p].rx,
                QueueSel::Tx(_) => &mut self.pairs[p].tx,
            };
            if ring.used_log.len() >= count {
                return Ok(true);
            }
            if ring.enable_calls(&self.mem)? {
                continue;
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(false);
            }
            wait_readable(&[ring.call.as_raw_fd()], deadline - now)?;
            ring.drain_call();
        }
    }
}
