#!/usr/bin/env bash
# THE demo: two real QEMU guests talk to each other and to a host in a network
# namespace, all through quiverd.
#
#   namespace host 10.77.0.1 ── TAP qdemo0 ── quiverd ─┬─ vhost-user ── VM vm1 10.77.0.11
#   (ip netns quiver-demo-PID)   (uplink up0)           └─ vhost-user ── VM vm2 10.77.0.12
#
# quiverd runs examples/quiverd.toml (its two VNICs, sockets moved into a temporary
# directory) plus a TAP uplink that quiverd creates inside the namespace. Each VM is
# QEMU 7.2 booting the test guest of vm-images/ (Debian kernel + busybox initramfs);
# its NIC arguments are what `quiverd qemu-args` prints. The guests' scripts:
#   vm1: ping vm2 and the namespace host, then serve one iperf3 test;
#   vm2: ping vm1 and the namespace host, let the namespace host ping both guests,
#        then run `iperf3 -c vm1` for IPERF_SECS seconds.
# Printed: progress, ping and iperf3 summaries, the namespace's neighbour table and
# quiverd's counters. Exits 0 only if every ping and the iperf3 run succeeded.
# Takes 1-2 minutes under TCG (no KVM).
#
#   sudo scripts/demo.sh
#   sudo IPERF_SECS=10 GUEST_TIMEOUT=600 scripts/demo.sh
#   sudo QUIVER_ACCEL=kvm scripts/demo.sh     # if /dev/kvm really works
set -euo pipefail
cd "$(dirname "$0")/.."

IPERF_SECS=${IPERF_SECS:-5}
# Boot plus scripts, for both guests (TCG on a busy machine is slow).
GUEST_TIMEOUT=${GUEST_TIMEOUT:-300}
# How long a guest keeps retrying to reach a peer that may still be booting.
REACH_SECS=60
NET=10.77.0
HOST_IP=$NET.1
VM1_IP=$NET.11
VM2_IP=$NET.12
TAP=qdemo0
NS=quiver-demo-$$
GO_PORT=7777 # vm2 waits for a connection here: the namespace host has pinged both guests
MEM=256M
QEMU=/usr/bin/qemu-system-x86_64 # Debian 12's QEMU 7.2

say() { printf 'demo: %s\n' "$*"; }
die() { printf 'demo: error: %s\n' "$*" >&2; exit 1; }

[[ $(id -u) -eq 0 ]] || die "must run as root (namespaces, TAP, hugepages, vhost-user memory): sudo $0"
say "[1/6] preparing the host (scripts/setup.sh: packages, QEMU, guest image)"
scripts/setup.sh
command -v cargo >/dev/null 2>&1 || export PATH="${HOME:-/root}/.cargo/bin:/root/.cargo/bin:$PATH"
[[ -x $QEMU ]] || die "$QEMU missing (scripts/setup-vm.sh installs qemu-system-x86)"
KERNEL=$PWD/vm-images/out/vmlinuz
INITRD=$PWD/vm-images/out/initrd.img
[[ -f $KERNEL && -f $INITRD ]] || die "guest image missing ($KERNEL, $INITRD): run vm-images/build.sh"

say "[2/6] building quiverd (release)"
cargo build --release --quiet -p quiver-quiverd --bin quiverd
QUIVERD=$PWD/target/release/quiverd

tmp=$(mktemp -d /tmp/quiver-demo.XXXXXX)
quiverd_pid=
declare -A qemu_pid=()
ns_made=0
cleanup() {
    local rc=$? pid
    trap - INT TERM
    for pid in "${qemu_pid[@]}"; do
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    if [[ -n $quiverd_pid ]] && kill -TERM "$quiverd_pid" 2>/dev/null; then
        wait "$quiverd_pid" 2>/dev/null || true
    fi
    ((ns_made)) && { ip netns delete "$NS" 2>/dev/null || true; }
    rm -rf "$tmp"
    exit "$rc"
}
trap cleanup EXIT
trap 'say "interrupted"; exit 130' INT TERM

# Accelerator: QUIVER_ACCEL, else the KVM probe the integration tests cached for this
# boot of the host, else TCG. QEMU 7.2 under TCG aborts when a vhost-user NIC uses
# MSI-X, so TCG guests boot with pci=nomsi.
accel=${QUIVER_ACCEL:-$(cat "vm-images/out/accel-$(cat /proc/sys/kernel/random/boot_id)" 2>/dev/null || true)}
[[ $accel == kvm ]] || accel=tcg
nomsi=
[[ $accel == tcg ]] && nomsi=pci=nomsi

