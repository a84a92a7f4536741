#!/usr/bin/python3
"""SMProtocol limits benchmark: the request rate with unique_ip on, vs off (issue 5).

    /usr/bin/python3 tests/bench/limits_bench.py [--binary build/core/smprotocol]
                                                 [--runs 5] [--duration 5] [--quick]
                                                 [--cache] [--json out.json]

Rows (one http_download worker, tracking off and no access log, so the limit is what
is measured):
  off                 no limits
  unique_ip embedded  unique_ip: true, counters in the server's shared memory
  unique_ip memcache  unique_ip: true and the memcache plugin: counters in memcached
  memcache cache      (--cache) the memcache plugin with cache_max_file_size: 64KiB and
                      unique_ip off: bodies of the 4 KiB files come from memcached

Load: `wrk -t1 -c50 -dD -s lua/random.lua / -- 10000`, each request a uniformly random
one of 10,000 files of 4 KiB, so two downloads of the same file rarely overlap and
unique_ip rarely refuses (a refusal is a 429, counted in the non-2xx column, not hidden).

Pinning: the server (master and worker) on CPU 0; wrk and memcached on CPU 1. Memcached
is Debian's, started by the script on a free loopback port (fresh per run, like the
server). Runs are interleaved (run 1: off, embedded, memcache; run 2: ...), each on a
fresh server with an unrecorded warm-up. The table shows req/s min / median / max and
the ratio of medians to `off`.

Needs wrk, memcached and taskset (apt-get install -y wrk memcached util-linux).
"""

import argparse
import hashlib
import http.client
import json
import os
import platform
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Shared with bench.py: the error type, logging, the server start/stop, the check, wrk
# and the /proc helpers.
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import bench  # noqa: E402
from bench import (CLIENT_CPU, CLK_TCK, NOISY_PCT, REPO, SERVER_CPU, BenchError,  # noqa: E402
                   Server, check_basic, cpu_busy_ticks, cpu_ticks, free_port, log, pin_all,
                   proc_tree, wrk)

N_FILES = 10000
FILE_SIZE = 4096
CACHE_MAX = "64KiB"

ROWS = {
    # key: (label, unique_ip, memcache plugin, cache_max_file_size)
    "off": ("off", False, False, None),
    "embedded": ("unique_ip embedded", True, False, None),
    "memcache": ("unique_ip memcache", True, True, None),
    "cache": ("memcache cache", False, True, CACHE_MAX),
}

# bench.py's config (one worker, state_dir, log, tracking, one http_download entry whose last
# key is root), with unique_ip added to that entry and the plugins list.
SMP_CONF = (bench.SMP_CONF.replace("bench.py", "limits_bench.py", 1)
            + "    unique_ip: {unique_ip}\nplugins:{plugins}\n")


class Smp(Server):
    """One smprotocol for one row and run (bench.Server: started pinned to CPU 0 with
    taskset, every thread checked; stopped with SIGTERM, then SIGKILL)."""
    key = "smp"
    binary = None

    def __init__(self, tmp, files_dir, row, run, memcached=None):
        super().__init__(tmp, files_dir, "-%s-r%d" % (row, run))
        self.row, self.memcached = row, memcached

    @property
    def name(self):
        return "smprotocol (%s)" % ROWS[self.row][0]

    def command(self):
        _, unique_ip, memcache, cache = ROWS[self.row]
        plugins = " []"
        if memcache:
            plugins = ('\n  - module: memcache\n    servers: ["127.0.0.1:%d"]' % self.memcached.port)
            if cache:
                plugins += "\n    cache_max_file_size: %s" % cache
        cfg = self.tmp / ("smp%s.yaml" % self.tag)
        cfg.write_text(SMP_CONF.format(state=self.tmp / ("smp%s-state" % self.tag), log="log: { level: warn }",
                                       tracking="false", port=self.port, root=self.files_dir,
                                       unique_ip="true" if unique_ip else "false", plugins=plugins))
        return [str(self.binary), "--config", str(cfg)]


