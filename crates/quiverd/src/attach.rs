//! What a hypervisor needs to attach a VM to a VNIC: QEMU arguments, the libvirt
//! `<interface type='vhostuser'>` element and Cloud Hypervisor arguments, each a pure
//! function of a validated [`VnicConfig`] returning text, so that `quiverctl` can take
//! them over unchanged. Also the vhost-user backend capabilities (`--print-capabilities`).
//!
//! Socket roles are always stated from quiverd's side in the configuration (`mode =
//! "server"`: quiverd listens). Every hypervisor names the role of *its own* end, so a
//! quiverd server becomes a QEMU chardev client, a libvirt `mode='client'` and a Cloud
//! Hypervisor `vhost_mode=client`.
//!
//! Backend discovery: `share/50-quiver.json` follows QEMU's `docs/interop/vhost-user.json`
//! (`@VhostUserBackend`: description, type, binary, optional tags; no features there).
//! Install it as `/usr/share/qemu/vhost-user/50-quiver.json` (distribution packages) or
//! `/etc/qemu/vhost-user/50-quiver.json` (local administrators), with `binary` pointing
//! at the installed quiverd (`/usr/local/bin/quiverd` as shipped). quiverd is configured
//! by its TOML file and serves many sockets, so it does not take the per-device
//! `--socket-path`/`--fd` options of the backend program conventions; management
//! software that spawns one backend per device cannot start it that way.

use std::fmt;
use std::process::ExitCode;
use std::str::FromStr;

use clap::{Subcommand, ValueEnum};

use crate::config::{Config, ConfigError, SocketMode, VnicConfig};

/// QEMU's virtio-net `rx_queue_size`/`tx_queue_size` (and libvirt's `<driver>`
/// attributes) accept powers of two in 256..=1024 (QEMU `hw/net/virtio-net.c`:
/// VIRTIO_NET_RX_QUEUE_MIN_SIZE, VIRTQUEUE_MAX_SIZE; tx up to 1024 only for vhost-user).
const QEMU_MIN_QUEUE_SIZE: u16 = 256;
const QEMU_MAX_QUEUE_SIZE: u16 = 1024;
/// The MTU a virtio-net device has without VIRTIO_NET_F_MTU.
const DEFAULT_MTU: u16 = 1500;
/// QEMU 9.2 added the chardev option `reconnect-ms` and deprecated `reconnect`
/// (seconds), which later releases remove.
const RECONNECT_MS_SINCE: QemuVersion = QemuVersion { major: 9, minor: 2 };

/// An error producing attachment text.
#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    #[error("cannot read the configuration")]
    Config(#[source] ConfigError),
    #[error("{file}: no [[vnic]] named {name:?} (VNICs: {known})")]
    NoSuchVnic {
        file: String,
        name: String,
        known: String,
    },
    #[error("{given:?} is not a QEMU version like 7.2 or 10")]
    QemuVersion { given: String },
    #[error("{given:?} is not a memory size with a unit, like 512M or 1G")]
    MemSize { given: String },
    #[error(
        "VNIC {vnic}: queue_size {queue_size} is below QEMU's virtio-net minimum of \
         {QEMU_MIN_QUEUE_SIZE}; QEMU would ask for rings quiverd refuses"
    )]
    QueueTooSmall { vnic: String, queue_size: u16 },
    #[error("VNIC {vnic}: Cloud Hypervisor cannot take a socket path with a comma: {path}")]
    CommaInPath { vnic: String, path: String },
}

/// A QEMU release, to pick options that changed between versions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct QemuVersion {
    pub major: u16,
    pub minor: u16,
}

impl FromStr for QemuVersion {
    type Err = AttachError;

    /// "10", "7.2" or "9.2.1" (the micro version is ignored).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || AttachError::QemuVersion {
            given: s.to_string(),
        };
        let mut parts = s.trim().split('.');
        let major = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
        let minor = match parts.next() {
            None => 0,
            Some(p) => p.parse().map_err(|_e| bad())?,
        };
        if parts.next().is_some_and(|p| p.parse::<u16>().is_err()) {
            return Err(bad());
        }
        Ok(QemuVersion { major, minor })
    }
}

impl fmt::Display for QemuVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// A guest memory size as QEMU and Cloud Hypervisor both write it: digits and a unit
/// K, M or G.
/// A unit is required: QEMU's `-m 256` means MiB but a memory backend's `size=256`
/// means bytes, so a bare number would silently disagree between the two.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemSize(String);

