"""Limits of the embedded layer (counters in shared memory, one server):
unique_ip and max_connections_per_ip, answered with 429 and Retry-After,
recorded with reason rejected_limit, and freed however a transfer ends."""

import json
import os
import signal
import socket
import sqlite3
import subprocess
import threading
import time
import unittest

import harness
from harness import MIB


def slow_download(port, path, agent='holder'):
    """A GET whose client reads a little and then stops reading: the server
    stays busy sending it (its socket buffers are full) until it is closed."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 * 1024)
    s.settimeout(5)
    s.connect(('127.0.0.1', port))
    s.sendall(harness.request_bytes('GET', path, {'User-Agent': agent}, close=False))
    head = b''
    while b'\r\n\r\n' not in head:
        head += s.recv(4096)
    if not head.startswith(b'HTTP/1.1 200'):
        s.close()
        raise AssertionError(head[:100])
    return s


def admitted_connections(port, count):
    """`count` keep-alive connections, each answered 200 for /small.bin; None
    while the connections of the harness's start-up probe are not closed on
    the server's side yet."""
    conns = [harness.Conn(port) for _ in range(count)]
    statuses = []
    for c in conns:
        c.send(harness.request_bytes('GET', '/small.bin', close=False))
        statuses.append(c.read_response().status)
    if statuses == [200] * count:
        return conns
    for c in conns:
        c.close()
    return None


def one_more_fits(port):
    c = harness.Conn(port)
    c.send(harness.request_bytes('GET', '/small.bin'))
    ok = c.read_response().status == 200
    c.close()
    time.sleep(0.05)
    return ok


class Limits(unittest.TestCase):
    workers = 2
    limits = {}

    def setUp(self):
        self.env = harness.TestEnv({'big.bin': 64 * MIB, 'other.bin': 1 * MIB, 'small.bin': 4096})
        self.port = harness.free_port()
        text = harness.config_text(self.port, self.env.www, workers=self.workers,
                                   core_extra={'tracking': '{enabled: true, idle_window: 1s}'}, **self.limits)
        self.server = harness.Server(self.env, port=self.port, config=text)
        self.server.start()
        self.server.wait_workers(self.workers)
        self.open = []

    def tearDown(self):
        for s in self.open:
            s.close()
        self.server.kill()
        self.env.cleanup()

    def get(self, path, headers=None):
        """A GET of the first 100 bytes (a download too, and quick to read)."""
        return harness.http(self.port, 'GET', path,
                            dict({'User-Agent': 'probe', 'Range': 'bytes=0-99'}, **(headers or {})))

    def stats(self, report):
        config = self.server.config_path
        r = subprocess.run([harness.BINARY, 'stats', '--config', config, '--json', report], capture_output=True,
                           text=True, timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr)
        return json.loads(r.stdout)['rows']


