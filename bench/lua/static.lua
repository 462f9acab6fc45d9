-- One fixed request, built once (fastest for wrk): GET, or POST of a form body.
-- BENCH_METHOD (GET|POST), BENCH_BODY (form-encoded), BENCH_AUTH (Authorization header).
package.path = package.path .. ";" .. (os.getenv("BENCH_LUA_DIR") or ".") .. "/?.lua"
require("report")

wrk.method = os.getenv("BENCH_METHOD") or "GET"
local body = os.getenv("BENCH_BODY")
if body and body ~= "" then
  wrk.body = body
  wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
end
local auth = os.getenv("BENCH_AUTH")
if auth and auth ~= "" then wrk.headers["Authorization"] = auth end
wrk.headers["Accept"] = "application/json"

function setup(thread) table.insert(bench_threads, thread) end
function done(summary, latency, requests) bench_report(summary, latency) end
