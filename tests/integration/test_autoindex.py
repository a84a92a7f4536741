"""Directory listings (autoindex: off | html | json): one root served by three
listeners. A directory without its slash gets 301 to it, index.html is served
when present (also with autoindex off), names are escaped and sorted, dot-files,
symlinks leaving the root and special files are not listed, every listed file
downloads by its link, autoindex off stays 403, and a listing is recorded as a
request but never becomes a download."""

import html.parser
import json
import os
import re
import sqlite3
import unittest
import urllib.parse
import urllib.request

import harness
from harness import BINARY

# Every name that needs escaping somewhere: HTML text, a link, JSON.
FILES = {
    'pub/a b.bin': 1000,
    'pub/<script>.bin': 10,
    'pub/q#?%"\'\u00e9.bin': 7,
    'pub/x.bin': 2048,
    'pub/.hidden': 5,
    'pub/sub/inner.bin': 3,
    'odd dir/f.bin': 4,
    'site/other.bin': 6,
}
INDEX_PAGE = b'<!DOCTYPE html><p>welcome</p>\n'


class Links(html.parser.HTMLParser):
    """The (href, text) of every <a> of a page, and any <script> element."""

    def __init__(self):
        super().__init__()
        self.links = []
        self.scripts = 0
        self._href = None

    def handle_starttag(self, tag, attrs):
        if tag == 'script':
            self.scripts += 1
        if tag == 'a':
            self._href = dict(attrs)['href']
            self.links.append([self._href, ''])

    def handle_endtag(self, tag):
        if tag == 'a':
            self._href = None

    def handle_data(self, data):
        if self._href is not None:
            self.links[-1][1] += data


def links_of(body):
    parser = Links()
    parser.feed(body.decode('utf-8'))
    return parser


