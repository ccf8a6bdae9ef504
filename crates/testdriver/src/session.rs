//! The vhost-user conversation with the backend, in QEMU's message order
//! (docs/interop/vhost-user.rst). Protocol encoding is the `vhost` crate's;
//! everything about rings stays in this crate.

use std::os::unix::net::UnixStream;

use vhost::vhost_user::message::{VhostUserConfigFlags, VhostUserHeaderFlag};
use vhost::vhost_user::{Frontend, VhostUserFrontend, VhostUserProtocolFeatures};
use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};

use crate::config::DriverConfig;
use crate::error::DriverError;
use crate::mem::GuestMem;
use crate::vring::Vring;

/// VIRTIO_NET_F_MAC (VIRTIO 1.2 §5.1.3).
pub const VIRTIO_NET_F_MAC: u32 = 5;
/// VIRTIO_NET_F_MRG_RXBUF.
pub const VIRTIO_NET_F_MRG_RXBUF: u32 = 15;
/// VIRTIO_NET_F_MQ.
pub const VIRTIO_NET_F_MQ: u32 = 22;
/// VIRTIO_RING_F_INDIRECT_DESC (VIRTIO 1.2 §6).
pub const VIRTIO_RING_F_INDIRECT_DESC: u32 = 28;
/// VIRTIO_RING_F_EVENT_IDX.
pub const VIRTIO_RING_F_EVENT_IDX: u32 = 29;
/// VHOST_USER_F_PROTOCOL_FEATURES (vhost-user spec: bit 30 of the feature word).
pub const VHOST_USER_F_PROTOCOL_FEATURES: u32 = 30;
/// VIRTIO_F_VERSION_1.
pub const VIRTIO_F_VERSION_1: u32 = 32;
/// VIRTIO_F_IN_ORDER.
pub const VIRTIO_F_IN_ORDER: u32 = 35;

fn bit(b: u32) -> u64 {
    1u64 << b
}

/// An established vhost-user session.
pub struct Session {
    fe: Frontend,
    reply_ack: bool,
    protocol: VhostUserProtocolFeatures,
    offered: u64,
    acked: u64,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("reply_ack", &self.reply_ack)
            .field("protocol", &self.protocol)
            .field("offered", &format_args!("{:#x}", self.offered))
            .field("acked", &format_args!("{:#x}", self.acked))
            .finish()
    }
}

fn vh<T>(request: &'static str, r: vhost::Result<T>) -> Result<T, DriverError> {
    r.map_err(|source| DriverError::Vhost { request, source })
}

impl Session {
    /// SET_OWNER through SET_FEATURES.
    pub fn negotiate(stream: UnixStream, cfg: &DriverConfig) -> Result<Session, DriverError> {
        stream
            .set_read_timeout(Some(cfg.reply_timeout))
            .map_err(DriverError::Socket)?;
        stream
            .set_write_timeout(Some(cfg.reply_timeout))
            .map_err(DriverError::Socket)?;
        let nq = 2 * u64::from(cfg.queue_pairs);
        let mut fe = Frontend::from_stream(stream, nq);
        vh("SET_OWNER", fe.set_owner())?;
        let offered = vh("GET_FEATURES", fe.get_features())?;
        if offered & bit(VHOST_USER_F_PROTOCOL_FEATURES) == 0 {
            return Err(DriverError::FeatureNotOffered {
                bit: VHOST_USER_F_PROTOCOL_FEATURES,
            });
        }
        let theirs = vh("GET_PROTOCOL_FEATURES", fe.get_protocol_features())?;
        let mut ours = VhostUserProtocolFeatures::MQ
            | VhostUserProtocolFeatures::REPLY_ACK
            | VhostUserProtocolFeatures::CONFIG;
        if cfg.mem_slots {
            ours |= VhostUserProtocolFeatures::CONFIGURE_MEM_SLOTS;
        }
        let protocol = theirs & ours;
        vh("SET_PROTOCOL_FEATURES", fe.set_protocol_features(protocol))?;
        let mut s = Session {
            fe,
            reply_ack: protocol.contains(VhostUserProtocolFeatures::REPLY_ACK),
            protocol,
            offered,
            acked: 0,
        };
        if protocol.contains(VhostUserProtocolFeatures::MQ) {
            s.set_ack(false);
            let got = vh("GET_QUEUE_NUM", s.fe.get_queue_num())?;
            if got < nq {
                return Err(DriverError::TooFewQueues { want: nq, got });
            }
        } else if cfg.queue_pairs > 1 {
            return Err(DriverError::TooFewQueues { want: nq, got: 2 });
        }
        let mut want =
            bit(VIRTIO_F_VERSION_1) | bit(VHOST_USER_F_PROTOCOL_FEATURES) | cfg.extra_features;
        if offered & bit(VIRTIO_NET_F_MAC) != 0 {
            want |= bit(VIRTIO_NET_F_MAC);
        }
        for (on, b) in [
            (cfg.mrg_rxbuf, VIRTIO_NET_F_MRG_RXBUF),
            (cfg.event_idx, VIRTIO_RING_F_EVENT_IDX),
            (cfg.in_order, VIRTIO_F_IN_ORDER),
            (cfg.indirect, VIRTIO_RING_F_INDIRECT_DESC),
            (cfg.queue_pairs > 1, VIRTIO_NET_F_MQ),
        ] {
            if on {
                want |= bit(b);
            }
        }
        if let Some(missing) = (0..64).find(|&b| want & !offered & bit(b) != 0) {
            return Err(DriverError::FeatureNotOffered { bit: missing });
        }
        s.set_features(want)?;
        Ok(s)
    }

