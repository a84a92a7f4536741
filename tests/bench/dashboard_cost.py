#!/usr/bin/python3
"""What watching the dashboard costs the server, in CPU (issue 17; stdlib only).

    /usr/bin/python3 tests/bench/dashboard_cost.py [--binary build/core/smprotocol]
                                                   [--runs 3] [--seconds 30]

One worker, tracking into sqlite, a dashboard listener. After a few seconds of
wrk traffic (a store with some history), each run measures the CPU time of all
the server's processes over `--seconds` twice: idle, then watched as an operator
would (a client polling /metrics every second and a live stream open). The
difference is the dashboard's cost; bench.py --dashboard measures the same
against throughput, where this machine's noise is larger than the cost.
"""

import argparse
import http.client
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CLK_TCK = os.sysconf("SC_CLK_TCK")

CONFIG = """\
workers: 1
state_dir: {dir}/state
log: {{ level: warn }}
protocols:
  - module: http_download
    host: 127.0.0.1
    port: {port}
    root: {dir}/www
  - module: dashboard
    host: 127.0.0.1
    port: {dash}
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def children(root):
    found = [root]
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                parent = int(Path("/proc/%s/stat" % entry).read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if parent == root:
                found.append(int(entry))
    return found


def cpu_ticks(pids):
    total = 0
    for pid in pids:
        try:
            fields = Path("/proc/%d/stat" % pid).read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime + stime
    return total


def watch(dash, stop, counts):
    """The operator: /metrics every second, and the live stream open."""
    def poll():
        while not stop.is_set():
            conn = http.client.HTTPConnection("127.0.0.1", dash, timeout=5)
            conn.request("GET", "/metrics")
            if conn.getresponse().read():
                counts["polls"] += 1
            conn.close()
            stop.wait(1)

    def live():
        with socket.create_connection(("127.0.0.1", dash), timeout=5) as sock:
            sock.sendall(b"GET /api/v1/live HTTP/1.1\r\nHost: bench\r\n\r\n")
            sock.settimeout(0.5)
            while not stop.is_set():
                try:
                    counts["updates"] += sock.recv(65536).count(b"event: update")
                except socket.timeout:
                    pass
    return [threading.Thread(target=poll), threading.Thread(target=live)]


def measure(pids, dash, seconds, watched):
    stop = threading.Event()
    counts = {"polls": 0, "updates": 0}
    threads = watch(dash, stop, counts) if watched else []
    before = cpu_ticks(pids)
    for thread in threads:
        thread.start()
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join()
    return (cpu_ticks(pids) - before) * 1000.0 / CLK_TCK / seconds, counts


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--binary", default=str(REPO / "build/core/smprotocol"))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seconds", type=int, default=30)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="smp-dashboard-cost-"))
    (tmp / "www").mkdir()
    (tmp / "www" / "4k.bin").write_bytes(os.urandom(4096))
    port, dash = free_port(), free_port()
    (tmp / "smp.yaml").write_text(CONFIG.format(dir=tmp, port=port, dash=dash))
    server = subprocess.Popen([args.binary, "--config", str(tmp / "smp.yaml")], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        time.sleep(1.5)
        subprocess.run(["wrk", "-t1", "-c20", "-d3s", "http://127.0.0.1:%d/4k.bin" % port],
                       stdout=subprocess.DEVNULL, check=True, timeout=60)
        time.sleep(3)  # the store catches up
        pids = children(server.pid)
        costs = []
        for run in range(1, args.runs + 1):
            idle, _ = measure(pids, dash, args.seconds, False)
            watched, counts = measure(pids, dash, args.seconds, True)
            costs.append(watched - idle)
            print("run %d: server CPU idle %.2f ms/s, watched %.2f ms/s (%d polls, %d live updates): "
                  "the dashboard %.2f ms/s" % (run, idle, watched, counts["polls"], counts["updates"],
                                                 watched - idle))
        costs.sort()
        print("dashboard watched, CPU ms per second min/median/max: %.2f / %.2f / %.2f (%.3f%% of a core at "
              "the median)" % (costs[0], costs[len(costs) // 2], costs[-1], costs[len(costs) // 2] / 10))
    finally:
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
