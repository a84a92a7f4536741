-- SMProtocol bench: plain wrk run (static request), machine-readable summary.
-- Usage: wrk -t1 -c50 -d5s -s report.lua http://127.0.0.1:PORT/4k.bin
-- Defines no request()/response() so wrk keeps its fast static-request path.

done = function(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      "SMPBENCH requests=%d duration_us=%d bytes=%d connect=%d read=%d write=%d status=%d timeout=%d p50_us=%d p99_us=%d\n",
      summary.requests, summary.duration, summary.bytes,
      e.connect, e.read, e.write, e.status, e.timeout,
      latency:percentile(50), latency:percentile(99)))
end
