#!/usr/bin/python3
"""SMProtocol store benchmark: download tracking into the mongodb plugin.

    /usr/bin/python3 tests/bench/store_bench.py [--binary build/core/smprotocol]
                                                [--runs 3] [--duration 5] [--quick]
                                                [--batch-sizes 100,500,5000] [--json out.json]

The MongoDB here is the TEST DOUBLE tests/mongodb/mongo_double.py (Python, in memory,
one process), not MongoDB: figure 1 measures the plugin and the double together, and
the double (one Python thread at a time) is expected to be the limit. It says nothing
about a real MongoDB's rate.

The double finds a document by _id or through a unique index (the merge reads a batch's
downloads by the leading field of the compound unique index {key, seq}), and answers
`count` without a query from the collection's size, as MongoDB does from its metadata
(the poll below uses it).

Pinning: smprotocol (master, worker, collector and its storage threads) on CPU 0;
wrk on CPU 1, and the double on CPU 1 too (this machine has 2 CPUs): during a run
with tracking into mongodb the double competes with wrk for CPU 1.

Figure 1: request records stored per second through the plugin into the double, for
  each batch_size: a fresh double and server per run, `wrk -t1 -c50 -dD` on a 4 KiB file,
  then the double is polled (the `count` command on `requests`) until it holds a document
  for every response wrk counted; records/s = stored / (D + catch-up time).
Figure 2: wrk req/s with tracking off, into sqlite, into mongodb (batch_size 500), a
  fresh server per run, the three interleaved (run 1: off, sqlite, mongodb; run 2: ...).

Needs wrk, taskset, and /usr/bin/python3 with pymongo (Debian python3-pymongo).
"""

import argparse
import json
import os
import re
import resource
import select
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

try:
    import pymongo
    import pymongo.errors
except ImportError as e:
    sys.exit('store_bench.py needs pymongo (Debian python3-pymongo): run it with /usr/bin/python3 (%s)' % e)

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
LUA = HERE / 'lua'
DOUBLE_SCRIPT = REPO / 'tests' / 'mongodb' / 'mongo_double.py'
PYTHON = '/usr/bin/python3'
SERVER_CPU = '0'
CLIENT_CPU = '1'  # wrk, and the double
CLK_TCK = os.sysconf('SC_CLK_TCK')
WRK_RE = re.compile(r'SMPBENCH (.*)')


# Shared with bench.py: the error type, logging and the /proc helpers.
sys.path.insert(0, str(HERE))
from bench import BenchError, cpu_ticks, free_port, log, pin_all, proc_tree  # noqa: E402


