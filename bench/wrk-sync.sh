#!/usr/bin/env bash
# The sync path measured from outside, as issue 15 states it: wrk on loopback (1 thread, 32
# connections) against nginx answering `200 ok` directly, through the team's leanest proxy
# (shared/bench/bare-proxy, built here with its own release profile) and through Courier's
# release binary with the same nginx deployed as an HTTP-mode function `fast`. The three are
# run interleaved, ROUNDS times, and the ratios are printed per round and as medians.
#
#   bench/wrk-sync.sh                 # 3 rounds of 10 s each
#   ROUNDS=5 DURATION=10s bench/wrk-sync.sh
#   COURIER=/path/to/courier COURIER_BENCH=/path/to/courier-bench bench/wrk-sync.sh
#
# Needs wrk and nginx (apt-get install wrk nginx; installed here when missing) and
# target/release/courier and target/release/courier-bench
# (cargo build --release --bin courier --bin courier-bench).
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-32}
BARE_SRC=${BARE_SRC:-../shared/bench/bare-proxy}
COURIER=${COURIER:-target/release/courier}
COURIER_BENCH=${COURIER_BENCH:-target/release/courier-bench}

for tool in wrk nginx; do
  if ! command -v "$tool" >/dev/null && ! [ -x "/usr/sbin/$tool" ]; then
    echo "==> installing $tool" >&2
    apt-get update -qq && apt-get install -y -qq "$tool" >/dev/null
  fi
done
for bin in "$COURIER" "$COURIER_BENCH"; do
  [ -x "$bin" ] || { echo "$bin missing: cargo build --release --bin courier --bin courier-bench" >&2; exit 1; }
done
echo "==> building the bare proxy from $BARE_SRC (its own profile: lto, codegen-units = 1)" >&2
CARGO_TARGET_DIR=target/bare-proxy cargo build --quiet --release --locked \
  --manifest-path "$BARE_SRC/Cargo.toml"
bare=target/bare-proxy/release/bare-proxy

scratch=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$scratch"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_http() {
  for _ in $(seq 1 300); do
    curl -fs -o /dev/null "$1" && return 0
    sleep 0.1
  done
  echo "no answer from $1" >&2; exit 1
}

nginx_port=$(free_port)
PORT=$nginx_port "$COURIER_BENCH" nginx --dir "$scratch/nginx" &
pids+=($!)
wait_http "http://127.0.0.1:$nginx_port/"

bare_port=$(free_port)
"$bare" "127.0.0.1:$bare_port" "127.0.0.1:$nginx_port" &
pids+=($!)
wait_http "http://127.0.0.1:$bare_port/"

courier_port=$(free_port)
"$COURIER" up --listen "127.0.0.1:$courier_port" --data-dir "$scratch/data" \
  --no-auth --sandbox off >"$scratch/courier.log" 2>&1 &
pids+=($!)
wait_http "http://127.0.0.1:$courier_port/healthz"
curl -fs -o /dev/null -X POST "http://127.0.0.1:$courier_port/system/functions" \
  -H 'Content-Type: application/json' \
  -d "{\"service\":\"fast\",\"image\":\"nginx:local\",\"envProcess\":\"$(realpath "$COURIER_BENCH") nginx --dir $scratch/fn\",\"envVars\":{\"mode\":\"http\"}}"
wait_http "http://127.0.0.1:$courier_port/function/fast"

# wrk's summary: Requests/sec and the 50% latency (in ms).
measure() {
  local out rps p50
  out=$(wrk -t1 -c"$CONNECTIONS" -d"$DURATION" --latency "$1")
  rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
  p50=$(awk '$1 == "50%" {v=$2; if (v ~ /us$/) {sub(/us$/,"",v); v/=1000} else if (v ~ /ms$/) {sub(/ms$/,"",v)} else if (v ~ /s$/) {sub(/s$/,"",v); v*=1000}; print v}' <<<"$out")
  echo "$rps $p50"
}

echo "wrk -t1 -c$CONNECTIONS -d$DURATION, $ROUNDS rounds; nginx (1 process) answers 200 ok"
printf '%-6s %-8s %12s %10s\n' round path req/s p50_ms
ratios=()
deltas=()
for round in $(seq 1 "$ROUNDS"); do
  read -r d_rps d_p50 < <(measure "http://127.0.0.1:$nginx_port/")
  printf '%-6s %-8s %12.0f %10.3f\n' "$round" direct "$d_rps" "$d_p50"
  read -r b_rps b_p50 < <(measure "http://127.0.0.1:$bare_port/")
  printf '%-6s %-8s %12.0f %10.3f\n' "$round" bare "$b_rps" "$b_p50"
  read -r c_rps c_p50 < <(measure "http://127.0.0.1:$courier_port/function/fast")
  printf '%-6s %-8s %12.0f %10.3f\n' "$round" courier "$c_rps" "$c_p50"
  ratios+=("$(awk -v c="$c_rps" -v b="$b_rps" 'BEGIN {printf "%.3f", c / b}')")
  deltas+=("$(awk -v c="$c_p50" -v d="$d_p50" 'BEGIN {printf "%.3f", c - d}')")
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
echo "courier / bare throughput per round: ${ratios[*]} (median $(median "${ratios[@]}"), target >= 0.8)"
echo "courier p50 - direct p50 per round (ms): ${deltas[*]} (median $(median "${deltas[@]}"), target < 0.5)"
# The autoscaler's decisions during the run: a scale-up of `fast` takes CPU from the gateway.
scaled=$(grep -o 'Function scaled.*replicas=[0-9]*' "$scratch/courier.log" | grep -o 'replicas=[0-9]*' | tr '\n' ' ' || true)
echo "autoscaler: replicas of fast after each scale: ${scaled:-none (stayed at 1)}"
