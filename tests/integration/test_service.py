#!/usr/bin/python3
"""Running as a service: the systemd unit, sd_notify, reload (SIGHUP) under
load and with a broken file, SIGUSR1, the install tree, the privilege drop."""

import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import unittest

import harness
from harness import BINARY, MIB, http, run, sha256_bytes, sha256_file

SOURCE_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), '..', '..'))
BUILD_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(BINARY)))
UNIT = os.path.join(BUILD_ROOT, 'systemd', 'smprotocol.service')


def installed_binary_path():
    """Where the unit expects the binary: the ExecStart of the built unit."""
    with open(UNIT) as f:
        return re.search(r'^ExecStart=(\S+)', f.read(), re.M).group(1)


def verify_unit(test, unit_text, binary):
    """systemd-analyze verify on `unit_text`, its binary path replaced by one that exists."""
    if shutil.which('systemd-analyze') is None:
        test.skipTest('systemd-analyze missing (Debian package systemd; scripts/deps.sh test installs it)')
    folder = tempfile.mkdtemp(prefix='smp-unit-')
    try:
        path = os.path.join(folder, 'smprotocol.service')
        with open(path, 'w') as f:
            f.write(unit_text.replace(installed_binary_path(), binary))
        return run(['systemd-analyze', 'verify', path], timeout=60)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


class UnitTest(unittest.TestCase):
    def test_unit_verifies(self):
        with open(UNIT) as f:
            text = f.read()
        result = verify_unit(self, text, BINARY)
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        for line in ('Type=notify', 'ExecReload=/bin/kill -HUP $MAINPID', 'Restart=on-failure',
                     'NoNewPrivileges=yes', 'ProtectSystem=strict', 'ProtectHome=yes', 'PrivateTmp=yes',
                     'CapabilityBoundingSet=CAP_NET_BIND_SERVICE', 'AmbientCapabilities=CAP_NET_BIND_SERVICE',
                     'DynamicUser=yes', 'StateDirectory=smprotocol'):
            self.assertIn('\n' + line + '\n', text)


