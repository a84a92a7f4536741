"""HTTP/1 request rules that both protocol modules read from one place
(protocols/common/http1): the same head gets the same answer from
http_download and from forward. One server runs both: http_download on one
port, and forward on another in front of it.

Cases from other servers' test suites that SMProtocol once answered wrongly:
dot-segments at the end of a path (RFC 3986 §5.2.4), Host fields (RFC 9112
§3.2), empty elements of the Connection list (RFC 9110 §5.6.1.2), an empty
line before the request line (RFC 9112 §2.2), a malformed HTTP-version, and
a folded empty field value (RFC 9112 §5.2)."""

import os
import sqlite3
import unittest

import harness

FILE_SIZE = 1000


def both_modules_config(env, download_port, forward_port, state):
    return '\n'.join([
        'workers: 1',
        'max_connections: 256',
        'shutdown_timeout: 10s',
        'state_dir: %s' % state,
        'tracking: {enabled: true, idle_window: 1s}',
        'protocols:',
        '  - module: http_download',
        '    host: 127.0.0.1',
        '    port: %d' % download_port,
        '    root: %s' % env.www,
        '  - module: forward',
        '    host: 127.0.0.1',
        '    port: %d' % forward_port,
        '    forward_host: 127.0.0.1',
        '    forward_port: %d' % download_port,
        'plugins: []',
    ]) + '\n'


class Http1Rules(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.env = harness.TestEnv({'file': FILE_SIZE, 'dir/inner.bin': 10})
        cls.download_port = harness.free_port()
        cls.forward_port = harness.free_port()
        cls.state = cls.env.path('state')
        text = both_modules_config(cls.env, cls.download_port, cls.forward_port, cls.state)
        cls.server = harness.Server(cls.env, port=cls.forward_port, config=text)
        cls.server.start()
        harness.wait_for(lambda: harness.port_accepts(cls.download_port), 5)

    @classmethod
    def tearDownClass(cls):
        cls.server.terminate(timeout=30)
        cls.server.kill()
        cls.env.cleanup()

    def answer(self, port, request):
        """The status line and whether the server closed after answering."""
        data = harness.raw_exchange(port, request, timeout=5)[0]
        head = data.split(b'\r\n\r\n', 1)[0]
        lines = head.split(b'\r\n')
        closes = any(line.lower() == b'connection: close' for line in lines[1:])
        return lines[0], closes

    def status(self, port, request):
        line = self.answer(port, request)[0]
        self.assertTrue(line.startswith(b'HTTP/1.1 '), (request, line))
        return int(line.split()[1])

    def each_module(self):
        return (('http_download', self.download_port), ('forward', self.forward_port))

    def test_a_path_ending_in_a_dot_segment_is_a_directory_not_the_file(self):
        for target in (b'/file/.', b'/file/a/..', b'/file/%2e', b'/file/'):
            request = b'GET ' + target + b' HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n'
            for module, port in self.each_module():
                with self.subTest(module=module, target=target):
                    self.assertEqual(self.status(port, request), 404)
        # Inside the path, dot-segments still go.
        request = b'GET /dir/./x/../inner.bin HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n'
        for module, port in self.each_module():
            with self.subTest(module=module):
                self.assertEqual(self.status(port, request), 200)

    def test_host_fields_several_missing_or_invalid_get_400(self):
        bad = [
            b'GET /file HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n',
            b'GET /file HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n',
            b'GET /file HTTP/1.0\r\nHost: a\r\nHost: a\r\n\r\n',
            b'GET /file HTTP/1.1\r\n\r\n',
            b'GET /file HTTP/1.1\r\nHost: a:9000:80\r\n\r\n',
            b'GET /file HTTP/1.1\r\nHost: example.com/\\:552\r\n\r\n',
            b'GET /file HTTP/1.1\r\nHost: [v6\r\n\r\n',
            b'GET /file HTTP/1.0\r\nHost: a b\r\n\r\n',
        ]
        good = [
            b'GET /file HTTP/1.1\r\nHost: example.com:8080\r\nConnection: close\r\n\r\n',
            b'GET /file HTTP/1.1\r\nHost: [::1]:80\r\nConnection: close\r\n\r\n',
            b'GET /file HTTP/1.1\r\nHost: \r\nConnection: close\r\n\r\n',
            b'GET /file HTTP/1.0\r\n\r\n',
        ]
        for module, port in self.each_module():
            for request in bad:
                with self.subTest(module=module, request=request):
                    line, closes = self.answer(port, request)
                    self.assertTrue(line.startswith(b'HTTP/1.1 400'), line)
                    self.assertTrue(closes)
            for request in good:
                with self.subTest(module=module, request=request):
                    self.assertEqual(self.status(port, request), 200)

    def test_connection_close_is_honoured_whatever_empty_elements_surround_it(self):
        for value in (b',close', b'close,', b' , close , ', b'keep-alive, ,close'):
            request = b'GET /file HTTP/1.1\r\nHost: a\r\nConnection: ' + value + b'\r\n\r\n'
            for module, port in self.each_module():
                with self.subTest(module=module, value=value):
                    sock = harness.connect(port)
                    try:
                        sock.sendall(request)
                        data, closed = harness.recv_all(sock, timeout=5)
                    finally:
                        sock.close()
                    self.assertTrue(closed, 'the connection was kept open')
                    self.assertTrue(data.startswith(b'HTTP/1.1 200'), data[:80])
                    self.assertIn(b'\r\nConnection: close\r\n', data)
                    self.assertEqual(len(data.split(b'\r\n\r\n', 1)[1]), FILE_SIZE)

    def test_an_empty_line_before_the_request_line_is_ignored(self):
        request = b'\r\nGET /file HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n'
        for module, port in self.each_module():
            with self.subTest(module=module):
                self.assertEqual(self.status(port, request), 200)

    def test_a_malformed_version_gets_400_and_another_major_505(self):
        for version, expected in ((b'HTTp/1.1', 400), (b'HT*P/1.1', 400), (b'HTTP/1.10', 400), (b'HTTP/2.0', 505)):
            request = b'GET /file ' + version + b'\r\nHost: a\r\n\r\n'
            for module, port in self.each_module():
                with self.subTest(module=module, version=version):
                    self.assertEqual(self.status(port, request), expected)

    def test_a_folded_empty_field_value_gets_400(self):
        for request in (b'GET /file HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n',
                        b'GET /file HTTP/1.1\r\nHost: a\r\nUser-Agent:\r\n\tx\r\n\r\n'):
            for module, port in self.each_module():
                with self.subTest(module=module, request=request):
                    self.assertEqual(self.status(port, request), 400)

    def test_the_refused_requests_are_recorded_as_bad_requests_by_both(self):
        for module, port in self.each_module():
            self.assertEqual(self.status(port, b'GET /file HTTP/1.1\r\nHost: a\r\nHost: b\r\nUser-Agent: '
                                         + module.encode() + b'-two-hosts\r\n\r\n'), 400)
        database = os.path.join(self.state, 'stats.db')

        def recorded():
            if not os.path.exists(database):
                return []
            db = sqlite3.connect(database)
            try:
                return db.execute("SELECT module, status, reason FROM requests WHERE user_agent LIKE '%-two-hosts'"
                                  " ORDER BY module").fetchall()
            except sqlite3.OperationalError:
                return []
            finally:
                db.close()

        harness.wait_for(lambda: len(recorded()) == 2, 10)
        self.assertEqual(recorded(), [('forward', 400, 'bad_request'), ('http_download', 400, 'bad_request')])


if __name__ == '__main__':
    unittest.main(verbosity=2)
