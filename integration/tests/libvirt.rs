//! libvirt (issue 3, "libvirt"): what `quiverd libvirt-xml` prints boots a real guest
//! under a real libvirtd.
//!
//! quiverd's `<interface type='vhostuser'>` and `<memoryBacking>` are put, unchanged,
//! into a complete TCG domain (Debian's QEMU 7.2 as the emulator, the `vm-images/`
//! kernel and initramfs booted directly, the serial console to a file). The domain
//! passes `virt-xml-validate`, then `virsh define` and `virsh start` boot it, and the
//! guest pings a namespace host through quiverd's TAP uplink.
//!
//! libvirt runs QEMU as its own DAC user (libvirt-qemu on Debian), so the socket is
//! made reachable the way a deployment would: quiverd gives it libvirt's QEMU group and
//! mode 0660 (`socket_group`, `socket_mode`), and it lives in a directory of mode 0750
//! with that group, which also holds the kernel, the initramfs and the console. Nothing
//! is world-accessible. The test checks that QEMU really ran as that user, not root.
//!
//! libvirtd and virtlogd (libvirt-daemon-system, installed by `scripts/setup.sh`) are
//! started when they do not answer: with systemctl when systemd is PID 1, else as
//! `virtlogd -d` and `libvirtd -d`. They are left running for the next test run. The
//! domain is destroyed and undefined on drop, whatever happened.
//!
//! Without root the test is skipped; under CI (`CI=true`) that, and any missing
//! program, is a failure.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use quiver_integration::qemu::{
    base64, condense, ping_script, serial, test_subnet, GuestImage, Qemu, QemuVersion,
    RESULT_MARKER,
};
use quiver_integration::{is_root, quiverd_bin, vnic_total, Quiverd, TempDir};
use quiver_uplink::netns::{unique_name, NetnsGuard};

const URI: &str = "qemu:///system";
const MAC: &str = "52:54:00:00:00:01";
const VNIC: &str = "vm1";
/// Boot plus script, under TCG on a busy machine.
const GUEST_TIMEOUT: Duration = Duration::from_secs(300);
/// How long the guest keeps retrying to reach the namespace host.
const REACH_SECS: u32 = 45;
const PINGS: u32 = 3;
/// Any one virsh command; libvirtd answers in well under a second when it is up.
const VIRSH_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a freshly started libvirtd may take to answer.
const LIBVIRTD_START_TIMEOUT: Duration = Duration::from_secs(30);
/// What libvirt keeps of a domain's QEMU: its command line and messages.
const QEMU_LOG_DIR: &str = "/var/log/libvirt/qemu";
const QEMU_PID_DIR: &str = "/run/libvirt/qemu";

/// True under CI, where a test that cannot run must fail rather than skip.
fn under_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// A program on PATH or in the sbin directories (libvirtd and virtlogd live in
/// /usr/sbin, which a non-login PATH may lack).
fn program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Output of a command run to completion within `timeout` (then killed).
struct Ran {
    ok: bool,
    stdout: String,
    stderr: String,
}

fn run(cmd: &mut Command, timeout: Duration) -> Result<Ran> {
    let shown = format!("{cmd:?}");
    let dir = TempDir::new("libvirt-run")?;
    let (out_path, err_path) = (dir.path().join("out"), dir.path().join("err"));
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path)?)
        .stderr(std::fs::File::create(&err_path)?)
        .spawn()
        .with_context(|| format!("starting {shown}"))?;
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{shown} did not finish within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Ok(Ran {
        ok: status.success(),
        stdout: std::fs::read_to_string(&out_path).unwrap_or_default(),
        stderr: std::fs::read_to_string(&err_path).unwrap_or_default(),
    })
}

/// `virsh -c qemu:///system ARGS`, failing with virsh's message.
fn virsh(args: &[&str]) -> Result<String> {
    let r = run(
        Command::new("virsh").args(["-c", URI]).args(args),
        VIRSH_TIMEOUT,
    )?;
    ensure!(r.ok, "virsh {}: {}{}", args.join(" "), r.stdout, r.stderr);
    Ok(r.stdout)
}