class UniqueIp(Limits):
    limits = {'unique_ip': 'true'}

    def test_second_concurrent_download_is_refused_on_every_worker(self):
        holder = slow_download(self.port, '/big.bin')
        self.open.append(holder)
        # New connections are spread over both workers by SO_REUSEPORT, by a
        # hash of their ports: 24 all land on one worker about once in eight
        # million runs (12, once in 2048).
        for _ in range(24):
            r = self.get('/big.bin')
            self.assertEqual(r.status, 429)
            self.assertEqual(r.header('retry-after'), '10')
        self.assertEqual(self.get('/other.bin').status, 206)  # another file
        self.assertEqual(harness.http(self.port, 'HEAD', '/big.bin').status, 200)  # a HEAD downloads nothing
        self.assertEqual(self.get('/big.bin', {'X-Forwarded-For': '203.0.113.7'}).status, 429)  # untrusted header
        holder.close()
        self.open.remove(holder)
        # Until the worker has seen the close, a try is refused (and recorded) too.
        refused = 25
        def freed():
            nonlocal refused
            status = self.get('/big.bin').status
            refused += status == 429
            return status == 206
        self.assertTrue(harness.wait_for(freed, 5.0), 'the slot was not freed when the first download ended')
        self.assertEqual(self.server.terminate(), 0, self.server.log_tail())
        # Refused on both workers (the counters are shared), recorded, and never a download.
        db = sqlite3.connect(self.env.path('state', 'stats.db'))
        try:
            rows = db.execute("SELECT worker_id, reason FROM requests WHERE status = 429").fetchall()
        finally:
            db.close()
        self.assertEqual(len(rows), refused)
        self.assertEqual({reason for _, reason in rows}, {'rejected_limit'})
        self.assertEqual({worker for worker, _ in rows}, {1, 2})
        reasons = {row['reason']: row for row in self.stats('reasons')}
        self.assertEqual(reasons['rejected_limit']['requests'], refused)
        self.assertEqual(reasons['rejected_limit']['downloads'], 0)

    def test_worker_killed_while_holding_a_slot_frees_it(self):
        holder = slow_download(self.port, '/big.bin')
        self.open.append(holder)
        self.assertEqual(self.get('/big.bin').status, 429)
        [pid] = harness.pids_holding_connections(self.port, self.server.workers())
        os.kill(pid, signal.SIGKILL)
        # Reaped by the master, which then (and only then) marks the dead
        # worker's slots orphaned; it logs the death right after.
        self.assertTrue(harness.wait_for(lambda: '(pid %d) was killed' % pid in self.server.log(), 5.0))
        self.assertEqual(self.get('/big.bin').status, 206)

    def test_a_download_held_across_a_reload_still_counts(self):
        holder = slow_download(self.port, '/big.bin')
        self.open.append(holder)
        os.kill(self.server.pid, signal.SIGHUP)
        self.assertTrue(harness.wait_for(lambda: 'Reloaded: ' in self.server.log(), 15.0), self.server.log_tail())
        # The old worker still sends the download; the new workers know of it.
        for _ in range(6):
            self.assertEqual(self.get('/big.bin').status, 429)
        holder.close()
        self.open.remove(holder)
        self.assertTrue(harness.wait_for(lambda: self.get('/big.bin').status == 206, 5.0),
                        'the slot was not freed when the download ended')


class ConnectionsPerIp(Limits):
    limits = {'max_connections_per_ip': 3}

    def test_exact_at_the_boundary(self):
        conns = harness.wait_for(lambda: admitted_connections(self.port, 3), 5.0, interval=0.1)
        self.assertTrue(conns, 'three connections were never admitted')
        fourth = harness.Conn(self.port)
        fourth.send(harness.request_bytes('GET', '/small.bin', close=False))
        r = fourth.read_response()
        self.assertEqual(r.status, 429)
        self.assertEqual(r.header('retry-after'), '10')
        self.assertEqual(r.header('connection'), 'close')
        self.assertTrue(fourth.closed_by_peer())
        fourth.close()
        conns[0].close()
        # The closed connection's slot is free again: exactly one more fits.
        again = harness.wait_for(lambda: one_more_fits(self.port), 5.0)
        self.assertTrue(again, 'a slot was not freed by a closed connection')
        for c in conns[1:]:
            c.close()



def timed_get(port, path, agent='timed'):
    """Seconds until the whole response arrived, and the response."""
    s = socket.create_connection(('127.0.0.1', port), timeout=30)
    s.sendall(harness.request_bytes('GET', path, {'User-Agent': agent}))
    start = time.monotonic()
    data = bytearray()
    while True:
        chunk = s.recv(1 << 16)
        if not chunk:
            break
        data += chunk
    s.close()
    return time.monotonic() - start, bytes(data)


class RatePerRequest(Limits):
    limits = {'limit_rate': '1MiB', 'limit_rate_after': '2MiB'}

    def setUp(self):
        super().setUp()
        self.env.add_file('seven.bin', os.urandom(7 * MIB))

    def test_rate_after_the_free_bytes_within_ten_percent(self):
        # 2 MiB at once, then 5 MiB at 1 MiB/s: 5 s.
        seconds, data = timed_get(self.port, '/seven.bin')
        self.assertTrue(data.startswith(b'HTTP/1.1 200'), data[:80])
        self.assertEqual(harness.sha256_bytes(data.split(b'\r\n\r\n', 1)[1]), harness.sha256_bytes(self.env.content['seven.bin']))
        self.assertGreater(seconds, 4.5)
        self.assertLess(seconds, 5.5)


