#!/usr/bin/env bash
# The boot rehearsal: an LB's and a web node's user data through real cloud-init, in Debian 12
# containers (systemd-nspawn) against a local moto. Root; about 5-10 minutes (the first run
# also builds the Debian tree: a few more). Not for CI. Arguments go to
# `hapair bench rehearsal` (--nodes lb1,web1 --timeout 900 --out DIR --keep).
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
    echo "boot-rehearsal: run as root" >&2
    exit 2
fi
need=()
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v systemd-nspawn >/dev/null || need+=(systemd-container)
if [ ${#need[@]} -gt 0 ]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${need[@]}"
fi
exec .venv/bin/hapair bench rehearsal "$@"
