#!/usr/bin/env bash
# THE demo: quiverd switches frames between two VNICs whose front-end is DPDK's
# dpdk-testpmd (two net_virtio_user ports, one per VNIC socket). Frames flow
# vm1 -> vm2 and vm2 -> vm1 for DURATION seconds; then testpmd's port statistics and
# quiverd's per-VNIC counters are printed. Exits 0 only if traffic flowed both ways.
#
#   sudo scripts/demo.sh            # DURATION=10 by default
#   sudo DURATION=30 scripts/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-10}
MAC1=52:54:00:00:00:01
MAC2=52:54:00:00:00:02
# Bursts each port sends before forwarding starts: the frames in flight in each loop.
BURSTS=16
MIN_PACKETS=1000

say() { printf 'demo: %s\n' "$*"; }
die() { printf 'demo: error: %s\n' "$*" >&2; exit 1; }

[[ $(id -u) -eq 0 ]] || die "must run as root (hugepages, vhost-user memory): sudo $0"
scripts/setup.sh
command -v cargo >/dev/null 2>&1 || export PATH="${HOME:-/root}/.cargo/bin:/root/.cargo/bin:$PATH"

say "building quiverd (release)"
cargo build --release --quiet -p quiver-quiverd --bin quiverd
QUIVERD=$PWD/target/release/quiverd

tmp=$(mktemp -d /tmp/quiver-demo.XXXXXX)
quiverd_pid=
testpmd_pid=
cleanup() {
    local rc=$?
    # $testpmd_pid is timeout(1), which passes SIGTERM on and SIGKILLs after 5 s.
    if [[ -n $testpmd_pid ]] && kill -TERM "$testpmd_pid" 2>/dev/null; then
        wait "$testpmd_pid" 2>/dev/null || true
    fi
    if [[ -n $quiverd_pid ]] && kill -TERM "$quiverd_pid" 2>/dev/null; then
        wait "$quiverd_pid" 2>/dev/null || true
    fi
    rm -rf "$tmp"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The configuration is examples/quiverd.toml (the commented reference) with the sockets
# moved into the temporary directory.
sed "s#/run/quiver/#$tmp/#g" examples/quiverd.toml >"$tmp/quiverd.toml"
say "configuration $tmp/quiverd.toml:"
grep -E '^\s*(\[\[|name|socket|mode|mac|queue)' "$tmp/quiverd.toml" | sed 's/ *#.*//; s/^/    /'

stats="$tmp/stats.json"
"$QUIVERD" --config "$tmp/quiverd.toml" --stats-file "$stats" >"$tmp/quiverd.log" 2>&1 &
quiverd_pid=$!
for _ in $(seq 100); do
    [[ -S $tmp/vm1.sock && -S $tmp/vm2.sock && -f $stats ]] && break
    kill -0 "$quiverd_pid" 2>/dev/null || { cat "$tmp/quiverd.log"; die "quiverd exited"; }
    sleep 0.1
done
[[ -S $tmp/vm1.sock && -S $tmp/vm2.sock ]] || { cat "$tmp/quiverd.log"; die "quiverd made no sockets"; }
say "quiverd running (pid $quiverd_pid)"

# A fresh copy of quiverd's counters (SIGUSR1 rewrites the stats file).
snapshot() {
    kill -USR1 "$quiverd_pid"
    sleep 0.3
    cp "$stats" "$1"
}
connected() {
    snapshot "$tmp/now.json"
    jq -e '.vnics.vm1.connected and .vnics.vm2.connected' "$tmp/now.json" >/dev/null
}

# testpmd's commands, written once both ports have connected. "mac" forwarding with
# --eth-peer: a frame received on port 0 (vm1) leaves port 1 (vm2) from vm2's MAC to
# vm1's, and vice versa, so each VNIC sends from its own MAC (anti-spoofing stays on).
# "start tx_first N" seeds both loops with N bursts.
commands() {
    for _ in $(seq 300); do
        connected && break
        sleep 0.1
    done
    echo "start tx_first $BURSTS"
    sleep 1
    echo "show port stats all"
    snapshot "$tmp/before.json"
    date +%s.%N >"$tmp/t0"
    sleep "$DURATION"
    snapshot "$tmp/after.json"
    date +%s.%N >"$tmp/t1"
    echo "show port stats all"
    echo "stop"
    sleep 1
    echo "quit"
}

vdev() {
    echo "net_virtio_user$1,path=$tmp/$2.sock,mac=$3,queues=2,queue_size=1024,mrg_rxbuf=1"
}
say "starting dpdk-testpmd: $DURATION s of traffic vm1 <-> vm2"
commands | timeout --kill-after=5 $((DURATION + 60)) dpdk-testpmd \
    -l 0,1 --no-pci --in-memory --single-file-segments --file-prefix="quiver-demo-$$" \
    --vdev "$(vdev 0 vm1 $MAC1)" --vdev "$(vdev 1 vm2 $MAC2)" \
    -- -i --rxq=2 --txq=2 --nb-cores=1 --forward-mode=mac \
    --eth-peer=0,$MAC2 --eth-peer=1,$MAC1 >"$tmp/testpmd.log" 2>&1 &
testpmd_pid=$!
testpmd_rc=0
wait "$testpmd_pid" || testpmd_rc=$?
testpmd_pid=

if [[ ! -f $tmp/after.json ]]; then
    cat "$tmp/testpmd.log" "$tmp/quiverd.log"
    die "dpdk-testpmd ended early (exit $testpmd_rc)"
fi

echo
say "dpdk-testpmd port statistics (cumulative; pps over the last $DURATION s):"
# The second "show port stats all" and the forward statistics printed by "stop".
awk '/NIC statistics for port/ { n++ } n > 2' "$tmp/testpmd.log" |
    grep -vE '^(testpmd>|Telling|Waiting|Done|Stopping|Shutting|Closing|Port . is closed|Bye|Primary|$)' |
    sed '/Stopping port/,$d'

echo
say "quiverd per-VNIC counters (from $(basename "$stats")):"
jq '.vnics | map_values({connected, rx_packets: .total.rx_packets, tx_packets: .total.tx_packets,
        rx_bytes: .total.rx_bytes, tx_bytes: .total.tx_bytes,
        drops: (.total.drops | with_entries(select(.value > 0)))})' "$tmp/after.json"