class Autoindex(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.env = harness.TestEnv({name: size for name, size in FILES.items()})
        www = cls.env.www
        cls.env.add_file('site/index.html', INDEX_PAGE)
        harness.write_file(cls.env.path('secret.txt'), 'outside the root\n')
        os.symlink('../../secret.txt', os.path.join(www, 'pub', 'outside.txt'))  # leaves the root: refused
        os.symlink('x.bin', os.path.join(www, 'pub', 'inside.bin'))  # stays inside: served
        os.symlink(os.path.join(www, 'pub', 'x.bin'), os.path.join(www, 'pub', 'absolute.bin'))  # refused
        os.mkfifo(os.path.join(www, 'pub', 'fifo'))  # a special file: refused
        cls.port = harness.free_port()
        cls.json_port = harness.free_port()
        cls.off_port = harness.free_port()
        text = harness.config_text(cls.port, www, workers=2, autoindex='html')
        extra = []
        for port, mode in ((cls.json_port, 'json'), (cls.off_port, None)):
            extra += ['  - module: http_download', '    host: 127.0.0.1', '    port: %d' % port,
                      '    root: %s' % www]
            if mode:
                extra.append('    autoindex: %s' % mode)
        text = text.replace('plugins: []', '\n'.join(extra + ['plugins: []']))
        cls.server = harness.Server(cls.env, port=cls.port, config=text)
        cls.server.start()

    @classmethod
    def tearDownClass(cls):
        cls.server.kill()
        cls.env.cleanup()

    def get(self, target, port=None, method='GET'):
        return harness.http(port or self.port, method, target)

    def test_html_listing_escapes_sorts_and_filters(self):
        r = self.get('/pub/')
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.header('content-type'), 'text/html; charset=utf-8')
        self.assertEqual(int(r.header('content-length')), len(r.body))
        self.assertTrue(r.body.startswith(b'<!DOCTYPE html>'))
        page = links_of(r.body)
        self.assertEqual(page.scripts, 0, r.body)  # the name <script>.bin is text, not an element
        self.assertIn(b'&lt;script&gt;.bin', r.body)
        # Directories first, then files in byte order; no dot-file, no
        # symlink out of the root or absolute, no FIFO.
        self.assertEqual(page.links, [
            ['../', '../'],
            ['sub/', 'sub/'],
            ['%3Cscript%3E.bin', '<script>.bin'],
            ['a%20b.bin', 'a b.bin'],
            ['inside.bin', 'inside.bin'],
            ['q%23%3F%25%22%27%C3%A9.bin', 'q#?%"\'\u00e9.bin'],
            ['x.bin', 'x.bin'],
        ])
        # Sizes and ISO 8601 modification times beside the names.
        self.assertRegex(r.body.decode(), r'>a b\.bin</a></td><td>1000</td><td>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ</td>')
        self.assertRegex(r.body.decode(), r'>sub/</a></td><td>-</td>')

    def test_every_listed_file_downloads_by_its_link(self):
        page = links_of(self.get('/pub/').body)
        files = [href for href, _ in page.links if not href.endswith('/')]
        self.assertEqual(len(files), 5)
        for href in files:
            url = self.server.url('/pub/' + href)
            with urllib.request.urlopen(url, timeout=10) as response:
                body = response.read()
            name = urllib.parse.unquote(href)
            expected = self.env.content.get('pub/' + name, self.env.content['pub/x.bin'])  # inside.bin is x.bin
            self.assertEqual(body, expected, href)
        # A subdirectory's link lists it.
        sub = self.get('/pub/sub/')
        self.assertEqual([href for href, _ in links_of(sub.body).links], ['../', 'inner.bin'])

    def test_directory_without_slash_is_moved(self):
        r = self.get('/pub?sort=x&a=%20')
        self.assertEqual(r.status, 301)
        self.assertEqual(r.header('location'), '/pub/?sort=x&a=%20')
        self.assertEqual(r.header('content-length'), '0')
        r = self.get('/odd%20dir')
        self.assertEqual(r.status, 301)
        self.assertEqual(r.header('location'), '/odd%20dir/')
        self.assertEqual(self.get('/odd%20dir/').status, 200)
        # urllib follows it to the listing.
        with urllib.request.urlopen(self.server.url('/pub/sub'), timeout=10) as response:
            self.assertTrue(response.geturl().endswith('/pub/sub/'))
            self.assertIn(b'inner.bin', response.read())

    def test_index_html_is_served(self):
        for port in (self.port, self.json_port, self.off_port):
            r = self.get('/site/', port)
            self.assertEqual(r.status, 200, port)
            self.assertEqual(r.body, INDEX_PAGE)
            self.assertEqual(r.header('content-type'), 'text/html')
            self.assertIsNotNone(r.header('etag'))
            r = self.get('/site', port)
            self.assertEqual(r.status, 301, port)
            self.assertEqual(r.header('location'), '/site/')

    def test_json_listing(self):
        r = self.get('/pub/', self.json_port)
        self.assertEqual(r.status, 200, r)
        self.assertEqual(r.header('content-type'), 'application/json')
        entries = json.loads(r.body.decode('utf-8'))
        self.assertEqual([(e['name'], e['type'], e.get('size')) for e in entries], [
            ('sub', 'directory', None),
            ('<script>.bin', 'file', 10),
            ('a b.bin', 'file', 1000),
            ('inside.bin', 'file', 2048),
            ('q#?%"\'\u00e9.bin', 'file', 7),
            ('x.bin', 'file', 2048),
        ])
        for entry in entries:
            self.assertRegex(entry['mtime'], r'^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$')
        self.assertEqual(entries[2]['href'], 'a%20b.bin')
        self.assertEqual(json.loads(self.get('/', self.json_port).body)[0]['name'], 'odd dir')

    def test_head_has_the_listing_headers_and_no_body(self):
        get = self.get('/pub/')
        head = harness.raw_request(self.port, harness.request_bytes('HEAD', '/pub/'))
        self.assertEqual(head.status, 200)
        self.assertEqual(head.header('content-length'), get.header('content-length'))
        self.assertEqual(head.header('content-type'), get.header('content-type'))
        self.assertEqual(head.body, b'')

    def test_pipelined_listings_and_files_on_one_connection(self):
        # The listing is made off the loop; the next request waits its turn.
        conn = harness.Conn(self.port)
        try:
            conn.send(b''.join(harness.request_bytes(method, target, close=False) for method, target in
                               (('GET', '/pub/'), ('GET', '/pub/x.bin'), ('HEAD', '/pub/sub/'), ('GET', '/pub'),
                                ('GET', '/pub/sub/'))))
            listing = conn.read_response()
            self.assertEqual((listing.status, listing.body), (200, self.get('/pub/').body))
            file = conn.read_response()
            self.assertEqual(file.body, self.env.content['pub/x.bin'])
            self.assertEqual(conn.read_response(head_request=True).status, 200)
            self.assertEqual(conn.read_response().status, 301)
            self.assertIn(b'inner.bin', conn.read_response().body)
        finally:
            conn.sock.close()

    def test_autoindex_off_is_403_as_before(self):
        self.assertEqual(self.get('/pub/', self.off_port).status, 403)
        self.assertEqual(self.get('/pub', self.off_port).status, 403)  # no redirect: nothing to show there
        self.assertEqual(self.get('/', self.off_port).status, 403)
        self.assertEqual(self.get('/pub/x.bin', self.off_port).status, 200)

    def test_a_file_with_a_slash_is_still_404(self):
        self.assertEqual(self.get('/pub/x.bin/').status, 404)
        self.assertEqual(self.get('/pub/outside.txt').status, 403)
        self.assertEqual(self.get('/pub/.hidden').status, 200)  # served by name, only not listed