# --- quiverd -----------------------------------------------------------------------
# examples/quiverd.toml with the sockets in $tmp, a TAP uplink in the namespace, and
# both VNICs sending unknown destinations and broadcasts to it.
cfg=$tmp/quiverd.toml
{
    sed -e "s#/run/quiver/#$tmp/#g" -e 's/^\[\[vnic\]\]$/&\nuplink = "up0"/' examples/quiverd.toml
    cat <<EOF

# Added by scripts/demo.sh: the way to the namespace host.
[[uplink]]
name = "up0"
kind = "tap"
ifname = "$TAP"
netns = "$NS"
EOF
} >"$cfg"
"$QUIVERD" --check-config "$cfg" >"$tmp/check.log" 2>&1 || { cat "$tmp/check.log"; die "bad configuration $cfg"; }

say "[3/6] starting quiverd; namespace $NS is the host $HOST_IP behind TAP $TAP"
ip netns add "$NS"
ns_made=1
say "configuration ($cfg):"
grep -E '^\s*(\[\[|name|socket|mac|queue_pairs|uplink|kind|ifname|netns)' "$cfg" |
    sed 's/ *#.*//; s/^/    /'
stats=$tmp/stats.json
"$QUIVERD" --config "$cfg" --stats-file "$stats" >"$tmp/quiverd.log" 2>&1 &
quiverd_pid=$!
for _ in $(seq 100); do
    [[ -S $tmp/vm1.sock && -S $tmp/vm2.sock && -f $stats ]] && ip -n "$NS" link show "$TAP" >/dev/null 2>&1 && break
    kill -0 "$quiverd_pid" 2>/dev/null || { cat "$tmp/quiverd.log"; die "quiverd exited"; }
    sleep 0.1
done
[[ -S $tmp/vm1.sock && -S $tmp/vm2.sock ]] || { cat "$tmp/quiverd.log"; die "quiverd made no sockets"; }
ip -n "$NS" link show "$TAP" >/dev/null 2>&1 || { cat "$tmp/quiverd.log"; die "quiverd made no TAP $TAP in $NS"; }
ip -n "$NS" addr add "$HOST_IP/24" dev "$TAP"
ip -n "$NS" link set "$TAP" up
ip -n "$NS" link set lo up
say "quiverd running (pid $quiverd_pid)"

