-- wrk script of bench/soak.py: bench/ingress.lua's pre-built requests, sent at a fixed rate.
--
-- Arguments (after `--`): <file prefix> once <rate>, <rate> being the requests per second of
-- each thread. wrk calls delay() before every request of every connection; it holds the
-- request until its slot on the thread's schedule (a connection is free after its answer).

local here = debug.getinfo(1, "S").source:sub(2):match("(.*/)") or "./"
dofile(here .. "ingress.lua")

local ffi = require("ffi")
ffi.cdef[[
  typedef struct { long tv_sec; long tv_nsec; } soak_timespec;
  int clock_gettime(int clock, soak_timespec *now);
]]
local clock = ffi.new("soak_timespec")

local function now_ms()
  ffi.C.clock_gettime(1, clock)  -- CLOCK_MONOTONIC
  return tonumber(clock.tv_sec) * 1000 + tonumber(clock.tv_nsec) / 1e6
end

local interval_ms = 0
local next_ms = 0
local ingress_init = init

function init(args)
  ingress_init(args)
  interval_ms = 1000 / tonumber(args[3])
  next_ms = now_ms()
end

function delay()
  local due = next_ms
  next_ms = math.max(next_ms + interval_ms, now_ms() - 1000)  -- no burst after a stall
  return math.max(0, due - now_ms())
end
