#!/usr/bin/env bash
# Benchmark of the KV service (issue 3): serve the app with gunicorn on a throw-away cluster
# (primary + 2 streaming standbys, ANY 1, fsync on) and measure with wrk, side by side in one
# run with the same client and concurrency:
#   bare view (KV_BENCH_BARE_VIEW=1: plain Django view, same PK lookup on the primary)
#   GET r=one, GET r=quorum, PUT w=quorum, PUT w=one (and GET r=primary: the same lookup on the
#   same node as the bare view, so the app's own overhead shows apart from the node choice)
# Prints throughput, p50 and p99 and each as a ratio to the bare view; writes JSON too.
# Loopback only; every run is bounded by KV_BENCH_DURATION seconds.
#
# Knobs: KV_BENCH_DURATION (15 s per scenario, split in KV_BENCH_ROUNDS (5) interleaved rounds)
#        KV_BENCH_ROUNDS (5) KV_BENCH_CONNECTIONS (16) KV_BENCH_WRK_THREADS (2)
#        KV_BENCH_WORKERS (2) KV_BENCH_THREADS (4) KV_BENCH_KEYS (1000)
#        KV_BENCH_OUT (../bench-results/app-bench.json)
set -euo pipefail
cd "$(dirname "$0")"

DURATION="${KV_BENCH_DURATION:-15}"
CONNS="${KV_BENCH_CONNECTIONS:-16}"
WRK_THREADS="${KV_BENCH_WRK_THREADS:-2}"
KEYS="${KV_BENCH_KEYS:-1000}"
ROUNDS="${KV_BENCH_ROUNDS:-5}"
OUT="${KV_BENCH_OUT:-../bench-results/app-bench.json}"
command -v wrk >/dev/null || { echo "bench: wrk not found (apt-get install wrk)" >&2; exit 1; }
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
    .venv/bin/python -m pip install -q --disable-pip-version-check -r requirements-test.txt
fi
PY=.venv/bin/python

WORK="$(mktemp -d /tmp/kvbench-XXXXXX)"
chmod 755 "$WORK"  # the postgres user must reach the data directories below
GUNICORN_PID=""
cleanup() {
    if [ -n "$GUNICORN_PID" ]; then
        kill -TERM "$GUNICORN_PID" 2>/dev/null || true
        for _ in $(seq 1 50); do kill -0 "$GUNICORN_PID" 2>/dev/null || break; sleep 0.2; done
        kill -KILL "$GUNICORN_PID" 2>/dev/null || true
    fi
    "$PY" -m tests.pgcluster stop "$WORK/pg" >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

echo "bench: starting PostgreSQL (primary + 2 standbys, ANY 1, fsync on)" >&2
KV_TEST_FSYNC=1 "$PY" -m tests.pgcluster start "$WORK/pg" > "$WORK/cluster.json"
PORT="$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
TOKEN="bench-$("$PY" -c 'import secrets; print(secrets.token_urlsafe(24))')"
eval "$("$PY" - "$WORK/cluster.json" <<'PYEOF'
import json, shlex, sys
for k, v in json.load(open(sys.argv[1])).items():
    print(f"export {k}={shlex.quote(v)}")
PYEOF
)"
export DJANGO_SECRET_KEY="$("$PY" -c 'import secrets; print(secrets.token_urlsafe(50))')"
export DJANGO_ALLOWED_HOSTS="127.0.0.1,localhost"
export KV_BENCH_BARE_VIEW=1 KV_PORT="$PORT" KV_BIND_ADDRESS=127.0.0.1
export KV_WORKERS="${KV_BENCH_WORKERS:-2}" KV_THREADS="${KV_BENCH_THREADS:-4}"
export PROMETHEUS_MULTIPROC_DIR="$WORK/metrics" KV_INSTANCE="127.0.0.1:$PORT"
export NO_PROXY="127.0.0.1,localhost" no_proxy="127.0.0.1,localhost"
mkdir -p "$PROMETHEUS_MULTIPROC_DIR"

