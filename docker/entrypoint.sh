#!/bin/bash
# Container entrypoint of the mini-cluster: put the (read-only mounted) munge key in place, start munged,
# then become the Slurm daemon of this container's role.
#   adsched-entrypoint controller   -> slurmctld -D
#   adsched-entrypoint node         -> slurmd -D   (the node name is the container's hostname)
#   adsched-entrypoint CMD...       -> munged, then CMD (anything else, e.g. a shell)
set -euo pipefail

key=${MUNGE_KEY_FILE:-/etc/munge-key/munge.key}
[ -r "$key" ] || { echo "adsched-entrypoint: no munge key at $key (mount one read-only)" >&2; exit 2; }
# The munge uid differs between image and host: copy with the right owner instead of using the mount.
install -o munge -g munge -m 0400 "$key" /etc/munge/munge.key
install -d -o munge -g munge -m 0755 /run/munge
runuser -u munge -- /usr/sbin/munged

role=${1:-node}
case "$role" in
    controller) shift; exec slurmctld -D "$@" ;;
    node)       shift; exec slurmd -D "$@" ;;
    *)          exec "$@" ;;
esac
