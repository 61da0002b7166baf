#!/bin/bash
# Build the Slurm 22.05 base image of the mini-cluster without any registry:
# debootstrap a minimal Debian bookworm with Slurm + munge + python3, strip it, `docker import` it.
#
#   build-base.sh IMAGE[:TAG]
#
# Env: MIRROR (default: the first URIs of /etc/apt/sources.list.d/debian.sources, else deb.debian.org),
#      SUITE (default bookworm), DOCKER_HOST (the engine to import into),
#      DEB_CACHE_DIR (optional: keep the downloaded .debs there for the next build).
# The Python driver (adsched.testbed.minicluster) keys its image cache on a hash of this file, so the package
# list below is part of the key: edit it here and the next run rebuilds.
set -euo pipefail

PACKAGES="slurmctld,slurmd,slurm-client,munge,slurm-wlm-basic-plugins,python3,python3-pip,procps,iproute2"

image=${1:?usage: build-base.sh IMAGE[:TAG]}
suite=${SUITE:-bookworm}
if [ -z "${MIRROR:-}" ]; then
    MIRROR=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
    MIRROR=${MIRROR:-http://deb.debian.org/debian}
fi
for tool in debootstrap docker tar; do
    command -v "$tool" >/dev/null || { echo "build-base.sh: $tool not found (apt-get install debootstrap docker.io)" >&2; exit 2; }
done

[ -z "${DEB_CACHE_DIR:-}" ] || mkdir -p "$DEB_CACHE_DIR"
rootfs=$(mktemp -d /tmp/adsched-rootfs.XXXXXX)
chmod 755 "$rootfs"  # it becomes "/": with mktemp's 0700 munge's postinst (run as user munge) fails
trap 'rm -rf --one-file-system "$rootfs" "$rootfs.log"' EXIT

echo "build-base.sh: debootstrap $suite from $MIRROR into $rootfs" >&2
# Two stages, so that maintainer scripts cannot start daemons inside the build root (munge's postinst runs
# `invoke-rc.d munge start`): policy-rc.d (exit 101, "action forbidden") is Debian's switch for chroots and
# containers, and it stays in the image.
if ! { debootstrap --foreign ${DEB_CACHE_DIR:+--cache-dir="$DEB_CACHE_DIR"} --variant=minbase --include="$PACKAGES" \
            "$suite" "$rootfs" "$MIRROR" \
        && printf '#!/bin/sh\nexit 101\n' >"$rootfs/usr/sbin/policy-rc.d" && chmod 755 "$rootfs/usr/sbin/policy-rc.d" \
        && chroot "$rootfs" /debootstrap/debootstrap --second-stage; } >"$rootfs.log" 2>&1; then
    { tail -n 5 "$rootfs.log"; tail -n 25 "$rootfs/debootstrap/debootstrap.log" 2>/dev/null; } >&2
    for m in proc sys dev/pts; do umount "$rootfs/$m" 2>/dev/null || true; done
    echo "build-base.sh: debootstrap failed" >&2
    exit 1
fi
rm -f "$rootfs.log"

# Strip what a throwaway test image never needs; the munge key is always mounted at run time.
rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb \
       "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* \
       "$rootfs"/usr/share/locale/* "$rootfs"/var/log/*.log "$rootfs"/etc/munge/munge.key
# Mounted by the engine at run time; debootstrap may leave them behind.
rm -f "$rootfs"/etc/hostname
: > "$rootfs"/etc/resolv.conf

tar -C "$rootfs" --numeric-owner -c . | docker import - "$image" >/dev/null
echo "build-base.sh: imported $image" >&2
