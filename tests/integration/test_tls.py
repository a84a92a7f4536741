#!/usr/bin/python3
"""HTTPS (issue 16): TLS on the http_download listeners, tested with real
clients (curl, wget, aria2c, openssl s_client, Python's ssl) against the real
server, with certificates made by tls_ca.py (a throwaway CA, ECDSA P-256).

Not registered in meson.build until the feature exists. By hand:
    SMP_BINARY=/work/main/build/core/smprotocol python3 tests/integration/test_tls.py

The interface these tests assume (issue 16; change the tests if the
implementation settles otherwise):

  protocols:
    - module: http_download
      ...
      tls:
        certificate: FILE          # leaf first, then the chain
        key: FILE
        certificates:              # more, chosen by SNI
          - {certificate: FILE, key: FILE}
        protocols: [TLSv1.2, TLSv1.3]   # the default
        session_tickets: true           # the default
        ktls: auto                      # auto | off
        handshake_timeout: 1s           # ASSUMED key, default 10s
      hsts: max-age=31536000       # ASSUMED at the listener level, sent over TLS only
    - module: http_download        # a plain listener that only redirects
      ...
      redirect_https: true
      https_port: 8443             # ASSUMED key: the port put in Location

  - `smprotocol -t` names FILE:LINE: and the key (`protocols[0].tls.key`...)
    of a missing file, a key that does not match its certificate, an expired
    certificate (errors) and one expiring within 14 days (a warning, -t
    passes).
  - the sqlite store's `requests` table has columns `tls` (0/1) and
    `tls_version` ('TLSv1.2' / 'TLSv1.3').
  - with kTLS on, the log says `kTLS` at info level (ASSUMED wording).
"""

import concurrent.futures
import os
import random
import re
import shutil
import signal
import socket
import sqlite3
import ssl
import subprocess
import sys
import time
import unittest

import harness
import tls_ca
from harness import MIB, request_bytes, sha256_bytes, sha256_file

BINARY = harness.BINARY
TLS_VERSIONS = ('TLSv1.2', 'TLSv1.3')

_CA = None


def ca():
    """The test CA, made once per run (a fraction of a second)."""
    global _CA
    if _CA is None:
        env = harness.TestEnv({}, prefix='smp-tls-ca-')
        _CA = tls_ca.make(env.path('ca'))
    return _CA


def leaf(name):
    return ca().leaves[name]


# --------------------------------------------------------------------------
# configs
# --------------------------------------------------------------------------

def _yaml_value(value):
    if isinstance(value, (list, tuple)):
        return '[%s]' % ', '.join(value)
    if isinstance(value, bool):
        return 'true' if value else 'false'
    return str(value)


def tls_lines(tls, indent='    '):
    """The `tls:` block of a listener, one key a line (so -t can name lines)."""
    lines = [indent + 'tls:']
    for key, value in tls.items():
        if key == 'certificates':
            lines.append(indent + '  certificates:')
            for entry in value:
                lines.append(indent + '    - {certificate: %s, key: %s}' % (entry['certificate'], entry['key']))
        else:
            lines.append(indent + '  %s: %s' % (key, _yaml_value(value)))
    return lines


def tls_of(name='localhost', **more):
    t = {'certificate': leaf(name).cert, 'key': leaf(name).key}
    t.update(more)
    return t


def plain_listener(port, root, **keys):
    lines = ['  - module: http_download', '    host: 127.0.0.1', '    port: %d' % port, '    root: %s' % root]
    lines += ['    %s: %s' % (k, _yaml_value(v)) for k, v in keys.items()]
    return lines


def make_config(env, port, tls, workers=2, listener=None, extra_listeners=(), core_extra=None, **kw):
    """harness.config_text with a `tls:` block under the first listener (and
    `listener`: more keys of that listener), then more listeners."""
    core = {'tracking': '{enabled: true, idle_window: 1s}'}
    core.update(core_extra or {})
    text = harness.config_text(port, env.www, workers=workers, core_extra=core, **kw, **(listener or {}))
    block = tls_lines(tls) if tls is not None else []
    for lines in extra_listeners:
        block += lines
    assert text.endswith('plugins: []\n')
    return text[:-len('plugins: []\n')] + '\n'.join(block + ['plugins: []']) + '\n'


def line_of(text, prefix):
    """1-based number of the only line of text that starts with prefix."""
    found = [i + 1 for i, line in enumerate(text.splitlines()) if line.startswith(prefix)]
    assert len(found) == 1, (prefix, found)
    return found[0]


def start_tls_server(test, env, tls, workers=2, **kw):
    port = harness.free_port()
    server = harness.Server(env, port=port, access_log=False,
                            config=make_config(env, port, tls, workers=workers, **kw))
    test.addCleanup(server.kill)
    server.start()
    return server


def https_url(server_or_port, path='/', host='127.0.0.1'):
    port = server_or_port if isinstance(server_or_port, int) else server_or_port.port
    return 'https://%s:%d%s' % (host, port, path)


# --------------------------------------------------------------------------
# clients
# --------------------------------------------------------------------------

def client_context(**kw):
    ctx = ssl.create_default_context(cafile=ca().ca_cert)
    if 'maximum_version' in kw:
        ctx.maximum_version = kw['maximum_version']
    return ctx


class TLSConn(harness.Conn):
    """harness.Conn over TLS (Python's ssl, checking the chain and the name)."""

    def __init__(self, port, timeout=harness.SOCK_TIMEOUT, server_hostname='localhost', context=None,
                 rcvbuf=None):
        raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            # A small fixed receive buffer: the server sends as the client reads.
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        raw.settimeout(timeout)
        try:
            raw.connect(('127.0.0.1', port))
            self.sock = (context or client_context()).wrap_socket(raw, server_hostname=server_hostname)
        except BaseException:
            raw.close()
            raise
        self.sock.settimeout(timeout)
        self.buf = b''
        self.timeout = timeout
        self.eof = False

    def _fill(self, deadline):
        try:
            return super()._fill(deadline)
        except (ssl.SSLEOFError, ssl.SSLZeroReturnError):
            self.eof = True
            return False

    def peer(self):
        """(serial as upper-case hex, subject as {field: value}) of the server's leaf."""
        cert = self.sock.getpeercert()
        subject = {k: v for rdn in cert['subject'] for k, v in rdn}
        return cert['serialNumber'].upper().lstrip('0'), subject


def https(port, method, path, headers=None, timeout=harness.SOCK_TIMEOUT, **kw):
    with TLSConn(port, timeout) as c:
        c.send(request_bytes(method, path, headers))
        return c.read_response(head_request=(method == 'HEAD'))


def read_to_close_notify(port, request, server_hostname='localhost'):
    """`request` on a new TLS connection; the head and body of its response,
    read to the server's close_notify. With OP_IGNORE_UNEXPECTED_EOF cleared
    (Python sets it), an end without one raises ssl.SSLEOFError."""
    context = client_context()
    context.options &= ~ssl.OP_IGNORE_UNEXPECTED_EOF
    raw = socket.create_connection(('127.0.0.1', port), timeout=harness.SOCK_TIMEOUT)
    with context.wrap_socket(raw, server_hostname=server_hostname, suppress_ragged_eofs=False) as sock:
        sock.sendall(request)
        received, closed = harness.recv_all(sock)
    if not closed:
        raise AssertionError('no end after %d bytes' % len(received))
    head, _, body = received.partition(b'\r\n\r\n')
    return head, body