class RatePerDownload(Limits):
    limits = {'limit_rate_per_download': '2MiB'}

    def setUp(self):
        super().setUp()
        self.env.add_file('ten.bin', os.urandom(10 * MIB))

    def test_segments_share_one_budget(self):
        # aria2c's 8 connections draw from one budget: 10 MiB at 2 MiB/s is
        # 5 s (less the tenth of a second of burst), not 8 times faster.
        out = self.env.path('aria')
        start = time.monotonic()
        r = harness.run(['aria2c', '-q', '-x8', '-s8', '-k1M', '--allow-overwrite=true', '--file-allocation=none',
                         '-d', out, '-o', 'ten.bin', self.server.url('/ten.bin')], timeout=60)
        seconds = time.monotonic() - start
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(harness.sha256_file(os.path.join(out, 'ten.bin')), harness.sha256_bytes(self.env.content['ten.bin']))
        self.assertGreater(seconds, 4.5)
        self.assertLess(seconds, 5.5)

    def test_two_clients_have_a_budget_each(self):
        # Two downloads of 5 MiB by two user agents at once: 2.5 s each, side by side.
        self.env.add_file('five.bin', os.urandom(5 * MIB))
        results = {}
        threads = [threading.Thread(target=lambda a=a: results.__setitem__(a, timed_get(self.port, '/five.bin', a)))
                   for a in ('first', 'second')]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        for agent in ('first', 'second'):
            seconds, data = results[agent]
            self.assertTrue(data.startswith(b'HTTP/1.1 200'), data[:80])
            self.assertGreater(seconds, 2.2)
            self.assertLess(seconds, 3.0)


class WorkersKilledUnderLoad(Limits):
    """The reproduction of a freeze: a worker killed with SIGKILL while it held
    the lock of the limit tables left every other worker, and every
    replacement, waiting for it for ever. Workers are killed at random every
    50-100 ms while wrk runs with the three limits on; afterwards every worker
    answers, and no slot of a dead worker is still held."""
    workers = 4
    limits = {'unique_ip': 'true', 'max_connections_per_ip': 64, 'limit_rate_per_download': '100MiB'}

    def test_no_freeze_and_no_slot_left(self):
        import random
        rng = random.Random(7)
        wrk = subprocess.Popen(['wrk', '-t1', '-c16', '-d10s', 'http://127.0.0.1:%d/small.bin' % self.port],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            time.sleep(0.5)
            killed = 0
            deadline = time.monotonic() + 5.0
            while time.monotonic() < deadline:
                workers = self.server.workers()
                if workers:
                    try:
                        os.kill(rng.choice(workers), signal.SIGKILL)
                        killed += 1
                    except ProcessLookupError:
                        pass
                time.sleep(rng.uniform(0.05, 0.1))
            self.assertGreater(killed, 15)
            # Replacements of workers that died young start after a back-off.
            self.assertEqual(len(self.server.wait_workers(self.workers, timeout=20.0)), self.workers,
                             self.server.log_tail())
            # Every worker answers while the load goes on (206, or 429 when
            # wrk's connections and downloads fill the limits): none waits on
            # a dead one's lock.
            for i in range(40):
                status = harness.http(self.port, 'GET', '/other.bin',
                                      {'User-Agent': 'after-%d' % i, 'Range': 'bytes=0-99'}, timeout=3).status
                self.assertIn(status, (206, 429))
        finally:
            out, _ = wrk.communicate(timeout=30)
        self.assertIn('requests in', out)
        # Nothing a dead worker held still counts: one client's download of
        # small.bin is admitted, and 48 connections of one client too (a dead
        # worker held about 4 of them, and 20 or more were killed).
        self.assertTrue(harness.wait_for(lambda: self.get('/small.bin').status == 206, 5.0), self.server.log_tail())
        conns = harness.wait_for(lambda: admitted_connections(self.port, 48), 15.0)
        self.assertIsNotNone(conns, 'slots of dead workers still held')
        for c in conns:
            c.close()


if __name__ == '__main__':
    unittest.main()