    /// Ask for REPLY_ACK on requests that have no reply of their own.
    fn set_ack(&self, on: bool) {
        let flags = if on && self.reply_ack {
            VhostUserHeaderFlag::NEED_REPLY
        } else {
            VhostUserHeaderFlag::empty()
        };
        self.fe.set_hdr_flags(flags);
    }

    /// SET_FEATURES.
    pub fn set_features(&mut self, features: u64) -> Result<(), DriverError> {
        self.set_ack(true);
        vh("SET_FEATURES", self.fe.set_features(features))?;
        self.acked = features;
        Ok(())
    }

    /// Acked virtio features.
    pub fn features(&self) -> u64 {
        self.acked
    }

    /// Whether virtio feature `b` was negotiated.
    pub fn has(&self, b: u32) -> bool {
        self.acked & bit(b) != 0
    }

    /// Acked protocol features.
    pub fn protocol(&self) -> VhostUserProtocolFeatures {
        self.protocol
    }

    fn region(mem: &GuestMem) -> VhostUserMemoryRegionInfo {
        VhostUserMemoryRegionInfo {
            guest_phys_addr: 0,
            memory_size: mem.size() as u64,
            userspace_addr: mem.host_addr(),
            mmap_offset: 0,
            mmap_handle: mem.fd(),
        }
    }

    /// SET_MEM_TABLE, or GET_MAX_MEM_SLOTS + ADD_MEM_REG with CONFIGURE_MEM_SLOTS.
    pub fn set_mem(&mut self, mem: &GuestMem, first: bool) -> Result<(), DriverError> {
        let region = Self::region(mem);
        if self
            .protocol
            .contains(VhostUserProtocolFeatures::CONFIGURE_MEM_SLOTS)
        {
            if first {
                self.set_ack(false);
                vh("GET_MAX_MEM_SLOTS", self.fe.get_max_mem_slots())?;
                self.set_ack(true);
                vh("ADD_MEM_REG", self.fe.add_mem_region(&region))?;
            }
            // Like QEMU, an unchanged map sends nothing on restart.
            return Ok(());
        }
        self.set_ack(true);
        vh("SET_MEM_TABLE", self.fe.set_mem_table(&[region]))?;
        Ok(())
    }

    /// SET_VRING_NUM, SET_VRING_BASE, SET_VRING_ADDR, SET_VRING_KICK, SET_VRING_CALL
    /// (vhost_virtqueue_start order). Addresses are in the front-end's address space.
    pub fn setup_ring(
        &mut self,
        ring: &Vring,
        mem: &GuestMem,
        base: u16,
    ) -> Result<(), DriverError> {
        let i = ring.index;
        let host = mem.host_addr();
        self.set_ack(true);
        vh("SET_VRING_NUM", self.fe.set_vring_num(i, ring.layout.size))?;
        vh("SET_VRING_BASE", self.fe.set_vring_base(i, base))?;
        let addr = VringConfigData {
            queue_max_size: ring.layout.size,
            queue_size: ring.layout.size,
            flags: 0,
            desc_table_addr: host + ring.layout.desc,
            used_ring_addr: host + ring.layout.used,
            avail_ring_addr: host + ring.layout.avail,
            log_addr: None,
        };
        vh("SET_VRING_ADDR", self.fe.set_vring_addr(i, &addr))?;
        vh("SET_VRING_KICK", self.fe.set_vring_kick(i, &ring.kick))?;
        vh("SET_VRING_CALL", self.fe.set_vring_call(i, &ring.call))?;
        Ok(())
    }

    /// SET_VRING_ENABLE.
    pub fn enable(&mut self, queue: usize, on: bool) -> Result<(), DriverError> {
        self.set_ack(true);
        vh("SET_VRING_ENABLE", self.fe.set_vring_enable(queue, on))
    }

    /// GET_VRING_BASE (stops the ring).
    pub fn get_base(&mut self, queue: usize) -> Result<u32, DriverError> {
        self.set_ack(false);
        vh("GET_VRING_BASE", self.fe.get_vring_base(queue))
    }

    /// GET_CONFIG of `len` bytes at `offset` of the device config space.
    pub fn read_config(&mut self, offset: u32, len: u32) -> Result<Vec<u8>, DriverError> {
        self.set_ack(false);
        let buf = vec![0u8; len as usize];
        let (_, data) = vh(
            "GET_CONFIG",
            self.fe
                .get_config(offset, len, VhostUserConfigFlags::empty(), &buf),
        )?;
        Ok(data)
    }
}
