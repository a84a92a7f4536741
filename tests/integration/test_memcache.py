"""The memcache plugin: unique_ip held across two smprotocol servers that
share one memcached (Debian's, started here on a free loopback port), and
what happens when memcached goes away and comes back; the cache of small
files the servers share; and, with memcached behind a relay that delays every
packet by 50 ms (delay_relay.py), that a slot waiting on memcached does not
hold the worker's other connections."""

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import unittest

import harness
from delay_relay import DelayRelay
from harness import MIB
from test_limits import ConnectionsPerIp, slow_download


class Memcached:
    def __init__(self):
        self.port = harness.free_port()
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(['memcached', '-l', '127.0.0.1', '-p', str(self.port), '-U', '0', '-m', '16',
                                      '-u', 'nobody'], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)
        if not harness.wait_for(lambda: harness.port_accepts(self.port), 5.0):
            raise RuntimeError('memcached did not start on port %d' % self.port)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def command(self, line, data=None):
        """One text-protocol command; memcached's reply up to its last line."""
        with socket.create_connection(('127.0.0.1', self.port), timeout=5) as s:
            s.sendall(line.encode() + b'\r\n' + (data + b'\r\n' if data is not None else b''))
            reply = b''
            while not reply.endswith((b'END\r\n', b'STORED\r\n', b'ERROR\r\n', b'NOT_STORED\r\n')):
                chunk = s.recv(65536)
                if not chunk:
                    break
                reply += chunk
            return reply

    def get(self, key):
        """The value of `key`, or None."""
        reply = self.command('get ' + key)
        if not reply.startswith(b'VALUE '):
            return None
        head, _, rest = reply.partition(b'\r\n')
        return rest[:int(head.split()[3])]

    def set(self, key, value):
        return self.command('set %s 0 0 %d' % (key, len(value)), value)


