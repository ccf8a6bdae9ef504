//! A vhost-user message relay between the front-end's socket and vhost-user-backend.
//!
//! QEMU's virtio-net sends SET_VRING_ENABLE while resetting the device, before it has
//! sent SET_FEATURES (it only checks that the back-end *offered*
//! VHOST_USER_F_PROTOCOL_FEATURES). vhost 0.18 and vhost-user-backend 0.24 accept
//! SET_VRING_ENABLE only once that bit has been *acked*, and drop the connection
//! otherwise, so QEMU retries forever and the guest never gets carrier. The relay
//! passes every message through unchanged (file descriptors included) except such an
//! early SET_VRING_ENABLE: it answers it itself, remembers the ring's state, and
//! replays it right after SET_FEATURES has acked the bit (QEMU does not send it again).
//!
//! QEMU before 8.1 also sends ADD_MEM_REG (VHOST_USER_PROTOCOL_F_CONFIGURE_MEM_SLOTS)
//! once per vhost device, and a multiqueue NIC is one vhost device per queue pair on
//! the same connection: the back-end would get the same region N times and refuse the
//! second as overlapping, dropping the connection. Newer QEMU sends it for the first
//! pair only, as it always did for SET_MEM_TABLE ("one-time requests"). The relay
//! therefore counts identical regions: the first ADD_MEM_REG of a region and the last
//! REM_MEM_REG are forwarded, the others answered by the relay itself.
//!
//! Only control messages cross the relay: kick/call eventfds and guest memory go
//! straight to the back-end, so the data path is not touched.

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::thread::JoinHandle;

use vmm_sys_util::sock_ctrl_msg::ScmSocket;

const HDR_LEN: usize = 12;
/// Larger payloads are refused (the protocol's biggest is a memory table, ~4 KiB).
const MAX_PAYLOAD: usize = 64 * 1024;
/// File descriptors one message may carry (a memory table has at most 8 regions).
const MAX_FDS: usize = 32;

const SET_FEATURES: u32 = 2;
const SET_MEM_TABLE: u32 = 5;
const SET_VRING_ENABLE: u32 = 18;
const ADD_MEM_REG: u32 = 37;
const REM_MEM_REG: u32 = 38;
const VHOST_USER_F_PROTOCOL_FEATURES: u64 = 1 << 30;
const FLAG_VERSION_1: u32 = 0x1;
const FLAG_REPLY: u32 = 0x4;
const FLAG_NEED_REPLY: u32 = 0x8;

/// One vhost-user message with the descriptors that came with it.
struct Message {
    hdr: [u8; HDR_LEN],
    payload: Vec<u8>,
    fds: Vec<OwnedFd>,
}

impl Message {
    fn request(&self) -> u32 {
        u32::from_le_bytes([self.hdr[0], self.hdr[1], self.hdr[2], self.hdr[3]])
    }

    fn flags(&self) -> u32 {
        u32::from_le_bytes([self.hdr[4], self.hdr[5], self.hdr[6], self.hdr[7]])
    }

    fn u64_payload(&self) -> Option<u64> {
        let b: [u8; 8] = self.payload.get(..8)?.try_into().ok()?;
        Some(u64::from_le_bytes(b))
    }
}

/// Reads one message; Ok(None) at a clean end of stream.
fn read_message(sock: &UnixStream) -> io::Result<Option<Message>> {
    let mut hdr = [0u8; HDR_LEN];
    let mut raw_fds = [-1 as RawFd; MAX_FDS];
    let mut iov = [libc::iovec {
        iov_base: hdr.as_mut_ptr().cast(),
        iov_len: HDR_LEN,
    }];
    // SAFETY: the iovec points at `hdr`, a live local buffer of HDR_LEN bytes that
    // may receive arbitrary data.
    let (n, nfds) =
        unsafe { sock.recv_with_fds(&mut iov, &mut raw_fds) }.map_err(io::Error::other)?;
    let fds: Vec<OwnedFd> = raw_fds[..nfds]
        .iter()
        // SAFETY: recv_with_fds returned `nfds` new descriptors that nobody else owns.
        .map(|&fd| unsafe { OwnedFd::from_raw_fd(fd) })
        .collect();
    if n == 0 {
        return Ok(None);
    }
    if n < HDR_LEN {
        (&*sock).read_exact(&mut hdr[n..])?;
    }
    let size = u32::from_le_bytes([hdr[8], hdr[9], hdr[10], hdr[11]]) as usize;
    if size > MAX_PAYLOAD {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("vhost-user message of {size} bytes"),
        ));
    }
    let mut payload = vec![0u8; size];
    (&*sock).read_exact(&mut payload)?;
    Ok(Some(Message { hdr, payload, fds }))
}

