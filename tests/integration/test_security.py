#!/usr/bin/python3
"""Hostile input: path traversal, symlinks, garbage, oversized requests,
slow clients. The server must never leak files from outside its root,
never crash, and keep serving others."""

import os
import socket
import struct
import time

import harness
from harness import http, raw_exchange, request_bytes

SECRET = b'TOPSECRET-outside-the-root-7f3a\n'


class SecurityTest(harness.ServerTestCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        # a file next to www/ (outside the root) and symlinks inside www/
        with open(cls.env.path('secret.txt'), 'wb') as f:
            f.write(SECRET)
        www = cls.env.www
        os.symlink('/etc/passwd', os.path.join(www, 'passwd_link'))
        os.symlink(cls.env.path('secret.txt'), os.path.join(www, 'secret_link'))
        os.symlink('../secret.txt', os.path.join(www, 'secret_rel_link'))
        os.symlink('/etc', os.path.join(www, 'etc_dir_link'))
        os.symlink('small.bin', os.path.join(www, 'small_link.bin'))
        os.symlink('../small.bin', os.path.join(www, 'sub', 'up_link.bin'))
        os.symlink(os.path.join(www, 'small.bin'), os.path.join(www, 'abs_inside_link.bin'))

    def assert_not_leaked(self, resp, what):
        self.assertNotEqual(resp.status, 200, '%s answered 200: %r' % (what, resp))
        self.assertNotIn(b'root:', resp.body, '%s leaked /etc/passwd' % what)
        self.assertNotIn(SECRET, resp.body, '%s leaked a file outside the root' % what)

    def assert_still_serving(self):
        resp = http(self.port, 'GET', '/small.bin')
        self.assertEqual(resp.status, 200, 'server stopped serving')
        self.assertEqual(resp.body, self.content('small.bin'))
        self.assertTrue(self.server.running(), 'master process died')

    def raw_status(self, raw, what):
        resp = harness.maybe_response(self.port, raw)
        if resp is None:
            return None  # closing without an answer leaks nothing either
        self.assert_not_leaked(resp, what)
        self.assertTrue(400 <= resp.status < 500, '%s answered %r' % (what, resp))
        return resp.status

    # -- traversal ------------------------------------------------------

    TRAVERSALS = [
        '/../../etc/passwd',
        '/../../../../../../../../etc/passwd',
        '/%2e%2e/%2e%2e/etc/passwd',
        '/%2E%2E/%2E%2E/%2E%2E/%2E%2E/etc/passwd',
        '/sub/%2e%2e/%2e%2e/etc/passwd',
        '/sub/../../etc/passwd',
        '/%2e%2e%2fetc/passwd',
        '/%2e%2e%2f%2e%2e%2f%2e%2e%2f%2e%2e%2fetc%2fpasswd',
        '/..%2f..%2f..%2f..%2fetc%2fpasswd',
        '/..\\..\\..\\etc\\passwd',
        '/../secret.txt',
        '/%2e%2e/secret.txt',
        '/sub/%2e%2e/%2e%2e/secret.txt',
        '/./../secret.txt',
        '//etc/passwd',
        '/%2fetc%2fpasswd',
        'etc/passwd',
        '../secret.txt',
    ]

    def test_traversal_attempts(self):
        for path in self.TRAVERSALS:
            with self.subTest(path=path):
                self.raw_status(request_bytes('GET', path), 'GET %s' % path)
        self.assert_still_serving()

    def test_double_encoding_decoded_once(self):
        # %252e -> %2e literally: a name that does not exist
        status = self.raw_status(request_bytes('GET', '/%252e%252e/%252e%252e/etc/passwd'),
                                    'double-encoded traversal')
        self.assertIn(status, (400, 403, 404, None))

    def test_nul_byte(self):
        for path in ('/small.bin%00.txt', '/small.bin%00', '/%00'):
            with self.subTest(path=path):
                resp = harness.maybe_response(self.port, request_bytes('GET', path))
                if resp is not None:
                    self.assertNotEqual(resp.status, 200, '%s served: %r' % (path, resp))
                    self.assertNotIn(self.content('small.bin'), resp.body)
        self.assert_still_serving()

    def test_raw_nul_byte_in_request_line(self):
        resp = harness.maybe_response(self.port, b'GET /small.bin\x00.txt HTTP/1.1\r\nHost: x\r\n\r\n')
        if resp is not None:
            self.assertNotEqual(resp.status, 200)
        self.assert_still_serving()

    def test_percent_decoding_of_normal_name(self):
        # %73 = 's': decoding once must find the file
        resp = http(self.port, 'GET', '/%73mall.bin')
        self.assertEqual(resp.status, 200)
        self.assertEqual(resp.body, self.content('small.bin'))

    def test_invalid_percent_encoding(self):
        for path in ('/small.bin%', '/small.bin%zz', '/%g1'):
            with self.subTest(path=path):
                status = self.raw_status(request_bytes('GET', path), 'GET %s' % path)
                self.assertIn(status, (400, 404, None))

    # -- symlinks -------------------------------------------------------

    def test_symlink_to_etc_passwd_not_served(self):
        self.assert_not_leaked(http(self.port, 'GET', '/passwd_link'), 'symlink to /etc/passwd')

    def test_symlink_to_file_outside_root_not_served(self):
        self.assert_not_leaked(http(self.port, 'GET', '/secret_link'), 'absolute symlink outside root')
        self.assert_not_leaked(http(self.port, 'GET', '/secret_rel_link'), 'relative symlink outside root')

    def test_symlinked_directory_outside_root_not_served(self):
        self.assert_not_leaked(http(self.port, 'GET', '/etc_dir_link/passwd'), 'symlinked /etc')

    def test_symlink_inside_root_served(self):
        resp = http(self.port, 'GET', '/small_link.bin')
        self.assertEqual(resp.status, 200, 'relative symlink inside the root refused: %r' % resp)
        self.assertEqual(resp.body, self.content('small.bin'))

    def test_symlink_in_subdir_to_parent_inside_root_served(self):
        resp = http(self.port, 'GET', '/sub/up_link.bin')
        self.assertEqual(resp.status, 200, '../small.bin symlink inside the root refused: %r' % resp)
        self.assertEqual(resp.body, self.content('small.bin'))

    def test_absolute_symlink_inside_root_refused(self):
        # documented choice (docs/http.md): absolute symlinks are refused even
        # when they point inside the root
        resp = http(self.port, 'GET', '/abs_inside_link.bin')
        self.assertIn(resp.status, (403, 404), repr(resp))

    # -- directories ------------------------------------------------------

    def test_directory_not_served(self):
        for path in ('/sub/', '/sub', '/'):
            with self.subTest(path=path):
                resp = http(self.port, 'GET', path)
                self.assertIn(resp.status, (403, 404), 'GET %s -> %r' % (path, resp))
        self.assert_still_serving()

    # -- malformed requests ----------------------------------------------

    def test_garbage_gets_400_and_close(self):
        data, closed = raw_exchange(self.port, b'\x00\x01garbage\r\n\r\n')
        self.assertTrue(data, 'no response to garbage')
        resp = harness.parse_response(data)
        self.assertEqual(resp.status, 400, repr(resp))
        self.assertTrue(closed, 'connection not closed after 400')
        self.assert_still_serving()

    def test_malformed_request_lines(self):
        bad = [
            b'GET\r\n\r\n',
            b'GET /small.bin\r\n\r\n',
            b'GET /small.bin HTTP/1.1 extra\r\nHost: x\r\n\r\n',
            b'GET /small.bin HTTX/1.1\r\nHost: x\r\n\r\n',
            b'GET /small.bin HTTP/1.1\r\nNo colon here\r\nHost: x\r\n\r\n',
            # RFC 9112 5.1: whitespace between field name and colon MUST get 400
            b'GET /small.bin HTTP/1.1\r\nHost : x\r\n\r\n',
            b'GET /small.bin HTTP/1.1\r\nBad Name: x\r\nHost: x\r\n\r\n',
        ]
        for raw in bad:
            with self.subTest(request=raw):
                data, closed = raw_exchange(self.port, raw)
                self.assertTrue(data, 'no response')
                resp = harness.parse_response(data)
                self.assertEqual(resp.status, 400, repr(resp))
                self.assertTrue(closed, 'connection not closed after 400')
        self.assert_still_serving()

    def test_http11_without_host_is_400(self):
        # RFC 9112 3.2: MUST respond 400 to an HTTP/1.1 request lacking Host
        resp = harness.raw_request(self.port, b'GET /small.bin HTTP/1.1\r\nConnection: close\r\n\r\n')
        self.assertEqual(resp.status, 400, repr(resp))

    def test_two_host_fields_is_400(self):
        # RFC 9112 3.2: a request with more than one Host field gets 400
        resp = harness.raw_request(self.port, b'GET /small.bin HTTP/1.1\r\nHost: a\r\nHost: b\r\n'
                                   b'Connection: close\r\n\r\n')
        self.assertEqual(resp.status, 400, repr(resp))

    def test_content_length_with_transfer_encoding_is_400(self):
        with harness.Conn(self.port) as c:
            c.send(b'GET /small.bin HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n'
                   b'Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n')
            r = c.read_response()
            self.assertEqual(r.status, 400, repr(r))
            self.assertTrue(c.closed_by_peer(4), 'connection not closed after CL+TE')

    def test_unsupported_http_version(self):
        resp = harness.raw_request(self.port, b'GET /small.bin HTTP/2.0\r\nHost: x\r\n\r\n')
        self.assertIn(resp.status, (400, 505), repr(resp))

    def test_request_body_smuggling_rejected(self):
        # Content-Length together with Transfer-Encoding: RFC 9112 6.1 says the
        # server MAY reject it and MUST close the connection after responding,
        # so the second (smuggled) request must never be served
        raw = (b'GET /small.bin HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n'
               b'Transfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /medium.bin HTTP/1.1\r\nHost: x\r\n\r\n')
        data, _ = raw_exchange(self.port, raw, timeout=3)
        self.assertNotIn(self.content('medium.bin')[:64], data, 'smuggled request was served')

    def test_large_header_431(self):
        raw = (b'GET /small.bin HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Big: '
               + b'a' * (20 * 1024) + b'\r\n\r\n')
        resp = harness.maybe_response(self.port, raw)
        self.assertIsNotNone(resp, 'no response to a 20 KiB header')
        self.assertEqual(resp.status, 431, repr(resp))
        self.assert_still_serving()

    def test_many_headers_431(self):
        hdrs = b''.join(b'X-H%d: %s\r\n' % (i, b'v' * 100) for i in range(200))
        raw = b'GET /small.bin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n' + hdrs + b'\r\n'
        resp = harness.maybe_response(self.port, raw)
        self.assertIsNotNone(resp, 'no response to 20 KiB of headers')
        self.assertEqual(resp.status, 431, repr(resp))

    def test_long_url_414(self):
        raw = request_bytes('GET', '/' + 'a' * (9 * 1024))
        resp = harness.maybe_response(self.port, raw)
        self.assertIsNotNone(resp, 'no response to a 9 KiB URL')
        self.assertEqual(resp.status, 414, repr(resp))
        self.assert_still_serving()

    def test_huge_url_414_no_crash(self):
        raw = request_bytes('GET', '/' + 'b' * (1024 * 1024))
        resp = harness.maybe_response(self.port, raw)
        if resp is not None:
            self.assertIn(resp.status, (400, 414), repr(resp))
        self.assert_still_serving()

    def test_many_connections_closed_early(self):
        # connect and drop 200 times, half of them mid-request
        for i in range(200):
            s = harness.connect(self.port)
            if i % 2:
                s.sendall(b'GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n')
            s.close()
        self.assert_still_serving()

    def test_client_disconnect_does_not_kill_worker(self):
        # a client that sends a request and closes at once makes the server
        # write to a closed socket: that must be EPIPE, not a dead worker
        before = self.server.wait_workers(2)
        for _ in range(3):
            s = harness.connect(self.port)
            s.sendall(request_bytes('GET', '/big.bin'))
            s.close()
        time.sleep(0.5)
        after = self.server.workers()
        self.assertEqual(after, before, 'workers changed (died?) after client disconnects: '
                         '%r -> %r\n%s' % (before, after, '\n'.join(
                             l for l in self.server.log().splitlines() if 'killed' in l)))

    def test_client_resets_during_transfer(self):
        for _ in range(5):
            s = harness.connect(self.port)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0))
            s.sendall(request_bytes('GET', '/big.bin'))
            s.recv(65536)
            s.close()  # RST with unread data
        self.assert_still_serving()


