//! Socket ownership and mode, so a front-end running as another user (libvirt's
//! libvirt-qemu) can connect without a world-writable socket. Names are resolved from
//! /etc/passwd and /etc/group (no NSS), which covers system users on a hypervisor host.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum PermError {
    #[error("no user named {0:?} in /etc/passwd")]
    NoUser(String),
    #[error("no group named {0:?} in /etc/group")]
    NoGroup(String),
    #[error("cannot read {file}")]
    Read {
        file: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("chown failed")]
    Chown(#[source] std::io::Error),
    #[error("chmod failed")]
    Chmod(#[source] std::io::Error),
}

/// Field 2 (the numeric id) of the `name` line in a passwd/group style file.
fn lookup_id(file: &'static str, name: &str) -> Result<Option<u32>, PermError> {
    let text = std::fs::read_to_string(file).map_err(|source| PermError::Read { file, source })?;
    Ok(text.lines().find_map(|line| {
        let mut fields = line.split(':');
        (fields.next() == Some(name))
            .then(|| fields.nth(1).and_then(|id| id.parse().ok()))
            .flatten()
    }))
}

fn resolve(file: &'static str, name: &str) -> Result<Option<u32>, PermError> {
    // A numeric name is taken as an id.
    if let Ok(id) = name.parse::<u32>() {
        return Ok(Some(id));
    }
    lookup_id(file, name)
}

pub fn apply(
    path: &Path,
    mode: Option<u32>,
    owner: Option<&str>,
    group: Option<&str>,
) -> Result<(), PermError> {
    let uid = match owner {
        Some(name) => {
            Some(resolve("/etc/passwd", name)?.ok_or_else(|| PermError::NoUser(name.into()))?)
        }
        None => None,
    };
    let gid = match group {
        Some(name) => {
            Some(resolve("/etc/group", name)?.ok_or_else(|| PermError::NoGroup(name.into()))?)
        }
        None => None,
    };
    if uid.is_some() || gid.is_some() {
        std::os::unix::fs::chown(path, uid, gid).map_err(PermError::Chown)?;
    }
    if let Some(mode) = mode {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .map_err(PermError::Chmod)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_root_and_numeric_ids() {
        assert_eq!(resolve("/etc/passwd", "root").expect("read"), Some(0));
        assert_eq!(resolve("/etc/group", "root").expect("read"), Some(0));
        assert_eq!(resolve("/etc/passwd", "4242").expect("read"), Some(4242));
        assert_eq!(
            resolve("/etc/passwd", "no-such-user-q").expect("read"),
            None
        );
    }

    #[test]
    fn applies_mode_and_group() {
        let dir = std::env::temp_dir().join(format!("quiver-perm-{}", std::process::id()));
        std::fs::write(&dir, b"").expect("file");
        apply(&dir, Some(0o640), None, Some("root")).expect("apply");
        let meta = std::fs::metadata(&dir).expect("meta");
        assert_eq!(meta.permissions().mode() & 0o777, 0o640);
        assert!(matches!(
            apply(&dir, None, Some("no-such-user-q"), None),
            Err(PermError::NoUser(_))
        ));
        let _ = std::fs::remove_file(&dir);
    }
}
