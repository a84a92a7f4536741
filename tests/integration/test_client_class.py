"""Client classes (tracking.client_classes): real downloads by curl, wget and
aria2c with their own agents, and requests with the agents of browsers, bots
and python-requests; `smprotocol stats` counts people by default, everyone with
--include-bots, and `stats clients` shows each class with its top agents; the
dashboard's API takes include_bots; a replaced rules file changes a class, and a
bad one is refused by `smprotocol -t` with its file and line."""

import json
import os
import signal
import sqlite3
import subprocess
import unittest
import urllib.request

import harness
from harness import MIB

FIREFOX = 'Mozilla/5.0 (X11; Linux x86_64; rv:109.0) Gecko/20100101 Firefox/115.0'
CHROME = ('Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) '
          'Chrome/120.0.0.0 Safari/537.36')
GOOGLEBOT = ('Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; Googlebot/2.1; '
             '+http://www.google.com/bot.html) Chrome/120.0.6099.129 Safari/537.36')
BINGBOT = ('Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; bingbot/2.0; '
           '+http://www.bing.com/bingbot.htm) Chrome/116.0.1938.76 Safari/537.36')
GPTBOT = 'Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; GPTBot/1.2; +https://openai.com/gptbot)'
PYTHON_REQUESTS = 'python-requests/2.28.1'


def tool_agent(command, name, word):
    """The agent a tool sends, from the first line of its --version: 'curl/7.88.1'
    from 'curl 7.88.1 (x86_64-pc-linux-gnu) ...' (the version is word `word`)."""
    first = subprocess.run([command, '--version'], capture_output=True, text=True, timeout=10).stdout
    return '%s/%s' % (name, first.split('\n')[0].split()[word])


