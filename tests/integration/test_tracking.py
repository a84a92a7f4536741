"""Download tracking, as far as it is built: the stats collector process
merges the requests of the workers into logical downloads and logs each
finished one ("Download finished: ..."). These tests read those log lines;
once the sqlite store and `smprotocol stats` exist they will read the
reports instead."""

import os
import re
import signal
import socket
import sqlite3
import subprocess
import time
import unittest

import harness
from harness import MIB

FINISHED = re.compile(
    r'Download finished: "(?P<path>[^"]*)" for (?P<ip>\S+) "(?P<agent>[^"]*)": (?P<reason>\w+), '
    r'(?P<coverage>[\d.]+)% of (?P<size>\d+) bytes, (?P<requests>\d+) request\(s\), (?P<resumes>\d+) resume\(s\)')


def finished_downloads(server, agent):
    return [m.groupdict() for m in FINISHED.finditer(server.log()) if m.group('agent') == agent]


def wait_finished(server, agent, count=1, timeout=15.0):
    return harness.wait_for(lambda: (lambda d: d if len(d) >= count else None)(finished_downloads(server, agent)),
                            timeout) or finished_downloads(server, agent)


class Tracking(unittest.TestCase):
    def setUp(self):
        self.env = harness.TestEnv({'big.bin': 20 * MIB, 'small.bin': 4096})
        self.server = self.start_server('1s')

    def tearDown(self):
        self.server.kill()
        self.env.cleanup()

    def start_server(self, idle_window):
        server = harness.Server(self.env, workers=2,
                                core_extra={'tracking': '{enabled: true, idle_window: %s}' % idle_window})
        return server.start()

    def test_collector_is_a_named_child_beside_the_workers(self):
        self.assertIsNotNone(self.server.wait_collector(), harness.children_of(self.server.pid))
        self.assertEqual(len(self.server.wait_workers(2)), 2)

    def test_aria2c_segments_are_one_completed_download(self):
        out = self.env.path('aria')
        r = harness.run(['aria2c', '-q', '-x8', '-s8', '-k1M', '--user-agent=seg-test', '--allow-overwrite=true',
                         '--auto-file-renaming=false', '--file-allocation=none', '-d', out, '-o', 'big.bin',
                         self.server.url('/big.bin')], timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(harness.sha256_file(os.path.join(out, 'big.bin')),
                         harness.sha256_bytes(self.env.content['big.bin']))
        downloads = wait_finished(self.server, 'seg-test')
        time.sleep(1.5)  # a second line would have appeared by now
        downloads = finished_downloads(self.server, 'seg-test')
        self.assertEqual(len(downloads), 1, downloads)
        self.assertEqual(downloads[0]['reason'], 'completed')
        self.assertEqual(downloads[0]['coverage'], '100.0')
        self.assertGreaterEqual(int(downloads[0]['requests']), 8)

    def test_wget_cut_and_resumed_is_one_download(self):
        target = self.env.path('wget')
        os.makedirs(target)
        cut = harness.spawn(['wget', '-q', '-U', 'wget-resume', '--limit-rate=4m', '-P', target,
                             self.server.url('/big.bin')])
        time.sleep(1.5)
        cut.kill()
        cut.wait(timeout=5)
        partial = os.path.getsize(os.path.join(target, 'big.bin'))
        self.assertLess(partial, 20 * MIB, 'the first wget was not cut')
        r = harness.run(['wget', '-q', '-c', '-U', 'wget-resume', '-P', target, self.server.url('/big.bin')],
                        timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(harness.sha256_file(os.path.join(target, 'big.bin')),
                         harness.sha256_bytes(self.env.content['big.bin']))
        downloads = wait_finished(self.server, 'wget-resume')
        self.assertEqual(len(downloads), 1, downloads)
        self.assertEqual(downloads[0]['reason'], 'completed')
        self.assertGreaterEqual(int(downloads[0]['requests']), 2)
        self.assertGreaterEqual(int(downloads[0]['resumes']), 1)

    def slow_client(self, agent):
        """A client with a small, fixed receive buffer: the kernel cannot
        take the whole file at once (loopback autotuning here grows a
        receive buffer to 32 MiB), so the server sends as the client reads."""
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        s.settimeout(5)
        s.connect(('127.0.0.1', self.server.port))
        s.sendall(harness.request_bytes('GET', '/big.bin', {'User-Agent': agent}))
        return s

    def test_client_gone_halfway_is_an_incomplete_download(self):
        with self.slow_client('halfway') as s:
            received = 0
            while received < 10 * MIB:
                received += len(s.recv(65536))
        downloads = wait_finished(self.server, 'halfway')
        self.assertEqual(len(downloads), 1, downloads)
        self.assertEqual(downloads[0]['reason'], 'client_closed')
        # What the server handed to the kernel: what was read, plus the socket buffers.
        self.assertGreaterEqual(float(downloads[0]['coverage']), 45.0)
        self.assertLess(float(downloads[0]['coverage']), 90.0)

    def test_head_304_and_404_are_not_downloads(self):
        port = self.server.port
        ua = {'User-Agent': 'not-a-download'}
        etag = harness.http(port, 'HEAD', '/small.bin', ua).header('etag')
        self.assertEqual(harness.http(port, 'GET', '/small.bin', dict(ua, **{'If-None-Match': etag})).status, 304)
        self.assertEqual(harness.http(port, 'GET', '/missing.bin', ua).status, 404)
        time.sleep(3)  # past the idle window and a collector tick
        self.assertEqual(finished_downloads(self.server, 'not-a-download'), [])

    def test_each_status_is_stored_with_its_reason(self):
        # One mapping of status to end reason for every module; a 505 was
        # stored as `completed`.
        port = self.server.port
        cases = [
            (b'GET /small.bin HTTP/1.1\r\nHost: a\r\nUser-Agent: s200\r\n\r\n', 200, 'completed'),
            (b'GET /missing.bin HTTP/1.1\r\nHost: a\r\nUser-Agent: s404\r\n\r\n', 404, 'not_found'),
            (b'DELETE /small.bin HTTP/1.1\r\nHost: a\r\nUser-Agent: s405\r\n\r\n', 405, 'method_not_allowed'),
            (b'GET /small.bin HTTP/1.1\r\nHost: a\r\nUser-Agent: s416\r\nRange: bytes=9000-\r\n\r\n', 416,
             'range_not_satisfiable'),
            (b'GET /small.bin HTTP/2.0\r\nHost: a\r\nUser-Agent: s505\r\n\r\n', 505, 'bad_request'),
        ]
        for request, status, _ in cases:
            self.assertEqual(harness.raw_request(port, request).status, status, request)
        self.assertEqual(self.server.terminate(), 0, self.server.log_tail())
        db = sqlite3.connect(self.env.path('state', 'stats.db'))
        try:
            stored = dict(db.execute('SELECT status, reason FROM requests').fetchall())
        finally:
            db.close()
        for _, status, reason in cases:
            self.assertEqual(stored.get(status), reason, status)

    def test_worker_killed_mid_download_is_worker_lost(self):
        with self.slow_client('lost') as s:
            deadline = time.monotonic() + 2.5  # long enough for progress records to reach the collector
            while time.monotonic() < deadline:
                s.recv(65536)
                time.sleep(0.01)
            holders = harness.pids_holding_connections(self.server.port, self.server.workers())
            self.assertEqual(len(holders), 1, 'no worker holds the download')
            os.kill(holders[0], signal.SIGKILL)
        downloads = wait_finished(self.server, 'lost')
        self.assertEqual(len(downloads), 1, self.server.log_tail(30))
        self.assertEqual(downloads[0]['reason'], 'worker_lost')
        self.assertLess(float(downloads[0]['coverage']), 100.0)

    def test_graceful_stop_finishes_open_downloads(self):
        self.server.kill()
        self.server = self.start_server('1h')
        for agent in ('stop-a', 'stop-b'):
            harness.http(self.server.port, 'GET', '/small.bin', {'User-Agent': agent})
        self.assertEqual(finished_downloads(self.server, 'stop-a'), [])  # the window is an hour
        self.assertEqual(self.server.terminate(), 0, self.server.log_tail())
        for agent in ('stop-a', 'stop-b'):
            downloads = finished_downloads(self.server, agent)
            self.assertEqual(len(downloads), 1, (agent, self.server.log_tail()))
            self.assertEqual(downloads[0]['reason'], 'completed')
        self.assertIn('Stats collector (pid', self.server.log())


class GeoAndProxies(unittest.TestCase):
    """Geo-IP from MaxMind databases the test writes, and X-Forwarded-For
    believed only from trusted proxies."""

    def setUp(self):
        self.env = harness.TestEnv({'small.bin': 4096})
        here = os.path.dirname(os.path.abspath(__file__))
        self.city = self.env.path('city.mmdb')
        self.asn = self.env.path('asn.mmdb')
        for kind, out in (('city', self.city), ('asn', self.asn)):
            r = harness.run(['perl', os.path.join(here, 'make_mmdb.pl'), kind, out], timeout=30)
            self.assertEqual(r.returncode, 0, r.stderr)
        self.servers = []

    def tearDown(self):
        for server in self.servers:
            server.kill()
        self.env.cleanup()

    def start(self, trusted):
        extra = {'tracking': '{enabled: true, idle_window: 1s}',
                 'geoip': '{city_db: %s, asn_db: %s}' % (self.city, self.asn),
                 'trusted_proxies': trusted}
        server = harness.Server(self.env, workers=1, core_extra=extra)
        self.servers.append(server)
        return server.start()

    def test_forwarded_client_from_trusted_proxy_is_located(self):
        server = self.start('[127.0.0.0/8]')
        for agent, header in (('via-xff', 'X-Forwarded-For'), ('via-forwarded', 'Forwarded')):
            value = '203.0.113.9, 127.0.0.1' if header == 'X-Forwarded-For' else 'for=203.0.113.9;proto=http'
            self.assertEqual(harness.http(server.port, 'GET', '/small.bin',
                                          {'User-Agent': agent, header: value}).status, 200)
        for agent in ('via-xff', 'via-forwarded'):
            downloads = wait_finished(server, agent)
            self.assertEqual(len(downloads), 1, server.log_tail())
            self.assertEqual(downloads[0]['ip'], '203.0.113.9')
            line = [l for l in server.log().splitlines() if '"%s"' % agent in l and 'Download finished' in l][0]
            self.assertIn('from FR Paris (48.8566, 2.3522), AS64500 "Example Transit"', line)

    def test_same_header_from_untrusted_peer_is_ignored(self):
        server = self.start('[10.0.0.0/8]')
        harness.http(server.port, 'GET', '/small.bin', {'User-Agent': 'untrusted', 'X-Forwarded-For': '203.0.113.9'})
        downloads = wait_finished(server, 'untrusted')
        self.assertEqual(len(downloads), 1, server.log_tail())
        self.assertEqual(downloads[0]['ip'], '127.0.0.1')
        self.assertNotIn('from FR', server.log())

    def test_missing_database_warns_once_and_serves(self):
        extra = {'tracking': '{enabled: true, idle_window: 1s}', 'geoip': '{city_db: %s}' % self.env.path('no.mmdb')}
        server = harness.Server(self.env, workers=2, core_extra=extra)
        self.servers.append(server)
        server.start()
        self.assertEqual(harness.http(server.port, 'GET', '/small.bin', {'User-Agent': 'no-geo'}).status, 200)
        self.assertEqual(len(wait_finished(server, 'no-geo')), 1)
        self.assertEqual(server.log().count('geoip.city_db: cannot open'), 1, server.log_tail())


if __name__ == '__main__':
    unittest.main()
