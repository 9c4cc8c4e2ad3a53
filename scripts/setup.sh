#!/usr/bin/env bash
# Install what hapair needs on Debian 12 (as root): packages, then a .venv with hapair.
set -euo pipefail
cd "$(dirname "$0")/.."
PKGS="haproxy nftables dnsmasq-base iproute2 iputils-ping iputils-arping procps curl openssl wrk keepalived heartbeat python3-venv python3-pip util-linux chromium chromium-driver prometheus cloud-init faketime etcd-server"
if [ "$(id -u)" -ne 0 ]; then
  echo "setup needs root to install Debian packages: run it as root (sudo make setup)" >&2
  exit 1
fi
missing=""
for p in $PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  echo "installing Debian packages:$missing"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # Packages must not start their own daemons in the host namespace.
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
  apt-get install -y -qq --no-install-recommends $missing >/dev/null
  rm -f /usr/sbin/policy-rc.d
  case " $missing " in
    # Installed only for its schema validator (tests/aws): this machine is not a cloud
    # instance, so cloud-init must not run at its next boot.
    *" cloud-init "*) mkdir -p /etc/cloud && touch /etc/cloud/cloud-init.disabled ;;
  esac
  case " $missing " in
    # etcd runs only inside labs (ha.coordinator = "etcd"), never as the host's service.
    *" etcd-server "*) if command -v systemctl >/dev/null; then systemctl disable etcd >/dev/null 2>&1 || true; fi ;;
  esac
fi
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
.venv/bin/python -m pip install -q -e '.[dev]' 2>&1 | grep -v -E '^(WARNING|  )' || true
.venv/bin/hapair --help >/dev/null
echo "setup done: .venv/bin/hapair is the CLI"
