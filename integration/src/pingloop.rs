//! A guest that pings one address in a loop and prints one console line per ping,
//! `Q <uptime> <carrier> ok|fail`, so the host can act at the right moments (kill
//! quiverd, change the link, swap the peer) and see when traffic stops and resumes.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Result};

use crate::qemu::{condense, Vm};
use crate::Quiverd;

/// How long the guest's ping loop runs at most (the host stops it earlier).
const LOOP_SECS: u32 = 600;

/// One ping of the guest's loop.
#[derive(Clone, Copy, Debug)]
pub struct Ping {
    /// Guest uptime in seconds when the ping finished.
    pub uptime: f64,
    pub carrier: bool,
    pub ok: bool,
    /// Byte offset of the line's end in the console file.
    pub end: usize,
}

/// The guest script: pings `host` every 0.2 s (bounded by `LOOP_SECS`), one `Q` line
/// per ping. With `forget_neighbours` the guest flushes its ARP cache before every
/// ping, for peers that change their MAC between pings.
pub fn ping_loop_script(host: Ipv4Addr, forget_neighbours: bool) -> String {
    let flush = if forget_neighbours {
        "ip neigh flush dev eth0 >/dev/null 2>&1\n  "
    } else {
        ""
    };
    format!(
        "end=$(( $(cut -d. -f1 /proc/uptime) + {LOOP_SECS} ))\n\
         while [ \"$(cut -d. -f1 /proc/uptime)\" -lt $end ]; do\n  \
           {flush}if ping -c 1 -W 1 {host} >/dev/null 2>&1; then r=ok; else r=fail; fi\n  \
           echo \"Q $(cut -d' ' -f1 /proc/uptime) $(cat /sys/class/net/eth0/carrier 2>/dev/null || echo 0) $r\"\n  \
           sleep 0.2\n\
         done\n"
    )
}

/// The `Q` lines of a console text.
pub fn pings(console: &str) -> Vec<Ping> {
    let mut out = Vec::new();
    let mut end = 0;
    for line in console.split_inclusive('\n') {
        end += line.len();
        if !line.ends_with('\n') {
            break; // not yet complete
        }
        let mut w = line.trim_end().split(' ');
        if w.next() != Some("Q") {
            continue;
        }
        let (Some(up), Some(c), Some(r)) = (w.next(), w.next(), w.next()) else {
            continue;
        };
        let Ok(uptime) = up.parse() else { continue };
        out.push(Ping {
            uptime,
            carrier: c == "1",
            ok: r == "ok",
            end,
        });
    }
    out
}

/// Polls the guest's console until `pred` finds what it wants in the `Q` lines.
pub fn wait_pings<T>(
    vm: &mut Vm,
    q: &Quiverd,
    what: &str,
    timeout: Duration,
    pred: impl Fn(&[Ping]) -> Option<T>,
) -> Result<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(t) = pred(&pings(&vm.console_text())) {
            return Ok(t);
        }
        if Instant::now() > deadline {
            bail!(
                "{}: {what}: not within {timeout:?}\n{}\n--- quiverd log (condensed) ---\n{}",
                vm.name,
                vm.diagnostics(),
                condense(&q.log_text())
            );
        }
        ensure!(
            !vm.console_text().contains("QUIVER-RESULT "),
            "{}: the guest's ping loop ended early\n{}",
            vm.name,
            vm.diagnostics()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Index of the first of `n` consecutive good pings with carrier, at or after `from`.
pub fn resumed(p: &[Ping], from: usize, n: usize) -> Option<usize> {
    (from..p.len()).find(|&i| p.len() >= i + n && p[i..i + n].iter().all(|x| x.ok && x.carrier))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_complete_q_lines_only() {
        let text = "boot\nQ 12.5 1 ok\nQ 12.9 0 fail\nQ 13.1 1 o";
        let p = pings(text);
        assert_eq!(p.len(), 2);
        assert!(p[0].ok && p[0].carrier && p[0].uptime == 12.5);
        assert!(!p[1].ok && !p[1].carrier);
        assert_eq!(p[1].end, "boot\nQ 12.5 1 ok\nQ 12.9 0 fail\n".len());
        assert_eq!(resumed(&p, 0, 1), Some(0));
        assert_eq!(resumed(&p, 1, 1), None);
    }
}
