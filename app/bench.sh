#!/usr/bin/env bash
# Benchmark of the KV service: serve the app with gunicorn on a throw-away cluster (primary + 2
# streaming standbys, ANY 1, fsync on) and measure with wrk, side by side in one run with the
# same client and concurrency:
#   minimal: a minimal Django project (bench/minimal: one view, the same PK lookup on the
#            primary, no middleware, persistent connection), the same gunicorn binary: the true
#            ceiling of a Django service on this machine
#   min_put: the same project's PUT: the statements of one quorum write and nothing else (the
#            most a quorum write can get on this design, for comparison)
#   bare:    a bare view inside the app (bench/kvbench: same lookup, the app's whole stack)
#   GET r=one, GET r=quorum, PUT w=quorum, PUT w=one (and GET r=primary: the same lookup on the
#   same node as the bare view, so the app's own overhead shows apart from the node choice)
# Prints throughput, p50, p99 and CPU per request (utime+stime of the serving gunicorn's master
# and workers over the requests served), each as a ratio to both ceilings (bench/app_report.py);
# writes JSON too. Loopback only; every run is bounded by KV_BENCH_DURATION seconds.
#
# Knobs: KV_BENCH_DURATION (15 s per scenario, split in KV_BENCH_ROUNDS (5) interleaved rounds)
#        KV_BENCH_ROUNDS (5) KV_BENCH_CONNECTIONS (16) KV_BENCH_WRK_THREADS (2)
#        KV_BENCH_WORKERS (2) KV_BENCH_THREADS (4) KV_BENCH_WORKER_CLASS (gthread)
#        KV_BENCH_MINIMAL_WORKERS (4, sync) KV_BENCH_KEYS (1000)
#        KV_BENCH_CASES (all: minimal min_put bare get_one get_quorum get_primary put_quorum
#        put_one)
#        KV_BENCH_OUT (../bench-results/app-bench.json)
#        KV_BENCH_PROFILE (unset; a directory: sample every case's gunicorn with py-spy during
#        its slices and split its CPU by layer, bench/profile_layers.py; needs py-spy in
#        app/.venv: app/.venv/bin/pip install py-spy)
set -euo pipefail
cd "$(dirname "$0")"

DURATION="${KV_BENCH_DURATION:-15}"
CONNS="${KV_BENCH_CONNECTIONS:-16}"
WRK_THREADS="${KV_BENCH_WRK_THREADS:-2}"
KEYS="${KV_BENCH_KEYS:-1000}"
ROUNDS="${KV_BENCH_ROUNDS:-5}"
OUT="${KV_BENCH_OUT:-../bench-results/app-bench.json}"
command -v wrk >/dev/null || { echo "bench: wrk not found (apt-get install wrk)" >&2; exit 1; }
PROFILE="${KV_BENCH_PROFILE:-}"
if [ -n "$PROFILE" ]; then
    [ -x .venv/bin/py-spy ] || { echo "bench: KV_BENCH_PROFILE needs app/.venv/bin/py-spy" \
        "(app/.venv/bin/pip install py-spy)" >&2; exit 1; }
    mkdir -p "$PROFILE"
fi
if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
    .venv/bin/python -m pip install -q --disable-pip-version-check -r requirements-test.txt
fi
PY=.venv/bin/python

WORK="$(mktemp -d /tmp/kvbench-XXXXXX)"
chmod 755 "$WORK"  # the postgres user must reach the data directories below
GUNICORN_PID=""
MINIMAL_PID=""
cleanup() {
    for pid in $GUNICORN_PID $MINIMAL_PID; do
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        kill -KILL "$pid" 2>/dev/null || true
    done
    "$PY" -m tests.pgcluster stop "$WORK/pg" >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

echo "bench: starting PostgreSQL (primary + 2 standbys, ANY 1, fsync on)" >&2
KV_TEST_FSYNC=1 "$PY" -m tests.pgcluster start "$WORK/pg" > "$WORK/cluster.json"
# the three postmasters: their CPU and their children's (backends, WAL senders and receivers,
# the standbys' startup processes replaying the WAL) is PostgreSQL's share of each case
PG_PIDS="$(head -qn1 "$WORK"/pg/*/postmaster.pid | tr '\n' ' ')"
free_port() {
    "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}
PORT="$(free_port)"
MINIMAL_PORT="$(free_port)"
TOKEN="bench-$("$PY" -c 'import secrets; print(secrets.token_urlsafe(24))')"
eval "$("$PY" - "$WORK/cluster.json" <<'PYEOF'
import json, shlex, sys
for k, v in json.load(open(sys.argv[1])).items():
    print(f"export {k}={shlex.quote(v)}")
PYEOF
)"
export DJANGO_SECRET_KEY="$("$PY" -c 'import secrets; print(secrets.token_urlsafe(50))')"
export DJANGO_ALLOWED_HOSTS="127.0.0.1,localhost"
export KV_PORT="$PORT" KV_BIND_ADDRESS=127.0.0.1
export KV_WORKERS="${KV_BENCH_WORKERS:-2}" KV_THREADS="${KV_BENCH_THREADS:-4}"
export KV_WORKER_CLASS="${KV_BENCH_WORKER_CLASS:-gthread}"
MINIMAL_WORKERS="${KV_BENCH_MINIMAL_WORKERS:-4}"
CASES="${KV_BENCH_CASES:-minimal min_put bare get_one get_quorum get_primary put_quorum put_one}"
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

# The app with the bare view layered on (bench/kvbench), for this run only.
DJANGO_SETTINGS_MODULE=kvbench.settings PYTHONPATH="$(cd ../bench && pwd)" \
    .venv/bin/gunicorn -c gunicorn.conf.py kvsite.wsgi:application > "$WORK/gunicorn.log" 2>&1 &
GUNICORN_PID=$!
for _ in $(seq 1 100); do
    curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && break
    sleep 0.2
done
curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null || { cat "$WORK/gunicorn.log" >&2; exit 1; }
# The ceiling: the same gunicorn binary, its own config (sync workers, gunicorn's defaults).
MINIMAL_BIND="127.0.0.1:$MINIMAL_PORT" MINIMAL_WORKERS="$MINIMAL_WORKERS" \
    .venv/bin/gunicorn -c ../bench/minimal/gunicorn.conf.py --chdir ../bench/minimal \
    minimal_site:application > "$WORK/minimal.log" 2>&1 &
MINIMAL_PID=$!
for _ in $(seq 1 100); do
    curl -sf "http://127.0.0.1:$MINIMAL_PORT/min/bench-1" >/dev/null 2>&1 && break
    sleep 0.2
done
curl -sf "http://127.0.0.1:$MINIMAL_PORT/min/bench-1" >/dev/null \
    || { cat "$WORK/minimal.log" >&2; exit 1; }

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
    return wrk.format("PUT", "$4" .. k .. "$2", headers,
                      '{"value": {"n": ' .. counter .. ', "pad": "' .. string.rep("y", 100) .. '"}}')
  end
  return wrk.format("GET", "$4" .. k .. "$2", headers)
end
LUA
}
lua GET "" minimal "/min/bench-"
lua GET "" bare "/bench/bare/bench-"
lua GET "?r=one" get_one "/api/kv/bench-"
lua GET "?r=quorum" get_quorum "/api/kv/bench-"
lua GET "?r=primary" get_primary "/api/kv/bench-"
lua PUT "" min_put "/min/bench-"
lua PUT "?w=quorum" put_quorum "/api/kv/bench-"
lua PUT "?w=one" put_one "/api/kv/bench-"
export KV_BENCH_TOKEN="$TOKEN" KV_BENCH_KEYS="$KEYS"

