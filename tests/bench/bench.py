#!/usr/bin/python3
"""SMProtocol vs nginx download benchmark (stdlib only; see README.md here).

    /usr/bin/python3 tests/bench/bench.py [--binary build/core/smprotocol]
                                          [--runs 5] [--quick] [--json out.json]
                                          [--only smpt|smp|nginx] [--no-tracking]

The headline: smprotocol in its default configuration (tracking every request and
download into its default store, sqlite) against nginx with a buffered access log
(buffer=64k flush=1s), with smprotocol recording nothing (tracking off, no access
log) as a reference column. --no-tracking compares smprotocol with its access log
against nginx with its default, unbuffered one instead.

Every server gets one worker process, pinned to CPU 0; wrk / curl / the idle
connection holder run pinned to CPU 1.  Every row is measured `--runs` times,
alternating servers (row -> run -> server) so machine drift hits all alike;
the table shows min / median / max and the ratio of the medians.
"""

import argparse
import hashlib
import http.client
import json
import os
import platform
import re
import resource
import select
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
LUA = HERE / "lua"
NGINX = "/usr/sbin/nginx"
CACHE_DIR = Path("/tmp/smp-bench-files")
GIB = 1 << 30
MIB = 1 << 20
N_RANDOM = 10000
SERVER_CPU = "0"
CLIENT_CPU = "1"
CLK_TCK = os.sysconf("SC_CLK_TCK")
NOISY_PCT = 10  # % of CPUs 0+1 used by other processes that makes a run "noisy"

SERVERS_ALL = ("smp", "smpt", "nginx")
SERVER_NAMES = {"smp": "smp, tracking off", "smpt": "smprotocol (default)", "nginx": "nginx"}


class BenchError(Exception):
    """Fatal: print the message and exit non-zero."""


def log(msg=""):
    print(msg, flush=True)


# --------------------------------------------------------------------------
# file set

def write_random(path, size, chunk=16 * MIB):
    tmp = path.with_name(path.name + ".part")
    with open(tmp, "wb") as f:
        left = size
        while left:
            n = min(chunk, left)
            f.write(os.urandom(n))
            left -= n
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def make_files(files_dir, cache_dir):
    """4k.bin, r/00000..09999.bin, 1m.bin, 1g.bin; returns expected hashes."""
    t0 = time.monotonic()
    files_dir.mkdir(mode=0o755)
    data4k = os.urandom(4096)
    (files_dir / "4k.bin").write_bytes(data4k)
    data1m = os.urandom(MIB)
    (files_dir / "1m.bin").write_bytes(data1m)
    rdir = files_dir / "r"
    rdir.mkdir(mode=0o755)
    rsample = {}
    for i in range(N_RANDOM):
        d = os.urandom(4096)
        (rdir / ("%05d.bin" % i)).write_bytes(d)
        if i in (0, 1234, N_RANDOM - 1):
            rsample["/r/%05d.bin" % i] = hashlib.sha256(d).hexdigest()

    cache_dir.mkdir(mode=0o755, exist_ok=True)
    os.chmod(cache_dir, 0o755)
    big = cache_dir / "1g.bin"
    if big.exists() and big.stat().st_size == GIB:
        log("  reusing cached %s" % big)
    else:
        log("  creating %s (1 GiB of random bytes) ..." % big)
        write_random(big, GIB)
    os.chmod(big, 0o644)
    try:
        os.link(big, files_dir / "1g.bin")
    except OSError:
        shutil.copyfile(big, files_dir / "1g.bin")
    # Make sure the whole set is in the page cache (both servers read warm).
    with open(files_dir / "1g.bin", "rb") as f:
        while f.read(16 * MIB):
            pass
    log("  file set ready in %.1f s: %s" % (time.monotonic() - t0, files_dir))
    return {"4k": data4k, "1m": data1m, "rsample": rsample}


# --------------------------------------------------------------------------
# /proc helpers

def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stat_fields(pid):
    """Fields 3.. of /proc/PID/stat (index 0 == field 3 'state')."""
    with open("/proc/%d/stat" % pid) as f:
        s = f.read()
    return s[s.rindex(")") + 2:].split()


