"""Slow clients must not starve a normal one: Debian's slowhttptest opens
slowloris connections (a request head trickled a line at a time) and slow
read connections (a small receive window, a few bytes read every two seconds,
three pipelined requests of a 64 MiB file), more than the workers hold,
against a server with the default-like configuration (2 workers,
max_connections 1024, http_download). Meanwhile a normal client fetches a
1 MiB file every second: each fetch must complete, intact, in under 1 s.

The attack is proven to have happened: slowhttptest made every connection,
the established connections on the server's port, counted during it (`ss`),
pass 1,500, and the server logged that its workers were full. Every figure
is printed, so a failure shows its second. The defences: docs/http.md,
"Slow clients"."""

import hashlib
import os
import re
import resource
import shutil
import socket
import statistics
import subprocess
import time
import unittest

import harness
from harness import MIB

SLOWHTTPTEST = shutil.which('slowhttptest') or '/usr/bin/slowhttptest'
FETCH_LIMIT_S = 1.0     # what the issue asks of the normal client
WORKERS = 2
MAX_CONNECTIONS = 1024  # per worker, harness.config_text's and the core's default
WANTED_FILES = 16384    # the attack's descriptors, the server's, and room
# slowhttptest's slow read: a receive window of 16 to 64 bytes, 32 bytes read
# every 2 s (16 B/s), three pipelined requests of the 64 MiB file.
SLOW_READ = ['-X', '-r', '1000', '-n', '2', '-w', '16', '-y', '64', '-z', '32', '-k', '3']
# Its slowloris: a header line of up to 24 bytes every 3 s, never the blank line.
SLOWLORIS = ['-H', '-i', '3', '-x', '24']


def raise_file_limit(wanted):
    """Raise RLIMIT_NOFILE (inherited by slowhttptest and the server) to
    `wanted`, the hard limit too where allowed (root); returns the soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, wanted))
            return wanted
        except (ValueError, OSError):
            pass
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def established(port):
    """Established TCP connections whose local port is the server's."""
    p = harness.run(['ss', '-Htn', 'state', 'established', '( sport = :%d )' % port], timeout=10)
    return len(p.stdout.splitlines()) if p.returncode == 0 else -1


def fetch(port, path, timeout):
    """GET `path` on a new connection: (seconds, status, sha256 of the body, error)."""
    start = time.monotonic()
    try:
        with socket.create_connection(('127.0.0.1', port), timeout=timeout) as s:
            s.settimeout(max(0.1, timeout - (time.monotonic() - start)))
            s.sendall(harness.request_bytes('GET', path, {'User-Agent': 'normal-client'}))
            chunks = []
            while True:
                chunk = s.recv(1 << 20)
                if not chunk:
                    break
                chunks.append(chunk)
                if time.monotonic() - start > timeout:
                    raise TimeoutError('still receiving after %.1f s' % timeout)
        data = b''.join(chunks)
        head, _, body = data.partition(b'\r\n\r\n')
        status = int(head.split(b' ', 2)[1]) if head.startswith(b'HTTP/1.1 ') else 0
        return time.monotonic() - start, status, hashlib.sha256(body).hexdigest(), None
    except OSError as error:
        return time.monotonic() - start, 0, None, repr(error)


def slowhttptest(mode_args, connections, seconds, url, log_path, files):
    """slowhttptest in the background, with its own descriptor limit."""
    command = [SLOWHTTPTEST, *mode_args, '-c', str(connections), '-l', str(seconds), '-p', '3', '-u', url]
    shell = 'ulimit -n %d && exec %s' % (files, ' '.join(command))
    with open(log_path, 'wb') as log:
        return harness.spawn(['bash', '-c', shell], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)


def attack_status(log_path):
    """slowhttptest's (connected, closed) figures, every five seconds: a
    connection the server closed counts as closed, one it never took as error."""
    with open(log_path, 'rb') as f:
        text = re.sub(r'\x1b\[[0-9;]*m', '', f.read().decode('utf-8', 'replace'))
    return [(int(a), int(b)) for a, b in re.findall(r'connected:\s+(\d+)\s+error:\s+\d+\s+closed:\s+(\d+)', text)]


