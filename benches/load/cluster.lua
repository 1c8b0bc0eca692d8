-- wrk script for several nodes at once (benches/load/cluster): as post.lua (POST a JSON body
-- with a bearer token, count non-2xx answers), and each wrk thread connects to the next port
-- of KP_PORTS ("8443 8444 8445") on 127.0.0.1, so one wrk with as many threads as nodes
-- spreads its connections evenly over the nodes and reports one latency distribution.
wrk.method = "POST"
wrk.body = os.getenv("KP_BODY")
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("KP_TOKEN")

local ports = {}
for port in string.gmatch(os.getenv("KP_PORTS") or "", "%d+") do
  ports[#ports + 1] = port
end
local threads = 0

function setup(thread)
  local port = ports[threads % #ports + 1]
  threads = threads + 1
  thread.addr = wrk.lookup("127.0.0.1", port)[1]
end

done = function(summary, latency, requests)
  io.write(string.format("non_2xx %d\n", summary.errors.status))
end
