#!/usr/bin/python3
"""The buffered access log (log.access_log_buffer, log.access_log_flush): lines
reach the file within the flush interval, at a graceful stop and before a
reopen (SIGUSR1), whole, and at once when unbuffered."""

import os
import re
import signal
import threading
import time

import harness
from harness import http

# Long enough that, within a test, only what is being tested can write the lines.
NEVER = '60s'

LINE = re.compile(r'^127\.0\.0\.1 - - \[[^\]]+\] "GET /small\.bin\?n=(\d+) HTTP/1\.1" 200 1024 "-" "-" \d+$')


def numbers(lines):
    """The n of each request line, in file order; AssertionError on a line that is not whole."""
    found = []
    for line in lines:
        m = LINE.match(line)
        if not m:
            raise AssertionError('not a whole access log line: %r' % line)
        found.append(int(m.group(1)))
    return found


def read_lines(path):
    try:
        with open(path, 'rb') as f:
            return f.read().decode('utf-8', 'replace').splitlines()
    except OSError:
        return []


def get(port, n):
    resp = http(port, 'GET', '/small.bin?n=%d' % n)
    assert resp.status == 200, resp


def holds(pid, path):
    """Whether process `pid` has `path` open."""
    try:
        fds = os.listdir('/proc/%d/fd' % pid)
    except OSError:
        return False
    for fd in fds:
        try:
            if os.readlink('/proc/%d/fd/%s' % (pid, fd)) == path:
                return True
        except OSError:
            pass
    return False


class AccessLogTest(harness.ServerTestCase):
    start_class_server = False

    def buffered_server(self, workers=2, **log_extra):
        return self.new_server(workers=workers, log_extra=log_extra)

    def test_lines_reach_the_file_within_the_flush_interval(self):
        s = self.buffered_server()  # the defaults: 64KiB, 1s
        s.wait_workers(2)
        started = time.monotonic()
        for n in range(40):
            get(s.port, n)
        finished = time.monotonic()
        if finished - started < 0.9:
            # No worker's timer can have fired yet: the lines are all buffered.
            self.assertEqual(s.access_lines(), [])
        harness.wait_for(lambda: len(s.access_lines()) == 40, 3)
        arrived = time.monotonic()
        self.assertEqual(sorted(numbers(s.access_lines())), list(range(40)))
        self.assertLess(arrived - finished, 1.5, 'the lines took %.2f s after the last request' % (arrived - finished))

    def test_a_graceful_stop_writes_every_line(self):
        s = self.buffered_server(access_log_flush=NEVER)
        s.wait_workers(2)
        for n in range(30):
            get(s.port, n)
        time.sleep(0.2)
        self.assertEqual(s.access_lines(), [], 'lines written before the stop although the buffer had room')
        self.assertEqual(s.terminate(), 0, s.log_tail())
        self.assertEqual(sorted(numbers(s.access_lines())), list(range(30)))

    def test_a_reopen_writes_the_buffered_lines_to_the_old_file(self):
        s = self.buffered_server(access_log_flush=NEVER)
        workers = s.wait_workers(2)
        for n in range(20):
            get(s.port, n)
        time.sleep(0.2)
        self.assertEqual(s.access_lines(), [])
        rotated = s.access_log + '.1'
        os.rename(s.access_log, rotated)
        os.kill(s.pid, signal.SIGUSR1)
        # Each worker reopens on its own loop: once none holds the rotated
        # file, every line before the signal has been written to it.
        self.assertTrue(harness.wait_for(lambda: not any(holds(pid, rotated) for pid in [s.pid] + workers), 5),
                        'a process still writes to the rotated file')
        self.assertEqual(sorted(numbers(read_lines(rotated))), list(range(20)))
        for n in range(20, 30):
            get(s.port, n)
        self.assertEqual(s.terminate(), 0, s.log_tail())
        self.assertEqual(sorted(numbers(read_lines(rotated))), list(range(20)))
        self.assertEqual(sorted(numbers(s.access_lines())), list(range(20, 30)))

    def test_unbuffered_writes_each_line_at_once(self):
        s = self.buffered_server(access_log_buffer=0, access_log_flush=NEVER)
        s.wait_workers(2)
        for n in range(10):
            get(s.port, n)
        self.assertTrue(harness.wait_for(lambda: len(s.access_lines()) == 10, 2), s.access_lines())
        self.assertEqual(sorted(numbers(s.access_lines())), list(range(10)))

    def test_lines_of_several_workers_stay_whole(self):
        # A small buffer fills many times over, in both workers at once.
        s = self.buffered_server(access_log_buffer='1KiB', access_log_flush='50ms')
        s.wait_workers(2)
        failures = []

        def client(first):
            try:
                for n in range(first, first + 100):
                    get(s.port, n)
            except Exception as e:  # reported below, the thread cannot fail the test itself
                failures.append(e)
        threads = [threading.Thread(target=client, args=(first,)) for first in range(0, 400, 100)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        self.assertEqual(failures, [])
        harness.wait_for(lambda: len(s.access_lines()) == 400, 3)
        self.assertEqual(sorted(numbers(s.access_lines())), list(range(400)))


if __name__ == '__main__':
    harness.main()