fn write_message(sock: &UnixStream, msg: &Message) -> io::Result<()> {
    let raw: Vec<RawFd> = msg.fds.iter().map(AsRawFd::as_raw_fd).collect();
    if raw.is_empty() {
        let mut buf = Vec::with_capacity(HDR_LEN + msg.payload.len());
        buf.extend_from_slice(&msg.hdr);
        buf.extend_from_slice(&msg.payload);
        return (&*sock).write_all(&buf);
    }
    let bufs: [&[u8]; 2] = [&msg.hdr, &msg.payload];
    let sent = sock
        .send_with_fds(&bufs[..], &raw)
        .map_err(io::Error::other)?;
    let total = HDR_LEN + msg.payload.len();
    if sent < total {
        // The descriptors went with the first byte; send the rest plainly.
        let mut rest = Vec::with_capacity(total);
        rest.extend_from_slice(&msg.hdr);
        rest.extend_from_slice(&msg.payload);
        (&*sock).write_all(&rest[sent..])?;
    }
    Ok(())
}

/// `struct vhost_vring_state` (index, num) of a SET_VRING_ENABLE payload.
fn vring_state(payload: &[u8]) -> Option<(u32, u32)> {
    let index = u32::from_le_bytes(payload.get(0..4)?.try_into().ok()?);
    let num = u32::from_le_bytes(payload.get(4..8)?.try_into().ok()?);
    Some((index, num))
}

/// A SET_VRING_ENABLE request without NEED_REPLY.
fn vring_enable(index: u32, num: u32) -> Message {
    let mut hdr = [0u8; HDR_LEN];
    hdr[0..4].copy_from_slice(&SET_VRING_ENABLE.to_le_bytes());
    hdr[4..8].copy_from_slice(&FLAG_VERSION_1.to_le_bytes());
    hdr[8..12].copy_from_slice(&8u32.to_le_bytes());
    let mut payload = index.to_le_bytes().to_vec();
    payload.extend_from_slice(&num.to_le_bytes());
    Message {
        hdr,
        payload,
        fds: Vec::new(),
    }
}

/// The ack a NEED_REPLY request gets: a u64 0 (success).
fn ack(request: u32) -> Message {
    let mut hdr = [0u8; HDR_LEN];
    hdr[0..4].copy_from_slice(&request.to_le_bytes());
    hdr[4..8].copy_from_slice(&(FLAG_VERSION_1 | FLAG_REPLY).to_le_bytes());
    hdr[8..12].copy_from_slice(&8u32.to_le_bytes());
    Message {
        hdr,
        payload: vec![0; 8],
        fds: Vec::new(),
    }
}

/// A memory region as ADD_MEM_REG / REM_MEM_REG carry it (`VhostUserMemRegMsg`: 8 bytes
/// of padding, then guest address, size, front-end address and mmap offset).
type RegionKey = [u8; 32];

fn region_key(payload: &[u8]) -> Option<RegionKey> {
    payload.get(8..40)?.try_into().ok()
}

/// How many vhost devices of the connection have added each region.
#[derive(Default)]
struct Regions(std::collections::HashMap<RegionKey, u32>);

impl Regions {
    /// Whether `msg` goes on to the back-end (otherwise the relay answers it).
    fn forward(&mut self, msg: &Message) -> bool {
        match msg.request() {
            SET_MEM_TABLE => {
                self.0.clear();
                true
            }
            ADD_MEM_REG => {
                let Some(key) = region_key(&msg.payload) else {
                    return true; // malformed: the back-end refuses it
                };
                let n = self.0.entry(key).or_insert(0);
                *n += 1;
                *n == 1
            }
            REM_MEM_REG => {
                let Some(key) = region_key(&msg.payload) else {
                    return true;
                };
                match self.0.get_mut(&key) {
                    Some(n) if *n > 1 => {
                        *n -= 1;
                        false
                    }
                    Some(_) => {
                        self.0.remove(&key);
                        true
                    }
                    None => true, // unknown: the back-end decides
                }
            }
            _ => true,
        }
    }
}

