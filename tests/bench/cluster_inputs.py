#!/usr/bin/python3
"""Measured inputs for sizing a cluster (docs/scale.md): what ONE smprotocol node writes to
its MongoDB store and what it asks of memcached, per download.

    /usr/bin/python3 tests/bench/cluster_inputs.py [--runs 3] [--load-seconds 10]
                                                   [--catchup-limit 60] [--json FILE|-]

MongoDB here is the TEST DOUBLE tests/mongodb/mongo_double.py (a Python, in-memory
server speaking the wire protocol), NOT MongoDB: document sizes, documents per download
and write commands are the node's own, but the write RATE is bounded by the double (a
Python program on a shared 2-core machine), not by MongoDB. The double's CPU use is
printed next to the rate so a reader can see whether it was the limit. memcached, curl,
aria2c and wrk are the real programs (Debian's).

Each run starts, on 127.0.0.1 only, the double (with --trace, whose log of every
command received is how write commands are counted), one memcached and, per traffic
kind, one smprotocol node (2 workers; plugins mongodb with its default batch settings
and memcache; unique_ip and max_connections_per_ip on the listener, 127.0.0.0/8 trusted
as a proxy), each kind into a fresh database, the node stopped gracefully (which stores
every open download) before its documents are read:

  a  200 single whole-file downloads of a 4 KiB file, one curl each, each from its own
     X-Forwarded-For address
  b  20 `aria2c -x8 -s8 -k1M` downloads of a 16 MiB file, each from its own address
  c  20 downloads of the 16 MiB file cut by curl (--limit-rate + --max-time) and resumed
     with `curl -C -`, each from its own address
  load  wrk -t1 -c20 for --load-seconds on the 4 KiB file, every request from its own
     address (lua/distinct_xff.lua), then a bounded wait until the store holds every
     request wrk counted

The server binary is $SMP_BINARY (default /work/main/build/core/smprotocol), as for
the integration tests. Nothing is built here.
"""

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

try:
    import bson
    import pymongo
    import pymongo.errors
except ImportError as e:
    sys.exit('cluster_inputs.py needs pymongo and bson (Debian python3-pymongo): '
             'run it with /usr/bin/python3 (%s)' % e)

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO / 'tests' / 'integration'))
import harness  # noqa: E402
import test_mongodb  # noqa: E402

XFF_LUA = HERE / 'lua' / 'distinct_xff.lua'
CLK_TCK = os.sysconf('SC_CLK_TCK')
KIB, MIB = 1024, 1024 * 1024
SMALL, BIG = 'small4k.bin', 'big16m.bin'
LABEL = 'MongoDB TEST DOUBLE (tests/mongodb/mongo_double.py), not MongoDB'
# memcached `stats` counters that count operations (the rest are gauges, bytes, times...)
MC_OPS = re.compile(r'^(cmd_\w+|\w+_hits|\w+_misses|\w+_badval|total_connections|'
                    r'bytes_read|bytes_written|evictions|expired_unfetched|total_items)$')
TRACE = re.compile(r"OP_(?:MSG|QUERY)(?: flags=(\d+))? (\w+) '?([^' ]*)'? db=(\S+) keys=\[[^\]]*\] ?(.*)$")


class BenchError(Exception):
    pass


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def cpu_seconds(pid):
    """utime + stime of a process (all its threads), in seconds; None if gone."""
    fields = harness._stat_fields(pid)
    return None if fields is None else (int(fields[11]) + int(fields[12])) / CLK_TCK


def machine_busy():
    """(busy, total) jiffies of all CPUs, from /proc/stat."""
    with open('/proc/stat') as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]
    return sum(v) - idle, sum(v)


def build_files():
    """The binary and the modules it loads from its build tree (core/smprotocol -> build/**/*.so)."""
    build = Path(harness.BINARY).resolve().parent.parent
    return [Path(harness.BINARY)] + sorted(build.glob('plugins/*/*.so')) + sorted(build.glob('protocols/*/*.so'))


def wait_for_binary(limit_s=300):
    """The binary or a module may be being rebuilt: wait (bounded) until none has changed for 30 s."""
    deadline = time.monotonic() + limit_s
    while True:
        try:
            age = min(time.time() - f.stat().st_mtime for f in build_files())
            if age > 30:
                return
        except OSError:
            age = None
        if time.monotonic() > deadline:
            raise BenchError('%s (or a module) missing or still changing after %d s' % (harness.BINARY, limit_s))
        log('waiting for the build (%s)' % ('binary missing' if age is None else 'changed %.0f s ago' % age))
        time.sleep(10)


