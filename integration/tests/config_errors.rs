//! Configuration errors end to end: `quiverd --check-config` and a refused start name
//! the file, the field and the reason, and exit non-zero without leaving sockets.

use std::process::Command;

use anyhow::{ensure, Result};
use quiver_integration::{quiverd_bin, TempDir};

fn check(text: &str) -> Result<(i32, String, std::path::PathBuf, TempDir)> {
    let dir = TempDir::new("cfg")?;
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        text.replace("@DIR@", &dir.path().display().to_string()),
    )?;
    let out = Command::new(quiverd_bin())
        .arg("--check-config")
        .arg(&path)
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    Ok((out.status.code().unwrap_or(-1), stderr, path, dir))
}

#[test]
fn check_config_names_file_field_and_reason() -> Result<()> {
    let good =
        "[[vnic]]\nname = \"vm1\"\nsocket = \"@DIR@/vm1.sock\"\nmac = \"52:54:00:00:00:01\"\n";
    let (code, _, _, _d) = check(good)?;
    ensure!(code == 0, "valid config rejected");
    for (bad, field, reason) in [
        (
            good.replace("52:54:00:00:00:01", "52:54:00:00:00"),
            "vnic[0] (vm1).mac",
            "not a MAC address",
        ),
        (
            format!("{good}queue_pairs = 99\n"),
            "vnic[0] (vm1).queue_pairs",
            "outside 1..=16",
        ),
        (
            format!("{good}uplink = \"up9\"\n"),
            "vnic[0] (vm1).uplink",
            "no [[uplink]] named",
        ),
        (
            format!("{good}colour = \"blue\"\n"),
            "line 5",
            "unknown field `colour`",
        ),
    ] {
        let (code, stderr, path, _d) = check(&bad)?;
        ensure!(code == 2, "exit {code} for {bad}");
        ensure!(
            stderr.contains(&path.display().to_string()),
            "file not named: {stderr}"
        );
        ensure!(stderr.contains(field), "field {field} not named: {stderr}");
        ensure!(
            stderr.contains(reason),
            "reason {reason:?} missing: {stderr}"
        );
    }
    Ok(())
}

#[test]
fn refused_start_leaves_nothing_behind() -> Result<()> {
    // The second VNIC's socket directory cannot be created (a file is in the way), so
    // quiverd must fail to start and remove the first VNIC's socket again.
    let dir = TempDir::new("cfg-start")?;
    std::fs::write(dir.path().join("blocker"), b"")?;
    let cfg = format!(
        "[[vnic]]\nname = \"vm1\"\nsocket = \"{d}/vm1.sock\"\nmac = \"52:54:00:00:00:01\"\n\
         [[vnic]]\nname = \"vm2\"\nsocket = \"{d}/blocker/vm2.sock\"\nmac = \"52:54:00:00:00:02\"\n",
        d = dir.path().display()
    );
    let path = dir.path().join("q.toml");
    std::fs::write(&path, cfg)?;
    let out = Command::new(quiverd_bin())
        .arg("--config")
        .arg(&path)
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(!out.status.success(), "quiverd started half-configured");
    ensure!(
        stderr.contains("vm2"),
        "error does not name the VNIC: {stderr}"
    );
    ensure!(
        !dir.path().join("vm1.sock").exists(),
        "vm1's socket left behind"
    );
    Ok(())
}

#[test]
fn socket_mode_is_applied() -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let cfg = "[[vnic]]\nname = \"vm1\"\nsocket = \"@DIR@/vm1.sock\"\nmac = \"52:54:00:00:00:01\"\nsocket_mode = \"0660\"\nsocket_group = \"root\"\n";
    let q = quiver_integration::Quiverd::start("sockmode", cfg)?;
    let meta = std::fs::metadata(q.dir.path().join("vm1.sock"))?;
    ensure!(
        meta.permissions().mode() & 0o777 == 0o660,
        "mode {:o}",
        meta.permissions().mode()
    );
    Ok(())
}