/// Makes sure libvirtd answers on qemu:///system, starting it (and virtlogd, which
/// keeps QEMU's log) if it does not.
fn ensure_libvirtd() -> Result<()> {
    if virsh(&["version"]).is_ok() {
        return Ok(());
    }
    let systemd = std::fs::read_to_string("/proc/1/comm").is_ok_and(|c| c.trim_end() == "systemd");
    let mut started = String::new();
    if systemd {
        let r = run(
            Command::new("systemctl").args(["start", "virtlogd", "libvirtd"]),
            VIRSH_TIMEOUT,
        )?;
        started = format!("systemctl start: {}{}", r.stdout, r.stderr);
    } else {
        for daemon in ["virtlogd", "libvirtd"] {
            let bin = program(daemon).with_context(|| {
                format!("{daemon} not found (scripts/setup.sh installs libvirt-daemon-system)")
            })?;
            // -d forks once the daemon is initialised; a second instance fails on the
            // pid file lock, which is fine: one is running.
            let r = run(Command::new(bin).arg("-d"), LIBVIRTD_START_TIMEOUT)?;
            started.push_str(&format!("{daemon} -d: {}{}", r.stdout, r.stderr));
        }
    }
    let deadline = Instant::now() + LIBVIRTD_START_TIMEOUT;
    loop {
        match virsh(&["version"]) {
            Ok(_) => return Ok(()),
            Err(e) if Instant::now() > deadline => {
                bail!("libvirtd does not answer after starting it ({started}): {e:#}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

/// The uid and gid libvirt runs QEMU domains as: the DAC `<baselabel>` of the `qemu`
/// domain type in the capabilities, e.g. `+64055:+64055`.
fn qemu_dac_ids() -> Result<(u32, u32)> {
    let caps = virsh(&["capabilities"])?;
    let label = ["<baselabel type='qemu'>", "<baselabel type='kvm'>"]
        .iter()
        .find_map(|open| caps.split(open).nth(1))
        .and_then(|rest| rest.split('<').next())
        .with_context(|| format!("no DAC baselabel in the capabilities:\n{caps}"))?;
    let (uid, gid) = label
        .split_once(':')
        .with_context(|| format!("bad DAC label {label:?}"))?;
    let id = |s: &str| {
        s.trim_start_matches('+')
            .parse::<u32>()
            .with_context(|| format!("bad DAC label {label:?}"))
    };
    Ok((id(uid)?, id(gid)?))
}

/// The name of group `gid` in /etc/group, or the number.
fn group_name(gid: u32) -> String {
    let groups = std::fs::read_to_string("/etc/group").unwrap_or_default();
    groups
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            (f.len() > 2 && f[2] == gid.to_string()).then(|| f[0].to_string())
        })
        .unwrap_or_else(|| gid.to_string())
}

/// Whether others (libvirt's QEMU user) can traverse `dir` and every directory above.
fn traversable(dir: &Path) -> bool {
    dir.ancestors().all(|a| {
        std::fs::metadata(a).is_ok_and(|m| m.is_dir() && m.permissions().mode() & 0o001 != 0)
    })
}

/// A directory only root and group `gid` can enter (0750), for everything QEMU opens,
/// in the temporary directory if QEMU's user can get there (TMPDIR may be a private
/// 0700 directory), else in /tmp.
fn libvirt_dir(gid: u32) -> Result<TempDir> {
    let base = [std::env::temp_dir(), PathBuf::from("/tmp")]
        .into_iter()
        .find(|b| traversable(b))
        .with_context(|| {
            format!(
                "neither {} nor /tmp can be traversed by libvirt's QEMU user",
                std::env::temp_dir().display()
            )
        })?;
    let path = base.join(format!("quiver-libvirt-{}", quiver_integration::unique()));
    std::fs::create_dir(&path).with_context(|| format!("creating {}", path.display()))?;
    let dir = TempDir(path);
    std::os::unix::fs::chown(dir.path(), None, Some(gid))
        .with_context(|| format!("chgrp {gid} {}", dir.path().display()))?;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o750))?;
    Ok(dir)
}

/// The part of `text` from `open` through `close`.
fn element<'a>(text: &'a str, open: &str, close: &str) -> Result<&'a str> {
    let start = text
        .find(open)
        .with_context(|| format!("no {open} in {text}"))?;
    let end = text[start..]
        .find(close)
        .with_context(|| format!("no {close} in {text}"))?;
    Ok(&text[start..start + end + close.len()])
}

