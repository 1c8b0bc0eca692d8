-- wrk script for batches: POST a JSON body with a bearer token (both from the environment), as
-- post.lua does, and report as non-2xx every answer that is not 2xx/3xx or whose body holds an
-- item's error (keyplane's {"error": …} result, OpenBao's "error" in a batch result), so a run
-- of batches whose items failed is not taken for throughput.
wrk.method = "POST"
wrk.body = os.getenv("KP_BODY")
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("KP_TOKEN")

-- Each wrk thread runs its own Lua state: done() adds up the threads' counts.
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  failed_items = 0
end

function response(status, headers, body)
  if status < 400 and string.find(body, '"error"', 1, true) then
    failed_items = failed_items + 1
  end
end

done = function(summary, latency, requests)
  local failed = summary.errors.status
  for _, thread in ipairs(threads) do
    failed = failed + thread:get("failed_items")
  end
  io.write(string.format("non_2xx %d\n", failed))
end