class Memcached:
    """Debian's memcached on a free loopback port, pinned to CPU 1."""

    def __init__(self, tmp, tag):
        self.tmp, self.tag = tmp, tag
        self.proc, self.port = None, None

    def start(self, timeout=10.0):
        self.port = free_port()
        cmd = ["memcached", "-p", str(self.port), "-l", "127.0.0.1", "-U", "0", "-t", "1"]
        if os.geteuid() == 0:
            cmd += ["-u", "nobody"]  # memcached refuses to run as root without -u
        self.log_path = self.tmp / ("memcached%s.log" % self.tag)
        self.out = open(self.log_path, "wb")
        self.proc = subprocess.Popen(["taskset", "-c", CLIENT_CPU] + cmd, stdin=subprocess.DEVNULL,
                                     stdout=self.out, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while self.stats() is None:  # ready when it answers `stats`
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise BenchError("memcached did not answer on 127.0.0.1:%d within %.0f s (exit code %s): %s"
                                 % (self.port, timeout, self.proc.poll(),
                                    self.log_path.read_text(errors="replace")))
            time.sleep(0.05)
        pin_all(self.pids(), CLIENT_CPU)
        return self

    def pids(self):
        return proc_tree(self.proc.pid) if self.proc else []

    def stats(self):
        """memcached's `stats` (text protocol) as a dict of ints (non-numeric ones dropped);
        None when it does not answer."""
        out = {}
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
                s.sendall(b"stats\r\n")
                reply = b""
                while not reply.endswith(b"END\r\n"):
                    chunk = s.recv(65536)
                    if not chunk:
                        return None
                    reply += chunk
        except OSError:
            return None
        for line in reply.decode("ascii", "replace").split("\r\n"):
            parts = line.split()
            if len(parts) == 3 and parts[0] == "STAT":
                try:
                    out[parts[1]] = int(parts[2])
                except ValueError:
                    pass
        return out

    def stop(self):
        if self.proc:
            if self.proc.poll() is None:
                self.proc.kill()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
            self.proc = None
            self.out.close()


# --------------------------------------------------------------------------

def make_files(files_dir):
    """4k.bin (for bench.check_basic) and r/00000.bin .. r/09999.bin; returns what
    check_basic expects."""
    files_dir.mkdir(mode=0o755)
    data4k = os.urandom(FILE_SIZE)
    (files_dir / "4k.bin").write_bytes(data4k)
    (files_dir / "r").mkdir(mode=0o755)
    names = ["r/%05d.bin" % i for i in range(N_FILES)]  # random.lua's names
    for name in names:
        (files_dir / name).write_bytes(os.urandom(FILE_SIZE))
    return {"4k": data4k, "rsample": {"/" + n: hashlib.sha256((files_dir / n).read_bytes()).hexdigest()
                                      for n in (names[0], names[1234], names[-1])}}


def prefill(srv):
    """GET every file once on one keep-alive connection (the memcache cache row: the
    measured run then reads a warm cache). Returns the non-200 count."""
    bad = 0
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
    try:
        for i in range(N_FILES):
            conn.request("GET", "/r/%05d.bin" % i)
            resp = conn.getresponse()
            resp.read()
            bad += resp.status != 200
            if resp.will_close:
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
    finally:
        conn.close()
    srv.sent += N_FILES
    return bad


def measure(srv, memcached, duration):
    """bench.wrk with random.lua, plus memcached's CPU and operation counts."""
    mpids = memcached.pids() if memcached else []
    st0 = memcached.stats() if memcached else {}
    m0, t0 = cpu_ticks(mpids), time.monotonic()
    res = wrk(srv, "/", 50, duration, "random.lua", (str(N_FILES),))
    wall = time.monotonic() - t0
    m1 = cpu_ticks(mpids)
    res["non_2xx"] = res["errors"]["status"]
    res["socket_errors"] = sum(v for k, v in res["errors"].items() if k != "status")
    if memcached:
        st1 = memcached.stats()
        res["memcached_cpu_pct"] = 100.0 * (m1 - m0) / CLK_TCK / wall
        # bench.wrk's "other" is CPU 0+1 time outside the server and wrk: memcached's is not noise.
        res["other_cpu_pct"] -= res["memcached_cpu_pct"]
        res["memcached_ops"] = {k: st1.get(k, 0) - st0.get(k, 0)
                                for k in ("incr_hits", "incr_misses", "decr_hits", "decr_misses",
                                          "get_hits", "get_misses", "cmd_set")}
        res["memcached_ops_per_req"] = (sum(res["memcached_ops"].values()) / res["requests"]
                                        if res["requests"] else 0.0)
    else:
        res["memcached_cpu_pct"] = None
    return res


def describe(r):
    s = "%8.0f req/s  srv cpu %3.0f%% (%5.1f us/req)  wrk cpu %3.0f%%" % (
        r["rps"], r["server_cpu_pct"], r["cpu_us_per_req"], r["wrk_cpu_pct"])
    if r["memcached_cpu_pct"] is not None:
        s += "  memcached cpu %3.0f%%" % r["memcached_cpu_pct"]
    s += "  other %3.0f%%  p99 %5.2f ms  non-2xx %d" % (r["other_cpu_pct"], r["p99_us"] / 1000,
                                                      r["non_2xx"])
    if r["socket_errors"]:
        s += "  socket errors %s" % {k: v for k, v in r["errors"].items() if v and k != "status"}
    if r.get("memcached_ops"):
        ops = {k: v for k, v in r["memcached_ops"].items() if v}
        s += "\n           memcached: %s (%.2f ops/request)" % (
            ", ".join("%s %d" % kv for kv in sorted(ops.items())) or "no operations",
            r["memcached_ops_per_req"])
    if not r["server_alive"]:
        s += "  [SERVER DIED]"
    return s


def stats(values):
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"min": min(values), "median": statistics.median(values), "max": max(values), "runs": values}