def build_stamp():
    """mtime of the newest build file."""
    return max(f.stat().st_mtime for f in build_files())


def source_of_build():
    """Which source the build is of, as far as git says: the build tree's checkout, its commit and
    the files changed in its work tree (a build may include them)."""
    tree = Path(harness.BINARY).resolve().parent.parent.parent
    head = harness.run(['git', '-C', str(tree), 'log', '-1', '--format=%h %s'], timeout=10).stdout.strip()
    dirty = harness.run(['git', '-C', str(tree), 'status', '--short', '--untracked-files=no'], timeout=10).stdout.split()
    return {'tree': str(tree), 'head': head[:100], 'modified': dirty[1::2]}


def snapshot_build(tmp, attempts=5):
    """Copy the binary and every module once (the build is being rebuilt meanwhile), so that every run
    measures the same build; returns the copy's module directory. Points harness.BINARY at the copy."""
    for _ in range(attempts):
        wait_for_binary()
        stamp = build_stamp()
        snap = Path(tmp) / 'build'
        shutil.rmtree(snap, ignore_errors=True)
        snap.mkdir()
        files = build_files()
        for f in files:
            shutil.copy2(f, snap / f.name)
        if build_stamp() == stamp:
            info = dict(source_of_build(), built=time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime(stamp)),
                        binary=harness.BINARY, files=[f.name for f in files])
            harness.BINARY = str(snap / 'smprotocol')
            return str(snap), info
    raise BenchError('the build kept changing while it was copied')


# --------------------------------------------------------------------------
# the components

class Memcached:
    """Debian's memcached on a free loopback port, with -vv: it logs every command it
    receives ("<fd verb key ..."), which is how commands are counted by verb. Its `stats`
    do not count everything: a meta arithmetic `ma ... N<ttl>` that creates a missing
    counter (autovivify) moves no hit/miss counter, only total_items (memcached 1.6.18)."""

    def __init__(self, tmp):
        self.port, self.proc = harness.free_port(), None
        self.log_path = os.path.join(tmp, 'memcached.log')

    def start(self):
        err = open(self.log_path, 'wb')
        self.proc = harness.spawn(['memcached', '-l', '127.0.0.1', '-p', str(self.port), '-U', '0', '-m', '64',
                                   '-u', 'nobody', '-vv'], stdout=subprocess.DEVNULL, stderr=err,
                                  start_new_session=True)
        err.close()
        if not harness.wait_for(lambda: harness.port_accepts(self.port), 5.0):
            raise BenchError('memcached did not start on port %d' % self.port)
        return self

    def log_size(self):
        return os.path.getsize(self.log_path)

    def commands(self, since=0):
        """{verb: n} of the commands logged after byte `since` (our own `stats` left out)."""
        with open(self.log_path, 'rb') as f:
            f.seek(since)
            text = f.read().decode('utf-8', 'replace')
        out = {}
        for verb, rest in re.findall(r'^<\d+ (\S+)(.*)$', text, re.M):
            if verb in ('new', 'connection', 'stats'):
                continue
            if verb == 'ma':  # meta arithmetic: an increment unless mode MD (decrement)
                verb = 'ma MD (decr)' if ' MD' in rest else 'ma (incr)'
            out[verb] = out.get(verb, 0) + 1
        return dict(sorted(out.items()))

    def stats(self):
        """memcached's `stats` as {name: int} (the numeric ones)."""
        with socket.create_connection(('127.0.0.1', self.port), timeout=5) as s:
            s.sendall(b'stats\r\n')
            data, deadline = b'', time.monotonic() + 5
            while not data.endswith(b'END\r\n') and time.monotonic() < deadline:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        out = {}
        for line in data.decode().splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[0] == 'STAT' and re.fullmatch(r'\d+', parts[2]):
                out[parts[1]] = int(parts[2])
        return out

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


