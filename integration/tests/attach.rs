//! Attaching VMs (issue 3, "libvirt" and "Cloud Hypervisor and QEMU arguments"): what
//! `quiverd libvirt-xml` and `quiverd qemu-args` print is accepted by the real consumers.
//!
//! - The libvirt elements, put into a complete minimal domain, pass `virt-xml-validate`
//!   (libvirt-clients, plus xmllint from libxml2-utils).
//! - The QEMU arguments start QEMU 7.2 and 10.0 (stopped with `-S`, so no guest code
//!   runs) against a quiverd serving the VNIC, in both socket modes: quiverd reports the
//!   VNIC connected and QEMU is still running.
//!
//! `quiverd ch-args` stays unverified: Cloud Hypervisor needs KVM.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use quiver_integration::qemu::{Qemu, QemuVersion};
use quiver_integration::{have, quiverd_bin, Quiverd, TempDir};

/// One VNIC per shape: (socket mode, queue pairs, MTU).
const SHAPES: [(&str, u16, u16); 4] = [
    ("server", 1, 1500),
    ("server", 4, 9000),
    ("client", 1, 9000),
    ("client", 4, 1500),
];

fn vnic_toml(name: &str, mode: &str, pairs: u16, mtu: u16) -> String {
    format!(
        "[[vnic]]\nname = \"{name}\"\nsocket = \"@DIR@/{name}.sock\"\nmode = \"{mode}\"\n\
         mac = \"52:54:00:00:00:01\"\nqueue_pairs = {pairs}\nmtu = {mtu}\n"
    )
}

/// Runs `quiverd ARGS` and returns its stdout, failing with its stderr.
fn quiverd_output(args: &[&str]) -> Result<String> {
    let out = Command::new(quiverd_bin())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {}", quiverd_bin().display()))?;
    ensure!(
        out.status.success(),
        "quiverd {args:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?)
}

/// The part of `text` from the line starting `open` through the line `close`.
fn element<'a>(text: &'a str, open: &str, close: &str) -> Result<&'a str> {
    let start = text
        .find(open)
        .with_context(|| format!("no {open} in {text}"))?;
    let end = text[start..]
        .find(close)
        .with_context(|| format!("no {close} in {text}"))?;
    Ok(&text[start..start + end + close.len()])
}

/// A complete minimal TCG domain around quiverd's two elements.
fn domain(memory_backing: &str, interface: &str) -> String {
    format!(
        "<domain type='qemu'>\n  <name>quiver-attach</name>\n  \
         <memory unit='MiB'>256</memory>\n{memory_backing}\n  <vcpu>1</vcpu>\n  \
         <os>\n    <type arch='x86_64' machine='q35'>hvm</type>\n  </os>\n  \
         <devices>\n{interface}\n  </devices>\n</domain>\n"
    )
}

/// `virt-xml-validate FILE domain`: Ok(true) valid, Ok(false) invalid.
fn validates(path: &Path) -> Result<(bool, String)> {
    let out = Command::new("virt-xml-validate")
        .arg(path)
        .arg("domain")
        .stdin(Stdio::null())
        .output()
        .context("running virt-xml-validate")?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(
        !text.contains("not found"),
        "virt-xml-validate cannot run (xmllint from libxml2-utils missing?): {text}"
    );
    Ok((out.status.success(), text))
}

#[test]
fn libvirt_xml_validates_in_a_domain() -> Result<()> {
    if !have("virt-xml-validate") {
        eprintln!(
            "skipped: virt-xml-validate not on PATH (scripts/setup.sh installs libvirt-clients)"
        );
        return Ok(());
    }
    let dir = TempDir::new("attach-xml")?;
    let mut cfg = String::new();
    for (i, (mode, pairs, mtu)) in SHAPES.into_iter().enumerate() {
        cfg.push_str(&vnic_toml(&format!("vm{i}"), mode, pairs, mtu).replace(
            "52:54:00:00:00:01",
            &format!("52:54:00:00:00:{:02x}", i + 1),
        ));
    }
    let cfg = cfg.replace("@DIR@", &dir.path().display().to_string());
    let cfg_path = dir.path().join("quiverd.toml");
    std::fs::write(&cfg_path, cfg)?;
    let cfg_arg = cfg_path.display().to_string();

    for (i, (mode, pairs, mtu)) in SHAPES.into_iter().enumerate() {
        let name = format!("vm{i}");
        let xml = quiverd_output(&["libvirt-xml", "--config", &cfg_arg, &name])?;
        let interface = element(&xml, "<interface", "</interface>")?;
        let backing = element(&xml, "<memoryBacking>", "</memoryBacking>")?;
        // libvirt's mode is QEMU's side of the socket.
        let libvirt_mode = if mode == "server" { "client" } else { "server" };
        ensure!(
            interface.contains(&format!("mode='{libvirt_mode}'"))
                && interface.contains(&format!("<driver queues='{pairs}'"))
                && interface.contains("<mtu size='9000'/>") == (mtu == 9000),
            "{name}: unexpected element:\n{interface}"
        );
        let path = dir.path().join(format!("{name}.xml"));
        std::fs::write(&path, domain(backing, interface))?;
        let (ok, text) = validates(&path)?;
        ensure!(
            ok,
            "{name} ({mode}, {pairs} pairs, MTU {mtu}): {text}\n{xml}"
        );
    }

    // The validator really validates: a misplaced element fails.
    let xml = quiverd_output(&["libvirt-xml", "--config", &cfg_arg, "vm0"])?;
    let interface = element(&xml, "<interface", "</interface>")?
        .replace("<model type='virtio'/>", "<model type='virtio'/><bogus/>");
    let path = dir.path().join("bad.xml");
    let backing = element(&xml, "<memoryBacking>", "</memoryBacking>")?;
    std::fs::write(&path, domain(backing, &interface))?;
    let (ok, text) = validates(&path)?;
    ensure!(!ok, "a domain with <bogus/> validated: {text}");
    Ok(())
}

