"""tracking.retention and the per-day totals (issue 18): a server started
with a retention purges the sqlite store's older requests and finished
downloads at once, keeps the recent ones, and moves the purged downloads'
counts into the per-day totals in the same transaction: `smprotocol stats
daily` (and the timeseries by day) report the same before and after. The old rows are
made from real ones: downloads stored by a first run, then moved 800 days
back with SQL before a second run."""

import json
import os
import signal
import sqlite3
import subprocess
import time
import unittest

import harness
from harness import MIB

DAY_US = 86_400_000_000
BACK_US = 800 * DAY_US


def move_requests_back(db, back_us, agent_like='%'):
    """Moves the stored requests whose user agent is LIKE agent_like back in
    time by back_us. The sqlite store keeps requests in blocks, a JSON array
    of each request's fields by position (start_us 5, end_us 6, user_agent
    14; docs/tracking.md), read through the view `requests`, which cannot be
    updated: the blocks are rewritten, and their bounds made again."""
    db.execute("UPDATE request_blocks SET data = (SELECT json_group_array(CASE WHEN value ->> 14 LIKE :agent "
               "THEN json_set(value, '$[5]', (value ->> 5) - :back, '$[6]', (value ->> 6) - :back) "
               "ELSE json(value) END) FROM json_each(data))", {'agent': agent_like, 'back': back_us})
    db.execute("UPDATE request_blocks SET first_us = (SELECT min(value ->> 5) FROM json_each(data)), "
               "last_us = (SELECT max(value ->> 5) FROM json_each(data))")