impl FromStr for MemSize {
    type Err = AttachError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (digits, unit) = s.split_at(s.len().saturating_sub(1));
        let ok = !digits.is_empty()
            && digits.bytes().all(|b| b.is_ascii_digit())
            && digits.bytes().any(|b| b != b'0')
            && matches!(unit, "K" | "M" | "G");
        if ok {
            Ok(MemSize(s.to_string()))
        } else {
            Err(AttachError::MemSize {
                given: s.to_string(),
            })
        }
    }
}

impl fmt::Display for MemSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How argument lists are printed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum ArgFormat {
    /// One argument per line, unquoted (for `mapfile -t ARGS`).
    #[default]
    Lines,
    /// All arguments on one line, shell-quoted (for `eval` or pasting into a script).
    Shell,
}

/// Attachment text and the caveats that go with it (printed to stderr by the CLI, so
/// stdout stays usable as-is).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Attachment {
    pub text: String,
    pub notes: Vec<String>,
}

/// A hypervisor's command-line arguments and the caveats that go with them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ArgList {
    pub args: Vec<String>,
    pub notes: Vec<String>,
}

impl ArgList {
    /// The arguments in `format`, newline-terminated.
    pub fn format(&self, format: ArgFormat) -> String {
        let mut out = match format {
            ArgFormat::Lines => self.args.join("\n"),
            ArgFormat::Shell => self
                .args
                .iter()
                .map(|a| shell_quote(a))
                .collect::<Vec<_>>()
                .join(" "),
        };
        out.push('\n');
        out
    }
}

/// A string QEMU and Cloud Hypervisor accept as an object id: QEMU ids start with a
/// letter, and VNIC names may start with a digit.
fn id_base(v: &VnicConfig) -> String {
    if v.name.starts_with(|c: char| c.is_ascii_alphabetic()) {
        v.name.clone()
    } else {
        format!("vnic-{}", v.name)
    }
}

/// QEMU option values escape a comma by doubling it (`qemu-options.hx`, "-chardev").
fn qemu_escape(s: &str) -> String {
    s.replace(',', ",,")
}

/// The size both QEMU ring attributes may be set to, if the VNIC's is allowed.
fn qemu_queue_size(v: &VnicConfig) -> Result<Option<u16>, AttachError> {
    if v.queue_size < QEMU_MIN_QUEUE_SIZE {
        return Err(AttachError::QueueTooSmall {
            vnic: v.name.clone(),
            queue_size: v.queue_size,
        });
    }
    // Config guarantees a power of two; above 1024 QEMU keeps its default (256),
    // which quiverd accepts because it is smaller than the VNIC's maximum.
    Ok((v.queue_size <= QEMU_MAX_QUEUE_SIZE).then_some(v.queue_size))
}

/// QEMU arguments attaching a guest to `v`: the shared-memory backend (unless `mem` is
/// `None`, for the second and later VNICs of one VM), the chardev, the vhost-user netdev
/// and the virtio-net-pci device.
pub fn qemu_args(
    v: &VnicConfig,
    version: QemuVersion,
    mem: Option<&MemSize>,
) -> Result<ArgList, AttachError> {
    let id = id_base(v);
    let path = qemu_escape(&v.socket.display().to_string());
    let mut args = Vec::new();
    let mut notes = Vec::new();
    if let Some(mem) = mem {
        // vhost-user maps guest RAM in the backend: it must be a shared fd-backed
        // mapping (vhost-user.rst, "Memory access").
        args.push("-object".into());
        args.push(format!("memory-backend-memfd,id=mem0,size={mem},share=on"));
        args.push("-numa".into());
        args.push("node,memdev=mem0".into());
        notes.push(format!(
            "the memory backend is {mem}: QEMU's -m must be {mem} as well"
        ));
    }
    let role = match v.mode {
        // quiverd listens: QEMU connects and reconnects when quiverd restarts.
        SocketMode::Server if version >= RECONNECT_MS_SINCE => ",reconnect-ms=1000",
        SocketMode::Server => ",reconnect=1",
        // quiverd connects: QEMU listens. QEMU still waits for the backend before the
        // guest starts (net/vhost-user.c waits for the connection), wait=off only
        // keeps the chardev from blocking on its own.
        SocketMode::Client => ",server=on,wait=off",
    };
    args.push("-chardev".into());
    args.push(format!("socket,id={id}-chr,path={path}{role}"));
    args.push("-netdev".into());
    args.push(format!(
        "vhost-user,id={id}-net,chardev={id}-chr,queues={}",
        v.queue_pairs
    ));
    let mut device = format!("virtio-net-pci,id={id}-dev,netdev={id}-net,mac={}", v.mac);
    if v.queue_pairs > 1 {
        // One MSI-X vector per queue, plus config and control (virtio-net-pci docs).
        device.push_str(&format!(
            ",mq=on,vectors={}",
            2 * u32::from(v.queue_pairs) + 2
        ));
    }
    if let Some(q) = qemu_queue_size(v)? {
        device.push_str(&format!(",rx_queue_size={q},tx_queue_size={q}"));
    }
    if v.mtu != DEFAULT_MTU {
        device.push_str(&format!(",host_mtu={}", v.mtu));
    }
    args.push("-device".into());
    args.push(device);
    Ok(ArgList { args, notes })
}

