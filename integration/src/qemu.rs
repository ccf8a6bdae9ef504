//! Real guests under QEMU: the test guest of `vm-images/` (Debian's kernel and a
//! busybox initramfs whose init runs a shell script passed on the kernel command line)
//! booted with one vhost-user virtio-net NIC on a quiverd socket.
//!
//! Two QEMU versions are supported side by side: Debian 12's 7.2 (`qemu-system-x86_64`
//! on PATH) and 10.0 from bookworm-backports, unpacked by `scripts/setup-vm.sh` into
//! `vm-images/out/qemu10` (never installed over 7.2). KVM is used when the test guest
//! boots under it, TCG otherwise. Under TCG, QEMU 7.2 aborts in
//! `msix_set_vector_notifiers` when a vhost-user device uses MSI-X, so 7.2 TCG guests
//! boot with `pci=nomsi`; 10.0 keeps MSI-X on.
//!
//! The guest's init prints `QUIVER-READY` once eth0 is configured and
//! `QUIVER-RESULT <exit code>` after the script, then powers off; `Vm::wait_result`
//! waits for that line on the serial console (a file).

use std::fmt;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::{is_root, unique};

/// Environment override of the accelerator: `kvm` or `tcg`.
const ACCEL_ENV: &str = "QUIVER_ACCEL";
/// Environment override of the cache `vm-images/build.sh` and `setup-vm.sh` write to.
const CACHE_ENV: &str = "QUIVER_VM_CACHE";
/// How long the KVM probe guest may take to boot and run its (empty) script; a
/// working KVM needs 1–3 s.
const KVM_PROBE_TIMEOUT: Duration = Duration::from_secs(20);
/// Console line printed when the network is configured and the script starts.
pub const READY_MARKER: &str = "QUIVER-READY";
/// Console line prefix followed by the script's exit code.
pub const RESULT_MARKER: &str = "QUIVER-RESULT ";

/// Which QEMU to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QemuVersion {
    /// Debian 12's qemu-system-x86 (7.2), from PATH.
    V7_2,
    /// QEMU 10.0 from bookworm-backports, unpacked into the cache.
    V10,
}

impl fmt::Display for QemuVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            QemuVersion::V7_2 => "QEMU 7.2",
            QemuVersion::V10 => "QEMU 10.0",
        })
    }
}

/// The accelerator guests run under.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accel {
    Kvm,
    Tcg,
}

impl Accel {
    fn as_arg(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        }
    }
}

/// A QEMU binary and what it needs to run.
#[derive(Clone, Debug)]
pub struct Qemu {
    pub version: QemuVersion,
    pub binary: PathBuf,
    /// `-L` firmware directories, searched in order.
    pub data_dirs: Vec<PathBuf>,
    /// `QEMU_MODULE_DIR`: the unpacked 10.0 must not load 7.2's modules.
    pub module_dir: Option<PathBuf>,
    pub accel: Accel,
}

/// The repository root (the integration crate's parent).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// Where `vm-images/build.sh` and `scripts/setup-vm.sh` keep their output.
pub fn cache_dir() -> PathBuf {
    std::env::var_os(CACHE_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("vm-images/out"))
}

impl Qemu {
    /// The QEMU of `version`, or `None` (with the reason) when it is not installed.
    pub fn find(version: QemuVersion) -> Result<Qemu, String> {
        let (binary, data_dirs, module_dir) = match version {
            QemuVersion::V7_2 => {
                let out = Command::new("sh")
                    .args(["-c", "command -v qemu-system-x86_64"])
                    .output()
                    .map_err(|e| format!("running sh: {e}"))?;
                let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
                if path.is_empty() {
                    return Err("qemu-system-x86_64 not on PATH (scripts/setup-vm.sh installs qemu-system-x86)".into());
                }
                (PathBuf::from(path), Vec::new(), None)
            }
            QemuVersion::V10 => {
                let root = cache_dir().join("qemu10/root");
                let binary = root.join("usr/bin/qemu-system-x86_64");
                if !binary.exists() {
                    return Err(format!(
                        "{} missing (scripts/setup-vm.sh unpacks QEMU 10 from bookworm-backports)",
                        binary.display()
                    ));
                }
                // Its own data first; SeaBIOS and iPXE come from the host's packages
                // (bios-256k.bin is a symlink into /usr/share/seabios there).
                let data = vec![
                    root.join("usr/share/qemu"),
                    PathBuf::from("/usr/share/qemu"),
                ];
                (
                    binary,
                    data,
                    Some(root.join("usr/lib/x86_64-linux-gnu/qemu")),
                )
            }
        };
        let mut qemu = Qemu {
            version,
            binary,
            data_dirs,
            module_dir,
            accel: Accel::Tcg,
        };
        let version_out = qemu
            .command()
            .arg("--version")
            .output()
            .map_err(|e| format!("running {}: {e}", qemu.binary.display()))?;
        if !version_out.status.success() {
            return Err(format!(
                "{} --version failed: {}",
                qemu.binary.display(),
                String::from_utf8_lossy(&version_out.stderr)
            ));
        }
        qemu.accel = accel(&qemu);
        Ok(qemu)
    }

