-- wrk script: POST a small Responses API request; at the end print one machine-readable line for bench/run.py.
wrk.method = "POST"
wrk.path = "/v1/responses"
wrk.body = '{"model":"bench","input":"Say hello","max_output_tokens":16}'
wrk.headers["Content-Type"] = "application/json"

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"errors":%d,"status_errors":%d,"p50_us":%.1f,"p99_us":%.1f,"mean_us":%.1f}\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(99), latency.mean))
end