# --- the guests' scripts (busybox sh) ------------------------------------------------
# Console lines starting with "DEMO " are progress, echoed here as they appear.
# shellcheck disable=SC2016 # expanded by the guest
common='
reach() { # reach NAME IP: retry until IP answers (bounded), then 3 pings
  i=0
  until ping -c 1 -W 1 $2 >/dev/null 2>&1; do
    i=$((i + 1))
    if [ $i -ge '$REACH_SECS' ]; then echo "DEMO FAIL: $1 ($2) unreachable"; ip -s link show eth0; return 1; fi
    sleep 1
  done
  ping -c 3 -W 2 $2 >/tmp/ping 2>&1 || { cat /tmp/ping; echo "DEMO FAIL: ping $1 ($2)"; return 1; }
  echo "DEMO ping $1 ($2): $(grep "packets transmitted" /tmp/ping), rtt$(grep round-trip /tmp/ping | cut -d= -f2)"
}
'
vm1_script="$common
reach vm2 $VM2_IP || exit 1
reach namespace-host $HOST_IP || exit 2
echo 'DEMO iperf3 server waiting for vm2'
timeout $GUEST_TIMEOUT iperf3 -s -1 -f m >/tmp/iperf 2>&1; rc=\$?
grep -E 'receiver|error' /tmp/iperf | sed 's/^/DEMO iperf3 server: /'
[ \$rc = 0 ] || { cat /tmp/iperf; echo \"DEMO FAIL: iperf3 server (exit \$rc)\"; exit 3; }
"
vm2_script="$common
reach vm1 $VM1_IP || exit 1
reach namespace-host $HOST_IP || exit 2
timeout 60 nc -l -p $GO_PORT </dev/null >/dev/null 2>&1 &
echo 'DEMO waiting for the namespace host to ping both guests'
wait \$! || echo 'DEMO no word from the namespace host; going on'
echo 'DEMO iperf3 client: $IPERF_SECS s of TCP to vm1'
i=0
while :; do
  iperf3 -c $VM1_IP -t $IPERF_SECS -f m >/tmp/iperf 2>&1; rc=\$?
  [ \$rc = 0 ] && break
  grep -qE 'unable to connect|refused' /tmp/iperf || break
  i=\$((i + 1)); [ \$i -ge 30 ] && break
  sleep 1
done
grep -E 'sender|receiver' /tmp/iperf | sed 's/^/DEMO iperf3 client: /'
[ \$rc = 0 ] || { cat /tmp/iperf; echo \"DEMO FAIL: iperf3 client (exit \$rc)\"; exit 3; }
"

# --- the guests ------------------------------------------------------------------------
boot() { # boot VM IP SCRIPT
    local vm=$1 nic=()
    mapfile -t nic < <("$QUIVERD" qemu-args --config "$cfg" --qemu 7.2 --mem "$MEM" --format lines "$vm" 2>>"$tmp/qemu-args.log") ||
        die "quiverd qemu-args $vm failed: $(cat "$tmp/qemu-args.log")"
    # The guest image has no option ROMs (no ipxe-qemu) and boots the kernel directly.
    local i
    for i in "${!nic[@]}"; do
        if [[ ${nic[i]} == virtio-net-pci,* ]]; then nic[i]+=,romfile=; fi
    done
    local append
    append="console=ttyS0 quiet panic=-1 $nomsi quiver.ip=$2/24 quiver.cmd=$(printf '%s' "$3" | base64 -w0)"
    # x86 Linux keeps 2047 bytes of command line and drops the rest.
    ((${#append} < 2040)) || die "$vm: kernel command line too long (${#append} bytes): shorten its script"
    : >"$tmp/$vm.console"
    "$QEMU" -name "quiver-demo-$vm" -accel "$accel" -machine q35 -m "$MEM" -smp 1 -nodefaults \
        -display none -no-reboot -serial "file:$tmp/$vm.console" \
        -kernel "$KERNEL" -initrd "$INITRD" \
        -append "$append" \
        "${nic[@]}" </dev/null >"$tmp/$vm.qemu.log" 2>&1 &
    qemu_pid[$vm]=$!
}
say "[4/6] booting vm1 ($VM1_IP) and vm2 ($VM2_IP): QEMU 7.2, $accel, $MEM, NIC from \`quiverd qemu-args\`"
t0=$SECONDS
boot vm1 "$VM1_IP" "$vm1_script"
boot vm2 "$VM2_IP" "$vm2_script"

# The namespace host pings both guests once vm2 has reached everyone (vm1 is then
# pinging or waiting for iperf3, vm2 waits for this), then tells vm2 to go on.
ns_ping() { # ns_ping NAME IP
    local i
    for i in $(seq 20); do
        ip netns exec "$NS" busybox ping -c 1 -W 1 "$2" >/dev/null 2>&1 && break
        ((i < 20)) || { say "FAIL: the namespace host cannot reach $1 ($2)"; return 1; }
    done
    ip netns exec "$NS" busybox ping -c 3 -W 2 "$2" >"$tmp/nsping" 2>&1 ||
        { cat "$tmp/nsping"; say "FAIL: namespace host -> $1 ($2)"; return 1; }
    say "namespace host: ping $1 ($2): $(grep 'packets transmitted' "$tmp/nsping"), rtt$(grep round-trip "$tmp/nsping" | cut -d= -f2)"
}
ns_pings="not run"
host_turn() {
    ns_pings=ok
    ns_ping vm1 "$VM1_IP" || ns_pings=failed
    ns_ping vm2 "$VM2_IP" || ns_pings=failed
    local i
    for i in $(seq 10); do
        timeout 5 ip netns exec "$NS" bash -c "echo go >/dev/tcp/$VM2_IP/$GO_PORT" 2>/dev/null && return
        sleep 1
    done
    say "could not signal vm2 (it goes on after 60 s)"
}

# Echoes each guest's new complete console lines; records QUIVER-RESULT.
declare -A seen=([vm1]=0 [vm2]=0) result=()
progress() {
    local vm=$1 n lines line
    n=$(wc -l <"$tmp/$vm.console")
    ((n > seen[$vm])) || return 0
    mapfile -t lines < <(head -n "$n" "$tmp/$vm.console" | tail -n +$((seen[$vm] + 1)) | tr -d '\r')
    seen[$vm]=$n
    for line in "${lines[@]}"; do
        case $line in
        QUIVER-READY) say "$vm: booted, eth0 up ($((SECONDS - t0)) s)" ;;
        "DEMO "*) say "$vm: ${line#DEMO }" ;;
        "QUIVER-RESULT "*)
            result[$vm]=${line#QUIVER-RESULT }
            say "$vm: script finished, exit ${result[$vm]} ($((SECONDS - t0)) s)"
            ;;
        esac
        if [[ $vm == vm2 && $line == "DEMO waiting for the namespace host"* ]]; then
            host_turn
        fi
    done
}
deadline=$((SECONDS + GUEST_TIMEOUT))
while ((SECONDS < deadline)); do
    for vm in vm1 vm2; do
        progress "$vm"
        if [[ -z ${result[$vm]:-} ]] && ! kill -0 "${qemu_pid[$vm]}" 2>/dev/null; then
            progress "$vm"
            [[ -n ${result[$vm]:-} ]] || { result[$vm]="none (QEMU exited)"; say "$vm: QEMU exited without a result"; }
        fi
    done
    [[ -n ${result[vm1]:-} && -n ${result[vm2]:-} ]] && break
    # One guest failed: the other is probably waiting for it; give it 20 s more.
    for vm in vm1 vm2; do
        if [[ -n ${result[$vm]:-} && ${result[$vm]} != 0 ]] && ((deadline > SECONDS + 20)); then
            deadline=$((SECONDS + 20))
        fi
    done
    sleep 0.5
done
for vm in vm1 vm2; do
    [[ -n ${result[$vm]:-} ]] || { result[$vm]="none (timeout)"; say "$vm: no result after $((SECONDS - t0)) s"; }
done

# --- what happened ---------------------------------------------------------------------
echo
say "[5/6] the namespace host's neighbours (learned through quiverd's uplink):"
ip -n "$NS" neigh show dev "$TAP" | sed 's/^/    /'
echo
say "quiverd's counters (from --stats-file; vnic rx/tx = into/out of the guest, uplink rx/tx = read from/written to the TAP):"
kill -USR1 "$quiverd_pid" 2>/dev/null || true
sleep 0.5
jq -r '
    def row($name; $t): [$name, $t.rx_packets, $t.tx_packets, $t.rx_bytes, $t.tx_bytes,
        ([$t.drops[]] | add // 0),
        ([$t.drops | to_entries[] | select(.value > 0) | "\(.key)=\(.value)"] | join(" "))] | @tsv;
    (.vnics | to_entries[] | row("vnic " + .key; .value.total)),
    (.uplinks | to_entries[] | row("uplink " + .key; .value.total))' "$stats" |
    awk -F'\t' '
        BEGIN { printf "    %-11s %10s %10s %12s %12s %6s\n", "", "rx_packets", "tx_packets", "rx_bytes", "tx_bytes", "drops" }
        { printf "    %-11s %10s %10s %12s %12s %6s %s\n", $1, $2, $3, $4, $5, $6, ($7 == "" ? "" : "(" $7 ")") }'
say "  MACs learned from the uplink: $(jq .learned_macs "$stats"). TCP travels as GSO frames of up to 64 KB."
say "  Drops: not_ready = frames for a guest still booting, no_rx_buffers = a guest's RX ring was full."

echo
ok=1
for vm in vm1 vm2; do
    [[ ${result[$vm]} == 0 ]] || ok=0
done
[[ $ns_pings == ok ]] || ok=0
say "[6/6] vm1 script: exit ${result[vm1]}, vm2 script: exit ${result[vm2]}, namespace host pings: $ns_pings"
say "the VMs took $((SECONDS - t0)) s, the whole demo $SECONDS s"
if ((ok)); then
    say "PASS: vm1 <-> vm2, both VMs <-> the namespace host (ping), and iperf3 vm2 -> vm1 through quiverd"
else
    for vm in vm1 vm2; do
        echo "--- $vm console ---"
        tr -d '\r' <"$tmp/$vm.console"
        echo "--- $vm QEMU log ---"
        cat "$tmp/$vm.qemu.log"
    done
    echo "--- quiverd log ---"
    cat "$tmp/quiverd.log"
    die "FAIL: see the guests' consoles and quiverd's log above"
fi
