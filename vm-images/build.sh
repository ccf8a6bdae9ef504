#!/usr/bin/env bash
# Builds quiver's test guest from Debian packages: the distribution kernel
# (linux-image-amd64, unpacked with dpkg -x, never installed on the host) and a
# busybox initramfs holding the virtio-net modules, busybox-static, iproute2's ip,
# ethtool and iperf3 (with the shared libraries ldd names), and vm-images/init.
# Idempotent and cached: each step is skipped when its output exists.
#
# Output (in $QUIVER_VM_CACHE, default vm-images/out):
#   vmlinuz      the kernel
#   initrd.img   the initramfs (gzip'd newc cpio, reproducible: fixed mtimes, sorted)
# Needs: apt-get, dpkg, modinfo (kmod), cpio, gzip, and the host packages
# busybox-static, iproute2, ethtool, iperf3 (scripts/setup-vm.sh installs them).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
OUT=${QUIVER_VM_CACHE:-$HERE/out}
# Modules the guest needs; their dependencies are added in load order.
MODULES=(virtio_pci failover net_failover virtio_net)
# Host programs copied into the guest, with their libraries.
PROGRAMS=(/usr/sbin/ethtool /usr/bin/iperf3 /usr/bin/ip)
SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-1700000000}

step() { printf 'vm-images: %s\n' "$*"; }
die() { printf 'vm-images: error: %s\n' "$*" >&2; exit 1; }

mkdir -p "$OUT"
[[ -x /bin/busybox ]] || die "/bin/busybox missing: run scripts/setup-vm.sh (busybox-static)"
for p in "${PROGRAMS[@]}"; do
    [[ -x $p ]] || die "$p missing: run scripts/setup-vm.sh"
done

# --- 1. kernel package ---------------------------------------------------------
# linux-image-amd64 is a metapackage; its Depends names the versioned image.
kpkg=$(cat "$OUT/kernel-package" 2>/dev/null || true)
if [[ -z $kpkg ]]; then
    kpkg=$(apt-cache depends linux-image-amd64 2>/dev/null |
        awk '/Depends: linux-image-[0-9]/ { print $2; exit }')
    [[ -n $kpkg ]] || die "cannot resolve linux-image-amd64 (apt-get update?)"
    echo "$kpkg" >"$OUT/kernel-package"
fi
kver=${kpkg#linux-image-}
KDIR=$OUT/kernel-$kver
if compgen -G "$OUT/debs/${kpkg}_*.deb" >/dev/null; then
    step "1/4 kernel package: cached ($kpkg)"
else
    step "1/4 kernel package: downloading $kpkg"
    mkdir -p "$OUT/debs"
    (cd "$OUT/debs" && apt-get download -q -o APT::Sandbox::User=root "$kpkg" >/dev/null)
fi

# --- 2. unpack the kernel --------------------------------------------------------
if [[ -f $KDIR/boot/vmlinuz-$kver ]]; then
    step "2/4 kernel: unpacked ($KDIR)"
else
    step "2/4 kernel: unpacking $kpkg"
    rm -rf "$KDIR.tmp"
    dpkg -x "$OUT"/debs/"${kpkg}"_*.deb "$KDIR.tmp"
    rm -rf "$KDIR"
    mv "$KDIR.tmp" "$KDIR"
fi
cp -f "$KDIR/boot/vmlinuz-$kver" "$OUT/vmlinuz"

# --- 3. initramfs tree -------------------------------------------------------------
# The tree is rebuilt when this script, the init or the kernel changes.
stamp=$( (cat "$0" "$HERE/init"; echo "$kver"; for p in "${PROGRAMS[@]}" /bin/busybox; do sha256sum "$p"; done) |
    sha256sum | cut -c1-16)
ROOTFS=$OUT/rootfs-$stamp
MODDIR=$KDIR/lib/modules/$kver
if [[ -f $ROOTFS/init ]]; then
    step "3/4 initramfs tree: cached ($ROOTFS)"
else
    step "3/4 initramfs tree: assembling ($kver, busybox, ${PROGRAMS[*]##*/})"
    rm -rf "$ROOTFS.tmp" "$OUT"/rootfs-*
    R=$ROOTFS.tmp
    mkdir -p "$R"/{bin,sbin,usr/bin,usr/sbin,etc,proc,sys,dev,tmp,run,root,lib/modules}
    cp /bin/busybox "$R/bin/busybox"
    for a in $(/bin/busybox --list); do
        [[ $a == busybox ]] || ln -s busybox "$R/bin/$a"
    done
    # iproute2's ip and ethtool win over busybox applets of the same name: PATH
    # puts /usr/sbin and /usr/bin first.
    for p in "${PROGRAMS[@]}"; do
        cp "$p" "$R/usr/sbin/${p##*/}"
        ldd "$p" | awk '/=> \// { print $3 } /^[[:space:]]*\/[^ ]*ld-linux/ { print $1 }' |
            while read -r lib; do
                mkdir -p "$R$(dirname "$lib")"
                cp -L "$lib" "$R$lib"
            done
    done
    echo 'root:x:0:0:root:/root:/bin/sh' >"$R/etc/passwd"
    echo 'root:x:0:' >"$R/etc/group"
    echo '127.0.0.1 localhost' >"$R/etc/hosts"
    # Modules, dependencies first (modinfo reads each .ko's "depends").
    declare -A seen=()
    order=()
    add_module() {
        local m=$1 f dep
        [[ -n ${seen[$m]:-} ]] && return 0
        seen[$m]=1
        f=$(find "$MODDIR/kernel" -name "$m.ko" -o -name "$m.ko.xz" | head -n1)
        [[ -n $f ]] || die "module $m not found in $kpkg"
        for dep in $(modinfo -F depends "$f" | tr ',' ' '); do
            add_module "$dep"
        done
        case $f in
            *.xz) xz -dc "$f" >"$R/lib/modules/$m.ko" ;;
            *) cp "$f" "$R/lib/modules/$m.ko" ;;
        esac
        order+=("$m.ko")
    }
    for m in "${MODULES[@]}"; do add_module "$m"; done
    printf '%s\n' "${order[@]}" >"$R/etc/quiver-modules"
    cp "$HERE/init" "$R/init"
    chmod 755 "$R/init"
    mv "$R" "$ROOTFS"
fi

# --- 4. initramfs archive ------------------------------------------------------------
if [[ -f $OUT/initrd-$stamp.img ]]; then
    step "4/4 initramfs: cached ($OUT/initrd.img)"
else
    step "4/4 initramfs: packing"
    rm -f "$OUT"/initrd-*.img
    find "$ROOTFS" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
    (cd "$ROOTFS" && find . -mindepth 1 | LC_ALL=C sort |
        cpio --quiet -o -H newc -R 0:0 --reproducible | gzip -9 -n) >"$OUT/initrd-$stamp.img.tmp"
    mv "$OUT/initrd-$stamp.img.tmp" "$OUT/initrd-$stamp.img"
fi
ln -sfn "initrd-$stamp.img" "$OUT/initrd.img"
step "kernel: $OUT/vmlinuz ($kver)"
step "initrd: $OUT/initrd.img ($(du -h "$OUT/initrd-$stamp.img" | cut -f1))"