class NotifyListener:
    """A unix datagram socket standing in for systemd's NOTIFY_SOCKET."""

    def __init__(self, folder):
        self.path = tempfile.mktemp(prefix='notify-', suffix='.sock', dir=folder)
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(0.2)
        self.messages = []

    def receive(self, until, timeout):
        """Collects messages until one has the line `until`; returns it or None."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                data = self.sock.recv(4096).decode()
            except socket.timeout:
                continue
            self.messages.append(data)
            if until in data.split('\n'):
                return data
        return None

    def close(self):
        self.sock.close()
        os.unlink(self.path)


class ServiceServer(harness.Server):
    """A server started with extra environment (NOTIFY_SOCKET)."""

    def start_with(self, environment, timeout=10.0, binary=BINARY):
        self._log = open(self.log_path, 'ab')
        if self not in harness._LIVE_SERVERS:
            harness._LIVE_SERVERS.append(self)
        self.proc = subprocess.Popen([binary, '--config', self.config_path], stdin=subprocess.DEVNULL,
                                     stdout=self._log, stderr=subprocess.STDOUT, cwd=self.env.dir,
                                     start_new_session=True, env=dict(os.environ, **environment))
        if not harness.wait_for(lambda: harness.port_accepts(self.port) or self.proc.poll() is not None, timeout) \
                or self.proc.poll() is not None:
            raise harness.ServerError('server did not start; log:\n' + self.log_tail())
        return self


class ReloadTest(harness.ServerTestCase):
    start_class_server = False
    files = dict(harness.DEFAULT_FILES, **{'big50.bin': 50 * MIB})

    def service_server(self, **cfg):
        s = ServiceServer(self.env, **cfg)
        self._servers.append(s)
        return s

    def reloaded(self, s, count, timeout=15):
        return harness.wait_for(lambda: len(re.findall(r'\] Reloaded: ', s.log())) >= count, timeout)

    def test_notify_ready_reloading_stopping(self):
        listener = NotifyListener(self.env.dir)
        try:
            s = self.service_server(workers=2)
            s.start_with({'NOTIFY_SOCKET': listener.path})
            ready = listener.receive('READY=1', 10)
            self.assertIsNotNone(ready, 'no READY=1; got %r' % listener.messages)
            self.assertRegex(ready, r'STATUS=2 worker\(s\), \d+ connection\(s\), \d+ download\(s\) in progress')
            os.kill(s.pid, signal.SIGHUP)
            self.assertIsNotNone(listener.receive('RELOADING=1', 10), 'no RELOADING=1: %r' % listener.messages)
            self.assertIsNotNone(listener.receive('READY=1', 10), 'no READY=1 after the reload: %r'
                                 % listener.messages)
            self.assertEqual(http(s.port, 'GET', '/small.bin').status, 200)
            s.proc.send_signal(signal.SIGTERM)
            self.assertIsNotNone(listener.receive('STOPPING=1', 10), 'no STOPPING=1: %r' % listener.messages)
            self.assertEqual(s.proc.wait(timeout=20), 0)
            states = [line for m in listener.messages for line in m.split('\n')
                      if line in ('READY=1', 'RELOADING=1', 'STOPPING=1')]
            self.assertEqual(states, ['READY=1', 'RELOADING=1', 'READY=1', 'STOPPING=1'])
            self.assertTrue(any(line.startswith('MONOTONIC_USEC=') for m in listener.messages
                                for line in m.split('\n')))
        finally:
            listener.close()

    def test_status_counts_a_running_download(self):
        listener = NotifyListener(self.env.dir)
        out = self.env.path('status.out')
        try:
            s = self.service_server(workers=2)
            s.start_with({'NOTIFY_SOCKET': listener.path})
            self.assertIsNotNone(listener.receive('READY=1', 10))
            # Slow and long: the socket buffers absorb megabytes, and a response
            # counts as a download after its first progress report (a second).
            p = harness.spawn(['curl', '-s', '--noproxy', '*', '--limit-rate', '2M', '-o', out,
                               s.url('/big50.bin')], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            found = harness.wait_for(lambda: listener.receive('STATUS=2 worker(s), 1 connection(s), 1 download(s) '
                                                              'in progress', 0.3), 8)
            p.kill()
            p.wait(timeout=5)
            self.assertTrue(found, 'status never showed the download: %r' % listener.messages[-5:])
        finally:
            listener.close()

    def test_reload_under_load_loses_nothing(self):
        if shutil.which('wrk') is None:
            self.skipTest('wrk missing (Debian package wrk; scripts/deps.sh test installs it)')
        s = self.service_server(workers=2)
        s.start()
        workers = s.wait_workers(2)
        out = self.env.path('across-reloads.out')
        # 50 MiB at 8 MiB/s: about 6 s, across every reload below.
        download = harness.spawn(['curl', '-sS', '--noproxy', '*', '--limit-rate', '8M', '-o', out,
                                  '-w', '%{http_code}', s.url('/big50.bin')],
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        load = harness.spawn(['wrk', '-t2', '-c16', '-d7s', s.url('/small.bin')],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            time.sleep(1.0)
            for i in range(5):
                os.kill(s.pid, signal.SIGHUP)
                self.assertTrue(self.reloaded(s, i + 1), 'reload %d did not complete:\n%s' % (i + 1, s.log_tail()))
                time.sleep(0.5)
            report, _ = load.communicate(timeout=30)
            code, errors = download.communicate(timeout=60)
        finally:
            for p in (load, download):
                if p.poll() is None:
                    p.kill()
                    p.wait(timeout=5)
        requests = re.search(r'(\d+) requests in', report)
        self.assertTrue(requests and int(requests.group(1)) > 1000, report)
        self.assertNotIn('Non-2xx', report, report)
        self.assertNotIn('Socket errors', report, report)
        self.assertEqual((download.returncode, code), (0, '200'), errors)
        self.assertEqual(sha256_file(out), sha256_bytes(self.content('big50.bin')), 'download cut by a reload')
        # Every old generation has finished; the last one serves.
        new = s.wait_workers(2)
        self.assertFalse(set(new) & set(workers))
        self.assertEqual(http(s.port, 'GET', '/small.bin').status, 200)

    def test_invalid_config_keeps_the_old_one(self):
        s = self.service_server(workers=2)
        s.start()
        workers = s.wait_workers(2)
        with open(s.config_path) as f:
            good = f.read()
        with open(s.config_path, 'w') as f:
            f.write(good.replace('workers: 2', 'workers: many'))
        os.kill(s.pid, signal.SIGHUP)
        logged = harness.wait_for(lambda: 'still running on the previous configuration' in s.log(), 10)
        self.assertTrue(logged, s.log_tail())
        self.assertRegex(s.log(), r'reload: .*smp-\d+\.yaml:1: workers: must be a whole number')
        self.assertEqual(sorted(s.workers()), sorted(workers), 'the workers were replaced')
        for _ in range(4):
            response = http(s.port, 'GET', '/small.bin')
            self.assertEqual(response.status, 200)
            self.assertEqual(response.body, self.content('small.bin'))
        # A module that does not exist is refused the same way.
        with open(s.config_path, 'w') as f:
            f.write(good.replace('plugins: []', 'plugins: [{module: no_such_plugin}]'))
        os.kill(s.pid, signal.SIGHUP)
        self.assertTrue(harness.wait_for(lambda: "module 'no_such_plugin' not found" in s.log(), 10), s.log_tail())
        self.assertEqual(http(s.port, 'GET', '/small.bin').status, 200)
        # Fixed again: the next reload applies it.
        with open(s.config_path, 'w') as f:
            f.write(good.replace('workers: 2', 'workers: 3'))
        os.kill(s.pid, signal.SIGHUP)
        self.assertTrue(self.reloaded(s, 1), s.log_tail())
        self.assertEqual(len(s.wait_workers(3)), 3)

    def test_reload_adds_and_drops_a_port(self):
        s = self.service_server(workers=2)
        s.start()
        other = harness.free_port()
        with open(s.config_path) as f:
            good = f.read()
        second = good.replace('plugins: []', '') + '\n'.join([
            '  - module: http_download',
            '    host: 127.0.0.1',
            '    port: %d' % other,
            '    root: %s' % self.env.www,
            'plugins: []', ''])
        with open(s.config_path, 'w') as f:
            f.write(second)
        os.kill(s.pid, signal.SIGHUP)
        self.assertTrue(self.reloaded(s, 1), s.log_tail())
        self.assertEqual(http(other, 'GET', '/small.bin').status, 200)
        self.assertEqual(http(s.port, 'GET', '/small.bin').status, 200)
        with open(s.config_path, 'w') as f:
            f.write(good)
        os.kill(s.pid, signal.SIGHUP)
        self.assertTrue(self.reloaded(s, 2), s.log_tail())
        self.assertTrue(harness.wait_for(lambda: not harness.port_accepts(other), 5), 'dropped port still open')
        self.assertEqual(http(s.port, 'GET', '/small.bin').status, 200)

    def test_sigusr1_reopens_the_log_files(self):
        log_file = self.env.path('server-file.log')
        s = self.service_server(workers=2)
        with open(s.config_path) as f:
            text = f.read()
        with open(s.config_path, 'w') as f:
            f.write(text.replace('log:\n', 'log:\n  file: %s\n' % log_file))
        s.start()
        s.wait_workers(2)
        self.assertEqual(http(s.port, 'GET', '/small.bin').status, 200)
        os.rename(log_file, log_file + '.1')
        os.rename(s.access_log, s.access_log + '.1')
        os.kill(s.pid, signal.SIGUSR1)
        self.assertTrue(harness.wait_for(lambda: os.path.exists(log_file) and os.path.exists(s.access_log), 5))
        time.sleep(0.3)  # the workers reopen on their own loops
        for _ in range(4):
            self.assertEqual(http(s.port, 'GET', '/small.bin').status, 200)
        self.assertTrue(harness.wait_for(lambda: len(s.access_lines()) == 4, 5), s.access_lines())
        def read(path):
            with open(path) as f:
                return f.read()
        self.assertTrue(harness.wait_for(lambda: 'File downloaded "/small.bin"' in read(log_file), 5))
        self.assertIn('SIGUSR1: reopening the log files', read(log_file + '.1'))


class InstallTest(unittest.TestCase):
    def test_installed_tree_serves(self):
        env = harness.TestEnv(prefix='smp-install-')
        try:
            destdir = env.path('dest')
            existing = os.path.join(destdir, 'etc', 'smprotocol.yaml')
            os.makedirs(os.path.dirname(existing))
            with open(existing, 'w') as f:
                f.write('# edited by the administrator\n')
            result = run(['meson', 'install', '-C', BUILD_ROOT, '--no-rebuild', '--quiet', '--destdir', destdir],
                         timeout=120)
            self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
            with open(existing) as f:
                self.assertEqual(f.read(), '# edited by the administrator\n', 'meson install overwrote /etc')
            binary = destdir + installed_binary_path()
            self.assertTrue(os.access(binary, os.X_OK), binary)
            unit = destdir + os.path.join(os.path.dirname(installed_binary_path()), '..', 'lib', 'systemd',
                                          'system', 'smprotocol.service')
            self.assertTrue(os.path.exists(unit), unit)
            modules = [os.path.join(root, name) for root, _, names in os.walk(destdir) for name in names
                       if name == 'http_download.so']
            self.assertEqual(len(modules), 1, modules)
            module_dir = os.path.dirname(modules[0])
            self.assertTrue(module_dir.endswith('/smprotocol'), module_dir)
            sample = [os.path.join(root, name) for root, _, names in os.walk(destdir) for name in names
                      if name == 'smprotocol.yaml' and 'examples' in root]
            self.assertEqual(len(sample), 1)
            with open(unit) as f:
                verified = verify_unit(self, f.read(), binary)
            self.assertEqual(verified.returncode, 0, verified.stdout + verified.stderr)

            port = harness.free_port()
            # No module_dir: the binary finds the modules beside it in the tree.
            config = harness.config_text(port, env.www)
            config_path = harness.write_file(env.path('installed.yaml'), config)
            checked = run([binary, '--test-config', '--config', config_path], timeout=30)
            self.assertEqual(checked.returncode, 0, checked.stdout + checked.stderr)
            s = ServiceServer(env, port=port, config=config)
            try:
                s.start_with({}, binary=binary)
                response = http(port, 'GET', '/medium.bin')
                self.assertEqual(response.status, 200)
                self.assertEqual(response.body, env.content['medium.bin'])
                with open('/proc/%d/maps' % s.pid) as maps:
                    self.assertIn(module_dir + '/http_download.so', maps.read())
            finally:
                s.terminate(timeout=15)
                s.kill()
        finally:
            env.cleanup()


@unittest.skipUnless(os.geteuid() == 0, 'the privilege drop needs root')
class PrivilegeTest(unittest.TestCase):
    def test_children_run_as_the_user(self):
        env = harness.TestEnv(prefix='smp-user-')
        try:
            # nobody must reach the files and the state directory under the test's folder.
            os.chmod(env.dir, 0o755)
            for root, dirs, files in os.walk(env.dir):
                for name in dirs:
                    os.chmod(os.path.join(root, name), 0o755)
                for name in files:
                    os.chmod(os.path.join(root, name), 0o644)
            s = harness.Server(env, workers=2, core_extra={'user': 'nobody'})
            try:
                s.start()
                workers = s.wait_workers(2)
                self.assertEqual(len(workers), 2)
                collector = harness.wait_for(s.collector, 5)
                nobody = int(run(['id', '-u', 'nobody']).stdout)

                def uids(pid):
                    with open('/proc/%d/status' % pid) as f:
                        line = next(l for l in f if l.startswith('Uid:'))
                    return [int(u) for u in line.split()[1:]]
                # A child drops root right after its fork, before it
                # serves or stores anything; a fresh one may not have yet.
                for pid in workers + [collector]:
                    harness.wait_for(lambda: uids(pid) == [nobody] * 4, 5)
                    self.assertEqual(uids(pid), [nobody] * 4, 'pid %d' % pid)
                self.assertEqual(uids(s.pid)[0], 0, 'the master keeps root for reloads')
                response = http(s.port, 'GET', '/medium.bin')
                self.assertEqual(response.status, 200)
                state = os.path.join(env.dir, 'state')
                self.assertEqual(os.stat(state).st_uid, nobody)
                self.assertEqual(os.stat(os.path.join(state, 'stats.db')).st_uid, nobody)
                # The collector, as nobody, writes the store.
                self.assertTrue(harness.wait_for(lambda: 'Save download(s) tracker in database' in s.log(), 5),
                                s.log_tail())
                self.assertNotIn('readonly', s.log().lower())
                # A reload keeps the drop.
                os.kill(s.pid, signal.SIGHUP)
                self.assertTrue(harness.wait_for(lambda: '] Reloaded: ' in s.log(), 10), s.log_tail())
                for pid in s.wait_workers(2):
                    harness.wait_for(lambda: uids(pid) == [nobody] * 4, 5)
                    self.assertEqual(uids(pid), [nobody] * 4, 'pid %d after the reload' % pid)
                self.assertEqual(s.terminate(timeout=20), 0)
            finally:
                s.kill()
        finally:
            env.cleanup()


if __name__ == '__main__':
    harness.main()
