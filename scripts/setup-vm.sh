#!/usr/bin/env bash
# Prepares a Debian 12 host to boot quiver's test guests: QEMU 7.2 (Debian 12's
# qemu-system-x86), QEMU 10.0 from bookworm-backports unpacked side by side into a
# cache (never installed over 7.2), and the Debian packages vm-images/build.sh
# unpacks into the guest (kernel, busybox, iperf3, ethtool, iproute2).
# Idempotent; run as root. Prints where things are.
#
# Environment:
#   QUIVER_VM_CACHE   cache directory (default: <repo>/vm-images/out)
set -euo pipefail

export DEBIAN_FRONTEND=noninteractive
ROOT=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${QUIVER_VM_CACHE:-$ROOT/vm-images/out}
QEMU10_DIR=$CACHE/qemu10

# Host packages: QEMU 7.2 and the tools whose binaries and libraries go into the
# guest (the guest copies them from the host, so host and guest agree on the libc).
PACKAGES=(qemu-system-x86 busybox-static iperf3 ethtool iproute2 cpio kmod)
BACKPORTS_SUITE=bookworm-backports
BACKPORTS_LIST=/etc/apt/sources.list.d/quiver-backports.sources
# The packages that make up QEMU 10's x86 system emulator (binary + firmware).
QEMU10_PACKAGES=(qemu-system-x86 qemu-system-data qemu-system-common)

step() { printf 'setup-vm: %s\n' "$*"; }
die() { printf 'setup-vm: error: %s\n' "$*" >&2; exit 1; }

[[ $(id -u) -eq 0 ]] || die "must run as root (try: sudo $0)"

installed() { dpkg -s "$1" 2>/dev/null | grep -q '^Status: install ok installed$'; }

updated=0
apt_update() {
    if ((updated == 0)); then
        apt-get update -q </dev/null >/dev/null
        updated=1
    fi
}

# --- host packages -----------------------------------------------------------
missing=()
for p in "${PACKAGES[@]}"; do
    installed "$p" || missing+=("$p")
done
if ((${#missing[@]} == 0)); then
    step "packages: all present (${PACKAGES[*]})"
else
    step "packages: installing ${missing[*]}"
    apt_update
    apt-get install -y -q --no-install-recommends "${missing[@]}" </dev/null
fi

# --- bookworm-backports ------------------------------------------------------
# Reuse the URI of the main Debian archive already configured (a mirror or snapshot
# chosen by the host's owner), so no host name is written here.
if [[ -f $BACKPORTS_LIST ]] || grep -rqs "$BACKPORTS_SUITE" /etc/apt/sources.list /etc/apt/sources.list.d/; then
    step "backports: $BACKPORTS_SUITE already configured"
else
    uri=""
    if [[ -f /etc/apt/sources.list.d/debian.sources ]]; then
        # deb822: the URIs line of the stanza whose Suites has plain "bookworm".
        uri=$(awk '
            /^[[:space:]]*$/ { if (s ~ /(^|[[:space:]])bookworm([[:space:]]|$)/ && u != "") { print u; exit } u=""; s="" }
            /^URIs:/ { u=$2 }
            /^Suites:/ { $1=""; s=$0 }
            END { if (s ~ /(^|[[:space:]])bookworm([[:space:]]|$)/ && u != "") print u }
        ' /etc/apt/sources.list.d/debian.sources | head -n1)
    fi
    if [[ -z $uri && -f /etc/apt/sources.list ]]; then
        uri=$(awk '$1 == "deb" && $3 == "bookworm" { print $2; exit }' /etc/apt/sources.list)
    fi
    [[ -n $uri ]] || die "no bookworm URI found in /etc/apt/sources.list{,.d/debian.sources}"
    step "backports: adding $BACKPORTS_SUITE from $uri"
    cat >"$BACKPORTS_LIST" <<SRC
Types: deb
URIs: $uri
Suites: $BACKPORTS_SUITE
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
    updated=0
fi

# --- QEMU 10 from backports, unpacked into the cache ---------------------------
if [[ -x $QEMU10_DIR/root/usr/bin/qemu-system-x86_64 ]]; then
    step "qemu10: cached in $QEMU10_DIR"
else
    step "qemu10: downloading ${QEMU10_PACKAGES[*]} from $BACKPORTS_SUITE"
    apt_update
    rm -rf "$QEMU10_DIR.tmp"
    mkdir -p "$QEMU10_DIR.tmp/debs"
    (cd "$QEMU10_DIR.tmp/debs" &&
        apt-get download -q -o APT::Sandbox::User=root "${QEMU10_PACKAGES[@]/%//$BACKPORTS_SUITE}" </dev/null >/dev/null)
    for deb in "$QEMU10_DIR.tmp"/debs/*.deb; do
        dpkg -x "$deb" "$QEMU10_DIR.tmp/root"
    done
    rm -rf "$QEMU10_DIR"
    mv "$QEMU10_DIR.tmp" "$QEMU10_DIR"
fi
QEMU10=$QEMU10_DIR/root/usr/bin/qemu-system-x86_64
if "$QEMU10" --version >/dev/null 2>&1; then
    step "qemu10: $("$QEMU10" --version | head -n1)"
else
    step "qemu10: warning: $QEMU10 does not run: $(ldd "$QEMU10" | grep 'not found' | tr -s ' \n' ' ')"
fi

step "qemu7.2: $(command -v qemu-system-x86_64) ($(qemu-system-x86_64 --version | head -n1))"
step "qemu10 binary: $QEMU10"
step "qemu10 firmware: $QEMU10_DIR/root/usr/share/qemu"
# The guest image (cached; seconds when nothing changed). The tests build it on
# first use too, but building here keeps the downloads in the setup step.
QUIVER_VM_CACHE=$CACHE "$ROOT/vm-images/build.sh" | sed 's/^/setup-vm: /'
step "done"
