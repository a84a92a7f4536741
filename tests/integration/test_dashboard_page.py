"""The dashboard's page (protocols/dashboard/page) in headless Chromium.

A draft for issue 17, run against a dashboard that is already running:
SMP_DASHBOARD_URL is its base URL (`http://127.0.0.1:PORT/`, with
`?access_token=T` when it wants one); without it every test skips.
SMP_ARTIFACTS is where the screenshot goes (default: a new temp dir, kept,
and named on stderr).

The real test starts the server itself (harness.Server with a dashboard
listener) and takes the URL from it. It should also: make downloads while the
page is open (the tables fill, the summary moves), download a file named
`<script>x</script>.bin` (shown as text: test_server_text_is_never_markup),
and stop the server to see `document.body.dataset.connection` become
"disconnected".
"""

import ipaddress
import json
import os
import sys
import tempfile
import time
import unittest
import urllib.parse
import urllib.request

import browser
import harness

BASE = os.environ.get('SMP_DASHBOARD_URL')

# The summary's fields and the ids of the elements that show them.
SUMMARY_HOOKS = {
    'downloads': 'summary-downloads',
    'completed': 'summary-completed',
    'completion_rate': 'summary-completion-rate',
    'bytes': 'summary-bytes',
}

# {field: the number in the element's data-value, null without one, 'missing' without the element}
READ_SUMMARY = '''Object.fromEntries(Object.entries(%s).map(([field, id]) => {
    const element = document.getElementById(id);
    const value = element === null ? 'missing' : element.dataset.value;
    return [field, value === undefined ? null : value === 'missing' ? value : Number(value)];
}))''' % json.dumps(SUMMARY_HOOKS)

LOADED = 'document.body.dataset.loaded === "1"'
UPDATES = 'Number(document.body.dataset.updates)'


def token():
    """The access token in SMP_DASHBOARD_URL, or None."""
    values = urllib.parse.parse_qs(urllib.parse.urlsplit(BASE).query).get('access_token')
    return values[0] if values else None


def api_rows(report, timeout=5):
    """The rows of /api/v1/<report>, asked as the page asks (the token in the query)."""
    url = urllib.parse.urljoin(BASE, 'api/v1/' + report)
    if token() is not None:
        url += '?' + urllib.parse.urlencode({'access_token': token()})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=timeout) as response:
        body = json.loads(response.read().decode('utf-8'))
    assert body.get('report') == report, body
    return body['rows']


def artifacts_dir():
    path = os.environ.get('SMP_ARTIFACTS') or tempfile.mkdtemp(prefix='smp-dashboard-artifacts-')
    os.makedirs(path, exist_ok=True)
    return path


@unittest.skipUnless(BASE, 'SMP_DASHBOARD_URL is not set (the base URL of a running dashboard)')
@unittest.skipIf(browser.available(), browser.available())
class DashboardPage(unittest.TestCase):
    """One Chromium for the class, on the page; each test reads what it shows."""

    @classmethod
    def setUpClass(cls):
        host = urllib.parse.urlsplit(BASE).hostname or ''
        if host != 'localhost' and not (host.replace('.', '').isdigit()
                                        and ipaddress.ip_address(host) in ipaddress.ip_network('127.0.0.0/8')):
            raise AssertionError('SMP_DASHBOARD_URL %s is not on 127.0.0.0/8: tests talk to loopback only' % BASE)
        cls.browser = browser.Browser(width=1280, height=900).start()
        try:
            cls.browser.navigate(BASE)
            cls.browser.wait_for(LOADED, 20)
        except BaseException:
            cls.browser.close()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.browser.close()

    def shown_errors(self):
        return self.browser.evaluate('document.getElementById("errors").textContent')

    def test_dump_dom_serves_the_page_and_runs_its_script(self):
        html = browser.dump_dom(BASE, timeout=30)
        for hook in list(SUMMARY_HOOKS.values()) + ['files', 'countries', 'reasons', 'in-progress']:
            self.assertIn('id="%s"' % hook, html)
        # Its own files, by relative URLs, and nothing from elsewhere.
        self.assertIn('src="dashboard.js"', html)
        self.assertIn('href="dashboard.css"', html)
        self.assertNotRegex(html, r'(src|href)="(https?:)?//')
        # Dumped at the load event: the script has drawn the empty bandwidth axes, no answer has arrived yet.
        self.assertRegex(html, r'<svg id="bandwidth-chart"[^>]* data-points="0"')

    def test_summary_shows_the_api_numbers(self):
        # Live updates may move the summary between the two reads: read both
        # again until they agree, for a bounded time.
        deadline = time.monotonic() + 10
        while True:
            expected = {field: api_rows('summary')[0].get(field) for field in SUMMARY_HOOKS}
            shown = self.browser.evaluate(READ_SUMMARY)
            if shown == expected or time.monotonic() >= deadline:
                break
            time.sleep(0.3)
        self.assertEqual(shown, expected, 'page errors: %r' % self.shown_errors())
        self.assertEqual(self.shown_errors(), '')

    def test_live_updates_arrive(self):
        self.browser.wait_for('%s >= 1' % UPDATES, 10)
        count = self.browser.evaluate(UPDATES)
        self.browser.wait_for('%s >= %d' % (UPDATES, count + 2), 10)
        self.assertEqual(self.browser.evaluate('document.body.dataset.connection'), 'live')

    def test_requests_stay_on_the_origin_with_the_token(self):
        # Whether the stream answers or not: a page that forgets the token gets no update.
        self.browser.wait_for_request('/api/v1/live', 10)
        origin = '{0.scheme}://{0.netloc}/'.format(urllib.parse.urlsplit(BASE))
        requests = list(self.browser.requests)
        self.assertTrue(requests)
        self.assertEqual([url for url in requests if not url.startswith(origin)], [])
        api = [url for url in requests if '/api/v1/' in url]
        if token() is not None:
            lacking = [url for url in api
                       if urllib.parse.parse_qs(urllib.parse.urlsplit(url).query).get('access_token') != [token()]]
            self.assertEqual(lacking, [])

    def test_server_text_is_never_markup(self):
        # Paths, countries and reasons come from clients: they are text in
        # cells, and a table holds no element but rows, cells and progress bars.
        found = self.browser.evaluate('''[...document.querySelectorAll('tbody *')]
            .filter((element) => !['TR', 'TD', 'PROGRESS'].includes(element.tagName))
            .map((element) => element.outerHTML)''')
        self.assertEqual(found, [])
        mismatched = self.browser.evaluate('''[...document.querySelectorAll('#files tbody tr[data-path]')]
            .filter((row) => row.cells[0].textContent !== row.dataset.path).map((row) => row.dataset.path)''')
        self.assertEqual(mismatched, [])

    def test_screenshot(self):
        self.browser.wait_for('%s >= 2' % UPDATES, 10)
        path = self.browser.screenshot(os.path.join(artifacts_dir(), 'dashboard.png'))
        sys.stderr.write('[dashboard page] screenshot: %s\n' % path)
        with open(path, 'rb') as f:
            data = f.read()
        self.assertEqual(data[:8], b'\x89PNG\r\n\x1a\n')
        self.assertGreater(len(data), 20000)  # a blank page is a few kB


if __name__ == '__main__':
    harness.main()