/// Starts relaying between `frontend` and `backend` on a thread of its own; it ends
/// when either side closes, shutting the other down.
pub fn spawn(name: &str, frontend: UnixStream, backend: UnixStream) -> io::Result<JoinHandle<()>> {
    let f2 = frontend.try_clone()?;
    let b2 = backend.try_clone()?;
    let label = name.to_string();
    // Back-end → front-end: replies, relayed verbatim.
    let back = std::thread::Builder::new()
        .name(format!("vu-rep-{name}"))
        .spawn(move || {
            while let Ok(Some(msg)) = read_message(&b2) {
                if write_message(&f2, &msg).is_err() {
                    break;
                }
            }
            let _ = f2.shutdown(std::net::Shutdown::Both);
        })?;
    std::thread::Builder::new()
        .name(format!("vu-req-{name}"))
        .spawn(move || {
            let mut protocol_features_acked = false;
            let mut regions = Regions::default();
            // Early SET_VRING_ENABLE states, by ring index, to replay after SET_FEATURES.
            let mut early: std::collections::BTreeMap<u32, u32> = std::collections::BTreeMap::new();
            loop {
                let msg = match read_message(&frontend) {
                    Ok(Some(msg)) => msg,
                    Ok(None) => break,
                    Err(e) => {
                        log::warn!("{label}: bad vhost-user message from the front-end: {e}");
                        break;
                    }
                };
                let request = msg.request();
                log::trace!(
                    "{label}: request {request} ({} bytes, {} fds)",
                    msg.payload.len(),
                    msg.fds.len()
                );
                if request == SET_VRING_ENABLE && !protocol_features_acked {
                    if let Some((index, num)) = vring_state(&msg.payload) {
                        log::debug!(
                            "{label}: SET_VRING_ENABLE({index}, {num}) before SET_FEATURES held by the relay"
                        );
                        early.insert(index, num);
                    }
                    if msg.flags() & FLAG_NEED_REPLY != 0
                        && write_message(&frontend, &ack(request)).is_err()
                    {
                        break;
                    }
                    continue;
                }
                if !regions.forward(&msg) {
                    log::debug!("{label}: request {request} for a region already known, answered by the relay");
                    if msg.flags() & FLAG_NEED_REPLY != 0
                        && write_message(&frontend, &ack(request)).is_err()
                    {
                        break;
                    }
                    continue;
                }
                if write_message(&backend, &msg).is_err() {
                    break;
                }
                if request == SET_FEATURES {
                    protocol_features_acked =
                        msg.u64_payload().unwrap_or(0) & VHOST_USER_F_PROTOCOL_FEATURES != 0;
                    if protocol_features_acked {
                        // No NEED_REPLY on the replay: the back-end must not answer
                        // anything the front-end does not expect.
                        let replay = std::mem::take(&mut early);
                        if replay
                            .into_iter()
                            .any(|(i, n)| write_message(&backend, &vring_enable(i, n)).is_err())
                        {
                            break;
                        }
                    }
                }
            }
            let _ = backend.shutdown(std::net::Shutdown::Both);
            let _ = back.join();
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region_msg(request: u32, gpa: u64) -> Message {
        let mut payload = vec![0u8; 8];
        for v in [gpa, 0x1000_0000, 0x7f00_0000_0000 + gpa, 0] {
            payload.extend_from_slice(&v.to_le_bytes());
        }
        let mut hdr = [0u8; HDR_LEN];
        hdr[0..4].copy_from_slice(&request.to_le_bytes());
        Message {
            hdr,
            payload,
            fds: Vec::new(),
        }
    }

    #[test]
    fn a_region_added_by_every_queue_pair_reaches_the_backend_once() {
        let mut r = Regions::default();
        // Four vhost devices (QEMU 7.2, queues=4) add the same two regions.
        let adds: Vec<bool> = (0..4)
            .flat_map(|_| [0u64, 0x1_0000_0000])
            .map(|gpa| r.forward(&region_msg(ADD_MEM_REG, gpa)))
            .collect();
        assert_eq!(adds, [true, true, false, false, false, false, false, false]);
        // Removed by all four: only the last removal goes through.
        let rems: Vec<bool> = (0..4)
            .map(|_| r.forward(&region_msg(REM_MEM_REG, 0)))
            .collect();
        assert_eq!(rems, [false, false, false, true]);
        // A fresh table forgets the counts; truncated payloads are left to the back-end.
        assert!(r.forward(&region_msg(SET_MEM_TABLE, 0)));
        assert!(r.forward(&region_msg(ADD_MEM_REG, 0x1_0000_0000)));
        let mut short = region_msg(ADD_MEM_REG, 0);
        short.payload.truncate(20);
        assert!(r.forward(&short));
        assert!(r.forward(&short));
        assert!(r.forward(&region_msg(REM_MEM_REG, 0x2_0000_0000)));
    }

    fn msg(request: u32, flags: u32, payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.extend_from_slice(&request.to_le_bytes());
        v.extend_from_slice(&flags.to_le_bytes());
        v.extend_from_slice(&u32::try_from(payload.len()).unwrap_or(0).to_le_bytes());
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn early_vring_enable_is_answered_and_the_rest_passes_through() {
        let (fe, fe_peer) = UnixStream::pair().expect("pair");
        let (be_peer, be) = UnixStream::pair().expect("pair");
        let relay = spawn("t", fe_peer, be_peer).expect("spawn");
        let mut fe_w = &fe;
        let mut be_r = &be;
        // An early SET_VRING_ENABLE with NEED_REPLY: acked by the relay, not forwarded.
        fe_w.write_all(&msg(SET_VRING_ENABLE, 1 | FLAG_NEED_REPLY, &[0; 8]))
            .expect("write");
        let mut reply = [0u8; 20];
        (&fe).read_exact(&mut reply).expect("ack");
        assert_eq!(
            &reply[..],
            &msg(SET_VRING_ENABLE, 1 | FLAG_REPLY, &[0; 8])[..]
        );
        // SET_FEATURES with the protocol bit: forwarded, then the held state of ring 0
        // (num 0) replayed; later SET_VRING_ENABLEs pass straight through.
        let features = (VHOST_USER_F_PROTOCOL_FEATURES | 1).to_le_bytes();
        fe_w.write_all(&msg(SET_FEATURES, 1, &features))
            .expect("write");
        fe_w.write_all(&msg(SET_VRING_ENABLE, 1, &[1, 0, 0, 0, 1, 0, 0, 0]))
            .expect("write");
        let mut got = vec![0u8; 20 + 20 + 20];
        be_r.read_exact(&mut got).expect("forwarded");
        assert_eq!(&got[..20], &msg(SET_FEATURES, 1, &features)[..]);
        assert_eq!(&got[20..40], &msg(SET_VRING_ENABLE, 1, &[0; 8])[..]);
        assert_eq!(
            &got[40..],
            &msg(SET_VRING_ENABLE, 1, &[1, 0, 0, 0, 1, 0, 0, 0])[..]
        );
        // Replies travel back verbatim.
        (&be)
            .write_all(&msg(1, 1 | FLAG_REPLY, &[7; 8]))
            .expect("reply");
        let mut r = [0u8; 20];
        (&fe).read_exact(&mut r).expect("reply relayed");
        assert_eq!(&r[..], &msg(1, 1 | FLAG_REPLY, &[7; 8])[..]);
        // Descriptors are passed along.
        let (a, _b) = UnixStream::pair().expect("pair");
        fe.send_with_fds(&[&msg(12, 1, &[0; 8])[..]], &[a.as_raw_fd()])
            .expect("send fd");
        let mut buf = [0u8; 20];
        let mut fds = [-1; 4];
        let mut iov = [libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: 20,
        }];
        // SAFETY: iov points at `buf`, a live local buffer.
        let (n, nfds) = unsafe { be.recv_with_fds(&mut iov, &mut fds) }.expect("recv");
        assert_eq!((n, nfds), (20, 1));
        // SAFETY: the descriptor was just received and is owned here.
        drop(unsafe { OwnedFd::from_raw_fd(fds[0]) });
        drop(fe);
        relay.join().expect("relay ends when the front-end closes");
    }
}
