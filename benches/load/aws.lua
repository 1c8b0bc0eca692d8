-- wrk script for the AWS front: POST one signed request (body and headers from the
-- environment, as benches/load/sign-aws.py printed them) and report the count of non-2xx/3xx
-- answers, so a run full of refused signatures is not taken for throughput.
wrk.method = "POST"
wrk.body = os.getenv("KP_BODY")
for line in string.gmatch(os.getenv("KP_HEADERS"), "[^\n]+") do
  local name, value = string.match(line, "^([^:]+):%s*(.*)$")
  if name then
    wrk.headers[name] = value
  end
end

done = function(summary, latency, requests)
  io.write(string.format("non_2xx %d\n", summary.errors.status))
end
