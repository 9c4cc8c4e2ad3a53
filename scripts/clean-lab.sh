#!/usr/bin/env bash
# Remove leftover lab namespaces of tests (hp<hex>-*) and the demo lab.
set -u
for ns in $(ip netns list | awk '{print $1}' | grep -E '^(hp[0-9a-f]+|demo)-(vpc|inet|igw|lb[0-9]+|web[0-9]+|etcd[0-9]+)$'); do
  for pid in $(ip netns pids "$ns"); do kill -9 "$pid" 2>/dev/null; done
  ip netns del "$ns" && echo "removed $ns"
done
rm -rf /run/hapair/hp* /etc/netns/hp*-inet 2>/dev/null || true