/// XML character data (the paths and command line the test puts in the domain).
fn xml_text(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('\'', "&apos;")
}

/// Where the guest's files are and what it runs.
struct Guest<'a> {
    name: &'a str,
    emulator: &'a Path,
    kernel: &'a Path,
    initrd: &'a Path,
    console: &'a Path,
    cmdline: &'a str,
}

/// A complete TCG domain around quiverd's two elements, which are used verbatim.
fn domain_xml(g: &Guest<'_>, memory_backing: &str, interface: &str) -> String {
    let path = |p: &Path| xml_text(&p.display().to_string());
    format!(
        "<domain type='qemu'>\n  <name>{name}</name>\n  <memory unit='MiB'>256</memory>\n\
         {memory_backing}\n  <vcpu>1</vcpu>\n  <os>\n    \
         <type arch='x86_64' machine='q35'>hvm</type>\n    <kernel>{kernel}</kernel>\n    \
         <initrd>{initrd}</initrd>\n    <cmdline>{cmdline}</cmdline>\n  </os>\n  \
         <on_poweroff>destroy</on_poweroff>\n  <on_reboot>destroy</on_reboot>\n  \
         <on_crash>destroy</on_crash>\n  <devices>\n    <emulator>{emulator}</emulator>\n\
         {interface}\n    <serial type='file'>\n      <source path='{console}'/>\n      \
         <target port='0'/>\n    </serial>\n  </devices>\n</domain>\n",
        name = xml_text(g.name),
        kernel = path(g.kernel),
        initrd = path(g.initrd),
        cmdline = xml_text(g.cmdline),
        emulator = path(g.emulator),
        console = path(g.console),
    )
}

/// `virt-xml-validate FILE domain`, failing with its output.
fn validate(path: &Path) -> Result<()> {
    let r = run(
        Command::new("virt-xml-validate").arg(path).arg("domain"),
        VIRSH_TIMEOUT,
    )?;
    ensure!(
        r.ok,
        "virt-xml-validate {}: {}{}",
        path.display(),
        r.stdout,
        r.stderr
    );
    Ok(())
}

/// A defined libvirt domain: destroyed and undefined on drop. Its QEMU log in
/// /var/log/libvirt/qemu is kept only when the test did not pass.
struct Domain {
    name: String,
    console: PathBuf,
    passed: bool,
}

impl Domain {
    fn define(name: &str, xml_file: &Path, console: &Path) -> Result<Domain> {
        virsh(&["define", &xml_file.display().to_string()])?;
        Ok(Domain {
            name: name.to_string(),
            console: console.to_path_buf(),
            passed: false,
        })
    }

    fn qemu_log_path(&self) -> PathBuf {
        Path::new(QEMU_LOG_DIR).join(format!("{}.log", self.name))
    }

    fn console_text(&self) -> String {
        std::fs::read_to_string(&self.console).unwrap_or_default()
    }

    /// `virsh domstate --reason`, or why it failed.
    fn state(&self) -> String {
        virsh(&["domstate", "--reason", &self.name])
            .map_or_else(|e| format!("{e:#}"), |s| s.trim().to_string())
    }

