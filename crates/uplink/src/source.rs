//! The `source` uplink: an endless generator of frames toward the VNICs, for
//! benchmarking guest RX with the backend measured alone.
//!
//! Each queue holds one prebuilt frame per destination MAC (virtio_net_hdr all
//! zero, then `dst`, `src`, EtherType 0x88B5 — IEEE 802 "local experimental" —
//! and a byte-counter payload). `recv` copies the next one, round-robin over the
//! destinations: no allocation and no syscall per frame. A source has no fd; its
//! poller calls `recv` whenever it wants frames (see quiverd's `uplink_rx`).
//! Frames sent *to* a source are counted and dropped, like a [`Sink`](crate::Sink).

use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::sink::SinkQueue;
use crate::uplink::{Capabilities, Uplink, UplinkKind, UplinkQueue, WireFrame, VNET_HDR_LEN};

/// Smallest frame a source makes: the Ethernet minimum without FCS.
pub const MIN_SOURCE_FRAME: usize = 60;
/// Largest frame a source makes: a 9216-byte MTU plus header and VLAN tag.
pub const MAX_SOURCE_FRAME: usize = 9216 + 14 + 4;
/// Frames one `recv_burst` hands over at most.
pub const SOURCE_BURST: usize = 64;
/// IEEE 802 local experimental EtherType 1.
const ETHERTYPE: [u8; 2] = [0x88, 0xb5];

/// Errors of this module.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SourceError {
    #[error("a source needs at least one destination MAC")]
    NoDestination,
    #[error("frame length {len} is outside {MIN_SOURCE_FRAME}..={MAX_SOURCE_FRAME}")]
    FrameLen { len: usize },
}

/// What a source generates.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SourceConfig {
    /// Destination MACs, used round-robin, frame by frame.
    pub dst: Vec<[u8; 6]>,
    /// Source MAC of every frame.
    pub src: [u8; 6],
    /// Ethernet frame length without FCS, [`MIN_SOURCE_FRAME`]..=[`MAX_SOURCE_FRAME`].
    pub frame_len: usize,
    /// Queues, each an independent generator (at least one).
    pub queues: usize,
}

/// One queue of a [`Source`]. `recv` is meant for one poller thread; the
/// round-robin position is shared, so two would still get whole frames.
#[derive(Debug)]
pub struct SourceQueue {
    /// Per destination: virtio_net_hdr + frame.
    frames: Box<[Box<[u8]>]>,
    next: AtomicUsize,
    generated: AtomicU64,
    sink: SinkQueue,
}

impl SourceQueue {
    fn new(cfg: &SourceConfig) -> Self {
        let frames = cfg
            .dst
            .iter()
            .map(|dst| {
                let mut f = vec![0u8; VNET_HDR_LEN + cfg.frame_len];
                let eth = &mut f[VNET_HDR_LEN..];
                eth[0..6].copy_from_slice(dst);
                eth[6..12].copy_from_slice(&cfg.src);
                eth[12..14].copy_from_slice(&ETHERTYPE);
                // The payload is a byte counter, wrapping at 256.
                for (b, v) in eth[14..].iter_mut().zip((0..=u8::MAX).cycle()) {
                    *b = v;
                }
                f.into_boxed_slice()
            })
            .collect();
        SourceQueue {
            frames,
            next: AtomicUsize::new(0),
            generated: AtomicU64::new(0),
            sink: SinkQueue::default(),
        }
    }

    /// Frames handed out by `recv` so far.
    pub fn generated(&self) -> u64 {
        self.generated.load(Ordering::Relaxed)
    }

    /// Frames sent to this queue (and dropped) so far.
    pub fn swallowed(&self) -> u64 {
        self.sink.frames()
    }
}

impl UplinkQueue for SourceQueue {
    fn rx_fd(&self) -> Option<RawFd> {
        None
    }