@unittest.skipUnless(shutil.which('memcached'), 'memcached is not installed (Debian package memcached)')
class SharedLimits(unittest.TestCase):
    def setUp(self):
        self.env = harness.TestEnv({'big.bin': 64 * MIB, 'small.bin': 4096})
        self.memcached = Memcached()
        self.memcached.start()
        self.open = []
        self.servers = {}

    def tearDown(self):
        for s in self.open:
            s.close()
        for server in self.servers.values():
            server.kill()
        self.memcached.stop()
        self.env.cleanup()

    def server(self, name, on_error='allow', workers=2, dashboard_port=None):
        port = harness.free_port()
        text = harness.config_text(port, self.env.www, workers=workers, unique_ip='true',
                                   core_extra={'tracking': '{enabled: false}'})
        dashboard = ('  - module: dashboard\n    host: 127.0.0.1\n    port: %d\n' % dashboard_port
                     if dashboard_port else '')
        text = text.replace('plugins: []', dashboard + 'plugins:\n  - module: memcache\n    servers: ["127.0.0.1:%d"]\n'
                            '    prefix: "t%d:"\n    on_error: %s\n' % (self.memcached.port, os.getpid(), on_error))
        server = harness.Server(self.env, port=port, config=text)
        server.start()
        self.servers[name] = server
        return server

    def status(self, server):
        return harness.http(server.port, 'GET', '/big.bin', {'Range': 'bytes=0-99'}).status

    def hold(self, server):
        """A download left running. A probe that just ended may give its slot
        back a moment after the client has its last byte: try for a second."""
        for _ in range(20):
            try:
                s = slow_download(server.port, '/big.bin')
                self.open.append(s)
                return s
            except AssertionError:
                time.sleep(0.05)
        self.fail('no download admitted on %s' % server.url('/big.bin'))

    def release(self, s):
        s.close()
        self.open.remove(s)

    def test_a_download_on_one_server_holds_the_slot_on_the_other(self):
        a, b = self.server('a'), self.server('b')
        holder = self.hold(a)
        for _ in range(4):  # both workers of b
            self.assertEqual(self.status(b), 429)
        self.assertEqual(self.status(a), 429)
        self.release(holder)
        self.assertTrue(harness.wait_for(lambda: self.status(b) == 206, 5.0), 'b never admitted the next one')
        holder = self.hold(b)  # and the other way round
        self.assertEqual(self.status(a), 429)
        self.release(holder)

    def test_worker_killed_while_holding_a_shared_slot_frees_it(self):
        a, b = self.server('a'), self.server('b')
        self.hold(a)
        self.assertEqual(self.status(b), 429)
        [pid] = harness.pids_holding_connections(a.port, a.workers())
        os.kill(pid, signal.SIGKILL)
        # Reaped by the master, which then (and only then) marks the dead
        # worker's slots orphaned; it logs the death right after.
        self.assertTrue(harness.wait_for(lambda: '(pid %d) was killed' % pid in a.log(), 5.0))
        # The next request for that download on a gives the dead worker's slot back.
        self.assertEqual(self.status(a), 206)
        # a releases its own slot just after the last byte went out; the
        # client can read that byte and ask b before a's worker has run again.
        self.assertTrue(harness.wait_for(lambda: self.status(b) == 206, 2.0), 'the slot was not given back')

    def test_the_worker_that_replaces_a_killed_one_gives_its_shared_slot_back(self):
        a, b = self.server('a'), self.server('b')
        self.hold(a)
        self.assertEqual(self.status(b), 429)
        [pid] = harness.pids_holding_connections(a.port, a.workers())
        os.kill(pid, signal.SIGKILL)
        # No request reaches a again: its new worker gives the slot back.
        self.assertTrue(harness.wait_for(lambda: self.status(b) == 206, 5.0), 'the dead worker still holds the slot')
        # Two workers, then the new one (forked after the master's back-off, which
        # may be after b was served: under ASan, b's 206 came first).
        self.assertTrue(harness.wait_for(lambda: a.log().count('detached with pid') == 3, 5.0), a.log())

    def test_memcached_down_allow_uses_each_servers_own_limits_then_recovers(self):
        # One worker in b: its outage and its recovery are logged by the same client.
        a, b = self.server('a'), self.server('b', workers=1)
        holder = self.hold(a)
        self.assertEqual(self.status(b), 429)
        self.memcached.stop()
        self.assertEqual(self.status(b), 206)  # b's own counters: nothing held there
        # (a's download took a shared slot, not one of a's own: during the
        # outage a does not know of it either. docs/limits.md says so.)
        self.release(holder)
        self.memcached.start()
        # Shared again: a new holder on a is seen by b, once a's client tries
        # memcached again (a server that failed is retried after a second).
        def shared_again():
            holder = self.hold(a)
            refused = self.status(b) == 429
            self.release(holder)
            return refused
        self.assertTrue(harness.wait_for(shared_again, 5.0, interval=0.2), 'limits not shared again')
        log = b.log()
        # Once per outage (and per worker: each has its own client), by whichever
        # call met it first: b's 429 gives back the slot its increment took, and
        # that decrement can still be on its way when memcached is killed.
        self.assertEqual(log.count('[memcache] cannot take a shared slot') +
                         log.count('[memcache] cannot give back a shared slot'), 1, log)
        self.assertIn('memcached answers again', log)

    def test_memcached_failures_are_counted_in_the_metrics(self):
        dashboard = harness.free_port()
        c = self.server('c', on_error='deny', workers=1, dashboard_port=dashboard)

        def failures():
            text = harness.http(dashboard, 'GET', '/metrics').body.decode()
            found = re.search(r'^smprotocol_plugin_errors_total\{plugin="memcache"\} (\d+)$', text, re.M)
            self.assertIsNotNone(found, text)
            return int(found.group(1))

        self.assertEqual(self.status(c), 206)
        self.assertEqual(failures(), 0)
        self.memcached.stop()
        self.assertEqual(self.status(c), 429)
        self.assertGreaterEqual(failures(), 1)

    def test_memcached_down_deny_refuses(self):
        c = self.server('c', on_error='deny')
        self.assertEqual(self.status(c), 206)
        self.memcached.stop()
        self.assertEqual(self.status(c), 429)
        self.assertEqual(harness.http(c.port, 'GET', '/small.bin').status, 429)  # every download needs a slot
        self.assertEqual(harness.http(c.port, 'HEAD', '/small.bin').status, 200)  # a HEAD needs none


