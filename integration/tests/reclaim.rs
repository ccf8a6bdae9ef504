//! Transmit-descriptor reclaim (`tx_reclaim`): every policy hands every transmitted
//! chain back; batched reclaim defers sparse completions to its deadline timer
//! (counted as `deadline_flushes`), eager and adaptive (sparse traffic) never do; when
//! the front-end stops a ring (GET_VRING_BASE), every chain counted in the returned
//! base has been completed. That last test checks the invariant, not which path kept
//! it: the 200 µs deadline timer may publish before `stop_vring` gets to.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use quiver_integration::Quiverd;
use quiver_testdriver::{seq_frame, Guest, QueueSel};
use serde_json::Value;

const MAC1: [u8; 6] = [0x52, 0x54, 0, 0, 0, 1];
const MAC2: [u8; 6] = [0x52, 0x54, 0, 0, 0, 2];
const WAIT: Duration = Duration::from_secs(5);
/// Frames sent one at a time, each waiting for its completion.
const SPARSE: u64 = 20;

fn config(policy: &str) -> String {
    ["vm1", "vm2"]
        .iter()
        .enumerate()
        .map(|(i, name)| {
            format!(
                "[[vnic]]\nname = \"{name}\"\nsocket = \"@DIR@/{name}.sock\"\n\
                 mac = \"52:54:00:00:00:0{}\"\nqueue_size = 256\ntx_reclaim = \"{policy}\"\n\n",
                i + 1
            )
        })
        .collect()
}

fn reclaim_stats(s: &Value, vnic: &str) -> (u64, u64) {
    let r = &s["vnics"][vnic]["tx_reclaim"];
    (
        r["deadline_flushes"].as_u64().unwrap_or(0),
        r["switches"].as_u64().unwrap_or(0),
    )
}

/// Sends `SPARSE` frames from vm1 to vm2 one at a time; returns the slowest time from
/// a send to its completion.
fn sparse_completions(a: &mut Guest, b: &mut Guest) -> Result<Duration> {
    let mut slowest = Duration::ZERO;
    for seq in 0..SPARSE {
        let sent = Instant::now();
        a.send(0, &seq_frame(MAC2, MAC1, 1, seq, 64))?;
        let done = a.wait_used(QueueSel::Tx(0), usize::try_from(seq + 1)?, WAIT)?;
        ensure!(done, "frame {seq}: no TX completion within {WAIT:?}");
        slowest = slowest.max(sent.elapsed());
        b.recv(0, WAIT)?
            .with_context(|| format!("frame {seq} never arrived"))?;
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok(slowest)
}

fn run(policy: &str) -> Result<(Duration, u64)> {
    let q = Quiverd::start("reclaim", &config(policy))?;
    let mut a = q.guest("vm1", MAC1)?;
    let mut b = q.guest("vm2", MAC2)?;
    let slowest = sparse_completions(&mut a, &mut b)?;
    let (flushes, switches) = reclaim_stats(&q.stats()?, "vm1");
    eprintln!(
        "{policy}: {SPARSE} sparse frames, slowest completion {slowest:?}, \
         deadline flushes {flushes}, mode switches {switches}"
    );
    Ok((slowest, flushes))
}

#[test]
fn eager_publishes_every_burst() -> Result<()> {
    let (_, flushes) = run("eager")?;
    ensure!(
        flushes == 0,
        "eager reclaim used the deadline {flushes} times"
    );
    Ok(())
}

#[test]
fn batched_defers_sparse_completions_to_the_deadline() -> Result<()> {
    let (_, flushes) = run("batched")?;
    // Every sparse frame is a batch of one: only the deadline publishes it.
    ensure!(
        flushes >= SPARSE / 2,
        "batched reclaim published {SPARSE} sparse frames with only {flushes} deadline flushes"
    );
    Ok(())
}

#[test]
fn adaptive_is_eager_for_sparse_traffic() -> Result<()> {
    let (_, flushes) = run("adaptive")?;
    ensure!(
        flushes == 0,
        "adaptive reclaim deferred sparse completions ({flushes} deadline flushes)"
    );
    Ok(())
}

#[test]
fn a_deferred_completion_is_published_before_the_ring_base_is_returned() -> Result<()> {
    let q = Quiverd::start("reclaim-stop", &config("batched"))?;
    let mut a = q.guest("vm1", MAC1)?;
    let mut b = q.guest("vm2", MAC2)?;
    for seq in 0..8 {
        a.send(0, &seq_frame(MAC2, MAC1, 1, seq, 64))?;
        // Delivered means processed: its completion is written, maybe unpublished.
        b.recv(0, WAIT)?
            .with_context(|| format!("frame {seq} never arrived"))?;
        let bases = a.stop()?;
        // The TX base counts every chain quiverd took; all of them must be completed.
        let tx_base = bases.get(1).copied().context("no TX base")?;
        let done = a.wait_used(QueueSel::Tx(0), usize::from(tx_base), Duration::ZERO)?;
        ensure!(
            done,
            "GET_VRING_BASE returned TX base {tx_base} with {:?} completions published",
            a.ring_indices(QueueSel::Tx(0))
        );
        a.restart()?;
    }
    Ok(())
}
