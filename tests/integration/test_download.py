#!/usr/bin/python3
"""Plain downloads: full GET, simple range, HEAD, errors, validators,
keep-alive, pipelining and HTTP/1.0."""

import os
import re
import time
import unittest

import harness
from harness import curl, http, request_bytes, sha256_bytes, sha256_file


class DownloadTest(harness.ServerTestCase):

    # -- full downloads --------------------------------------------------

    def curl_get(self, path, *extra):
        out = self.env.path('out-%s' % self.id().rsplit('.', 1)[-1])
        r = curl(['-o', out, '-w', '%{http_code}'] + list(extra) + [self.server.url(path)])
        self.assertEqual(r.returncode, 0, 'curl failed: %s' % r.stderr)
        with open(out, 'rb') as f:
            data = f.read()
        os.unlink(out)
        return r.stdout.strip(), data

    def test_full_download_big_sha256(self):
        out = self.env.path('big.out')
        r = curl(['-o', out, '-w', '%{http_code}', self.server.url('/big.bin')])
        self.assertEqual(r.returncode, 0, 'curl failed: %s' % r.stderr)
        self.assertEqual(r.stdout.strip(), '200')
        self.assertEqual(sha256_file(out), sha256_bytes(self.content('big.bin')),
                         'downloaded big.bin differs from the file on disk')
        os.unlink(out)

    def test_full_download_medium_sha256(self):
        code, data = self.curl_get('/medium.bin')
        self.assertEqual(code, '200')
        self.assertEqual(sha256_bytes(data), sha256_bytes(self.content('medium.bin')))

    def test_empty_file(self):
        resp = http(self.port, 'GET', '/empty.bin')
        self.assertEqual(resp.status, 200)
        self.assertEqual(resp.header('content-length'), '0')
        self.assertEqual(resp.body, b'')

    def test_file_name_with_space(self):
        code, data = self.curl_get('/a%20b.txt')
        self.assertEqual(code, '200')
        self.assertEqual(data, self.content('a b.txt'))

    def test_file_in_subdirectory(self):
        code, data = self.curl_get('/sub/file.txt')
        self.assertEqual(code, '200')
        self.assertEqual(data, self.content('sub/file.txt'))

    def test_query_string_is_not_part_of_the_path(self):
        resp = http(self.port, 'GET', '/small.bin?x=1&y=2')
        self.assertEqual(resp.status, 200)
        self.assertEqual(resp.body, self.content('small.bin'))

    # -- curl range ----------------------------------------------------

    def test_curl_range_100_999(self):
        code, data = self.curl_get('/medium.bin', '-r', '100-999')
        self.assertEqual(code, '206')
        self.assertEqual(len(data), 900)
        self.assertEqual(data, self.content('medium.bin')[100:1000])

    # -- HEAD -------------------------------------------------------------

    def test_head_has_headers_and_no_body(self):
        with harness.Conn(self.port) as c:
            c.send(request_bytes('HEAD', '/medium.bin'))
            resp = c.read_response(head_request=True)
            self.assertEqual(resp.status, 200)
            self.assertEqual(resp.header('content-length'), str(harness.MIB))
            self.assertEqual(resp.header('accept-ranges'), 'bytes')
            self.assertIsNotNone(resp.header('etag'), 'HEAD lacks ETag')
            self.assertIsNotNone(resp.header('last-modified'), 'HEAD lacks Last-Modified')
            # nothing may follow the head, and the server closes (Connection: close)
            self.assertTrue(c.closed_by_peer(3), 'connection not closed after HEAD + Connection: close')
            self.assertEqual(c.buf, b'', 'HEAD response carried a body: %r' % c.buf[:100])

    def test_head_matches_get_headers(self):
        get = http(self.port, 'GET', '/small.bin')
        head = http(self.port, 'HEAD', '/small.bin')
        self.assertEqual(head.body, b'')
        for name in ('content-length', 'etag', 'last-modified', 'content-type', 'accept-ranges'):
            self.assertEqual(head.header(name), get.header(name), 'HEAD/GET differ on %s' % name)

    def test_curl_head(self):
        r = curl(['-I', self.server.url('/small.bin')])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertRegex(r.stdout, r'^HTTP/1\.1 200')
        self.assertRegex(r.stdout, r'(?im)^content-length: 1024\r?$')

    # -- errors -----------------------------------------------------------

    def test_404(self):
        resp = http(self.port, 'GET', '/no-such-file.bin')
        self.assertEqual(resp.status, 404)

    def test_404_curl(self):
        code, _ = self.curl_get('/nope/deeper/file')
        self.assertEqual(code, '404')

    def test_405_post(self):
        resp = http(self.port, 'POST', '/small.bin', {'Content-Length': '0'})
        self.assertEqual(resp.status, 405)
        self.assert_allow(resp)

    def test_405_delete(self):
        resp = http(self.port, 'DELETE', '/small.bin')
        self.assertEqual(resp.status, 405)
        self.assert_allow(resp)

    def test_405_put_with_body(self):
        resp = http(self.port, 'PUT', '/small.bin', {'Content-Length': '5'})
        # body not sent: a correct server answers 405 anyway (and may close)
        self.assertEqual(resp.status, 405)
        self.assert_allow(resp)

    def assert_allow(self, resp):
        allow = resp.header('allow')
        self.assertIsNotNone(allow, '405 without Allow header: %r' % resp.headers)
        methods = {m.strip().upper() for m in allow.split(',')}
        self.assertEqual(methods, {'GET', 'HEAD'}, 'Allow header is %r' % allow)

    # -- content type -------------------------------------------------

    def test_content_type_txt(self):
        resp = http(self.port, 'GET', '/sub/file.txt')
        self.assertEqual(resp.status, 200)
        ctype = resp.header('content-type', '')
        self.assertTrue(ctype.split(';')[0].strip() == 'text/plain',
                        'Content-Type of .txt is %r' % ctype)

    def test_content_type_present_for_bin(self):
        resp = http(self.port, 'HEAD', '/small.bin')
        self.assertTrue(resp.header('content-type'), 'no Content-Type for .bin')

    # -- ETag ---------------------------------------------------------

    def test_etag_is_strong_and_quoted(self):
        etag = http(self.port, 'HEAD', '/big.bin').header('etag')
        self.assertIsNotNone(etag)
        self.assertRegex(etag, r'^"[^"]+"$', 'ETag %r is not a strong quoted entity-tag' % etag)

    def test_etag_differs_between_files(self):
        a = http(self.port, 'HEAD', '/small.bin').header('etag')
        b = http(self.port, 'HEAD', '/medium.bin').header('etag')
        self.assertNotEqual(a, b)

    def test_etag_same_across_connections_and_workers(self):
        etags = set()
        for _ in range(20):  # 20 separate connections: both workers get some
            etags.add(http(self.port, 'HEAD', '/big.bin').header('etag'))
        self.assertEqual(len(etags), 1, 'ETag varies between connections: %r' % etags)

    def test_etag_same_after_restart(self):
        first = http(self.port, 'HEAD', '/big.bin').header('etag')
        s = self.new_server()
        second = http(s.port, 'HEAD', '/big.bin').header('etag')
        self.assertEqual(s.terminate(timeout=15), 0)
        s.start()
        third = http(s.port, 'HEAD', '/big.bin').header('etag')
        self.assertEqual(first, second, 'ETag differs between two servers')
        self.assertEqual(second, third, 'ETag changed over a restart')

    def test_file_rewritten_in_place_seen_at_once(self):
        # the open-file cache re-checks with fstat on every hit
        path = self.env.add_file('rewritten.bin', os.urandom(100))
        before = http(self.port, 'HEAD', '/rewritten.bin').header('etag')
        for _ in range(4):  # warm both workers' caches
            http(self.port, 'GET', '/rewritten.bin')
        st = os.stat(path)
        self.env.add_file('rewritten.bin', os.urandom(200))  # same inode, truncated
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 5 * 10**9))
        for _ in range(6):  # separate connections: both workers
            resp = http(self.port, 'GET', '/rewritten.bin')
            self.assertNotEqual(before, resp.header('etag'), 'stale ETag after an in-place rewrite')
            self.assertEqual(resp.body, self.content('rewritten.bin'), 'stale body after an in-place rewrite')

    def test_file_replaced_by_rename_seen_within_cache_validity(self):
        # a renamed-over file is seen within open_file_cache_valid (1s);
        # until then the old file is served whole and consistent with its ETag
        old = os.urandom(300)
        path = self.env.add_file('replaced.bin', old)
        old_etag = http(self.port, 'HEAD', '/replaced.bin').header('etag')
        for _ in range(4):
            http(self.port, 'GET', '/replaced.bin')
        new = os.urandom(500)
        tmp = path + '.tmp'
        with open(tmp, 'wb') as f:
            f.write(new)
        st = os.stat(path)
        os.utime(tmp, ns=(st.st_atime_ns, st.st_mtime_ns + 5 * 10**9))
        os.rename(tmp, path)
        self.env.content['replaced.bin'] = new
        resp = http(self.port, 'GET', '/replaced.bin')
        etag = resp.header('etag')
        consistent = (etag == old_etag and resp.body == old) or (etag != old_etag and resp.body == new)
        self.assertTrue(consistent, 'right after the rename the response mixes old and new file')
        time.sleep(1.5)
        for _ in range(6):
            resp = http(self.port, 'GET', '/replaced.bin')
            self.assertNotEqual(old_etag, resp.header('etag'), 'old ETag 1.5 s after the rename')
            self.assertEqual(resp.body, new, 'old body 1.5 s after the rename')

    # -- keep-alive ---------------------------------------------------

    def test_curl_reuses_connection(self):
        out1, out2 = self.env.path('ka1'), self.env.path('ka2')
        r = curl(['-v', '-o', out1, self.server.url('/small.bin'),
                  '-o', out2, self.server.url('/sub/file.txt')])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn('Re-using existing connection', r.stderr,
                      'curl did not reuse the connection:\n%s' % r.stderr[-2000:])
        with open(out1, 'rb') as f:
            self.assertEqual(f.read(), self.content('small.bin'))
        with open(out2, 'rb') as f:
            self.assertEqual(f.read(), self.content('sub/file.txt'))

    def test_raw_keepalive_two_requests(self):
        with harness.Conn(self.port) as c:
            c.send(request_bytes('GET', '/small.bin', close=False))
            r1 = c.read_response()
            c.send(request_bytes('GET', '/medium.bin', close=False))
            r2 = c.read_response()
        self.assertEqual((r1.status, r2.status), (200, 200))
        self.assertEqual(r1.body, self.content('small.bin'))
        self.assertEqual(r2.body, self.content('medium.bin'))

    def test_keepalive_after_404(self):
        with harness.Conn(self.port) as c:
            c.send(request_bytes('GET', '/missing', close=False))
            r1 = c.read_response()
            c.send(request_bytes('GET', '/small.bin', close=False))
            r2 = c.read_response()
        self.assertEqual(r1.status, 404)
        self.assertEqual(r2.status, 200)
        self.assertEqual(r2.body, self.content('small.bin'))

    def test_connection_close_is_honoured(self):
        with harness.Conn(self.port) as c:
            c.send(request_bytes('GET', '/small.bin', close=True))
            r = c.read_response()
            self.assertEqual(r.body, self.content('small.bin'))
            self.assertTrue(c.closed_by_peer(3), 'server kept the connection after Connection: close')

    # -- pipelining ---------------------------------------------------

    def test_pipelining_three_requests(self):
        paths = ['/small.bin', '/sub/file.txt', '/medium.bin']
        names = ['small.bin', 'sub/file.txt', 'medium.bin']
        data = b''.join(request_bytes('GET', p, close=False) for p in paths)
        with harness.Conn(self.port, timeout=10) as c:
            c.send(data)  # one send() with all three requests
            for name in names:
                r = c.read_response()
                self.assertEqual(r.status, 200, 'pipelined %s' % name)
                self.assertEqual(sha256_bytes(r.body), sha256_bytes(self.content(name)),
                                 'pipelined response for %s has the wrong body' % name)

    def test_pipelining_mixed_head_get_404(self):
        data = (request_bytes('HEAD', '/medium.bin', close=False) +
                request_bytes('GET', '/missing', close=False) +
                request_bytes('GET', '/small.bin', close=True))
        with harness.Conn(self.port, timeout=10) as c:
            c.send(data)
            r1 = c.read_response(head_request=True)
            r2 = c.read_response()
            r3 = c.read_response()
            self.assertEqual([r1.status, r2.status, r3.status], [200, 404, 200])
            self.assertEqual(r3.body, self.content('small.bin'))
            self.assertTrue(c.closed_by_peer(3))

    # -- request forms ----------------------------------------------------

    def test_absolute_form_target(self):
        resp = harness.raw_request(self.port, b'GET http://127.0.0.1/small.bin HTTP/1.1\r\n'
                                   b'Host: 127.0.0.1\r\nConnection: close\r\n\r\n')
        self.assertEqual(resp.status, 200, repr(resp))
        self.assertEqual(resp.body, self.content('small.bin'))

    def test_bare_lf_line_endings(self):
        resp = harness.raw_request(self.port, b'GET /small.bin HTTP/1.1\nHost: x\nConnection: close\n\n')
        self.assertEqual(resp.status, 200, repr(resp))
        self.assertEqual(resp.body, self.content('small.bin'))

    def test_header_names_case_insensitive(self):
        resp = harness.raw_request(self.port, b'GET /medium.bin HTTP/1.1\r\nhOsT: x\r\n'
                                   b'CONNECTION: close\r\nrAnGe: bytes=0-9\r\n\r\n')
        self.assertEqual(resp.status, 206, repr(resp))
        self.assertEqual(resp.body, self.content('medium.bin')[:10])

    def test_get_with_body_answered_then_closed(self):
        with harness.Conn(self.port) as c:
            c.send(b'GET /small.bin HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello')
            r = c.read_response()
            self.assertEqual(r.status, 200)
            self.assertEqual(r.body, self.content('small.bin'))
            self.assertTrue(c.closed_by_peer(3), 'connection kept open after a GET with a body')

    def test_trailing_slash_on_file_404(self):
        self.assertEqual(http(self.port, 'GET', '/small.bin/').status, 404)

    def test_date_and_server_headers(self):
        resp = http(self.port, 'GET', '/small.bin')
        self.assertRegex(resp.header('date', ''), r'^[A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} '
                         r'\d{2}:\d{2}:\d{2} GMT$')

    # -- HTTP/1.0 -----------------------------------------------------

    def test_http10_response_and_close(self):
        raw = b'GET /small.bin HTTP/1.0\r\n\r\n'
        data, closed = harness.raw_exchange(self.port, raw, timeout=5)
        self.assertTrue(closed, 'HTTP/1.0 connection without keep-alive was not closed')
        resp = harness.parse_response(data)
        self.assertEqual(resp.status, 200)
        self.assertRegex(resp.version, r'^HTTP/1\.[01]$')
        self.assertEqual(resp.body, self.content('small.bin'))


    def test_http10_keep_alive(self):
        with harness.Conn(self.port) as c:
            c.send(b'GET /small.bin HTTP/1.0\r\nConnection: keep-alive\r\n\r\n')
            r1 = c.read_response()
            self.assertEqual(r1.header('connection', '').lower(), 'keep-alive')
            c.send(b'GET /sub/file.txt HTTP/1.0\r\nConnection: keep-alive\r\n\r\n')
            r2 = c.read_response()
        self.assertEqual(r1.body, self.content('small.bin'))
        self.assertEqual(r2.body, self.content('sub/file.txt'))