def peer_of(port, server_hostname='localhost'):
    with TLSConn(port, server_hostname=server_hostname) as c:
        return c.peer()


def serial_or_none(port):
    """The served serial, or None if the handshake failed (say, mid-reload)."""
    try:
        return peer_of(port)[0]
    except (OSError, ssl.SSLError):
        return None


def s_client(port, *args, request=None, timeout=15):
    """openssl s_client against 127.0.0.1:port, trusting the test CA. With
    `request` (bytes), that is sent and s_client reads until the server
    closes (-ign_eof: a TLS 1.3 ticket arrives after the handshake, and
    -sess_out must see it). Returns (returncode or None on timeout, output)."""
    cmd = ['openssl', 's_client', '-connect', '127.0.0.1:%d' % port, '-CAfile', ca().ca_cert] + list(args)
    if request is not None:
        cmd.append('-ign_eof')
    try:
        r = subprocess.run(cmd, input=request or b'', stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           timeout=timeout)
    except subprocess.TimeoutExpired as e:
        return None, (e.output or b'').decode('latin-1') + '\n[test] s_client TIMEOUT'
    return r.returncode, r.stdout.decode('latin-1')


def served_certificate(output):
    """(serial hex, subject) of the first certificate s_client printed."""
    m = re.search(r'-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----', output, re.S)
    if not m:
        return None, None
    r = subprocess.run(['openssl', 'x509', '-noout', '-serial', '-subject'], input=m.group(0),
                       capture_output=True, text=True, timeout=10)
    fields = dict(line.split('=', 1) for line in r.stdout.splitlines() if '=' in line)
    return fields.get('serial', '').strip().upper().lstrip('0'), fields.get('subject', '').strip()