secs=$(awk -v a="$(cat "$tmp/t1")" -v b="$(cat "$tmp/t0")" 'BEGIN { print a - b }')
delta() { jq -n --slurpfile a "$tmp/after.json" --slurpfile b "$tmp/before.json" \
    "\$a[0].vnics.$1.total.$2 - \$b[0].vnics.$1.total.$2"; }
ok=1
echo
for v in vm1 vm2; do
    rx=$(delta "$v" rx_packets)
    tx=$(delta "$v" tx_packets)
    say "$v: received $rx, sent $tx packets in the measured ${DURATION} s"
    ((rx > MIN_PACKETS && tx > MIN_PACKETS)) || ok=0
done
switched=$(($(delta vm1 tx_packets) + $(delta vm2 tx_packets)))
bytes=$(($(delta vm1 tx_bytes) + $(delta vm2 tx_bytes)))
say "$(awk -v p="$switched" -v b="$bytes" -v s="$secs" 'BEGIN {
    printf "quiverd switched %d frames (%d bytes each on average) in %.2f s: %.3f Mpps",
        p, p ? b / p : 0, s, p / s / 1e6 }')"

if ((ok)); then
    say "PASS: frames flowed vm1 -> vm2 and vm2 -> vm1"
else
    echo "--- quiverd log ---"
    cat "$tmp/quiverd.log"
    die "FAIL: traffic did not flow both ways (want > $MIN_PACKETS packets each way)"
fi