def mc_delta(before, after):
    """The operation counters that changed, minus the one `stats` connection of ours."""
    d = {k: after[k] - before.get(k, 0) for k in after if MC_OPS.match(k) and after[k] != before.get(k, 0)}
    if 'total_connections' in d:
        d['total_connections'] -= 1  # the connection that read `after`
    return {k: v for k, v in d.items() if v}


class Double(test_mongodb.Double):
    """mongo_double.py with --trace (every command logged to its stderr file), and a
    client of our own to read it."""

    def __init__(self, env):
        super().__init__(env, args=['--trace'])
        self.client = None

    def start(self, timeout=15.0):
        super().start(timeout)
        self.client = pymongo.MongoClient('127.0.0.1', self.port, serverSelectionTimeoutMS=5000,
                                          socketTimeoutMS=120000)
        return self

    def count(self, db, coll):
        """Documents in db.coll (the double answers a bare count from its size, at once)."""
        try:
            return int(self.client[db].command('count', coll)['n'])
        except pymongo.errors.PyMongoError:
            return 0

    def docs(self, db, coll, limit=0):
        return list(self.client[db][coll].find({}, limit=limit))

    def cpu(self):
        return cpu_seconds(self.proc.pid)

    def log_size(self):
        return os.path.getsize(self.log_path)

    def commands(self, db, since=0):
        """The commands logged for `db` after byte `since` of the trace:
        {command name: {'commands': n, 'documents': n, 'updates': n, 'unacknowledged': n}}."""
        with open(self.log_path, 'rb') as f:
            f.seek(since)
            text = f.read().decode('utf-8', 'replace')
        out = {}
        for line in text.splitlines():
            m = TRACE.search(line)
            if not m or m.group(4) != db:
                continue
            c = out.setdefault(m.group(2), {'commands': 0, 'documents': 0, 'updates': 0, 'unacknowledged': 0})
            c['commands'] += 1
            c['unacknowledged'] += int(m.group(1) or 0) & 2 and 1
            for what, n in re.findall(r'(documents|updates)\[(\d+)\]', m.group(5)):
                c[what] += int(n)
        return out

    def stop(self):
        if self.client:
            self.client.close()
        super().stop()


MODULE_DIR = None  # the copied build's modules (snapshot_build)


def node_config(port, env, double, db, memcached):
    """One node as a production site would run it behind a load balancer (config_text's
    listener keys, 2 workers)."""
    text = harness.config_text(
        port, env.www, workers=2, log_level='warn',
        unique_ip='true', max_connections_per_ip=64,
        core_extra={'trusted_proxies': '[127.0.0.0/8]', 'tracking': '{enabled: true}', 'module_dir': MODULE_DIR})
    plugins = ('plugins:\n'
               '  - module: mongodb\n'
               '    uri: "%s"\n'
               '    database: %s\n'
               '  - module: memcache\n'
               '    servers: ["127.0.0.1:%d"]\n'
               '    prefix: "smp:"\n'
               '    on_error: allow\n' % (double.uri(), db, memcached.port))
    # A state_dir of its own: a node's records and spool outlive it, and a node started on them
    # stores what the one before left (into its own database).
    text = re.sub(r'^state_dir: .*$', 'state_dir: %s' % env.path('state-' + db), text, flags=re.M)
    return text.replace('plugins: []\n', plugins)


def start_node(env, double, db, memcached):
    port = harness.free_port()
    server = harness.Server(env, port=port, access_log=False,
                            config=node_config(port, env, double, db, memcached))
    server.start(timeout=20)
    server.wait_workers(2)
    return server


def stop_node(server, timeout=90):
    """Graceful stop (the collector stores every open download first), bounded."""
    t0 = time.monotonic()
    code = server.terminate(timeout=timeout)
    server.kill()
    return code, time.monotonic() - t0


def node_pids(server):
    return [server.pid] + harness.children_of(server.pid, include_zombies=False)


def node_cpu(pids):
    return sum(cpu_seconds(p) or 0 for p in pids)


# --------------------------------------------------------------------------
# the traffic

