"""Request smuggling through the forward module (http mode). Each shape is
sent raw over a socket to the proxy; then nginx, the origin, with an access
log of its own for each test, must have seen exactly the requests the proxy
recorded: none that the proxy did not record (a smuggled request, or a field
line taken for a request line), and every one it relayed. What the proxy
refuses gets its own 400 and reaches nobody."""

import collections
import os
import threading
import time

import harness
from harness import KIB
from test_forward import NGINX, ForwardCase, Nginx, SocketOrigin

# What an attacker wants nginx to serve without the proxy knowing: it names
# its own client address.
SMUGGLED = b'GET /smuggled.txt HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Forwarded-For: 6.6.6.6\r\n\r\n'
# The same through a chunked body's trailer section, where http_parser
# takes "GET http" for a field name.
SMUGGLED_AS_TRAILER = (b'GET http://127.0.0.1/smuggled.txt HTTP/1.1\r\nHost: 127.0.0.1\r\n'
                       b'X-Forwarded-For: 6.6.6.6\r\n\r\n')
HEAD = b'GET /small.bin HTTP/1.1\r\nHost: 127.0.0.1\r\n'
POST = b'POST /small.bin HTTP/1.1\r\nHost: 127.0.0.1\r\n'


def chunk(data):
    return b'%x\r\n%s\r\n' % (len(data), data)