def client_hello(server_hostname='localhost'):
    """The bytes of a real ClientHello (Python's ssl over memory BIOs)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname=server_hostname)
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return outgoing.read()


def time_to_close(sock, timeout, drip=None):
    """Seconds until the peer closes (EOF or reset), or None if it did not
    within timeout. With drip=(data, interval), one more byte of data is
    sent every interval meanwhile (a client that trickles its handshake)."""
    t0 = time.monotonic()
    deadline = t0 + timeout
    data, interval = drip if drip else (b'', None)
    sent = 0
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        sock.settimeout(min(left, interval) if interval else left)
        try:
            chunk = sock.recv(65536)
            if not chunk:
                return time.monotonic() - t0
        except socket.timeout:
            if interval and sent < len(data):
                try:
                    sock.sendall(data[sent:sent + 1])
                except OSError:
                    return time.monotonic() - t0
                sent += 1
        except OSError:
            return time.monotonic() - t0


# --------------------------------------------------------------------------
# the store
# --------------------------------------------------------------------------

def store_path(env):
    return env.path('state', 'stats.db')


def query(env, sql, *args):
    """Rows of a query on the server's sqlite store, or None while it is not
    readable yet (no file, no table, busy)."""
    if not os.path.exists(store_path(env)):
        return None
    try:
        db = sqlite3.connect('file:%s?mode=ro' % store_path(env), uri=True, timeout=2)
        try:
            return db.execute(sql, args).fetchall()
        finally:
            db.close()
    except sqlite3.OperationalError:
        return None


class StoreChecks:
    """Mixin: what a finished HTTPS download must look like in the store."""

    def assert_tls_columns(self, env):
        # table_xinfo: table_info leaves out generated columns, and `tls` is one.
        columns = [row[1] for row in query(env, 'PRAGMA table_xinfo(requests)') or []]
        missing = [c for c in ('tls', 'tls_version') if c not in columns]
        if missing:
            self.fail('the sqlite table `requests` has no column %s (it has %s): the record does not say '
                      'yet whether an exchange was TLS' % (' nor '.join(missing), ', '.join(columns)))

    def assert_one_completed_tls_download(self, env, agent, min_requests=1, min_resumes=0):
        rows = query(env, 'SELECT completed, reason, requests, resumes, distinct_bytes, file_size '
                          'FROM downloads WHERE user_agent = ?', agent)
        self.assertIsNotNone(rows, 'no store at %s' % store_path(env))
        self.assertEqual(len(rows), 1, 'downloads of %s: %r' % (agent, rows))
        completed, reason, requests, resumes, distinct, size = rows[0]
        self.assertEqual((completed, reason), (1, 'completed'), rows[0])
        self.assertEqual(distinct, size, rows[0])
        self.assertGreaterEqual(requests, min_requests, rows[0])
        self.assertGreaterEqual(resumes, min_resumes, rows[0])
        self.assert_tls_columns(env)
        exchanges = query(env, 'SELECT tls, tls_version, status, range FROM requests WHERE user_agent = ?', agent)
        self.assertTrue(exchanges)
        for tls, version, status, _ in exchanges:
            self.assertEqual(tls, 1, exchanges)
            self.assertIn(version, TLS_VERSIONS, exchanges)
        return exchanges


# --------------------------------------------------------------------------
# tests
# --------------------------------------------------------------------------

class TLSTestCase(harness.TailsOnFailure):
    """A TestEnv per class; servers started per test (start_tls_server),
    killed at the end of it; their log tails printed on a failure."""

    files = {'small.bin': 4096, 'big.bin': 20 * MIB}

    @classmethod
    def setUpClass(cls):
        ca()
        cls.env = harness.TestEnv(cls.files)

    @classmethod
    def tearDownClass(cls):
        if os.environ.get('SMP_KEEP_TMP'):
            sys.stderr.write('[test] kept %s\n' % cls.env.dir)
        else:
            cls.env.cleanup()

    def start(self, tls, **kw):
        server = start_tls_server(self, self.env, tls, **kw)
        self.servers = getattr(self, 'servers', []) + [server]
        return server

    def run(self, result=None):
        self.servers = []
        return super().run(result)

    def failure_tails(self):
        return [('server log tail (%s)' % s.log_path, s.log_tail(30)) for s in self.servers]

    def stop(self, server):
        self.assertEqual(server.terminate(timeout=30), 0, 'the server did not stop cleanly:\n' + server.log_tail())


class RealClients(TLSTestCase, StoreChecks):
    """curl, wget -c after a cut, aria2c -x8 over HTTPS of a 64 MiB file: the
    same bytes, one completed download each in the store, every exchange
    marked TLS with its version."""

    files = {'big64.bin': 64 * MIB}

    def setUp(self):
        self.out = self.env.path('out-' + self._testMethodName)
        os.makedirs(self.out)
        self.sha = sha256_bytes(self.env.content['big64.bin'])

    def tearDown(self):
        shutil.rmtree(self.out, ignore_errors=True)

    def test_curl(self):
        server = self.start(tls_of())
        out = os.path.join(self.out, 'big64.bin')
        r = harness.run(['curl', '-sS', '--noproxy', '*', '--cacert', ca().ca_cert, '-A', 'tls-curl', '-o', out,
                         '-w', '%{http_code} %{ssl_verify_result}', https_url(server, '/big64.bin')], timeout=90)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout.strip(), '200 0')
        self.assertEqual(sha256_file(out), self.sha)
        self.stop(server)
        self.assert_one_completed_tls_download(self.env, 'tls-curl')

    def test_wget_cut_then_continued(self):
        server = self.start(tls_of())
        out = os.path.join(self.out, 'big64.bin')
        wget = ['wget', '--no-proxy', '--tries=1', '--timeout=20', '--ca-certificate=' + ca().ca_cert,
                '-U', 'tls-wget', '-P', self.out]
        cut = harness.spawn(wget + ['-q', '--limit-rate=4m', https_url(server, '/big64.bin')],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            got = harness.wait_for(lambda: os.path.exists(out) and os.path.getsize(out) >= 2 * MIB, 15)
            self.assertTrue(got, 'the first wget did not receive 2 MiB within 15 s')
        finally:
            cut.kill()
            cut.wait(timeout=5)
        # A resume is a request that starts after the download's last one
        # ended: give the server time to see the cut connection's reset, or
        # the continuation may start before the cut exchange's end is
        # recorded and count as a parallel request (1 run in 5 without).
        time.sleep(0.5)
        partial = os.path.getsize(out)
        self.assertLess(partial, 64 * MIB, 'the first wget was not cut')
        r = harness.run(wget + ['-c', '--no-verbose', '--server-response', https_url(server, '/big64.bin')],
                        timeout=90)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertRegex(r.stderr, r'HTTP/1\.1 206', 'wget -c did not get a 206:\n' + r.stderr)
        self.assertEqual(os.listdir(self.out), ['big64.bin'], 'wget made another file')
        self.assertEqual(sha256_file(out), self.sha)
        self.stop(server)
        exchanges = self.assert_one_completed_tls_download(self.env, 'tls-wget', min_requests=2, min_resumes=1)
        # The continuation asked for the bytes after what the cut one had written.
        resumed = [e for e in exchanges if e[2] == 206 and e[3] and str(partial) in e[3]]
        self.assertTrue(resumed, 'no 206 for a Range from byte %d: %r' % (partial, exchanges))

    def test_aria2c_eight_connections(self):
        server = self.start(tls_of())
        r = harness.run(['aria2c', '-x8', '-s8', '-k1M', '--ca-certificate=' + ca().ca_cert,
                         '--user-agent=tls-aria2c', '--allow-overwrite=true', '--auto-file-renaming=false',
                         '--file-allocation=none', '--console-log-level=warn', '--summary-interval=0',
                         '--max-tries=1', '--all-proxy=', '-d', self.out, '-o', 'big64.bin',
                         https_url(server, '/big64.bin')], timeout=120)
        self.assertEqual(r.returncode, 0, 'aria2c failed (%s):\n%s\n%s' % (r.returncode, r.stdout[-2000:],
                                                                           r.stderr[-2000:]))
        self.assertEqual(sha256_file(os.path.join(self.out, 'big64.bin')), self.sha)
        self.stop(server)
        self.assert_one_completed_tls_download(self.env, 'tls-aria2c', min_requests=8)


class SameOverTLS(TLSTestCase):
    """Ranges, multipart, limit_rate and unique_ip behave over TLS as over
    plain HTTP: the module's rules are the same, only the stream differs."""

    def curl(self, server, path, *args, timeout=60):
        out = self.env.path('same-%s.out' % self._testMethodName)
        r = harness.run(['curl', '-sS', '--noproxy', '*', '--cacert', ca().ca_cert, '-D', out + '.head',
                         '-o', out, '-w', '%{http_code}'] + list(args) + [https_url(server, path)], timeout=timeout)
        with open(out + '.head', 'rb') as f:
            head = f.read().decode('latin-1')
        with open(out, 'rb') as f:
            body = f.read()
        return r.stdout.strip(), head, body

    def test_multipart_byteranges(self):
        server = self.start(tls_of())
        code, head, body = self.curl(server, '/small.bin', '-r', '0-9,100-109,4090-')
        self.assertEqual(code, '206', head)
        m = re.search(r'(?im)^Content-Type: multipart/byteranges; boundary=(\S+)', head)
        self.assertIsNotNone(m, head)
        content = self.env.content['small.bin']
        parts = body.split(b'--' + m.group(1).encode())
        self.assertEqual(parts[-1].strip(), b'--', 'no closing boundary')
        got = []
        for part in parts[1:-1]:
            headers, _, data = part.partition(b'\r\n\r\n')
            r = re.search(rb'Content-Range: bytes (\d+)-(\d+)/4096', headers)
            self.assertIsNotNone(r, headers)
            first, last = int(r.group(1)), int(r.group(2))
            self.assertEqual(data[:-2], content[first:last + 1])
            got.append((first, last))
        self.assertEqual(got, [(0, 9), (100, 109), (4090, 4095)])

    def test_closing_responses_end_with_close_notify(self):
        # A response after which the connection closes leaves its last bytes
        # for the close_notify and the FIN to push (docs/tls.md, "A closing
        # connection's last bytes leave with its FIN"): each arrives whole,
        # then the close_notify.
        server = self.start(tls_of())
        small, big = self.env.content['small.bin'], self.env.content['big.bin']
        cases = [
            ('HTTP/1.0, from memory', request_bytes('GET', '/small.bin', version='HTTP/1.0', close=False), small),
            ('Connection: close, 20 MiB from the file', request_bytes('GET', '/big.bin'), big),
            ('a range ending a buffer in', request_bytes('GET', '/big.bin', {'Range': 'bytes=1000-70000'}),
             big[1000:70001]),
            ('multipart, ending on its boundary', request_bytes('GET', '/small.bin', {'Range': 'bytes=0-9,20-29'}),
             None),
            ('HEAD', request_bytes('HEAD', '/big.bin'), b''),
            ('an error', request_bytes('GET', '/missing.bin'), None),
        ]
        for name, request, expected in cases:
            with self.subTest(name):
                head, body = read_to_close_notify(server.port, request)
                length = re.search(rb'(?im)^Content-Length: (\d+)', head)
                self.assertIsNotNone(length, head)
                if name != 'HEAD':
                    self.assertEqual(len(body), int(length.group(1)), head)
                if expected is not None:
                    self.assertEqual(body, expected, head)

    def test_limit_rate(self):
        # 1 MiB at 512 KiB/s after the first 128 KiB: at least 1.5 s; without
        # the limit this is a few milliseconds on loopback.
        server = self.start(tls_of(), listener={'limit_rate': '512KiB', 'limit_rate_after': '128KiB'})
        started = time.monotonic()
        code, _, body = self.curl(server, '/big.bin', '-r', '0-1048575')
        took = time.monotonic() - started
        self.assertEqual(code, '206')
        self.assertEqual(body, self.env.content['big.bin'][:MIB])
        self.assertGreater(took, 1.5, 'limit_rate did not hold over TLS')
        self.assertLess(took, 10)

    def test_unique_ip(self):
        # The first download is held slow by limit_rate, so it still runs
        # when the second asks for the same file.
        server = self.start(tls_of(), listener={'unique_ip': True, 'limit_rate': '256KiB'})
        first = subprocess.Popen(['curl', '-sS', '--noproxy', '*', '--cacert', ca().ca_cert, '-o', os.devnull,
                                  https_url(server, '/big.bin')], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.addCleanup(lambda: (first.kill(), first.wait()))
        time.sleep(0.5)  # 20 MiB at 256 KiB/s: it runs for over a minute
        self.assertIsNone(first.poll(), 'the first download ended early')
        code, head, _ = self.curl(server, '/big.bin')
        self.assertEqual(code, '429', head)
        self.assertRegex(head, r'(?im)^Retry-After: 10')
        code, _, body = self.curl(server, '/small.bin')
        self.assertEqual((code, body), ('200', self.env.content['small.bin']))


@unittest.skipIf(os.environ.get('SMP_SANITIZED'), 'RSS does not hold under ASan')
class IdleConnections(TLSTestCase):
    """A keep-alive TLS connection that has answered its request holds no
    64 KiB record buffer: the buffer goes back to the worker's pool once
    flushed. Held, 400 idle connections would cost 25 MiB more. (OpenSSL's
    own state of a connection is about 30 KiB here.)"""

    CONNECTIONS = 400

    def rss_kib(self, pid):
        with open('/proc/%d/status' % pid) as f:
            return int(re.search(r'VmRSS:\s+(\d+) kB', f.read()).group(1))

    def test_idle_connection_holds_no_record_buffer(self):
        server = self.start(tls_of(), workers=1)
        (worker,) = server.wait_workers(1)
        context = client_context()
        # 64 KiB of body: the whole record buffer is written, so a buffer
        # held after the response would count whole.
        request = request_bytes('GET', '/big.bin', {'Host': 'localhost', 'Range': 'bytes=0-65535'})

        def open_one():
            s = context.wrap_socket(socket.create_connection(('127.0.0.1', server.port), timeout=10),
                                    server_hostname='localhost')
            s.sendall(request)
            got = b''
            while b'\r\n\r\n' not in got or len(got) < got.index(b'\r\n\r\n') + 4 + 65536:
                part = s.recv(65536)
                self.assertTrue(part, 'the connection closed before the body ended')
                got += part
            return s

        warm = [open_one() for _ in range(20)]  # the pool and the allocator warmed up
        before = self.rss_kib(worker)
        sockets = [open_one() for _ in range(self.CONNECTIONS)]
        after = self.rss_kib(worker)
        per_connection = (after - before) / self.CONNECTIONS
        for s in sockets + warm:
            s.close()
        sys.stderr.write('[test] %.1f KiB per idle TLS connection\n' % per_connection)
        self.assertLess(per_connection, 48, 'an idle TLS connection costs %.1f KiB' % per_connection)


class SNI(TLSTestCase):
    """The certificate is chosen by the name the client asks for."""

    def setUp(self):
        self.server = self.start(tls_of(certificates=[{'certificate': leaf('other').cert,
                                                       'key': leaf('other').key}]))

    def served(self, *args):
        code, out = s_client(self.server.port, *args)
        self.assertEqual(code, 0, out)
        self.assertIn('Verify return code: 0 (ok)', out)
        return served_certificate(out)

    def test_other_name_gets_its_certificate(self):
        serial, subject = self.served('-servername', 'other.test')
        self.assertEqual(serial, '2001')
        self.assertIn('CN = other.test', subject)

    def test_no_name_gets_the_default(self):
        serial, subject = self.served('-noservername')
        self.assertEqual((serial, subject), ('1001', 'CN = localhost'))

    def test_localhost_gets_the_default(self):
        self.assertEqual(self.served('-servername', 'localhost'), ('1001', 'CN = localhost'))

    def test_unknown_name_gets_the_default(self):
        self.assertEqual(self.served('-servername', 'unknown.test'), ('1001', 'CN = localhost'))

    def test_requests_on_both_names(self):
        # And the files are served on both, with the client checking the name.
        for name in ('localhost', 'other.test'):
            with TLSConn(self.server.port, server_hostname=name) as c:
                c.send(request_bytes('GET', '/small.bin'))
                response = c.read_response()
                self.assertEqual(response.status, 200, name)
                self.assertEqual(response.body, self.env.content['small.bin'], name)


class Versions(TLSTestCase):
    """protocols: [TLSv1.2, TLSv1.3] by default; a narrower list is kept to."""

    def test_default_accepts_both(self):
        server = self.start(tls_of())
        for flag, version in (('-tls1_2', 'TLSv1.2'), ('-tls1_3', 'TLSv1.3')):
            code, out = s_client(server.port, flag, '-servername', 'localhost')
            self.assertEqual(code, 0, out)
            self.assertIn('New, %s,' % version, out)

    def test_tls13_only_refuses_tls12(self):
        server = self.start(tls_of(protocols=['TLSv1.3']))
        code, out = s_client(server.port, '-tls1_3', '-servername', 'localhost')
        self.assertEqual(code, 0, out)
        code, out = s_client(server.port, '-tls1_2', '-servername', 'localhost')
        self.assertNotEqual(code, 0, 'a TLS 1.2 handshake succeeded with protocols: [TLSv1.3]:\n' + out)
        self.assertNotIn('New, TLSv1.2', out)


class ConfigCheck(TLSTestCase):
    """`smprotocol -t` checks the certificates and keys, naming FILE:LINE: and the key."""

    files = {'small.bin': 16}

    def check(self, tls, name):
        text = make_config(self.env, harness.free_port(), tls, workers=1)
        path = harness.write_file(self.env.path(name), text)
        r = harness.run([BINARY, '-t', '-c', path], timeout=20, cwd=self.env.dir)
        return text, path, r.returncode, r.stdout + r.stderr

    def line_naming(self, out, path, line, *words):
        """The output lines that carry PATH:LINE: and every one of words (case-insensitive)."""
        tag = '%s:%d:' % (path, line)
        return [l for l in out.splitlines() if tag in l and all(w.lower() in l.lower() for w in words)]

    def test_good_certificate_passes(self):
        _, _, code, out = self.check(tls_of(), 'good.yaml')
        self.assertEqual(code, 0, out)
        self.assertIn('configuration OK', out)
        self.assertNotRegex(out, r'(?i)expir', out)

    def test_key_that_does_not_match(self):
        text, path, code, out = self.check(tls_of(key=ca().mismatched_key), 'mismatch.yaml')
        self.assertEqual(code, 1, out)
        line = line_of(text, '      key: ')
        self.assertTrue(self.line_naming(out, path, line, 'tls.key'),
                        'no "%s:%d: ... tls.key ..." in:\n%s' % (path, line, out))

    def test_sni_entry_key_that_does_not_match(self):
        tls = tls_of(certificates=[{'certificate': leaf('other').cert, 'key': ca().mismatched_key}])
        text, path, code, out = self.check(tls, 'sni-mismatch.yaml')
        self.assertEqual(code, 1, out)
        line = line_of(text, '        - {certificate:')
        self.assertTrue(self.line_naming(out, path, line, 'certificates[0]'),
                        'no "%s:%d: ... certificates[0] ..." in:\n%s' % (path, line, out))

    def test_expired_certificate_is_an_error(self):
        text, path, code, out = self.check(tls_of('expired'), 'expired.yaml')
        self.assertEqual(code, 1, out)
        line = line_of(text, '      certificate: ')
        self.assertTrue(self.line_naming(out, path, line, 'tls.certificate', 'expired'),
                        'no "%s:%d: ... tls.certificate ... expired" in:\n%s' % (path, line, out))

    def test_certificate_expiring_in_5_days_is_a_warning(self):
        text, path, code, out = self.check(tls_of('expiring'), 'expiring.yaml')
        self.assertEqual(code, 0, out)
        self.assertIn('configuration OK', out)
        line = line_of(text, '      certificate: ')
        self.assertTrue(self.line_naming(out, path, line, 'tls.certificate', 'expir'),
                        'no warning "%s:%d: ... tls.certificate ... expires ..." in:\n%s' % (path, line, out))

    def test_ticket_rotation_under_a_second(self):
        text, path, code, out = self.check(tls_of(session_ticket_rotation='500ms'), 'rotation.yaml')
        self.assertEqual(code, 1, out)
        line = line_of(text, '      session_ticket_rotation: ')
        self.assertTrue(self.line_naming(out, path, line, 'tls.session_ticket_rotation', '1s or more'),
                        'no "%s:%d: ... tls.session_ticket_rotation ..." in:\n%s' % (path, line, out))

    def test_tickets_per_handshake_out_of_range(self):
        for tickets in (0, 9):
            text, path, code, out = self.check(tls_of(tickets_per_handshake=tickets), 'tickets-%d.yaml' % tickets)
            self.assertEqual(code, 1, out)
            line = line_of(text, '      tickets_per_handshake: ')
            self.assertTrue(self.line_naming(out, path, line, 'tls.tickets_per_handshake', '1 to 8'),
                            'no "%s:%d: ... tls.tickets_per_handshake ..." in:\n%s' % (path, line, out))

    def test_missing_certificate_file(self):
        missing = self.env.path('no-such.pem')
        text, path, code, out = self.check(tls_of(certificate=missing), 'missing-cert.yaml')
        self.assertEqual(code, 1, out)
        line = line_of(text, '      certificate: ')
        self.assertTrue(self.line_naming(out, path, line, 'tls.certificate', missing),
                        'no "%s:%d: ... tls.certificate ... %s" in:\n%s' % (path, line, missing, out))

    def test_missing_key_file(self):
        missing = self.env.path('no-such.key')
        text, path, code, out = self.check(tls_of(key=missing), 'missing-key.yaml')
        self.assertEqual(code, 1, out)
        line = line_of(text, '      key: ')
        self.assertTrue(self.line_naming(out, path, line, 'tls.key', missing),
                        'no "%s:%d: ... tls.key ... %s" in:\n%s' % (path, line, missing, out))

    def test_unreadable_key_file(self):
        if os.geteuid() == 0:
            self.skipTest('running as root: a mode 000 file is still readable')
        unreadable = self.env.path('unreadable.key')
        shutil.copy(leaf('localhost').key, unreadable)
        os.chmod(unreadable, 0)
        text, path, code, out = self.check(tls_of(key=unreadable), 'unreadable-key.yaml')
        self.assertEqual(code, 1, out)
        self.assertTrue(self.line_naming(out, path, line_of(text, '      key: '), 'tls.key'), out)

    def test_certificate_file_that_is_not_a_certificate(self):
        garbage = harness.write_file(self.env.path('garbage.pem'), 'not a certificate\n')
        text, path, code, out = self.check(tls_of(certificate=garbage), 'garbage-cert.yaml')
        self.assertEqual(code, 1, out)
        self.assertTrue(self.line_naming(out, path, line_of(text, '      certificate: '), 'tls.certificate'), out)


class Garbage(TLSTestCase):
    """What is not a TLS client: bytes that are no ClientHello, plain HTTP on
    the TLS port, a handshake that stalls or trickles, a client that leaves
    mid-body. The same workers serve afterwards, and nothing of it is stored
    as a completed exchange."""

    HANDSHAKE_TIMEOUT = 1.0

    def setUp(self):
        # A fresh store per test: the rows checked are this test's only.
        shutil.rmtree(self.env.path('state'), ignore_errors=True)
        self.server = self.start(tls_of(handshake_timeout='1s'), log_level='debug')
        self.pids = sorted(self.server.wait_workers(2))
        self.assertEqual(len(self.pids), 2)

    def assert_unharmed(self):
        self.assertEqual(sorted(self.server.workers()), self.pids, 'a worker was replaced:\n' + self.server.log_tail())
        response = https(self.server.port, 'GET', '/small.bin', {'User-Agent': 'after-garbage'})
        self.assertEqual(response.status, 200)
        self.assertEqual(response.body, self.env.content['small.bin'])
        self.assertEqual(sorted(self.server.workers()), self.pids)
        self.stop(self.server)
        # A garbage connection is stored with reason bad_request, or not at all:
        # never as an exchange that delivered something.
        rows = query(self.env, "SELECT status, reason, user_agent FROM requests "
                               "WHERE user_agent IS NULL OR user_agent != 'after-garbage'") or []
        for status, reason, agent in rows:
            self.assertNotIn(reason, ('completed',), rows)
            self.assertFalse(200 <= status < 300, rows)

    def assert_logged(self, cause):
        """The failed handshake left its trace in the log, with its cause
        (at debug; the first of an episode at info)."""
        line = 'TLS handshake failed from 127.0.0.1: ' + cause
        self.assertTrue(harness.wait_for(lambda: line in self.server.log(), 5),
                        'no "%s" in the log:\n%s' % (line, self.server.log_tail()))

    def exchange(self, data, timeout=5.0):
        """Send data, then read until the server closes; (bytes received, seconds to close or None)."""
        with socket.create_connection(('127.0.0.1', self.server.port), timeout=timeout) as s:
            try:
                s.sendall(data)
            except OSError:
                pass
            t0 = time.monotonic()
            received = b''
            deadline = t0 + timeout
            while time.monotonic() < deadline:
                s.settimeout(max(0.01, deadline - time.monotonic()))
                try:
                    chunk = s.recv(65536)
                except socket.timeout:
                    return received, None
                except OSError:
                    return received, time.monotonic() - t0
                if not chunk:
                    return received, time.monotonic() - t0
                received += chunk
            return received, None

    def test_random_bytes(self):
        rng = random.Random(16)
        inputs = [bytes(rng.randrange(256) for _ in range(n)) for n in (1, 5, 64, 4096, 70000)]
        inputs += [
            b'\x16\x03\x01\xff\xff' + bytes(rng.randrange(256) for _ in range(300)),  # a record too long
            b'\x16\x03\x01\x00\x05\x01\x00\x00\x01\x00',                              # a ClientHello of nothing
            b'\x80\x2e\x01\x00\x02' + bytes(rng.randrange(256) for _ in range(45)),   # SSLv2-style hello
            b'\x15\x03\x03\x00\x02\x02\x28',                                          # an alert first
            b'\x17\x03\x03\x00\x10' + bytes(16),                                      # application data first
        ]
        for data in inputs:
            received, closed = self.exchange(data)
            self.assertIsNotNone(closed, 'the server kept a connection that sent %r...' % data[:16])
        self.assert_logged('not TLS')
        self.assert_unharmed()

    def test_mutated_client_hellos(self):
        # Real ClientHellos with bytes changed, cut or repeated; in parallel,
        # as the incomplete ones wait for the handshake timeout.
        rng = random.Random(1616)
        hello = client_hello()
        cases = []
        for i in range(120):
            data = bytearray(hello)
            for _ in range(rng.randint(1, 4)):
                at = rng.randrange(len(data))
                op = rng.random()
                if op < 0.5:
                    data[at] = rng.randrange(256)
                elif op < 0.7:
                    del data[at:at + rng.randint(1, 30)]
                elif op < 0.9:
                    data[at:at] = data[at:at + rng.randint(1, 30)] * rng.randint(2, 20)
                else:
                    data = data[:at]
            cases.append(bytes(data))
        with concurrent.futures.ThreadPoolExecutor(max_workers=20) as pool:
            results = list(pool.map(lambda d: self.exchange(d, timeout=8.0), cases))
        kept = [i for i, (_, closed) in enumerate(results) if closed is None]
        self.assertFalse(kept, 'connections still open 8 s after a mutated ClientHello: cases %s' % kept)
        self.assert_unharmed()

    def test_first_bytes_waiting_at_the_accept(self):
        # The handshake starts with the accept, on what has come. With the
        # workers stopped, a connection's first bytes are certain to be there
        # when it is accepted: garbage is refused at once, and a real
        # ClientHello is answered and its request served.
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
            for pid in self.pids:
                os.kill(pid, signal.SIGSTOP)
            try:
                garbage = socket.create_connection(('127.0.0.1', self.server.port), timeout=5)
                garbage.sendall(b'\x16\x03\x01\xff\xff' + bytes(300))
                # Its row is a served one: the agent assert_unharmed leaves out of the garbage rows.
                fetched = pool.submit(https, self.server.port, 'GET', '/small.bin', {'User-Agent': 'after-garbage'})
                time.sleep(0.5)  # the client's ClientHello waits in its socket
            finally:
                for pid in self.pids:
                    os.kill(pid, signal.SIGCONT)
            with garbage:
                self.assertIsNotNone(time_to_close(garbage, 5), 'the server kept the garbage connection')
            response = fetched.result(timeout=harness.SOCK_TIMEOUT + 5)
        self.assertEqual(response.status, 200)
        self.assertEqual(response.body, self.env.content['small.bin'])
        self.assert_logged('not TLS')
        self.assert_unharmed()

    def test_plain_http_on_the_tls_port(self):
        received, closed = self.exchange(request_bytes('GET', '/small.bin'))
        self.assertIsNotNone(closed, 'a plain HTTP request kept the TLS connection open')
        # A plain-text answer (400, like nginx's) is allowed; the file in clear never.
        self.assertNotIn(self.env.content['small.bin'], received)
        self.assertNotIn(b' 200 ', received[:20])
        self.assert_logged('not TLS (http request)')
        self.assert_unharmed()

    def test_half_a_client_hello_then_nothing(self):
        hello = client_hello()
        with socket.create_connection(('127.0.0.1', self.server.port), timeout=5) as s:
            s.sendall(hello[:len(hello) // 2])
            elapsed = time_to_close(s, 4 * self.HANDSHAKE_TIMEOUT + 1)
        self.assertIsNotNone(elapsed, 'the server kept a stalled handshake past %ss' % (4 * self.HANDSHAKE_TIMEOUT + 1))
        self.assertGreaterEqual(elapsed, 0.5 * self.HANDSHAKE_TIMEOUT, 'closed at once: half a record is not an error')
        self.assertLess(elapsed, 3 * self.HANDSHAKE_TIMEOUT)
        self.assert_logged('timed out')
        self.assert_unharmed()

    def test_connection_that_sends_nothing(self):
        with socket.create_connection(('127.0.0.1', self.server.port), timeout=5) as s:
            elapsed = time_to_close(s, 4 * self.HANDSHAKE_TIMEOUT + 1)
        self.assertIsNotNone(elapsed, 'a silent connection was kept past the handshake timeout')
        self.assertLess(elapsed, 3 * self.HANDSHAKE_TIMEOUT)
        self.assert_logged('timed out')
        self.assert_unharmed()

    def test_handshake_trickled_a_byte_at_a_time(self):
        # The timeout bounds the whole handshake, not the time between two bytes.
        hello = client_hello()
        with socket.create_connection(('127.0.0.1', self.server.port), timeout=5) as s:
            elapsed = time_to_close(s, 4 * self.HANDSHAKE_TIMEOUT + 1, drip=(hello, 0.1))
        self.assertIsNotNone(elapsed, 'a handshake sent a byte every 100 ms was kept past %ss'
                             % (4 * self.HANDSHAKE_TIMEOUT + 1))
        self.assertLess(elapsed, 3 * self.HANDSHAKE_TIMEOUT)
        self.assert_unharmed()

    def test_client_leaves_mid_body(self):
        with TLSConn(self.server.port, timeout=10, rcvbuf=64 * 1024) as c:
            c.send(request_bytes('GET', '/big.bin', {'User-Agent': 'tls-halfway'}))
            received = 0
            while received < 2 * MIB:
                chunk = c.sock.recv(65536)
                self.assertTrue(chunk, 'the server closed early')
                received += len(chunk)
        # closed without close_notify, 18 MiB unread
        rows = harness.wait_for(lambda: query(self.env, "SELECT reason FROM requests WHERE user_agent = 'tls-halfway'"),
                                15)
        self.assertEqual(rows, [('client_closed',)], self.server.log_tail())
        self.assertEqual(sorted(self.server.workers()), self.pids)
        response = https(self.server.port, 'GET', '/small.bin', {'User-Agent': 'after-garbage'})
        self.assertEqual(response.status, 200)
        self.stop(self.server)


class TicketsPerHandshake(TLSTestCase):
    """A TLS 1.3 handshake is followed by tls.tickets_per_handshake tickets
    (1 by default; OpenSSL's own default is 2), each NewSessionTicket message
    counted in `openssl s_client -msg`; the one ticket resumes again and again
    (Resumption below)."""

    files = {'small.bin': 16}

    def tickets_sent(self, **tls):
        server = self.start(tls_of(**tls), workers=1)
        request = request_bytes('GET', '/small.bin', {'Host': 'localhost', 'Connection': 'close'})
        code, out = s_client(server.port, '-tls1_3', '-servername', 'localhost', '-msg', request=request)
        self.assertEqual(code, 0, out)
        self.assertIn('HTTP/1.1 200', out)
        self.stop(server)
        return len(re.findall(r'<<< TLS 1\.3, Handshake \[length [0-9a-f]+\], NewSessionTicket', out))

    def test_one_ticket_by_default(self):
        self.assertEqual(self.tickets_sent(), 1)

    def test_as_many_as_configured(self):
        self.assertEqual(self.tickets_sent(tickets_per_handshake=3), 3)

    def test_none_without_session_tickets(self):
        self.assertEqual(self.tickets_sent(session_tickets=False), 0)


class Resumption(TLSTestCase):
    """A session made on one worker resumes on the others (the ticket keys
    are the same in every worker): connections spread over two workers by
    SO_REUSEPORT, every one "Reused". 20 of them all land on one worker about
    once in half a million runs (10, once in 512)."""

    CONNECTIONS = 20

    def resume(self, flag, version, tag):
        server = self.start(tls_of(), workers=2)
        self.assertEqual(len(server.wait_workers(2)), 2)
        session = self.env.path('session-%s.pem' % tag)

        def request(i):
            return request_bytes('GET', '/small.bin', {'User-Agent': '%s-%d' % (tag, i), 'Host': 'localhost'})

        code, out = s_client(server.port, flag, '-servername', 'localhost', '-sess_out', session,
                             request=request(0))
        self.assertEqual(code, 0, out)
        self.assertIn('New, %s,' % version, out)
        self.assertTrue(os.path.exists(session) and os.path.getsize(session) > 0, 'no session saved:\n' + out)
        for i in range(1, self.CONNECTIONS + 1):
            code, out = s_client(server.port, flag, '-servername', 'localhost', '-sess_in', session,
                                 request=request(i))
            self.assertEqual(code, 0, out)
            self.assertIn('Reused, %s,' % version, out, 'connection %d was not resumed:\n%s' % (i, out))
            self.assertIn('HTTP/1.1 200', out)
        self.stop(server)
        # Which worker served each: the store says (requests.worker_id).
        workers = query(self.env, 'SELECT DISTINCT worker_id FROM requests WHERE user_agent LIKE ? '
                                  'AND user_agent != ?', tag + '-%', tag + '-0')
        self.assertIsNotNone(workers)
        self.assertEqual(len(workers), 2, 'the resumed connections did not reach both workers: %r '
                         '(SO_REUSEPORT put %d connections on one; run again)' % (workers, self.CONNECTIONS))

    def test_tls12_ticket_resumes_on_every_worker(self):
        self.resume('-tls1_2', 'TLSv1.2', 'resume12')

    def test_tls13_ticket_resumes_on_every_worker(self):
        self.resume('-tls1_3', 'TLSv1.3', 'resume13')


class TicketRotation(TLSTestCase):
    """Ticket keys rotate with the wall clock (tls.session_ticket_rotation):
    a ticket resumes in its own period and the next one (the key before is
    kept), and not after that. With OpenSSL's own keys, which never rotate,
    the last connection would resume."""

    ROTATION = 2

    def at_period_start(self, periods_after):
        """Sleeps until 0.3 s into the period `periods_after` after the
        current one."""
        now = time.time()
        start = (int(now) // self.ROTATION + periods_after) * self.ROTATION
        time.sleep(max(0.0, start + 0.3 - now))

    def rotate(self, flag, version, tag):
        server = self.start(tls_of(session_ticket_rotation='%ds' % self.ROTATION), workers=2)
        self.assertEqual(len(server.wait_workers(2)), 2)
        session = self.env.path('session-%s.pem' % tag)

        def connect(step, sess):
            request = request_bytes('GET', '/small.bin', {'User-Agent': '%s-%s' % (tag, step), 'Host': 'localhost'})
            code, out = s_client(server.port, flag, '-servername', 'localhost', sess, session, request=request)
            self.assertEqual(code, 0, out)
            self.assertIn('HTTP/1.1 200', out)
            return out

        self.at_period_start(1)
        out = connect('issued', '-sess_out')
        self.assertIn('New, %s,' % version, out)
        self.assertIn('Reused, %s,' % version, connect('same-period', '-sess_in'))
        self.at_period_start(1)
        self.assertIn('Reused, %s,' % version, connect('next-period', '-sess_in'),
                      'a ticket of the period before did not resume')
        self.at_period_start(1)
        out = connect('two-periods-later', '-sess_in')
        self.assertIn('New, %s,' % version, out, 'a ticket two periods old still resumed')
        self.stop(server)

    def test_tls12(self):
        self.rotate('-tls1_2', 'TLSv1.2', 'rotate12')

    def test_tls13(self):
        self.rotate('-tls1_3', 'TLSv1.3', 'rotate13')


class Reload(TLSTestCase):
    """SIGHUP with a new certificate in the same files: a download running
    over the old one finishes; new connections get the new one."""

    def setUp(self):
        self.cert = self.env.path('site.pem')
        self.key = self.env.path('site.key')
        self.install('localhost')
        self.server = self.start({'certificate': self.cert, 'key': self.key}, workers=2)

    def install(self, name, key=None):
        for src, dst in ((key or leaf(name).key, self.key), (leaf(name).cert, self.cert)):
            shutil.copy(src, dst + '.new')
            os.replace(dst + '.new', dst)

    def reloaded(self, count, timeout=15):
        return harness.wait_for(lambda: len(re.findall(r'\] Reloaded: ', self.server.log())) >= count, timeout)

    def test_new_certificate_while_a_download_runs(self):
        self.assertEqual(peer_of(self.server.port), ('1001', {'commonName': 'localhost'}))
        content = self.env.content['big.bin']
        with TLSConn(self.server.port, timeout=30, rcvbuf=64 * 1024) as c:
            self.assertEqual(c.peer()[0], '1001')
            c.send(request_bytes('GET', '/big.bin', {'User-Agent': 'tls-across-reload'}))
            deadline = time.monotonic() + 30
            while b'\r\n\r\n' not in c.buf or len(c.buf) < MIB:
                self.assertTrue(c._fill(deadline), 'closed before 1 MiB')
            head, body = c.buf.split(b'\r\n\r\n', 1)
            self.assertTrue(head.startswith(b'HTTP/1.1 200'), head)
            # The download waits, a slow client, while the certificate changes.
            self.install('localhost-renewed')
            os.kill(self.server.pid, signal.SIGHUP)
            self.assertTrue(self.reloaded(1), 'no reload:\n' + self.server.log_tail())
            renewed = harness.wait_for(lambda: serial_or_none(self.server.port) == '1002', 10)
            self.assertTrue(renewed, 'new connections still get serial %s' % serial_or_none(self.server.port))
            for _ in range(5):
                self.assertEqual(peer_of(self.server.port), ('1002', {'commonName': 'localhost',
                                                                      'organizationName': 'Renewed'}))
            # Now the rest of the old download, slowly at first.
            c.buf = body
            deadline = time.monotonic() + 60
            while len(c.buf) < len(content):
                if len(c.buf) < 4 * MIB:
                    time.sleep(0.01)
                self.assertTrue(c._fill(deadline), 'the download was cut at %d bytes after the reload'
                                % len(c.buf))
            self.assertEqual(len(c.buf), len(content))
            self.assertEqual(sha256_bytes(c.buf), sha256_bytes(content), 'the download differs')
        response = https(self.server.port, 'GET', '/small.bin')
        self.assertEqual((response.status, response.body), (200, self.env.content['small.bin']))

    def test_key_that_does_not_match_keeps_the_old_certificate(self):
        self.install('localhost-renewed', key=ca().mismatched_key)
        os.kill(self.server.pid, signal.SIGHUP)
        logged = harness.wait_for(lambda: 'still running on the previous configuration' in self.server.log(), 10)
        self.assertTrue(logged, self.server.log_tail())
        self.assertRegex(self.server.log(), r'reload: .*tls\.key')
        self.assertEqual(peer_of(self.server.port)[0], '1001')
        self.assertEqual(https(self.server.port, 'GET', '/small.bin').status, 200)


def tls_ulp_available():
    try:
        with open('/proc/sys/net/ipv4/tcp_available_ulp') as f:
            return 'tls' in f.read().split()
    except OSError:
        return False


def tls_tx_sessions():
    """The kernel's count of kTLS transmit sessions so far (software and
    device), or None without /proc/net/tls_stat."""
    try:
        with open('/proc/net/tls_stat') as f:
            stats = dict(line.split() for line in f if len(line.split()) == 2)
    except OSError:
        return None
    return int(stats.get('TlsTxSw', 0)) + int(stats.get('TlsTxDevice', 0))


@unittest.skipUnless(tls_ulp_available(), 'kernel has no tls ULP: modprobe tls')
class KernelTLS(TLSTestCase):
    """ktls: auto hands the records to the kernel (sendfile of the file stays
    possible); ktls: off does not. The kernel's own counter says which."""

    def download(self, server):
        out = self.env.path('ktls.out')
        r = harness.run(['curl', '-sS', '--noproxy', '*', '--cacert', ca().ca_cert, '-o', out,
                         https_url(server, '/big.bin')], timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(sha256_file(out), sha256_bytes(self.env.content['big.bin']))
        os.unlink(out)

    def test_auto_uses_the_kernel(self):
        server = self.start(tls_of(ktls='auto'))
        before = tls_tx_sessions()
        self.download(server)
        after = tls_tx_sessions()
        if before is not None:
            self.assertGreater(after, before, 'no kTLS transmit session was opened (/proc/net/tls_stat)')
        # ASSUMED wording: the worker says at info level that kTLS is on
        # (e.g. "kTLS: on for sending"); only the word `kTLS` is checked.
        self.assertIn('kTLS', server.log(), server.log_tail())

    def test_off_does_not(self):
        server = self.start(tls_of(ktls='off'))
        before = tls_tx_sessions()
        self.download(server)
        if before is not None:
            self.assertEqual(tls_tx_sessions(), before, 'a kTLS session was opened with ktls: off')


class KernelTLSNote(TLSTestCase):
    """Whatever the kernel, the log says at start whether kTLS can be used,
    and it says the truth about this kernel."""

    def test_auto_says_what_the_kernel_offers(self):
        server = self.start(tls_of(ktls='auto'))
        expected = 'kTLS: this kernel offers it' if tls_ulp_available() else 'kTLS: this kernel does not offer it'
        self.assertTrue(harness.wait_for(lambda: expected in server.log(), 5), server.log_tail())

    def test_off_says_nothing(self):
        server = self.start(tls_of(ktls='off'))
        self.assertNotIn('kTLS:', server.log(), server.log_tail())


class RedirectHTTPS(TLSTestCase):
    """A plain listener with redirect_https: true answers every request with
    308 to https://HOST:https_port/path?query, HOST from the request's Host
    without its port."""

    def setUp(self):
        self.plain = harness.free_port()
        self.server = self.start(tls_of(), extra_listeners=[
            plain_listener(self.plain, self.env.www, redirect_https=True, https_port=0)])
        # https_port is the TLS listener's port: known once free_port gave it.

    def start(self, tls, extra_listeners=(), **kw):
        port = harness.free_port()
        listeners = [[l.replace('https_port: 0', 'https_port: %d' % port) for l in lines]
                     for lines in extra_listeners]
        server = harness.Server(self.env, port=port, access_log=False,
                                config=make_config(self.env, port, tls, extra_listeners=listeners, **kw))
        self.addCleanup(server.kill)
        self.servers = getattr(self, 'servers', []) + [server]
        server.start()
        self.assertTrue(harness.wait_for(lambda: harness.port_accepts(self.plain), 5), 'plain port not open')
        return server

    def location(self, path):
        return 'https://127.0.0.1:%d%s' % (self.server.port, path)

    def test_get_with_query(self):
        r = harness.http(self.plain, 'GET', '/small.bin?x=1&y=a%20b')
        self.assertEqual(r.status, 308, r)
        self.assertEqual(r.header('location'), self.location('/small.bin?x=1&y=a%20b'))
        self.assertNotIn(self.env.content['small.bin'], r.body)

    def test_host_name_is_kept_and_its_port_replaced(self):
        r = harness.http(self.plain, 'GET', '/a/b?c', {'Host': 'localhost:%d' % self.plain})
        self.assertEqual(r.status, 308, r)
        self.assertEqual(r.header('location'), 'https://localhost:%d/a/b?c' % self.server.port)

    def test_every_method_and_path(self):
        for method, path, headers in (('HEAD', '/small.bin', {}), ('GET', '/no-such-file', {}),
                                      ('POST', '/small.bin', {'Content-Length': '0'}),
                                      ('GET', '/small.bin', {'Range': 'bytes=0-9'}),
                                      ('GET', '/%2e%2e/etc/passwd', {})):
            r = harness.raw_request(self.plain, request_bytes(method, path, headers))
            self.assertEqual(r.status, 308, (method, path, r))
            self.assertEqual(r.header('location'), self.location(path), (method, path))
            self.assertIsNone(r.header('strict-transport-security'), 'HSTS over plain HTTP')

    def test_curl_follows_to_the_file(self):
        r = harness.run(['curl', '-sS', '--noproxy', '*', '-L', '--cacert', ca().ca_cert, '-o', '-',
                         '-w', '%{url_effective}', 'http://localhost:%d/small.bin' % self.plain], timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr)
        # -o - then -w: the body, then the final URL
        self.assertTrue(r.stdout.endswith('https://localhost:%d/small.bin' % self.server.port), r.stdout[-200:])


class HSTS(TLSTestCase):
    """hsts: the Strict-Transport-Security header on HTTPS responses, and
    never over plain HTTP (RFC 6797 7.2), even where the setting is given."""

    VALUE = 'max-age=31536000'

    def setUp(self):
        self.plain = harness.free_port()
        self.server = self.start(tls_of(), listener={'hsts': self.VALUE},
                                 extra_listeners=[plain_listener(self.plain, self.env.www, hsts=self.VALUE)])
        self.assertTrue(harness.wait_for(lambda: harness.port_accepts(self.plain), 5), 'plain port not open')

    def test_on_https_responses(self):
        port = self.server.port
        for method, path, headers, status in (('GET', '/small.bin', {}, 200), ('HEAD', '/small.bin', {}, 200),
                                              ('GET', '/small.bin', {'Range': 'bytes=0-9'}, 206),
                                              ('GET', '/no-such-file', {}, 404)):
            r = https(port, method, path, headers)
            self.assertEqual(r.status, status, (method, path))
            self.assertEqual(r.header('strict-transport-security'), self.VALUE, (method, path, r))
            sent = [v for k, v in r.header_list if k.lower() == 'strict-transport-security']
            self.assertEqual(len(sent), 1, 'sent %d times' % len(sent))

    def test_not_over_plain_http(self):
        for path in ('/small.bin', '/no-such-file'):
            r = harness.http(self.plain, 'GET', path)
            self.assertIn(r.status, (200, 404))
            self.assertIsNone(r.header('strict-transport-security'), 'HSTS over plain HTTP: %r' % r)


if __name__ == '__main__':
    harness.main()