    /// A `Command` for this QEMU with its environment and firmware paths.
    fn command(&self) -> Command {
        let mut c = Command::new(&self.binary);
        if let Some(m) = &self.module_dir {
            c.env("QEMU_MODULE_DIR", m);
        }
        for d in &self.data_dirs {
            c.arg("-L").arg(d);
        }
        c
    }

    /// Whether guests need `pci=nomsi` (QEMU 7.2 under TCG, see the module doc).
    pub fn needs_nomsi(&self) -> bool {
        self.version == QemuVersion::V7_2 && self.accel == Accel::Tcg
    }
}

/// The accelerator: `QUIVER_ACCEL` if set, else KVM when the test guest boots under it.
/// Probed once per process; the answer is kept in the cache per host boot (keyed by
/// /proc/sys/kernel/random/boot_id), so a failing probe costs its timeout once.
fn accel(qemu: &Qemu) -> Accel {
    static ACCEL: OnceLock<Accel> = OnceLock::new();
    *ACCEL.get_or_init(|| match std::env::var(ACCEL_ENV).as_deref() {
        Ok("kvm") => Accel::Kvm,
        Ok("tcg") => Accel::Tcg,
        _ => {
            let boot_id =
                std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
            let memo = cache_dir().join(format!("accel-{}", boot_id.trim()));
            let a = match std::fs::read_to_string(&memo).as_deref() {
                Ok("kvm") => Accel::Kvm,
                Ok("tcg") => Accel::Tcg,
                _ => {
                    let a = probe_kvm(qemu);
                    let _ = std::fs::write(&memo, a.as_arg());
                    a
                }
            };
            eprintln!(
                "qemu: accelerator {} (probe cached in {})",
                a.as_arg(),
                memo.display()
            );
            a
        }
    })
}

