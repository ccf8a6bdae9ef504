#!/usr/bin/env bash
# Prepares a Debian 12 host for quiver's demo and test suite. Idempotent; run as root.
# Works unattended (DEBIAN_FRONTEND=noninteractive, no stdin).
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive

PACKAGES=(dpdk-dev iproute2 tcpdump netsniff-ng ethtool jq build-essential pkg-config
    libvirt-clients libxml2-utils # virt-xml-validate and the xmllint it runs
    libvirt-daemon-system # libvirtd and virtlogd for integration/tests/libvirt.rs
    clang libbpf-dev) # build the af_xdp uplink's XDP program (crates/uplink/build.rs)
MIN_HUGEPAGES=512

step() { printf 'setup: %s\n' "$*"; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

[[ $(id -u) -eq 0 ]] || die "must run as root (try: sudo $0)"

# bookworm-backports (for QEMU 10) and the guest image come from scripts/setup-vm.sh,
# called at the end.

missing=()
for p in "${PACKAGES[@]}"; do
    # dpkg -s also knows removed-but-configured packages; require "install ok installed".
    if ! dpkg -s "$p" 2>/dev/null | grep -q '^Status: install ok installed$'; then
        missing+=("$p")
    fi
done
if ((${#missing[@]} == 0)); then
    step "packages: all present (${PACKAGES[*]})"
else
    step "packages: installing ${missing[*]}"
    apt-get update -q </dev/null
    apt-get install -y -q --no-install-recommends "${missing[@]}" </dev/null
fi

command -v dpdk-testpmd >/dev/null 2>&1 || die "dpdk-testpmd not on PATH after installing dpdk-dev"

current=$(sysctl -n vm.nr_hugepages)
if ((current >= MIN_HUGEPAGES)); then
    step "hugepages: vm.nr_hugepages = $current (>= $MIN_HUGEPAGES)"
else
    step "hugepages: raising vm.nr_hugepages from $current to $MIN_HUGEPAGES"
    sysctl -q -w vm.nr_hugepages="$MIN_HUGEPAGES"
    current=$(sysctl -n vm.nr_hugepages)
    ((current >= MIN_HUGEPAGES)) ||
        step "hugepages: warning: kernel granted only $current (fragmented memory?)"
fi

if ! command -v cargo >/dev/null 2>&1; then
    # rustup installs into ~/.cargo/bin, which a sudo PATH often lacks.
    for d in "${HOME:-/root}/.cargo/bin" /root/.cargo/bin /usr/local/cargo/bin; do
        [[ -x $d/cargo ]] && export PATH="$d:$PATH" && break
    done
fi
cargo_version=$(cargo --version 2>/dev/null) ||
    die "cargo not found: install the Rust toolchain with rustup and put ~/.cargo/bin on PATH"
step "rust: $cargo_version"

# QEMU 7.2 and 10.0, the guest image (kernel + busybox initramfs) for the VM tests.
"$(dirname "$0")/setup-vm.sh"
step "done"
