#!/bin/bash
# Build the Slurm 22.05 base image of the mini-cluster without any registry:
# debootstrap a minimal Debian bookworm with Slurm + munge + python3, strip it, `docker import` it.
#
#   build-base.sh IMAGE[:TAG]
#
# Env: MIRROR (default: the first URIs of /etc/apt/sources.list.d/debian.sources, else deb.debian.org),
#      SUITE (default bookworm), DOCKER_HOST (the engine to import into).
# The Python driver (adsched.minicluster) keys its image cache on a hash of this file, so the package
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

rootfs=$(mktemp -d /tmp/adsched-rootfs.XXXXXX)
trap 'rm -rf --one-file-system "$rootfs" "$rootfs.log"' EXIT

echo "build-base.sh: debootstrap $suite from $MIRROR into $rootfs" >&2
# A package's configure step has been seen to fail once and pass on the next try: retry once, from scratch.
for attempt in 1 2; do
    if debootstrap --variant=minbase --include="$PACKAGES" "$suite" "$rootfs" "$MIRROR" >"$rootfs.log" 2>&1; then
        break
    fi
    { tail -n 5 "$rootfs.log"; tail -n 25 "$rootfs/debootstrap/debootstrap.log" 2>/dev/null; } >&2
    rm -rf --one-file-system "$rootfs" && mkdir "$rootfs"
    [ "$attempt" = 2 ] && { rm -f "$rootfs.log"; echo "build-base.sh: debootstrap failed" >&2; exit 1; }
    echo "build-base.sh: debootstrap failed, retrying once" >&2
done
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
