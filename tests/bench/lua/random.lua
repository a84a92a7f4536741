-- SMProtocol bench: each request picks one of N files /r/00000.bin .. /r/NNNNN.bin
-- uniformly at random.  Usage:
--   wrk -t1 -c50 -d5s -s random.lua http://127.0.0.1:PORT/ -- 10000
-- The request strings are pre-built in init() so the per-request Lua cost is
-- one math.random() and a table lookup (the same for every server under test).
-- The seed is fixed so every run/server sees the same path sequence.

local reqs = {}
local n = 10000

init = function(args)
   if args[1] then n = tonumber(args[1]) end
   math.randomseed(12345)
   for i = 0, n - 1 do
      reqs[i + 1] = wrk.format("GET", string.format("/r/%05d.bin", i))
   end
end

request = function()
   return reqs[math.random(n)]
end

done = function(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      "SMPBENCH requests=%d duration_us=%d bytes=%d connect=%d read=%d write=%d status=%d timeout=%d p50_us=%d p99_us=%d\n",
      summary.requests, summary.duration, summary.bytes,
      e.connect, e.read, e.write, e.status, e.timeout,
      latency:percentile(50), latency:percentile(99)))
end
