#!/usr/bin/env bash
# Issue 11's comparison in one run: every failover scenario for hapair (10 trials each) and for
# keepalived tuned and default (5 each; `planned` needs hapair's API), the four client profiles
# of `hapair bench failover` in every trial. Sequential: each run builds and removes its own lab.
# About 40 minutes on 2 cores. Raw results: docs/results/zero-*.json; the table:
#   hapair bench report docs/results/zero-*.json
set -u
cd "$(dirname "$0")/.."
H=.venv/bin/hapair
R=docs/results
mkdir -p "$R"
HAPAIR_RUNS=${HAPAIR_RUNS:-10}
PEER_RUNS=${PEER_RUNS:-5}
run() { # engine variant scenario runs
  local tag="zero-$1-$2-$3"
  echo "=== $tag $(date +%T)"
  timeout 1800 $H bench failover --engine "$1" --variant "$2" --scenario "$3" --runs "$4" \
    --rate 100 --json "$R/$tag.json"
}
for s in crash reboot link haproxy planned partition; do
  run hapair default "$s" "$HAPAIR_RUNS"
done
for v in tuned default; do
  for s in crash reboot link haproxy partition; do
    run keepalived "$v" "$s" "$PEER_RUNS"
  done
done
echo "=== done $(date +%T)"
