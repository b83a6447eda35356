#!/bin/bash
# One case of bench/benchmark.yml on the client host: wrk for WARMUP seconds (connections
# opened, caches and database connections of every instance warm; figures kept apart as
# BENCH_WARMUP_JSON, their errors still count), then the measured run (BENCH_JSON) and its
# start and end time (BENCH_TIME).
#   case.sh WARMUP DURATION THREADS CONNECTIONS TIMEOUT URL -- <kv.lua arguments>
# The bearer token comes from the environment (KV_BENCH_TOKEN), never from the command line.
set -euo pipefail
warmup=$1 duration=$2 threads=$3 connections=$4 timeout=$5 url=$6
shift 6
[ "${1:-}" = "--" ] && shift
script="$(dirname "$0")/kv.lua"
run() {
  local seconds=$1
  shift
  wrk "-t$threads" "-c$connections" "-d${seconds}s" --timeout "${timeout}s" -s "$script" "$url" \
    -- "$@"
}
if [ "$warmup" -gt 0 ]; then
  out=$(run "$warmup" "$@")
  grep '^BENCH_JSON ' <<<"$out" | sed 's/^BENCH_JSON /BENCH_WARMUP_JSON /'
fi
start=$(date +%s.%N)
run "$duration" "$@"
# the measured run's wall-clock span: the app hosts' CPU samples (bench/cpu_sampler.py) are
# taken over it
echo "BENCH_TIME {\"start\":$start,\"end\":$(date +%s.%N)}"