@unittest.skipUnless(shutil.which('memcached'), 'memcached is not installed (Debian package memcached)')
class SharedCache(unittest.TestCase):
    """cache_max_file_size: small files are served from memcached, filled on a
    miss, and keyed by size and mtime so that a changed file is read again."""

    def setUp(self):
        self.env = harness.TestEnv({'hot.bin': 4096, 'big.bin': 256 * 1024, 'a b.txt': 1000})
        self.memcached = Memcached()
        self.memcached.start()
        self.prefix = 'c%d:' % os.getpid()
        self.servers = []

    def tearDown(self):
        for server in self.servers:
            server.kill()
        self.memcached.stop()
        self.env.cleanup()

    def server(self):
        port = harness.free_port()
        text = harness.config_text(port, self.env.www, workers=1, core_extra={'tracking': '{enabled: false}'})
        text = text.replace('plugins: []', 'plugins:\n  - module: memcache\n    servers: ["127.0.0.1:%d"]\n'
                            '    prefix: "%s"\n    cache_max_file_size: 64KiB\n' % (self.memcached.port, self.prefix))
        server = harness.Server(self.env, port=port, config=text)
        server.start()
        self.servers.append(server)
        return server

    def key(self, path, response):
        """The key docs/limits.md gives: prefix, f:, the path, the ETag's size-mtime."""
        return self.prefix + 'f:' + path + ':' + response.header('ETag').strip('"')

    def file_bytes(self, name):
        with open(os.path.join(self.env.www, name), 'rb') as f:
            return f.read()

    def cached(self, key):
        """What memcached holds under `key`. A miss fills it without waiting
        (the set goes out just after the response): wait a little for it."""
        harness.wait_for(lambda: self.memcached.get(key) is not None, 2.0)
        return self.memcached.get(key)

    def test_a_small_file_is_filled_in_on_a_miss_and_then_served_from_memcached(self):
        a, b = self.server(), self.server()
        first = harness.http(a.port, 'GET', '/hot.bin')
        self.assertEqual(first.status, 200)
        self.assertEqual(first.body, self.file_bytes('hot.bin'))
        key = self.key('hot.bin', first)
        self.assertEqual(self.cached(key), self.file_bytes('hot.bin'), 'a did not fill the cache')
        # What memcached holds is what the other server sends: change it there
        # (not on disk) and b answers with it, whole and in ranges.
        planted = bytes(range(256)) * 16
        self.assertIn(b'STORED', self.memcached.set(key, planted))
        self.assertEqual(harness.http(b.port, 'GET', '/hot.bin').body, planted)
        ranged = harness.http(b.port, 'GET', '/hot.bin', {'Range': 'bytes=10-19'})
        self.assertEqual((ranged.status, ranged.body), (206, planted[10:20]))
        # A HEAD needs no body: served without one, as always.
        self.assertEqual(harness.http(b.port, 'HEAD', '/hot.bin').body, b'')

    def test_a_changed_file_is_a_new_key(self):
        a = self.server()
        old = harness.http(a.port, 'GET', '/hot.bin')
        new_content = os.urandom(4096)  # the same size: only the mtime tells
        path = os.path.join(self.env.www, 'hot.bin')
        with open(path, 'wb') as f:
            f.write(new_content)
        os.utime(path, ns=(time.time_ns(), time.time_ns() + 5_000_000_000))
        # The worker's open-file cache sees the change within a second.
        self.assertTrue(harness.wait_for(lambda: harness.http(a.port, 'GET', '/hot.bin').body == new_content, 5.0),
                        'the old body was still served')
        new = harness.http(a.port, 'GET', '/hot.bin')
        self.assertNotEqual(new.header('ETag'), old.header('ETag'))
        self.assertEqual(self.cached(self.key('hot.bin', new)), new_content)

    def test_big_files_and_awkward_names(self):
        a = self.server()
        big = harness.http(a.port, 'GET', '/big.bin')
        self.assertEqual(big.body, self.file_bytes('big.bin'))
        self.assertIsNone(self.memcached.get(self.key('big.bin', big)), 'a file over cache_max_file_size was cached')
        # A name with a space is kept under a hash; served from the cache all the same.
        self.assertEqual(harness.http(a.port, 'GET', '/a%20b.txt').body, self.file_bytes('a b.txt'))
        harness.wait_for(lambda: b'STAT curr_items 1\r\n' in self.memcached.command('stats'), 2.0)
        time.sleep(0.2)  # and nothing more comes
        stats = self.memcached.command('stats')
        self.assertIn(b'STAT curr_items 1\r\n', stats, 'expected the one small file only')
        self.assertEqual(harness.http(a.port, 'GET', '/a%20b.txt').body, self.file_bytes('a b.txt'))
        self.assertIn(b'STAT get_hits 1\r\n', self.memcached.command('stats'))

    def test_memcached_down_serves_from_disk(self):
        a = self.server()
        self.memcached.stop()
        for _ in range(3):
            self.assertEqual(harness.http(a.port, 'GET', '/hot.bin').body, self.file_bytes('hot.bin'))
        log = a.log()
        self.assertEqual(log.count('[memcache] cannot read the file cache'), 1, log)


