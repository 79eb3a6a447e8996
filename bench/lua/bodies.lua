-- wrk script: POST pre-rendered JSON bodies, one per line of the file named after `--`,
-- cycling through them; prints one machine-readable summary line at the end.
-- Requests are formatted once in init() so the load generator spends its time on I/O.

local requests = {}
local n = 0
local i = 0

function init(args)
  local headers = { ["Content-Type"] = "application/json" }
  for line in io.lines(args[1]) do
    n = n + 1
    requests[n] = wrk.format("POST", wrk.path, headers, line)
  end
  if n == 0 then
    error("no request bodies in " .. args[1])
  end
end

function request()
  i = i % n + 1
  return requests[i]
end

function done(summary, latency, _)
  local e = summary.errors
  io.write(string.format(
    'WRK_SUMMARY {"requests": %d, "duration_us": %d, "bytes": %d, ' ..
    '"p50_us": %d, "p90_us": %d, "p99_us": %d, "mean_us": %.3f, "max_us": %d, ' ..
    '"connect_errors": %d, "read_errors": %d, "write_errors": %d, ' ..
    '"status_errors": %d, "timeouts": %d}\n',
    summary.requests, summary.duration, summary.bytes,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.mean, latency.max,
    e.connect, e.read, e.write, e.status, e.timeout))
end
