#!/usr/bin/python3
"""HTTPS through the forward module, both sides: clients speak TLS to a
forward listener with a `tls:` block, and forward speaks TLS to its origin
with `forward_tls` (verified against `forward_ca`). The origin is a real
http_download instance (with or without its own `tls:` block), the clients
are curl, aria2c and Python's ssl, the certificates come from tls_ca.py, and
the records are read back from the sqlite stores.

    SMP_BINARY=build/core/smprotocol python3 tests/integration/test_forward_tls.py
"""

import os
import shutil
import socket
import sqlite3
import ssl
import time
import unittest

import harness
import tls_ca
from harness import MIB, sha256_bytes, sha256_file
from test_tls import TLS_VERSIONS, ca, leaf, line_of, make_config, read_to_close_notify, tls_lines

BINARY = harness.BINARY


def forward_lines(port, origin_port, forward_host='127.0.0.1', **keys):
    """A forward listener; a `tls` key becomes its `tls:` block."""
    tls = keys.pop('tls', None)
    lines = ['  - module: forward', '    host: 127.0.0.1', '    port: %d' % port,
             '    forward_host: %s' % forward_host, '    forward_port: %d' % origin_port]
    lines += ['    %s: %s' % (k, 'true' if v is True else 'false' if v is False else v) for k, v in keys.items()]
    return lines + (tls_lines(tls) if tls else [])


def forward_config(state, port, origin_port, **keys):
    lines = ['workers: 2', 'max_connections: 1024', 'shutdown_timeout: 10s', 'state_dir: %s' % state,
             'tracking: {enabled: true, idle_window: 1s}', 'log:', '  level: info', 'protocols:']
    lines += forward_lines(port, origin_port, **keys)
    return '\n'.join(lines + ['plugins: []']) + '\n'


def read_store(state, sql, *args):
    db = sqlite3.connect(os.path.join(state, 'stats.db'))
    db.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in db.execute(sql, args)]
    finally:
        db.close()


def tls_client(port, server_hostname='localhost'):
    context = ssl.create_default_context(cafile=ca().ca_cert)
    sock = socket.create_connection(('127.0.0.1', port), timeout=harness.SOCK_TIMEOUT)
    return context.wrap_socket(sock, server_hostname=server_hostname)


def read_response(sock):
    """One response with a Content-Length body, read from a kept connection."""
    data = b''
    while b'\r\n\r\n' not in data:
        piece = sock.recv(65536)
        if not piece:
            raise AssertionError('closed before a whole head: %r' % data)
        data += piece
    head, body = data.split(b'\r\n\r\n', 1)
    response = harness.parse_response(head + b'\r\n\r\n')
    length = int(response.header('content-length', '0'))
    while len(body) < length:
        piece = sock.recv(65536)
        if not piece:
            break
        body += piece
    return response, body


class ForwardTLSCase(harness.TailsOnFailure):
    """One TestEnv per class; origins and proxies started per test, each with
    its own state dir (so its records are its own), killed at the end."""

    files = {'small.bin': 4096, 'medium.bin': MIB, 'big.bin': 24 * MIB}
    counter = 0

    @classmethod
    def setUpClass(cls):
        ca()
        cls.env = harness.TestEnv(cls.files)

    @classmethod
    def tearDownClass(cls):
        cls.env.cleanup()

    def setUp(self):
        self.servers = []
        self.out = self.env.path('out-' + self._testMethodName)
        os.makedirs(self.out)

    def tearDown(self):
        for s in self.servers:
            s.kill()
        shutil.rmtree(self.out, ignore_errors=True)

    def failure_tails(self):
        return [('log tail (%s)' % s.log_path, s.log_tail(30)) for s in getattr(self, 'servers', [])]

    def state(self):
        ForwardTLSCase.counter += 1
        return self.env.path('state-%s-%d' % (self._testMethodName, ForwardTLSCase.counter))

    def origin(self, tls=None):
        """An http_download instance serving the class's files, over TLS when `tls` is given."""
        port = harness.free_port()
        state = self.state()
        text = make_config(self.env, port, tls, workers=1).replace(
            'state_dir: %s' % self.env.path('state'), 'state_dir: %s' % state)
        server = harness.Server(self.env, port=port, access_log=False, config=text)
        server.state_dir = state
        self.servers.append(server)
        return server.start()

    def proxy(self, origin, **keys):
        port = harness.free_port()
        state = self.state()
        server = harness.Server(self.env, port=port, access_log=False,
                                config=forward_config(state, port, origin.port, **keys))
        server.state_dir = state
        self.servers.append(server)
        return server.start()

    def stop(self, server):
        self.assertEqual(server.terminate(timeout=30), 0, 'did not stop cleanly:\n' + server.log_tail())

    def curl(self, url, *args, agent='fwd-tls-curl', out=None):
        out = out or os.path.join(self.out, 'curl.out')
        r = harness.run(['curl', '-sS', '--noproxy', '*', '--cacert', ca().ca_cert, '-A', agent, '-o', out,
                         '-w', '%{http_code}', *args, url], timeout=90)
        return r, out


