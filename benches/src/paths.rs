//! Where the harnesses find quiverd and put their results (shared by quiver-bench
//! and uplink-bench).

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

/// The quiverd binary next to the running harness (both are built into the same
/// target directory), or `target/release/quiverd`.
pub fn default_quiverd() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join("quiverd")))
        .unwrap_or_else(|| PathBuf::from("target/release/quiverd"))
}

/// A fresh results directory: `target/bench-results/<UTC timestamp>`.
pub fn new_results_dir() -> PathBuf {
    PathBuf::from("target/bench-results").join(utc_stamp())
}

fn utc_stamp() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}