def stop_process(proc, pids, timeout=60.0):
    """SIGTERM, wait, then SIGKILL to its group and every pid seen in its tree."""
    if proc is None:
        return None
    if proc.poll() is None:
        try:
            os.kill(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
    code = proc.poll()
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    for p in pids:
        try:
            os.kill(p, signal.SIGKILL)
        except ProcessLookupError:
            pass
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass
    return code


# --------------------------------------------------------------------------
# the double and the server

class Double:
    """mongo_double.py, in memory (no --data-dir: no journal), pinned to CPU 1."""

    def __init__(self, tmp, tag):
        self.tmp, self.tag = tmp, tag
        self.proc, self.port, self.client = None, None, None

    def start(self, timeout=15.0):
        self.err = open(self.tmp / ('double-%s.log' % self.tag), 'wb')
        cmd = [PYTHON, str(DOUBLE_SCRIPT), '--port', '0']
        self.proc = subprocess.Popen(['taskset', '-c', CLIENT_CPU] + cmd,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self.err,
                                     start_new_session=True)
        deadline, line = time.monotonic() + timeout, b''
        while not line.endswith(b'\n'):
            left = deadline - time.monotonic()
            if left <= 0 or self.proc.poll() is not None:
                raise BenchError('mongo_double did not start: %r' % line)
            if select.select([self.proc.stdout], [], [], left)[0]:
                line += os.read(self.proc.stdout.fileno(), 4096)
        m = re.match(r'mongo_double listening on 127\.0\.0\.1:(\d+)', line.decode())
        if not m:
            raise BenchError('mongo_double said %r' % line)
        self.port = int(m.group(1))
        pin_all(proc_tree(self.proc.pid), CLIENT_CPU)
        self.client = pymongo.MongoClient(self.uri(), serverSelectionTimeoutMS=5000, socketTimeoutMS=120000)
        return self

    def uri(self):
        return ('mongodb://127.0.0.1:%d/?appname=smprotocol&serverSelectionTimeoutMS=2000&connectTimeoutMS=1000'
                % self.port)

    def count(self, database, collection):
        try:
            return int(self.client[database].command('count', collection)['n'])
        except pymongo.errors.PyMongoError:
            return 0

    def pids(self):
        return proc_tree(self.proc.pid) if self.proc else []

    def stop(self):
        if self.client:
            self.client.close()
            self.client = None
        if self.proc:
            stop_process(self.proc, self.pids(), timeout=10)
            self.proc.stdout.close()
            self.proc = None
            self.err.close()


SMP_CONF = """\
# generated by tests/bench/store_bench.py
workers: 1
max_connections: 20000
backlog: 65535
state_dir: {state}
log: {{ level: warn }}
tracking: {{ enabled: {tracking} }}
protocols:
  - module: http_download
    host: 127.0.0.1
    port: {port}
    root: {root}
plugins:{plugins}
"""


class Smp:
    """One smprotocol, pinned to CPU 0. store: None (tracking off), 'sqlite', or
    'mongodb' (with a double and a batch_size)."""

    def __init__(self, binary, tmp, files, tag, store=None, double=None, batch_size=500):
        self.binary, self.tmp, self.files, self.tag = binary, tmp, files, tag
        self.store, self.double, self.batch_size = store, double, batch_size
        self.proc, self.port = None, None
        self.database = 'bench_%s' % re.sub(r'\W', '_', tag)
        self.sqlite_path = tmp / ('%s.db' % tag)

    def config(self):
        if self.store is None:
            plugins = ' []'
        elif self.store == 'sqlite':
            plugins = '\n  - module: sqlite\n    path: %s' % self.sqlite_path
        else:
            plugins = ('\n  - module: mongodb\n    uri: "%s"\n    database: %s\n    batch_size: %d\n'
                       '    flush_interval: 1s\n    write_concern: majority'
                       % (self.double.uri(), self.database, self.batch_size))
        return SMP_CONF.format(state=self.tmp / ('%s-state' % self.tag), tracking='true' if self.store else 'false',
                               port=self.port, root=self.files, plugins=plugins)

    def start(self, timeout=20.0):
        self.port = free_port()
        cfg = self.tmp / ('%s.yaml' % self.tag)
        cfg.write_text(self.config())
        self.out_path = self.tmp / ('%s.out' % self.tag)
        self.out = open(self.out_path, 'wb')
        self.proc = subprocess.Popen(['taskset', '-c', SERVER_CPU, str(self.binary), '--config', str(cfg)],
                                     stdin=subprocess.DEVNULL, stdout=self.out, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise BenchError('smprotocol (%s) exited with %s at start:\n%s'
                                 % (self.tag, self.proc.returncode, self.output()))
            try:
                with socket.create_connection(('127.0.0.1', self.port), timeout=1):
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise BenchError('smprotocol (%s) did not accept within %.0f s:\n%s'
                                 % (self.tag, timeout, self.output()))
            time.sleep(0.05)
        time.sleep(0.5)
        pin_all(self.pids(), SERVER_CPU)
        return self

    def url(self, path):
        return 'http://127.0.0.1:%d%s' % (self.port, path)

    def pids(self):
        return proc_tree(self.proc.pid) if self.proc else []

    def output(self, n=3000):
        try:
            if self.out and not self.out.closed:
                self.out.flush()
            return self.out_path.read_bytes()[-n:].decode('utf-8', 'replace')
        except (OSError, AttributeError):
            return ''

    def stored_requests(self):
        """Request records the store holds (0 before the first batch)."""
        if self.store == 'mongodb':
            return self.double.count(self.database, 'requests')
        if self.store == 'sqlite':
            try:
                db = sqlite3.connect('file:%s?mode=ro' % self.sqlite_path, uri=True, timeout=10)
            except sqlite3.OperationalError:
                return 0
            try:
                return db.execute('SELECT coalesce(sum(count), 0) FROM request_blocks').fetchone()[0]
            except sqlite3.OperationalError:
                return 0
            finally:
                db.close()
        return 0

    def stored_downloads(self):
        if self.store == 'mongodb':
            return self.double.count(self.database, 'downloads')
        return None

    def stop(self):
        if self.proc:
            code = stop_process(self.proc, self.pids())
            self.proc = None
            self.out.close()
            return code
        return None


# --------------------------------------------------------------------------
# measuring

def check(srv, data):
    with urllib.request.urlopen(srv.url('/4k.bin'), timeout=10) as r:
        body = r.read()
    if body != data:
        raise BenchError('%s: GET /4k.bin returned %d bytes, not the file' % (srv.tag, len(body)))


def wrk(srv, duration, conns=50, others=()):
    """wrk -t1 -cN -dD on /4k.bin, pinned to CPU 1; others: more processes to measure CPU of."""
    cmd = ['taskset', '-c', CLIENT_CPU, 'wrk', '-t1', '-c%d' % conns, '-d%ds' % duration,
           '-s', str(LUA / 'report.lua'), srv.url('/4k.bin')]
    pids = srv.pids()
    other_pids = [p for o in others for p in o.pids()]
    c0, o0 = cpu_ticks(pids), cpu_ticks(other_pids)
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    p = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=duration + 60)
    wall = time.monotonic() - t0
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    c1, o1 = cpu_ticks(pids), cpu_ticks(other_pids)
    m = WRK_RE.search(p.stdout)
    if p.returncode != 0 or not m:
        raise BenchError('wrk failed (rc %d) against %s:\n%s\n%s' % (p.returncode, srv.tag, p.stdout, p.stderr))
    kv = {k: int(v) for k, v in (x.split('=') for x in m.group(1).split())}
    dur = kv['duration_us'] / 1e6
    errors = {k: kv[k] for k in ('connect', 'read', 'write', 'status', 'timeout') if kv[k]}
    return {
        'requests': kv['requests'], 'duration_s': dur, 'rps': kv['requests'] / dur if dur else 0.0,
        'errors': errors, 'p99_us': kv['p99_us'],
        'server_cpu_pct': 100.0 * (c1 - c0) / CLK_TCK / wall,
        'double_cpu_pct': 100.0 * (o1 - o0) / CLK_TCK / wall if other_pids else None,
        'wrk_cpu_pct': 100.0 * ((ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)) / wall,
        'server_alive': srv.proc.poll() is None,
    }


def wait_stored(srv, target, limit_s, interval, others=()):
    """Polls until the store holds `target` request records; (stored, seconds waited, caught up,
    CPU % of `others` meanwhile)."""
    pids = [p for o in others for p in o.pids()]
    t0, c0 = time.monotonic(), cpu_ticks(pids)
    stored = srv.stored_requests()
    while stored < target and time.monotonic() - t0 < limit_s:
        time.sleep(interval)
        stored = srv.stored_requests()
    waited = time.monotonic() - t0
    cpu = 100.0 * (cpu_ticks(pids) - c0) / CLK_TCK / waited if pids and waited > 0 else None
    return stored, waited, stored >= target, cpu


def settle(srv, sent, limit_s, interval):
    """Before a measured run: waits until the store holds the `sent` request records of the
    check and the warm-up, and (mongodb) its downloads count has not moved for 1 s, the
    plugin upserting a batch's downloads after inserting its requests. Returns the
    request records stored."""
    stored, _, ok, _ = wait_stored(srv, sent, limit_s, interval)
    if not ok:
        raise BenchError('%s: the store held %d of %d request records of the check and warm-up after %.0f s'
                         % (srv.tag, stored, sent, limit_s))
    if srv.store == 'mongodb':
        last, since, t0 = srv.stored_downloads(), time.monotonic(), time.monotonic()
        while time.monotonic() - t0 < limit_s and time.monotonic() - since < 1.0:
            time.sleep(0.25)
            now = srv.stored_downloads()
            if now != last:
                last, since = now, time.monotonic()
    return srv.stored_requests()


def measured_run(srv, args, data, others=(), warmup=0):
    """Check, optional warm-up, the store settled, wrk, catch-up."""
    interval = 0.5 if srv.store == 'mongodb' else 0.25
    check(srv, data)
    sent = 1
    if warmup:
        sent += wrk(srv, warmup, others=others)['requests']
    before = settle(srv, sent, args.catchup_limit, interval) if srv.store else 0
    res = wrk(srv, args.duration, others=others)
    if srv.store:
        stored, lag, ok, cpu = wait_stored(srv, before + res['requests'], args.catchup_limit, interval, others)
        res.update(stored=stored - before, catchup_s=lag, caught_up=ok, double_cpu_catchup_pct=cpu,
                   records_per_s=(stored - before) / (res['duration_s'] + lag) if res['duration_s'] else 0.0)
    return res


def describe(res):
    s = '%8.0f req/s  srv cpu %3.0f%%  wrk cpu %3.0f%%' % (res['rps'], res['server_cpu_pct'], res['wrk_cpu_pct'])
    if res.get('double_cpu_pct') is not None:
        s += '  double cpu %3.0f%%' % res['double_cpu_pct']
    s += '  p99 %.2f ms' % (res['p99_us'] / 1000)
    if res['errors']:
        s += '  errors: ' + ', '.join('%s=%d' % kv for kv in sorted(res['errors'].items()))
    if 'stored' in res:
        s += ('\n         store: %d request records for %d responses, %s %.1f s after the load; %.0f records/s'
              % (res['stored'], res['requests'], 'complete' if res['caught_up'] else 'INCOMPLETE',
                 res['catchup_s'], res['records_per_s']))
        if res.get('double_cpu_catchup_pct') is not None:
            s += '; double cpu %.0f%% meanwhile' % res['double_cpu_catchup_pct']
    if not res['server_alive']:
        s += '  [SERVER DIED]'
    return s


def mmm(values, fmt='%.0f'):
    if not values:
        return '-'
    return ' / '.join(fmt % v for v in (min(values), statistics.median(values), max(values)))


def table(header, rows):
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    lines = ['  '.join(str(c).ljust(w) for c, w in zip(header, widths)).rstrip(),
             '-' * (sum(widths) + 2 * (len(widths) - 1))]
    lines += ['  '.join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    return '\n'.join(lines)


# --------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--binary', default=str(REPO / 'build/core/smprotocol'),
                    help='smprotocol binary (default: %(default)s)')
    ap.add_argument('--runs', type=int, default=3, help='runs per cell (default 3)')
    ap.add_argument('--duration', type=int, default=5, help='seconds per wrk run (default 5)')
    ap.add_argument('--quick', action='store_true', help='smoke test: 1 run of 3 s per cell')
    ap.add_argument('--batch-sizes', default='100,500,5000', help='figure 1 batch sizes (default %(default)s)')
    ap.add_argument('--catchup-limit', type=float, default=120.0,
                    help='longest wait for the store to catch up after a run, s (default %(default)s)')
    ap.add_argument('--figures', default='1,2', help='which figures (default %(default)s)')
    ap.add_argument('--json', help='also write every measurement as JSON to this file')
    ap.add_argument('--keep-tmp', action='store_true', help='keep the temp dir (configs, logs)')
    args = ap.parse_args()
    if args.quick:
        args.runs, args.duration = 1, 3
    binary = Path(args.binary).resolve()
    plugin = binary.parent.parent / 'plugins' / 'mongodb' / 'mongodb.so'
    for need, what in ((binary, 'the smprotocol binary'), (plugin, 'the mongodb plugin'),
                       (DOUBLE_SCRIPT, 'the test double')):
        if not need.exists():
            raise BenchError('%s is missing: %s' % (what, need))
    for tool in ('wrk', 'taskset'):
        if not shutil.which(tool):
            raise BenchError('%s is not installed' % tool)
    if os.cpu_count() < 2:
        raise BenchError('needs 2 CPUs (server on CPU 0, wrk and the double on CPU 1)')
    batch_sizes = [int(x) for x in args.batch_sizes.split(',') if x]
    figures = {int(x) for x in args.figures.split(',') if x}

    tmp = Path(tempfile.mkdtemp(prefix='smp-store-bench-'))
    files = tmp / 'files'
    files.mkdir()
    data = os.urandom(4096)
    (files / '4k.bin').write_bytes(data)
    live = []
    results = {'fig1': [], 'fig2': []}

    def run_instance(tag, store, batch_size=500, warmup=0):
        double = None
        srv = None
        try:
            if store == 'mongodb':
                double = Double(tmp, tag)
                live.append(double)
                double.start()
            srv = Smp(binary, tmp, files, tag, store=store, double=double, batch_size=batch_size)
            live.append(srv)
            srv.start()
            res = measured_run(srv, args, data, others=[double] if double else (), warmup=warmup)
            if store == 'mongodb':
                res['downloads_stored'] = srv.stored_downloads()
            code = srv.stop()
            res['exit_code'] = code
            if code != 0:
                res['server_output'] = srv.output()
            return res
        finally:
            for p in (srv, double):
                if p is not None:
                    p.stop()
                    if p in live:
                        live.remove(p)

    try:
        log('SMProtocol store benchmark: %d run(s), wrk -t1 -c50 -d%ds on a 4 KiB file; temp dir %s'
            % (args.runs, args.duration, tmp))
        log('pinning: smprotocol on CPU %s; wrk AND the MongoDB test double on CPU %s (2 CPUs here: the double '
            'competes with wrk)' % (SERVER_CPU, CLIENT_CPU))
        log('MongoDB here is tests/mongodb/mongo_double.py, an in-memory Python TEST DOUBLE, not MongoDB.')

        if 1 in figures:
            log('\nfigure 1: request records stored per second into the double, by batch_size '
                '(fresh double and server per run)')
            for run in range(1, args.runs + 1):
                for bs in batch_sizes:
                    res = run_instance('f1-bs%d-r%d' % (bs, run), 'mongodb', batch_size=bs)
                    res.update(batch_size=bs, run=run)
                    results['fig1'].append(res)
                    log('  run %d batch_size %-5d %s' % (run, bs, describe(res)))
                    if res['exit_code'] != 0:
                        log('         server exit code %s; output:\n%s' % (res['exit_code'], res['server_output']))

        if 2 in figures:
            log('\nfigure 2: wrk req/s by tracking store (fresh server per run, 1 s warm-up, interleaved)')
            variants = [('off', None), ('sqlite', 'sqlite'), ('mongodb', 'mongodb')]
            for run in range(1, args.runs + 1):
                for name, store in variants:
                    res = run_instance('f2-%s-r%d' % (name, run), store, batch_size=500, warmup=1)
                    res.update(variant=name, run=run)
                    results['fig2'].append(res)
                    log('  run %d %-8s %s' % (run, name, describe(res)))
                    if res['exit_code'] != 0:
                        log('         server exit code %s; output:\n%s' % (res['exit_code'], res['server_output']))

        # ---- final table
        warnings = []
        for r in results['fig1'] + results['fig2']:
            where = 'fig %s %s run %d' % ('1' if 'batch_size' in r else '2',
                                          'batch_size %d' % r['batch_size'] if 'batch_size' in r else r['variant'],
                                          r['run'])
            if r['errors']:
                warnings.append('%s: wrk errors %s' % (where, r['errors']))
            if 'caught_up' in r and not r['caught_up']:
                warnings.append('%s: the store held only %d of %d request records after %.0f s'
                                % (where, r['stored'], r['requests'], r['catchup_s']))
            if r['exit_code'] != 0:
                warnings.append('%s: server exit code %s' % (where, r['exit_code']))
            if r['wrk_cpu_pct'] >= 95:
                warnings.append('%s: wrk used %.0f%% of CPU %s (client-bound)' % (where, r['wrk_cpu_pct'], CLIENT_CPU))

        if results['fig1']:
            rows = []
            for bs in batch_sizes:
                rs = [r for r in results['fig1'] if r['batch_size'] == bs]
                rows.append([bs, mmm([r['records_per_s'] for r in rs]), mmm([r['catchup_s'] for r in rs], '%.1f'),
                             mmm([r['rps'] for r in rs]), mmm([r['double_cpu_pct'] for r in rs]),
                             mmm([r['double_cpu_catchup_pct'] for r in rs]),
                             '%d/%d' % (sum(r['caught_up'] for r in rs), len(rs))])
            log('\nFigure 1: request records stored per second (stored / (load + catch-up)), through the mongodb '
                'plugin into mongo_double (not MongoDB); min / median / max over %d run(s) of %d s'
                % (args.runs, args.duration))
            log(table(['batch_size', 'records/s', 'catch-up s', 'wrk req/s', 'double cpu % (load)',
                       'double cpu % (catch-up)', 'complete'], rows))
            log('A double near 100%% of CPU %s during the catch-up is the limit, not the plugin. Each request also '
                'made a download upsert, not counted in records/s.' % CLIENT_CPU)
        if results['fig2']:
            med = {}
            rows = []
            for name in ('off', 'sqlite', 'mongodb'):
                rs = [r for r in results['fig2'] if r['variant'] == name]
                if not rs:
                    continue
                med[name] = statistics.median(r['rps'] for r in rs)
                rows.append([{'off': 'tracking off', 'sqlite': 'tracking -> sqlite',
                              'mongodb': 'tracking -> mongodb (double), batch_size 500'}[name],
                             mmm([r['rps'] for r in rs]), mmm([r['server_cpu_pct'] for r in rs]),
                             mmm([r['wrk_cpu_pct'] for r in rs]),
                             mmm([r['records_per_s'] for r in rs]) if name != 'off' else '-',
                             mmm([r['catchup_s'] for r in rs], '%.1f') if name != 'off' else '-'])
            for row, name in zip(rows, [n for n in ('off', 'sqlite', 'mongodb') if n in med]):
                row.append('%.2f' % (med[name] / med['off']) if med.get('off') else '-')
            log('\nFigure 2: 4 KiB keep-alive req/s by store; min / median / max over %d run(s) of %d s'
                % (args.runs, args.duration))
            log(table(['tracking', 'req/s', 'srv cpu %', 'wrk cpu %', 'records/s stored', 'catch-up s',
                       'median / off'], rows))
            if 'sqlite' in med and 'mongodb' in med:
                log('mongodb / sqlite (medians): %.2f' % (med['mongodb'] / med['sqlite']))
            log('In the mongodb rows the double runs on CPU %s beside wrk: a wrk number there is also what the '
                'double left of that CPU.' % CLIENT_CPU)
        if warnings:
            log('\nwarnings (%d):' % len(warnings))
            for w in warnings:
                log('  - ' + w)
        if args.json:
            Path(args.json).write_text(json.dumps({'args': vars(args), 'results': results, 'warnings': warnings},
                                                  indent=2, default=str) + '\n')
            log('\nJSON written to %s' % args.json)
        return 0
    finally:
        for p in reversed(live):
            p.stop()
        if args.keep_tmp:
            log('temp dir kept: %s' % tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def _on_sigterm(signum, frame):
    raise SystemExit(143)


if __name__ == '__main__':
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        sys.exit(main())
    except BenchError as e:
        print('store_bench.py: error: %s' % e, file=sys.stderr, flush=True)
        sys.exit(2)
    except KeyboardInterrupt:
        print('store_bench.py: interrupted', file=sys.stderr, flush=True)
        sys.exit(130)