class ClientSide(ForwardTLSCase):
    """A `tls:` block on the forward listener, in front of a plain origin."""

    def test_curl_over_https_is_byte_exact_and_recorded_with_its_version(self):
        origin = self.origin()
        proxy = self.proxy(origin, tls={'certificate': leaf('localhost').cert, 'key': leaf('localhost').key})
        r, out = self.curl('https://localhost:%d/big.bin' % proxy.port)
        self.assertEqual((r.returncode, r.stdout), (0, '200'), r.stderr)
        self.assertEqual(sha256_file(out), sha256_bytes(self.env.content['big.bin']))
        self.stop(proxy)
        rows = read_store(proxy.state_dir, 'SELECT module, status, reason, tls, tls_version, body_bytes '
                                           'FROM requests WHERE user_agent = ?', 'fwd-tls-curl')
        self.assertEqual(len(rows), 1, rows)
        self.assertEqual((rows[0]['module'], rows[0]['status'], rows[0]['reason'], rows[0]['tls']),
                         ('forward', 200, 'completed', 1), rows)
        self.assertIn(rows[0]['tls_version'], TLS_VERSIONS)
        self.assertEqual(rows[0]['body_bytes'], 24 * MIB)

    def test_keep_alive_over_https(self):
        origin = self.origin()
        proxy = self.proxy(origin, tls={'certificate': leaf('localhost').cert, 'key': leaf('localhost').key})
        with tls_client(proxy.port) as sock:
            for _ in range(3):
                sock.sendall(harness.request_bytes('GET', '/small.bin', {'User-Agent': 'fwd-tls-ka'}, close=False))
                response, body = read_response(sock)
                self.assertEqual(response.status, 200)
                self.assertEqual(body, self.env.content['small.bin'])
        self.stop(proxy)
        rows = read_store(proxy.state_dir, 'SELECT connection_id, tls FROM requests WHERE user_agent = ?',
                          'fwd-tls-ka')
        self.assertEqual(len(rows), 3, rows)
        self.assertEqual(len({r['connection_id'] for r in rows}), 1, rows)

    def test_closing_responses_end_with_close_notify(self):
        # As from http_download (test_tls.py): a relayed response after which
        # the connection closes, and one the proxy makes itself, arrive whole,
        # then the close_notify.
        origin = self.origin()
        proxy = self.proxy(origin, tls={'certificate': leaf('localhost').cert, 'key': leaf('localhost').key})
        small, big = self.env.content['small.bin'], self.env.content['big.bin']
        for name, request, status, expected in [
                ('HTTP/1.0', harness.request_bytes('GET', '/small.bin', version='HTTP/1.0', close=False), 200, small),
                ('Connection: close, 24 MiB', harness.request_bytes('GET', '/big.bin'), 200, big),
                ('a 404 relayed', harness.request_bytes('GET', '/missing.bin'), 404, None),
                ('a request the proxy refuses', b'GET /small.bin HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n', 400,
                 None)]:
            with self.subTest(name):
                head, body = read_to_close_notify(proxy.port, request)
                response = harness.parse_response(head + b'\r\n\r\n')
                self.assertEqual(response.status, status, head)
                self.assertEqual(len(body), int(response.header('content-length', '-1')), head)
                if expected is not None:
                    self.assertEqual(body, expected)

    def test_slow_reader_gets_every_byte_before_the_close(self):
        # A client with a small receive buffer that reads slowly gets the
        # whole response before close_notify and the FIN (Connection:
        # close). On loopback the proxy's send buffer takes the tail, so
        # this does not make the last bytes wait in the record buffer.
        origin = self.origin()
        proxy = self.proxy(origin, tls={'certificate': leaf('localhost').cert, 'key': leaf('localhost').key})
        context = ssl.create_default_context(cafile=ca().ca_cert)
        raw = socket.socket()
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)
        raw.settimeout(harness.SOCK_TIMEOUT)
        raw.connect(('127.0.0.1', proxy.port))
        with context.wrap_socket(raw, server_hostname='localhost') as sock:
            sock.sendall(harness.request_bytes('GET', '/medium.bin', {'User-Agent': 'fwd-tls-slow'}))
            data = b''
            while True:
                time.sleep(0.002)
                try:
                    piece = sock.recv(4096)
                except ssl.SSLError as e:
                    self.fail('the stream ended badly after %d bytes: %s' % (len(data), e))
                if not piece:
                    break
                data += piece
        response = harness.parse_response(data)
        self.assertEqual(response.status, 200)
        self.assertEqual(len(response.body), MIB)
        self.assertEqual(sha256_bytes(response.body), sha256_bytes(self.env.content['medium.bin']))

    def test_tcp_mode_terminates_tls(self):
        origin = self.origin()
        proxy = self.proxy(origin, mode='tcp',
                           tls={'certificate': leaf('localhost').cert, 'key': leaf('localhost').key})
        r, out = self.curl('https://localhost:%d/big.bin' % proxy.port)
        self.assertEqual((r.returncode, r.stdout), (0, '200'), r.stderr)
        self.assertEqual(sha256_file(out), sha256_bytes(self.env.content['big.bin']))
        self.stop(proxy)
        rows = read_store(proxy.state_dir, 'SELECT protocol, reason, tls_version, body_bytes FROM requests')
        self.assertEqual(len(rows), 1, rows)
        self.assertEqual((rows[0]['protocol'], rows[0]['reason']), ('tcp', 'completed'), rows)
        self.assertIn(rows[0]['tls_version'], TLS_VERSIONS)
        self.assertGreater(rows[0]['body_bytes'], 24 * MIB)

    def test_garbage_and_silence_close_with_no_record(self):
        origin = self.origin()
        proxy = self.proxy(origin, tls={'certificate': leaf('localhost').cert, 'key': leaf('localhost').key,
                                        'handshake_timeout': '1s'})
        with harness.connect(proxy.port) as sock:
            sock.sendall(b'GET / HTTP/1.1\r\nHost: x\r\n\r\n')
            data, closed = harness.recv_all(sock, timeout=5)
            self.assertTrue(closed, 'plain HTTP on the TLS listener was not closed')
            self.assertFalse(data.startswith(b'HTTP'), data)
        # No record, but a trace in the log, with its cause (the rule http_download follows).
        line = '[forward] TLS handshake failed from 127.0.0.1: not TLS (http request)'
        self.assertTrue(harness.wait_for(lambda: line in proxy.log(), 5), proxy.log_tail())
        with harness.connect(proxy.port) as sock:
            started = time.monotonic()
            self.assertEqual(harness.recv_all(sock, timeout=10), (b'', True))
            self.assertLess(time.monotonic() - started, 5, 'not closed within handshake_timeout')
        self.stop(proxy)
        try:
            rows = read_store(proxy.state_dir, 'SELECT * FROM requests')
        except sqlite3.OperationalError:
            rows = []  # no store: nothing was recorded
        self.assertEqual(rows, [])


