//! A VNIC's connection loop: one thread per VNIC serves its socket forever, one
//! front-end connection at a time, with fresh device state per connection.
//!
//! Server mode binds the socket once and keeps the listener across connections (QEMU
//! `reconnect` comes back to the same path). Client mode connects to the front-end's
//! socket and retries until it appears. A stop request ends the loop in both modes.

use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arrayvec::ArrayVec;
use vhost::vhost_user::Listener;
use vhost_user_backend::{ShutdownHandle, VhostUserDaemon};
use vm_memory::{GuestMemoryAtomic, GuestMemoryMmap};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::EventFd;

use crate::backend::{self, NetBackend};
use crate::config::{SocketMode, VnicConfig};
use crate::dedicated;
use crate::fabric::Fabric;
use crate::proxy;
use crate::sockperm;
use crate::vnic::{Conn, Vnic};
use crate::vring;

/// How often a waiting loop checks for a stop request when it has no eventfd to
/// wait on (eventfd creation failed).
const TICK: Duration = Duration::from_millis(100);
/// Client mode: delay between connection attempts.
const RETRY: Duration = Duration::from_millis(500);

/// Errors that keep a VNIC from serving at all.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("{vnic}: cannot create the socket directory {dir}")]
    SocketDir {
        vnic: String,
        dir: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{vnic}: cannot listen on {path}")]
    Listen {
        vnic: String,
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{vnic}: {path} is in use by another process (another quiverd?)")]
    InUse { vnic: String, path: String },
    #[error("{vnic}: cannot set ownership or mode of {path}")]
    Permissions {
        vnic: String,
        path: String,
        #[source]
        source: sockperm::PermError,
    },
    #[error("{vnic}: cannot start the connection thread")]
    Spawn {
        vnic: String,
        #[source]
        source: std::io::Error,
    },
}

/// A stop request that wakes a waiting connection loop at once: an idle VNIC's
/// thread sleeps in poll(2) without a timeout instead of ticking.
struct Stop {
    requested: AtomicBool,
    /// Readable once a stop is requested; `None` if it could not be created (then
    /// waits tick every `TICK`).
    event: Option<EventFd>,
}

impl Stop {
    fn new() -> Self {
        Stop {
            requested: AtomicBool::new(false),
            event: EventFd::new(libc::EFD_NONBLOCK | libc::EFD_CLOEXEC).ok(),
        }
    }

    fn request(&self) {
        self.requested.store(true, Ordering::Relaxed);
        if let Some(e) = &self.event {
            let _ = e.write(1);
        }
    }

    fn requested(&self) -> bool {
        self.requested.load(Ordering::Relaxed)
    }

    /// Waits until `fd` is readable (true), a stop is requested or `timeout`
    /// passes (false). `None` waits without a time limit.
    fn wait(&self, fd: Option<RawFd>, timeout: Option<Duration>) -> bool {
        let deadline = timeout.map(|t| Instant::now() + t);
        while !self.requested() {
            let mut pfds: ArrayVec<libc::pollfd, 2> = ArrayVec::new();
            for f in fd
                .into_iter()
                .chain(self.event.as_ref().map(AsRawFd::as_raw_fd))
            {
                pfds.push(libc::pollfd {
                    fd: f,
                    events: libc::POLLIN,
                    revents: 0,
                });
            }
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            if left.is_some_and(|l| l.is_zero()) {
                return false;
            }
            let wait = match (left, &self.event) {
                (Some(l), Some(_)) => l,
                (Some(l), None) => l.min(TICK),
                (None, Some(_)) => Duration::MAX,
                (None, None) => TICK,
            };
            let ms = if wait == Duration::MAX {
                -1
            } else {
                // Round up, so a short wait does not become a busy loop.
                i32::try_from(wait.as_millis() + 1).unwrap_or(i32::MAX)
            };
            // SAFETY: `pfds` is a live array of `pfds.len()` pollfds on this stack
            // frame; the fds are the caller's listener and our eventfd, both open for
            // the call.
            let r = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, ms) };
            if r > 0 && fd.is_some() && pfds[0].revents != 0 {
                return true;
            }
        }
        false
    }
}

pub struct Session {
    stop: Arc<Stop>,
    shutdown: Arc<Mutex<Option<ShutdownHandle>>>,
    thread: Option<JoinHandle<()>>,
}

