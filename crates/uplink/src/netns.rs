//! Network namespaces as made by `ip netns add` (bind mounts under
//! `/var/run/netns`): running a closure inside one on a short-lived helper
//! thread, and test fixtures ([`NetnsGuard`], [`exec`], [`unique_name`]) that
//! other crates' integration tests reuse.

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;

/// Where `ip netns add` bind-mounts named namespaces.
pub const NETNS_RUN_DIR: &str = "/var/run/netns";

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("invalid network namespace name {name:?}")]
    InvalidName { name: String },
    #[error("network namespace {name} not found (create it with `ip netns add {name}`)")]
    NotFound { name: String },
    #[error("cannot open network namespace {name}")]
    Open {
        name: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot enter network namespace {name}")]
    Enter {
        name: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot spawn helper thread for network namespace {name}")]
    Spawn {
        name: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot run {cmd}")]
    CommandSpawn {
        cmd: String,
        #[source]
        source: io::Error,
    },
    #[error("{cmd} failed ({status}): {stderr}")]
    CommandFailed {
        cmd: String,
        status: ExitStatus,
        stderr: String,
    },
}

/// Reject names that would escape [`NETNS_RUN_DIR`] or that `ip` refuses.
fn validate_name(name: &str) -> Result<(), NetnsError> {
    let bad = name.is_empty()
        || name == "."
        || name == ".."
        || name.contains('/')
        || name.contains('\0')
        || name.chars().any(char::is_whitespace);
    if bad {
        return Err(NetnsError::InvalidName {
            name: name.to_owned(),
        });
    }
    Ok(())
}

/// Path of the bind mount of namespace `name`.
fn netns_path(name: &str) -> PathBuf {
    PathBuf::from(NETNS_RUN_DIR).join(name)
}

/// Run `f` inside network namespace `name` and return its result.
///
/// `f` runs on a short-lived helper thread that `setns(CLONE_NEWNET)`s into the
/// namespace and then exits, so the calling thread's namespace never changes.
/// Sockets and tun fds created by `f` stay bound to that namespace and keep
/// working from any thread afterwards. A panic in `f` resumes on the caller.
pub(crate) fn run_in<T, F>(name: &str, f: F) -> Result<T, NetnsError>
where
    F: FnOnce() -> T + Send,
    T: Send,
{
    validate_name(name)?;
    let ns = File::open(netns_path(name)).map_err(|source| {
        if source.kind() == io::ErrorKind::NotFound {
            NetnsError::NotFound {
                name: name.to_owned(),
            }
        } else {
            NetnsError::Open {
                name: name.to_owned(),
                source,
            }
        }
    })?;
    thread::scope(|scope| {
        let helper = thread::Builder::new()
            .name("quiver-netns".to_owned())
            .spawn_scoped(scope, move || {
                // SAFETY: `ns` is an open fd owned by this closure and outlives the
                // call; setns only changes the namespace of this helper thread,
                // which exits when the closure returns.
                let ret = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
                if ret < 0 {
                    return Err(NetnsError::Enter {
                        name: name.to_owned(),
                        source: io::Error::last_os_error(),
                    });
                }
                Ok(f())
            })
            .map_err(|source| NetnsError::Spawn {
                name: name.to_owned(),
                source,
            })?;
        helper
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// A process-wide unique name: `prefix`, the pid and a counter, e.g. `qv4711x3`.
/// Keep `prefix` to 4 bytes or less when the name is used for an interface
/// (interface names are at most 15 bytes).
pub fn unique_name(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("{prefix}{}x{n}", std::process::id())
}

fn run(cmd: &mut Command) -> Result<Output, NetnsError> {
    let shown = format!("{cmd:?}");
    let out = cmd.output().map_err(|source| NetnsError::CommandSpawn {
        cmd: shown.clone(),
        source,
    })?;
    if !out.status.success() {
        return Err(NetnsError::CommandFailed {
            cmd: shown,
            status: out.status,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_owned(),
        });
    }
    Ok(out)
}

/// A named network namespace created with `ip netns add` and deleted with
/// `ip netns del` on drop (which also destroys the interfaces inside it).
/// For tests and fixtures; needs root.
#[derive(Debug)]
pub struct NetnsGuard {
    name: String,
}

impl NetnsGuard {
    /// Create namespace `name`; fails if it already exists.
    pub fn new(name: impl Into<String>) -> Result<Self, NetnsError> {
        let name = name.into();
        validate_name(&name)?;
        run(Command::new("ip").args(["netns", "add", &name]))?;
        Ok(NetnsGuard { name })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Run `args` (a program and its arguments) inside this namespace.
    pub fn exec<S: AsRef<OsStr>>(&self, args: &[S]) -> io::Result<Output> {
        exec(&self.name, args)
    }
}

impl Drop for NetnsGuard {
    fn drop(&mut self) {
        if let Err(err) = run(Command::new("ip").args(["netns", "del", &self.name])) {
            log::warn!("cannot delete network namespace {}: {err}", self.name);
        }
    }
}

/// Run `args` (a program and its arguments) inside namespace `ns` via
/// `ip netns exec`. The exit status is returned, not checked.
pub fn exec<S: AsRef<OsStr>>(ns: &str, args: &[S]) -> io::Result<Output> {
    Command::new("ip")
        .args(["netns", "exec", ns])
        .args(args)
        .output()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_names_are_rejected_before_touching_the_filesystem() {
        for name in ["", ".", "..", "a/b", "../etc", "a b"] {
            let err = run_in(name, || ()).unwrap_err();
            assert!(
                matches!(err, NetnsError::InvalidName { .. }),
                "{name:?}: {err}"
            );
        }
    }

    #[test]
    fn missing_namespace_is_not_found_and_suggests_ip_netns_add() {
        let name = unique_name("qv-missing");
        let err = run_in(&name, || ()).unwrap_err();
        assert!(matches!(&err, NetnsError::NotFound { name: n } if *n == name));
        assert!(err.to_string().contains(&format!("ip netns add {name}")));
    }

    #[test]
    fn unique_names_differ() {
        assert_ne!(unique_name("a"), unique_name("a"));
    }

    /// The closure sees the namespace's inode, the caller keeps its own.
    #[test]
    fn run_in_enters_the_namespace_without_moving_the_caller() {
        let guard = NetnsGuard::new(unique_name("qv-ns")).unwrap();
        let own = std::fs::metadata("/proc/thread-self/ns/net").unwrap();
        let inside = run_in(guard.name(), || {
            std::fs::metadata("/proc/thread-self/ns/net")
        })
        .unwrap()
        .unwrap();
        let target = std::fs::metadata(netns_path(guard.name())).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_eq!(inside.ino(), target.ino());
        assert_ne!(inside.ino(), own.ino());
        let after = std::fs::metadata("/proc/thread-self/ns/net").unwrap();
        assert_eq!(after.ino(), own.ino());

        let out = guard.exec(&["ip", "-o", "link", "show", "lo"]).unwrap();
        assert!(out.status.success());
    }

    #[test]
    fn guard_deletes_namespace_on_drop() {
        let name = unique_name("qv-ns");
        {
            let _guard = NetnsGuard::new(name.clone()).unwrap();
            assert!(netns_path(&name).exists());
        }
        assert!(!netns_path(&name).exists());
    }
}
