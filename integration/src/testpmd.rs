//! DPDK's `dpdk-testpmd` as a vhost-user front-end: `net_virtio_user` ports on quiverd's
//! sockets, driven interactively through its stdin and killed on drop (also when the
//! test process dies: PR_SET_PDEATHSIG).

use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};

use crate::{have, is_root, unique};

pub const TESTPMD: &str = "dpdk-testpmd";

/// Whether testpmd tests can run here; says why not. Under CI (`CI` set) a missing
/// prerequisite is an error instead, so the suite cannot pass by skipping.
pub fn available() -> Result<bool> {
    let why = if !is_root() {
        "needs root (hugepages for dpdk-testpmd)"
    } else if !have(TESTPMD) {
        "dpdk-testpmd not installed (scripts/setup.sh installs dpdk-dev)"
    } else {
        return Ok(true);
    };
    if std::env::var_os("CI").is_some() {
        bail!("cannot run under CI: {why}");
    }
    eprintln!("skipped: {why}");
    Ok(false)
}

/// One `net_virtio_user` port: its socket and devargs.
#[derive(Clone, Debug)]
pub struct Port {
    pub socket: PathBuf,
    pub mac: String,
    pub queues: u16,
    pub queue_size: u16,
    pub mrg_rxbuf: bool,
    pub in_order: bool,
    /// `cq=1`: a control virtqueue (testpmd handles it itself and tells the back-end
    /// with SET_VRING_ENABLE).
    pub cq: bool,
    /// `server=1`: testpmd listens and quiverd (a `mode = "client"` VNIC) connects.
    pub server: bool,
}

impl Port {
    pub fn new(socket: &Path, mac: &str) -> Port {
        Port {
            socket: socket.to_path_buf(),
            mac: mac.to_string(),
            queues: 1,
            queue_size: 1024,
            mrg_rxbuf: true,
            in_order: false,
            cq: false,
            server: false,
        }
    }

    /// The `--vdev` value for port `index`.
    pub fn vdev(&self, index: usize) -> String {
        format!(
            "net_virtio_user{index},path={},mac={},queues={},queue_size={},mrg_rxbuf={},in_order={},cq={}{}",
            self.socket.display(),
            self.mac,
            self.queues,
            self.queue_size,
            u8::from(self.mrg_rxbuf),
            u8::from(self.in_order),
            u8::from(self.cq),
            if self.server { ",server=1" } else { "" },
        )
    }
}

/// A running `dpdk-testpmd -i`.
pub struct Testpmd {
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    pub log: PathBuf,
}

impl Testpmd {
    /// Starts testpmd on CPUs 0,1 with `ports`; `args` are testpmd's own options
    /// (after `--`, besides `-i`), e.g. `--forward-mode=mac`. Output goes to a log in
    /// `dir`.
    pub fn start(dir: &Path, ports: &[Port], args: &[String]) -> Result<Testpmd> {
        let log = dir.join(format!("testpmd-{}.log", unique()));
        let out = std::fs::File::create(&log)?;
        let mut cmd = Command::new(TESTPMD);
        // SAFETY: the closure runs in the forked child before exec and only calls
        // prctl(2), which is async-signal-safe; it touches no memory of the parent.
        unsafe {
            cmd.pre_exec(|| {
                // testpmd outlives a killed test otherwise (and ignores SIGTERM while a
                // server=1 port waits for its client).
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        cmd.args([
            "-l",
            "0,1",
            "--no-pci",
            "--in-memory",
            "--single-file-segments",
        ])
        .arg(format!("--file-prefix=quiver-tp-{}", unique()));
        for (i, p) in ports.iter().enumerate() {
            cmd.arg("--vdev").arg(p.vdev(i));
        }
        let mut child = cmd
            .args(["--", "-i"])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("starting {TESTPMD}"))?;
        let stdin = child.stdin.take();
        Ok(Testpmd {
            child: Some(child),
            stdin,
            log,
        })
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends one interactive command.
    pub fn command(&mut self, line: &str) -> Result<()> {
        let stdin = self.stdin.as_mut().context("stdin closed")?;
        writeln!(stdin, "{line}").with_context(|| format!("testpmd: {line}: {}", self.log_text()))
    }

    /// Fails if testpmd has exited already.
    pub fn check_running(&mut self) -> Result<()> {
        if let Some(status) = self
            .child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
        {
            bail!("{TESTPMD} exited with {status}:\n{}", self.log_text());
        }
        Ok(())
    }

    /// `stop` (prints the forward statistics), `quit`, and waits for the exit. Returns
    /// the whole output.
    pub fn finish(&mut self) -> Result<String> {
        self.command("stop")?;
        self.command("quit")?;
        drop(self.stdin.take());
        let mut child = self.child.take().context("not running")?;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = child.try_wait()? {
                let text = self.log_text();
                ensure!(status.success(), "{TESTPMD} exited with {status}:\n{text}");
                return Ok(text);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!("{TESTPMD} did not quit:\n{}", self.log_text());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Testpmd {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!("--- testpmd log ---\n{}", self.log_text());
        }
    }
}

/// testpmd's per-port "RX-packets" from the "Forward statistics for port N" blocks that
/// `stop` prints.
pub fn forward_rx_packets(output: &str) -> Vec<(u16, u64)> {
    let mut out = Vec::new();
    let mut lines = output.lines();
    while let Some(line) = lines.next() {
        let Some(rest) = line.split("Forward statistics for port ").nth(1) else {
            continue;
        };
        let Some(port) = rest.split_whitespace().next().and_then(|p| p.parse().ok()) else {
            continue;
        };
        let rx = lines
            .next()
            .and_then(|l| l.split("RX-packets:").nth(1))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok());
        if let Some(rx) = rx {
            out.push((port, rx));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_forward_statistics() {
        let text = "\
  ---------------------- Forward statistics for port 0  ----------------------
  RX-packets: 194784         RX-dropped: 0             RX-total: 194784
  TX-packets: 181632         TX-dropped: 0             TX-total: 181632

  ---------------------- Forward statistics for port 1  ----------------------
  RX-packets: 181568         RX-dropped: 0             RX-total: 181568
  +++++++++++++++ Accumulated forward statistics for all ports+++++++++++++++
  RX-packets: 376352         RX-dropped: 0             RX-total: 376352
";
        assert_eq!(forward_rx_packets(text), vec![(0, 194_784), (1, 181_568)]);
    }

    #[test]
    fn vdev_carries_every_devarg() {
        let mut p = Port::new(Path::new("/d/vm1.sock"), "52:54:00:00:00:01");
        p.queues = 2;
        p.cq = true;
        p.server = true;
        assert_eq!(
            p.vdev(3),
            "net_virtio_user3,path=/d/vm1.sock,mac=52:54:00:00:00:01,queues=2,queue_size=1024,\
             mrg_rxbuf=1,in_order=0,cq=1,server=1"
        );
    }
}
