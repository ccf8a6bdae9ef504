//! Dedicated receive sockets: one VNIC's frames on an AF_XDP socket of its
//! own on every queue, sharing the queue's UMEM and fill ring.

use std::io;
use std::os::fd::RawFd;
use std::sync::{Arc, Mutex};

use aya::maps::MapError;

use super::{
    chain, lock, xsk_index, AfXdp, AfXdpError, ClassKey, Steering, DEDICATED_RING_SIZE,
    IN_FLIGHT_GRACE, MAX_DEDICATED,
};
use crate::netns;
use crate::uplink::{DedicatedRx, WireFrame};
use crate::xsk::XskRx;

impl AfXdp {
    /// See [`Uplink::dedicate`]: one [`AfXdpDedicated`] per queue.
    pub fn dedicate_sockets(
        &self,
        mac: [u8; 6],
        vlan: u16,
    ) -> Result<Vec<AfXdpDedicated>, AfXdpError> {
        let key = ClassKey { mac, vlan };
        // Held throughout: no other dedicate takes the same column meanwhile.
        let mut steering = lock(&self.steering);
        match steering.classes.get(&key, 0) {
            Ok(_) => {}
            Err(MapError::KeyNotFound) => {
                return Err(AfXdpError::NotAClass {
                    ifname: self.ifname.clone(),
                    mac,
                    vlan,
                })
            }
            Err(e) => return Err(steering.map_err("vnic_macs")(e)),
        }
        if steering.column_of(&key) != 0 {
            return Err(AfXdpError::AlreadyDedicated {
                ifname: self.ifname.clone(),
                mac,
                vlan,
            });
        }
        let Some(column) = (1..=MAX_DEDICATED).find(|&c| steering.users[c] == 0) else {
            return Err(AfXdpError::NoFreeColumn {
                ifname: self.ifname.clone(),
            });
        };
        let column = u32::try_from(column).unwrap_or(u32::MAX);
        // The sockets must be created in the interface's namespace: bind
        // looks the ifindex up in the socket's. None is in the XSKMAP yet, so
        // on error they close holding no frame.
        let open_all = || -> Result<Vec<XskRx>, AfXdpError> {
            self.xsks()
                .enumerate()
                .map(|(queue, xsk)| {
                    xsk.open_rx(DEDICATED_RING_SIZE)
                        .map_err(|source| AfXdpError::DedicatedSocket {
                            ifname: self.ifname.clone(),
                            queue,
                            source,
                        })
                })
                .collect()
        };
        let sockets = match self.netns.as_deref() {
            None => open_all()?,
            Some(ns) => netns::run_in(ns, open_all).map_err(|source| AfXdpError::Netns {
                ifname: self.ifname.clone(),
                source,
            })??,
        };
        // Every socket in the XSKMAP before the first frame is steered to the
        // column: the classifier never finds half a set.
        let mut set: Vec<AfXdpDedicated> = Vec::with_capacity(sockets.len());
        let mut result = Ok(());
        for (queue, rx) in sockets.into_iter().enumerate() {
            steering.users[column as usize] += 1;
            let set_result = steering.set_socket(xsk_index(column, queue), &rx);
            // Pushed even when the XSKMAP refused it: its drop undoes the rest.
            set.push(AfXdpDedicated {
                rx,
                queue,
                key,
                column,
                steering: Arc::clone(&self.steering),
            });
            if let Err(e) = set_result {
                result = Err(e);
                break;
            }
        }
        if result.is_ok() {
            steering.dedicated.push((key, column));
            result = steering
                .classes
                .insert(key, column, 0)
                .map_err(steering.map_err("vnic_macs"));
        }
        // The set's drop takes the lock.
        drop(steering);
        match result {
            Ok(()) => {
                log::info!(
                    "af_xdp {}: {mac:02x?} VLAN {vlan} has dedicated sockets (column {column})",
                    self.ifname
                );
                Ok(set)
            }
            Err(e) => {
                drop(set);
                Err(e)
            }
        }
    }
}

/// A VNIC's dedicated receive path on one queue of an af_xdp uplink: an AF_XDP
/// socket sharing the UMEM and fill ring of the queue's shared socket, into
/// which the classifier steers that VNIC's frames arriving on the queue.
///
/// Dropping it (any one of the VNIC's set) steers the VNIC back to the shared
/// sockets, takes this socket out of the XSKMAP, gives every frame in its RX
/// ring back to the fill ring (again after [`IN_FLIGHT_GRACE`]), then closes it.
pub struct AfXdpDedicated {
    // Dropped after `Drop::drop` has undone the steering: the socket (its
    // `XskRx` holds the queue's socket and UMEM alive until then).
    rx: XskRx,
    queue: usize,
    key: ClassKey,
    column: u32,
    steering: Arc<Mutex<Steering>>,
}

impl std::fmt::Debug for AfXdpDedicated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AfXdpDedicated")
            .field("rx", &self.rx)
            .field("queue", &self.queue)
            .field("key", &self.key)
            .field("column", &self.column)
            .finish_non_exhaustive()
    }
}

impl DedicatedRx for AfXdpDedicated {
    fn queue(&self) -> usize {
        self.queue
    }

    fn fd(&self) -> RawFd {
        self.rx.raw_fd()
    }

    /// At most [`crate::xsk::MAX_BURST`] (256) frames per call.
    fn recv_burst(&self, max: usize, f: &mut dyn FnMut(&[WireFrame<'_>])) -> io::Result<usize> {
        Ok(self.rx.recv_burst(max, f))
    }
}

impl Drop for AfXdpDedicated {
    fn drop(&mut self) {
        let mut guard = lock(&self.steering);
        let steering = &mut *guard;
        let ifname = steering.ifname.clone();
        // The first of the set to go steers the VNIC back to the shared
        // sockets (unless set_classes dropped it meanwhile: BPF_EXIST).
        if let Some(i) = steering
            .dedicated
            .iter()
            .position(|&(k, c)| k == self.key && c == self.column)
        {
            steering.dedicated.swap_remove(i);
            if steering.classes.get(&self.key, 0).is_ok() {
                const BPF_EXIST: u64 = 2;
                if let Err(e) = steering.classes.insert(self.key, 0, BPF_EXIST) {
                    log::warn!(
                        "af_xdp {ifname}: cannot steer {:02x?} VLAN {} back to the shared sockets: {}",
                        self.key.mac,
                        self.key.vlan,
                        chain(&e)
                    );
                }
            }
        }
        if let Err(e) = steering.clear_socket(xsk_index(self.column, self.queue)) {
            log::warn!(
                "af_xdp {ifname}: cannot take queue {}'s dedicated socket out of the XSKMAP: {e}",
                self.queue
            );
        }
        steering.users[self.column as usize] =
            steering.users[self.column as usize].saturating_sub(1);
        drop(guard);
        // A frame left in the RX ring when the socket closes is lost to the
        // pool for good: give them all back, then again once the redirects
        // other CPUs' NAPI polls made before the XSKMAP change have landed.
        let mut drained = self.rx.drain();
        std::thread::sleep(IN_FLIGHT_GRACE);
        drained += self.rx.drain();
        log::debug!(
            "af_xdp {ifname}: dedicated socket of {:02x?} VLAN {} on queue {} closed, {drained} frame(s) returned",
            self.key.mac,
            self.key.vlan,
            self.queue
        );
    }
}