class OriginSide(ForwardTLSCase):
    """forward_tls: a plain forward listener in front of an HTTPS origin."""

    def origin_tls(self, name='localhost'):
        return self.origin(tls={'certificate': leaf(name).cert, 'key': leaf(name).key})

    def test_curl_by_ip_literal(self):
        origin = self.origin_tls()
        proxy = self.proxy(origin, forward_tls=True, forward_ca=ca().ca_cert)
        r, out = self.curl('http://127.0.0.1:%d/big.bin' % proxy.port)
        self.assertEqual((r.returncode, r.stdout), (0, '200'), r.stderr)
        self.assertEqual(sha256_file(out), sha256_bytes(self.env.content['big.bin']))
        self.stop(origin)
        rows = read_store(origin.state_dir, 'SELECT tls, status FROM requests WHERE user_agent = ?', 'fwd-tls-curl')
        self.assertEqual(rows, [{'tls': 1, 'status': 200}])

    def test_curl_by_name_and_aria2c_with_8_connections(self):
        origin = self.origin_tls()
        proxy = self.proxy(origin, forward_tls_name='localhost', forward_tls=True, forward_ca=ca().ca_cert)
        r, out = self.curl('http://127.0.0.1:%d/big.bin' % proxy.port)
        self.assertEqual((r.returncode, r.stdout), (0, '200'), r.stderr)
        self.assertEqual(sha256_file(out), sha256_bytes(self.env.content['big.bin']))
        r = harness.run(['aria2c', '-q', '-x8', '-s8', '-k1M', '--user-agent=fwd-tls-aria', '--allow-overwrite=true',
                         '--auto-file-renaming=false', '--file-allocation=none', '-d', self.out, '-o', 'aria.bin',
                         'http://127.0.0.1:%d/big.bin' % proxy.port], timeout=120)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(sha256_file(os.path.join(self.out, 'aria.bin')), sha256_bytes(self.env.content['big.bin']))
        self.stop(proxy)
        rows = read_store(proxy.state_dir, 'SELECT status, reason FROM requests WHERE user_agent = ?', 'fwd-tls-aria')
        self.assertGreater(len(rows), 1, rows)
        self.assertTrue(all(r['status'] in (200, 206) for r in rows), rows)

    def test_keep_alive_reuses_the_origin_connection(self):
        origin = self.origin_tls()
        proxy = self.proxy(origin, forward_tls_name='localhost', forward_tls=True, forward_ca=ca().ca_cert)
        with harness.Conn(proxy.port) as conn:
            for _ in range(4):
                conn.send(harness.request_bytes('GET', '/small.bin', {'User-Agent': 'fwd-tls-ka'}, close=False))
                response = conn.read_response()
                self.assertEqual(response.status, 200)
                self.assertEqual(response.body, self.env.content['small.bin'])
        self.stop(origin)
        rows = read_store(origin.state_dir, 'SELECT client_port, connection_id, tls FROM requests '
                                            'WHERE user_agent = ?', 'fwd-tls-ka')
        self.assertEqual(len(rows), 4, rows)
        self.assertEqual(len({(r['client_port'], r['connection_id']) for r in rows}), 1,
                         'the origin saw more than one connection: %r' % rows)
        self.assertTrue(all(r['tls'] == 1 for r in rows), rows)

    def assert_502_and_logged(self, proxy, *words):
        r = harness.http(proxy.port, 'GET', '/small.bin')
        self.assertEqual(r.status, 502)
        self.assertTrue(harness.wait_for(lambda: 'certificate verify failed' in proxy.log(), 5), proxy.log_tail())
        lines = [l for l in proxy.log().splitlines() if 'certificate verify failed' in l]
        self.assertEqual(len(lines), 1, lines)
        for word in words:
            self.assertIn(word, lines[0])

    def test_another_ca_is_502_and_one_log_line(self):
        other_ca = tls_ca.make(self.env.path('other-ca'))
        origin = self.origin_tls()
        proxy = self.proxy(origin, forward_tls=True, forward_ca=other_ca.ca_cert)
        # The origin sends its chain up to its own CA, which the other CA does not vouch for.
        self.assert_502_and_logged(proxy, 'self-signed certificate in certificate chain')

    def test_certificate_of_another_name_is_502(self):
        origin = self.origin_tls('other')
        proxy = self.proxy(origin, forward_tls_name='localhost', forward_tls=True, forward_ca=ca().ca_cert)
        self.assert_502_and_logged(proxy, 'hostname mismatch')

    def test_name_is_sent_as_sni(self):
        # The origin's default certificate is for another name; only the SNI
        # name forward_tls_name sends makes it answer with the right one.
        origin = self.origin(tls={'certificate': leaf('other').cert, 'key': leaf('other').key,
                                  'certificates': [{'certificate': leaf('localhost').cert,
                                                    'key': leaf('localhost').key}]})
        proxy = self.proxy(origin, forward_tls_name='localhost', forward_tls=True, forward_ca=ca().ca_cert)
        r = harness.http(proxy.port, 'GET', '/small.bin')
        self.assertEqual((r.status, r.body), (200, self.env.content['small.bin']), proxy.log_tail())

    def test_certificate_without_the_ip_is_502(self):
        origin = self.origin_tls('other')
        proxy = self.proxy(origin, forward_tls=True, forward_ca=ca().ca_cert)
        self.assert_502_and_logged(proxy, 'IP address mismatch')

    def test_tcp_mode_speaks_tls_to_the_origin(self):
        origin = self.origin_tls()
        proxy = self.proxy(origin, mode='tcp', forward_tls_name='localhost', forward_tls=True, forward_ca=ca().ca_cert)
        r, out = self.curl('http://127.0.0.1:%d/big.bin' % proxy.port)
        self.assertEqual((r.returncode, r.stdout), (0, '200'), r.stderr)
        self.assertEqual(sha256_file(out), sha256_bytes(self.env.content['big.bin']))
        self.stop(origin)
        rows = read_store(origin.state_dir, 'SELECT tls, status FROM requests WHERE user_agent = ?', 'fwd-tls-curl')
        self.assertEqual(rows, [{'tls': 1, 'status': 200}])

    def test_origin_that_never_finishes_the_handshake_is_504_within_connect_timeout(self):
        # It takes the TCP connection and says nothing: the handshake counts
        # in connect_timeout.
        silent = socket.socket()
        silent.bind(('127.0.0.1', 0))
        silent.listen(8)
        self.addCleanup(silent.close)

        class Port:
            port = silent.getsockname()[1]
        proxy = self.proxy(Port, forward_tls=True, forward_ca=ca().ca_cert, connect_timeout='1s')
        started = time.monotonic()
        r = harness.http(proxy.port, 'GET', '/small.bin', timeout=10)
        elapsed = time.monotonic() - started
        self.assertEqual(r.status, 504)
        self.assertGreater(elapsed, 0.9)
        self.assertLess(elapsed, 3)
        self.assertTrue(harness.wait_for(lambda: 'no TLS handshake within connect_timeout' in proxy.log(), 5),
                        proxy.log_tail())

    def test_both_sides(self):
        origin = self.origin_tls()
        proxy = self.proxy(origin, forward_tls_name='localhost', forward_tls=True, forward_ca=ca().ca_cert,
                           tls={'certificate': leaf('localhost').cert, 'key': leaf('localhost').key})
        r, out = self.curl('https://localhost:%d/big.bin' % proxy.port)
        self.assertEqual((r.returncode, r.stdout), (0, '200'), r.stderr)
        self.assertEqual(sha256_file(out), sha256_bytes(self.env.content['big.bin']))


