-- wrk script for the KV benchmark (bench/benchmark.yml).
--   wrk ... -s kv.lua URL -- <mode get|put> <path prefix> <query> <keys> <key prefix>
-- GET reads keys <key prefix>0..<keys-1> (bench/populate.py creates them); PUT replaces them with
-- a value unique to the run, the thread and the request. The bearer token comes from the
-- environment (KV_BENCH_TOKEN), never from the command line. Counts every non-2xx response by status
-- and prints one line "BENCH_JSON {...}" with throughput inputs, latency percentiles and errors.

local threads = {}
local next_id = 0

function setup(thread)
  thread:set("id", next_id)
  next_id = next_id + 1
  table.insert(threads, thread)
end

function init(args)
  mode = args[1] or "get"
  prefix = args[2] or "/api/kv/"
  query = args[3] or ""
  nkeys = tonumber(args[4] or "100")
  keyprefix = args[5] or "bench-"
  run = tostring(os.time()) .. "-" .. tostring(math.random(1, 1000000000))
  n = 0
  non2xx = 0
  statuses = {}
  local token = os.getenv("KV_BENCH_TOKEN")
  if token and token ~= "" then
    wrk.headers["Authorization"] = "Bearer " .. token
  end
  put_headers = {}
  for k, v in pairs(wrk.headers) do
    put_headers[k] = v
  end
  put_headers["Content-Type"] = "application/json"
end

function request()
  n = n + 1
  local path = prefix .. keyprefix .. ((n * 7 + id) % nkeys) .. query
  if mode == "put" then
    local body = '{"value":"' .. run .. "-" .. id .. "-" .. n .. '"}'
    return wrk.format("PUT", path, put_headers, body)
  end
  return wrk.format("GET", path)
end

function response(status, headers, body)
  if status < 200 or status > 299 then
    non2xx = non2xx + 1
    local k = tostring(status)
    statuses[k] = (statuses[k] or 0) + 1
  end
end

function done(summary, latency, requests)
  local total = 0
  local by_status = {}
  for _, t in ipairs(threads) do
    total = total + t:get("non2xx")
    local st = t:get("statuses")
    if st then
      for k, v in pairs(st) do
        by_status[k] = (by_status[k] or 0) + v
      end
    end
  end
  local parts = {}
  for k, v in pairs(by_status) do
    table.insert(parts, string.format('"%s":%d', k, v))
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"non2xx":%d,"non2xx_by_status":{%s},' ..
    '"latency_us":{"p50":%d,"p90":%d,"p99":%d,"max":%d,"mean":%.1f}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    total, table.concat(parts, ","),
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max,
    latency.mean))
end