def urllib_get(port, path, agent):
    """A GET through urllib, its agent set by header, no proxy."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    request = urllib.request.Request('http://127.0.0.1:%d%s' % (port, path), headers={'User-Agent': agent})
    with opener.open(request, timeout=10) as response:
        response.read()
        return response.status


def config(env, port, db, extra_tracking='', dash=None):
    text = harness.config_text(port, env.www, workers=2,
                               core_extra={'tracking': '{enabled: true, idle_window: 1s%s}' % extra_tracking})
    plugins = 'plugins:\n  - module: sqlite\n    path: %s\n' % db
    if dash:
        plugins = '  - module: dashboard\n    host: 127.0.0.1\n    port: %d\n' % dash + plugins
    return text.replace('plugins: []\n', plugins)


class ClientClasses(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.env = harness.TestEnv({'a.bin': MIB})
        cls.db = cls.env.path('stats.db')
        cls.port = harness.free_port()
        cls.dash = harness.free_port()
        cls.config = harness.write_file(cls.env.path('classes.yaml'), config(cls.env, cls.port, cls.db,
                                                                             dash=cls.dash))
        cls.server = harness.Server(cls.env, port=cls.port, config=open(cls.config).read())
        cls.server.start()
        cls.agents = {
            'curl': tool_agent('curl', 'curl', 1),  # curl 7.88.1 (...)
            'wget': tool_agent('wget', 'Wget', 2),  # GNU Wget 1.21.3 built on linux-gnu.
            'aria2': tool_agent('aria2c', 'aria2', 2),  # aria2 version 1.36.0
        }
        try:
            cls.traffic()
            # Downloads reach the store as they grow, once a second, and each worker keeps
            # an answer of its API for a second: asked until both answers are there at once.
            cls.api = []
            harness.wait_for(lambda: cls.api_summaries() == (7, 10), 15)
        finally:
            cls.stopped = cls.server.terminate()

    @classmethod
    def traffic(cls):
        url = cls.server.url('/a.bin')
        out = cls.env.path('out')
        os.makedirs(out)
        for name, command in (
                ('curl.bin', ['curl', '-s', '--noproxy', '*', '-o', os.path.join(out, 'curl.bin'), url]),
                ('wget.bin', ['wget', '-q', '--no-proxy', '-O', os.path.join(out, 'wget.bin'), url]),
                ('aria2.bin', ['aria2c', '--allow-overwrite=true', '--auto-file-renaming=false',
                               '--file-allocation=none', '--console-log-level=warn', '--summary-interval=0',
                               '--max-tries=1', '--all-proxy=', '-d', out, '-o', 'aria2.bin', url])):
            r = harness.run(command, timeout=60)
            assert r.returncode == 0, (command, r.stdout, r.stderr)
            assert os.path.getsize(os.path.join(out, name)) == MIB
        for agent in (FIREFOX, CHROME, GOOGLEBOT, BINGBOT, GPTBOT, PYTHON_REQUESTS):
            assert urllib_get(cls.port, '/a.bin', agent) == 200
        # No agent at all.
        assert harness.http(cls.port, 'GET', '/a.bin').status == 200

    @classmethod
    def api_summaries(cls):
        """The downloads of the API's summary without and with include_bots, also kept in cls.api."""
        cls.api = (cls.api_rows('summary')[0]['downloads'], cls.api_rows('summary', 'include_bots=1')[0]['downloads'])
        return cls.api

    @classmethod
    def api_rows(cls, report, query=''):
        response = harness.http(cls.dash, 'GET', '/api/v1/%s?%s' % (report, query))
        assert response.status == 200, response.body
        return json.loads(response.body)['rows']

    @classmethod
    def tearDownClass(cls):
        cls.server.kill()
        cls.env.cleanup()

    def stats(self, *args, config=None):
        r = subprocess.run([harness.BINARY, 'stats', '--config', config or self.config, *args], capture_output=True,
                           text=True, timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr)
        return r.stdout

    def rows(self, report, *args, config=None):
        return json.loads(self.stats('--json', *args, report, config=config))['rows']

    def test_server_stopped_cleanly(self):
        self.assertEqual(self.stopped, 0)

    def test_summary_counts_people_unless_asked(self):
        # Ten downloads: three by bots; all from 127.0.0.1.
        [people] = self.rows('summary')
        self.assertEqual((people['downloads'], people['completed'], people['bytes']), (7, 7, 7 * MIB))
        [everyone] = self.rows('summary', '--include-bots')
        self.assertEqual((everyone['downloads'], everyone['completed'], everyone['bytes']), (10, 10, 10 * MIB))
        # The text table too.
        self.assertEqual(self.stats('summary').splitlines()[1].split()[:2], ['7', '7'])
        self.assertEqual(self.stats('--include-bots', 'summary').splitlines()[1].split()[:2], ['10', '10'])

    def test_request_reports_leave_out_the_bots(self):
        [people] = self.rows('reasons')
        [everyone] = self.rows('reasons', '--include-bots')
        self.assertEqual((people['reason'], people['requests'], people['downloads']), ('completed', 7, 7))
        self.assertEqual((everyone['requests'], everyone['downloads']), (10, 10))
        self.assertEqual(len(self.rows('downloads')), 7)
        self.assertEqual(len(self.rows('downloads', '--include-bots')), 10)

    def test_clients_shows_each_class_and_its_agents(self):
        rows = self.rows('clients')
        totals = {row['client_class']: row for row in rows if row['rank'] == 0}
        self.assertEqual({name: row['downloads'] for name, row in totals.items()},
                         {'tool': 3, 'bot': 3, 'browser': 2, 'download_manager': 1, 'unknown': 1})
        for row in totals.values():
            self.assertIsNone(row['user_agent'])
            self.assertEqual(row['completed'], row['downloads'])
            self.assertEqual(row['bytes'], row['downloads'] * MIB)
            self.assertEqual(row['distinct_clients'], 1)
        agents = {}
        for row in rows:
            if row['rank'] > 0:
                agents.setdefault(row['client_class'], set()).add(row['user_agent'])
        self.assertEqual(agents, {
            'tool': {self.agents['curl'], self.agents['wget'], PYTHON_REQUESTS},
            'download_manager': {self.agents['aria2']},
            'browser': {FIREFOX, CHROME},
            'bot': {GOOGLEBOT, BINGBOT, GPTBOT},
            'unknown': {''},  # no agent: an empty one
        })
        # Most downloads first; a class's total before its agents.
        self.assertEqual([row['client_class'] for row in rows][:2], ['bot', 'bot'])
        self.assertEqual(rows[0]['rank'], 0)
        # The text table: one line a row, after the header.
        text = self.stats('clients').splitlines()
        self.assertEqual(text[0].split(), ['client_class', 'rank', 'user_agent', 'downloads', 'completed', 'bytes',
                                           'distinct_clients'])
        self.assertEqual(len(text), len(rows) + 1)
        self.assertTrue(any(line.startswith('download_manager') and self.agents['aria2'] in line for line in text))

    def test_dashboard_api_passes_include_bots(self):
        self.assertEqual(self.api, (7, 10))

    def own_server(self, rules_text):
        """A server of its own (its own state_dir: nothing of another server's logs) whose
        tracking.client_classes is a file of `rules_text`: (server, its env, rules path,
        config path, database)."""
        env = harness.TestEnv({'a.bin': 4096, 'b.bin': 4096})
        self.addCleanup(env.cleanup)
        rules = harness.write_file(env.path('my_classes.conf'), rules_text)
        port = harness.free_port()
        db = env.path('own.db')
        path = harness.write_file(env.path('own.yaml'), config(env, port, db, ', client_classes: %s' % rules))
        server = harness.Server(env, port=port, config=open(path).read())
        self.addCleanup(server.kill)
        server.start()
        return server, env, rules, path, db

    def wget(self, env, url):
        r = harness.run(['wget', '-q', '--no-proxy', '-O', env.path('got.bin'), url], timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)

    def test_replaced_rules_change_a_class(self):
        server, env, _, path, _ = self.own_server('# wget fetches our mirrors: a download manager here\n'
                                                  'download_manager wget\nbrowser mozilla/\n')
        self.wget(env, server.url('/a.bin'))
        self.assertEqual(urllib_get(server.port, '/a.bin', 'curl/7.88.1'), 200)
        self.assertEqual(server.terminate(), 0, server.log_tail())
        totals = {row['client_class']: row['downloads'] for row in self.rows('clients', config=path)
                  if row['rank'] == 0}
        # Under these rules curl is no class at all.
        self.assertEqual(totals, {'download_manager': 1, 'unknown': 1})

    @staticmethod
    def finished(db):
        try:
            with sqlite3.connect(db) as stored:
                count = stored.execute('SELECT count(*) FROM downloads WHERE finished = 1').fetchone()[0]
            stored.close()
            return count
        except sqlite3.Error:
            return 0

    def test_a_reload_applies_changed_rules(self):
        server, env, rules, _, db = self.own_server('tool wget\n')
        self.wget(env, server.url('/a.bin'))
        # Finished (idle for 1 s) and stored before the reload: a download still open
        # across it would be stored with the new rules' class.
        self.assertTrue(harness.wait_for(lambda: self.finished(db) == 1, 15.0), server.log_tail())
        harness.write_file(rules, 'download_manager wget\n')
        os.kill(server.pid, signal.SIGHUP)
        self.assertTrue(harness.wait_for(lambda: server.log().count('Stats collector ready') == 2, 15.0),
                        server.log_tail())
        self.assertIn('restarts: its settings changed', server.log())
        self.wget(env, server.url('/b.bin'))
        self.assertEqual(server.terminate(), 0, server.log_tail())
        with sqlite3.connect(db) as stored:
            classes = stored.execute('SELECT path, client_class FROM downloads ORDER BY path').fetchall()
        stored.close()
        self.assertEqual(classes, [('a.bin', 'tool'), ('b.bin', 'download_manager')])

    def test_bad_rules_are_refused_with_file_and_line(self):
        rules = harness.write_file(self.env.path('bad_classes.conf'),
                                   '# two bad lines\nbot googlebot\nrobot crawler\nbrowser\n')
        path = harness.write_file(self.env.path('bad.yaml'),
                                  config(self.env, harness.free_port(), self.env.path('bad.db'),
                                         ', client_classes: %s' % rules))
        r = subprocess.run([harness.BINARY, '-t', '-c', path], capture_output=True, text=True, timeout=20)
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn("tracking.client_classes: %s:3: 'robot' is not a class" % rules, r.stderr)
        self.assertIn("tracking.client_classes: %s:4: class 'browser' without a pattern" % rules, r.stderr)
        missing = harness.write_file(self.env.path('missing.yaml'),
                                     config(self.env, harness.free_port(), self.env.path('bad.db'),
                                            ', client_classes: %s' % self.env.path('nothing.conf')))
        r = subprocess.run([harness.BINARY, '-t', '-c', missing], capture_output=True, text=True, timeout=20)
        self.assertEqual(r.returncode, 1)
        self.assertIn('tracking.client_classes: cannot read %s' % self.env.path('nothing.conf'), r.stderr)


if __name__ == '__main__':
    unittest.main()
