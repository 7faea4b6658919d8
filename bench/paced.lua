-- Paced load: each connection sends one request per millisecond at most, so the machine is
-- not saturated and the latency shown is the server's, not the CPU queue's. Same report.
dofile("bench/report.lua")
delay = function()
  return 1
end