/// A QEMU process killed (and reaped) on drop.
struct QemuProcess(Child);

impl Drop for QemuProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// "QEMU emulator version 7.2.22 (Debian ...)" → "7.2.22".
fn qemu_version(qemu: &Qemu) -> Result<String> {
    let mut c = Command::new(&qemu.binary);
    if let Some(m) = &qemu.module_dir {
        c.env("QEMU_MODULE_DIR", m);
    }
    let out = c.arg("--version").output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .skip_while(|w| *w != "version")
        .nth(1)
        .map(str::to_string)
        .with_context(|| format!("no version in {text:?}"))
}

/// Starts `qemu` stopped (`-S`) with quiverd's arguments for `vnic`, and checks that
/// quiverd sees the VNIC connected while QEMU keeps running.
fn qemu_attaches(qemu: &Qemu, mode: &str, pairs: u16, mtu: u16) -> Result<()> {
    let name = "vm1";
    let q = Quiverd::start("attach-qemu", &vnic_toml(name, mode, pairs, mtu))?;
    let version = qemu_version(qemu)?;
    let args = quiverd_output(&[
        "qemu-args",
        "--config",
        &q.config.display().to_string(),
        "--qemu",
        &version,
        "--mem",
        "256M",
        name,
    ])?;
    let args: Vec<&str> = args.lines().collect();
    let log = q.dir.path().join("qemu.log");
    let log_file = std::fs::File::create(&log)?;
    let mut cmd = Command::new(&qemu.binary);
    if let Some(m) = &qemu.module_dir {
        cmd.env("QEMU_MODULE_DIR", m);
    }
    for d in &qemu.data_dirs {
        cmd.arg("-L").arg(d);
    }
    cmd.args(["-machine", "q35,accel=tcg", "-m", "256M", "-nodefaults"])
        .args(["-display", "none", "-S"])
        .args(&args)
        .stdin(Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file);
    let mut child = QemuProcess(cmd.spawn().context("starting QEMU")?);
    let qemu_log = || std::fs::read_to_string(&log).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.0.try_wait()? {
            bail!(
                "{version}: QEMU exited with {status}: {}\nargs: {args:?}",
                qemu_log()
            );
        }
        let stats = q.stats()?;
        if stats["vnics"][name]["connected"] == true {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "{version}: quiverd never saw QEMU connect; stats {stats:#}\nQEMU: {}\nargs: {args:?}",
                qemu_log()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // Still alive a moment after the vhost-user handshake: nothing was refused.
    std::thread::sleep(Duration::from_millis(500));
    if let Some(status) = child.0.try_wait()? {
        bail!(
            "{version}: QEMU exited with {status} after connecting: {}",
            qemu_log()
        );
    }
    let text = qemu_log();
    ensure!(
        !text.to_lowercase().contains("error"),
        "{version}: QEMU reported an error: {text}"
    );
    eprintln!("{version}: {mode} mode, {pairs} pairs, MTU {mtu}: attached");
    Ok(())
}

fn qemu_accepts_qemu_args(version: QemuVersion) -> Result<()> {
    let qemu = match Qemu::find(version) {
        Ok(q) => q,
        Err(why) => {
            eprintln!("skipped: {version}: {why}");
            return Ok(());
        }
    };
    for (mode, pairs, mtu) in SHAPES {
        qemu_attaches(&qemu, mode, pairs, mtu)
            .with_context(|| format!("{version}, {mode} mode, {pairs} pairs, MTU {mtu}"))?;
    }
    Ok(())
}

#[test]
fn qemu_7_2_accepts_qemu_args() -> Result<()> {
    qemu_accepts_qemu_args(QemuVersion::V7_2)
}

#[test]
fn qemu_10_accepts_qemu_args() -> Result<()> {
    qemu_accepts_qemu_args(QemuVersion::V10)
}

#[test]
fn print_capabilities_follows_the_backend_conventions() -> Result<()> {
    // vhost-user.rst: other options and arguments are ignored.
    for args in [
        &["--print-capabilities"][..],
        &[
            "--print-capabilities",
            "--socket-path=/nonexistent",
            "--fd=3",
        ],
    ] {
        let out = quiverd_output(args)?;
        let v: serde_json::Value = serde_json::from_str(&out)?;
        ensure!(v == serde_json::json!({ "type": "net" }), "{args:?}: {out}");
    }
    Ok(())
}