def utc_day(us):
    return time.strftime('%Y-%m-%d', time.gmtime(us // 1_000_000))


class Retention(unittest.TestCase):

    def setUp(self):
        self.env = harness.TestEnv({'a.bin': 1 * MIB, 'b.bin': 64 * 1024})
        self.db = self.env.path('stats.db')
        self.config = self.env.path('retention.yaml')

    def tearDown(self):
        for server in getattr(self, 'servers', []):
            server.kill()
        self.env.cleanup()

    def start(self, tracking):
        port = harness.free_port()
        text = harness.config_text(port, self.env.www, workers=1, core_extra={'tracking': tracking})
        text = text.replace('plugins: []', 'plugins:\n  - module: sqlite\n    path: %s\n' % self.db)
        harness.write_file(self.config, text)
        server = harness.Server(self.env, port=port, config=text)
        self.servers = getattr(self, 'servers', []) + [server]
        return server.start()

    def query(self, sql, *args):
        with sqlite3.connect(self.db) as db:
            return db.execute(sql, args).fetchall()

    def stats(self, *args):
        r = subprocess.run([harness.BINARY, 'stats', '--config', self.config, *args], capture_output=True,
                           text=True, timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr)
        return r.stdout

    def test_old_rows_are_purged_at_start_and_the_days_keep_counting_them(self):
        server = self.start('{enabled: true, idle_window: 1s}')
        for agent in ('old-1', 'old-2', 'old-3'):
            self.assertEqual(harness.http(server.port, 'GET', '/a.bin', {'User-Agent': agent}).status, 200)
        self.assertEqual(harness.http(server.port, 'GET', '/b.bin', {'User-Agent': 'old-1'}).status, 200)
        self.assertEqual(harness.http(server.port, 'GET', '/b.bin', {'User-Agent': 'recent'}).status, 200)
        self.assertEqual(server.terminate(), 0, server.log_tail())
        self.assertEqual(self.query("SELECT count(*), sum(finished) FROM downloads"), [(5, 5)])
        # Storing downloads never writes the per-day totals: only a purge does.
        self.assertEqual(self.query("SELECT count(*) FROM daily"), [(0,)])

        # The 'old-' rows move 800 days back.
        with sqlite3.connect(self.db) as db:
            move_requests_back(db, BACK_US, "old-%")
            db.execute("UPDATE downloads SET first_us = first_us - ?, last_us = last_us - ? "
                       "WHERE user_agent LIKE 'old-%'", (BACK_US, BACK_US))
        db.close()
        old_day = utc_day(self.query("SELECT min(first_us) FROM downloads")[0][0])
        recent_day = utc_day(self.query("SELECT max(first_us) FROM downloads")[0][0])
        old_requests = self.query("SELECT count(*) FROM requests WHERE user_agent LIKE 'old-%'")[0][0]
        self.assertGreaterEqual(old_requests, 4)
        recent_requests = self.query("SELECT count(*) FROM requests WHERE user_agent = 'recent'")[0][0]
        expected = [
            {'day': old_day, 'path': 'a.bin', 'downloads': 3, 'completed': 3, 'bytes': 3 * MIB},
            {'day': old_day, 'path': 'b.bin', 'downloads': 1, 'completed': 1, 'bytes': 64 * 1024},
            {'day': recent_day, 'path': 'b.bin', 'downloads': 1, 'completed': 1, 'bytes': 64 * 1024},
        ]
        # Before the purge the downloads are counted from their rows.
        self.assertEqual(json.loads(self.stats('--json', 'daily'))['rows'], expected)
        days_before = json.loads(self.stats('--json', '--bucket', 'day', 'timeseries'))['rows']
        self.assertEqual([(r['time'][:10], r['downloads']) for r in days_before], [(old_day, 4), (recent_day, 1)])

        server = self.start('{enabled: true, idle_window: 1s, retention: 760d}')
        harness.wait_for(lambda: 'retention: purged' in server.log(), 15.0)
        self.assertIn('[sqlite] retention: purged %d row(s) older than 760 day(s)' % (old_requests + 4),
                      server.log())
        # Recent rows are kept; the old downloads' counts, and only theirs,
        # moved into the per-day totals.
        self.assertEqual(self.query("SELECT count(*) FROM requests WHERE user_agent LIKE 'old-%'"), [(0,)])
        self.assertEqual(self.query("SELECT count(*) FROM downloads WHERE user_agent LIKE 'old-%'"), [(0,)])
        self.assertEqual(self.query("SELECT count(*) FROM requests WHERE user_agent = 'recent'"),
                         [(recent_requests,)])
        self.assertEqual(self.query("SELECT user_agent FROM downloads"), [('recent',)])
        self.assertEqual(self.query("SELECT * FROM daily ORDER BY 1, 2, 3"),
                         [(old_day, 'a.bin', 'unknown', 3, 3, 3 * MIB), (old_day, 'b.bin', 'unknown', 1, 1, 64 * 1024)])
        # The same report after the purge: counted once, forever.
        self.assertEqual(json.loads(self.stats('--json', 'daily'))['rows'], expected)
        self.assertEqual(json.loads(self.stats('--json', '--bucket', 'day', 'timeseries'))['rows'], days_before)

        # Tracking goes on after the purge, counted live.
        self.assertEqual(harness.http(server.port, 'GET', '/b.bin', {'User-Agent': 'after'}).status, 200)
        self.assertEqual(server.terminate(), 0, server.log_tail())

        rows = json.loads(self.stats('--json', 'daily'))['rows']
        self.assertEqual(rows, expected[:2] + [
            {'day': recent_day, 'path': 'b.bin', 'downloads': 2, 'completed': 2, 'bytes': 2 * 64 * 1024},
        ])
        text = self.stats('daily')
        self.assertIn(old_day, text)
        self.assertIn('a.bin', text)
        # The filters: since a day after the old one, the file.
        since = time.strftime('%Y-%m-%d', time.gmtime(time.time() - 700 * 86400))
        self.assertEqual([r['path'] for r in json.loads(self.stats('--json', '--since', since, 'daily'))['rows']],
                         ['b.bin'])
        self.assertEqual(len(json.loads(self.stats('--json', '--file', '/a.bin', 'daily'))['rows']), 1)
        # The dashboard's day view adds the same totals; the downloads
        # reports see only what retention kept.
        days = json.loads(self.stats('--json', '--bucket', 'day', 'timeseries'))['rows']
        self.assertEqual([(r['time'][:10], r['downloads']) for r in days], [(old_day, 4), (recent_day, 2)])
        self.assertEqual(json.loads(self.stats('--json', 'summary'))['rows'][0]['downloads'], 2)

    def test_retention_off_keeps_everything_until_a_reload_sets_one(self):
        server = self.start('{enabled: true, idle_window: 1s, retention: 0}')
        self.assertEqual(harness.http(server.port, 'GET', '/b.bin', {'User-Agent': 'old-1'}).status, 200)
        self.assertEqual(server.terminate(), 0, server.log_tail())
        with sqlite3.connect(self.db) as db:
            move_requests_back(db, BACK_US)
            db.execute("UPDATE downloads SET first_us = first_us - ?, last_us = last_us - ?", (BACK_US, BACK_US))
        db.close()
        server = self.start('{enabled: true, idle_window: 1s}')
        time.sleep(1.0)
        self.assertNotIn('retention', server.log())
        self.assertEqual(self.query("SELECT count(*) FROM downloads"), [(1,)])
        # A reload that sets a retention restarts the collector, which purges.
        with open(server.config_path) as f:
            text = f.read()
        harness.write_file(server.config_path, text.replace('idle_window: 1s}', 'idle_window: 1s, retention: 760d}'))
        os.kill(server.pid, signal.SIGHUP)
        harness.wait_for(lambda: 'retention: purged' in server.log(), 15.0)
        self.assertIn('restarts: its settings changed', server.log())
        self.assertEqual(self.query("SELECT count(*) FROM downloads"), [(0,)])
        self.assertEqual(server.terminate(), 0, server.log_tail())

    def test_a_bad_retention_names_the_key_and_the_line(self):
        text = harness.config_text(harness.free_port(), self.env.www, workers=1,
                                   core_extra={'tracking': '\n  retention: soon'})
        path = harness.write_file(self.env.path('bad.yaml'), text)
        line = text.splitlines().index('  retention: soon') + 1
        r = harness.run([harness.BINARY, '-t', '-c', path], timeout=20, cwd=self.env.dir)
        out = r.stdout + r.stderr
        self.assertNotEqual(r.returncode, 0, out)
        self.assertIn('%s:%d:' % (path, line), out)
        self.assertIn('tracking.retention', out)
        self.assertIn('must be a duration', out)


if __name__ == '__main__':
    unittest.main()