    /// The uid QEMU runs as, from libvirt's pid file and /proc.
    fn qemu_uid(&self) -> Result<u32> {
        let pid_file = Path::new(QEMU_PID_DIR).join(format!("{}.pid", self.name));
        let pid = std::fs::read_to_string(&pid_file)
            .with_context(|| format!("reading {}", pid_file.display()))?;
        let status = std::fs::read_to_string(format!("/proc/{}/status", pid.trim()))
            .with_context(|| format!("QEMU pid {}", pid.trim()))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().next())
            .and_then(|uid| uid.parse().ok())
            .with_context(|| format!("no Uid in /proc/{}/status", pid.trim()))
    }

    /// Waits for `QUIVER-RESULT <rc>` on the console and returns rc; fails when the
    /// domain stops without it or the time is up.
    fn wait_result(&self, timeout: Duration) -> Result<i32> {
        let deadline = Instant::now() + timeout;
        loop {
            let console = self.console_text();
            if let Some(rest) = console
                .lines()
                .find_map(|l| l.trim_end_matches('\r').strip_prefix(RESULT_MARKER))
            {
                return rest
                    .trim()
                    .parse()
                    .with_context(|| format!("bad result line {rest:?}"));
            }
            let state = self.state();
            if !state.starts_with("running") {
                // The console may have been completed as QEMU exited.
                if !self.console_text().contains(RESULT_MARKER) {
                    bail!("{}: domain {state} before {RESULT_MARKER:?}", self.name);
                }
                continue;
            }
            if Instant::now() > deadline {
                bail!("{}: no {RESULT_MARKER:?} within {timeout:?}", self.name);
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// State, console and libvirt's QEMU log, for failure messages.
    fn diagnostics(&self) -> String {
        let log = std::fs::read_to_string(self.qemu_log_path()).unwrap_or_default();
        format!(
            "--- {} state: {} ---\n--- console ---\n{}--- {} (condensed) ---\n{}",
            self.name,
            self.state(),
            self.console_text(),
            self.qemu_log_path().display(),
            condense(&log)
        )
    }
}

impl Drop for Domain {
    fn drop(&mut self) {
        // destroy fails when the guest has powered off already; undefine still runs.
        let _ = virsh(&["destroy", &self.name]);
        if let Err(e) = virsh(&["undefine", &self.name]) {
            eprintln!("cannot undefine {}: {e:#}", self.name);
        }
        if self.passed {
            let _ = std::fs::remove_file(self.qemu_log_path());
        } else {
            eprintln!("{} kept", self.qemu_log_path().display());
        }
    }
}

/// Root, QEMU 7.2 and libvirt, or `None` after saying why the test is skipped.
fn prerequisites() -> Result<Option<Qemu>> {
    if !is_root() {
        let why = "needs root (libvirtd on qemu:///system, namespaces, TAP)";
        ensure!(!under_ci(), "CI: {why}");
        eprintln!("skipped: {why}");
        return Ok(None);
    }
    let qemu = match Qemu::find(QemuVersion::V7_2) {
        Ok(q) => q,
        Err(why) => bail!("{why}"),
    };
    for p in [
        "virsh",
        "virt-xml-validate",
        "xmllint",
        "virtlogd",
        "libvirtd",
    ] {
        ensure!(
            program(p).is_some(),
            "{p} not found: scripts/setup.sh installs libvirt-daemon-system, \
             libvirt-clients and libxml2-utils"
        );
    }
    Ok(Some(qemu))
}

#[test]
fn libvirt_boots_a_guest_that_pings_through_quiverd() -> Result<()> {
    let Some(qemu) = prerequisites()? else {
        return Ok(());
    };
    let _serial = serial();
    let image = GuestImage::get()?;
    ensure_libvirtd()?;
    let (qemu_uid, qemu_gid) = qemu_dac_ids()?;
    let group = group_name(qemu_gid);
    let dir = libvirt_dir(qemu_gid)?;
    let socket = dir.path().join(format!("{VNIC}.sock"));

    let ns = NetnsGuard::new(unique_name("lvns"))?;
    let ifname = unique_name("lv");
    let cfg = format!(
        "[[uplink]]\nname = \"up0\"\nkind = \"tap\"\nifname = \"{ifname}\"\nnetns = \"{}\"\n\n\
         [[vnic]]\nname = \"{VNIC}\"\nsocket = \"{}\"\nmac = \"{MAC}\"\nuplink = \"up0\"\n\
         socket_group = \"{group}\"\nsocket_mode = \"0660\"\n",
        ns.name(),
        socket.display()
    );
    let q = Quiverd::start("libvirt", &cfg)?;
    let meta = std::fs::metadata(&socket)?;
    ensure!(
        meta.mode() & 0o777 == 0o660 && meta.gid() == qemu_gid,
        "{}: mode {:04o} gid {}, want 0660 and {qemu_gid} ({group})",
        socket.display(),
        meta.mode() & 0o777,
        meta.gid()
    );

    let [host_ip, guest_ip] = test_subnet(213);
    for args in [
        vec![
            "ip",
            "addr",
            "add",
            &format!("{host_ip}/24"),
            "dev",
            &ifname,
        ],
        vec!["ip", "link", "set", &ifname, "up"],
    ] {
        let out = ns.exec(&args).with_context(|| format!("{args:?}"))?;
        ensure!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    // quiverd's elements, verbatim.
    let out = run(
        Command::new(quiverd_bin())
            .arg("libvirt-xml")
            .arg("--config")
            .arg(&q.config)
            .arg(VNIC),
        VIRSH_TIMEOUT,
    )?;
    ensure!(out.ok, "quiverd libvirt-xml: {}", out.stderr);
    let interface = element(&out.stdout, "<interface", "</interface>")?;
    let backing = element(&out.stdout, "<memoryBacking>", "</memoryBacking>")?;

    // Copies QEMU can read: the image cache may be anywhere, e.g. under a 0700 home.
    let kernel = dir.path().join("vmlinuz");
    let initrd = dir.path().join("initrd.img");
    std::fs::copy(&image.kernel, &kernel).context("copying the kernel")?;
    std::fs::copy(&image.initrd, &initrd).context("copying the initramfs")?;
    let console = dir.path().join("console.log");
    let name = format!("quiver-libvirt-{}", quiver_integration::unique());
    // pci=nomsi: QEMU 7.2 under TCG aborts when a vhost-user device uses MSI-X (see
    // integration/src/qemu.rs).
    let cmdline = format!(
        "console=ttyS0 quiet panic=-1 pci=nomsi quiver.ip={guest_ip}/24 quiver.cmd={}",
        base64(ping_script(&host_ip.to_string(), PINGS, REACH_SECS).as_bytes())
    );
    let guest = Guest {
        name: &name,
        emulator: &qemu.binary,
        kernel: &kernel,
        initrd: &initrd,
        console: &console,
        cmdline: &cmdline,
    };
    let xml = domain_xml(&guest, backing, interface);
    let xml_file = dir.path().join("domain.xml");
    std::fs::write(&xml_file, &xml)?;
    validate(&xml_file).with_context(|| xml.clone())?;

    let started = Instant::now();
    let mut dom = Domain::define(&name, &xml_file, &console).with_context(|| xml.clone())?;
    virsh(&["start", &name]).with_context(|| format!("{}\n{xml}", dom.diagnostics()))?;
    let uid = dom.qemu_uid().with_context(|| dom.diagnostics())?;
    ensure!(
        uid == qemu_uid && uid != 0,
        "QEMU runs as uid {uid}, want libvirt's {qemu_uid}: the socket permissions are not tested"
    );
    let failed = || {
        format!(
            "{}\n--- quiverd log (condensed) ---\n{}\n--- domain ---\n{xml}",
            dom.diagnostics(),
            condense(&q.log_text())
        )
    };
    let rc = dom.wait_result(GUEST_TIMEOUT).with_context(failed)?;
    ensure!(rc == 0, "guest script failed ({rc})\n{}", failed());
    eprintln!(
        "libvirt: {name} (QEMU uid {uid}, socket group {group} mode 0660) pinged the \
         namespace host through quiverd in {:?}",
        started.elapsed()
    );

    let neigh = ns.exec(&["ip", "neigh", "show", "dev", &ifname])?;
    let neigh = String::from_utf8_lossy(&neigh.stdout);
    ensure!(
        neigh.contains(MAC),
        "the namespace did not learn the guest's MAC: {neigh}"
    );
    let s = q.stats()?;
    ensure!(
        vnic_total(&s, VNIC, "rx_packets") >= u64::from(PINGS)
            && vnic_total(&s, VNIC, "tx_packets") >= u64::from(PINGS),
        "quiverd counted too few frames: {:#}",
        s["vnics"][VNIC]
    );
    dom.passed = true;
    Ok(())
}
