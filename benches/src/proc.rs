//! Child processes that never outlive the harness, CPU time from /proc, and the
//! hugepage pool (raised if too small, restored afterwards).

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// A child process: SIGTERM, then SIGKILL after a grace period, when dropped. It also
/// gets SIGKILL if the harness dies first (PR_SET_PDEATHSIG).
pub struct Proc {
    pub name: String,
    child: Option<Child>,
}

impl Proc {
    /// Spawns `cmd` (configured by the caller) as `name`.
    pub fn spawn(name: &str, cmd: &mut Command) -> Result<Proc> {
        // SAFETY: the closure runs in the forked child before exec and only calls
        // prctl(2), which is async-signal-safe; it touches no memory of the parent.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {name}: {cmd:?}"))?;
        Ok(Proc {
            name: name.to_owned(),
            child: Some(child),
        })
    }

    pub fn pid(&self) -> i32 {
        self.child
            .as_ref()
            .and_then(|c| i32::try_from(c.id()).ok())
            .unwrap_or(0)
    }

    pub fn child_mut(&mut self) -> Option<&mut Child> {
        self.child.as_mut()
    }

    /// Fails if the process has exited.
    pub fn check_running(&mut self) -> Result<()> {
        if let Some(c) = self.child.as_mut() {
            if let Some(status) = c.try_wait()? {
                bail!("{} exited with {status}", self.name);
            }
        }
        Ok(())
    }

    pub fn signal(&self, sig: i32) {
        let pid = self.pid();
        if pid > 0 {
            // SAFETY: kill(2) on the pid of a child this Proc owns and has not reaped
            // (so the pid cannot have been reused); no memory is passed.
            unsafe {
                libc::kill(pid, sig);
            }
        }
    }

    /// Waits up to `grace` for the process to exit by itself, then SIGTERM, then
    /// SIGKILL; reaps it.
    pub fn finish(&mut self, grace: Duration) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let wait = |child: &mut Child, d: Duration| {
            let deadline = Instant::now() + d;
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return true;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            false
        };
        if wait(&mut child, grace) {
            return;
        }
        if let Ok(pid) = i32::try_from(child.id()) {
            // SAFETY: kill(2) on our own unreaped child; no memory is passed.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
        if !wait(&mut child, Duration::from_secs(3)) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.finish(Duration::ZERO);
    }
}

/// `taskset -c CPU program`: the process and every thread it starts stay on CPU.
pub fn pinned(cpu: usize, program: &Path) -> Command {
    let mut cmd = Command::new("taskset");
    cmd.arg("-c").arg(cpu.to_string()).arg(program);
    cmd
}

/// User + system CPU time of a process (all its threads), in seconds.
pub fn cpu_seconds(pid: i32) -> Result<f64> {
    let path = format!("/proc/{pid}/stat");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = text
        .rsplit_once(')')
        .map(|(_, r)| r)
        .with_context(|| format!("{path}: no command field"))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); utime and stime are fields 14 and 15.
    let field = |n: usize| -> Result<u64> {
        fields
            .get(n - 3)
            .and_then(|f| f.parse().ok())
            .with_context(|| format!("{path}: field {n} missing or not a number"))
    };
    let ticks = field(14)? + field(15)?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = if hz > 0 { hz as f64 } else { 100.0 };
    Ok(ticks as f64 / hz)
}

/// Busy time (everything but idle and iowait) of one CPU since boot, in seconds, from
/// /proc/stat.
pub fn cpu_busy_seconds(cpu: usize) -> Result<f64> {
    let text = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
    let name = format!("cpu{cpu}");
    let line = text
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name.as_str()))
        .with_context(|| format!("/proc/stat has no {name} line"))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is inside user).
    let busy: u64 = v.iter().take(8).sum::<u64>()
        - v.get(3).copied().unwrap_or(0)
        - v.get(4).copied().unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = if hz > 0 { hz as f64 } else { 100.0 };
    Ok(busy as f64 / hz)
}

const NR_HUGEPAGES: &str = "/proc/sys/vm/nr_hugepages";

/// Raises vm.nr_hugepages to at least `want` and puts the old value back on drop.
pub struct Hugepages {
    restore: Option<u64>,
    path: PathBuf,
}

impl Hugepages {
    pub fn ensure(want: u64) -> Result<Hugepages> {
        let path = PathBuf::from(NR_HUGEPAGES);
        let read = || -> Result<u64> {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {NR_HUGEPAGES}"))?;
            text.trim()
                .parse()
                .with_context(|| format!("{NR_HUGEPAGES}: {text:?} is not a number"))
        };
        let before = read()?;
        if before >= want {
            return Ok(Hugepages {
                restore: None,
                path,
            });
        }
        std::fs::write(&path, want.to_string()).with_context(|| {
            format!("raising {NR_HUGEPAGES} from {before} to {want} (run as root)")
        })?;
        let now = read()?;
        eprintln!("hugepages: {NR_HUGEPAGES} {before} -> {now} (restored at exit)");
        if now < want {
            eprintln!("hugepages: warning: the kernel gave {now} of {want} pages");
        }
        Ok(Hugepages {
            restore: Some(before),
            path,
        })
    }
}

impl Drop for Hugepages {
    fn drop(&mut self) {
        if let Some(before) = self.restore {
            match std::fs::write(&self.path, before.to_string()) {
                Ok(()) => eprintln!("hugepages: {NR_HUGEPAGES} restored to {before}"),
                Err(e) => eprintln!("hugepages: cannot restore {NR_HUGEPAGES} to {before}: {e}"),
            }
        }
    }
}

/// Free 2 MiB hugepages now (HugePages_Free in /proc/meminfo).
pub fn free_hugepages() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("HugePages_Free:"))
        .and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_cpu_time_is_readable() {
        let pid = i32::try_from(std::process::id()).unwrap_or(0);
        let t = cpu_seconds(pid).expect("own /proc stat");
        assert!(t >= 0.0);
        assert!(cpu_busy_seconds(0).expect("cpu0 in /proc/stat") > 0.0);
    }
}
