//! Transmitting: header + frame → guest buffers → (indirect) chain → kick if asked.

use crate::config::TxOpts;
use crate::error::DriverError;
use crate::guest::Guest;
use crate::layout::{VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT};
use crate::session::VIRTIO_RING_F_INDIRECT_DESC;
use crate::vring::{DescSpec, Token};

impl Guest {
    /// Queue `frame` with a zero header on TX queue `pair`.
    pub fn send(&mut self, pair: u16, frame: &[u8]) -> Result<(), DriverError> {
        self.send_opts(pair, frame, &TxOpts::default())
    }

    /// Queue `frame` with explicit header, split points and indirect choice.
    pub fn send_opts(&mut self, pair: u16, frame: &[u8], opts: &TxOpts) -> Result<(), DriverError> {
        let p = self.pair_index(pair)?;
        if opts.indirect && !self.session.has(VIRTIO_RING_F_INDIRECT_DESC) {
            return Err(DriverError::NotNegotiated {
                bit: VIRTIO_RING_F_INDIRECT_DESC,
            });
        }
        self.reclaim_tx(pair);
        let mut bytes = Vec::with_capacity(opts.hdr.len() + frame.len());
        bytes.extend_from_slice(&opts.hdr);
        bytes.extend_from_slice(frame);
        let total = bytes.len();
        let mut cuts = vec![0usize];
        for &off in &opts.split_at {
            let last = cuts.last().copied().unwrap_or(0);
            if off <= last || off >= total {
                return Err(DriverError::BadSplit {
                    offset: off,
                    len: total,
                });
            }
            cuts.push(off);
        }
        cuts.push(total);
        let mem = &self.mem;
        let pair_s = &mut self.pairs[p];
        let queue = pair_s.tx.index;
        let need_slots = if opts.indirect { 1 } else { cuts.len() - 1 };
        if pair_s.tx.free_descs() < need_slots {
            return Err(DriverError::RingFull {
                queue,
                want: need_slots,
                free: pair_s.tx.free_descs(),
            });
        }
        // Each segment in its own arena span: gaps between them, like real guests.
        let mut spans = Vec::new();
        let mut descs = Vec::new();
        for w in cuts.windows(2) {
            let seg = &bytes[w[0]..w[1]];
            let Some((id, gpa)) = pair_s.arena.alloc(seg.len() as u64, 16) else {
                for id in spans {
                    pair_s.arena.free(id);
                }
                return Err(DriverError::ArenaFull {
                    queue,
                    want: seg.len() as u64,
                });
            };
            spans.push(id);
            mem.write(gpa, seg)?;
            let len = u32::try_from(seg.len()).unwrap_or(u32::MAX);
            descs.push(DescSpec {
                addr: gpa,
                len,
                flags: VRING_DESC_F_NEXT,
                next: None,
            });
        }
        if let Some(last) = descs.last_mut() {
            last.flags = 0;
        }
        let ring_descs = if opts.indirect {
            // VIRTIO 1.2 §2.7.5.3: the table's descriptors chain by index within the table.
            let mut table = Vec::with_capacity(descs.len() * 16);
            for (i, d) in descs.iter().enumerate() {
                let next = if d.flags & VRING_DESC_F_NEXT != 0 {
                    u16::try_from(i + 1).unwrap_or(0)
                } else {
                    0
                };
                table.extend_from_slice(&d.addr.to_le_bytes());
                table.extend_from_slice(&d.len.to_le_bytes());
                table.extend_from_slice(&d.flags.to_le_bytes());
                table.extend_from_slice(&next.to_le_bytes());
            }
            let Some((id, gpa)) = pair_s.arena.alloc(table.len() as u64, 16) else {
                for id in spans {
                    pair_s.arena.free(id);
                }
                return Err(DriverError::ArenaFull {
                    queue,
                    want: table.len() as u64,
                });
            };
            spans.push(id);
            mem.write(gpa, &table)?;
            let len = u32::try_from(table.len()).unwrap_or(u32::MAX);
            vec![DescSpec {
                addr: gpa,
                len,
                flags: VRING_DESC_F_INDIRECT,
                next: None,
            }]
        } else {
            descs
        };
        let head = pair_s.tx.add(mem, &ring_descs, Token::Tx(spans.clone()))?;
        if head.is_none() {
            for id in spans {
                pair_s.arena.free(id);
            }
            let free = pair_s.tx.free_descs();
            return Err(DriverError::RingFull {
                queue,
                want: ring_descs.len(),
                free,
            });
        }
        pair_s.tx.publish(mem)?;
        pair_s.tx.notify(mem, false)?;
        pair_s.tx.stats.frames_tx += 1;
        Ok(())
    }

    /// Reclaim used TX chains of `pair`; returns how many chains came back.
    pub fn reclaim_tx(&mut self, pair: u16) -> usize {
        let Some(pair_s) = self.pairs.get_mut(usize::from(pair)) else {
            return 0;
        };
        pair_s.tx.drain_call();
        let mut n = 0;
        loop {
            let c = match pair_s.tx.pop_used(&self.mem) {
                Ok(Some(c)) => c,
                Ok(None) => break,
                Err(e) => {
                    log::warn!("tx reclaim on pair {pair}: {e}");
                    break;
                }
            };
            for chain in c.skipped.iter().chain(c.chain.as_ref()) {
                if let Token::Tx(spans) = &chain.token {
                    for &id in spans {
                        pair_s.arena.free(id);
                    }
                }
                n += 1;
            }
        }
        n
    }
}
