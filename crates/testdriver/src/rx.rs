//! Receiving: used RX chains → frames, mergeable reassembly (VIRTIO 1.2 §5.1.6.4), refill.

use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use crate::config::{RxFrame, NET_HDR_LEN};
use crate::error::DriverError;
use crate::guest::{wait_readable, Guest, Partial};
use crate::session::VIRTIO_NET_F_MRG_RXBUF;
use crate::vring::Token;

impl Guest {
    /// Wait up to `timeout` for one frame on RX queue `pair`.
    pub fn recv(&mut self, pair: u16, timeout: Duration) -> Result<Option<RxFrame>, DriverError> {
        let p = self.pair_index(pair)?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(f) = self.try_recv(p)? {
                return Ok(Some(f));
            }
            if self.pairs[p].rx.enable_calls(&self.mem)? {
                continue;
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            wait_readable(&[self.pairs[p].rx.call.as_raw_fd()], deadline - now)?;
            self.pairs[p].rx.drain_call();
        }
    }

    /// Wait up to `timeout` for one frame on any pair.
    pub fn recv_any(&mut self, timeout: Duration) -> Result<Option<(u16, RxFrame)>, DriverError> {
        let deadline = Instant::now() + timeout;
        let n = self.pairs.len();
        loop {
            for k in 0..n {
                let p = (self.rr + k) % n;
                if let Some(f) = self.try_recv(p)? {
                    self.rr = (p + 1) % n;
                    let pair = u16::try_from(p).unwrap_or(u16::MAX);
                    return Ok(Some((pair, f)));
                }
            }
            let mut pending = false;
            for p in &mut self.pairs {
                pending |= p.rx.enable_calls(&self.mem)?;
            }
            if pending {
                continue;
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            let fds: Vec<_> = self.pairs.iter().map(|p| p.rx.call.as_raw_fd()).collect();
            wait_readable(&fds, deadline - now)?;
            for p in &mut self.pairs {
                p.rx.drain_call();
            }
        }
    }

    /// Take one complete frame off RX queue of pair index `p` without waiting.
    pub(crate) fn try_recv(&mut self, p: usize) -> Result<Option<RxFrame>, DriverError> {
        if let Some(f) = self.pairs[p].rx_stash.pop_front() {
            return Ok(Some(f));
        }
        self.pull_frame(p)
    }

    /// Take one complete frame off the ring itself (not the stash), refilling.
    pub(crate) fn pull_frame(&mut self, p: usize) -> Result<Option<RxFrame>, DriverError> {
        let mut refill = 0usize;
        let res = self.collect_frame(p, &mut refill);
        // Buffers go back even when the device misbehaved.
        self.refill_rx(p, refill)?;
        res
    }

    /// Consume used RX entries until one frame is complete or the ring is empty.
    fn collect_frame(
        &mut self,
        p: usize,
        refill: &mut usize,
    ) -> Result<Option<RxFrame>, DriverError> {
        let mrg = self.session.has(VIRTIO_NET_F_MRG_RXBUF);
        let mem = &self.mem;
        let pair = &mut self.pairs[p];
        let queue = pair.rx.index;
        loop {
            let Some(c) = pair.rx.pop_used(mem)? else {
                return Ok(None);
            };
            for s in &c.skipped {
                if s.token == Token::Rx {
                    *refill += 1;
                    pair.rx.stats.rx_lost += 1;
                }
            }
            let Some(chain) = c.chain else { continue };
            if chain.token != Token::Rx {
                continue; // A post_raw chain: recorded in the used log only.
            }
            *refill += 1;
            let cap = chain.descs.len() as u64 * u64::from(pair.rx_desc_len);
            let bad = || DriverError::BadUsedLen {
                queue,
                id: c.id,
                len: c.len,
                cap,
            };
            if u64::from(c.len) > cap {
                pair.rx.stats.bad_used += 1;
                pair.rx_partial = None;
                return Err(bad());
            }
            let mut data = Vec::with_capacity(c.len as usize);
            let mut left = c.len as usize;
            for &slot in &chain.descs {
                let take = left.min(pair.rx_desc_len as usize);
                let start = data.len();
                data.resize(start + take, 0);
                mem.read(pair.rx_bufs[usize::from(slot)], &mut data[start..])?;
                left -= take;
            }
            let mut part = match pair.rx_partial.take() {
                Some(mut part) => {
                    part.data.extend_from_slice(&data);
                    part.remaining = part.remaining.saturating_sub(1);
                    part
                }
                None => {
                    if data.len() < NET_HDR_LEN {
                        pair.rx.stats.bad_used += 1;
                        return Err(bad());
                    }
                    let mut hdr = [0u8; NET_HDR_LEN];
                    hdr.copy_from_slice(&data[..NET_HDR_LEN]);
                    let num_buffers = u16::from_le_bytes([hdr[10], hdr[11]]);
                    if mrg && num_buffers == 0 {
                        pair.rx.stats.bad_used += 1;
                        return Err(DriverError::ZeroNumBuffers { queue });
                    }
                    // Without MRG_RXBUF one chain is one frame whatever num_buffers says.
                    let remaining = if mrg { num_buffers - 1 } else { 0 };
                    Partial {
                        hdr,
                        num_buffers,
                        remaining,
                        data: data.split_off(NET_HDR_LEN),
                    }
                }
            };
            if part.remaining == 0 {
                pair.rx.stats.frames_rx += 1;
                return Ok(Some(RxFrame {
                    hdr: part.hdr,
                    num_buffers: part.num_buffers,
                    data: std::mem::take(&mut part.data),
                }));
            }
            pair.rx_partial = Some(part);
        }
    }
}
