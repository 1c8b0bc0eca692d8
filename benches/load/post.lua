-- wrk script: POST a JSON body with a bearer token (both from the environment) and report
-- the count of non-2xx/3xx answers, so a run full of errors is not taken for throughput.
wrk.method = "POST"
wrk.body = os.getenv("KP_BODY")
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. os.getenv("KP_TOKEN")

done = function(summary, latency, requests)
  io.write(string.format("non_2xx %d\n", summary.errors.status))
end