def mmm(values, fmt="%.0f"):
    st = stats(values)
    return " / ".join(fmt % st[k] for k in ("min", "median", "max")) if st else "-"


def med(values, fmt="%.0f"):
    st = stats(values)
    return fmt % st["median"] if st else "-"


def table(header, rows):
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]

    def line(cells):
        return "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()
    return "\n".join([line(header), "-" * (sum(widths) + 2 * len(widths) - 2)] + [line(r) for r in rows])


def report(args, row_keys, results, unavailable, warnings, meta):
    """The table, the warnings, and --json."""
    medians = {k: statistics.median(r["rps"] for r in results[k]) for k in row_keys if results[k]}
    ratio = {k: medians[k] / medians["off"] for k in medians if medians.get("off")}
    rows = []
    for k in row_keys:
        rs = results[k]
        if not rs:
            rows.append([ROWS[k][0], unavailable.get(k, "no run")] + ["-"] * 7)
            continue
        rows.append([ROWS[k][0], mmm([r["rps"] for r in rs]),
                     "%.2f" % ratio[k] if k in ratio else "-",
                     "%d" % sum(r["non_2xx"] for r in rs),
                     "%d" % sum(r["socket_errors"] for r in rs),
                     med([r["server_cpu_pct"] for r in rs]),
                     med([r["cpu_us_per_req"] for r in rs], "%.1f"),
                     med([r["memcached_cpu_pct"] for r in rs]),
                     med([r["wrk_cpu_pct"] for r in rs])])
    log("\nrequest rate, wrk -t1 -c50 -d%ds random.lua over %d files of 4 KiB; %d run(s) per row, "
        "fresh server each; req/s min / median / max" % (args.duration, N_FILES, args.runs))
    log(table(["row", "req/s", "median/off", "non-2xx", "sock err", "srv cpu %", "srv us/req",
               "memcached cpu %", "wrk cpu %"], rows))
    log("non-2xx and sock err: sums over the runs. cpu columns: medians; srv = master + worker "
        "(utime+stime from /proc), us/req = server CPU time per request.")
    if warnings:
        log("\n%d warning(s):\n%s" % (len(warnings), "\n".join("  - " + w for w in warnings)))
    if not args.json:
        return
    summary = {k: {"label": ROWS[k][0], "unavailable": unavailable.get(k), "median_over_off": ratio.get(k),
                   "rps": stats([r["rps"] for r in results[k]]),
                   "non_2xx": sum(r["non_2xx"] for r in results[k])} for k in row_keys}
    meta.update(date=time.strftime("%Y-%m-%d %H:%M:%S %z"), kernel=platform.release(), cpus=os.cpu_count(),
                binary=str(Smp.binary),
                git=subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                                   text=True, timeout=10).stdout.strip() or None,
                memcached=subprocess.run(["memcached", "-V"], capture_output=True, text=True,
                                         timeout=10).stdout.strip())
    doc = {"args": vars(args), "meta": meta, "summary": summary, "results": results, "warnings": warnings}
    Path(args.json).write_text(json.dumps(doc, indent=2, default=str) + "\n")
    log("\nJSON written to %s" % args.json)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--binary", default=str(REPO / "build/core/smprotocol"),
                    help="smprotocol binary (default: %(default)s); it finds its modules itself "
                         "(its build tree, or the installed module dir)")
    ap.add_argument("--runs", type=int, default=5, help="runs per row (default 5)")
    ap.add_argument("--duration", type=int, default=5, help="seconds per wrk run (default 5)")
    ap.add_argument("--warmup", type=int, default=1,
                    help="seconds of unrecorded wrk warm-up on each fresh server (default 1, 0 = none)")
    ap.add_argument("--quick", action="store_true", help="smoke test: --runs 1 --duration 2")
    ap.add_argument("--cache", action="store_true",
                    help="add the row 'memcache cache' (cache_max_file_size: %s, unique_ip off)" % CACHE_MAX)
    ap.add_argument("--json", help="also write every measurement as JSON to this file")
    ap.add_argument("--keep-tmp", action="store_true", help="keep the temp dir (configs, server output)")
    args = ap.parse_args()
    if args.quick:
        args.runs, args.duration = 1, 2

    missing = [t for t in ("wrk", "memcached", "taskset") if not shutil.which(t)]
    if missing:
        raise BenchError("%s not found in PATH: apt-get install -y wrk memcached util-linux"
                         % ", ".join(missing))
    if os.cpu_count() < 2 or not {0, 1} <= os.sched_getaffinity(0):
        raise BenchError("need CPUs 0 and 1 (server on 0, wrk and memcached on 1)")
    Smp.binary = Path(args.binary).resolve()
    if not os.access(Smp.binary, os.X_OK):
        raise BenchError("smprotocol binary %s not found / not executable (build it: meson setup build && "
                         "meson compile -C build, or pass --binary)" % Smp.binary)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:  # the servers inherit this
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    row_keys = ["off", "embedded", "memcache"] + (["cache"] if args.cache else [])
    unavailable = {}  # row -> reason
    results = {k: [] for k in row_keys}
    warnings = []

    def warn(msg):
        warnings.append(msg)
        log("  WARNING: " + msg)

    tmp = Path(tempfile.mkdtemp(prefix="smp-limits-bench-"))
    os.chmod(tmp, 0o755)
    try:
        log("SMProtocol limits benchmark: rows %s; %d run(s) of %d s (wrk -t1 -c50 -s random.lua, %d files "
            "of 4 KiB), %d s warm-up; temp dir %s"
            % (", ".join(ROWS[k][0] for k in row_keys), args.runs, args.duration, N_FILES, args.warmup, tmp))
        log("pinning: smprotocol on CPU %s; wrk and memcached on CPU %s" % (SERVER_CPU, CLIENT_CPU))
        b0, t0 = cpu_busy_ticks(), time.monotonic()
        time.sleep(1.0)
        idle_busy = 100.0 * (cpu_busy_ticks() - b0) / CLK_TCK / (time.monotonic() - t0)
        if idle_busy > 10:
            warn("CPUs %s+%s were %.0f%% busy before the benchmark started (of 200%%): the machine is not "
                 "idle, expect noisy numbers" % (SERVER_CPU, CLIENT_CPU, idle_busy))
        t0 = time.monotonic()
        expect = make_files(tmp / "files")
        log("files: %d x 4 KiB in %.1f s" % (N_FILES, time.monotonic() - t0))

        for run in range(1, args.runs + 1):
            for row in row_keys:
                if row in unavailable:
                    continue
                memcached = srv = None
                try:
                    if ROWS[row][2]:
                        memcached = Memcached(tmp, "-%s-r%d" % (row, run))
                        memcached.start()
                    srv = Smp(tmp, tmp / "files", row, run, memcached)
                    try:
                        srv.start()
                    except BenchError as e:
                        if ROWS[row][3] and "cache_max_file_size" in str(e):
                            unavailable[row] = "the server rejects cache_max_file_size"
                            said = [l.strip() for l in str(e).splitlines() if "cache_max_file_size" in l]
                            log("  run %d %-20s unavailable: the server rejects cache_max_file_size "
                                "(this build's memcache plugin has no cache?):\n    %s"
                                % (run, ROWS[row][0], "\n    ".join(said)))
                            continue
                        raise
                    check_basic(srv, expect)
                    srv.sent += 1 + len(expect["rsample"])
                    if ROWS[row][3]:
                        t1 = time.monotonic()
                        bad = prefill(srv)
                        log("  run %d %-20s cache filled: GET of all %d files in %.1f s%s"
                            % (run, ROWS[row][0], N_FILES, time.monotonic() - t1,
                               ", %d not 200" % bad if bad else ""))
                    if args.warmup:
                        wrk(srv, "/", 50, args.warmup, "random.lua", (str(N_FILES),))
                    res = measure(srv, memcached, args.duration)
                    res.update(row=row, run=run)
                    results[row].append(res)
                    log("  run %d %-20s %s" % (run, ROWS[row][0], describe(res)))
                    where = "%s run %d" % (ROWS[row][0], run)
                    if res["non_2xx"]:
                        warn("%s: %d non-2xx responses (429: two downloads of one file overlapped)"
                             % (where, res["non_2xx"]))
                    if res["socket_errors"]:
                        warn("%s: wrk socket errors %s" % (where, res["errors"]))
                    if res["wrk_cpu_pct"] >= 95:
                        warn("%s: wrk used %.0f%% of CPU %s (client-bound)" % (where, res["wrk_cpu_pct"],
                                                                             CLIENT_CPU))
                    if res["other_cpu_pct"] > NOISY_PCT:
                        warn("%s: %.0f%% of CPUs %s+%s went to other processes (noisy run)"
                             % (where, res["other_cpu_pct"], SERVER_CPU, CLIENT_CPU))
                    ops = res.get("memcached_ops") or {}
                    if row == "memcache" and not ops.get("incr_hits") and not ops.get("incr_misses"):
                        warn("%s: memcached saw no incr: the counters were not in memcached" % where)
                    if row == "cache" and not ops.get("get_hits"):
                        warn("%s: memcached had no get hit: the cache was not used" % where)
                    if not res["server_alive"]:
                        raise BenchError("%s died during %s:\n%s" % (srv.name, where, srv.output_tail()))
                    if res["server_pids_changed"]:
                        warn("%s: the server's process set changed during the run" % where)
                finally:  # every server and memcached is stopped here, whatever happened
                    for p in (srv, memcached):
                        if p is not None:
                            p.stop()

        report(args, row_keys, results, unavailable, warnings, {"idle_busy_pct_cpu01": round(idle_busy, 1)})
        return 0
    finally:
        if args.keep_tmp:
            log("temp dir kept: %s" % tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(143))
    try:
        sys.exit(main())
    except (BenchError, KeyboardInterrupt) as e:
        interrupted = isinstance(e, KeyboardInterrupt)
        print("limits_bench.py: %s" % ("interrupted" if interrupted else "error: %s" % e), file=sys.stderr, flush=True)
        sys.exit(130 if interrupted else 2)
