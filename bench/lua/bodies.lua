-- wrk script: POST pre-rendered bodies, one per line of the file named after `--`,
-- cycling through them; prints one machine-readable summary line at the end.
-- Requests are formatted once in init() so the load generator spends its time on I/O.
--
-- Arguments after `--`: FILE [CONTENT_TYPE [ENCODING]]
--   CONTENT_TYPE  defaults to application/json
--   ENCODING      "text" (default): each line is the body itself (JSON never holds a newline);
--                 "hex": each line is the hex of a binary body, decoded here once.

local requests = {}
local n = 0
local i = 0

local function unhex(line)
  if #line % 2 ~= 0 or line:find("[^%x]") then
    error("body line " .. (n + 1) .. " is not hex")
  end
  return (line:gsub("%x%x", function(h) return string.char(tonumber(h, 16)) end))
end

function init(args)
  local file = args[1]
  local content_type = args[2] or "application/json"
  local encoding = args[3] or "text"
  if encoding ~= "text" and encoding ~= "hex" then
    error("unknown body encoding " .. encoding .. " (text or hex)")
  end
  local headers = { ["Content-Type"] = content_type }
  for line in io.lines(file) do
    local body = line
    if encoding == "hex" then
      body = unhex(line)
    end
    n = n + 1
    requests[n] = wrk.format("POST", wrk.path, headers, body)
  end
  if n == 0 then
    error("no request bodies in " .. file)
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