/// POSIX shell quoting: bare when every byte is harmless, else single quotes.
fn shell_quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_=,.:/@%+".contains(&b));
    if plain {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// Text for an XML attribute value in single quotes.
fn xml_attr(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('\'', "&apos;")
        .replace('"', "&quot;")
}

/// Text for inside an XML comment, which may not contain "--".
fn xml_comment(s: &str) -> String {
    let mut out = s.replace("--", "- -");
    while out.contains("--") {
        out = out.replace("--", "- -");
    }
    out
}

/// The libvirt `<interface type='vhostuser'>` element for `v` (libvirt formatdomain,
/// "vhost-user interface"), without a leading comment.
pub fn libvirt_interface(v: &VnicConfig) -> Result<String, AttachError> {
    let path = xml_attr(&v.socket.display().to_string());
    let mut x = String::from("<interface type='vhostuser'>\n");
    x.push_str(&format!("  <mac address='{}'/>\n", v.mac));
    match v.mode {
        // libvirt's mode is QEMU's role. timeout is in seconds.
        SocketMode::Server => {
            x.push_str(&format!(
                "  <source type='unix' path='{path}' mode='client'>\n    \
                 <reconnect enabled='yes' timeout='1'/>\n  </source>\n"
            ));
        }
        SocketMode::Client => {
            x.push_str(&format!(
                "  <source type='unix' path='{path}' mode='server'/>\n"
            ));
        }
    }
    x.push_str("  <model type='virtio'/>\n");
    let sizes = match qemu_queue_size(v)? {
        Some(q) => format!(" rx_queue_size='{q}' tx_queue_size='{q}'"),
        None => String::new(),
    };
    x.push_str(&format!("  <driver queues='{}'{sizes}/>\n", v.queue_pairs));
    if v.mtu != DEFAULT_MTU {
        x.push_str(&format!("  <mtu size='{}'/>\n", v.mtu));
    }
    x.push_str("</interface>\n");
    Ok(x)
}

/// The `<memoryBacking>` every domain with a vhost-user interface needs: guest RAM in
/// a memfd mapped shared, so quiverd can map it too.
pub const LIBVIRT_MEMORY_BACKING: &str = "<memoryBacking>\n  <source type='memfd'/>\n  \
                                          <access mode='shared'/>\n</memoryBacking>\n";

/// Both libvirt elements, each after a comment saying where it goes.
pub fn libvirt_xml(v: &VnicConfig) -> Result<Attachment, AttachError> {
    let name = xml_comment(&v.name);
    let mut text = String::new();
    let role = match v.mode {
        SocketMode::Server => "quiverd listens, QEMU connects and reconnects",
        SocketMode::Client => "QEMU listens (libvirt creates the socket), quiverd connects",
    };
    text.push_str(&format!(
        "<!-- quiver VNIC {name}: put in <domain><devices>. {role}. -->\n"
    ));
    if v.mode == SocketMode::Server
        && (v.socket_owner.is_some() || v.socket_group.is_some() || v.socket_mode.is_some())
    {
        text.push_str(&format!(
            "<!-- quiverd makes the socket owner {}, group {}, mode {}: QEMU's user \
             (libvirt-qemu on Debian) needs read and write access. -->\n",
            xml_comment(v.socket_owner.as_deref().unwrap_or("(quiverd's)")),
            xml_comment(v.socket_group.as_deref().unwrap_or("(quiverd's)")),
            v.socket_mode
                .map_or_else(|| "(umask)".to_string(), |m| format!("{m:04o}")),
        ));
    }
    text.push_str(&libvirt_interface(v)?);
    text.push_str(
        "<!-- put in <domain> once: vhost-user needs guest memory shared with quiverd. -->\n",
    );
    text.push_str(LIBVIRT_MEMORY_BACKING);
    let mut notes = Vec::new();
    if v.queue_size > QEMU_MAX_QUEUE_SIZE {
        notes.push(format!(
            "queue_size {} is above what libvirt/QEMU allow ({QEMU_MAX_QUEUE_SIZE}); \
             QEMU keeps its default ring size",
            v.queue_size
        ));
    }
    Ok(Attachment { text, notes })
}

/// Cloud Hypervisor arguments attaching a guest to `v`. The syntax is Cloud
/// Hypervisor's documented one: `--net` "vhost_user=<vhost_user_enable>,
/// socket=<vhost_user_socket_path>,vhost_mode=client|server", num_queues counting RX
/// and TX queues together (docs/networking.md, docs/vhost-user-net-testing.md and the
/// `--net` help of vmm/src/config.rs `NetConfig::SYNTAX`), and `--memory
/// size=...,shared=on` for vhost-user devices (docs/memory.md, "shared"). Unverified
/// against a running Cloud Hypervisor, which needs KVM.
pub fn ch_args(v: &VnicConfig, mem: &MemSize) -> Result<ArgList, AttachError> {
    let path = v.socket.display().to_string();
    // Cloud Hypervisor's option parser splits on commas and has no escape for them.
    if path.contains(',') {
        return Err(AttachError::CommaInPath {
            vnic: v.name.clone(),
            path,
        });
    }
    // CH's vhost_mode is CH's role.
    let mode = match v.mode {
        SocketMode::Server => "client",
        SocketMode::Client => "server",
    };
    let args = vec![
        "--memory".to_string(),
        format!("size={mem},shared=on"),
        "--net".to_string(),
        format!(
            "vhost_user=true,socket={path},num_queues={},queue_size={},vhost_mode={mode},mac={},id={}",
            2 * u32::from(v.queue_pairs),
            v.queue_size,
            v.mac,
            id_base(v),
        ),
    ];
    let mut notes = vec![format!(
        "Cloud Hypervisor's --memory takes one size for the whole VM ({mem} here)"
    )];
    if v.mtu != DEFAULT_MTU {
        notes.push(format!(
            "Cloud Hypervisor's --net has no MTU option: set MTU {} inside the guest",
            v.mtu
        ));
    }
    Ok(ArgList { args, notes })
}

/// The `--print-capabilities` JSON of QEMU's vhost-user.rst "Backend program
/// conventions": a `@VHostUserBackendCapabilities` of vhost-user.json. That union has
/// members beyond `type` only for input and gpu (and block), so type net is just
/// `{"type": "net"}`.
pub fn capabilities() -> serde_json::Value {
    serde_json::json!({ "type": "net" })
}

/// The attachment subcommands (moving to quiverctl with the control API).
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Print the QEMU arguments that attach a guest to VNIC.
    QemuArgs {
        /// Configuration file (TOML) naming the VNIC.
        #[arg(short, long, value_name = "FILE")]
        config: std::path::PathBuf,
        /// QEMU version: 9.2 and later take `reconnect-ms`, earlier ones `reconnect`.
        #[arg(long, value_name = "VERSION", default_value = "10")]
        qemu: QemuVersion,
        /// Guest memory size (with a unit; QEMU's -m must match). Needed once per VM.
        #[arg(long, value_name = "SIZE", default_value = "1G")]
        mem: MemSize,
        /// Leave out the memory backend (for a VM's second and later VNICs).
        #[arg(long)]
        no_mem: bool,
        #[arg(long, value_enum, default_value_t)]
        format: ArgFormat,
        /// The VNIC's name.
        vnic: String,
    },
    /// Print the libvirt <interface type='vhostuser'> and <memoryBacking> elements.
    LibvirtXml {
        #[arg(short, long, value_name = "FILE")]
        config: std::path::PathBuf,
        vnic: String,
    },
    /// Print the Cloud Hypervisor arguments that attach a guest to VNIC (unverified:
    /// Cloud Hypervisor needs KVM).
    ChArgs {
        #[arg(short, long, value_name = "FILE")]
        config: std::path::PathBuf,
        /// Guest memory size (with a unit).
        #[arg(long, value_name = "SIZE", default_value = "1G")]
        mem: MemSize,
        #[arg(long, value_enum, default_value_t)]
        format: ArgFormat,
        vnic: String,
    },
}

