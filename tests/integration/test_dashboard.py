"""The dashboard module (issue 17) against a real server after a scripted
traffic mix (curl, aria2c -x8, a cut download resumed by wget -c, 404s):
the JSON API gives what `smprotocol stats --json` reads from the store, the
Prometheus metrics pass Debian's promtool and count the traffic exactly,
the allow list and the token refuse with 403, the live stream sends
updates, and headless Chromium shows the same numbers on the page and a
download that started after the page loaded."""

import contextlib
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.parse

import browser
import harness
from harness import MIB

PROMTOOL = '/usr/bin/promtool'
# A file name a client chose: the page must show it as text, never run it.
HOSTILE = '<img src=x onerror=window.__xss=1>.bin'
# The summary's fields and the ids of the page's elements that show them.
SUMMARY_HOOKS = {'downloads': 'summary-downloads', 'completed': 'summary-completed',
                 'completion_rate': 'summary-completion-rate', 'bytes': 'summary-bytes'}
READ_SUMMARY = '''Object.fromEntries(Object.entries(%s).map(([field, id]) => {
    const element = document.getElementById(id);
    return [field, element === null || element.dataset.value === undefined ? null : Number(element.dataset.value)];
}))''' % json.dumps(SUMMARY_HOOKS)
LOADED = 'document.body.dataset.loaded === "1"'


def artifacts_dir():
    """Where the screenshot is kept: SMP_ARTIFACTS (meson sets it to the build
    tree's test-artifacts), else a temp dir that is left for inspection."""
    path = os.environ.get('SMP_ARTIFACTS') or tempfile.mkdtemp(prefix='smp-dashboard-artifacts-')
    os.makedirs(path, exist_ok=True)
    return path


