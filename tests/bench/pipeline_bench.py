#!/usr/bin/python3
"""SMProtocol tracking pipeline benchmark: record logs -> collector -> store.

    /usr/bin/python3 tests/bench/pipeline_bench.py [--binary build/tests/bench/pipeline_bench]
                                                   [--records 2000000] [--workers 2] [--runs 3]
                                                   [--stores sqlite,null,none] [--collectors 1]
                                                   [--quick] [--perf] [--json out.json]

Runs the program tests/bench/pipeline_bench (built with the tree, from pipeline_bench.cpp)
`--runs` times per store mode and number of collectors, interleaved (run 1: sqlite, null,
none; run 2: ...; with --collectors 1,2, run 1: sqlite x 1, sqlite x 2, none x 1, ...), and
prints min / median / max of each figure. Each run appends N synthetic close records to W
real record logs as fast as it can (the writer, pinned to CPU 1), while the real stats
collector, forked and started as the master starts it, reads, merges and hands them to its
store (the collector and its storage thread pinned to CPU 0). With N collectors
(tracking.collectors), W logs per shard and collector k pinned to CPU k modulo the CPUs: on 2
CPUs the writer shares CPU 1 with collector 2. README.md here says what each figure means.

Store modes: `sqlite` (the server's default store), `null` (a store that keeps nothing:
the collector's whole work for a store, without a database), `none` (no store: the
collector reads, merges, journals and checkpoints, and builds no batch). `null` takes one
collector only.

With --perf, one more run per mode under `perf record -p <collector>`, and the top
entries of `perf report` for the collector's loop and for its storage thread.

Needs only the Python standard library; --perf needs perf (Debian linux-perf).
"""

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
STORES = ('sqlite', 'null', 'none')
TARGET_RATE = 300_000  # records/s into sqlite on one core: what the project must reach
NOISY_SHARE = 0.10  # a run where other processes took this share of the collectors' CPUs is noisy
RESULT_RE = re.compile(r'^PIPELINE_BENCH (\{.*\})$')
# The collector's log lines, without their time stamps and counts, to say each once.
LOG_LINE_RE = re.compile(r'^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+ ')

sys.path.insert(0, str(HERE))
from bench import BenchError, cpu_busy_ticks, log  # noqa: E402


def mmm(values, fmt='%.0f'):
    values = [v for v in values if v is not None]
    if not values:
        return '-'
    return ' / '.join(fmt % v for v in (min(values), statistics.median(values), max(values)))


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def table(header, rows):
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    lines = ['  '.join(str(c).ljust(w) for c, w in zip(header, widths)).rstrip(),
             '-' * (sum(widths) + 2 * (len(widths) - 1))]
    lines += ['  '.join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    return '\n'.join(lines)


def run_program(args, store, collectors, perf_data=None):
    """One run of the program; its result (the PIPELINE_BENCH line) and its other output."""
    cmd = [args.binary, '--records', str(args.records), '--workers', str(args.workers), '--store', store,
           '--collectors', str(collectors), '--timeout', str(args.timeout)]
    if args.log_size:
        cmd += ['--log-size', args.log_size]
    if args.keep_tmp:
        cmd.append('--keep-tmp')
    if perf_data:
        cmd += ['--perf-data', str(perf_data), '--perf-args', args.perf_args]
    # The program bounds its own waits (--timeout, then 15 s for the logs and
    # 120 s for the stop); this one only catches a program that hangs anyway.
    limit = args.timeout + 600
    try:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=limit)
    except subprocess.TimeoutExpired as e:
        raise BenchError('%s did not finish in %d s' % (' '.join(cmd), limit)) from e
    result = None
    other = []
    for line in proc.stdout.splitlines():
        match = RESULT_RE.match(line)
        if match:
            result = json.loads(match.group(1))
        else:
            other.append(line)
    if result is None:
        raise BenchError('%s (exit %d) printed no result:\n%s' % (' '.join(cmd), proc.returncode, proc.stdout))
    result['exit_code'] = proc.returncode
    result['output'] = other
    return result


def noisy(r):
    """Other processes took more than NOISY_SHARE of the collectors' CPUs during the run."""
    return bool(r['stored_s'] and
                r['collector_cpus_others_s'] > NOISY_SHARE * r['stored_s'] * len(r['collector_cpus']))


def cpu_names(r):
    return ','.join('%d' % cpu for cpu in r['collector_cpus'])


