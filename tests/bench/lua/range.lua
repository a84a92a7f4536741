-- SMProtocol bench: every request carries "Range: bytes=1000-5000" (expects 206).
-- Usage: wrk -t1 -c50 -d5s -s range.lua http://127.0.0.1:PORT/1m.bin
-- Static request (header set at load time), so no per-request Lua cost.

wrk.headers["Range"] = "bytes=1000-5000"

-- The machine-readable summary line is report.lua's done().
dofile(debug.getinfo(1, "S").source:match("^@(.*/)") .. "report.lua")