def percentile(sorted_values, fraction):
    """The nearest-rank percentile of an ascending list."""
    rank = max(1, -(-len(sorted_values) * fraction // 1))  # ceil, at least the first
    return sorted_values[int(rank) - 1]


@unittest.skipUnless(shutil.which('memcached'), 'memcached is not installed (Debian package memcached)')
class SlowMemcached(unittest.TestCase):
    """memcached behind a relay that delays every packet by 50 ms each way: a
    shared slot (acquire and release) waits on it, but the worker's other
    connections must not. One server, one worker, two http_download ports on
    the same root: A with unique_ip (every GET takes a slot through the relay),
    B with no limits. While eight clients keep A's slots waiting on the relay,
    a client of B fetching a 4 KiB file on a keep-alive connection every 2 ms
    must see a p99 latency under 5 ms."""

    DELAY = 0.05           # per chunk, each way: a round trip through the relay is 100 ms
    A_CLIENTS = 8
    MEASURE_S = 3.0
    PACE_S = 0.002         # B sends a request every 2 ms (or at once when late)
    P99_LIMIT_MS = 5.0
    MIN_SAMPLES = 500

    def setUp(self):
        files = {'small.bin': 4096}
        files.update({'a%d.bin' % i: 4096 for i in range(self.A_CLIENTS)})
        self.env = harness.TestEnv(files)
        self.memcached = Memcached()
        self.relay = None
        self.server = None
        self.stop_load = threading.Event()
        self.load_threads = []
        self.addCleanup(self.cleanup)
        self.memcached.start()
        self.relay = DelayRelay(self.memcached.port, delay=self.DELAY).start()
        self.port_a, self.port_b = harness.free_port(), harness.free_port()
        text = '\n'.join([
            'workers: 1',
            'max_connections: 256',
            'shutdown_timeout: 5s',
            'state_dir: %s' % self.env.path('state'),
            'tracking: {enabled: false}',
            'log:',
            '  level: info',
            'protocols:',
            '  - module: http_download',
            '    host: 127.0.0.1',
            '    port: %d' % self.port_a,
            '    root: %s' % self.env.www,
            '    unique_ip: true',
            '  - module: http_download',
            '    host: 127.0.0.1',
            '    port: %d' % self.port_b,
            '    root: %s' % self.env.www,
            'plugins:',
            '  - module: memcache',
            '    servers: ["127.0.0.1:%d"]' % self.relay.port,
            '    prefix: "s%d:"' % os.getpid(),
            '    timeout: 1s',  # a round trip through the relay (100 ms) is not a timeout
            '',
        ])
        self.server = harness.Server(self.env, port=self.port_b, config=text, access_log=False)
        self.server.start()
        self.assertTrue(harness.wait_for(lambda: harness.port_accepts(self.port_a), 5.0), 'port A not open')

    def cleanup(self):
        self.stop_load.set()
        for t in self.load_threads:
            t.join(15)
        if self.server is not None:
            self.server.kill()
        if self.relay is not None:
            left = self.relay.stop()
            if left:
                sys.stderr.write('[relay] %d threads still alive\n' % len(left))
        self.memcached.stop()
        self.env.cleanup()

    def load_a(self, index, counts):
        """Fetch /a<index>.bin over A on a keep-alive connection until told to
        stop: each GET waits on the relay for its slot. Counts statuses,
        errors and wrong bodies into counts[index]."""
        path = '/a%d.bin' % index
        content = self.env.content['a%d.bin' % index]
        request = harness.request_bytes('GET', path, close=False)
        c = None
        mine = counts[index]
        while not self.stop_load.is_set():
            try:
                if c is None:
                    c = harness.Conn(self.port_a, timeout=10)
                c.send(request)
                r = c.read_response()
                mine[r.status] = mine.get(r.status, 0) + 1
                if r.status == 200 and r.body != content:
                    mine['wrong body'] = mine.get('wrong body', 0) + 1
                if r.header('connection', '').lower() == 'close':
                    c.close()
                    c = None
            except (OSError, ConnectionError, ValueError) as e:
                mine['error'] = mine.get('error', 0) + 1
                mine['last error'] = repr(e)
                if c is not None:
                    c.close()
                c = None
                self.stop_load.wait(0.05)
        if c is not None:
            c.close()

    def measure_b(self, duration):
        """Latencies (s) of GET /small.bin on one keep-alive connection to B,
        one request every PACE_S, for `duration` seconds."""
        content = self.env.content['small.bin']
        request = harness.request_bytes('GET', '/small.bin', close=False)
        latencies, bad = [], []
        with harness.Conn(self.port_b, timeout=10) as c:
            c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            first = next_at = time.monotonic()
            end = first + duration
            while True:
                now = time.monotonic()
                if now >= end:
                    break
                if next_at > now:
                    time.sleep(next_at - now)
                start = time.monotonic()
                try:
                    c.send(request)
                    r = c.read_response()
                except (OSError, ConnectionError, ValueError) as e:
                    # No answer within the connection's timeout (or none at
                    # all): a latency of at least that long, and the end.
                    latencies.append(time.monotonic() - start)
                    bad.append(repr(e))
                    break
                latencies.append(time.monotonic() - start)
                if r.status != 200 or r.body != content:
                    bad.append((r.status, len(r.body)))
                next_at = start + self.PACE_S
        return latencies, bad, time.monotonic() - first

    def test_limit_checks_waiting_on_memcached_do_not_hold_the_other_connections(self):
        counts = [dict() for _ in range(self.A_CLIENTS)]
        # Warm-up of B (its file in the open-file cache, the connection path hot).
        for _ in range(20):
            self.assertEqual(harness.http(self.port_b, 'GET', '/small.bin').body, self.env.content['small.bin'])
        # The load on A, started and seen answering before B is measured.
        for i in range(self.A_CLIENTS):
            t = threading.Thread(target=self.load_a, args=(i, counts), daemon=True)
            self.load_threads.append(t)
            t.start()
        answered = lambda: sum(1 for m in counts if m.get(200, 0) + m.get(429, 0) > 0)
        self.assertTrue(harness.wait_for(lambda: answered() >= self.A_CLIENTS // 2, 20.0),
                        'A clients got no answers: %r; log:\n%s' % (counts, self.server.log_tail()))
        self.measure_b(0.3)  # warm-up under load, not recorded
        before = [dict(m) for m in counts]
        relay_before = dict(self.relay.chunks)
        latencies, bad, elapsed = self.measure_b(self.MEASURE_S)
        during = {k: sum(m.get(k, 0) for m in counts) - sum(m.get(k, 0) for m in before)
                  for k in (200, 429, 'error', 'wrong body')}
        relay_chunks = {k: self.relay.chunks[k] - relay_before[k] for k in relay_before}
        self.stop_load.set()
        for t in self.load_threads:
            t.join(15)
        others = {k: v for m in counts for k, v in m.items() if k not in (200, 429)}

        ms = sorted(x * 1000 for x in latencies)
        p50, p99, worst = percentile(ms, 0.50), percentile(ms, 0.99), ms[-1]
        report = ('B (no limits, same worker): %d requests of 4 KiB in %.1f s, p50 %.3f ms, p99 %.3f ms, '
                  'max %.3f ms%s; A (unique_ip, memcached behind a %d ms relay) during it: %d x 200, '
                  '%d x 429, %d errors; relay chunks up/down %d/%d; A totals %r'
                  % (len(ms), elapsed, p50, p99, worst, ', B errors %r' % bad if bad else '', self.DELAY * 1000,
                     during[200], during[429], during['error'], relay_chunks['up'], relay_chunks['down'], counts))
        sys.stderr.write('\n[SlowMemcached] %s\n' % report)

        # A did work through the relay all along: its checks were waiting on memcached.
        self.assertGreater(during[200] + during[429], self.A_CLIENTS, report)
        self.assertGreater(during[200], 0, report)
        self.assertGreater(relay_chunks['up'], 0, report)
        self.assertGreater(relay_chunks['down'], 0, report)
        # The point: a slot waiting on memcached does not hold the worker's loop.
        self.assertLess(p99, self.P99_LIMIT_MS, report)
        self.assertGreaterEqual(len(ms), self.MIN_SAMPLES, report)
        self.assertEqual(bad, [], 'B answered wrongly: ' + report)
        self.assertEqual(others.get('wrong body', 0), 0, report)


@unittest.skipUnless(shutil.which('memcached'), 'memcached is not installed (Debian package memcached)')
class ConnectionsPerIpThroughMemcached(ConnectionsPerIp):
    """max_connections_per_ip with its counters in memcached: a new connection
    reads nothing until memcached has answered for its slot, then is served or
    refused exactly as with the server's own counters (test_limits)."""

    def setUp(self):
        self.memcached = Memcached()
        self.memcached.start()
        self.addCleanup(self.memcached.stop)
        self.env = harness.TestEnv({'big.bin': 64 * MIB, 'other.bin': 1 * MIB, 'small.bin': 4096})
        self.port = harness.free_port()
        text = harness.config_text(self.port, self.env.www, workers=self.workers,
                                   core_extra={'tracking': '{enabled: false}'}, **self.limits)
        text = text.replace('plugins: []', 'plugins:\n  - module: memcache\n    servers: ["127.0.0.1:%d"]\n'
                            '    prefix: "c%d:"\n' % (self.memcached.port, os.getpid()))
        self.server = harness.Server(self.env, port=self.port, config=text)
        self.server.start()
        self.server.wait_workers(self.workers)
        self.open = []

    def test_exact_at_the_boundary(self):
        super().test_exact_at_the_boundary()
        stats = self.memcached.command('stats')
        self.assertNotIn(b'STAT incr_hits 0\r\n', stats, 'memcached counted no connection')


class Config(unittest.TestCase):
    def test_defaults_are_valid_and_bad_values_are_named(self):
        env = harness.TestEnv({'small.bin': 16})
        try:
            def check(plugin_lines):
                text = harness.config_text(harness.free_port(), env.www).replace(
                    'plugins: []', 'plugins:\n  - module: memcache\n' + plugin_lines)
                path = harness.write_file(env.path('m.yaml'), text)
                return harness.run([harness.BINARY, '-t', '-c', path], timeout=20)
            r = check('    servers: ["127.0.0.1:11211"]\n')  # every other key at its default
            self.assertEqual(r.returncode, 0, r.stderr)
            r = check('    servers: ["127.0.0.1:99999"]\n')
            self.assertEqual(r.returncode, 1)
            self.assertIn('plugins[0].servers', r.stderr)
            r = check('    servers: ["127.0.0.1:11211"]\n    on_error: maybe\n')
            self.assertEqual(r.returncode, 1)
            self.assertIn('on_error: must be allow or deny', r.stderr)
            # A key memcached's text protocol cannot carry would make every call fail unseen.
            r = check('    servers: ["127.0.0.1:11211"]\n    prefix: "caf\u00e9:"\n')
            self.assertEqual(r.returncode, 1)
            self.assertIn('prefix: at most 64 characters', r.stderr)
            r = check('    servers: ["127.0.0.1:11211"]\n    cache_max_file_size: 2MiB\n')
            self.assertEqual(r.returncode, 1)
            self.assertIn('cache_max_file_size: at most', r.stderr)
        finally:
            env.cleanup()


if __name__ == '__main__':
    unittest.main()
