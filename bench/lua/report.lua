-- Shared by every wrk script of the benchmark: print one machine-readable line at the end.
-- Each thread may keep `ok` and `bad` counters (scripts that read responses).
bench_threads = {}

local ffi = require("ffi")
ffi.cdef[[
typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
int clock_gettime(int clk_id, bench_timespec *tp);
]]
local ts = ffi.new("bench_timespec")

-- Monotonic seconds (wrk's own duration is always the full -d, even when threads stop early).
function bench_now()
  ffi.C.clock_gettime(1, ts)
  return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) / 1e9
end

function bench_report(summary, latency)
  local ok, bad, counted = 0, 0, false
  local first, last = nil, nil
  for _, t in ipairs(bench_threads) do
    local o = t:get("ok")
    if o ~= nil then
      counted = true
      ok = ok + o
      bad = bad + (t:get("bad") or 0)
    end
    local f, l = t:get("t_first"), t:get("t_last")
    if f ~= nil and (first == nil or f < first) then first = f end
    if l ~= nil and (last == nil or l > last) then last = l end
  end
  local active_us = 0
  if first ~= nil and last ~= nil then active_us = math.floor((last - first) * 1e6) end
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"active_us":%d,"ok":%d,"bad":%d,"counted":%s,' ..
    '"status_errors":%d,"connect_errors":%d,"read_errors":%d,"write_errors":%d,"timeouts":%d,' ..
    '"p50_us":%d,"p90_us":%d,"p99_us":%d,"mean_us":%.1f,"max_us":%d}\n',
    summary.requests, summary.duration, active_us, ok, bad, tostring(counted),
    e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.mean, latency.max))
end