fn find_vnic(path: &std::path::Path, name: &str) -> Result<VnicConfig, AttachError> {
    let cfg = Config::load(path).map_err(AttachError::Config)?;
    let known = cfg
        .vnics
        .iter()
        .map(|v| v.name.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    cfg.vnics
        .iter()
        .find(|v| v.name == name)
        .cloned()
        .ok_or_else(|| AttachError::NoSuchVnic {
            file: path.display().to_string(),
            name: name.to_string(),
            known,
        })
}

impl Command {
    /// The text for stdout and the notes for stderr.
    pub fn output(&self) -> Result<(String, Vec<String>), AttachError> {
        Ok(match self {
            Command::QemuArgs {
                config,
                qemu,
                mem,
                no_mem,
                format,
                vnic,
            } => {
                let v = find_vnic(config, vnic)?;
                let a = qemu_args(&v, *qemu, (!no_mem).then_some(mem))?;
                (a.format(*format), a.notes)
            }
            Command::LibvirtXml { config, vnic } => {
                let a = libvirt_xml(&find_vnic(config, vnic)?)?;
                (a.text, a.notes)
            }
            Command::ChArgs {
                config,
                mem,
                format,
                vnic,
            } => {
                let a = ch_args(&find_vnic(config, vnic)?, mem)?;
                (a.format(*format), a.notes)
            }
        })
    }

    /// Prints the output; exit 0, or 2 when the configuration or a value is refused.
    pub fn run(&self) -> ExitCode {
        match self.output() {
            Ok((text, notes)) => {
                print!("{text}");
                for n in notes {
                    eprintln!("quiverd: note: {n}");
                }
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("quiverd: {}", crate::report(&e));
                ExitCode::from(2)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vnic(mode: &str, pairs: u16, mtu: u16) -> VnicConfig {
        let text = format!(
            "[[vnic]]\nname = \"vm1\"\nsocket = \"/run/quiver/vm1.sock\"\nmode = \"{mode}\"\n\
             mac = \"52:54:00:00:00:01\"\nqueue_pairs = {pairs}\nmtu = {mtu}\n"
        );
        Config::parse("t.toml", &text)
            .expect("valid")
            .vnics
            .remove(0)
    }

    const V7: QemuVersion = QemuVersion { major: 7, minor: 2 };
    const V10: QemuVersion = QemuVersion {
        major: 10,
        minor: 0,
    };

    fn mem() -> MemSize {
        "1G".parse().expect("valid")
    }

    /// Every shape: (mode, pairs, mtu).
    const SHAPES: [(&str, u16, u16); 8] = [
        ("server", 1, 1500),
        ("server", 1, 9000),
        ("server", 4, 1500),
        ("server", 4, 9000),
        ("client", 1, 1500),
        ("client", 1, 9000),
        ("client", 4, 1500),
        ("client", 4, 9000),
    ];

    #[test]
    fn qemu_args_over_every_shape() {
        for (mode, pairs, mtu) in SHAPES {
            for version in [V7, V10] {
                let v = vnic(mode, pairs, mtu);
                let a = qemu_args(&v, version, Some(&mem())).expect("args");
                let chardev = match (mode, version.major) {
                    ("server", 7) => "socket,id=vm1-chr,path=/run/quiver/vm1.sock,reconnect=1",
                    ("server", _) => {
                        "socket,id=vm1-chr,path=/run/quiver/vm1.sock,reconnect-ms=1000"
                    }
                    _ => "socket,id=vm1-chr,path=/run/quiver/vm1.sock,server=on,wait=off",
                };
                let mut device =
                    "virtio-net-pci,id=vm1-dev,netdev=vm1-net,mac=52:54:00:00:00:01".to_string();
                if pairs == 4 {
                    device.push_str(",mq=on,vectors=10");
                }
                device.push_str(",rx_queue_size=1024,tx_queue_size=1024");
                if mtu == 9000 {
                    device.push_str(",host_mtu=9000");
                }
                let want = vec![
                    "-object".to_string(),
                    "memory-backend-memfd,id=mem0,size=1G,share=on".into(),
                    "-numa".into(),
                    "node,memdev=mem0".into(),
                    "-chardev".into(),
                    chardev.into(),
                    "-netdev".into(),
                    format!("vhost-user,id=vm1-net,chardev=vm1-chr,queues={pairs}"),
                    "-device".into(),
                    device,
                ];
                assert_eq!(a.args, want, "{mode} {pairs} {mtu} {version}");
            }
        }
    }

    #[test]
    fn qemu_args_without_memory_and_shell_format() {
        let v = vnic("server", 1, 1500);
        let a = qemu_args(&v, V10, None).expect("args");
        assert_eq!(a.args[0], "-chardev");
        assert!(a.notes.is_empty());
        assert_eq!(
            a.format(ArgFormat::Shell),
            "-chardev socket,id=vm1-chr,path=/run/quiver/vm1.sock,reconnect-ms=1000 \
             -netdev vhost-user,id=vm1-net,chardev=vm1-chr,queues=1 \
             -device virtio-net-pci,id=vm1-dev,netdev=vm1-net,mac=52:54:00:00:00:01,\
             rx_queue_size=1024,tx_queue_size=1024\n"
        );
    }

    #[test]
    fn qemu_escapes_commas_and_shell_quotes_spaces() {
        let text = "[[vnic]]\nname = \"0a\"\nsocket = \"/run/a b,c's.sock\"\n\
                    mac = \"52:54:00:00:00:01\"\nqueue_size = 4096\n";
        let v = Config::parse("t.toml", text)
            .expect("valid")
            .vnics
            .remove(0);
        let a = qemu_args(&v, V7, None).expect("args");
        assert_eq!(
            a.args[1],
            "socket,id=vnic-0a-chr,path=/run/a b,,c's.sock,reconnect=1"
        );
        // Above 1024 the ring sizes are left to QEMU's default.
        assert!(!a.args[5].contains("queue_size"), "{}", a.args[5]);
        assert!(a.format(ArgFormat::Shell).starts_with(
            r"-chardev 'socket,id=vnic-0a-chr,path=/run/a b,,c'\''s.sock,reconnect=1' "
        ));
    }

    #[test]
    fn qemu_refuses_rings_smaller_than_it_can_use() {
        let text = "[[vnic]]\nname = \"vm1\"\nsocket = \"/run/q.sock\"\n\
                    mac = \"52:54:00:00:00:01\"\nqueue_size = 128\n";
        let v = Config::parse("t.toml", text)
            .expect("valid")
            .vnics
            .remove(0);
        assert!(matches!(
            qemu_args(&v, V10, None),
            Err(AttachError::QueueTooSmall {
                queue_size: 128,
                ..
            })
        ));
        assert!(matches!(
            libvirt_xml(&v),
            Err(AttachError::QueueTooSmall {
                queue_size: 128,
                ..
            })
        ));
        assert!(ch_args(&v, &mem()).is_ok());
    }

    #[test]
    fn libvirt_xml_over_every_shape() {
        for (mode, pairs, mtu) in SHAPES {
            let v = vnic(mode, pairs, mtu);
            let x = libvirt_interface(&v).expect("xml");
            let source = if mode == "server" {
                "  <source type='unix' path='/run/quiver/vm1.sock' mode='client'>\n    \
                 <reconnect enabled='yes' timeout='1'/>\n  </source>\n"
            } else {
                "  <source type='unix' path='/run/quiver/vm1.sock' mode='server'/>\n"
            };
            let mtu_line = if mtu == 9000 {
                "  <mtu size='9000'/>\n"
            } else {
                ""
            };
            let want = format!(
                "<interface type='vhostuser'>\n  <mac address='52:54:00:00:00:01'/>\n\
                 {source}  <model type='virtio'/>\n  \
                 <driver queues='{pairs}' rx_queue_size='1024' tx_queue_size='1024'/>\n\
                 {mtu_line}</interface>\n"
            );
            assert_eq!(x, want, "{mode} {pairs} {mtu}");
            let all = libvirt_xml(&v).expect("xml").text;
            assert!(all.contains(&want));
            assert!(all.ends_with(LIBVIRT_MEMORY_BACKING));
            assert_eq!(all.matches("<!--").count(), 2, "{all}");
        }
    }

    #[test]
    fn libvirt_xml_escapes_and_mentions_socket_permissions() {
        let text = "[[vnic]]\nname = \"a--b\"\nsocket = \"/run/<x>&'.sock\"\n\
                    mac = \"52:54:00:00:00:01\"\nsocket_group = \"libvirt-qemu\"\n\
                    socket_mode = \"0660\"\n";
        let v = Config::parse("t.toml", text)
            .expect("valid")
            .vnics
            .remove(0);
        let x = libvirt_xml(&v).expect("xml").text;
        assert!(x.contains("path='/run/&lt;x&gt;&amp;&apos;.sock'"), "{x}");
        assert!(x.contains("VNIC a- -b:"), "{x}");
        assert!(x.contains("group libvirt-qemu, mode 0660"), "{x}");
        for comment in x.split("<!--").skip(1) {
            let body = comment.split("-->").next().unwrap_or("");
            assert!(!body.contains("--"), "{body}");
        }
    }

    #[test]
    fn ch_args_over_every_shape() {
        for (mode, pairs, mtu) in SHAPES {
            let v = vnic(mode, pairs, mtu);
            let a = ch_args(&v, &mem()).expect("args");
            let ch_mode = if mode == "server" { "client" } else { "server" };
            let want = vec![
                "--memory".to_string(),
                "size=1G,shared=on".into(),
                "--net".into(),
                format!(
                    "vhost_user=true,socket=/run/quiver/vm1.sock,num_queues={},\
                     queue_size=1024,vhost_mode={ch_mode},mac=52:54:00:00:00:01,id=vm1",
                    2 * pairs
                ),
            ];
            assert_eq!(a.args, want, "{mode} {pairs} {mtu}");
            assert_eq!(
                a.notes.iter().any(|n| n.contains("MTU 9000")),
                mtu == 9000,
                "{:?}",
                a.notes
            );
        }
    }

    #[test]
    fn ch_refuses_a_comma_in_the_socket_path() {
        let text = "[[vnic]]\nname = \"vm1\"\nsocket = \"/run/a,b.sock\"\n\
                    mac = \"52:54:00:00:00:01\"\n";
        let v = Config::parse("t.toml", text)
            .expect("valid")
            .vnics
            .remove(0);
        assert!(matches!(
            ch_args(&v, &mem()),
            Err(AttachError::CommaInPath { .. })
        ));
    }

    #[test]
    fn versions_and_sizes_parse() {
        let ok = [
            ("7", (7, 0)),
            ("7.2", (7, 2)),
            ("9.2.1", (9, 2)),
            ("10", (10, 0)),
        ];
        for (s, (major, minor)) in ok {
            assert_eq!(
                s.parse::<QemuVersion>().expect(s),
                QemuVersion { major, minor }
            );
        }
        for s in ["", "x", "7.", "7.x", "7.2.x", "-1"] {
            assert!(s.parse::<QemuVersion>().is_err(), "{s:?}");
        }
        assert!("9.1".parse::<QemuVersion>().expect("9.1") < RECONNECT_MS_SINCE);
        assert!("9.2".parse::<QemuVersion>().expect("9.2") >= RECONNECT_MS_SINCE);
        for s in ["256M", "1G", "4096K"] {
            assert_eq!(s.parse::<MemSize>().expect(s).to_string(), s);
        }
        for s in ["", "256", "M", "0G", "1.5G", "1g", "-1G", "1T"] {
            assert!(s.parse::<MemSize>().is_err(), "{s:?}");
        }
    }

    #[test]
    fn capabilities_are_the_schema_union_for_net() {
        assert_eq!(capabilities().to_string(), r#"{"type":"net"}"#);
    }

    #[test]
    fn discovery_file_matches_the_schema() {
        let text = include_str!("../share/50-quiver.json");
        let v: serde_json::Value = serde_json::from_str(text).expect("JSON");
        let obj = v.as_object().expect("object");
        let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["binary", "description", "type"]);
        assert_eq!(obj["type"], "net");
        assert!(obj["binary"].as_str().is_some_and(|b| b.starts_with('/')));
    }
}
