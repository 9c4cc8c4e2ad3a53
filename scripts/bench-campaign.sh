#!/usr/bin/env bash
# The benchmark run behind docs/benchmarks.md, in one go (sequential; each run builds and removes
# its own lab). Takes about 50 minutes on 2 cores. Raw results: docs/results/*.json.
set -u
cd "$(dirname "$0")/.."
H=.venv/bin/hapair
R=docs/results
mkdir -p "$R" docs/img
run() { # engine variant scenario runs
  local tag="$1-$2-$3"
  echo "=== $tag $(date +%T)"
  timeout 1800 $H bench failover --engine "$1" --variant "$2" --scenario "$3" --runs "$4" \
    --rate 100 --json "$R/$tag.json" --plot "docs/img/failover-$tag.png"
}
run hapair default crash 7
run keepalived tuned crash 5
run keepalived default crash 5
run heartbeat tuned crash 3
run heartbeat default crash 2
run hapair default reboot 5
run hapair default link 5
run keepalived tuned link 3
run hapair default haproxy 5
run hapair default planned 5
run hapair default partition 3
echo "=== dataplane $(date +%T)"
timeout 900 $H bench dataplane --duration 10 --rounds 3 --json "$R/dataplane.json"
echo "=== scale $(date +%T)"
timeout 1800 $H bench scale --json "$R/scale.json"
echo "=== stress $(date +%T)"
timeout 1200 $H bench stress --seconds 600 --json "$R/stress.json"
echo "=== done $(date +%T)"