def get(port, path, headers=None, source=None, timeout=10):
    """(status, headers, body) of one GET from `source` (an address on lo)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        if source:
            sock.bind((source, 0))
        sock.connect(('127.0.0.1', port))
        sock.sendall(harness.request_bytes('GET', path, headers))
        response = harness.parse_response(harness.recv_all(sock, timeout=timeout)[0])
    finally:
        sock.close()
    return response


def metric_samples(text):
    """{(name, frozenset(labels)): value} of a Prometheus text."""
    samples = {}
    for line in text.splitlines():
        if not line or line.startswith('#'):
            continue
        match = re.match(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$', line)
        assert match, 'not a sample line: %r' % line
        labels = frozenset(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match.group(2) or ''))
        samples[(match.group(1), labels)] = float(match.group(3))
    return samples


def metric_sum(samples, name, **labels):
    wanted = set(labels.items())
    return sum(value for (n, have), value in samples.items() if n == name and wanted <= set(have))


class Dashboard(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.env = harness.TestEnv({'a.bin': 2 * MIB, 'big.bin': 16 * MIB, 'slow.bin': 4 * MIB, HOSTILE: 1000})
        cls.db = cls.env.path('stats.db')
        cls.port = harness.free_port()
        cls.slow_port = harness.free_port()
        cls.dash = harness.free_port()
        cls.dash_allow = harness.free_port()
        cls.dash_token = harness.free_port()
        cls.token = 'k3y-' + os.urandom(8).hex()
        text = harness.config_text(cls.port, cls.env.www, workers=2,
                                   core_extra={'tracking': '{enabled: true, idle_window: 1s}'})
        extra = '\n'.join([
            '  - module: http_download',
            '    host: 127.0.0.1',
            '    port: %d' % cls.slow_port,
            '    root: %s' % cls.env.www,
            '    limit_rate: 256KiB',
            '  - module: dashboard',
            '    host: 127.0.0.1',
            '    port: %d' % cls.dash,
            '  - module: dashboard',
            '    host: 127.0.0.1',
            '    port: %d' % cls.dash_allow,
            '    allow: [127.0.0.2/32]',
            '  - module: dashboard',
            '    host: 127.0.0.1',
            '    port: %d' % cls.dash_token,
            '    token: %s' % cls.token,
            'plugins:',
            '  - module: sqlite',
            '    path: %s' % cls.db,
            ''])
        cls.config = cls.env.path('dashboard.yaml')
        harness.write_file(cls.config, text.replace('plugins: []\n', extra))
        cls.server = harness.Server(cls.env, port=cls.port, config=open(cls.config).read())
        cls.server.start()
        cls.out = cls.env.path('out')
        os.makedirs(cls.out)
        cls.traffic()

    @classmethod
    def traffic(cls):
        url = cls.server.url
        r = harness.run(['curl', '-s', '--noproxy', '*', '-o', os.path.join(cls.out, 'a.bin'), url('/a.bin')])
        assert r.returncode == 0, r.stderr
        r = harness.run(['aria2c', '-x8', '-s8', '-k1M', '--allow-overwrite=true', '--auto-file-renaming=false',
                         '--file-allocation=none', '--console-log-level=warn', '--summary-interval=0',
                         '--max-tries=1', '--all-proxy=', '-d', cls.out, '-o', 'big.bin', url('/big.bin')],
                        timeout=90)
        assert r.returncode == 0, r.stdout + r.stderr
        # A download cut at 1 MiB, then resumed by wget -c.
        part = os.path.join(cls.out, 'resumed', 'a.bin')
        os.makedirs(os.path.dirname(part))
        first = harness.http(cls.port, 'GET', '/a.bin', {'Range': 'bytes=0-%d' % (MIB - 1),
                                                          'User-Agent': 'Wget/1.21.3'})
        assert first.status == 206
        # Its record reaches the collector before the resume's: a resume is a
        # request that began after every earlier one had ended, judged as the
        # records arrive, and the two may be served by different workers.
        time.sleep(0.5)
        with open(part, 'wb') as f:
            f.write(first.body)
        r = harness.run(['wget', '--no-proxy', '-q', '--tries=1', '--timeout=20', '-U', 'Wget/1.21.3', '-c',
                         '-P', os.path.dirname(part), url('/a.bin')])
        assert r.returncode == 0, r.stderr
        for name in ('a.bin', 'big.bin'):
            assert harness.sha256_file(os.path.join(cls.out, name)) == harness.sha256_bytes(cls.env.content[name])
        assert harness.sha256_file(part) == harness.sha256_bytes(cls.env.content['a.bin'])
        for _ in range(2):
            assert harness.http(cls.port, 'GET', '/missing.bin').status == 404
        assert harness.http(cls.port, 'GET', '/' + urllib.parse.quote(HOSTILE)).status == 200
        # Every download ends 1 s after its last request; the store has them
        # once a tick later. Wait until the store says every one finished.
        cls.settled = harness.wait_for(cls.everything_finished, 20, interval=0.3)

    @classmethod
    def everything_finished(cls):
        rows = cls.cli_rows('downloads')
        return len(rows) == 4 and all(row['finished'] in (True, 1) for row in rows)

    @classmethod
    def cli_rows(cls, report, *args):
        r = subprocess.run([harness.BINARY, 'stats', '--config', cls.config, '--json', *args, report],
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)['rows']

    @classmethod
    def tearDownClass(cls):
        cls.server.kill()
        cls.env.cleanup()

    def api(self, path, port=None, headers=None):
        response = get(port or self.dash, path, headers)
        self.assertEqual(response.status, 200, response.body[:300])
        return json.loads(response.body)

    def metrics(self):
        response = get(self.dash, '/metrics')
        self.assertEqual(response.status, 200)
        self.assertTrue(response.header('Content-Type').startswith('text/plain; version=0.0.4'))
        return response.body.decode()

    # -- the JSON API ----------------------------------------------------

    def test_traffic_settled(self):
        self.assertTrue(self.settled, 'the store did not finish the three downloads: %s' % self.cli_rows('downloads'))

    def test_api_reports_equal_the_store(self):
        for report, query, cli_args in [('summary', '', ()), ('files', '', ()), ('countries', '', ()),
                                        ('reasons', '', ()), ('downloads', '', ()), ('tls', '', ()),
                                        ('files', '?file=a.bin', ('--file', 'a.bin')),
                                        ('summary', '?since=1h', ('--since', '1h')),
                                        ('timeseries', '?bucket=minute', ('--bucket', 'minute')),
                                        ('timeseries', '?bucket=day&file=a.bin', ('--bucket', 'day', '--file', 'a.bin')),
                                        ('daily', '', ())]:
            with self.subTest(report=report, query=query):
                answer = self.api('/api/v1/%s%s' % (report, query))
                self.assertEqual(answer['report'], report)
                self.assertEqual(answer['rows'], self.cli_rows(report, *cli_args))

    def test_api_numbers_are_the_traffic(self):
        [hour] = self.api('/api/v1/timeseries?bucket=hour&file=big.bin')['rows']
        self.assertEqual((hour['downloads'], hour['completed']), (1, 1))
        self.assertGreaterEqual(hour['bytes'], 16 * MIB)
        [summary] = self.api('/api/v1/summary')['rows']
        self.assertEqual((summary['downloads'], summary['completed']), (4, 4))
        files = {row['path']: row for row in self.api('/api/v1/files')['rows']}
        self.assertEqual(files['a.bin']['downloads'], 2)  # curl's, and the cut one wget resumed
        self.assertEqual(files['big.bin']['downloads'], 1)  # aria2c's eight segments: one download
        downloads = self.api('/api/v1/downloads')['rows']
        self.assertTrue(all(row['completed'] is True for row in downloads), downloads)
        resumed = [row for row in downloads if row['user_agent'] == 'Wget/1.21.3']
        self.assertEqual(len(resumed), 1)
        self.assertEqual((resumed[0]['requests'], resumed[0]['resumes']), (2, 1))

    def test_api_errors(self):
        self.assertEqual(get(self.dash, '/api/v1/nothing').status, 404)
        self.assertEqual(get(self.dash, '/api/v1/timeseries?bucket=week').status, 400)
        self.assertEqual(get(self.dash, '/api/v1/summary?since=yesterdayish').status, 400)
        self.assertEqual(get(self.dash, '/nothing.html').status, 404)
        response = harness.raw_request(self.dash, harness.request_bytes('POST', '/metrics'))
        self.assertEqual(response.status, 405)
        self.assertEqual(response.header('Allow'), 'GET, HEAD')

    # -- Prometheus --------------------------------------------------------

    def test_promtool_accepts_the_metrics(self):
        if not os.path.exists(PROMTOOL):
            self.skipTest('promtool (Debian package prometheus) is not installed')
        text = self.metrics()
        r = subprocess.run([PROMTOOL, 'check', 'metrics'], input=text, capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 0, 'promtool: %s%s\n%s' % (r.stdout, r.stderr, text[:2000]))

    def test_counters_match_the_traffic(self):
        # The store has a request a tick after the metrics count it.
        harness.wait_for(lambda: metric_sum(metric_samples(self.metrics()), 'smprotocol_requests_total',
                                            module='http_download') ==
                         sum(row['requests'] for row in self.cli_rows('reasons')), 5, interval=0.3)
        samples = metric_samples(self.metrics())
        self.assertEqual(metric_sum(samples, 'smprotocol_requests_total', module='http_download',
                                    status_class='4xx', reason='not_found'), 2)
        # Every request the store holds, by reason, and every download by outcome.
        for row in self.cli_rows('reasons'):
            with self.subTest(reason=row['reason']):
                self.assertEqual(metric_sum(samples, 'smprotocol_requests_total', module='http_download',
                                            reason=row['reason']), row['requests'])
                self.assertEqual(metric_sum(samples, 'smprotocol_downloads_finished_total', outcome=row['reason']),
                                 row['downloads'])
        requests = metric_sum(samples, 'smprotocol_requests_total', module='http_download')
        self.assertEqual(metric_sum(samples, 'smprotocol_request_duration_seconds_count'), requests)
        self.assertEqual(metric_sum(samples, 'smprotocol_collector_records_total'), requests)
        self.assertEqual(metric_sum(samples, 'smprotocol_download_duration_seconds_count'), 4)
        sent = metric_sum(samples, 'smprotocol_sent_bytes_total', module='http_download')
        bodies = 2 * 2 * MIB + 16 * MIB + 1000  # aria2c may fetch a little twice
        self.assertGreaterEqual(sent, bodies)
        self.assertLess(sent, bodies + 2 * MIB)
        self.assertEqual(metric_sum(samples, 'smprotocol_store_errors_total', store='sqlite'), 0)
        self.assertGreater(metric_sum(samples, 'smprotocol_store_batches_total', store='sqlite'), 0)
        self.assertEqual(metric_sum(samples, 'smprotocol_downloads_open'), 0)

    def test_connections_by_state(self):
        with harness.Conn(self.port) as idle:
            # A HEAD: a request, not a download, so the counts of the other tests stay.
            idle.send(harness.request_bytes('HEAD', '/a.bin', close=False))
            self.assertEqual(idle.read_response(head_request=True).status, 200)
            samples = metric_samples(self.metrics())
            self.assertGreaterEqual(metric_sum(samples, 'smprotocol_connections', state='idle'), 1)
            # The request for /metrics itself is being answered.
            self.assertGreaterEqual(metric_sum(samples, 'smprotocol_connections', state='writing'), 1)
        self.assertTrue(harness.wait_for(
            lambda: metric_sum(metric_samples(self.metrics()), 'smprotocol_connections', state='idle') == 0, 5))

    # -- who may see it ----------------------------------------------------

    def test_a_client_outside_allow_gets_403(self):
        self.assertEqual(get(self.dash_allow, '/metrics').status, 403)
        self.assertEqual(get(self.dash_allow, '/api/v1/summary').status, 403)
        self.assertEqual(get(self.dash_allow, '/').status, 403)
        self.assertEqual(get(self.dash_allow, '/metrics', source='127.0.0.2').status, 200)

    def test_the_token_is_required_when_set(self):
        self.assertEqual(get(self.dash_token, '/metrics').status, 403)
        self.assertEqual(get(self.dash_token, '/metrics', {'Authorization': 'Bearer wrong'}).status, 403)
        self.assertEqual(get(self.dash_token, '/metrics', {'Authorization': 'Basic ' + self.token}).status, 403)
        self.assertEqual(get(self.dash_token, '/metrics', {'Authorization': 'Bearer ' + self.token}).status, 200)
        self.assertEqual(get(self.dash_token, '/api/v1/summary?access_token=' + self.token).status, 200)
        self.assertEqual(get(self.dash_token, '/api/v1/summary?access_token=' + self.token[:-1]).status, 403)
        # The page's own files hold no data: the browser fetches them without the token.
        self.assertEqual(get(self.dash_token, '/dashboard.js').status, 200)
        self.assertEqual(get(self.dash_token, '/api/v1/live').status, 403)

    # -- live --------------------------------------------------------------

    def test_live_stream_sends_updates(self):
        sock = socket.create_connection(('127.0.0.1', self.dash), timeout=10)
        try:
            sock.sendall(harness.request_bytes('GET', '/api/v1/live', close=False))
            data = b''
            deadline = time.monotonic() + 10
            while data.count(b'event: update') < 2 and time.monotonic() < deadline:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        finally:
            sock.close()
        head, _, body = data.partition(b'\r\n\r\n')
        self.assertIn(b'200 OK', head)
        self.assertIn(b'Content-Type: text/event-stream', head)
        events = [line[len(b'data: '):] for line in body.split(b'\n') if line.startswith(b'data: ')]
        self.assertGreaterEqual(len(events), 2, body[:500])
        update = json.loads(events[0])
        # The summary this worker last asked for a page (null before any): the
        # stream itself never asks the store.
        self.assertTrue(update['summary'] is None or update['summary']['downloads'] >= 4, update['summary'])
        self.assertIsInstance(update['in_progress'], list)
        self.assertGreater(update['metrics']['bytes_sent_total'], 20 * MIB)

    def test_in_progress_shows_a_running_download(self):
        p = harness.spawn(['curl', '-s', '--noproxy', '*', '-A', 'slow-client', '-o', os.devnull,
                           'http://127.0.0.1:%d/slow.bin' % self.slow_port],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            rows = harness.wait_for(lambda: [row for row in self.api('/api/v1/in_progress')['rows']
                                             if row['path'] == 'slow.bin'], 10, interval=0.3)
            self.assertTrue(rows, 'the running download never showed')
            row = rows[0]
            self.assertEqual(row['client_ip'], '127.0.0.1')
            self.assertEqual(row['file_size'], 4 * MIB)
            self.assertGreater(row['bytes'], 0)
            self.assertLess(row['coverage'], 1)
            self.assertGreater(row['speed_bps'], 64 * 1024)  # limit_rate is 256 KiB/s
            self.assertLess(row['speed_bps'], 1024 * 1024)
            # Its bytes are counted as they go, not all at its end.
            sent = lambda: metric_sum(metric_samples(self.metrics()), 'smprotocol_sent_bytes_total',
                                      module='http_download')
            before = sent()
            time.sleep(2.5)
            self.assertIsNone(p.poll(), 'the download ended too soon to see its progress')
            self.assertGreater(sent() - before, 256 * 1024)
        finally:
            p.kill()
            p.wait(timeout=5)

    # -- the page, in headless Chromium ------------------------------------

    def page_url(self):
        return 'http://127.0.0.1:%d/' % self.dash

    @contextlib.contextmanager
    def open_page(self):
        """Headless Chromium on the page, once it has loaded its reports."""
        reason = browser.available()
        if reason:
            self.skipTest(reason)
        with browser.Browser(width=1280, height=1000) as page:
            page.navigate(self.page_url())
            page.wait_for(LOADED, 20)
            yield page

    def test_page_dump_dom(self):
        reason = browser.available()
        if reason:
            self.skipTest(reason)
        html = browser.dump_dom(self.page_url(), timeout=30)
        for hook in list(SUMMARY_HOOKS.values()) + ['files', 'countries', 'reasons', 'in-progress']:
            self.assertIn('id="%s"' % hook, html)
        self.assertIn('src="dashboard.js"', html)
        self.assertNotRegex(html, r'(src|href)="(https?:)?//')  # nothing from elsewhere

    def test_page_shows_the_api_numbers(self):
        with self.open_page() as page:
            deadline = time.monotonic() + 10
            while True:
                [summary] = self.api('/api/v1/summary')['rows']
                expected = {field: summary[field] for field in SUMMARY_HOOKS}
                shown = page.evaluate(READ_SUMMARY)
                if shown == expected or time.monotonic() >= deadline:
                    break
                time.sleep(0.3)
            self.assertEqual(shown, expected, page.evaluate('document.getElementById("errors").textContent'))
            files = page.evaluate('''Object.fromEntries([...document.querySelectorAll('#files tbody tr[data-path]')]
                .map((row) => [row.dataset.path, row.cells[0].textContent]))''')
            self.assertEqual(files[HOSTILE], HOSTILE)  # shown as text
            self.assertIsNone(page.evaluate('window.__xss === undefined ? null : window.__xss'))
            page.wait_for('Number(document.body.dataset.updates) >= 2', 10)
            path = page.screenshot(os.path.join(artifacts_dir(), 'dashboard.png'))
            sys.stderr.write('[dashboard] screenshot: %s\n' % path)
            with open(path, 'rb') as f:
                self.assertEqual(f.read(8), b'\x89PNG\r\n\x1a\n')

    def test_page_shows_a_download_started_after_it_loaded(self):
        with self.open_page() as page:
            updates = page.evaluate('Number(document.body.dataset.updates)')
            row = '#in-progress tbody tr[data-path="slow.bin"]'
            self.assertFalse(page.evaluate('document.querySelector(%s) !== null' % json.dumps(row)))
            p = harness.spawn(['curl', '-s', '--noproxy', '*', '-A', 'late-client', '-o', os.devnull,
                               'http://127.0.0.1:%d/slow.bin' % self.slow_port],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            try:
                page.wait_for('document.querySelector(%s) !== null' % json.dumps(row), 15)
                coverage = page.evaluate('Number(document.querySelector(%s).querySelector("[data-value]")'
                                         '.closest("tr").querySelector(".coverage").dataset.value)' % json.dumps(row))
                self.assertGreater(coverage, 0)
                self.assertLess(coverage, 1)
                # No reload: the same page, updated by the stream.
                self.assertGreater(page.evaluate('Number(document.body.dataset.updates)'), updates)
                page.screenshot(os.path.join(artifacts_dir(), 'dashboard-download-in-progress.png'))
            finally:
                p.kill()
                p.wait(timeout=5)


if __name__ == '__main__':
    unittest.main()