impl Session {
    /// Binds (server mode) and starts serving `vnic`.
    pub fn start(vnic: Arc<Vnic>, fabric: Arc<Fabric>) -> Result<Session, SessionError> {
        let cfg = vnic.cfg.clone();
        let listener = match cfg.mode {
            SocketMode::Server => Some(bind(&cfg)?),
            SocketMode::Client => None,
        };
        let stop = Arc::new(Stop::new());
        let shutdown = Arc::new(Mutex::new(None));
        let (s, h) = (stop.clone(), shutdown.clone());
        let thread = std::thread::Builder::new()
            .name(format!("vnic-{}", cfg.name))
            .spawn(move || serve(&vnic, &fabric, listener, &s, &h))
            .map_err(|source| SessionError::Spawn {
                vnic: cfg.name.clone(),
                source,
            })?;
        Ok(Session {
            stop,
            shutdown,
            thread: Some(thread),
        })
    }

    /// Disconnects the front-end, stops the loop and removes the socket (server mode).
    pub fn stop(mut self) {
        self.stop.request();
        if let Some(h) = self
            .shutdown
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
        {
            h.shutdown();
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn bind(cfg: &VnicConfig) -> Result<UnixListener, SessionError> {
    let path = &cfg.socket;
    let dir = path.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(dir).map_err(|source| SessionError::SocketDir {
        vnic: cfg.name.clone(),
        dir: dir.display().to_string(),
        source,
    })?;
    let listen_err = |source: std::io::Error| SessionError::Listen {
        vnic: cfg.name.clone(),
        path: path.display().to_string(),
        source,
    };
    // A socket someone still answers on belongs to a running process: never steal it.
    if UnixStream::connect(path).is_ok() {
        return Err(SessionError::InUse {
            vnic: cfg.name.clone(),
            path: path.display().to_string(),
        });
    }
    // Bind under a private name, set owner and mode, then rename into place: the socket
    // is never reachable with the wrong permissions, and a stale file from a killed
    // quiverd is replaced atomically.
    let file_name = path
        .file_name()
        .map_or_else(|| "vnic.sock".into(), |n| n.to_string_lossy().into_owned());
    let tmp = dir.join(format!(".{file_name}.{}.tmp", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let listener = UnixListener::bind(&tmp).map_err(listen_err)?;
    let placed = sockperm::apply(
        &tmp,
        cfg.socket_mode,
        cfg.socket_owner.as_deref(),
        cfg.socket_group.as_deref(),
    )
    .map_err(|source| SessionError::Permissions {
        vnic: cfg.name.clone(),
        path: path.display().to_string(),
        source,
    })
    .and_then(|()| std::fs::rename(&tmp, path).map_err(listen_err));
    if let Err(e) = placed {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(listener)
}

/// A private directory (mode 0700) for the back-end ends of relayed connections.
fn private_dir() -> std::io::Result<&'static Path> {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    if let Some(d) = DIR.get() {
        return Ok(d);
    }
    let d = std::env::temp_dir().join(format!("quiverd-{}", std::process::id()));
    std::fs::create_dir_all(&d)?;
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700))?;
    Ok(DIR.get_or_init(|| d))
}

/// Removes the private directory (at shutdown).
pub fn remove_private_dir() {
    if let Ok(d) = private_dir() {
        let _ = std::fs::remove_dir_all(d);
    }
}

/// Waits for the front-end: accepts on our socket (server mode) or connects to its
/// socket, retrying (client mode). None when stopped.
fn frontend(cfg: &VnicConfig, listener: Option<&UnixListener>, stop: &Stop) -> Option<UnixStream> {
    let mut warned = false;
    while !stop.requested() {
        let got = match listener {
            Some(l) => {
                if !stop.wait(Some(l.as_raw_fd()), None) {
                    return None;
                }
                l.accept().map(|(s, _)| s)
            }
            None => UnixStream::connect(&cfg.socket),
        };
        match got {
            Ok(s) => return Some(s),
            Err(e) => {
                if listener.is_some() {
                    log::warn!("{}: accept failed: {e}", cfg.name);
                } else if !warned {
                    log::info!(
                        "{}: waiting for the front-end to listen on {}: {e}",
                        cfg.name,
                        cfg.socket.display()
                    );
                    warned = true;
                }
                stop.wait(None, Some(RETRY));
            }
        }
    }
    None
}

/// Puts each worker's reclaim deadline timer into that worker's epoll. A worker whose
/// timer cannot be registered publishes its completions every burst instead.
fn register_deadlines(daemon: &VhostUserDaemon<NetBackend>, backend: &NetBackend, name: &str) {
    let id = u64::from(backend::deadline_event(backend.queue_pairs()));
    let handlers = daemon.get_epoll_handlers();
    for (t, fd) in backend.timer_fds().into_iter().enumerate() {
        let (Some(fd), Some(h)) = (fd, handlers.get(t)) else {
            continue;
        };
        if let Err(e) = h.register_listener(fd, EventSet::IN, id) {
            log::warn!("{name}: queue pair {t}: reclaim timer not registered: {e}");
            backend.disable_deferral(t);
        }
    }
}

/// Hands the back-end end of a fresh connection to vhost-user-backend: it only
/// accepts on a listener or connects to a path, so it gets a private listener of its
/// own for the moment of the accept.
fn attach_backend(
    daemon: &mut VhostUserDaemon<NetBackend>,
    name: &str,
    n: u64,
) -> Result<UnixStream, String> {
    let dir = private_dir().map_err(|e| format!("private directory: {e}"))?;
    let path = dir.join(format!("{name}.{n}.sock"));
    let mut listener = Listener::new(&path, true).map_err(|e| e.to_string())?;
    let ours = UnixStream::connect(&path).map_err(|e| e.to_string())?;
    daemon.start(&mut listener).map_err(|e| e.to_string())?;
    Ok(ours)
}

fn serve(
    vnic: &Arc<Vnic>,
    fabric: &Arc<Fabric>,
    listener: Option<UnixListener>,
    stop: &Stop,
    shutdown: &Mutex<Option<ShutdownHandle>>,
) {
    let name = vnic.cfg.name.clone();
    let mut attempt = 0u64;
    while !stop.requested() {
        let Some(front) = frontend(&vnic.cfg, listener.as_ref(), stop) else {
            break;
        };
        attempt += 1;
        let mem = GuestMemoryAtomic::new(GuestMemoryMmap::new());
        // vhost-user-backend creates the vrings inside `new`, on this thread.
        let _ = vring::take_created();
        let backend = NetBackend::new(vnic.clone(), fabric.clone());
        let mut daemon = match VhostUserDaemon::new(name.clone(), backend.clone(), mem.clone()) {
            Ok(d) => d,
            Err(e) => {
                log::error!("{name}: cannot create the vhost-user device: {e}");
                stop.wait(None, Some(RETRY));
                continue;
            }
        };
        let vrings = vring::take_created();
        register_deadlines(&daemon, &backend, &name);
        let conn = Arc::new(Conn::new(
            mem,
            vrings,
            daemon.get_epoll_handlers(),
            vnic.cfg.queue_pairs,
        ));
        backend.set_conn(conn.clone());
        let relay = match attach_backend(&mut daemon, &name, attempt)
            .and_then(|back| proxy::spawn(&name, front, back).map_err(|e| e.to_string()))
        {
            Ok(relay) => relay,
            Err(e) => {
                log::warn!("{name}: connection failed: {e}");
                stop.wait(None, Some(RETRY));
                continue;
            }
        };
        vnic.events.connects.fetch_add(1, Ordering::Relaxed);
        log::info!(
            "{name}: front-end connected on {}",
            vnic.cfg.socket.display()
        );
        vnic.set_conn(Some(conn.clone()));
        dedicated::sync(vnic, fabric);
        *shutdown.lock().unwrap_or_else(PoisonError::into_inner) = daemon.shutdown_handle();
        if stop.requested() {
            daemon.request_shutdown();
        }
        let result = daemon.wait();
        *shutdown.lock().unwrap_or_else(PoisonError::into_inner) = None;
        // Senders stop writing into this guest before its memory goes away (they may
        // still hold the old Conn for the rest of a burst; it keeps the memory mapped).
        vnic.set_conn(None);
        // Its frames go back to the shared queues (and are counted not_ready there).
        conn.dedicated
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .close();
        vnic.events.disconnects.fetch_add(1, Ordering::Relaxed);
        match result {
            Ok(()) => log::info!("{name}: front-end disconnected"),
            // A front-end that closes its socket (VM shut down, QEMU killed) is routine.
            Err(e) if e.to_string().contains("disconnected") => {
                log::info!("{name}: front-end disconnected ({e})")
            }
            Err(e) => log::warn!("{name}: front-end connection ended: {e}"),
        }
        // Dropping the daemon stops and joins its workers; the relay then ends.
        drop(daemon);
        let _ = relay.join();
    }
    // The listener was bound under another name and renamed: remove the path here.
    if listener.is_some() {
        let _ = std::fs::remove_file(&vnic.cfg.socket);
    }
}
