"""The memcache plugin: unique_ip held across two smprotocol servers that
share one memcached (Debian's, started here on a free loopback port), and
what happens when memcached goes away and comes back."""

import os
import shutil
import signal
import subprocess
import time
import unittest

import harness
from harness import MIB
from test_limits import slow_download


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

    def server(self, name, on_error='allow', workers=2):
        port = harness.free_port()
        text = harness.config_text(port, self.env.www, workers=workers, unique_ip='true',
                                   core_extra={'tracking': '{enabled: false}'})
        text = text.replace('plugins: []', 'plugins:\n  - module: memcache\n    servers: ["127.0.0.1:%d"]\n'
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
        self.assertTrue(harness.wait_for(lambda: not os.path.exists('/proc/%d' % pid), 5.0))
        # The next request for that download on a gives the dead worker's slot back.
        self.assertEqual(self.status(a), 206)
        self.assertEqual(self.status(b), 206)

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
        # Once per outage (and per worker: each has its own client).
        self.assertEqual(log.count('[memcache] cannot take a shared slot'), 1, log)
        self.assertIn('memcached answers again', log)

    def test_memcached_down_deny_refuses(self):
        c = self.server('c', on_error='deny')
        self.assertEqual(self.status(c), 206)
        self.memcached.stop()
        self.assertEqual(self.status(c), 429)
        self.assertEqual(harness.http(c.port, 'GET', '/small.bin').status, 429)  # every download needs a slot
        self.assertEqual(harness.http(c.port, 'HEAD', '/small.bin').status, 200)  # a HEAD needs none


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
        finally:
            env.cleanup()


if __name__ == '__main__':
    unittest.main()
