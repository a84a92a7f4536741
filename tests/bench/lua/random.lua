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

-- The machine-readable summary line is report.lua's done().
dofile(debug.getinfo(1, "S").source:match("^@(.*/)") .. "report.lua")
