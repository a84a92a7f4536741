-- SMProtocol bench: every request carries "Range: bytes=1000-5000" (expects 206).
-- Usage: wrk -t1 -c50 -d5s -s range.lua http://127.0.0.1:PORT/1m.bin
-- Static request (header set at load time), so no per-request Lua cost.

wrk.headers["Range"] = "bytes=1000-5000"

done = function(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      "SMPBENCH requests=%d duration_us=%d bytes=%d connect=%d read=%d write=%d status=%d timeout=%d p50_us=%d p99_us=%d\n",
      summary.requests, summary.duration, summary.bytes,
      e.connect, e.read, e.write, e.status, e.timeout,
      latency:percentile(50), latency:percentile(99)))
end
