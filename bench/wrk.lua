-- The wrk script of every HTTP benchmark (bench/harness.py runs `wrk -s bench/wrk.lua`).
--
-- Without script arguments wrk sends its one command-line request over and over. With
--   -- <requests.lua> <threads>
-- each thread walks its own share of the request list that <requests.lua> returns
-- ({{method, path, body-or-nil}, ...}): thread t sends entries t+1, t+1+threads, ... so no two
-- requests of a run are the same entry until the list runs out (distinct booking slots stay
-- distinct). Either way, done() prints one line "BENCH {json}" with the latency percentiles wrk
-- itself does not print (p95) and the count of each response status.

local threads = {}

function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end

function init(args)
  statuses = {}
  sent = 0
  if args[1] then
    local requests, stride = dofile(args[1]), tonumber(args[2])
    -- Defined only with a list: without one, wrk's prebuilt request is cheaper than Lua's.
    function request()
      local entry = requests[(id + sent * stride) % #requests + 1]
      sent = sent + 1
      return wrk.format(entry[1], entry[2], nil, entry[3])
    end
  end
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local counts, sent_total = {}, 0
  for _, thread in ipairs(threads) do
    for status, n in pairs(thread:get("statuses")) do
      counts[tostring(status)] = (counts[tostring(status)] or 0) + n
    end
    sent_total = sent_total + thread:get("sent")
  end
  local parts = {}
  for status, n in pairs(counts) do
    table.insert(parts, string.format('"%s":%d', status, n))
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH {"requests":%d,"seconds":%.3f,"p50_ms":%.3f,"p95_ms":%.3f,"p99_ms":%.3f,"max_ms":%.3f,' ..
    '"list_entries_used":%d,"socket_errors":%d,"timeouts":%d,"statuses":{%s}}\n',
    summary.requests, summary.duration / 1e6, latency:percentile(50) / 1000, latency:percentile(95) / 1000,
    latency:percentile(99) / 1000, latency.max / 1000, sent_total, e.connect + e.read + e.write, e.timeout,
    table.concat(parts, ",")))
end