class ConfigCheck(ForwardTLSCase):
    """`smprotocol -t` names the file, the line and the key."""

    files = {'small.bin': 16}

    def check(self, name, **keys):
        text = forward_config(self.env.path('state'), harness.free_port(), harness.free_port(), **keys)
        path = harness.write_file(self.env.path(name), text)
        r = harness.run([BINARY, '-t', '-c', path], timeout=20, cwd=self.env.dir)
        return text, path, r.returncode, r.stdout + r.stderr

    def assert_line(self, out, path, line, *words):
        tag = '%s:%d:' % (path, line)
        found = [l for l in out.splitlines() if tag in l and all(w.lower() in l.lower() for w in words)]
        self.assertTrue(found, 'no "%s ... %s" in:\n%s' % (tag, ' '.join(words), out))

    def test_good_configuration_passes(self):
        _, _, code, out = self.check('good.yaml', forward_tls=True, forward_ca=ca().ca_cert,
                                     tls={'certificate': leaf('localhost').cert, 'key': leaf('localhost').key})
        self.assertEqual(code, 0, out)
        self.assertIn('configuration OK', out)

    def test_system_store_when_no_forward_ca(self):
        _, _, code, out = self.check('system-store.yaml', forward_tls=True)
        self.assertEqual(code, 0, out)
        self.assertIn('configuration OK', out)

    def test_unreadable_forward_ca(self):
        missing = self.env.path('no-such-ca.pem')
        text, path, code, out = self.check('missing-ca.yaml', forward_tls=True, forward_ca=missing)
        self.assertEqual(code, 1, out)
        self.assert_line(out, path, line_of(text, '    forward_ca: '), 'forward_ca', missing)

    def test_forward_ca_that_is_not_pem(self):
        garbage = harness.write_file(self.env.path('garbage.pem'), 'not a certificate\n')
        text, path, code, out = self.check('garbage-ca.yaml', forward_tls=True, forward_ca=garbage)
        self.assertEqual(code, 1, out)
        self.assert_line(out, path, line_of(text, '    forward_ca: '), 'forward_ca', 'PEM')

    def test_forward_ca_without_forward_tls(self):
        text, path, code, out = self.check('ca-alone.yaml', forward_ca=ca().ca_cert)
        self.assertEqual(code, 1, out)
        self.assert_line(out, path, line_of(text, '    forward_ca: '), 'forward_ca', 'forward_tls')

    def test_forward_tls_name_without_forward_tls(self):
        text, path, code, out = self.check('name-alone.yaml', forward_tls_name='localhost')
        self.assertEqual(code, 1, out)
        self.assert_line(out, path, line_of(text, '    forward_tls_name: '), 'forward_tls_name', 'forward_tls')

    def test_tls_key_that_does_not_match(self):
        text, path, code, out = self.check('mismatch.yaml',
                                           tls={'certificate': leaf('localhost').cert, 'key': ca().mismatched_key})
        self.assertEqual(code, 1, out)
        self.assert_line(out, path, line_of(text, '      key: '), 'tls.key')


if __name__ == '__main__':
    unittest.main(verbosity=2)
