"""The module ABI seen from outside: a plugin's hooks fire once per event,
and modules that break the ABI are refused with a clear error.

hook_counter (tests/fixtures/hook_counter.c) counts its hook calls per
worker and writes them to <output>.<pid> when the worker exits."""

import glob
import os
import re
import subprocess
import unittest

import harness
from harness import MIB


def counts_of(prefix):
    total = {}
    for path in glob.glob(prefix + '.*'):
        with open(path) as f:
            for line in f:
                name, value = line.split()
                if name != 'address':  # the addresses the hooks saw: test_privacy.py
                    total[name] = total.get(name, 0) + int(value)
    return total


class HookCounts(unittest.TestCase):
    def setUp(self):
        self.env = harness.TestEnv({'small.bin': 4096, 'slow.bin': 24 * MIB})
        self.output = self.env.path('counts')
        port = harness.free_port()
        text = harness.config_text(port, self.env.www, workers=2).replace(
            'plugins: []', 'plugins:\n  - module: hook_counter\n    output: %s\n' % self.output)
        self.server = harness.Server(self.env, port=port, config=text)
        self.server.start()

    def tearDown(self):
        self.server.kill()
        self.env.cleanup()

    def test_each_hook_fires_once_per_event(self):
        port = self.server.port
        for _ in range(3):  # three connections, one request each
            self.assertEqual(harness.http(port, 'GET', '/small.bin').status, 200)
        self.assertEqual(harness.http(port, 'GET', '/missing').status, 404)
        # One connection, two pipelined requests.
        with harness.Conn(port) as c:
            c.send(harness.request_bytes('GET', '/small.bin', close=False) +
                   harness.request_bytes('GET', '/small.bin', close=True))
            self.assertEqual(c.read_response().status, 200)
            self.assertEqual(c.read_response().status, 200)
        # A transfer of about 4 s (past the socket buffers' few MiB) reports progress.
        out = self.env.path('slow.out')
        harness.run(['curl', '-sf', '--limit-rate', '6M', '-o', out, self.server.url('/slow.bin')], timeout=30)
        self.assertEqual(harness.sha256_file(out), harness.sha256_bytes(self.env.content['slow.bin']))

        self.assertEqual(self.server.terminate(), 0, self.server.log_tail())
        # Each worker closes its loop after the modules closed their handles; a leak is logged.
        self.assertNotIn('handles still open', self.server.log())
        self.assertEqual(self.server.log().count('Worker stopped'), 2, self.server.log_tail())
        counts = counts_of(self.output)
        # Six connections of ours, and the harness's readiness probe.
        self.assertEqual(counts.get('connection'), 7, counts)
        self.assertEqual(counts.get('disconnect'), 7, counts)
        self.assertEqual(counts.get('close'), 7, counts)
        self.assertEqual(counts.get('completed'), 6, counts)  # the 404 ended as not_found
        self.assertGreaterEqual(counts.get('transfer', 0), 1, counts)


class AbiChecks(unittest.TestCase):
    def setUp(self):
        self.env = harness.TestEnv({'small.bin': 16})

    def tearDown(self):
        self.env.cleanup()

    def check_config(self, module_lines):
        text = 'state_dir: %s\nprotocols:\n%s' % (self.env.path('state'), module_lines)
        path = harness.write_file(self.env.path('c.yaml'), text)
        return subprocess.run([harness.BINARY, '-t', '-c', path], capture_output=True, text=True, timeout=20)

    def test_wrong_major_version_is_refused(self):
        result = self.check_config('  - {module: bad_major, host: 127.0.0.1, port: 1}\n')
        self.assertEqual(result.returncode, 1)
        self.assertIn("c.yaml:3: protocols[0].module: module 'bad_major': built for ABI major version 99",
                      result.stderr)

    def test_newer_minor_version_is_refused(self):
        result = self.check_config('  - {module: future_minor, host: 127.0.0.1, port: 1}\n')
        self.assertEqual(result.returncode, 1)
        self.assertRegex(result.stderr, r"c\.yaml:3: protocols\[0\]\.module: module 'future_minor': "
                                        r"built for ABI 1\.(\d+), this server has ABI 1\.(\d+) \(")
        newer, ours = re.search(r'ABI 1\.(\d+), this server has ABI 1\.(\d+)', result.stderr).groups()
        self.assertEqual(int(newer), int(ours) + 1)

    def test_other_libuv_is_refused(self):
        result = self.check_config('  - {module: bad_uv, host: 127.0.0.1, port: 1}\n')
        self.assertEqual(result.returncode, 1)
        self.assertRegex(result.stderr, r"module 'bad_uv': built against libuv 2\.0\.0, this server runs libuv "
                                        r"1\.\d+\.\d+ \(a module needs the same major version and no newer minor\)")

    def test_missing_required_hook_is_refused(self):
        result = self.check_config('  - {module: missing_hook, host: 127.0.0.1, port: 1}\n')
        self.assertEqual(result.returncode, 1)
        self.assertIn("module 'missing_hook': required hook accept is missing", result.stderr)

    def test_plugin_used_as_protocol_is_refused(self):
        result = self.check_config('  - {module: hook_counter, host: 127.0.0.1, port: 1, output: x}\n')
        self.assertEqual(result.returncode, 1)
        self.assertIn('is a plugin module, configured as a protocol', result.stderr)

    def test_good_config_with_plugin_is_ok(self):
        result = self.check_config('  - {module: http_download, host: 127.0.0.1, port: 1, root: %s}\n'
                                   'plugins:\n  - {module: hook_counter, output: %s}\n'
                                   % (self.env.www, self.env.path('x')))
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn('configuration OK', result.stdout)


if __name__ == '__main__':
    unittest.main()