class ListingRecords(unittest.TestCase):
    """A listing is a request of the store, never a download."""

    def test_listing_is_recorded_but_not_a_download(self):
        env = harness.TestEnv({'dir/file.bin': 5000})
        try:
            server = harness.Server(env, autoindex='json')
            server.start()
            try:
                listing = harness.http(server.port, 'GET', '/dir/', headers={'User-Agent': 'listing-probe'})
                self.assertEqual(listing.status, 200)
                # The control: the same client's file request is a download.
                download = harness.http(server.port, 'GET', '/dir/file.bin', headers={'User-Agent': 'file-probe'})
                self.assertEqual(download.status, 200)
            finally:
                self.assertEqual(server.terminate(), 0, server.log_tail())
            db = sqlite3.connect(env.path('state', 'stats.db'))
            try:
                requests = db.execute("SELECT path, status, file_size, etag, body_bytes, reason FROM requests "
                                      "WHERE user_agent = 'listing-probe'").fetchall()
                listing_downloads = db.execute(
                    "SELECT COUNT(*) FROM downloads WHERE user_agent = 'listing-probe'").fetchone()[0]
                file_downloads = db.execute(
                    "SELECT COUNT(*) FROM downloads WHERE user_agent = 'file-probe'").fetchone()[0]
            finally:
                db.close()
            self.assertEqual(len(requests), 1, requests)
            path, status, file_size, etag, body_bytes, reason = requests[0]
            self.assertEqual((path, status, reason), ('dir/', 200, 'completed'))
            self.assertIn(file_size, (-1, None))
            self.assertIsNone(etag)
            self.assertEqual(body_bytes, len(listing.body))
            self.assertEqual(listing_downloads, 0)
            self.assertEqual(file_downloads, 1)
            # Nor is it logged as a file downloaded.
            self.assertNotIn('File downloaded "/dir/"', server.log())
            self.assertIn('File downloaded "/dir/file.bin"', server.log())
        finally:
            env.cleanup()


class Truncated(unittest.TestCase):
    def test_a_large_directory_is_cut_and_says_so(self):
        env = harness.TestEnv({'many/f%03d.bin' % i: 1 for i in range(30)})
        try:
            server = harness.Server(env, autoindex='json', autoindex_max_entries=10)
            server.start()
            try:
                r = harness.http(server.port, 'GET', '/many/')
                self.assertEqual(r.status, 200)
                self.assertEqual(len(json.loads(r.body)), 10)
                self.assertEqual(r.header('x-autoindex-truncated'), 'true')
            finally:
                server.kill()
        finally:
            env.cleanup()


class BadValues(unittest.TestCase):
    def check_refused(self, key, value, message):
        env = harness.TestEnv({'a.bin': 10})
        try:
            path = env.path('bad.yaml')
            harness.write_file(path, harness.config_text(harness.free_port(), env.www, **{key: value}))
            r = harness.run([BINARY, '-t', '-c', path], timeout=20, cwd=env.dir)
            self.assertNotEqual(r.returncode, 0)
            self.assertRegex(r.stdout + r.stderr,
                             r'bad\.yaml:\d+: protocols\[0\]\.%s: %s' % (re.escape(key), re.escape(message)))
        finally:
            env.cleanup()

    def test_bad_autoindex_is_refused_with_key_and_line(self):
        self.check_refused('autoindex', 'yes', 'must be off, html or json')
        self.check_refused('autoindex_max_entries', '0', 'must be between 1 and 1000000')


if __name__ == '__main__':
    unittest.main()
