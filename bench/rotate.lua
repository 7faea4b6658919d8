-- wrk script: each request uses the next secret from $PA_SECRETS (one per line), so a run
-- touches many distinct tokens (for the last-used flush benchmark).
local secrets = {}
for line in io.lines(os.getenv("PA_SECRETS")) do secrets[#secrets + 1] = line end
local i = 0
request = function()
  i = i % #secrets + 1
  return wrk.format("GET", "/auth/verify", { ["Authorization"] = "Bearer " .. secrets[i] })
end
done = function(summary, latency, requests)
  io.write(string.format("RESULT rps=%.1f p50=%.3f p99=%.3f p999=%.3f errors=%d non2xx=%d\n",
    summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, latency:percentile(99.9) / 1000,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.errors.status))
end
-- PA_PACED=1: one request per millisecond per connection (the machine is not saturated, so
-- the tail shows the server, not the CPU queue).
if os.getenv("PA_PACED") then
  delay = function()
    return 1
  end
end
