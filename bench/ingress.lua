-- wrk script of bench/ingress.py: sends pre-built raw HTTP requests read from a file.
--
-- Arguments (after `--`): <file prefix> <mode>. Thread N (1-based) reads "<prefix>-<N>.req",
-- so threads never share a request; the connections of a thread take the thread's requests
-- in file order. A record is 8 ASCII digits (the length) followed by that many bytes of
-- raw HTTP/1.1 request.
--   mode "once":  every record is sent at most once; when a thread runs out it stops and
--                 reports `exhausted` (the run is then invalid: pre-generate more).
--   mode "cycle": start the file over at its end (the no-op ceiling: repeats are harmless).
-- done() prints one line "BENCH_JSON {...}" with wrk's totals, its latency distribution
-- (microseconds) and each thread's count of requests handed to wrk.

local threads = {}

function setup(thread)
  table.insert(threads, thread)
  thread:set("id", #threads)
end

-- Per-thread state; globals so that done() can read them with thread:get().
issued = 0      -- requests returned to wrk to be sent (wrk sends each one it gets)
fallbacks = 0   -- placeholder requests returned after the file ran out (mode "once")
exhausted = 0   -- 1 when this thread ran out of requests

local file
local cycle = false
-- wrk calls request() once on the first thread's state before any thread runs, only to
-- check that the request parses (script_verify_request); that request is never sent.
local verification_pending = false
local FALLBACK = "GET /__bench_requests_exhausted HTTP/1.1\r\nHost: bench\r\n\r\n"

function init(args)
  local path = string.format("%s-%d.req", args[1], id)
  file = assert(io.open(path, "rb"))
  file:setvbuf("full", 1024 * 1024)
  cycle = args[2] == "cycle"
  verification_pending = id == 1
end

local function next_record()
  local head = file:read(8)
  if head == nil and cycle then
    file:seek("set", 0)
    head = file:read(8)
  end
  if head == nil then
    return nil
  end
  return file:read(tonumber(head))
end

function request()
  local raw = next_record()
  if raw == nil then
    -- Out of unique requests: stop this thread; the placeholder (a 404) is never a webhook.
    exhausted = 1
    fallbacks = fallbacks + 1
    wrk.thread:stop()
    return FALLBACK
  end
  if verification_pending then
    verification_pending = false
  else
    issued = issued + 1
  end
  return raw
end

function done(summary, latency, requests)
  local per_thread = {}
  for _, thread in ipairs(threads) do
    table.insert(per_thread, string.format(
      '{"issued":%d,"fallbacks":%d,"exhausted":%s}',
      thread:get("issued"), thread:get("fallbacks"),
      thread:get("exhausted") == 1 and "true" or "false"))
  end
  local percentiles = {}
  for _, p in ipairs({ 50, 75, 90, 99, 99.9 }) do
    table.insert(percentiles, string.format('"%s":%d', tostring(p), latency:percentile(p)))
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"duration_us":%d,"requests":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"min":%d,"mean":%.1f,"stdev":%.1f,"max":%d,"percentiles":{%s}},' ..
    '"threads":[%s]}\n',
    summary.duration, summary.requests, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.min, latency.mean, latency.stdev, latency.max, table.concat(percentiles, ","),
    table.concat(per_thread, ",")))
end
