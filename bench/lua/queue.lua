-- POSTs form bodies taken from a file, one body per line, each used once.
--   BENCH_MODE=code:    authorization_code redemption; the thread stops when its codes run out.
--   BENCH_MODE=refresh: refresh_token chains with rotation; every 200 response's new
--                       refresh_token goes back into the queue, so each chain keeps using the
--                       token returned last (reuse would revoke the grant).
-- BENCH_QUEUE_FILE, BENCH_THREADS (wrk -t), BENCH_PATH, BENCH_AUTH.
package.path = package.path .. ";" .. (os.getenv("BENCH_LUA_DIR") or ".") .. "/?.lua"
require("report")

local counter = 0
function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
  table.insert(bench_threads, thread)
end

local queue, head, tail, mode, path, headers

function init(args)
  mode = os.getenv("BENCH_MODE")
  path = os.getenv("BENCH_PATH")
  local n = tonumber(os.getenv("BENCH_THREADS"))
  headers = {
    ["Content-Type"] = "application/x-www-form-urlencoded",
    ["Authorization"] = os.getenv("BENCH_AUTH"),
    ["Accept"] = "application/json",
  }
  queue, head, tail = {}, 1, 0
  local i = 0
  for line in io.lines(os.getenv("BENCH_QUEUE_FILE")) do
    if i % n == id then
      tail = tail + 1
      queue[tail] = line
    end
    i = i + 1
  end
  ok, bad = 0, 0
  t_first, t_last = nil, nil
  stopped = false
end

function request()
  if t_first == nil then t_first = bench_now() end
  local body = queue[head]
  if body == nil then
    -- Nothing left: stop this thread (the harness ends wrk once every thread said so);
    -- this last request is not sent or counted.
    if not stopped then
      stopped = true
      io.write("BENCH_EXHAUSTED\n")
      io.flush()
    end
    wrk.thread:stop()
    body = "grant_type=authorization_code&code=exhausted"
  else
    queue[head] = nil
    head = head + 1
  end
  return wrk.format("POST", path, headers, body)
end

function response(status, hdrs, body)
  if status == 200 then
    ok = ok + 1
    t_last = bench_now()
    if mode == "refresh" then
      local rt = string.match(body, '"refresh_token"%s*:%s*"([^"]+)"')
      if rt then
        tail = tail + 1
        queue[tail] = "grant_type=refresh_token&refresh_token=" .. rt
      end
    end
  else
    bad = bad + 1
  end
end

function done(summary, latency, requests) bench_report(summary, latency) end