class OpenFileCacheLimitTest(harness.ServerTestCase):
    """The open-file cache (16384 files a worker by default) takes at most
    half of the descriptors a process may open: a server whose limit is 256
    serves 300 different files on one connection, none of them with an
    error, and its worker holds at most 128 of them open."""

    start_class_server = False
    files = dict(('many/%03d.bin' % i, 100 + i) for i in range(300))

    def test_cache_kept_under_half_the_descriptor_limit(self):
        server = self.new_server(nofile=256, workers=1)
        statuses = []
        with harness.Conn(server.port) as c:
            for i in range(300):
                c.send(request_bytes('GET', '/many/%03d.bin' % i, close=False))
                r = c.read_response()
                statuses.append(r.status)
                self.assertEqual(r.body, self.env.content['many/%03d.bin' % i])
        self.assertEqual(statuses, [200] * 300)
        worker = server.workers()[0]
        open_files = [os.readlink('/proc/%d/fd/%s' % (worker, fd)) for fd in os.listdir('/proc/%d/fd' % worker)]
        served = [path for path in open_files if '/www/many/' in path]
        self.assertLessEqual(len(served), 128)
        self.assertGreater(len(served), 100, 'the cache kept files open')
        self.assertTrue(harness.wait_for(lambda: 'open_file_cache: 16384 files would be more than half of the '
                                         '256 descriptors' in server.log(), 5), server.log_tail())


if __name__ == '__main__':
    harness.main()