@unittest.skipUnless(os.path.exists(SLOWHTTPTEST), 'slowhttptest is not installed (scripts/deps.sh test)')
class SlowClients(unittest.TestCase):
    def setUp(self):
        self.files = raise_file_limit(WANTED_FILES)
        self.assertGreaterEqual(self.files, 4096 + WORKERS * MAX_CONNECTIONS,
                                'RLIMIT_NOFILE is %d: too low for the attack' % self.files)
        self.env = harness.TestEnv({'medium.bin': 1 * MIB, 'big.bin': 64 * MIB})
        self.expected = hashlib.sha256(self.env.content['medium.bin']).hexdigest()
        self.port = harness.free_port()
        # The module's defaults, written out: a total header deadline of 10 s,
        # 75 s keep-alive, 60 s send timeout, 2 MiB per sendfile turn.
        text = harness.config_text(self.port, self.env.www, workers=WORKERS, block_size='2MiB',
                                   header_timeout='10s', keepalive_timeout='75s', send_timeout='60s')
        self.assertIn('max_connections: %d' % MAX_CONNECTIONS, text)
        self.server = harness.Server(self.env, port=self.port, config=text)
        self.server.start()
        self.server.wait_workers(WORKERS)
        self.attackers = []

    def tearDown(self):
        for p in self.attackers:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, 9)
                except ProcessLookupError:
                    pass
            p.wait(timeout=10)
        self.server.kill()
        self.env.cleanup()

    def check_fetch(self, timeout=5):
        """One normal fetch of the 1 MiB file: (seconds, problem or None)."""
        seconds, status, digest, error = fetch(self.port, '/medium.bin', timeout)
        if error is not None:
            return seconds, error
        if status != 200:
            return seconds, 'status %d' % status
        if digest != self.expected:
            return seconds, 'body differs'
        if seconds >= FETCH_LIMIT_S:
            return seconds, 'too slow'
        return seconds, None

    def attack(self, attacks, seconds):
        """Runs every (name, slowhttptest mode, connections, path) at once
        for `seconds` while the normal client fetches every second; asserts
        each fetch, that every attack connection was made, and that together
        they filled both workers."""
        seconds_idle, problem = self.check_fetch()
        self.assertIsNone(problem)
        print('\nidle server: 1 MiB in %.3f s' % seconds_idle)
        logs = []
        for name, mode, connections, path in attacks:
            log = self.env.path(name + '.log')
            logs.append((name, log, connections))
            self.attackers.append(slowhttptest(mode, connections, seconds, self.server.url(path), log, self.files))
        start = time.monotonic()

        probes = []  # (second, fetch seconds, established, problem or None)
        second = 1
        while second <= seconds - 2:
            time.sleep(max(0.0, start + second - time.monotonic()))
            count = established(self.port)
            at = time.monotonic() - start
            fetch_seconds, problem = self.check_fetch()
            probes.append((at, fetch_seconds, count, problem))
            print('%5.1f s: 1 MiB in %.3f s, %5d established%s'
                  % (at, fetch_seconds, count, '' if problem is None else ', ' + problem), flush=True)
            # A fetch that took longer than a second delays the next ones: fewer of them.
            second = int(time.monotonic() - start) + 1
        for p in self.attackers:
            try:
                p.wait(timeout=seconds + 20)
            except subprocess.TimeoutExpired:
                pass
        times = sorted(p[1] for p in probes)
        peak = max(p[2] for p in probes)
        print('during the attack: %d fetches, min %.3f s, median %.3f s, max %.3f s; peak %d established'
              % (len(times), times[0], statistics.median(times), times[-1], peak))
        for name, log, _ in logs:
            print('slowhttptest %s (connected, closed) every 5 s: %s' % (name, attack_status(log)))

        # Every second of it, the normal client was served whole and in time.
        failures = [p for p in probes if p[3] is not None]
        self.assertEqual(failures, [], 'fetches that failed or took %.1f s or more' % FETCH_LIMIT_S)
        self.assertGreaterEqual(len(probes), seconds - 3)
        # The attack happened: every connection was made, more than a thousand
        # were open at once, and together they filled both workers (the rest
        # waiting in the listen backlog), so the server had to choose whom to close.
        for name, log, connections in logs:
            made = max([a + b for a, b in attack_status(log)] or [0])
            self.assertGreaterEqual(made, connections, '%s: %d of %d connections made' % (name, made, connections))
        self.assertGreaterEqual(peak, 1500, 'the attack never held 1500 connections at once')
        self.assertIn('max_connections reached', self.server.log(), 'the workers were never full')
        # And the server is still whole.
        self.assertTrue(self.server.running())
        self.assertEqual(len(self.server.workers()), WORKERS)
        self.assertIsNone(self.check_fetch()[1])

    def test_slowloris_and_slow_read_together(self):
        # 2,400 connections: the slowloris ones arrive over 6 s and would
        # each hold a slot for header_timeout; the slow readers hold theirs
        # until send_min_rate's first window ends.
        self.attack([('slow-read', SLOW_READ, 1200, '/big.bin'),
                     ('slowloris', SLOWLORIS + ['-r', '200'], 1200, '/medium.bin')], 18)

    def test_more_slow_readers_than_connections(self):
        # 2,300 slow readers, more than both workers hold: only closing slow
        # readers makes room for the normal client.
        self.attack([('slow-read', SLOW_READ, 2300, '/big.bin')], 14)


if __name__ == '__main__':
    unittest.main(verbosity=2)