/// Boots the test guest under KVM with an empty script. /dev/kvm can open, create VMs
/// and even run a few real-mode instructions where a Linux guest never gets anywhere
/// (nested virtualisation off: the vCPU spins in the host kernel), so only a guest that
/// reaches `QUIVER-RESULT 0` counts.
fn probe_kvm(qemu: &Qemu) -> Accel {
    if !Path::new("/dev/kvm").exists() {
        return Accel::Tcg;
    }
    let (Ok(dir), Ok(image)) = (crate::TempDir::new("kvmprobe"), GuestImage::get()) else {
        return Accel::Tcg;
    };
    let console = dir.path().join("console.log");
    let child = qemu
        .command()
        .args([
            "-accel",
            "kvm",
            "-machine",
            "q35",
            "-m",
            "256",
            "-nodefaults",
        ])
        .args(["-display", "none", "-no-reboot", "-serial"])
        .arg(format!("file:{}", console.display()))
        .arg("-kernel")
        .arg(&image.kernel)
        .arg("-initrd")
        .arg(&image.initrd)
        .args(["-append", "console=ttyS0 quiet panic=-1"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    let Ok(mut child) = child else {
        return Accel::Tcg;
    };
    let deadline = Instant::now() + KVM_PROBE_TIMEOUT;
    let ran = loop {
        let done = std::fs::read_to_string(&console)
            .is_ok_and(|t| t.lines().any(|l| l.trim_end() == "QUIVER-RESULT 0"));
        if done {
            break true;
        }
        if matches!(child.try_wait(), Ok(Some(_))) || Instant::now() > deadline {
            break false;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let _ = child.kill();
    let _ = child.wait();
    if ran {
        Accel::Kvm
    } else {
        Accel::Tcg
    }
}

/// The test guest's kernel and initramfs.
#[derive(Clone, Debug)]
pub struct GuestImage {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
}

impl GuestImage {
    /// Runs `vm-images/build.sh` (cached: seconds when nothing changed) once per
    /// process and returns its output.
    pub fn get() -> Result<GuestImage> {
        static BUILT: Mutex<Option<GuestImage>> = Mutex::new(None);
        let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(img) = built.as_ref() {
            return Ok(img.clone());
        }
        let script = repo_root().join("vm-images/build.sh");
        let out = Command::new(&script)
            .env(CACHE_ENV, cache_dir())
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {}", script.display()))?;
        if !out.status.success() {
            bail!(
                "{} failed ({}): {}{}",
                script.display(),
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let img = GuestImage {
            kernel: cache_dir().join("vmlinuz"),
            initrd: cache_dir().join("initrd.img"),
        };
        *built = Some(img.clone());
        Ok(img)
    }
}

/// One guest: its NIC attached to a quiverd VNIC, its address and its script.
#[derive(Clone, Debug)]
pub struct VmSpec {
    /// Short name used in file names and messages.
    pub name: String,
    /// quiverd's configuration file and the VNIC in it the guest's NIC attaches to.
    /// The NIC's QEMU arguments (memory backend, chardev, netdev, device) are what
    /// `quiverd qemu-args` prints for it, so the tests verify that output.
    pub config: PathBuf,
    pub vnic: String,
    /// `quiver.ip=` of the guest, e.g. `10.0.0.1/24`.
    pub ip: Option<String>,
    /// `quiver.mtu=` of the guest's eth0.
    pub mtu: Option<u16>,
    /// Shell script run by the guest's init (busybox sh); its exit code is the result.
    pub script: String,
    pub cpus: u8,
    pub memory_mb: u32,
}

impl VmSpec {
    /// A guest named after `vnic`, attached to it.
    pub fn new(config: &Path, vnic: &str) -> VmSpec {
        VmSpec {
            name: vnic.to_string(),
            config: config.to_path_buf(),
            vnic: vnic.to_string(),
            ip: None,
            mtu: None,
            script: String::new(),
            cpus: 1,
            memory_mb: 256,
        }
    }

    /// The QMP name of the guest's NIC (the netdev id `quiverd qemu-args` chose), for
    /// `set_link`.
    pub fn netdev_id(&self) -> String {
        if self.vnic.starts_with(|c: char| c.is_ascii_alphabetic()) {
            format!("{}-net", self.vnic)
        } else {
            format!("vnic-{}-net", self.vnic)
        }
    }
}

/// `quiverd qemu-args` for the guest's NIC, for this QEMU version and memory size.
pub fn nic_args(qemu: &Qemu, spec: &VmSpec) -> Result<Vec<String>> {
    let version = match qemu.version {
        QemuVersion::V7_2 => "7.2",
        QemuVersion::V10 => "10.0",
    };
    let out = Command::new(crate::quiverd_bin())
        .arg("qemu-args")
        .arg("--config")
        .arg(&spec.config)
        .args(["--qemu", version, "--format", "lines", "--mem"])
        .arg(format!("{}M", spec.memory_mb))
        .arg(&spec.vnic)
        .output()
        .context("running quiverd qemu-args")?;
    if !out.status.success() {
        bail!(
            "quiverd qemu-args {} failed ({}): {}",
            spec.vnic,
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut args: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    // The test image has no option ROMs (ipxe-qemu is not installed) and boots the
    // kernel directly, so the NIC gets none: the one change made to quiverd's output.
    for a in args.iter_mut().filter(|a| a.starts_with("virtio-net-pci,")) {
        a.push_str(",romfile=");
    }
    Ok(args)
}

/// A running guest; QEMU is killed on drop, and its console printed if the test panics.
pub struct Vm {
    pub name: String,
    pub console: PathBuf,
    pub stderr: PathBuf,
    child: Option<Child>,
    _dir: crate::TempDir,
}

impl Vm {
    /// Starts QEMU for `spec`. QEMU connects to the socket itself (and retries).
    pub fn boot(qemu: &Qemu, image: &GuestImage, spec: &VmSpec) -> Result<Vm> {
        Vm::boot_edited(qemu, image, spec, |_, _| {})
    }

    /// Starts QEMU for `spec` after `edit` has changed its command line (e.g. a
    /// listening chardev, a QMP socket); `edit` gets the VM's private directory.
    pub fn boot_edited(
        qemu: &Qemu,
        image: &GuestImage,
        spec: &VmSpec,
        edit: impl FnOnce(&Path, &mut Vec<String>),
    ) -> Result<Vm> {
        let dir = crate::TempDir::new(&format!("vm-{}", spec.name))?;
        let console = dir.path().join("console.log");
        let stderr = dir.path().join("qemu.log");
        let nic = nic_args(qemu, spec)?;
        let mut args = qemu_args(qemu, image, spec, &console, &nic);
        edit(dir.path(), &mut args);
        let err = std::fs::File::create(&stderr)?;
        let child = qemu
            .command()
            .args(&args)
            .stdin(Stdio::null())
            .stdout(err.try_clone()?)
            .stderr(err)
            .spawn()
            .with_context(|| format!("starting {}", qemu.binary.display()))?;
        eprintln!(
            "{}: {} {} ({} {})",
            spec.name,
            qemu.version,
            qemu.binary.display(),
            qemu.accel.as_arg(),
            args.join(" ")
        );
        Ok(Vm {
            name: spec.name.clone(),
            console,
            stderr,
            child: Some(child),
            _dir: dir,
        })
    }

    /// The VM's private directory (console, QEMU log, sockets the test adds).
    pub fn dir(&self) -> &Path {
        self._dir.path()
    }

    /// The serial console so far.
    pub fn console_text(&self) -> String {
        std::fs::read_to_string(&self.console).unwrap_or_default()
    }

    /// QEMU's own messages so far.
    pub fn qemu_log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Waits until a console line starts with `prefix`, returning the rest of that line.
    pub fn wait_line(&mut self, prefix: &str, timeout: Duration) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let text = self.console_text();
            if let Some(rest) = text
                .lines()
                .find_map(|l| l.trim_end_matches('\r').strip_prefix(prefix))
            {
                return Ok(rest.to_string());
            }
            let exited = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten());
            if let Some(status) = exited {
                bail!(
                    "{}: QEMU exited ({status}) before {prefix:?}\n{}",
                    self.name,
                    self.diagnostics()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "{}: no {prefix:?} within {timeout:?}\n{}",
                    self.name,
                    self.diagnostics()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Waits for `QUIVER-RESULT <rc>` and returns the script's exit code.
    pub fn wait_result(&mut self, timeout: Duration) -> Result<i32> {
        let rest = self.wait_line(RESULT_MARKER, timeout)?;
        rest.trim()
            .parse()
            .with_context(|| format!("{}: bad result line {rest:?}", self.name))
    }

    /// Console and QEMU log (repeated lines condensed), for failure messages.
    pub fn diagnostics(&self) -> String {
        format!(
            "--- {} console ---\n{}--- {} qemu log (condensed) ---\n{}",
            self.name,
            self.console_text(),
            self.name,
            condense(&self.qemu_log())
        )
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!("{}", self.diagnostics());
        }
    }
}

/// A QMP client on QEMU's `-qmp unix:PATH,server=on,wait=off` socket, past the
/// capabilities negotiation (QMP spec, docs/interop/qmp-spec.rst: greeting, then
/// `qmp_capabilities`, then commands; events may arrive between replies).
pub struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Qmp {
    /// Connects (retrying until `timeout`: QEMU may not have created the socket yet)
    /// and negotiates capabilities.
    pub fn connect(path: &Path, timeout: Duration) -> Result<Qmp> {
        let deadline = Instant::now() + timeout;
        let stream = loop {
            match UnixStream::connect(path) {
                Ok(s) => break s,
                Err(e) if Instant::now() > deadline => {
                    return Err(e).with_context(|| format!("connecting QMP {}", path.display()))
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        };
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        let mut qmp = Qmp {
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
        };
        let greeting = qmp.read_message()?;
        if greeting.get("QMP").is_none() {
            bail!("unexpected QMP greeting {greeting}");
        }
        qmp.execute("qmp_capabilities", serde_json::json!({}))?;
        Ok(qmp)
    }

    fn read_message(&mut self) -> Result<serde_json::Value> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            bail!("QMP connection closed");
        }
        serde_json::from_str(&line).with_context(|| format!("bad QMP message {line:?}"))
    }

    /// Runs `command` with `arguments` and returns its `return` value; events that
    /// arrive before the reply are skipped.
    pub fn execute(
        &mut self,
        command: &str,
        arguments: serde_json::Value,
    ) -> Result<serde_json::Value> {
        let msg = serde_json::json!({ "execute": command, "arguments": arguments });
        writeln!(self.writer, "{msg}")?;
        loop {
            let reply = self.read_message()?;
            if let Some(r) = reply.get("return") {
                return Ok(r.clone());
            }
            if let Some(e) = reply.get("error") {
                bail!("QMP {command}: {e}");
            }
        }
    }

    /// `set_link` on the netdev/device `name` (the NIC's link as the guest sees it).
    pub fn set_link(&mut self, name: &str, up: bool) -> Result<()> {
        self.execute("set_link", serde_json::json!({ "name": name, "up": up }))?;
        Ok(())
    }
}

/// The QEMU command line for `spec` (without the binary and `-L` paths), with `nic` the
/// NIC's arguments from `quiverd qemu-args`.
pub fn qemu_args(
    qemu: &Qemu,
    image: &GuestImage,
    spec: &VmSpec,
    console: &Path,
    nic: &[String],
) -> Vec<String> {
    let mut append = vec![
        "console=ttyS0".to_string(),
        "quiet".into(),
        "panic=-1".into(),
    ];
    if qemu.needs_nomsi() {
        append.push("pci=nomsi".into());
    }
    if let Some(ip) = &spec.ip {
        append.push(format!("quiver.ip={ip}"));
    }
    if let Some(mtu) = spec.mtu {
        append.push(format!("quiver.mtu={mtu}"));
    }
    if !spec.script.is_empty() {
        append.push(format!("quiver.cmd={}", base64(spec.script.as_bytes())));
    }
    let id = unique();
    // Multi-threaded TCG gives each vCPU a host thread. On this 2-core host under
    // load, an SMP guest's second vCPU was seen to miss its timer for good during
    // boot (RCU stalls, "timer wakeup didn't happen", no init after 300 s; QEMU 10).
    // Round-robin TCG runs all vCPUs on one thread: slower, but it cannot starve one.
    let accel = match (qemu.accel, spec.cpus) {
        (Accel::Tcg, n) if n > 1 => "tcg,thread=single",
        (a, _) => a.as_arg(),
    };
    let mut args: Vec<String> = [
        "-name",
        &format!("quiver-{}-{id}", spec.name),
        "-accel",
        accel,
        "-machine",
        "q35",
        "-m",
        &format!("{}M", spec.memory_mb),
        "-smp",
        &spec.cpus.to_string(),
        "-nodefaults",
        "-display",
        "none",
        "-no-reboot",
        "-serial",
        &format!("file:{}", console.display()),
        "-kernel",
        &image.kernel.display().to_string(),
        "-initrd",
        &image.initrd.display().to_string(),
        "-append",
        &append.join(" "),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    args.extend(nic.iter().cloned());
    args
}

/// A log with repeated lines folded into their first occurrence, counted: a front-end
/// that reconnects every second repeats the same few lines hundreds of times. A leading
/// `[timestamp ...]` (quiverd's log format) is dropped, so lines that differ only in
/// their time fold too.
pub fn condense(log: &str) -> String {
    let mut order: Vec<(&str, usize)> = Vec::new();
    for line in log.lines() {
        let key = match line.strip_prefix('[').and_then(|r| r.split_once(' ')) {
            Some((_, rest)) => rest,
            None => line,
        };
        match order.iter_mut().find(|(k, _)| *k == key) {
            Some((_, n)) => *n += 1,
            None => order.push((key, 1)),
        }
    }
    order
        .iter()
        .map(|(k, n)| {
            if *n > 1 {
                format!("{n}x {k}\n")
            } else {
                format!("{k}\n")
            }
        })
        .collect()
}

/// Standard base64 (RFC 4648 §4, with padding), for `quiver.cmd=`.
pub fn base64(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A guest-side shell snippet: retry `ping -c 1` to `ip` for `secs` rounds of 1–2 s
/// (the peer may still be booting), then `ping -c count -W 5`; exits non-zero on failure.
pub fn ping_script(ip: &str, count: u32, secs: u32) -> String {
    format!(
        "i=0\nuntil ping -c 1 -W 1 {ip} >/dev/null 2>&1; do\n  i=$((i + 1))\n  [ $i -ge {secs} ] && {{ echo \"{ip} unreachable\"; ip -s link show eth0; exit 1; }}\n  sleep 1\ndone\nping -c {count} -W 5 {ip} || exit 1\n"
    )
}

/// A guest-side shell snippet: wait up to `secs` seconds until this guest has answered
/// at least `n` ICMP echo requests (`InEchos` of /proc/net/snmp), so a peer pinging it
/// is done before it powers off.
pub fn wait_echoes_script(n: u32, secs: u32) -> String {
    format!(
        "echoes() {{ awk '/^Icmp:/ {{ if (!h) {{ for (i = 1; i <= NF; i++) if ($i == \"InEchos\") c = i; h = 1 }} else print $c }}' /proc/net/snmp; }}\n\
         i=0\nuntil [ \"$(echoes)\" -ge {n} ]; do\n  i=$((i + 1))\n  [ $i -ge {} ] && {{ echo \"only $(echoes) echo requests answered\"; exit 1; }}\n  sleep 0.2\ndone\n",
        secs * 5
    )
}

/// Serializes the VM tests of one test binary: TCG guests share a small machine.
pub fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// The QEMU to test, or `None` (after saying why) when the test cannot run here.
pub fn prerequisites(version: QemuVersion) -> Option<Qemu> {
    if !is_root() {
        eprintln!("skipped: needs root (namespaces, TAP, guest memory sharing)");
        return None;
    }
    match Qemu::find(version) {
        Ok(q) => Some(q),
        Err(why) => {
            eprintln!("skipped: {version}: {why}");
            None
        }
    }
}

/// Two addresses of a /24 chosen per test process and per test (`second_octet`), so
/// parallel runs of the suite do not share addresses. Only ever used inside network
/// namespaces the tests create, or between guests.
pub fn test_subnet(second_octet: u8) -> [std::net::Ipv4Addr; 2] {
    let x = u8::try_from(std::process::id() % 200).unwrap_or(0) + 20;
    [
        std::net::Ipv4Addr::new(10, second_octet, x, 1),
        std::net::Ipv4Addr::new(10, second_octet, x, 2),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (input, want) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(input.as_bytes()), want, "{input:?}");
        }
    }

    #[test]
    fn condense_counts_repeats_ignoring_timestamps() {
        let log = "[t1 WARN x] a\n[t2 WARN x] a\nb\n[t3 WARN x] a\nb\n";
        assert_eq!(condense(log), "3x WARN x] a\n2x b\n");
    }

    #[test]
    fn command_line_follows_the_version() {
        let image = GuestImage {
            kernel: "/k".into(),
            initrd: "/i".into(),
        };
        let spec = VmSpec::new(Path::new("/q.toml"), "a");
        let mut q = Qemu {
            version: QemuVersion::V7_2,
            binary: "qemu".into(),
            data_dirs: Vec::new(),
            module_dir: None,
            accel: Accel::Tcg,
        };
        let nic = ["-netdev".to_string(), "vhost-user,id=a-net".to_string()];
        let a = qemu_args(&q, &image, &spec, Path::new("/c"), &nic).join(" ");
        assert!(a.contains("pci=nomsi"), "{a}");
        assert!(a.ends_with("-netdev vhost-user,id=a-net"), "{a}");
        assert_eq!(spec.netdev_id(), "a-net");
        q.version = QemuVersion::V10;
        let a = qemu_args(&q, &image, &spec, Path::new("/c"), &nic).join(" ");
        assert!(!a.contains("pci=nomsi"), "{a}");
        assert_eq!(
            VmSpec::new(Path::new("/q"), "7x").netdev_id(),
            "vnic-7x-net"
        );
    }
}