def describe(r):
    text = ('%7.0f rec/s stored (read %7.0f/s), collector %5.2f us/rec (loop %.2f + storage %.2f), '
            'writer %7.0f/s' % (r['rate'] or 0, r['read_rate'] or 0, r['cpu_us_per_record'] or 0,
                                r['loop_us_per_record'] or 0, r['storage_us_per_record'] or 0, r['append_rate']))
    if r['refused_tries']:
        text += ', %d tries refused (%.1f s waiting)' % (r['refused_tries'], r['waited_s'])
    if len(r['collector_cpu_each_s']) > 1:
        text += ', by collector %s s' % ' + '.join('%.2f' % s for s in r['collector_cpu_each_s'])
    if noisy(r):
        text += ' [noisy: others took %.1f s of CPU %s]' % (r['collector_cpus_others_s'], cpu_names(r))
    if r['error']:
        text += ' [ERROR: %s]' % r['error']
    return text


def collector_lines(results):
    """The collector's log lines, each message once (time stamps and numbers aside)."""
    seen = {}
    for r in results:
        for line in r['output']:
            if not LOG_LINE_RE.match(line):
                continue
            key = re.sub(r'\d+', 'N', LOG_LINE_RE.sub('', line))
            seen.setdefault(key, [line, 0])[1] += 1
    return [(line, count) for line, count in seen.values()]


def short_symbol(text, longest=120):
    """`text` with each template argument list longer than `longest` shown as <...>: the standard
    library's names are otherwise a line each (std::_Hashtable<std::unique_ptr<...>, ...>)."""
    out = []
    depth = 0
    start = 0
    for i, c in enumerate(text):
        if c == '<':
            if depth == 0:
                start = len(out)
            depth += 1
        elif c == '>' and depth > 0:
            depth -= 1
            if depth == 0:
                out.append(c)
                if len(out) - start > longest:
                    del out[start:]
                    out.append('<...>')
                continue
        out.append(c)
    return ''.join(out)


def perf_top(perf_data, tids, lines):
    """The top `lines` entries (dso, symbol; self time, in % of these threads' samples) of perf
    report for the threads `tids`."""
    cmd = ['perf', 'report', '-i', str(perf_data), '--stdio', '--no-children', '--sort', 'dso,sym', '-g', 'none',
           '--percentage', 'relative']
    if tids:
        cmd += ['--tid', ','.join(str(t) for t in tids)]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, timeout=300)
    entries = [line.rstrip() for line in proc.stdout.splitlines() if line.strip() and not line.startswith('#')]
    return [short_symbol(e) for e in entries[:lines]]