"$PY" manage.py migrate --database default -v 0
"$PY" manage.py kv_token create --name bench --token "$TOKEN" --scopes read,write >/dev/null
"$PY" manage.py shell -c "
from django.db import connections
with connections['default'].cursor() as c:
    c.execute(\"SET synchronous_commit = remote_apply\")
    c.execute(\"INSERT INTO kv_item (key, value, version, deleted, updated_at) \"
              \"SELECT 'bench-' || i, jsonb_build_object('n', i, 'pad', repeat('x', 100)), \"
              \"kv_next_version(), false, now() FROM generate_series(1, $KEYS) i\")
"

.venv/bin/gunicorn -c gunicorn.conf.py kvsite.wsgi:application > "$WORK/gunicorn.log" 2>&1 &
GUNICORN_PID=$!
for _ in $(seq 1 100); do
    curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && break
    sleep 0.2
done
curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null || { cat "$WORK/gunicorn.log" >&2; exit 1; }

lua() {  # lua METHOD PATH_SUFFIX
    cat > "$WORK/$3.lua" <<LUA
local token = os.getenv("KV_BENCH_TOKEN")
local keys = tonumber(os.getenv("KV_BENCH_KEYS"))
local counter = 0
request = function()
  counter = counter + 1
  local k = math.random(1, keys)
  local headers = {["Authorization"] = "Bearer " .. token, ["Content-Type"] = "application/json"}
  if "$1" == "PUT" then
    return wrk.format("PUT", "/api/kv/bench-" .. k .. "$2", headers,
                      '{"value": {"n": ' .. counter .. ', "pad": "' .. string.rep("y", 100) .. '"}}')
  end
  return wrk.format("GET", "$4" .. k .. "$2", headers)
end
LUA
}
lua GET "" bare "/bench/bare/bench-"
lua GET "?r=one" get_one "/api/kv/bench-"
lua GET "?r=quorum" get_quorum "/api/kv/bench-"
lua GET "?r=primary" get_primary "/api/kv/bench-"
lua PUT "?w=quorum" put_quorum ""
lua PUT "?w=one" put_one ""
export KV_BENCH_TOKEN="$TOKEN" KV_BENCH_KEYS="$KEYS"

echo "bench: warming up (2 s)" >&2
wrk -t1 -c4 -d2s -s "$WORK/get_one.lua" "http://127.0.0.1:$PORT" >/dev/null
# Interleaved rounds: every scenario runs ROUNDS times for DURATION/ROUNDS seconds, in turn, so
# that a change in the machine's load during the run hits every scenario alike.
SLICE=$(( DURATION / ROUNDS )); [ "$SLICE" -ge 1 ] || SLICE=1
for round in $(seq 1 "$ROUNDS"); do
    echo "bench: round $round/$ROUNDS (${SLICE}s per scenario, $CONNS connections)" >&2
    for name in bare get_one get_quorum get_primary put_quorum put_one; do
        timeout $((SLICE + 30)) wrk -t"$WRK_THREADS" -c"$CONNS" -d"${SLICE}s" --latency \
            -s "$WORK/$name.lua" "http://127.0.0.1:$PORT" > "$WORK/$name.$round.wrk"
    done
done

mkdir -p "$(dirname "$OUT")"
"$PY" - "$WORK" "$OUT" "$DURATION" "$CONNS" "$WRK_THREADS" "$KV_WORKERS" "$KV_THREADS" \
    "$ROUNDS" <<'PYEOF'
import glob, json, os, re, statistics, sys
work, out, duration, conns, wthreads, workers, threads, rounds = sys.argv[1:9]
UNIT = {"us": 1e-3, "ms": 1.0, "s": 1000.0}
def parse_one(path):
    text = open(path).read()
    pct = {p: float(v) * UNIT[u] for p, v, u in
           re.findall(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", text, re.M)}
    m = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s)", text)
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    errs = re.search(r"Socket errors: (.*)", text)
    return {"requests": int(m.group(1)), "seconds": float(m.group(2)) * UNIT[m.group(3)] / 1000,
            "p50_ms": pct["50"], "p99_ms": pct["99"], "non_2xx": int(bad.group(1)) if bad else 0,
            "socket_errors": errs.group(1).strip() if errs else None}
def parse(name):
    runs = [parse_one(p) for p in sorted(glob.glob(os.path.join(work, name + ".*.wrk")))]
    return {"rps": sum(r["requests"] for r in runs) / sum(r["seconds"] for r in runs),
            "p50_ms": statistics.median(r["p50_ms"] for r in runs),
            "p99_ms": statistics.median(r["p99_ms"] for r in runs),
            "requests": sum(r["requests"] for r in runs),
            "non_2xx": sum(r["non_2xx"] for r in runs),
            "socket_errors": [r["socket_errors"] for r in runs if r["socket_errors"]],
            "rounds": runs}
labels = {"bare": "bare Django view (PK lookup)", "get_one": "GET r=one",
          "get_quorum": "GET r=quorum", "get_primary": "GET r=primary",
          "put_quorum": "PUT w=quorum", "put_one": "PUT w=one"}
res = {k: parse(k) for k in labels}
base = res["bare"]
print(f"\nKV benchmark: wrk -t{wthreads} -c{conns}, {duration}s per scenario in {rounds} "
      f"interleaved rounds (p50/p99: median of rounds), gunicorn "
      f"{workers} workers x {threads} threads, primary + 2 standbys (ANY 1), loopback, 2 cores "
      "shared by wrk, gunicorn and PostgreSQL")
print(f"{'scenario':30} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} | {'req/s':>6} {'p50':>6} "
      f"{'p99':>6}  (ratio to bare)  non-2xx")
for k, label in labels.items():
    r = res[k]
    r["ratio_rps"] = round(r["rps"] / base["rps"], 3)
    r["ratio_p50"] = round(r["p50_ms"] / base["p50_ms"], 3)
    r["ratio_p99"] = round(r["p99_ms"] / base["p99_ms"], 3)
    print(f"{label:30} {r['rps']:9.0f} {r['p50_ms']:8.2f} {r['p99_ms']:8.2f} | "
          f"{r['ratio_rps']:6.2f} {r['ratio_p50']:6.2f} {r['ratio_p99']:6.2f}  "
          f"{'':15} {r['non_2xx']}")
targets = {"get_one": 0.8, "get_quorum": 0.6, "put_quorum": 0.4}
print()
for k, t in targets.items():
    ok = res[k]["ratio_rps"] >= t
    print(f"target {labels[k]:14} >= {t:.0%} of bare throughput: "
          f"{res[k]['ratio_rps']:.0%} {'met' if ok else 'MISSED'}")
json.dump({"params": {"duration_s": int(duration), "rounds": int(rounds),
                      "connections": int(conns),
                      "wrk_threads": int(wthreads), "workers": int(workers),
                      "threads": int(threads)}, "results": res}, open(out, "w"), indent=2)
print(f"\nJSON: {out}")
PYEOF
