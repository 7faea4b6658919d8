-- Paced low rate: each connection sends one request every 50 ms at most (20 req/s with -c1),
-- so the latency shown is the request's own, not a queue the client built. Same report.
dofile("bench/report.lua")
delay = function()
  return 50
end