def perf_by_thread(perf_data):
    """Each thread's share of the samples (perf's `pid` sort key is the thread)."""
    proc = subprocess.run(['perf', 'report', '-i', str(perf_data), '--stdio', '--no-children', '--sort', 'pid',
                           '-g', 'none'], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, timeout=300)
    shares = {}
    for line in proc.stdout.splitlines():
        match = re.match(r'\s*([\d.]+)%\s+(\d+):', line)
        if match:
            shares[int(match.group(2))] = float(match.group(1))
    return shares


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--binary', default=str(REPO / 'build/tests/bench/pipeline_bench'),
                    help='the pipeline_bench program (default: %(default)s); it loads the modules of its own '
                         'build directory')
    ap.add_argument('--records', type=int, default=2_000_000, help='records per run (default 2000000)')
    ap.add_argument('--workers', type=int, default=2,
                    help='simulated workers: a record log each per collector (default 2)')
    ap.add_argument('--runs', type=int, default=3, help='runs per store mode (default 3)')
    ap.add_argument('--stores', default='sqlite,null,none', help='store modes to run (default %(default)s)')
    ap.add_argument('--collectors', default='1',
                    help='numbers of collectors (tracking.collectors) to run each mode with, such as 1,2 '
                         '(default %(default)s)')
    ap.add_argument('--log-size', help="each log's tracking.log_size (default: the server's, 256MiB)")
    ap.add_argument('--timeout', type=float, default=300,
                    help='seconds after the last append before a run gives up (default 300)')
    ap.add_argument('--quick', action='store_true', help='smoke test: 1 run of 200000 records per mode')
    ap.add_argument('--perf', action='store_true',
                    help='one more run per mode under perf record, and its top entries per thread')
    ap.add_argument('--perf-args', default='-g', help="perf record's options (default %(default)s)")
    ap.add_argument('--perf-lines', type=int, default=25, help='perf entries shown per thread (default 25)')
    ap.add_argument('--perf-dir', help='keep the perf.data files here (default: a temp dir, removed)')
    ap.add_argument('--json', help='also write every measurement as JSON to this file')
    ap.add_argument('--keep-tmp', action='store_true', help="keep each run's temp dir (config, state_dir, database)")
    args = ap.parse_args()
    if args.quick:
        args.runs, args.records = 1, 200_000
    stores = [s for s in args.stores.split(',') if s]
    for s in stores:
        if s not in STORES:
            raise BenchError('--stores: %r is not one of %s' % (s, ', '.join(STORES)))
    try:
        collector_counts = [int(n) for n in args.collectors.split(',') if n]
    except ValueError as e:
        raise BenchError('--collectors: %r is not a list of numbers such as 1,2' % args.collectors) from e
    if not collector_counts or any(n < 1 or n > 64 for n in collector_counts):
        raise BenchError('--collectors: each must be from 1 to 64')
    # The null store writes its count to one file: one collector's would
    # overwrite another's.
    if 'null' in stores and any(n > 1 for n in collector_counts):
        raise BenchError('--stores null takes --collectors 1 only')
    modes = [(store, n) for store in stores for n in collector_counts]
    args.binary = str(Path(args.binary).resolve())
    if not Path(args.binary).exists():
        raise BenchError('%s is missing: meson setup build --buildtype=release && ninja -C build' % args.binary)
    if os.cpu_count() < 2:
        raise BenchError('needs 2 CPUs (the collector on CPU 0, the writer on CPU 1)')
    if args.perf and not shutil.which('perf'):
        raise BenchError('--perf needs perf (apt-get install linux-perf)')

    log('SMProtocol pipeline benchmark: %d record(s) into %d log(s) per collector, %d run(s) per mode (%s); %s'
        % (args.records, args.workers, args.runs, ', '.join('%s x %d' % m for m in modes), args.binary))
    log('pinning: the collector and its storage thread on CPU 0, the writer on CPU 1')
    if any(n > 1 for n in collector_counts):
        log('  with N > 1 collectors, shard k (from 0) on CPU k %% %d: the writer shares CPU 1 with a collector, '
            'and the collectors share one sqlite database (its single write lock)' % os.cpu_count())
    busy_before = cpu_busy_ticks()
    time.sleep(1)
    busy_pct = (cpu_busy_ticks() - busy_before) * 100.0 / os.sysconf('SC_CLK_TCK') / 2
    if busy_pct > 10:
        log('warning: CPUs 0 and 1 were %.0f%% busy before the first run: other work will slow the runs down '
            '(see "others on CPU 0" below)' % busy_pct)

    results = []
    for run in range(1, args.runs + 1):
        for store, collectors in modes:
            r = run_program(args, store, collectors)
            r['run'] = run
            results.append(r)
            log('  run %d %-6s x %d %s' % (run, store, collectors, describe(r)))

    profiles = {}
    if args.perf:
        perf_dir = Path(args.perf_dir) if args.perf_dir else Path(tempfile.mkdtemp(prefix='smp-pipeline-perf-'))
        perf_dir.mkdir(parents=True, exist_ok=True)
        try:
            for store, collectors in modes:
                mode = store if collectors == 1 else '%s-x%d' % (store, collectors)
                data = perf_dir / ('perf-%s.data' % mode)
                r = run_program(args, store, collectors, perf_data=data)
                log('  perf %-6s x %d %s' % (store, collectors, describe(r)))
                loop = r['collector_pids']
                storage = [int(t) for t in r['storage_tids'].split(',') if t]
                profiles[mode] = {
                    'run': r,
                    'thread_shares': perf_by_thread(data),
                    'loop': perf_top(data, loop, args.perf_lines),
                    'storage': perf_top(data, storage, args.perf_lines) if storage else [],
                    'data': str(data) if args.perf_dir else None,
                }
        finally:
            if not args.perf_dir:
                shutil.rmtree(perf_dir, ignore_errors=True)

    # ---- the table
    rows = []
    for store, collectors in modes:
        rs = [r for r in results if r['store'] == store and r['collectors'] == collectors]
        rows.append([store, collectors,
                     mmm([r['rate'] for r in rs]),
                     mmm([r['read_rate'] for r in rs]),
                     mmm([r['cpu_us_per_record'] for r in rs], '%.2f'),
                     '%.2f + %.2f' % (median([r['loop_us_per_record'] for r in rs]),
                                      median([r['storage_us_per_record'] for r in rs])),
                     mmm([r['cpu_bound_rate'] for r in rs]),
                     mmm([r['append_rate'] for r in rs]),
                     mmm([r['refused_tries'] for r in rs]),
                     mmm([r['waited_s'] for r in rs], '%.1f'),
                     mmm([r['collector_cpus_others_s'] for r in rs], '%.1f'),
                     mmm([r['rss_anon_peak_kib'] / 1024 for r in rs]),
                     mmm([r['logs_gone_after_s'] for r in rs], '%.1f')])
    log('\n%d records into %d log(s) of %.0f MiB per collector; min / median / max over %d run(s)'
        % (args.records, args.workers, results[0]['log_size'] / (1 << 20), args.runs))
    log(table(['store', 'collectors', 'records/s stored', 'records/s read', 'collector us/record',
               'loop + storage (med)', 'records/s per CPU s', 'writer appends/s', 'tries refused', 'writer waited s',
               'others on their CPUs s', 'anon RSS peak MiB', 'logs gone s'], rows))
    log('records/s stored: N / (first append -> the store has the last record); read: -> the collector has read it.')
    log('records/s per CPU s: N / the collector\'s CPU time (loop + storage thread): its rate on a core of its own;'
        ' with N collectors, N / their CPU time summed.')
    sqlite = [r for r in results if r['store'] == 'sqlite' and r['collectors'] == 1]
    if sqlite:
        med = median([r['rate'] for r in sqlite])
        per_cpu = median([r['cpu_bound_rate'] for r in sqlite])
        log('target: %d records/s into sqlite on one core. Median stored %.0f/s (%.0f%% of it); per CPU second of '
            'the collector %.0f/s (%.0f%%): %s'
            % (TARGET_RATE, med, 100 * med / TARGET_RATE, per_cpu, 100 * per_cpu / TARGET_RATE,
               'met' if med >= TARGET_RATE else 'NOT met'))

    lines = collector_lines(results)
    if lines:
        log('\nthe collector said (each message once, with how many runs said it):')
        for line, count in lines:
            log('  %s  [%d]' % (line, count))

    for mode, p in profiles.items():
        log('\nperf, %s (%d records): samples by thread: %s'
            % (mode, args.records, ', '.join('%d %.1f%%' % (t, s) for t, s in sorted(p['thread_shares'].items()))))
        log('  the collector loop (thread %s), self time:' % ','.join('%d' % t for t in p['run']['collector_pids']))
        for line in p['loop']:
            log('    ' + line)
        if p['storage']:
            log('  the storage thread (%s), self time:' % p['run']['storage_tids'])
            for line in p['storage']:
                log('    ' + line)
        if p['data']:
            log('  perf report -i %s' % p['data'])

    warnings = []
    for r in results:
        where = 'run %d %s x %d' % (r['run'], r['store'], r['collectors'])
        if r['error']:
            warnings.append('%s: %s' % (where, r['error']))
        elif r['exit_code'] != 0:
            warnings.append('%s: exit code %d' % (where, r['exit_code']))
        if not r['pinned']:
            warnings.append('%s: the writer could not be pinned to CPU 1' % where)
        if noisy(r):
            warnings.append('%s: noisy: other processes used %.1f s of CPU %s in the %.1f s of the run'
                            % (where, r['collector_cpus_others_s'], cpu_names(r), r['stored_s']))
    if warnings:
        log('\nwarnings (%d):' % len(warnings))
        for w in warnings:
            log('  - ' + w)
    if args.json:
        for r in results:
            r.pop('output', None)
        Path(args.json).write_text(json.dumps({
            'args': vars(args), 'machine': platform.node(), 'cpus': os.cpu_count(), 'busy_before_pct': busy_pct,
            'results': results,
            'profiles': {s: {k: v for k, v in p.items() if k != 'run'} for s, p in profiles.items()},
            'warnings': warnings}, indent=2, default=str) + '\n')
        log('\nJSON written to %s' % args.json)
    return 1 if any(r['error'] or r['exit_code'] != 0 for r in results) else 0


if __name__ == '__main__':
    try:
        sys.exit(main())
    except BenchError as e:
        print('pipeline_bench.py: %s' % e, file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
