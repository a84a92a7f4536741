#!/usr/bin/python3
"""A cluster of three smprotocol nodes behind haproxy, end to end.

What runs for real, all on loopback (127.0.0.0/8), started and stopped by each test:
- three real smprotocol servers (the binary named by SMP_BINARY), `node: n1`, `n2`, `n3`,
  listening on 127.0.0.2, 127.0.0.3 and 127.0.0.4, 2 workers each, all serving ONE
  shared root directory (so a file's ETag, size + mtime, is the same on every node);
- Debian's haproxy in front of them on 127.0.0.1 (round robin, X-Forwarded-For, health
  checks of /health.txt, an HTTP log on its stdout that the tests read);
- Debian's memcached, shared by the nodes' memcache plugins with one prefix
  (cluster-wide `unique_ip`);
- the clients: aria2c, wget and curl.

MongoDB is NOT real: the nodes' mongodb plugins (their real libmongoc code, over TCP)
write to tests/mongodb/mongo_double.py, the project's TEST DOUBLE of the MongoDB wire
protocol (in memory), as in test_mongodb.py; the tests read it back with pymongo and
with `smprotocol stats`. Passing here does not show that the merged downloads work on
a real MongoDB server.

What is checked: that the partial downloads several nodes saw of one real download are
ONE download in the shared store (union of the byte intervals, the parts' requests
summed, the nodes named); that unique_ip holds across nodes; that a graceful reload
of one node and kill -9 of another during downloads lose no request and count none
twice.

Run with Debian's /usr/bin/python3 (it has pymongo):

    cd build && SMP_BINARY=$PWD/core/smprotocol /usr/bin/python3 ../tests/integration/test_cluster.py -v
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import unittest

try:
    import pymongo
    import pymongo.errors
except ImportError as e:
    sys.exit('test_cluster.py needs pymongo (Debian python3-pymongo): run it with /usr/bin/python3 (%s)' % e)

import harness
from harness import MIB
from test_memcache import Memcached
from test_mongodb import Double, mongo_entry

HAPROXY = shutil.which('haproxy') or ('/usr/sbin/haproxy' if os.path.exists('/usr/sbin/haproxy') else None)
MISSING = [name for name, found in (('haproxy', HAPROXY), ('aria2c', shutil.which('aria2c')),
                                    ('memcached', shutil.which('memcached')), ('wget', shutil.which('wget')),
                                    ('curl', shutil.which('curl'))) if not found]
NODES = (('n1', '127.0.0.2'), ('n2', '127.0.0.3'), ('n3', '127.0.0.4'))
OK_STATUSES = (200, 206)

# One line of haproxy's `option httplog`:
#   client:port [date] frontend backend/server TR/Tw/Tc/Tr/Ta status bytes - - TERM act/fe/be/srv/retries sq/bq "GET /x HTTP/1.1"
HTTPLOG = re.compile(r'^(?P<client>\S+):\d+ \[[^\]]+\] \S+ (?P<backend>[^/\s]+)/(?P<server>\S+) '
                     r'(?P<timers>\S+) (?P<status>-?\d+) \+?(?P<bytes>\d+) \S+ \S+ (?P<term>\S{4}) '
                     r'\S+ \S+ "(?P<method>\S+) (?P<path>\S+)')


# --------------------------------------------------------------------------
# the pieces of the cluster

class Node(harness.Server):
    """One smprotocol node (harness.Server, whose start() waits on 127.0.0.1 only:
    this one waits on the node's own loopback address)."""

    def __init__(self, env, name, host, port, config):
        self.name, self.host = name, host
        super().__init__(env, port=port, access_log=False, config=config)

    def start(self, timeout=15.0):
        self._log = open(self.log_path, 'ab')
        if self not in harness._LIVE_SERVERS:
            harness._LIVE_SERVERS.append(self)
        self.proc = subprocess.Popen([harness.BINARY, '--config', self.config_path], stdin=subprocess.DEVNULL,
                                     stdout=self._log, stderr=subprocess.STDOUT, cwd=self.env.dir,
                                     start_new_session=True)
        if not harness.wait_for(lambda: self.proc.poll() is not None or harness.port_accepts(self.port, self.host),
                                timeout) or self.proc.poll() is not None:
            self.kill()
            raise harness.ServerError('node %s did not accept on %s:%d (exit %s); log:\n%s'
                                      % (self.name, self.host, self.port, self.proc.returncode, self.log_tail()))
        return self

    def kill_everything(self):
        """kill -9 the master, its workers and its stats collector (its process group) at once."""
        members = harness.group_members(self.pid)
        for pid in members:
            os.kill(pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
        gone = harness.wait_for(lambda: not harness.group_members(self.pid), 10.0)
        self._close_log()
        return members, gone


def node_config(env, name, host, port, mongo_uri, database, memcached_port, prefix, listener):
    lines = [
        'node: %s' % name,
        'workers: 2',
        'max_connections: 1024',
        'shutdown_timeout: 20s',
        'state_dir: %s' % env.path('state-' + name),
        'trusted_proxies: [127.0.0.0/8]',
        'tracking: {enabled: true, idle_window: 3s}',
        'log:',
        '  level: info',
        'protocols:',
        '  - module: http_download',
        '    host: %s' % host,
        '    port: %d' % port,
        '    root: %s' % env.www,
        '    block_size: 256KiB',
        '    send_timeout: 60s',
    ]
    lines += ['    %s: %s' % item for item in listener.items()]
    lines.append('plugins:')
    text = '\n'.join(lines) + '\n' + mongo_entry(mongo_uri, database)
    return text + ('  - module: memcache\n    servers: ["127.0.0.1:%d"]\n    prefix: "%s"\n    on_error: allow\n'
                   % (memcached_port, prefix))


class Haproxy:
    """Debian's haproxy in the foreground (-db), its log (option httplog) on stdout, kept in a file."""

    def __init__(self, env, backend_port, nodes):
        self.env, self.port = env, harness.free_port()
        self.config_path, self.log_path = env.path('haproxy.cfg'), env.path('haproxy.log')
        servers = ''.join('    server %s %s:%d check\n' % (n.name, n.host, backend_port) for n in nodes)
        harness.write_file(self.config_path, (
            'global\n'
            '    log stdout format raw local0\n'
            '    maxconn 512\n'
            'defaults\n'
            '    mode http\n'
            '    log global\n'
            '    option httplog\n'
            '    timeout connect 2s\n'
            '    timeout client 60s\n'
            '    timeout server 60s\n'
            '    timeout http-request 10s\n'
            'frontend front\n'
            '    bind 127.0.0.1:%d\n'
            '    default_backend nodes\n'
            'backend nodes\n'
            '    balance roundrobin\n'
            '    option forwardfor\n'
            '    option httpchk GET /health.txt\n'
            '    http-check expect status 200\n'
            # which node answered, for the tests that must know it while a response runs
            '    http-response set-header X-Served-By %%s\n'
            '    default-server inter 500ms fall 2 rise 2\n' % self.port) + servers)
        self.proc = None

    def start(self):
        r = harness.run([HAPROXY, '-c', '-f', self.config_path], timeout=20)
        if r.returncode != 0:
            raise RuntimeError('haproxy -c: %s%s' % (r.stdout, r.stderr))
        self._out = open(self.log_path, 'ab')
        self.proc = harness.spawn([HAPROXY, '-f', self.config_path, '-db'], stdout=self._out,
                                  stderr=subprocess.STDOUT, start_new_session=True)
        if not harness.wait_for(lambda: self.proc.poll() is not None or harness.port_accepts(self.port), 10.0) \
                or self.proc.poll() is not None:
            raise RuntimeError('haproxy did not start:\n' + self.log_text())

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        if self.proc is not None:
            self._out.close()

    def url(self, path):
        return 'http://127.0.0.1:%d%s' % (self.port, path)

    def log_text(self):
        try:
            with open(self.log_path, 'rb') as f:
                return f.read().decode('utf-8', 'replace')
        except OSError:
            return ''

    def requests(self, paths=None):
        """The requests haproxy logged (health checks are not logged), oldest first:
        dicts of server, status, term(ination state), method, path, bytes."""
        found = []
        for line in self.log_text().splitlines():
            m = HTTPLOG.match(line)
            if m and (paths is None or m.group('path') in paths):
                d = m.groupdict()
                d['status'], d['bytes'] = int(d['status']), int(d['bytes'])
                found.append(d)
        return found

    def per_server(self, paths):
        counts = {}
        for r in self.requests(paths):
            counts[r['server']] = counts.get(r['server'], 0) + 1
        return counts


# --------------------------------------------------------------------------
# the tests

@unittest.skipIf(MISSING, 'not installed: %s (Debian packages haproxy, aria2, memcached, wget, curl)'
                 % ', '.join(MISSING))
class Cluster(harness.TailsOnFailure):
    files = {'big.bin': 64 * MIB, 'resume.bin': 8 * MIB, 'slow.bin': 2 * MIB, 'small.bin': 4096,
             'health.txt': 3, **{'c%d.bin' % i: 3 * MIB for i in range(6)}}
    # More keys of every node's listener, by test. A client's --limit-rate does not hold a
    # download open on the server: the loopback sockets' buffers and haproxy's take
    # several MiB at once; the server's own limit_rate does.
    listener = {'test_reload_and_kill_9_during_downloads': {'limit_rate': '300k'}}

    def setUp(self):
        self.env = harness.TestEnv(self.files, prefix='smp-cluster-')
        self.clients = []
        self.nodes = {}
        self.haproxy = self.double = self.memcached = self.mongo = None
        try:
            self.double = Double(self.env).start()
            self.memcached = Memcached()
            self.memcached.start()
            harness._LIVE_CLIENTS.append(self.memcached.proc)  # killed by harness.main's SIGTERM handler too
            self.database = 'cluster_' + self._testMethodName
            self.port = harness.free_port()
            for name, host in NODES:
                text = node_config(self.env, name, host, self.port, self.double.uri(), self.database,
                                   self.memcached.port, 'cl%d:' % os.getpid(),
                                   self.listener.get(self._testMethodName, {}))
                self.nodes[name] = Node(self.env, name, host, self.port, text).start()
            self.haproxy = Haproxy(self.env, self.port, self.nodes.values())
            self.haproxy.start()
            self.mongo = pymongo.MongoClient(self.double.uri(), serverSelectionTimeoutMS=3000)
        except Exception:
            self.tearDown()
            raise

    def tearDown(self):
        for p in self.clients:
            if p.poll() is None:
                p.kill()
                p.wait(5)
        if self.haproxy:
            self.haproxy.stop()
        for node in self.nodes.values():
            try:
                node.terminate(timeout=20)
            finally:
                node.kill()
        if self.mongo:
            self.mongo.close()
        if self.memcached:
            self.memcached.stop()
        if self.double:
            self.double.stop()
        # Kept for run(), which prints them when the test failed.
        self._tails = [('haproxy log tail', '\n'.join(self.haproxy.log_text().splitlines()[-30:]) if self.haproxy else '')]
        self._tails += [('node %s log tail' % n.name, n.log_tail(25)) for n in self.nodes.values()]
        self._tails.append(('mongo_double log tail', self.double.log_tail() if self.double else ''))
        # Nothing left behind: no node process, no haproxy, memcached or double.
        leftovers = {n.name: harness.group_members(n.pid) for n in self.nodes.values() if n.proc}
        leftovers.update({what: [p.pid] for what, p in (('haproxy', self.haproxy and self.haproxy.proc),
                                                        ('memcached', self.memcached and self.memcached.proc),
                                                        ('double', self.double and self.double.proc))
                          if p is not None and p.poll() is None})
        if os.environ.get('SMP_KEEP_TMP'):
            sys.stderr.write('[test_cluster] kept %s\n' % self.env.dir)
        else:
            self.env.cleanup()
        self.assertEqual({k: v for k, v in leftovers.items() if v}, {}, 'processes left behind')

    # helpers ---------------------------------------------------------------

    def db(self):
        return self.mongo[self.database]

    def spawn(self, cmd, **kw):
        p = harness.spawn(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True, **kw)
        self.clients.append(p)
        return p

    def finish(self, p, timeout):
        """Wait for a client process; its exit code and stderr."""
        try:
            _, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            _, err = p.communicate(timeout=5)
            return None, (err or b'').decode('utf-8', 'replace') + ' [killed after %ss]' % timeout
        return p.returncode, (err or b'').decode('utf-8', 'replace')

    def stats(self, node, report, *args):
        r = harness.run([harness.BINARY, 'stats', '--config', node.config_path, '--json', *args, report], timeout=60)
        self.assertEqual(r.returncode, 0, '%s %s on %s: %s' % (report, args, node.name, r.stderr))
        try:
            answer = json.loads(r.stdout)
        except ValueError as e:
            self.fail('stats %s %s on %s: not JSON (%s):\n%s' % (report, args, node.name, e, r.stdout[:2000]))
        self.assertEqual(answer['report'], report)
        return answer['rows']

    def download_rows(self, node, path, agent_prefix):
        """`stats downloads --file path` read with this node's config, the rows of the
        client (user agent) given."""
        return [r for r in self.stats(node, 'downloads', '--file', path)
                if (r.get('user_agent') or '').startswith(agent_prefix)]

    @staticmethod
    def node_names(row):
        return sorted(n for n in (row.get('nodes') or '').split(',') if n)

    def settled_rows(self, path, agent_prefix, settled, timeout=30.0):
        """Polls `stats downloads` through every node's config until settled(rows) holds for
        all three (the collectors write once a second, a download open for idle_window more);
        returns {node: rows} as last read."""
        last = {}

        def read():
            for name, node in self.nodes.items():
                last[name] = self.download_rows(node, path, agent_prefix)
            return all(settled(rows) for rows in last.values())
        harness.wait_for(read, timeout, interval=0.5)
        return last

    def request_docs(self, paths):
        # the stores keep a path relative to the root: 'c0.bin' for /c0.bin
        return list(self.db().requests.find({'path': {'$in': [p.lstrip('/') for p in paths]}}))

    def wait_request_docs(self, paths, done, timeout=30.0):
        docs = []

        def read():
            try:
                docs[:] = self.request_docs(paths)
            except pymongo.errors.PyMongoError:
                return False
            return done(docs)
        harness.wait_for(read, timeout, interval=0.5)
        return docs

    def curl_code(self, path, *args, timeout=10):
        """One GET through haproxy with curl (more curl arguments: args): the status code (0 when none)."""
        r = harness.curl(['-o', '/dev/null', '-w', '%{http_code}', '--max-time', str(timeout), *args,
                          self.haproxy.url(path)], timeout=timeout + 5)
        return int(r.stdout or 0)

    def shift_round_robin_after(self, server, probe='/small.bin'):
        """Round robin sends the next request to the server after the last one used: make
        `server` the last one used (one small unrelated request at a time, at most 3), so
        that the next request goes to another server. Returns the probes sent."""
        probes = 0
        while self.haproxy.requests()[-1]['server'] != server and probes < 3:
            self.assertEqual(self.curl_code(probe), 200)
            probes += 1
        self.assertEqual(self.haproxy.requests()[-1]['server'], server)
        return probes

    # test 1 ----------------------------------------------------------------

    def test_aria2c_x8_is_one_download_across_nodes(self):
        out_dir = self.env.path('out')
        os.makedirs(out_dir)
        r = harness.run(['aria2c', '-x8', '-s8', '-k1M', '--allow-overwrite=true', '--auto-file-renaming=false',
                         '--file-allocation=none', '--console-log-level=warn', '--summary-interval=0',
                         '--timeout=30', '--max-tries=1', '-U', 'aria-cluster', '-d', out_dir, '-o', 'big.bin',
                         self.haproxy.url('/big.bin')], timeout=120)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertEqual(harness.sha256_file(os.path.join(out_dir, 'big.bin')),
                         harness.sha256_file(os.path.join(self.env.www, 'big.bin')))
        served = self.haproxy.per_server({'/big.bin'})
        self.assertGreaterEqual(len(served), 2, 'haproxy sent aria2c to one node only: %r' % served)

        def settled(rows):
            return len(rows) == 1 and rows[0]['completed'] and rows[0]['finished']
        rows = self.settled_rows('/big.bin', 'aria-cluster', settled, timeout=40)
        for name, node_rows in rows.items():
            with self.subTest(stats_config=name):
                self.assertEqual(len(node_rows), 1, node_rows)
                [row] = node_rows
                self.assertTrue(row['completed'], row)
                self.assertGreaterEqual(row['requests'], 8, row)
                self.assertGreaterEqual(len(self.node_names(row)), 2, row)
                self.assertEqual(self.node_names(row), sorted(served), 'the nodes haproxy sent aria2c to')

        # Directly in the (double's) collections: no request counted twice.
        downloads = list(self.db().downloads.find({'path': 'big.bin', 'user_agent': 'aria-cluster'}))
        requests = [d for d in self.db().requests.find({'path': 'big.bin', 'user_agent': 'aria-cluster'})
                    if d['status'] in OK_STATUSES]
        self.assertEqual(sum(d['requests'] for d in downloads), len(requests),
                         [(d.get('node'), d['requests']) for d in downloads])
        self.assertGreaterEqual(len({d['node'] for d in requests}), 2, [d['node'] for d in requests])
        # and haproxy agrees with the request documents, node by node
        by_node = {}
        for d in requests:
            by_node[d['node']] = by_node.get(d['node'], 0) + 1
        self.assertEqual(by_node, {s: n for s, n in served.items()})

    # test 2 ----------------------------------------------------------------

    def test_wget_cut_and_resumed_on_another_node(self):
        out = self.env.path('resume.bin')
        agent = 'wget-cluster'
        p = self.spawn(['wget', '-q', '-U', agent, '--limit-rate=1m', '--tries=1', '--timeout=20', '-O', out,
                        self.haproxy.url('/resume.bin')])
        self.assertTrue(harness.wait_for(lambda: os.path.exists(out) and os.path.getsize(out) >= MIB, 20.0),
                        'wget wrote less than 1 MiB in 20 s')
        p.kill()
        self.finish(p, 10)
        cut_at = os.path.getsize(out)
        self.assertLess(cut_at, len(self.env.content['resume.bin']), 'wget finished before it was cut')
        # haproxy logs a request when it ends: the cut one, once wget is gone.
        self.assertTrue(harness.wait_for(lambda: self.haproxy.requests({'/resume.bin'}), 10.0))
        [first] = self.haproxy.requests({'/resume.bin'})
        self.assertEqual(first['status'], 200, first)
        # Nothing else ran through haproxy, so round robin sends the resume to the next
        # node; were the cut request not the last one haproxy sent, small unrelated
        # requests shift it first (none are needed normally).
        self.shift_round_robin_after(first['server'])
        r = harness.run(['wget', '-q', '-c', '-U', agent, '--tries=1', '--timeout=20', '-O', out,
                         self.haproxy.url('/resume.bin')], timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(harness.sha256_file(out), harness.sha256_bytes(self.env.content['resume.bin']))
        self.assertTrue(harness.wait_for(lambda: len(self.haproxy.requests({'/resume.bin'})) == 2, 10.0))
        first, second = self.haproxy.requests({'/resume.bin'})
        self.assertEqual(second['status'], 206, second)
        self.assertNotEqual(first['server'], second['server'], 'the resume went to the same node')
        both = sorted([first['server'], second['server']])

        def settled(rows):
            return len(rows) == 1 and rows[0]['completed'] and rows[0]['finished']
        rows = self.settled_rows('/resume.bin', agent, settled, timeout=30)
        for name, node_rows in rows.items():
            with self.subTest(stats_config=name):
                self.assertEqual(len(node_rows), 1, node_rows)
                [row] = node_rows
                self.assertTrue(row['completed'], row)
                self.assertEqual(row['requests'], 2, row)
                self.assertEqual(row['resumes'], 1, row)
                self.assertEqual(self.node_names(row), both, row)

    # test 4 ----------------------------------------------------------------

    def test_reload_and_kill_9_during_downloads(self):
        paths = {'/c%d.bin' % i for i in range(6)}
        n1, n3 = self.nodes['n1'], self.nodes['n3']
        curls = [self.spawn(['curl', '--silent', '--show-error', '--noproxy', '*', '--retry', '0', '--max-time', '60',
                             '--limit-rate', '300k', '-A', 'curl-c%d' % i, '-o', self.env.path('c%d.out' % i),
                             self.haproxy.url('/c%d.bin' % i)]) for i in range(6)]
        # Each node serves some: wait until every node's workers hold a connection.
        holding = lambda n: harness.pids_holding_connections(self.port, n.workers())
        self.assertTrue(harness.wait_for(lambda: all(holding(n) for n in self.nodes.values()), 10.0),
                        {n.name: holding(n) for n in self.nodes.values()})
        time.sleep(1.5)  # progress records reach the collectors
        old_workers = set(n1.workers())
        n3_processes = {n3.pid, n3.collector(), *n3.workers()}
        os.kill(n1.pid, signal.SIGHUP)
        killed, gone = n3.kill_everything()
        self.assertTrue(gone, 'n3 processes survived kill -9')
        self.assertEqual(len(n3_processes - {None}), 4, 'master, 2 workers and a collector: %r' % n3_processes)
        self.assertLessEqual(n3_processes, set(killed))
        self.assertTrue(harness.wait_for(lambda: 'Reload complete' in n1.log(), 15.0), n1.log_tail())
        self.assertTrue(harness.wait_for(lambda: 'nodes/n3 is DOWN' in self.haproxy.log_text(), 10.0),
                        'haproxy never marked n3 down')
        self.assertNotEqual(set(n1.workers()), old_workers, 'the reload started no new workers')
        # After the reload, new requests (to n1 and n2: n3 is down) are answered (a Range:
        # limit_rate would make whole files take 10 s each).
        for i in range(4):
            self.assertEqual(self.curl_code('/c%d.bin' % i, '-r', '0-9999'), 206)
        results = [self.finish(p, 60) for p in curls]
        # Those on n3 were cut (curl 18: partial file): expected; the others are whole.
        whole = [i for i, (code, _) in enumerate(results) if code == 0]
        for i in whole:
            self.assertEqual(harness.sha256_file(self.env.path('c%d.out' % i)),
                             harness.sha256_bytes(self.env.content['c%d.bin' % i]))
        on_n3 = [r for r in self.haproxy.requests(paths) if r['server'] == 'n3']
        self.assertTrue(on_n3, 'haproxy sent none of the downloads to n3')
        self.assertEqual(len(whole), 6 - len(on_n3), results)

        # n3 again, same config and state_dir: its new collector reads the old run's
        # record logs; the requests running at the kill end as worker_lost.
        n3.start()
        docs = self.wait_request_docs(paths, lambda docs: any(d['node'] == 'n3' and d['reason'] == 'worker_lost'
                                                              for d in docs), timeout=30)
        self.assertIn('worker_lost', [d['reason'] for d in docs if d['node'] == 'n3'],
                      [(d['node'], d['path'], d['reason']) for d in docs])
        self.assertNotIn('worker_lost', [d['reason'] for d in docs if d['node'] != 'n3'])

        # haproxy: no 5xx from the reloaded node, ever, and none of its responses cut
        # (termination state ---- : ended normally on both sides).
        n1_statuses = [(r['path'], r['status'], r['term']) for r in self.haproxy.requests() if r['server'] == 'n1']
        self.assertTrue(n1_statuses, 'haproxy sent nothing to n1')
        self.assertEqual([s for s in n1_statuses if s[1] >= 500], [], n1_statuses)
        self.assertEqual([s for s in n1_statuses if s[2] != '----'], [], n1_statuses)

        # No request lost, none counted twice: per node, as many request documents of the
        # test's files as haproxy sent it.
        sent = self.haproxy.per_server(paths)

        def counted(docs):
            per_node = {}
            for d in docs:
                per_node[d['node']] = per_node.get(d['node'], 0) + 1
            return per_node == sent
        docs = self.wait_request_docs(paths, counted, timeout=20)
        per_node = {}
        for d in docs:
            per_node[d['node']] = per_node.get(d['node'], 0) + 1
        self.assertEqual(per_node, sent, 'request documents per node vs haproxy\'s log')
        ids = [repr(sorted(d['_id'].items())) if isinstance(d['_id'], dict) else repr(d['_id']) for d in docs]
        self.assertEqual(len(ids), len(set(ids)))
        keys = [(d['node'], d['worker_id'], d['connection_id'], d['request_id']) for d in docs]
        self.assertEqual(sorted(k for k in set(keys) if keys.count(k) > 1), [],
                         'request documents sharing node+worker_id+connection_id+request_id')
        # and the downloads count each of those requests once, the cut ones included
        transfers = [d for d in docs if d['status'] in OK_STATUSES and d['user_agent'].startswith('curl-c')]

        def summed():
            return sum(d['requests'] for d in self.db().downloads.find({'user_agent': {'$regex': '^curl-c'}}))
        harness.wait_for(lambda: summed() == len(transfers), 10.0, interval=0.5)
        self.assertEqual(summed(), len(transfers), [(d['path'], d['nodes'], d['requests'])
                                                    for d in self.db().downloads.find()])


@unittest.skipIf(MISSING, 'not installed: %s' % ', '.join(MISSING))
class ClusterUniqueIp(Cluster):
    """The same cluster, every node's listener with `unique_ip: true` (counted in the shared
    memcached, one prefix for all)."""

    files = {'slow.bin': 2 * MIB, 'small.bin': 4096, 'health.txt': 3}
    # limit_rate: ~10 s for slow.bin (see Cluster.listener)
    listener = {'test_unique_ip_holds_across_nodes': {'unique_ip': 'true', 'limit_rate': '200k'}}

    def test_unique_ip_holds_across_nodes(self):
        agent = 'curl-unique'
        out = self.env.path('slow.out')
        head = self.env.path('slow.head')
        # Slow: the nodes' limit_rate (a client's --limit-rate would not hold the server: see Cluster.listener)
        first = self.spawn(['curl', '--silent', '--show-error', '--noproxy', '*', '--retry', '0', '--max-time', '60',
                            '-A', agent, '-D', head, '-o', out, self.haproxy.url('/slow.bin')])

        def serving():
            try:
                with open(head) as f:
                    m = re.search(r'^x-served-by: *(\S+)', f.read(), re.I | re.M)
            except OSError:
                return None
            return m and m.group(1)
        holder = harness.wait_for(serving, 10.0)
        self.assertIn(holder, self.nodes, 'no X-Served-By from haproxy for the first download')
        # The same file, same client (haproxy's X-Forwarded-For: 127.0.0.1), while it runs:
        # refused wherever it lands; sent until it lands on another node (round robin: the next).
        refusals = []
        for _ in range(4):
            before = len(self.haproxy.requests({'/slow.bin'}))
            code = harness.curl(['-o', '/dev/null', '-w', '%{http_code}', '--max-time', '10', '-A', agent,
                                 self.haproxy.url('/slow.bin')], timeout=15).stdout
            self.assertEqual(code, '429')
            self.assertTrue(harness.wait_for(lambda: len(self.haproxy.requests({'/slow.bin'})) > before, 5.0))
            refusal = self.haproxy.requests({'/slow.bin'})[-1]
            refusals.append(refusal)
            if refusal['server'] != holder:
                break
        self.assertIsNone(first.poll(), 'the first download ended before the refusals were sent')
        self.assertTrue([r for r in refusals if r['server'] != holder and r['status'] == 429],
                        'no refusal from a node other than %s: %r' % (holder, refusals))
        code, err = self.finish(first, 60)
        self.assertEqual(code, 0, err)
        self.assertEqual(harness.sha256_file(out), harness.sha256_bytes(self.env.content['slow.bin']))
        downloads = [r for r in self.haproxy.requests({'/slow.bin'}) if r['status'] == 200]
        self.assertEqual([r['server'] for r in downloads], [holder], 'haproxy log vs X-Served-By')
        # The slot is given back a moment after the last byte: then a new request is served.
        # (A Range, to be quick under limit_rate: a GET of a range takes a slot as well, test_memcache.)
        self.assertTrue(harness.wait_for(lambda: self.curl_code('/slow.bin', '-A', agent, '-r', '0-99') == 206, 5.0,
                                         interval=0.2),
                        self.haproxy.requests({'/slow.bin'})[-3:])

    # the other tests do not need unique_ip: run them in Cluster only
    test_aria2c_x8_is_one_download_across_nodes = None
    test_wget_cut_and_resumed_on_another_node = None
    test_reload_and_kill_9_during_downloads = None


if __name__ == '__main__':
    harness.main()