def xff(kind, i):
    """A distinct documentation address (198.18.0.0/15, benchmarking) per kind and client."""
    n = {'a': 0, 'b': 1000, 'c': 2000}[kind] + i + 1
    return '198.18.%d.%d' % (n // 250, n % 250 + 1)


def traffic_a(server, env, n=200):
    ok = 0
    for i in range(n):
        r = harness.curl(['-o', os.devnull, '-w', '%{http_code} %{size_download}', '-H',
                          'X-Forwarded-For: %s' % xff('a', i), server.url('/' + SMALL)], timeout=30)
        ok += r.stdout.strip() == '200 %d' % (4 * KIB)
    return {'clients': n, 'ok': ok}


def traffic_b(server, env, n=20):
    ok, out = 0, env.path('aria2')
    for i in range(n):
        shutil.rmtree(out, ignore_errors=True)
        r = harness.run(['aria2c', '-x8', '-s8', '-k1M', '--header', 'X-Forwarded-For: %s' % xff('b', i),
                         '-d', out, '-o', 'f.bin', '--allow-overwrite=true', '--auto-file-renaming=false',
                         '--file-allocation=none', '--max-tries=5', '--retry-wait=1', '--console-log-level=warn',
                         '--summary-interval=0', '--no-conf', server.url('/' + BIG)], timeout=120)
        ok += r.returncode == 0 and _same(os.path.join(out, 'f.bin'), env.content[BIG])
    return {'clients': n, 'ok': ok}


def traffic_c(server, env, n=20):
    ok, cut_ok, part = 0, 0, env.path('part.bin')
    for i in range(n):
        if os.path.exists(part):
            os.unlink(part)
        header = ['-H', 'X-Forwarded-For: %s' % xff('c', i)]
        # cut: about 2 MiB at 8 MiB/s, then curl gives up (exit 28) and closes the connection
        cut = harness.curl(['-o', part, '--limit-rate', '8M', '--max-time', '0.25'] + header +
                           [server.url('/' + BIG)], timeout=30)
        size = os.path.getsize(part) if os.path.exists(part) else 0
        cut_ok += cut.returncode == 28 and 0 < size < 16 * MIB
        harness.curl(['-o', part, '-C', '-'] + header + [server.url('/' + BIG)], timeout=60)
        ok += _same(part, env.content[BIG])
    return {'clients': n, 'ok': ok, 'cut_mid_transfer': cut_ok}


def _same(path, data):
    try:
        with open(path, 'rb') as f:
            return f.read() == data
    except OSError:
        return False


TRAFFIC = {'a': ('200 x curl, 4 KiB whole file', traffic_a),
           'b': ('20 x aria2c -x8 -s8 -k1M, 16 MiB', traffic_b),
           'c': ('20 x curl cut + curl -C - resume, 16 MiB', traffic_c)}


# --------------------------------------------------------------------------
# measurements

def doc_sizes(docs):
    sizes = [len(bson.BSON.encode(d)) for d in docs]
    return {'count': len(sizes), 'avg': statistics.mean(sizes) if sizes else 0, 'max': max(sizes, default=0)}


def statuses(docs):
    out = {}
    for d in docs:
        out[str(d.get('status'))] = out.get(str(d.get('status')), 0) + 1
    return dict(sorted(out.items()))


def write_summary(cmds):
    """Write commands and what they carried, from the double's trace."""
    w = {k: cmds.get(k, {}) for k in ('insert', 'update', 'delete')}
    return {'insert_commands': w['insert'].get('commands', 0), 'inserted_docs': w['insert'].get('documents', 0),
            'update_commands': w['update'].get('commands', 0), 'update_statements': w['update'].get('updates', 0),
            'delete_commands': w['delete'].get('commands', 0),
            'read_commands': sum(cmds.get(k, {}).get('commands', 0) for k in ('find', 'getMore', 'aggregate')),
            'unacknowledged': sum(c.get('unacknowledged', 0) for c in cmds.values()),
            'all_commands': {k: v['commands'] for k, v in sorted(cmds.items())}}


def measure_kind(kind, run, env, double, memcached):
    """One traffic kind into a fresh database: sizes, documents, write commands, memcached ops."""
    db = 'ci_r%d_%s' % (run, kind)
    trace_at, mc_at = double.log_size(), memcached.log_size()
    server = start_node(env, double, db, memcached)
    mc0 = memcached.stats()
    label, fn = TRAFFIC[kind]
    t0 = time.monotonic()
    result = fn(server, env)
    result['traffic_s'] = time.monotonic() - t0
    code, stop_s = stop_node(server)
    mc1 = memcached.stats()
    result.update(server_exit=code, stop_s=stop_s, label=label, database=db)
    requests, downloads = double.docs(db, 'requests'), double.docs(db, 'downloads')
    result['requests'], result['downloads'] = doc_sizes(requests), doc_sizes(downloads)
    result['request_statuses'] = statuses(requests)
    result['download_fields'] = sorted({k for d in downloads for k in d})
    n = result['clients']
    result['docs_per_download'] = (len(requests) + len(downloads)) / n
    result['writes'] = write_summary(double.commands(db, trace_at))
    w = result['writes']
    result['write_ops_per_download'] = (w['inserted_docs'] + w['update_statements']) / n
    result['write_commands_per_download'] = (w['insert_commands'] + w['update_commands']) / n
    result['read_commands_per_download'] = w['read_commands'] / n
    ops = mc_delta(mc0, mc1)
    result['memcached'] = ops
    result['memcached_per_download'] = {k: v / n for k, v in ops.items()}
    result['memcached_per_request'] = {k: v / max(1, len(requests)) for k, v in ops.items()}
    cmds = memcached.commands(mc_at)
    result['memcached_commands'] = cmds
    result['memcached_commands_per_download'] = {k: v / n for k, v in cmds.items()}
    result['memcached_commands_per_request'] = {k: v / max(1, len(requests)) for k, v in cmds.items()}
    result['server_log_warnings'] = [l for l in server.log().splitlines() if ' warn ' in l or ' error ' in l][:20]
    return result


def run_wrk(url, seconds, conns):
    r = harness.run(['wrk', '-t1', '-c%d' % conns, '-d%ds' % seconds, '-s', str(XFF_LUA), url],
                    timeout=seconds + 30)
    m = re.search(r'SMPBENCH (.*)', r.stdout)
    if not m:
        raise BenchError('wrk gave no summary: %s %s' % (r.stdout[-500:], r.stderr[-500:]))
    return {k: int(v) for k, v in (kv.split('=') for kv in m.group(1).split())}


def measure_load(run, env, double, memcached, seconds, conns, catchup_limit, args_stop_s=15):
    """wrk load, then the bounded catch-up; rates, lag, commands, CPU of the double and node."""
    db = 'ci_r%d_load' % run
    trace_at, mc_at = double.log_size(), memcached.log_size()
    server = start_node(env, double, db, memcached)
    pids = node_pids(server)
    mc0 = memcached.stats()
    d0, n0, m0, t0 = double.cpu(), node_cpu(pids), machine_busy(), time.monotonic()
    wrk = run_wrk(server.url('/' + SMALL), seconds, conns)
    t1 = time.monotonic()
    d1, n1, m1 = double.cpu(), node_cpu(pids), machine_busy()
    at_end = double.count(db, 'requests')
    served = wrk['requests']
    deadline = t1 + catchup_limit
    stored = at_end
    while stored < served and time.monotonic() < deadline:
        time.sleep(0.25)
        stored = double.count(db, 'requests')
    t2 = time.monotonic()
    d2 = double.cpu()
    mc1 = memcached.stats()
    downloads_t2 = double.count(db, 'downloads')
    cmds = double.commands(db, trace_at)
    sample = double.docs(db, 'requests', limit=2000)
    dsample = double.docs(db, 'downloads', limit=2000)
    code, stop_s = stop_node(server, timeout=args_stop_s)
    load_s, total_s = t1 - t0, t2 - t0
    sizes, dsizes = doc_sizes(sample), doc_sizes(dsample)
    w = write_summary(cmds)
    res = {
        'database': db, 'wrk': wrk, 'load_s': load_s, 'catchup_s': t2 - t1, 'caught_up': stored >= served,
        'responses_per_s': served / (wrk['duration_us'] / 1e6),
        'stored_at_load_end': at_end, 'behind_at_load_end': served - at_end,
        'stored_at_wait_end': stored, 'behind_at_wait_end': max(0, served - stored),
        'request_docs_per_s': stored / total_s, 'request_docs_per_s_during_load': at_end / load_s,
        'download_docs_at_wait_end': downloads_t2,
        'request_doc_bytes_avg': sizes['avg'], 'download_doc_bytes_avg': dsizes['avg'],
        'writes': w,
        'double_cpu_load_pct': 100 * (d1 - d0) / load_s, 'double_cpu_catchup_pct':
            100 * (d2 - d1) / (t2 - t1) if t2 > t1 else None,
        'double_cpu_pct': 100 * (d2 - d0) / total_s,
        'node_cpu_load_pct': 100 * (n1 - n0) / load_s,
        'machine_busy_load_pct': 100 * (m1[0] - m0[0]) / max(1, m1[1] - m0[1]) * os.cpu_count(),
        'server_exit': code, 'stop_s': stop_s,
    }
    res['request_bytes_per_s'] = res['request_docs_per_s'] * sizes['avg']
    res['insert_commands_per_s'] = w['insert_commands'] / total_s
    res['update_commands_per_s'] = w['update_commands'] / total_s
    res['update_statements_per_s'] = w['update_statements'] / total_s
    res['read_commands_per_s'] = w['read_commands'] / total_s
    ops = mc_delta(mc0, mc1)
    res['memcached'] = ops
    res['memcached_per_request'] = {k: v / max(1, served) for k, v in ops.items()}
    res['memcached_commands'] = memcached.commands(mc_at)
    res['memcached_commands_per_request'] = {k: v / max(1, served) for k, v in res['memcached_commands'].items()}
    return res


def one_run(run, args, env):
    double, memcached = Double(env).start(), Memcached(env.dir).start()
    try:
        out = {'kinds': {}}
        for kind in args.kinds:
            log('run %d: kind %s (%s)' % (run, kind, TRAFFIC[kind][0]))
            out['kinds'][kind] = measure_kind(kind, run, env, double, memcached)
        if not args.no_load:
            log('run %d: wrk load %d s' % (run, args.load_seconds))
            out['load'] = measure_load(run, env, double, memcached, args.load_seconds, args.conns,
                                       args.catchup_limit)
        # each run's databases go once read: the double keeps everything in memory
        for name in double.client.list_database_names():
            if name.startswith('ci_r%d_' % run):
                double.client.drop_database(name)
        return out
    finally:
        memcached.stop()
        double.stop()


# --------------------------------------------------------------------------
# output

def mmm(values, fmt='%.0f'):
    values = [v for v in values if v is not None]
    if not values:
        return 'n/a'
    return ' / '.join(fmt % v for v in (min(values), statistics.median(values), max(values)))


def table(header, rows):
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    line = lambda r: '| ' + ' | '.join(str(c).ljust(w) for c, w in zip(r, widths)) + ' |'
    return '\n'.join([line(header), '|' + '|'.join('-' * (w + 2) for w in widths) + '|'] + [line(r) for r in rows])


def report(runs, args, build):
    print('cluster_inputs.py: ONE smprotocol node (2 workers), %s, real memcached %s' %
          (LABEL, subprocess.run(['memcached', '-V'], capture_output=True, text=True).stdout.strip()))
    print('binary: a copy of %s and its modules, built %s; source %s at %s%s'
          % (build['binary'], build['built'], build['tree'], build['head'],
             ', with these files modified in that work tree: ' + ' '.join(build['modified']) if build['modified']
             else ' (clean work tree)'))
    print('%d run(s); min / median / max over the runs\n' % len(runs))
    kinds = list(runs[0]['kinds'])
    if kinds:
        print('1. Documents per traffic kind (BSON bytes = len(bson.BSON.encode(doc)), as stored by the double)')
        rows = []
        for k in kinds:
            rs = [r['kinds'][k] for r in runs]
            rows.append([k, rs[0]['label'], mmm([r['ok'] for r in rs]) + ' of %d' % rs[0]['clients'],
                         mmm([r['requests']['count'] for r in rs]), mmm([r['requests']['avg'] for r in rs]),
                         mmm([r['requests']['max'] for r in rs]),
                         mmm([r['downloads']['count'] for r in rs]), mmm([r['downloads']['avg'] for r in rs]),
                         mmm([r['downloads']['max'] for r in rs]),
                         mmm([r['docs_per_download'] for r in rs], '%.2f'),
                         mmm([r['write_ops_per_download'] for r in rs], '%.2f'),
                         mmm([r['write_commands_per_download'] for r in rs], '%.3f'),
                         mmm([r['read_commands_per_download'] for r in rs], '%.3f'),
                         '%d of %d' % (sum(r['server_exit'] == 0 for r in rs), len(rs))])
        print(table(['kind', 'traffic', 'clients ok', 'request docs', 'req avg B', 'req max B', 'download docs',
                     'dl avg B', 'dl max B', 'docs/download', 'write ops/download', 'write cmds/download', 'read cmds/download', 'clean stop'], rows))
        print('  docs/download = (request docs + download docs) / clients; write ops = inserted documents + update\n'
              '  statements (upserts) the node sent, counted in the double\'s --trace log; write cmds = insert +\n'
              '  update commands (one command carries up to batch_size documents or statements); read cmds = find +\n'
              '  getMore + aggregate commands on that database (the store\'s own; the script reads only after the stop).\n'
              '  clean stop = the node exited 0 on SIGTERM within its bound (it stores every open download first).')
        for k in kinds:
            r = runs[-1]['kinds'][k]
            print('  %s (last run): request statuses %s; writes %s; download fields %s'
                  % (k, r['request_statuses'], {x: y for x, y in r['writes'].items() if x != 'all_commands'},
                     r['download_fields']))
            if k == 'c':
                print('  c: cut mid-transfer (curl exit 28) %s of %d' % (mmm([x['kinds'][k]['cut_mid_transfer']
                                                                            for x in runs]), r['clients']))
        print()
        print('3. memcached per download [per request document]: commands the node sent (memcached -vv log,\n'
              '   by verb), then memcached\'s own `stats` deltas (node start to graceful stop)')
        rows = []
        for source, per_dl, per_rq in (('cmd', 'memcached_commands_per_download', 'memcached_commands_per_request'),
                                       ('stats', 'memcached_per_download', 'memcached_per_request')):
            names = sorted({n for r in runs for k in kinds for n in r['kinds'][k][per_dl]})
            for n in names:
                row = ['%s %s' % (source, n)]
                for k in kinds:
                    rs = [r['kinds'][k] for r in runs]
                    row.append('%s [%s]' % (mmm([r[per_dl].get(n, 0) for r in rs], '%.2f'),
                                            mmm([r[per_rq].get(n, 0) for r in rs], '%.2f')))
                rows.append(row)
        print(table(['counter'] + ['%s per download [per request]' % k for k in kinds], rows))
        print('  stats miss the counter creations: an `ma` that creates a missing key (N flag) moves no\n'
              '  hit/miss counter (only total_items); the cmd rows count every command received.')
        print()
    if 'load' in runs[0]:
        ls = [r['load'] for r in runs]
        print('2. Sustained writes: wrk -t1 -c%d -d%ds on the 4 KiB file, each request from its own '
              'X-Forwarded-For,\n   then up to %d s for the store to hold every request wrk counted.'
              % (args.conns, args.load_seconds, args.catchup_limit))
        print('   THE RATES BELOW ARE BOUNDED BY THE PYTHON TEST DOUBLE, NOT BY MongoDB (see "double CPU").')
        rows = [
            ['responses served (wrk, total)', mmm([l['wrk']['requests'] for l in ls])],
            ['responses/s served (wrk)', mmm([l['responses_per_s'] for l in ls])],
            ['non-2xx responses (wrk)', mmm([l['wrk']['status'] for l in ls])],
            ['socket errors (wrk)', mmm([l['wrk']['connect'] + l['wrk']['read'] + l['wrk']['write'] +
                                         l['wrk']['timeout'] for l in ls])],
            ['request docs stored/s, load + catch-up', mmm([l['request_docs_per_s'] for l in ls])],
            ['request docs stored/s during the load', mmm([l['request_docs_per_s_during_load'] for l in ls])],
            ['docs missing when wrk stopped', mmm([l['behind_at_load_end'] for l in ls])],
            ['catch-up s (limit %d)' % args.catchup_limit, mmm([l['catchup_s'] for l in ls], '%.1f')],
            ['all stored within the limit', '%d of %d runs' % (sum(l['caught_up'] for l in ls), len(ls))],
            ['docs still missing at the limit', mmm([l['behind_at_wait_end'] for l in ls])],
            ['download docs at the end of the wait', mmm([l['download_docs_at_wait_end'] for l in ls])],
            ['request doc avg bytes (2000 sampled)', mmm([l['request_doc_bytes_avg'] for l in ls])],
            ['download doc avg bytes (2000 sampled)', mmm([l['download_doc_bytes_avg'] for l in ls])],
            ['request bytes/s written (docs/s x avg)', mmm([l['request_bytes_per_s'] for l in ls])],
            ['insert commands/s (counted, trace)', mmm([l['insert_commands_per_s'] for l in ls], '%.2f')],
            ['update commands/s (counted, trace)', mmm([l['update_commands_per_s'] for l in ls], '%.2f')],
            ['update statements/s (upserts)', mmm([l['update_statements_per_s'] for l in ls])],
            ['read commands/s (find, getMore, aggregate)', mmm([l['read_commands_per_s'] for l in ls], '%.2f')],
            ['clean stop after the wait (bound 15 s, then killed)', '%d of %d runs' % (sum(l['server_exit'] == 0 for l in ls),
                                                                            len(ls))],
            ['stop took s', mmm([l['stop_s'] for l in ls], '%.1f')],
            ['double CPU % of a core, load', mmm([l['double_cpu_load_pct'] for l in ls])],
            ['double CPU % of a core, catch-up', mmm([l['double_cpu_catchup_pct'] for l in ls])],
            ['node CPU % (all processes), load', mmm([l['node_cpu_load_pct'] for l in ls])],
            ['machine busy %% (of 1 core x %d), load' % os.cpu_count(), mmm([l['machine_busy_load_pct'] for l in ls])],
        ]
        for n in sorted({n for l in ls for n in l['memcached_commands']}):
            rows.append(['memcached cmd %s per request' % n,
                         mmm([l['memcached_commands_per_request'].get(n, 0) for l in ls], '%.3f')])
        for n in sorted({n for l in ls for n in l['memcached']}):
            rows.append(['memcached stats %s per request' % n, mmm([l['memcached_per_request'].get(n, 0) for l in ls],
                                                             '%.3f')])
        print(table(['measure', 'value'], rows))
        print('   (rates per second of the whole interval, load start to all stored or the limit; commands\n'
              '    counted from the double\'s --trace log, not estimated. Each request is a download of its own,\n'
              '    so compare the download docs with the responses served: the store lags further on downloads.)')


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--runs', type=int, default=3)
    ap.add_argument('--kinds', default='a,b,c', help='traffic kinds of part 1 (a,b,c; empty for none)')
    ap.add_argument('--no-load', action='store_true', help='skip the wrk load (part 2)')
    ap.add_argument('--load-seconds', type=int, default=10)
    ap.add_argument('--conns', type=int, default=20)
    ap.add_argument('--catchup-limit', type=int, default=60)
    ap.add_argument('--json', help='write every measurement as JSON to FILE (- for stdout, then no table)')
    ap.add_argument('--report', metavar='FILE', help='print the tables of a --json FILE written before, measure nothing')
    args = ap.parse_args()
    if args.report:
        data = json.loads(Path(args.report).read_text())
        report(data['runs'], argparse.Namespace(**data['args']), data['build'])
        return 0
    args.kinds = [k for k in args.kinds.split(',') if k]
    for tool in ('memcached', 'curl', 'aria2c', 'wrk'):
        if not shutil.which(tool):
            sys.exit('cluster_inputs.py needs %s (Debian package of that name)' % tool)
    signal.signal(signal.SIGTERM, harness._on_sigterm)
    signal.signal(signal.SIGHUP, harness._on_sigterm)
    global MODULE_DIR
    env = harness.TestEnv({SMALL: 4 * KIB, BIG: 16 * MIB}, prefix='smp-cluster-inputs-')
    runs = []
    try:
        MODULE_DIR, build = snapshot_build(env.dir)
        log('measuring a copy of %s (built %s; %s at %s, modified: %s)'
            % (build['binary'], build['built'], build['tree'], build['head'], ' '.join(build['modified']) or 'none'))
        for run in range(1, args.runs + 1):
            runs.append(one_run(run, args, env))
    finally:
        env.cleanup()
    if args.json:
        data = json.dumps({'label': LABEL, 'build': build, 'runs': runs, 'args': vars(args)}, indent=1,
                          default=str)
        if args.json == '-':
            print(data)
            return 0
        Path(args.json).write_text(data)
    report(runs, args, build)
    return 0


if __name__ == '__main__':
    try:
        sys.exit(main())
    except BenchError as e:
        sys.exit('cluster_inputs.py: %s' % e)
