#!/usr/bin/env bash
# Alternates release builds of `moneta serve`, each in its own process on a fresh folder, under
# the gateway_load bench binary as the load generator (32 clients, 5 s per target).
# Usage: benches/profile/ab_node.sh ROUNDS BENCH_BINARY NAME=MONETA_BINARY...
#   e.g. benches/profile/ab_node.sh 3 target/release/deps/gateway_load-<hash> A=/tmp/old/moneta H=target/release/moneta
set -euo pipefail
rounds=$1 bench=$2
shift 2
port=28080
run() { # name binary
  local d
  d=$(mktemp -d)
  MONETA_NODE_DATA_DIR="$d/data" MONETA_GATEWAY_LISTEN=127.0.0.1:$port MONETA_LOG_LEVEL=warn \
    MONETA_GDPR_ERASURE_LIST="$d/erasures.list" MONETA_BACKUP_KEY_FILE="$d/backup.key" \
    "$2" serve >"$d/node.log" 2>&1 &
  local pid=$!
  for _ in $(seq 1 150); do curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.2; done
  echo "== $1"
  GATEWAY_LOAD_BASE="http://127.0.0.1:$port" timeout 300 "$bench" --bench 2>&1 | grep -E "bare|portfolio|deposit|order" || true
  kill -TERM "$pid"
  wait "$pid" 2>/dev/null || true
  rm -rf "$d"
}
for r in $(seq 1 "$rounds"); do
  for pair in "$@"; do
    run "${pair%%=*} $r" "${pair#*=}"
  done
done
