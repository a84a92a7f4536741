"""The stats collector's memory is bounded: a crawler (or an attack) sending
requests with a distinct user agent each makes a new logical download per
request. Past `tracking.max_open_downloads` the least recently active one is
finished early (stored with finished 1 and its reason), so the collector's
memory stays flat, the store never shows more open downloads than the cap,
and the collector idles at ~0 CPU afterwards: its once-a-second tick costs by
what changed, not by what is open."""

import os
import re
import socket
import sqlite3
import threading
import time
import unittest

import harness

CAP = 2000
REQUESTS = 60000
RATE = 5000  # requests a second: a second's batch is small beside what 60000 open downloads take
PIPELINE = 100  # requests written at once on a keep-alive connection
CONNECTIONS = 2
# A crawler's user agent, as long as a browser's, and distinct per request.
AGENT = 'Mozilla/5.0 (X11; Linux x86_64; rv:109.0) Gecko/20100101 Firefox/115.0 crawler-%06d (+https://example.invalid/bot)'
CONTENT_LENGTH = re.compile(rb'\r\ncontent-length: *(\d+)', re.IGNORECASE)


def rss_kib(pid):
    """RssAnon of a process, in KiB (0 when it is gone): its own memory. The
    collector also maps the workers' record logs, whose pages it reads count
    in VmRSS as file pages: they are the kernel's page cache, shared with the
    workers, and bounded by tracking.log_size, not by what the collector holds."""
    try:
        with open('/proc/%d/status' % pid) as f:
            for line in f:
                if line.startswith('RssAnon:'):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def cpu_seconds(pid):
    """utime + stime of a process (all its threads), in seconds."""
    with open('/proc/%d/stat' % pid, 'rb') as f:
        fields = f.read().decode('ascii', 'replace').rsplit(')', 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')


def crawl(port, numbers, rate, deadline):
    """GETs with a distinct agent each on one keep-alive connection, PIPELINE
    at a time, `rate` a second: even numbers ask for the whole file, odd ones
    for its first 10 bytes. Returns how many responses arrived."""
    answered = 0
    began = time.monotonic()
    with socket.create_connection(('127.0.0.1', port), timeout=10) as s:
        buffer = b''
        for start in range(0, len(numbers), PIPELINE):
            time.sleep(max(0.0, began + start / rate - time.monotonic()))
            chunk = numbers[start:start + PIPELINE]
            s.sendall(b''.join(harness.request_bytes(
                'GET', '/file.bin', dict({'User-Agent': AGENT % n}, **({'Range': 'bytes=0-9'} if n % 2 else {})),
                close=False) for n in chunk))
            expected = answered + len(chunk)
            while answered < expected:
                if time.monotonic() > deadline:
                    raise AssertionError('the server answered %d of %d requests in time' % (answered, len(numbers)))
                end = buffer.find(b'\r\n\r\n')
                if end >= 0:
                    length = int(CONTENT_LENGTH.search(buffer, 0, end + 2).group(1))
                    if len(buffer) >= end + 4 + length:
                        assert buffer.startswith((b'HTTP/1.1 200', b'HTTP/1.1 206')), buffer[:100]
                        buffer = buffer[end + 4 + length:]
                        answered += 1
                        continue
                data = s.recv(1 << 16)
                if not data:
                    raise AssertionError('the server closed after %d responses' % answered)
                buffer += data
    return answered


class CollectorMemory(unittest.TestCase):
    def setUp(self):
        self.env = harness.TestEnv({'file.bin': 1000})
        self.server = harness.Server(
            self.env, workers=1, log_level='warn', access_log=False,
            core_extra={'tracking': '{enabled: true, idle_window: 30m, max_open_downloads: %d}' % CAP})
        self.server.start()
        self.db = os.path.join(self.env.dir, 'state', 'stats.db')

    def tearDown(self):
        try:
            self.server.terminate(timeout=20)
        finally:
            self.server.kill()
            self.env.cleanup()

    def query(self, sql):
        db = sqlite3.connect('file:%s?mode=ro' % self.db, uri=True, timeout=5)
        try:
            return db.execute(sql).fetchone()[0]
        finally:
            db.close()

    def open_in_store(self):
        try:
            return self.query('SELECT count(*) FROM downloads WHERE finished = 0')
        except sqlite3.Error:
            return 0  # not created yet, or busy for a moment

    def test_distinct_agents_past_the_cap_keep_memory_and_idle_cpu_flat(self):
        collector = self.server.wait_collector()
        self.assertIsNotNone(collector)
        # The store made its tables: the collector's memory has its steady part.
        harness.wait_for(lambda: os.path.exists(self.db) and self.query("SELECT count(*) FROM sqlite_master"), 10)
        rss_before = rss_kib(collector)

        samples = {'rss': rss_before, 'open': 0}
        done = threading.Event()

        def watch():
            while not done.is_set():
                samples['rss'] = max(samples['rss'], rss_kib(collector))
                samples['open'] = max(samples['open'], self.open_in_store())
                time.sleep(0.2)

        watcher = threading.Thread(target=watch)
        watcher.start()
        try:
            deadline = time.monotonic() + 45
            answered = [0] * CONNECTIONS
            numbers = list(range(REQUESTS))

            def client(i):
                answered[i] = crawl(self.server.port, numbers[i::CONNECTIONS], RATE / CONNECTIONS, deadline)

            clients = [threading.Thread(target=client, args=(i,)) for i in range(CONNECTIONS)]
            for c in clients:
                c.start()
            for c in clients:
                c.join()
            self.assertEqual(sum(answered), REQUESTS)
            # Every request's download reaches the store: the open ones and the finished ones.
            stored = harness.wait_for(
                lambda: (lambda n: n if n >= REQUESTS else None)(self.query('SELECT count(*) FROM downloads')), 20)
            dropped = 'stats collector not keeping up' in self.server.log()
            if not dropped:
                self.assertEqual(stored, REQUESTS, self.server.log_tail())
            time.sleep(1.5)  # the last batch
        finally:
            done.set()
            watcher.join()

        # The store never showed more open downloads than the cap, and shows the cap now.
        self.assertLessEqual(samples['open'], CAP)
        self.assertEqual(self.open_in_store(), CAP)
        # The ones finished early (the idle window is 30 minutes) say why they ended.
        finished = self.query('SELECT count(*) FROM downloads WHERE finished = 1')
        self.assertGreaterEqual(finished, (REQUESTS - CAP) * 9 // 10)
        self.assertEqual(self.query("SELECT count(*) FROM downloads WHERE finished = 1 AND completed = 1 "
                                    "AND reason != 'completed'"), 0)
        self.assertEqual(self.query("SELECT count(*) FROM downloads WHERE finished = 1 AND completed = 0 "
                                    "AND reason != 'tracking_cap'"), 0,
                         self.query("SELECT group_concat(reason || ':' || n) FROM (SELECT reason, count(*) AS n "
                                    "FROM downloads WHERE finished = 1 AND completed = 0 GROUP BY reason)"))
        self.assertGreater(self.query("SELECT count(*) FROM downloads WHERE finished = 1 AND completed = 0"), 0)
        # Said once (a line a minute at most while it lasts), not once per download.
        lines = re.findall(r'open downloads at the cap \(%d\): finishing the oldest early' % CAP, self.server.log())
        self.assertEqual(len(lines), 1, self.server.log_tail())

        # Memory: what 2000 open downloads take, with the batches of a second
        # and the store's page cache (16 MiB); not what 60000 open downloads
        # would (about 50 MiB more, measured on the code before the cap).
        rss_after = rss_kib(collector)
        growth_mib = (max(samples['rss'], rss_after) - rss_before) / 1024
        memory = 'collector RSS %d KiB before, %d KiB at most, %d KiB after' % (rss_before, samples['rss'], rss_after)
        print(memory)
        # Under AddressSanitizer freed memory waits in a quarantine and every
        # byte has a shadow: RSS says nothing about the collector's own use.
        if not os.environ.get('SMP_SANITIZED'):
            self.assertLess(growth_mib, 55, memory)

        # Idle: the tick looks at nothing when nothing changed. (Walking 2000
        # open downloads a second would cost far less than this bound: the
        # unit tests count what a tick visits.)
        # AddressSanitizer makes every instruction dearer (CI measured 2.00%
        # there, 6 clock ticks in 3 s), so its pass gets a wider bound.
        before = cpu_seconds(collector)
        time.sleep(5)
        idle_share = (cpu_seconds(collector) - before) / 5
        print('collector CPU while idle: %.2f%%' % (idle_share * 100))
        self.assertLess(idle_share, 0.05 if os.environ.get('SMP_SANITIZED') else 0.02)


if __name__ == '__main__':
    harness.main()