class SlowClientTest(harness.ServerTestCase):
    """Short timeouts: slow, silent, idle or stalled clients are dropped."""

    server_config = {'header_timeout': '2s', 'keepalive_timeout': '3s', 'send_timeout': '2s'}

    def measure_close(self, sock, limit):
        """Seconds until the server closes sock (None if not within limit)."""
        start = time.monotonic()
        sock.settimeout(limit)
        try:
            while True:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                if time.monotonic() - start > limit:
                    return None
        except socket.timeout:
            return None
        except ConnectionResetError:
            pass
        return time.monotonic() - start

    def test_slowloris_partial_request_line(self):
        s = harness.connect(self.port)
        try:
            s.sendall(b'GET /small.bin HT')
            sent_at = time.monotonic()
            # meanwhile other clients are served
            resp = http(self.port, 'GET', '/small.bin')
            self.assertEqual(resp.body, self.content('small.bin'))
            closed = self.measure_close(s, 8)
            self.assertIsNotNone(closed, 'idle partial request not closed within 8 s')
            total = time.monotonic() - sent_at
            self.assertLess(total, 4.5, 'closed only after %.1f s (header_timeout 2s)' % total)
            self.assertGreater(total, 1.0, 'closed after %.1f s: sooner than header_timeout' % total)
        finally:
            s.close()

    def test_slowloris_trickling_headers(self):
        # one header byte every 0.3 s: header_timeout bounds the whole head
        s = harness.connect(self.port)
        closed_at = None
        start = time.monotonic()
        try:
            s.sendall(b'GET /small.bin HTTP/1.1\r\n')
            for i in range(40):  # at most ~12 s
                try:
                    s.sendall(b'X')
                except (BrokenPipeError, ConnectionResetError):
                    closed_at = time.monotonic() - start
                    break
                s.settimeout(0.3)
                try:
                    chunk = s.recv(4096)
                    if not chunk:
                        closed_at = time.monotonic() - start
                        break
                except socket.timeout:
                    pass
                except ConnectionResetError:
                    closed_at = time.monotonic() - start
                    break
        finally:
            s.close()
        self.assertIsNotNone(closed_at, 'trickling client never dropped')
        self.assertLess(closed_at, 5, 'trickling client dropped only after %.1f s' % closed_at)

    def test_silent_connection_closed(self):
        s = harness.connect(self.port)
        try:
            closed = self.measure_close(s, 8)
        finally:
            s.close()
        self.assertIsNotNone(closed, 'silent connection not closed within 8 s')
        self.assertLess(closed, 4.5)

    def test_many_slow_clients_do_not_block_others(self):
        socks = []
        try:
            for _ in range(50):
                s = harness.connect(self.port)
                s.sendall(b'GET /small.bin HTTP/1.1\r\nHost: x\r\n')
                socks.append(s)
            t0 = time.monotonic()
            for _ in range(5):
                resp = http(self.port, 'GET', '/medium.bin')
                self.assertEqual(resp.status, 200)
                self.assertTrue(resp.body == self.content('medium.bin'))
            self.assertLess(time.monotonic() - t0, 5)
        finally:
            for s in socks:
                s.close()


    def test_idle_keepalive_closed_after_keepalive_timeout(self):
        with harness.Conn(self.port) as c:
            c.send(request_bytes('GET', '/small.bin', close=False))
            self.assertEqual(c.read_response().status, 200)
            t0 = time.monotonic()
            closed = c.closed_by_peer(8)
            elapsed = time.monotonic() - t0
        self.assertTrue(closed, 'idle keep-alive connection still open after 8 s (keepalive_timeout 3s)')
        self.assertGreater(elapsed, 2.0, 'closed after %.1f s, before keepalive_timeout 3s' % elapsed)
        self.assertLess(elapsed, 5.0, 'closed after %.1f s (keepalive_timeout 3s)' % elapsed)

    def test_stalled_reader_dropped_after_send_timeout(self):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
        s.settimeout(5)
        s.connect(('127.0.0.1', self.port))
        try:
            s.sendall(request_bytes('GET', '/big.bin'))
            time.sleep(5)  # read nothing: the send makes no progress for > send_timeout
            data, closed = harness.recv_all(s, timeout=5)
        finally:
            s.close()
        self.assertTrue(closed, 'stalled connection still open (send_timeout 2s)')
        self.assertLess(len(data), len(self.content('big.bin')), 'the whole file arrived anyway')
        self.assert_still_serving()

    def assert_still_serving(self):
        resp = http(self.port, 'GET', '/small.bin')
        self.assertEqual(resp.body, self.content('small.bin'))


if __name__ == '__main__':
    harness.main()