class Smuggling(ForwardCase):
    """A proxy (one worker) and an nginx of its own for each test."""

    @classmethod
    def setUpClass(cls):
        cls.env = harness.TestEnv({'small.bin': KIB, 'other.bin': 2 * KIB, 'smuggled.txt': 64})

    @classmethod
    def tearDownClass(cls):
        cls.env.cleanup()

    def setUp(self):
        super().setUp()
        self.nginx = Nginx(self.env).start()
        self.server = self.proxy(workers=1)

    def tearDown(self):
        super().tearDown()
        self.nginx.kill()

    def send(self, data, timeout=3):
        """Sends `data` on a fresh connection; the responses until the proxy
        closes it (or falls silent)."""
        responses = []
        with harness.Conn(self.server.port, timeout) as c:
            try:
                c.send(data)
            except (ConnectionResetError, BrokenPipeError):
                pass
            while True:
                try:
                    responses.append(c.read_response())
                except (ConnectionError, OSError):  # closed, or silent (socket.timeout)
                    return responses

    def records(self):
        """Stops the proxy (so that every record is stored and every origin
        connection closed); its requests, and the request lines nginx logged."""
        requests, _ = self.stop_and_read(self.server)
        lines, previous = self.nginx.log_lines(), None
        deadline = time.monotonic() + 3
        while lines != previous and time.monotonic() < deadline:  # nginx logs as each request ends
            time.sleep(0.2)
            previous, lines = lines, self.nginx.log_lines()
        return requests, lines

    def assert_origin_saw_what_was_recorded(self, requests, lines):
        seen = collections.Counter(line.split('|')[0] for line in lines)
        recorded = collections.Counter('%s %s %s' % (q['method'], q['target'], q['protocol'])
                                       for q in requests if q['method'])
        # A request the origin answered reached it; a refused one may have
        # (its head went out before its body turned out bad), nothing else.
        relayed = collections.Counter('%s %s %s' % (q['method'], q['target'], q['protocol'])
                                      for q in requests if q['method'] and q['status'] != 400)
        detail = 'nginx: %r\nproxy: %r' % (lines, [(q['method'], q['target'], q['status'], q['reason'])
                                                   for q in requests])
        self.assertFalse([line for line in lines if 'smuggled' in line], detail)
        self.assertEqual(seen - recorded, collections.Counter(),
                         'nginx saw requests the proxy did not record\n' + detail)
        self.assertEqual(relayed - seen, collections.Counter(), 'recorded as relayed, not seen by nginx\n' + detail)

    def assert_all_refused(self, shapes):
        """Each shape on its own connection: the proxy's own 400, then the
        close; a record with bad_request each; nothing reaches nginx."""
        answers = [(shape, self.send(shape)) for shape in shapes]
        requests, lines = self.records()
        self.assert_origin_saw_what_was_recorded(requests, lines)
        for shape, responses in answers:
            self.assertEqual([(r.status, r.header('server'), r.header('connection')) for r in responses],
                             [(400, 'smprotocol', 'close')], (shape, responses))
        self.assertEqual([(q['status'], q['reason']) for q in requests], [(400, 'bad_request')] * len(shapes),
                         requests)
        self.assertEqual(lines, [], 'refused requests reached the origin')

    # ---- framing fields named by Connection ----------------------------------

    def test_connection_naming_content_length_is_refused(self):
        # Dropped as hop-by-hop while the body was relayed by it, the body
        # was the origin's next request.
        self.assert_all_refused([
            HEAD + b'Connection: close, Content-Length\r\nContent-Length: %d\r\n\r\n' % len(SMUGGLED) + SMUGGLED,
            HEAD + b'Connection: content-length\r\nContent-Length: %d\r\n\r\n' % len(SMUGGLED) + SMUGGLED,
        ])

    def test_connection_naming_transfer_encoding_or_host_is_refused(self):
        self.assert_all_refused([
            POST + b'Connection: Transfer-Encoding\r\nTransfer-Encoding: chunked\r\n\r\n' + chunk(SMUGGLED) +
            b'0\r\n\r\n',
            HEAD + b'Connection: keep-alive, Host\r\n\r\n',
        ])

    # ---- ambiguous framing ---------------------------------------------------

    def test_content_length_with_transfer_encoding_is_refused(self):
        body = b'0\r\n\r\n' + SMUGGLED
        self.assert_all_refused([
            POST + b'Content-Length: %d\r\nTransfer-Encoding: chunked\r\n\r\n' % len(body) + body,
            POST + b'Transfer-Encoding: chunked\r\nContent-Length: %d\r\n\r\n' % len(body) + body,
        ])

    def test_several_or_listed_content_lengths_are_refused(self):
        self.assert_all_refused([
            POST + b'Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello',
            POST + b'Content-Length: 5\r\nContent-Length: 0\r\n\r\nhello',
            POST + b'Content-Length: 5, 5\r\n\r\nhello',
            POST + b'Content-Length: 5,5\r\n\r\nhello',
            POST + b'Content-Length: +5\r\n\r\nhello',
        ])

    def test_transfer_encoding_other_than_chunked_alone_is_refused(self):
        end = b'0\r\n\r\n'
        self.assert_all_refused([
            POST + b'Transfer-Encoding: identity\r\nTransfer-Encoding: chunked\r\n\r\n' + end,
            POST + b'Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n' + end,
            POST + b'Transfer-Encoding: gzip, chunked\r\n\r\n' + end,
            POST + b'Transfer-Encoding: chunked, identity\r\n\r\n' + end,
            POST + b'Transfer-Encoding: xchunked\r\n\r\n' + end,
            POST + b'Transfer-Encoding: chunked\x0b\r\n\r\n' + end,
            POST + b'Transfer-Encoding: identity\r\n\r\n',
            # RFC 9112 6.1: HTTP/1.0 has no chunked coding; its framing is faulty.
            b'POST /small.bin HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n' + end,
        ])

    def test_obs_fold_is_refused(self):
        self.assert_all_refused([
            HEAD + b'X-Folded: a\r\n b\r\n\r\n',
            HEAD + b'X-Folded:\r\n b\r\n\r\n',
            POST + b'Transfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n',
            POST + b'Content-Length: 5\r\n\t\r\n\r\nhello',
        ])

    def test_bare_lf_bare_cr_and_nul_are_refused(self):
        self.assert_all_refused([
            b'GET /small.bin HTTP/1.1\nHost: 127.0.0.1\n\n',
            HEAD + b'X-Bare: lf\n\r\n',
            b'GET /small.bin HTTP/1.1\r\nHost: 127.0.0.1\nX: y\r\n\r\n',
            HEAD + b'X-Bare: a\rb\r\n\r\n',
            HEAD + b'X:\rZContent-Length: 5\r\n\r\nhello',
            HEAD + b'X-Nul: a\x00b\r\n\r\n',
            b'GET /small\tbin HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n',
        ])

    # ---- chunked bodies --------------------------------------------------------

    def test_a_chunk_extension_ended_by_a_bare_lf_smuggles_nothing(self):
        # http_parser ends a chunk line at CR only, nginx at LF too: for
        # nginx the body ends after "0;\n\r\n", and the "trailer" is a request.
        self.assert_all_refused([
            HEAD + b'Transfer-Encoding: chunked\r\n\r\n0;\n\r\n' + SMUGGLED_AS_TRAILER,
            POST + b'Transfer-Encoding: chunked\r\n\r\n5;ext\nhello\r\n0\r\n\r\n',
        ])

    def test_chunk_framing_that_is_not_strict_is_refused(self):
        self.assert_all_refused([
            POST + b'Transfer-Encoding: chunked\r\n\r\n5\r\nhelloXY0\r\n\r\n',  # junk for the CRLF after the data
            POST + b'Transfer-Encoding: chunked\r\n\r\n5\r\nhello\n0\r\n\r\n',
            POST + b'Transfer-Encoding: chunked\r\n\r\n5 \r\nhello\r\n0\r\n\r\n',
            POST + b'Transfer-Encoding: chunked\r\n\r\n0\r\nX: y\nZ: w\r\n\r\n',  # a bare LF in the trailers
            POST + b'Transfer-Encoding: chunked\r\n\r\n0\r\nX: y\r\n z\r\n\r\n',  # a folded trailer
            POST + b'Transfer-Encoding: chunked\r\n\r\n-5\r\nhello\r\n0\r\n\r\n',
        ])

    # ---- what is relayed -------------------------------------------------------

    def test_leading_empty_lines_are_skipped_not_relayed(self):
        # RFC 9112 2.2: empty lines before a request line are ignored; once
        # relayed, the origin took the first field line for the request line.
        for data in (b'\r\n' + HEAD + b'Connection: close\r\n\r\n', b'\r\n\r\n' + HEAD + b'Connection: close\r\n\r\n',
                     HEAD + b'\r\n\r\n\r\n' + HEAD + b'Connection: close\r\n\r\n'):
            responses = self.send(data)
            self.assertEqual([(r.status, r.body) for r in responses],
                             [(200, self.env.content['small.bin'])] * data.count(b'GET '), data)
        requests, lines = self.records()
        self.assertEqual([(q['path'], q['status']) for q in requests], [('small.bin', 200)] * 4)
        self.assertEqual([line.split('|')[0] for line in lines], ['GET /small.bin HTTP/1.1'] * 4)
        self.assert_origin_saw_what_was_recorded(requests, lines)

    def test_an_upgrade_with_a_body_is_relayed_with_its_body(self):
        # The Upgrade field is dropped and the request goes as a plain one:
        # its body goes with it, not left behind as the next request.
        body = SMUGGLED
        responses = self.send(HEAD + b'Connection: Upgrade\r\nUpgrade: websocket\r\nContent-Length: %d\r\n\r\n'
                              % len(body) + body + b'GET /other.bin HTTP/1.1\r\nHost: 127.0.0.1\r\n'
                              b'Connection: close\r\n\r\n')
        self.assertEqual([(r.status, r.body) for r in responses],
                         [(200, self.env.content['small.bin']), (200, self.env.content['other.bin'])])
        requests, lines = self.records()
        self.assertEqual([(q['path'], q['status']) for q in requests], [('small.bin', 200), ('other.bin', 200)])
        self.assert_origin_saw_what_was_recorded(requests, lines)

    def test_a_keep_alive_pair_and_a_chunked_post_still_work(self):
        small, other = self.env.content['small.bin'], self.env.content['other.bin']
        body = os.urandom(3000)
        chunked = chunk(body[:1000]) + chunk(body[1000:]) + b'0\r\n\r\n'
        responses = self.send(HEAD + b'\r\n' + b'GET /other.bin HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n' + POST +
                              b'Transfer-Encoding: chunked\r\n\r\n' + chunked + HEAD + b'Connection: close\r\n\r\n')
        self.assertEqual([(r.status, r.body) for r in responses if r.status != 405], [(200, small), (200, other),
                                                                                       (200, small)])
        self.assertEqual([r.status for r in responses], [200, 200, 405, 200])  # nginx serves no POST
        requests, lines = self.records()
        self.assertEqual([(q['method'], q['path'], q['status']) for q in requests],
                         [('GET', 'small.bin', 200), ('GET', 'other.bin', 200), ('POST', 'small.bin', 405),
                          ('GET', 'small.bin', 200)])
        self.assertEqual([q['received_bytes'] for q in requests][2], len(POST) + 30 + len(chunked))
        self.assert_origin_saw_what_was_recorded(requests, lines)

    def test_a_chunked_post_reaches_the_origin_byte_exact(self):
        # The head as parsed, in canonical form; the chunked body as sent.
        origin = RecordingOrigin()
        try:
            server = self.proxy(origin_port=origin.port, workers=1)
            body = os.urandom(70000)
            chunked = chunk(body[:5]) + chunk(body[5:]) + b'0\r\n\r\n'
            with harness.Conn(server.port) as c:
                c.send(b'POST  /echo?a=1  HTTP/1.1\r\nHost:  127.0.0.1 \r\nTransfer-Encoding: chunked\r\n'
                       b'User-Agent: fwd-smuggling\r\n\r\n' + chunked)
                r = c.read_response()
            self.assertTrue((r.status, r.body) == (200, body), r)
            expected = (b'POST /echo?a=1 HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n'
                        b'User-Agent: fwd-smuggling\r\nX-Forwarded-For: 127.0.0.1\r\n'
                        b'Forwarded: for=127.0.0.1;proto=http\r\n\r\n' + chunked)
            [received] = origin.received()
            # Not assertEqual: a diff of 70 kB takes minutes.
            self.assertTrue(received == expected, 'the origin got %r... (%d bytes), not %r... (%d bytes)'
                            % (received[:200], len(received), expected[:200], len(expected)))
        finally:
            origin.stop()


class RecordingOrigin(SocketOrigin):
    """Keeps every request it reads (head and chunked body, as bytes) and
    answers with the decoded body."""

    def __init__(self):
        self.requests = []
        self.lock = threading.Lock()
        super().__init__()

    def answer(self, conn):
        data = b''
        while not data.endswith(b'\r\n0\r\n\r\n'):
            piece = conn.recv(65536)
            if not piece:
                return
            data += piece
        with self.lock:
            self.requests.append(data)
        body, rest = b'', data.split(b'\r\n\r\n', 1)[1]
        while True:
            size_line, rest = rest.split(b'\r\n', 1)
            size = int(size_line, 16)
            if size == 0:
                break
            body, rest = body + rest[:size], rest[size + 2:]
        conn.sendall(b'HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s' % (len(body), body))

    def received(self):
        with self.lock:
            return list(self.requests)


if __name__ == '__main__':
    if not os.path.exists(NGINX):
        raise SystemExit('test_forward_smuggling needs nginx (Debian nginx-light: scripts/deps.sh test)')
    harness.main()