def proc_tree(root):
    """root pid + all descendants (by scanning ppid)."""
    children = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            ppid = int(_stat_fields(int(d))[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(d))
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        if not os.path.exists("/proc/%d" % p):
            continue
        out.append(p)
        todo.extend(children.get(p, []))
    return sorted(out)


def cpu_ticks(pids):
    """Sum of utime+stime (fields 14, 15) in clock ticks."""
    total = 0
    for p in pids:
        try:
            f = _stat_fields(p)
        except OSError:
            continue
        total += int(f[11]) + int(f[12])
    return total


def cpu_busy_ticks():
    """Non-idle ticks (all fields but idle, iowait; guest is already in user)
    of CPU 0 + CPU 1 from /proc/stat."""
    total = 0
    with open("/proc/stat") as f:
        for line in f:
            parts = line.split()
            if parts[0] in ("cpu" + SERVER_CPU, "cpu" + CLIENT_CPU):
                v = [int(x) for x in parts[1:9]]  # user nice system idle iowait irq softirq steal
                total += sum(v) - v[3] - v[4]
    return total


def rss_bytes(pids):
    total = 0
    for p in pids:
        try:
            with open("/proc/%d/status" % p) as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total


def time_wait_count(port):
    """TIME_WAIT sockets on 127.0.0.1 touching `port` (either side)."""
    n = 0
    hexport = "%04X" % port
    try:
        with open("/proc/net/tcp") as f:
            next(f)
            for line in f:
                parts = line.split()
                if parts[3] != "06":
                    continue
                if parts[1].endswith(":" + hexport) or parts[2].endswith(":" + hexport):
                    n += 1
    except OSError:
        return -1
    return n


def pin_all(pids, cpu):
    """Pin every thread of every pid to `cpu`; return list of fixed tids."""
    fixed = []
    want = {int(cpu)}
    for p in pids:
        try:
            tids = [int(t) for t in os.listdir("/proc/%d/task" % p)]
        except OSError:
            continue
        for t in tids:
            try:
                if os.sched_getaffinity(t) != want:
                    os.sched_setaffinity(t, want)
                    fixed.append(t)
            except OSError:
                pass
    return fixed


# --------------------------------------------------------------------------
# servers

class Server:
    key = "?"

    def __init__(self, tmp, files_dir, tag):
        self.tmp = tmp
        self.files_dir = files_dir
        self.tag = tag  # distinguishes config/log files of fresh instances
        self.port = None
        self.proc = None
        self.out = None
        self.access_log = tmp / ("%s%s-access.log" % (self.key, tag))
        self.sent = 0  # complete responses counted by wrk/curl/checks

    @property
    def name(self):
        return SERVER_NAMES[self.key]

    def url(self, path):
        return "http://127.0.0.1:%d%s" % (self.port, path)

    def command(self):
        raise NotImplementedError

    def start(self, timeout=20.0):
        self.port = free_port()
        cmd = self.command()
        self.out = open(self.tmp / ("%s%s.out" % (self.key, self.tag)), "wb")
        self.proc = subprocess.Popen(
            ["taskset", "-c", SERVER_CPU] + cmd, stdin=subprocess.DEVNULL,
            stdout=self.out, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise BenchError("%s failed to start (exit code %s); output:\n%s"
                                 % (self.name, self.proc.returncode,
                                    self.output_tail() or "(no output)"))
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise BenchError("%s did not accept connections on 127.0.0.1:%d within "
                                 "%.0f s; output:\n%s"
                                 % (self.name, self.port, timeout,
                                    self.output_tail() or "(no output)"))
            time.sleep(0.05)
        # Let the master spawn its worker(s), then make sure everything is pinned.
        time.sleep(0.5)
        fixed = pin_all(self.pids(), SERVER_CPU)
        if fixed:
            log("  note: re-pinned %d thread(s) of %s to CPU %s" % (len(fixed), self.name,
                                                                    SERVER_CPU))
        return self

    def pids(self):
        if not self.proc:
            return []
        return proc_tree(self.proc.pid)

    def output_tail(self, n=3000):
        try:
            self.out.flush()
            data = (self.tmp / ("%s%s.out" % (self.key, self.tag))).read_bytes()
        except (OSError, AttributeError):
            data = b""
        extra = b""
        for p in self.extra_logs():
            try:
                content = p.read_bytes()[-n:]
            except OSError:
                continue
            if content.strip():
                extra += b"\n--- %s ---\n" % str(p).encode() + content
        return (data[-n:] + extra).decode("utf-8", "replace")

    def extra_logs(self):
        return []

    def stop(self):
        if not self.proc:
            return
        pids = self.pids()
        if self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        # Whatever is left of this instance (process group, or pids seen in
        # its tree) gets SIGKILL.
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        for p in pids:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        self.proc = None
        if self.out:
            self.out.close()
            self.out = None


class Nginx(Server):
    key = "nginx"
    open_file_cache = False
    log_buffer = ""  # --tracking: " buffer=64k flush=1s", nginx's cheapest way to record every request

    def command(self):
        prefix = self.tmp / ("nginx%s" % self.tag)
        prefix.mkdir(exist_ok=True)
        for d in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
            (prefix / d).mkdir(exist_ok=True)
        self.error_log = self.tmp / ("nginx%s-error.log" % self.tag)
        conf = prefix / "nginx.conf"
        conf.write_text(NGINX_CONF.format(
            prefix=prefix, port=self.port, root=self.files_dir,
            extra=NGINX_OPEN_FILE_CACHE if self.open_file_cache else "",
            access_log="%s combined%s" % (self.access_log, self.log_buffer),
            error_log=self.error_log))
        return [NGINX, "-c", str(conf), "-p", str(prefix), "-g", "daemon off;"]

    def extra_logs(self):
        return [self.error_log]


NGINX_OPEN_FILE_CACHE = """\
    open_file_cache max=20000 inactive=300s;
    open_file_cache_valid 300s;
    open_file_cache_errors on;
"""

NGINX_CONF = """\
# generated by tests/bench/bench.py
worker_processes 1;
worker_rlimit_nofile 20000;
pid {prefix}/nginx.pid;
error_log {error_log} warn;
events {{
    worker_connections 20000;
}}
http {{
    types {{ application/octet-stream bin; }}
    default_type application/octet-stream;
    access_log {access_log};
    sendfile on;
    tcp_nopush on;
    keepalive_requests 100000;
    keepalive_timeout 300s;
{extra}    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    server {{
        listen 127.0.0.1:{port} backlog=65535;
        server_name _;
        root {root};
        location / {{ }}
    }}
}}
"""


class Smp(Server):
    """smprotocol with its access log and without tracking (the download
    statistics are measured separately, by SmpTracking)."""
    key = "smp"
    binary = None
    access_log_on = True  # --tracking turns it off: nothing recorded at all

    def command(self):
        cfg = self.tmp / ("%s%s.yaml" % (self.key, self.tag))
        cfg.write_text(self.config_text())
        return [str(self.binary), "--config", str(cfg)]

    def config_text(self):
        log_line = "log: { level: warn%s }" % (
            ", access_log: %s" % self.access_log if self.access_log_on else "")
        return SMP_CONF.format(log=log_line, port=self.port, root=self.files_dir,
                               tracking="false", state=self.tmp / ("%s%s-state" % (self.key, self.tag)))


class SmpTracking(Smp):
    """smprotocol recording every request and download: the stats collector
    and the default store (sqlite at state_dir/stats.db); no access log."""
    key = "smpt"

    def config_text(self):
        return SMP_CONF.format(log="log: { level: warn }", port=self.port, root=self.files_dir,
                               tracking="true", state=self.state_dir())

    def state_dir(self):
        return self.tmp / ("%s%s-state" % (self.key, self.tag))

    def stored_requests(self):
        """Rows in the store's requests table (0 before the first batch)."""
        import sqlite3
        db = sqlite3.connect("file:%s?mode=ro" % (self.state_dir() / "stats.db"), uri=True, timeout=10)
        try:
            return db.execute("SELECT count(*) FROM requests").fetchone()[0]
        except sqlite3.OperationalError:
            return 0
        finally:
            db.close()


SMP_CONF = """\
# generated by tests/bench/bench.py
workers: 1
max_connections: 20000
backlog: 65535
state_dir: {state}
{log}
tracking: {{ enabled: {tracking} }}
protocols:
  - module: http_download
    host: 127.0.0.1
    port: {port}
    root: {root}
"""


def build_fingerprint(binary):
    """(path, mtime, size) of the binary and the modules built next to it, to
    notice a rebuild in the middle of a benchmark."""
    out = []
    cands = [binary]
    root = binary.parent.parent  # build/core/smprotocol -> build/
    for sub in ("protocols", "plugins"):
        if (root / sub).is_dir():
            cands += sorted((root / sub).glob("*/*.so"))
    for c in cands:
        try:
            st = c.stat()
            out.append((str(c), st.st_mtime_ns, st.st_size))
        except OSError:
            pass
    return out


def make_server(key, tmp, files_dir, tag=""):
    return {"smp": Smp, "smpt": SmpTracking, "nginx": Nginx}[key](tmp, files_dir, tag)


# --------------------------------------------------------------------------
# correctness checks (before any number is taken)

def check_basic(srv, expect):
    """4k.bin sha256 + keep-alive + a random file.  Raises BenchError."""
    want = hashlib.sha256(expect["4k"]).hexdigest()
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=5)
    try:
        for i, path in enumerate(["/4k.bin"] + sorted(expect["rsample"])):
            try:
                conn.request("GET", path, headers={"Host": "x"})
                resp = conn.getresponse()
                body = resp.read()
            except (OSError, http.client.HTTPException) as e:
                raise BenchError("%s: GET %s failed: %r" % (srv.name, path, e))
            got = hashlib.sha256(body).hexdigest()
            exp = want if path == "/4k.bin" else expect["rsample"][path]
            if resp.status != 200 or got != exp:
                raise BenchError("%s: GET %s returned status %d, %d bytes, sha256 %s "
                                 "(expected 200, sha256 %s)"
                                 % (srv.name, path, resp.status, len(body), got, exp))
            if resp.will_close and path != sorted(expect["rsample"])[-1]:
                raise BenchError("%s: response to GET %s is not keep-alive (request "
                                 "#%d on the connection)" % (srv.name, path, i + 1))
    finally:
        conn.close()


def check_1m(srv, expect):
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
    try:
        conn.request("GET", "/1m.bin")
        resp = conn.getresponse()
        body = resp.read()
    finally:
        conn.close()
    if resp.status != 200 or body != expect["1m"]:
        return "GET /1m.bin: status %d, %d bytes (want 200, %d bytes matching)" % (
            resp.status, len(body), MIB)
    return None


def check_range(srv, expect, tmp):
    """curl -H 'Range: bytes=1000-5000' /1m.bin must give a correct 206."""
    body_file = tmp / ("range-%s.body" % srv.key)
    try:
        r = subprocess.run(
            ["curl", "-s", "--max-time", "10", "-o", str(body_file), "-D", "-",
             "-H", "Range: bytes=1000-5000", srv.url("/1m.bin")],
            capture_output=True, timeout=20)
    except subprocess.TimeoutExpired:
        return "curl range request timed out"
    head = r.stdout.decode("latin-1")
    status = head.split("\r\n", 1)[0]
    body = body_file.read_bytes() if body_file.exists() else b""
    crange = None
    for line in head.split("\r\n")[1:]:
        k, _, v = line.partition(":")
        if k.strip().lower() == "content-range":
            crange = v.strip()
    problems = []
    if " 206" not in status:
        problems.append("status line %r" % status)
    if crange != "bytes 1000-5000/%d" % MIB:
        problems.append("Content-Range %r" % crange)
    if body != expect["1m"][1000:5001]:
        problems.append("body %d bytes, %s" % (
            len(body), "content differs" if len(body) == 4001 else "want 4001"))
    return "; ".join(problems) if problems else None


def check_1g(srv):
    conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
    try:
        conn.request("HEAD", "/1g.bin")
        resp = conn.getresponse()
        resp.read()
    finally:
        conn.close()
    clen = resp.getheader("Content-Length")
    if resp.status != 200 or clen != str(GIB):
        return "HEAD /1g.bin: status %d, Content-Length %r" % (resp.status, clen)
    return None


# --------------------------------------------------------------------------
# measurements

WRK_RE = re.compile(r"SMPBENCH (.*)")


def run_client(cmd, timeout):
    """Run a client pinned to CLIENT_CPU; return (rc, stdout, stderr, cpu_s)."""
    p = subprocess.Popen(["taskset", "-c", CLIENT_CPU] + cmd, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
        raise BenchError("client timed out after %.0f s: %s" % (timeout, " ".join(cmd)))
    return p.returncode, out.decode("utf-8", "replace"), err.decode("utf-8", "replace")


def wrk(srv, path, conns, duration, script, script_args=()):
    cmd = ["wrk", "-t1", "-c%d" % conns, "-d%ds" % duration, "-s", str(LUA / script),
           srv.url(path)]
    if script_args:
        cmd += ["--"] + list(script_args)
    pids = srv.pids()
    tw0 = time_wait_count(srv.port)
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    c0 = cpu_ticks(pids)
    b0 = cpu_busy_ticks()
    t0 = time.monotonic()
    rc, out, err = run_client(cmd, timeout=duration + 60)
    wall = time.monotonic() - t0
    b1 = cpu_busy_ticks()
    c1 = cpu_ticks(pids)
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    tw1 = time_wait_count(srv.port)
    pids_after = srv.pids()
    m = WRK_RE.search(out)
    if rc != 0 or not m:
        raise BenchError("wrk failed (rc %d) against %s:\n%s\n%s" % (rc, srv.name, out, err))
    kv = dict(x.split("=") for x in m.group(1).split())
    kv = {k: int(v) for k, v in kv.items()}
    srv.sent += kv["requests"]
    dur = kv["duration_us"] / 1e6
    res = {
        "requests": kv["requests"],
        "duration_s": dur,
        "bytes": kv["bytes"],
        "rps": kv["requests"] / dur if dur else 0.0,
        "mib_s": kv["bytes"] / dur / MIB if dur else 0.0,
        "errors": {k: kv[k] for k in ("connect", "read", "write", "status", "timeout")},
        "p50_us": kv["p50_us"],
        "p99_us": kv["p99_us"],
        "server_cpu_s": (c1 - c0) / CLK_TCK,
        "server_cpu_pct": 100.0 * (c1 - c0) / CLK_TCK / wall,
        "wrk_cpu_pct": 100.0 * ((ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime))
        / wall,
        "time_wait_delta": tw1 - tw0,
        # CPU 0+1 busy time not spent in the server or wrk processes: softirq /
        # kernel threads for loopback, plus anything else running (noise).
        "other_cpu_pct": 100.0 * ((b1 - b0) / CLK_TCK - (c1 - c0) / CLK_TCK
                                  - ((ru1.ru_utime - ru0.ru_utime)
                                     + (ru1.ru_stime - ru0.ru_stime))) / wall,
        "server_pids_changed": pids != pids_after,
        "server_alive": srv.proc.poll() is None,
    }
    res["cpu_us_per_req"] = (res["server_cpu_s"] * 1e6 / res["requests"]
                             if res["requests"] else float("nan"))
    return res


def curl_stream(srv, path="/1g.bin"):
    fmt = "%{http_code} %{size_download} %{speed_download}"
    rc, out, err = run_client(["curl", "-s", "--max-time", "300", "-o", "/dev/null",
                               "-w", fmt, srv.url(path)], timeout=320)
    try:
        code, size, speed = out.split()
        code, size, speed = int(code), int(float(size)), float(speed)
    except ValueError:
        raise BenchError("curl against %s: rc %d, unparsable output %r %r"
                         % (srv.name, rc, out, err))
    srv.sent += 1
    return {"rc": rc, "http_code": code, "size": size, "mib_s": speed / MIB}


def idle_rss(srv, n, settle):
    """Open n idle keep-alive connections; returns dict with bytes/conn."""
    pids = srv.pids()
    time.sleep(settle)
    before = rss_bytes(pids)
    cmd = ["taskset", "-c", CLIENT_CPU, sys.executable, str(HERE / "idle_conns.py"),
           "--port", str(srv.port), "--n", str(n)]
    p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, bufsize=1)

    def read_event(timeout):
        r, _, _ = select.select([p.stdout], [], [], timeout)
        if not r:
            raise BenchError("idle_conns.py: no answer within %.0f s" % timeout)
        line = p.stdout.readline()
        if not line:
            raise BenchError("idle_conns.py exited: %s" % p.stderr.read())
        return json.loads(line)

    try:
        ready = read_event(120)
        if ready.get("event") != "ready":
            raise BenchError("idle_conns.py: %r" % ready)
        time.sleep(settle)
        after = rss_bytes(srv.pids())
        p.stdin.write("check\n")
        checked = read_event(30)
        p.stdin.write("close\n")
        read_event(30)
        p.wait(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    ok = ready["ok"]
    return {
        "target": n, "ok": ok, "failed": ready["failed"], "errors": ready["errors"],
        "open_at_check": checked["open"], "closed_by_server": checked["closed_by_server"],
        "setup_s": ready["elapsed_s"], "rss_before": before, "rss_after": after,
        "bytes_per_conn": (after - before) / ok if ok else float("nan"),
        "server_pids": len(pids),
    }


# --------------------------------------------------------------------------
# rows

class Row:
    def __init__(self, key, label, unit, fmt, lower_is_better=False):
        self.key, self.label, self.unit, self.fmt = key, label, unit, fmt
        self.lower_is_better = lower_is_better
        self.values = {s: [] for s in SERVERS_ALL}
        self.invalid = {}  # server -> reason
        self.flagged = {}  # server -> set of notes ("errors", "client-bound")

    def stats(self, s):
        v = self.values[s]
        if not v:
            return None
        return {"min": min(v), "median": statistics.median(v), "max": max(v), "runs": v}

    def ratio(self, a="smp", b="nginx"):
        sa, sb = self.stats(a), self.stats(b)
        if not sa or not sb or not sb["median"] or a in self.invalid or b in self.invalid:
            return None
        return sa["median"] / sb["median"]


def store_lag(srv, stored_before, res, limit_s=60.0):
    """After a wrk run against smp+tracking: how long until the store holds a
    row for every response wrk counted (the collector hands batches to the
    store once a second), and how many rows it holds then."""
    t0 = time.monotonic()
    stored = 0
    while time.monotonic() - t0 < limit_s:
        stored = srv.stored_requests() - stored_before
        if stored >= res["requests"]:
            break
        time.sleep(0.1)
    lag = time.monotonic() - t0
    return {"stored": stored, "store_lag_s": lag, "caught_up": stored >= res["requests"],
            "stored_per_s": stored / (res["duration_s"] + lag) if res.get("duration_s") else float("nan")}


def describe_store(r):
    return ("store: %d rows for %d responses, %s %.1f s after the load ended; %.0f rows/s stored"
            % (r["stored"], r["requests"], "complete" if r["caught_up"] else "INCOMPLETE",
               r["store_lag_s"], r["stored_per_s"]))


def print_collector(runs):
    per_s = [r["stored_per_s"] for r in runs]
    lags = [r["store_lag_s"] for r in runs]
    missing = sum(max(0, r["requests"] - r["stored"]) for r in runs)
    log("\ncollector and store (smprotocol default, %d wrk runs): rows stored per second of load+catch-up "
        "min/med/max %.0f / %.0f / %.0f; catch-up after the load min/med/max %.1f / %.1f / %.1f s; "
        "responses without a row: %d"
        % (len(runs), min(per_s), statistics.median(per_s), max(per_s), min(lags),
           statistics.median(lags), max(lags), missing))


def fmt_errors(e):
    bad = {k: v for k, v in e.items() if v}
    return "errors: " + ", ".join("%s=%d" % kv for kv in sorted(bad.items())) if bad \
        else "no errors"


def describe_wrk(r):
    s = ("%9.0f req/s %7.1f MiB/s  srv cpu %3.0f%%  wrk cpu %3.0f%%  other %3.0f%%  "
         "p99 %5.2f ms  %s" % (r["rps"], r["mib_s"], r["server_cpu_pct"], r["wrk_cpu_pct"],
                               r["other_cpu_pct"], r["p99_us"] / 1000,
                               fmt_errors(r["errors"])))
    if r["wrk_cpu_pct"] >= 95:
        s += "  [client-bound: wrk used ~all of CPU %s]" % CLIENT_CPU
    if r["time_wait_delta"] > 1000:
        s += "  [%d new TIME_WAIT sockets: connections not kept alive?]" % r["time_wait_delta"]
    if not r["server_alive"]:
        s += "  [SERVER DIED]"
    elif r["server_pids_changed"]:
        s += "  [server process set changed during run]"
    return s


def main():
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--binary", default=str(REPO / "build/core/smprotocol"),
                    help="smprotocol binary (default: %(default)s)")
    ap.add_argument("--runs", type=int, default=5, help="runs per row (default 5)")
    ap.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    ap.add_argument("--warmup", type=int, default=1,
                    help="seconds of unrecorded wrk warm-up per server and row (0 = none)")
    ap.add_argument("--quick", action="store_true",
                    help="smoke test: --runs 1, 2 s wrk runs")
    ap.add_argument("--only", choices=SERVERS_ALL,
                    help="benchmark just one server (no ratios)")
    ap.add_argument("--nginx-open-file-cache", action="store_true",
                    help="give nginx an open_file_cache (off by default, as in "
                         "nginx's own default config)")
    ap.add_argument("--retry-noisy", type=int, default=2,
                    help="re-measure a wrk run up to this many times when other processes "
                         "used more than %d%%%% of CPUs 0+1 during it (default 2)" % NOISY_PCT)
    ap.add_argument("--json", help="also write the results as JSON to this file")
    ap.add_argument("--tracking", action="store_true",
                    help="the default (kept for old command lines)")
    ap.add_argument("--no-tracking", action="store_true",
                    help="two servers: smprotocol with its access log and tracking off, and nginx "
                         "with its default (unbuffered) access log")
    ap.add_argument("--conns", type=int, default=10000,
                    help="idle keep-alive connections for the RSS row (default 10000; "
                         "capped by RLIMIT_NOFILE)")
    ap.add_argument("--rows", default="1,2,3,4,5,7",
                    help="comma list of rows to run (1-5, 7; row 6 comes with row 1)")
    ap.add_argument("--keep-tmp", action="store_true",
                    help="keep the temp dir (configs, logs, file set) for inspection")
    args = ap.parse_args()
    if args.quick:
        args.runs, args.duration = 1, 2
    Nginx.open_file_cache = args.nginx_open_file_cache
    rows_wanted = {int(x) for x in args.rows.split(",") if x.strip()}
    if not args.no_tracking:
        Smp.access_log_on = False
        Nginx.log_buffer = " buffer=64k flush=1s"
        servers = ["smpt", "nginx", "smp"]
    else:
        servers = ["smp", "nginx"]
    if args.only:
        servers = [args.only]

    # Preconditions.
    if os.cpu_count() < 2 or not {0, 1} <= os.sched_getaffinity(0):
        raise BenchError("need CPUs 0 and 1 (server on 0, client on 1)")
    for tool in ("wrk", "curl", "taskset"):
        if not shutil.which(tool):
            raise BenchError("%s not found in PATH (apt-get install -y %s)"
                             % (tool, {"taskset": "util-linux"}.get(tool, tool)))
    if "nginx" in servers and not os.access(NGINX, os.X_OK):
        raise BenchError("%s not found (apt-get install -y nginx-light)" % NGINX)
    if {"smp", "smpt"} & set(servers):
        Smp.binary = Path(args.binary).resolve()
        if not os.access(Smp.binary, os.X_OK):
            raise BenchError("smprotocol binary %s not found / not executable (build it: "
                             "meson setup build && meson compile -C build, or pass "
                             "--binary, or use --only nginx)" % Smp.binary)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:  # servers inherit this
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    tmp = Path(tempfile.mkdtemp(prefix="smp-bench-"))
    os.chmod(tmp, 0o755)  # nginx workers run as nobody
    live = []
    warnings = []
    details = []
    rows = [
        Row("rps_4k", "4 KiB keep-alive req/s", "req/s", "{:.0f}"),
        Row("rps_random", "10,000 random 4 KiB files req/s", "req/s", "{:.0f}"),
        Row("rps_range", "Range 1000-5000 of 1m.bin req/s", "req/s", "{:.0f}"),
        Row("rps_1m", "1 MiB file req/s (-c10)", "req/s", "{:.0f}"),
        Row("mibs_1m", "1 MiB file MiB/s (-c10)", "MiB/s", "{:.0f}"),
        Row("mibs_1g", "1 GiB single curl stream MiB/s", "MiB/s", "{:.0f}"),
        Row("cpu_us_4k", "server CPU us/request, 4 KiB (lower is better)", "us", "{:.2f}",
            True),
        Row("rss_conn", "RSS bytes/idle conn (lower is better)", "bytes", "{:.0f}", True),
    ]
    R = {r.key: r for r in rows}

    def warn(msg):
        warnings.append(msg)
        log("  WARNING: " + msg)

    def record_wrk(row_keys, s, run, res):
        bad = {k: v for k, v in res["errors"].items() if v}
        if bad:
            warn("%s %s run %d: wrk %s" % (SERVER_NAMES[s], row_keys[0], run,
                                           fmt_errors(res["errors"])))
            for k in row_keys:
                R[k].flagged.setdefault(s, set()).add("wrk errors")
        if res["other_cpu_pct"] > NOISY_PCT:
            warn("%s %s run %d: %.0f%% of CPU time on CPUs %s+%s went to other processes "
                 "(noisy run)" % (SERVER_NAMES[s], row_keys[0], run, res["other_cpu_pct"],
                                  SERVER_CPU, CLIENT_CPU))
            for k in row_keys:
                R[k].flagged.setdefault(s, set()).add("noisy")
        if res["wrk_cpu_pct"] >= 95:
            warn("%s %s run %d: wrk used %.0f%% of CPU %s (client-bound; the server "
                 "may be faster than measured)" % (SERVER_NAMES[s], row_keys[0], run,
                                                   res["wrk_cpu_pct"], CLIENT_CPU))
            for k in row_keys:
                R[k].flagged.setdefault(s, set()).add("client-bound")
        if not res["server_alive"]:
            raise BenchError("%s died during %s" % (SERVER_NAMES[s], row_keys[0]))

    try:
        meta = {
            "date": time.strftime("%Y-%m-%d %H:%M:%S %z"),
            "kernel": platform.release(),
            "cpu": next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo")
                         if l.startswith("model name")), "?"),
            "cpus": os.cpu_count(),
            "runs": args.runs, "duration_s": args.duration, "warmup_s": args.warmup,
            "nginx_open_file_cache": args.nginx_open_file_cache,
            "servers": servers, "binary": str(Smp.binary) if Smp.binary else None,
            "nginx": subprocess.run([NGINX, "-v"], capture_output=True, text=True,
                                    timeout=10).stderr.strip(),
            "wrk": subprocess.run(["wrk", "-v"], capture_output=True, text=True,
                                  timeout=10).stdout.split("\n")[0].strip(),
            "git": subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                                  capture_output=True, text=True,
                                  timeout=10).stdout.strip() or None,
            "tmp": str(tmp),
        }
        log("SMProtocol benchmark: servers %s, %d run(s), %d s per wrk run, temp dir %s"
            % ("+".join(SERVER_NAMES[s] for s in servers), args.runs, args.duration, tmp))
        b0, t0 = cpu_busy_ticks(), time.monotonic()
        time.sleep(1.0)
        busy = 100.0 * (cpu_busy_ticks() - b0) / CLK_TCK / (time.monotonic() - t0)
        meta["idle_busy_pct_cpu01"] = round(busy, 1)
        if busy > 10:
            warn("CPUs %s+%s were %.0f%% busy before the benchmark started (of 200%%): the "
                 "machine is not idle, expect noisy numbers" % (SERVER_CPU, CLIENT_CPU, busy))
        fp0 = build_fingerprint(Smp.binary) if Smp.binary else None
        log("files:")
        files_dir = tmp / "files"
        expect = make_files(files_dir, CACHE_DIR)

        # ---- rows 1-5 (+6) on long-lived instances
        srv = {}
        collector_runs = []  # smpt wrk runs: what the store had when, see store_lag()
        if rows_wanted & {1, 2, 3, 4, 5}:
            log("starting servers:")
            for s in servers:
                srv[s] = make_server(s, tmp, files_dir)
                live.append(srv[s])
                srv[s].start()
                check_basic(srv[s], expect)
                srv[s].sent += 1 + len(expect["rsample"])
                log("  %-10s pid %d port %d, processes %s: 4k.bin sha256 OK, keep-alive OK"
                    % (srv[s].name, srv[s].proc.pid, srv[s].port, srv[s].pids()))
                for what, fn in (("1m.bin", lambda: check_1m(srv[s], expect)),
                                 ("range", lambda: check_range(srv[s], expect, tmp)),
                                 ("1g.bin", lambda: check_1g(srv[s]))):
                    prob = fn()
                    srv[s].sent += 1
                    if prob:
                        row = {"1m.bin": ["rps_1m", "mibs_1m"], "range": ["rps_range"],
                               "1g.bin": ["mibs_1g"]}[what]
                        for k in row:
                            R[k].invalid[s] = prob
                        warn("%s: %s check failed (%s); row(s) %s not measured for it"
                             % (srv[s].name, what, prob, ", ".join(row)))
                    else:
                        log("  %-10s %s check OK" % (srv[s].name, what))

        wrk_rows = [
            (1, ["rps_4k", "cpu_us_4k"], "/4k.bin", 50, "report.lua", ()),
            (2, ["rps_random"], "/", 50, "random.lua", (str(N_RANDOM),)),
            (3, ["rps_range"], "/1m.bin", 50, "range.lua", ()),
            (4, ["rps_1m", "mibs_1m"], "/1m.bin", 10, "report.lua", ()),
        ]
        for num, keys, path, conns, script, sargs in wrk_rows:
            if num not in rows_wanted:
                continue
            active = [s for s in servers if s not in R[keys[0]].invalid]
            log("row %d: %s (wrk -t1 -c%d -d%ds %s%s)" % (
                num, R[keys[0]].label, conns, args.duration, script,
                " -- " + " ".join(sargs) if sargs else ""))
            if args.warmup:
                for s in active:
                    wrk(srv[s], path, conns, args.warmup, script, sargs)
            for run in range(1, args.runs + 1):
                for s in active:
                    for attempt in range(args.retry_noisy + 1):
                        stored_before = srv[s].stored_requests() if s == "smpt" else 0
                        res = wrk(srv[s], path, conns, args.duration, script, sargs)
                        log("  run %d %-10s %s" % (run, srv[s].name, describe_wrk(res)))
                        if s == "smpt":
                            res.update(store_lag(srv[s], stored_before, res))
                            collector_runs.append(res)
                            log("         %s" % describe_store(res))
                        details.append({"row": keys[0], "server": s, "run": run,
                                        "attempt": attempt + 1, **res})
                        if res["other_cpu_pct"] <= NOISY_PCT or attempt == args.retry_noisy:
                            break
                        log("         (other processes used %.0f%% of CPUs %s+%s: "
                            "discarded, measuring again in 3 s)"
                            % (res["other_cpu_pct"], SERVER_CPU, CLIENT_CPU))
                        time.sleep(3)
                    record_wrk(keys, s, run, res)
                    if keys[0] == "rps_4k":
                        R["rps_4k"].values[s].append(res["rps"])
                        R["cpu_us_4k"].values[s].append(res["cpu_us_per_req"])
                        if res["server_pids_changed"]:
                            warn("%s: process set changed during row 1 run %d; CPU "
                                 "number may be off" % (srv[s].name, run))
                    elif keys[0] == "rps_1m":
                        R["rps_1m"].values[s].append(res["rps"])
                        R["mibs_1m"].values[s].append(res["mib_s"])
                    else:
                        R[keys[0]].values[s].append(res["rps"])

        if 5 in rows_wanted:
            active = [s for s in servers if s not in R["mibs_1g"].invalid]
            log("row 5: %s (taskset -c %s curl -o /dev/null /1g.bin)"
                % (R["mibs_1g"].label, CLIENT_CPU))
            for s in active:  # warm-up
                curl_stream(srv[s])
            for run in range(1, args.runs + 1):
                for s in active:
                    res = curl_stream(srv[s])
                    ok = res["rc"] == 0 and res["http_code"] == 200 and res["size"] == GIB
                    log("  run %d %-10s %8.0f MiB/s  http %d, %d bytes, curl rc %d%s" % (
                        run, srv[s].name, res["mib_s"], res["http_code"], res["size"],
                        res["rc"], "" if ok else "  [INCOMPLETE: not counted]"))
                    details.append({"row": "mibs_1g", "server": s, "run": run, **res})
                    if ok:
                        R["mibs_1g"].values[s].append(res["mib_s"])
                    else:
                        warn("%s 1 GiB stream run %d incomplete: http %d, %d bytes, rc %d"
                             % (srv[s].name, run, res["http_code"], res["size"], res["rc"]))

        for s in list(srv):
            srv[s].stop()
            live.remove(srv[s])
            if s == "smpt":
                stored = srv[s].stored_requests()
                meta.setdefault("stored_requests", {})[s] = {"rows": stored, "responses_counted": srv[s].sent}
                log("  %-10s store: %d request rows for %d responses counted by the clients"
                    % (srv[s].name, stored, srv[s].sent))
                if stored < srv[s].sent:
                    warn("%s stored only %d request rows for %d responses (lost records?)"
                         % (srv[s].name, stored, srv[s].sent))
            if s in ("smp", "smpt") and not (s == "smp" and Smp.access_log_on):
                continue
            try:
                with open(srv[s].access_log, "rb") as f:
                    lines = sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(MIB), b""))
            except OSError:
                lines = 0
            meta.setdefault("access_log_lines", {})[s] = {"lines": lines,
                                                         "responses_counted": srv[s].sent}
            log("  %-10s access log: %d lines for %d responses counted by the clients"
                % (srv[s].name, lines, srv[s].sent))
            if lines < 0.99 * srv[s].sent:
                warn("%s wrote only %d access log lines for %d responses (lost lines?)"
                     % (srv[s].name, lines, srv[s].sent))
            tail = srv[s].output_tail(1500).strip()
            if tail:
                log("  %s output/error log (tail):\n    %s"
                    % (srv[s].name, tail.replace("\n", "\n    ")))

        # ---- row 7: fresh instance per run and server
        if 7 in rows_wanted:
            log("row 7: RSS per idle keep-alive connection (fresh server per run, up to %d "
                "conns)" % args.conns)
            for run in range(1, args.runs + 1):
                for s in servers:
                    fresh = make_server(s, tmp, files_dir, tag="-rss%d" % run)
                    live.append(fresh)
                    try:
                        fresh.start()
                        check_basic(fresh, expect)
                        res = idle_rss(fresh, args.conns, settle=1.0)
                    finally:
                        fresh.stop()
                        live.remove(fresh)
                    details.append({"row": "rss_conn", "server": s, "run": run, **res})
                    R["rss_conn"].label = ("RSS bytes/idle conn, N=%d (lower is better)"
                                           % res["ok"])
                    log("  run %d %-10s %d/%d conns open (%d failed, %.1f s to set up, "
                        "%d still open at check), RSS %.1f -> %.1f MiB = %.0f bytes/conn"
                        % (run, SERVER_NAMES[s], res["ok"], res["target"], res["failed"],
                           res["setup_s"], res["open_at_check"], res["rss_before"] / MIB,
                           res["rss_after"] / MIB, res["bytes_per_conn"]))
                    if res["failed"]:
                        warn("%s RSS run %d: %d connections failed: %s"
                             % (SERVER_NAMES[s], run, res["failed"], res["errors"]))
                    if res["closed_by_server"]:
                        warn("%s RSS run %d: server closed %d idle connections before "
                             "the measurement finished" % (SERVER_NAMES[s], run,
                                                           res["closed_by_server"]))
                    if res["ok"]:
                        R["rss_conn"].values[s].append(res["bytes_per_conn"])

        if fp0 is not None and build_fingerprint(Smp.binary) != fp0:
            warn("the smprotocol binary or its modules were rebuilt during the benchmark; "
                 "numbers may mix two builds")

        # ---- table
        table = print_table(rows, servers)
        if collector_runs:
            print_collector(collector_runs)
            meta["collector"] = collector_runs
        if warnings:
            log("\nwarnings (%d):" % len(warnings))
            for w in warnings:
                log("  - " + w)
        if args.json:
            out = {"meta": meta, "table": table, "warnings": warnings, "details": details}
            Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
            log("\nJSON written to %s" % args.json)
        return 0
    finally:
        for s in live:
            s.stop()
        if args.keep_tmp:
            log("temp dir kept: %s" % tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def print_table(rows, servers):
    def cell(row, s):
        if s in row.invalid:
            return "FAILED CHECK"
        st = row.stats(s)
        if not st:
            return "-"
        f = row.fmt
        return "%s / %s / %s%s" % (f.format(st["min"]), f.format(st["median"]),
                                   f.format(st["max"]), " (!)" if s in row.flagged else "")

    # Ratios of medians: each smprotocol variant over nginx, and the cost of tracking.
    ratios = [(a, "nginx") for a in ("smpt", "smp") if a in servers and "nginx" in servers]
    if "smp" in servers and "smpt" in servers:
        ratios.append(("smpt", "smp"))
    ratio_names = ["%s/%s" % (SERVER_NAMES[a], SERVER_NAMES[b]) for a, b in ratios]

    table = []
    shown = [r for r in rows if any(r.values.values()) or r.invalid]
    header = ["row"] + ["%s (min/med/max)" % SERVER_NAMES[s] for s in servers] + ratio_names
    lines_cells = []
    for r in shown:
        values = [r.ratio(a, b) for a, b in ratios]
        lines_cells.append([r.label] + [cell(r, s) for s in servers] +
                           ["%.2f" % v if v is not None else "-" for v in values])
        table.append({
            "key": r.key, "label": r.label, "unit": r.unit,
            "lower_is_better": r.lower_is_better,
            **{SERVER_NAMES[s]: r.stats(s) for s in servers},
            "invalid": r.invalid or None,
            "flagged": {k: sorted(v) for k, v in r.flagged.items()} or None,
            **{"ratio_%s_over_%s" % ab: v for ab, v in zip(ratios, values)},
        })
    widths = [max(len(line[i]) for line in [header] + lines_cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(header, widths)).rstrip(),
             "-" * (sum(widths) + 2 * (len(widths) - 1))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in lines_cells]
    log("\n" + "\n".join(lines))
    if ratios:
        log("ratio = median / median: >1 is better for the first server on throughput rows, "
            "<1 on the '(lower is better)' rows.")
    if any(r.flagged for r in rows):
        log("(!) = at least one run had wrk socket errors / non-2xx responses, was "
            "client-bound or noisy; see the warnings below.")
    if any(r.invalid for r in rows):
        log("FAILED CHECK = the server failed the correctness check for that row, so it "
            "was not measured.")
    return table


def _on_sigterm(signum, frame):
    raise SystemExit(143)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        sys.exit(main())
    except BenchError as e:
        print("bench.py: error: %s" % e, file=sys.stderr, flush=True)
        sys.exit(2)
    except KeyboardInterrupt:
        print("bench.py: interrupted", file=sys.stderr, flush=True)
        sys.exit(130)
