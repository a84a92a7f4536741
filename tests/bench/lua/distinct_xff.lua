-- SMProtocol bench: every request from a client of its own (a new X-Forwarded-For
-- address, 10.0.0.1 upwards, per request: 16 million before one comes again), so that
-- each is a download of its own and
-- unique_ip never sees two at once. Needs the server to trust 127.0.0.0/8 as a proxy.
-- Usage: wrk -t1 -c20 -d10s -s distinct_xff.lua http://127.0.0.1:PORT/4k.bin
-- Prints the SMPBENCH line of report.lua.

local n = 0

request = function()
   n = n + 1
   local addr = string.format("10.%d.%d.%d", math.floor(n / 65536) % 256,
                              math.floor(n / 256) % 256, n % 256)
   return wrk.format(nil, nil, {["X-Forwarded-For"] = addr})
end

done = function(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      "SMPBENCH requests=%d duration_us=%d bytes=%d connect=%d read=%d write=%d status=%d timeout=%d p50_us=%d p99_us=%d\n",
      summary.requests, summary.duration, summary.bytes,
      e.connect, e.read, e.write, e.status, e.timeout,
      latency:percentile(50), latency:percentile(99)))
end
