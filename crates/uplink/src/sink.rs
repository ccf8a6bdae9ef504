//! The `sink` uplink: every frame sent to it is counted and dropped, with no
//! syscall. A benchmark's far end for guest TX (the backend measured alone).

use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::uplink::{Capabilities, Uplink, UplinkKind, UplinkQueue, VNET_HDR_LEN};

/// One queue of a [`Sink`]: two counters. Any number of threads may send at
/// once.
#[derive(Debug, Default)]
#[repr(align(64))]
pub struct SinkQueue {
    frames: AtomicU64,
    bytes: AtomicU64,
}

impl SinkQueue {
    /// Frames sent to this queue so far.
    pub fn frames(&self) -> u64 {
        self.frames.load(Ordering::Relaxed)
    }

    /// Their bytes, without the virtio_net_hdr.
    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    /// Counts one frame of `len` bytes (vnet header included) and drops it.
    pub(crate) fn swallow(&self, len: usize) {
        self.frames.fetch_add(1, Ordering::Relaxed);
        self.bytes
            .fetch_add(len.saturating_sub(VNET_HDR_LEN) as u64, Ordering::Relaxed);
    }
}

impl UplinkQueue for SinkQueue {
    fn rx_fd(&self) -> Option<RawFd> {
        None
    }

    /// A sink never receives.
    fn recv(&self, _buf: &mut [u8]) -> io::Result<Option<usize>> {
        Ok(None)
    }

    /// Counts the frame and drops it; nothing is read from the iovecs.
    unsafe fn send(&self, iov: &[libc::iovec]) -> io::Result<usize> {
        let len = iov.iter().map(|v| v.iov_len).sum();
        self.swallow(len);
        Ok(len)
    }
}

/// An uplink whose queues swallow every frame.
#[derive(Debug)]
pub struct Sink {
    name: String,
    queues: Vec<SinkQueue>,
}

impl Sink {
    /// A sink with `queues` queues (at least one).
    pub fn new(name: &str, queues: usize) -> Self {
        Sink {
            name: name.to_owned(),
            queues: (0..queues.max(1)).map(|_| SinkQueue::default()).collect(),
        }
    }

    /// Frames swallowed by all queues.
    pub fn frames(&self) -> u64 {
        self.queues.iter().map(SinkQueue::frames).sum()
    }
}

impl Uplink for Sink {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> UplinkKind {
        UplinkKind::Sink
    }

    fn num_queues(&self) -> usize {
        self.queues.len()
    }

    fn queue(&self, index: usize) -> Option<&dyn UplinkQueue> {
        self.queues.get(index).map(|q| q as &dyn UplinkQueue)
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            rx_rings: 0,
            tx_rings: self.queues.len(),
            ..Capabilities::default()
        }
    }

    fn ifname(&self) -> Option<&str> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_and_drops_every_frame() {
        let sink = Sink::new("s", 2);
        assert_eq!(sink.kind(), UplinkKind::Sink);
        assert_eq!(sink.num_queues(), 2);
        assert!(sink.queue(2).is_none());
        assert_eq!(sink.ifname(), None);
        let hdr = [0u8; VNET_HDR_LEN];
        let frame = [0xabu8; 60];
        let iov = [
            libc::iovec {
                iov_base: hdr.as_ptr().cast_mut().cast(),
                iov_len: hdr.len(),
            },
            libc::iovec {
                iov_base: frame.as_ptr().cast_mut().cast(),
                iov_len: frame.len(),
            },
        ];
        let q = sink.queue(1).expect("queue 1");
        for _ in 0..3 {
            // SAFETY: both iovecs point at live arrays of their iov_len bytes.
            let n = unsafe { q.send(&iov) }.expect("send");
            assert_eq!(n, 72);
        }
        assert_eq!(sink.queues[1].frames(), 3);
        assert_eq!(sink.queues[1].bytes(), 180);
        assert_eq!(sink.queues[0].frames(), 0);
        assert_eq!(sink.frames(), 3);
        let mut buf = [0u8; 128];
        assert_eq!(q.recv(&mut buf).expect("recv"), None);
        assert_eq!(q.rx_fd(), None);
    }

    #[test]
    fn zero_queues_still_gives_one() {
        assert_eq!(Sink::new("s", 0).num_queues(), 1);
    }
}
