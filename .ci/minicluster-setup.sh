#!/bin/bash
# What the Slurm mini-cluster tests (tests/slurm, marker `slurm`) need on a Debian 12 CI machine:
# the Docker engine (docker.io: dockerd, containerd, runc) and debootstrap (the registry-free base image).
# Only installs: the tests start the engine themselves, the safe way
# (dockerd --iptables=false --ip-forward=false --bridge=none, see adsched/minicluster.py) and stop it after.
# The docker SDK comes with the project's `test` extra.
set -euo pipefail

if command -v dockerd >/dev/null && command -v debootstrap >/dev/null; then
    echo "minicluster-setup: docker.io and debootstrap already installed"
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends docker.io debootstrap >/dev/null
# The package's units are not started (no systemd here); never start a plain dockerd: it changes the
# host's forwarding and firewall.
echo "minicluster-setup: installed $(dockerd --version)"