echo "bench: warming up (2 s)" >&2
wrk -t1 -c4 -d2s -s "$WORK/get_one.lua" "http://127.0.0.1:$PORT" >/dev/null
wrk -t1 -c4 -d2s -s "$WORK/minimal.lua" "http://127.0.0.1:$MINIMAL_PORT" >/dev/null
LOAD_BEFORE="$(cut -d' ' -f1-3 /proc/loadavg)"
# Interleaved rounds: every scenario runs ROUNDS times for DURATION/ROUNDS seconds, in turn, so
# that a change in the machine's load during the run hits every scenario alike.
SLICE=$(( DURATION / ROUNDS )); [ "$SLICE" -ge 1 ] || SLICE=1
for round in $(seq 1 "$ROUNDS"); do
    echo "bench: round $round/$ROUNDS (${SLICE}s per scenario, $CONNS connections)" >&2
    for name in $CASES; do
        if [ "$name" = minimal ] || [ "$name" = min_put ]; then
            pid=$MINIMAL_PID port=$MINIMAL_PORT
        else pid=$GUNICORN_PID port=$PORT; fi
        before="$("$PY" ../bench/app_report.py cpu "$pid")"
        pg_before="$("$PY" ../bench/app_report.py cpu $PG_PIDS | tr ' ' '+')"
        spy=""
        if [ -n "$PROFILE" ]; then
            timeout $((SLICE + 30)) .venv/bin/py-spy record --pid "$pid" --subprocesses \
                --gil --nonblocking --rate 200 --format raw --duration "$SLICE" \
                -o "$PROFILE/$name.$round.txt" >/dev/null 2>&1 &
            spy=$!
        fi
        timeout $((SLICE + 30)) wrk -t"$WRK_THREADS" -c"$CONNS" -d"${SLICE}s" --latency \
            -s "$WORK/$name.lua" "http://127.0.0.1:$port" > "$WORK/$name.$round.wrk"
        after="$("$PY" ../bench/app_report.py cpu "$pid")"
        pg_after="$("$PY" ../bench/app_report.py cpu $PG_PIDS | tr ' ' '+')"
        "$PY" -c "print(round($after - $before, 2))" > "$WORK/$name.$round.cpu"
        "$PY" -c "print(round(($pg_after) - ($pg_before), 2))" > "$WORK/$name.$round.pgcpu"
        if [ -n "$spy" ]; then
            wait "$spy" || true
            cp "$WORK/$name.$round.wrk" "$WORK/$name.$round.cpu" "$WORK/$name.$round.pgcpu" \
                "$PROFILE/"
        fi
    done
done

mkdir -p "$(dirname "$OUT")"
"$PY" ../bench/app_report.py report "$WORK" "$OUT" duration_s="$DURATION" rounds="$ROUNDS" \
    connections="$CONNS" wrk_threads="$WRK_THREADS" app_workers="$KV_WORKERS" \
    app_threads="$KV_THREADS" app_worker_class="$KV_WORKER_CLASS" \
    minimal_workers="$MINIMAL_WORKERS" loadavg_before="$LOAD_BEFORE" \
    loadavg_after="$(cut -d' ' -f1-3 /proc/loadavg)"
if [ -n "$PROFILE" ]; then
    "$PY" ../bench/profile_layers.py "$PROFILE"
fi
