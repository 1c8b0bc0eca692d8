-- wrk script of the soak (benches/soak/run): each connection cycles through the requests of
-- the file KP_REQUESTS (one per line: path, bearer token and JSON body, tab-separated),
-- starting at a random one, pausing KP_DELAY_MS between its requests. Counts the answers that
-- are not 2xx.
local requests = {}
local i = 0
local pause = tonumber(os.getenv("KP_DELAY_MS") or "0")

local threads = {}
function setup(thread)
  table.insert(threads, thread)
end

function init()
  for line in io.lines(os.getenv("KP_REQUESTS")) do
    local path, token, body = line:match("^([^\t]*)\t([^\t]*)\t(.*)$")
    table.insert(requests, wrk.format("POST", path, {
      ["Content-Type"] = "application/json",
      ["Authorization"] = "Bearer " .. token,
    }, body))
  end
  math.randomseed(os.time() * 1000 + math.floor(os.clock() * 1e6))
  i = math.random(#requests)
  failed = 0
end

function request()
  i = i % #requests + 1
  return requests[i]
end

function delay()
  return pause
end

function response(status)
  if status >= 300 then
    failed = failed + 1
  end
end

done = function(summary, latency, requests)
  local f = 0
  for _, thread in ipairs(threads) do
    f = f + thread:get("failed")
  end
  io.write(string.format("non_2xx %d\n", f))
end
