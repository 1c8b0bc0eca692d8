-- wrk script: POST a JSON body with a bearer token (both from the environment), each
-- connection pausing KP_DELAY_MS between requests, so a run offers a set rate (about
-- connections × 1000 / (KP_DELAY_MS + latency) a second) instead of all it can. Reports the
-- answers by status: a throttled (429) run is not taken for a failed one.
wrk.method = "POST"
wrk.body = os.getenv("KP_BODY")
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("KP_TOKEN")
local pause = tonumber(os.getenv("KP_DELAY_MS") or "0")

function delay()
  return pause
end

local threads = {}
function setup(thread)
  table.insert(threads, thread)
end

function init()
  throttled = 0
  other = 0
end

function response(status)
  if status == 429 then
    throttled = throttled + 1
  elseif status >= 300 then
    other = other + 1
  end
end

done = function(summary, latency, requests)
  local t, o = 0, 0
  for _, thread in ipairs(threads) do
    t = t + thread:get("throttled")
    o = o + thread:get("other")
  end
  io.write(string.format("throttled %d\nnon_2xx %d\n", t, o))
end
