#!/usr/bin/python3
"""Resumed and segmented downloads with real clients: curl -C -, wget -c,
aria2c -x8."""

import os
import re
import shutil
import subprocess
import time

import harness
from harness import curl, run, sha256_bytes, sha256_file

MIB = harness.MIB


class ResumeTest(harness.ServerTestCase):

    def setUp(self):
        super().setUp()
        self.out_dir = self.env.path('dl-' + self.id().rsplit('.', 1)[-1])
        os.makedirs(self.out_dir)
        self.big_sha = sha256_bytes(self.content('big.bin'))

    def tearDown(self):
        super().tearDown()
        shutil.rmtree(self.out_dir, ignore_errors=True)

    def write_partial(self, path, nbytes):
        with open(path, 'wb') as f:
            f.write(self.content('big.bin')[:nbytes])

    def assert_big_complete(self, path, what):
        self.assertTrue(os.path.exists(path), '%s: no output file' % what)
        self.assertEqual(os.path.getsize(path), len(self.content('big.bin')),
                         '%s: wrong size' % what)
        self.assertEqual(sha256_file(path), self.big_sha, '%s: sha256 differs' % what)

    # -- curl ---------------------------------------------------------

    def test_curl_resume_from_partial_file(self):
        out = os.path.join(self.out_dir, 'big.bin')
        self.write_partial(out, 3 * MIB + 123)
        r = curl(['-C', '-', '-o', out, '-w', '%{http_code}', self.server.url('/big.bin')])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.strip(), '206')
        self.assert_big_complete(out, 'curl -C -')

    def test_curl_resume_after_range_download(self):
        out = os.path.join(self.out_dir, 'big.bin')
        r = curl(['-r', '0-%d' % (7 * MIB - 1), '-o', out, self.server.url('/big.bin')])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(os.path.getsize(out), 7 * MIB)
        r = curl(['-C', '-', '-o', out, self.server.url('/big.bin')])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assert_big_complete(out, 'curl -r then curl -C -')

    def test_curl_resume_after_killed_transfer(self):
        out = os.path.join(self.out_dir, 'big.bin')
        p = harness.spawn(['curl', '-s', '--noproxy', '*', '--limit-rate', '4M', '-o', out,
                              self.server.url('/big.bin')],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            got = harness.wait_for(lambda: os.path.exists(out) and os.path.getsize(out) >= MIB, 10)
            self.assertTrue(got, 'first curl did not receive 1 MiB within 10 s')
        finally:
            p.kill()
            p.wait(timeout=5)
        partial = os.path.getsize(out)
        self.assertLess(partial, len(self.content('big.bin')), 'transfer was not cut')
        r = curl(['-C', '-', '-o', out, self.server.url('/big.bin')])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assert_big_complete(out, 'curl resume after kill at %d bytes' % partial)

    # -- wget ---------------------------------------------------------

    def wget(self, *args, timeout=60):
        return run(['wget', '--no-proxy', '-q', '--tries=1', '--timeout=20'] + list(args),
                   timeout=timeout)

    def test_wget_continue(self):
        out = os.path.join(self.out_dir, 'big.bin')
        self.write_partial(out, 5 * MIB)
        r = self.wget('-c', '-P', self.out_dir, self.server.url('/big.bin'))
        self.assertEqual(r.returncode, 0, 'wget -c failed: %s' % r.stderr)
        self.assertEqual(os.listdir(self.out_dir), ['big.bin'], 'wget created another file')
        self.assert_big_complete(out, 'wget -c')

    def test_wget_continue_on_complete_file(self):
        # the resume request is bytes=LEN- -> 416, which wget takes as "done"
        out = os.path.join(self.out_dir, 'big.bin')
        self.write_partial(out, len(self.content('big.bin')))
        r = self.wget('-c', '-P', self.out_dir, self.server.url('/big.bin'))
        self.assertEqual(r.returncode, 0, 'wget -c on a complete file failed: %s' % r.stderr)
        self.assert_big_complete(out, 'wget -c on complete file')

    def test_wget_full(self):
        r = self.wget('-P', self.out_dir, self.server.url('/big.bin'))
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assert_big_complete(os.path.join(self.out_dir, 'big.bin'), 'wget')

    # -- aria2c -------------------------------------------------------

    def test_aria2c_segmented(self):
        before = len(self.server.access_lines())
        r = run(['aria2c', '-x8', '-s8', '-k1M', '--allow-overwrite=true',
                 '--auto-file-renaming=false', '--file-allocation=none',
                 '--console-log-level=warn', '--summary-interval=0', '--max-tries=1',
                 '--all-proxy=', '-d', self.out_dir, '-o', 'big.bin', self.server.url('/big.bin')],
                timeout=90)
        self.assertEqual(r.returncode, 0, 'aria2c failed (%s):\n%s\n%s'
                         % (r.returncode, r.stdout[-2000:], r.stderr[-2000:]))
        self.assert_big_complete(os.path.join(self.out_dir, 'big.bin'), 'aria2c -x8')

        # aria2c's first connection is a plain GET (200) that it keeps for the
        # first segment, so -s8 gives 7 ranged requests (more if segments are
        # re-split); the access log must show them as 206
        pattern = re.compile(r'"GET /big\.bin HTTP/1\.[01]" 206 ')

        def count_206():
            lines = self.server.access_lines()[before:]
            return [l for l in lines if pattern.search(l) and 'aria2' in l]
        # the access log may be written a moment after the transfer
        harness.wait_for(lambda: len(count_206()) >= 7, 5)
        hits = count_206()
        self.assertGreaterEqual(len(hits), 7, 'only %d aria2 206 lines in the access log:\n%s'
                                % (len(hits), '\n'.join(self.server.access_lines()[before:][-20:])))

    def test_access_log_combined_format(self):
        r = curl(['-o', '/dev/null', '-A', 'smp-itest/1.0', '-e', 'http://ref.example/',
                  self.server.url('/small.bin')])
        self.assertEqual(r.returncode, 0, r.stderr)
        # Combined, then the bytes received from the client (curl's request head).
        rx = re.compile(r'^127\.0\.0\.1 \S+ \S+ \[[^\]]+\] "GET /small\.bin HTTP/1\.1" 200 1024 '
                        r'"http://ref\.example/" "smp-itest/1\.0" [1-9][0-9]+$')
        found = harness.wait_for(lambda: [l for l in self.server.access_lines() if rx.match(l)], 5)
        self.assertTrue(found, 'no combined-format line for the request; last lines:\n%s'
                        % '\n'.join(self.server.access_lines()[-5:]))


if __name__ == '__main__':
    harness.main()