    /// Copies the next frame (vnet header included) into `buf`; never `Ok(None)`.
    /// Fails with `InvalidInput` when `buf` cannot hold it.
    fn recv(&self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        let i = self.next.load(Ordering::Relaxed);
        let frame = &self.frames[i % self.frames.len()];
        let Some(dst) = buf.get_mut(..frame.len()) else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "a {}-byte buffer cannot hold a {}-byte source frame",
                    buf.len(),
                    frame.len()
                ),
            ));
        };
        dst.copy_from_slice(frame);
        self.next.store(i.wrapping_add(1), Ordering::Relaxed);
        self.generated.fetch_add(1, Ordering::Relaxed);
        Ok(Some(frame.len()))
    }

    /// Up to `max` frames (at most [`SOURCE_BURST`]) straight from the prebuilt ones.
    fn recv_burst(
        &self,
        max: usize,
        f: &mut dyn FnMut(&[WireFrame<'_>]),
    ) -> Option<io::Result<usize>> {
        let i = self.next.load(Ordering::Relaxed);
        let n = max.min(SOURCE_BURST);
        let mut burst = [WireFrame {
            hdr: [0; VNET_HDR_LEN],
            data: &[],
        }; SOURCE_BURST];
        for (k, slot) in burst[..n].iter_mut().enumerate() {
            let frame = &self.frames[i.wrapping_add(k) % self.frames.len()];
            let (hdr, data) = frame.split_at(VNET_HDR_LEN);
            slot.hdr.copy_from_slice(hdr);
            slot.data = data;
        }
        f(&burst[..n]);
        self.next.store(i.wrapping_add(n), Ordering::Relaxed);
        self.generated.fetch_add(n as u64, Ordering::Relaxed);
        Some(Ok(n))
    }

    /// Counts the frame and drops it.
    unsafe fn send(&self, iov: &[libc::iovec]) -> io::Result<usize> {
        let len = iov.iter().map(|v| v.iov_len).sum();
        self.sink.swallow(len);
        Ok(len)
    }
}

/// An uplink whose queues generate frames without end.
#[derive(Debug)]
pub struct Source {
    name: String,
    queues: Vec<SourceQueue>,
}

impl Source {
    /// Builds the frames once; fails on a config no frame can be made from.
    pub fn new(name: &str, cfg: &SourceConfig) -> Result<Self, SourceError> {
        if cfg.dst.is_empty() {
            return Err(SourceError::NoDestination);
        }
        if !(MIN_SOURCE_FRAME..=MAX_SOURCE_FRAME).contains(&cfg.frame_len) {
            return Err(SourceError::FrameLen { len: cfg.frame_len });
        }
        Ok(Source {
            name: name.to_owned(),
            queues: (0..cfg.queues.max(1))
                .map(|_| SourceQueue::new(cfg))
                .collect(),
        })
    }

    /// The queues, in index order.
    pub fn queues(&self) -> &[SourceQueue] {
        &self.queues
    }
}

impl Uplink for Source {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> UplinkKind {
        UplinkKind::Source
    }

    fn num_queues(&self) -> usize {
        self.queues.len()
    }

    fn queue(&self, index: usize) -> Option<&dyn UplinkQueue> {
        self.queues.get(index).map(|q| q as &dyn UplinkQueue)
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            rx_rings: self.queues.len(),
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

    const A: [u8; 6] = [0x52, 0x54, 0, 0, 0, 1];
    const B: [u8; 6] = [0x52, 0x54, 0, 0, 0, 2];
    const SRC: [u8; 6] = [0x02, 0, 0, 0, 0, 0xfe];

    fn cfg(dst: Vec<[u8; 6]>, frame_len: usize) -> SourceConfig {
        SourceConfig {
            dst,
            src: SRC,
            frame_len,
            queues: 1,
        }
    }

    #[test]
    fn generates_prebuilt_frames_round_robin() {
        let s = Source::new("src", &cfg(vec![A, B], 64)).expect("valid");
        assert_eq!(s.kind(), UplinkKind::Source);
        assert_eq!(s.num_queues(), 1);
        let q = s.queue(0).expect("queue 0");
        assert_eq!(q.rx_fd(), None);
        let mut buf = vec![0xeeu8; 2048];
        for i in 0..5 {
            let n = q.recv(&mut buf).expect("recv").expect("a frame");
            assert_eq!(n, VNET_HDR_LEN + 64);
            assert_eq!(&buf[..VNET_HDR_LEN], &[0; VNET_HDR_LEN]);
            let eth = &buf[VNET_HDR_LEN..n];
            let want = if i % 2 == 0 { A } else { B };
            assert_eq!(&eth[0..6], &want, "frame {i}");
            assert_eq!(&eth[6..12], &SRC);
            assert_eq!(&eth[12..14], &ETHERTYPE);
            assert_eq!(eth[14], 0);
            assert_eq!(eth[63], 49);
        }
        assert_eq!(s.queues()[0].generated(), 5);
    }

    #[test]
    fn bursts_lend_the_prebuilt_frames_and_continue_the_round_robin() {
        let s = Source::new("src", &cfg(vec![A, B], 64)).expect("valid");
        let q = s.queue(0).expect("queue 0");
        let mut buf = vec![0u8; 2048];
        q.recv(&mut buf).expect("recv").expect("a frame"); // A
        let mut seen = Vec::new();
        let n = q
            .recv_burst(5, &mut |frames| {
                for f in frames {
                    assert_eq!(f.hdr, [0; VNET_HDR_LEN]);
                    assert_eq!(f.data.len(), 64);
                    assert_eq!(&f.data[6..12], &SRC);
                    seen.push(<[u8; 6]>::try_from(&f.data[..6]).expect("6 bytes"));
                }
            })
            .expect("a source lends its frames")
            .expect("no error");
        assert_eq!(n, 5);
        assert_eq!(seen, [B, A, B, A, B]);
        // Capped at SOURCE_BURST; the count covers every frame handed out.
        let big = q
            .recv_burst(1000, &mut |_| {})
            .expect("lends")
            .expect("no error");
        assert_eq!(big, SOURCE_BURST);
        assert_eq!(s.queues()[0].generated(), 6 + SOURCE_BURST as u64);
    }

    #[test]
    fn short_buffer_is_an_error_not_a_truncation() {
        let s = Source::new("src", &cfg(vec![A], 1500)).expect("valid");
        let q = s.queue(0).expect("queue 0");
        let mut buf = vec![0u8; 1000];
        let e = q.recv(&mut buf).expect_err("too small");
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        assert_eq!(s.queues()[0].generated(), 0);
    }

    #[test]
    fn frames_sent_to_a_source_are_swallowed() {
        let s = Source::new("src", &cfg(vec![A], 60)).expect("valid");
        let frame = [1u8; 72];
        let iov = [libc::iovec {
            iov_base: frame.as_ptr().cast_mut().cast(),
            iov_len: frame.len(),
        }];
        // SAFETY: the iovec points at a live 72-byte array.
        let n = unsafe { s.queue(0).expect("queue 0").send(&iov) }.expect("send");
        assert_eq!(n, 72);
        assert_eq!(s.queues()[0].swallowed(), 1);
    }

    #[test]
    fn bad_configs_are_refused_with_the_value() {
        assert_eq!(
            Source::new("s", &cfg(vec![], 64)).err(),
            Some(SourceError::NoDestination)
        );
        for len in [0, 59, MAX_SOURCE_FRAME + 1] {
            assert_eq!(
                Source::new("s", &cfg(vec![A], len)).err(),
                Some(SourceError::FrameLen { len })
            );
        }
        assert!(Source::new("s", &cfg(vec![A], MIN_SOURCE_FRAME)).is_ok());
        assert!(Source::new("s", &cfg(vec![A], MAX_SOURCE_FRAME)).is_ok());
    }
}
