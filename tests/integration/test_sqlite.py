"""The sqlite store: finished requests and logical downloads written by the
stats collector, read back here with Python's own sqlite3 module."""

import os
import sqlite3
import unittest

import harness
from harness import MIB


class SqliteStore(unittest.TestCase):
    def setUp(self):
        self.env = harness.TestEnv({'big.bin': 20 * MIB, 'small.bin': 4096})
        self.db = self.env.path('stats.db')
        port = harness.free_port()
        text = harness.config_text(port, self.env.www, workers=2,
                                   core_extra={'tracking': '{enabled: true, idle_window: 1s}'})
        text = text.replace('plugins: []', 'plugins:\n  - module: sqlite\n    path: %s\n' % self.db)
        self.server = harness.Server(self.env, port=port, config=text)
        self.server.start()

    def tearDown(self):
        self.server.kill()
        self.env.cleanup()

    def query(self, sql, *args):
        with sqlite3.connect(self.db) as db:
            return db.execute(sql, args).fetchall()

    def test_downloads_and_requests_are_stored(self):
        port = self.server.port
        out = self.env.path('aria')
        r = harness.run(['aria2c', '-q', '-x8', '-s8', '-k1M', '--user-agent=stored', '--allow-overwrite=true',
                         '--auto-file-renaming=false', '--file-allocation=none', '-d', out, '-o', 'big.bin',
                         self.server.url('/big.bin')], timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(harness.http(port, 'HEAD', '/small.bin', {'User-Agent': 'stored'}).status, 200)
        self.assertEqual(harness.http(port, 'GET', '/nothing', {'User-Agent': 'stored'}).status, 404)
        self.assertEqual(self.server.terminate(), 0, self.server.log_tail())

        self.assertEqual(self.query('PRAGMA journal_mode')[0][0], 'wal')
        self.assertEqual(self.query('PRAGMA user_version')[0][0], 1)
        rows = self.query('SELECT path, completed, distinct_bytes, file_size, requests, reason, typeof(first_us) '
                          'FROM downloads WHERE user_agent = ?', 'stored')
        self.assertEqual(len(rows), 1, rows)
        path, completed, distinct, size, requests, reason, first_type = rows[0]
        self.assertEqual((path, completed, distinct, size, reason), ('big.bin', 1, 20 * MIB, 20 * MIB, 'completed'))
        self.assertGreaterEqual(requests, 8)
        self.assertEqual(first_type, 'integer')
        # Every request is a row, downloads or not: the aria2c ones, the HEAD and the 404.
        statuses = dict(self.query('SELECT status, count(*) FROM requests WHERE user_agent = ? GROUP BY status',
                                   'stored'))
        self.assertEqual(statuses.get(200, 0) + statuses.get(206, 0), requests + 1)  # + the HEAD
        self.assertEqual(statuses.get(404), 1)
        reasons = dict(self.query("SELECT reason, count(*) FROM requests WHERE status = 404"))
        self.assertEqual(reasons, {'not_found': 1})
        self.assertIn('Save download(s) tracker in database', self.server.log())

    def test_store_locked_during_traffic_loses_nothing(self):
        # Another process holds the write lock for a few seconds: every batch in
        # that time fails (SQLITE_BUSY) and is offered again once it lets go.
        port = self.server.port
        locker = sqlite3.connect(self.db, isolation_level=None, timeout=10)
        locker.execute('BEGIN EXCLUSIVE')
        try:
            for i in range(20):
                harness.http(port, 'GET', '/small.bin', {'User-Agent': 'locked-%d' % i})
            harness.wait_for(lambda: 'cannot store downloads' in self.server.log(), 10.0)
            self.assertIn('cannot store downloads', self.server.log())
        finally:
            locker.execute('ROLLBACK')
            locker.close()
        harness.wait_for(lambda: 'Store writable again' in self.server.log(), 15.0)
        self.assertEqual(self.server.terminate(), 0, self.server.log_tail())
        self.assertEqual(self.server.log().count('cannot store downloads'), 1, 'logged once per outage')
        agents = [row[0] for row in self.query("SELECT user_agent FROM downloads WHERE user_agent LIKE 'locked-%'")]
        self.assertEqual(sorted(agents), sorted('locked-%d' % i for i in range(20)))  # all there, none twice
        requests = self.query("SELECT count(*), count(DISTINCT user_agent) FROM requests "
                              "WHERE user_agent LIKE 'locked-%'")[0]
        self.assertEqual(requests, (20, 20))

    def test_unwritable_path_stops_the_start(self):
        text = harness.config_text(harness.free_port(), self.env.www).replace(
            'plugins: []', 'plugins:\n  - module: sqlite\n    path: /nonexistent/dir/stats.db\n')
        path = harness.write_file(self.env.path('bad.yaml'), text)
        r = harness.run([harness.BINARY, '-t', '-c', path], timeout=20)
        self.assertEqual(r.returncode, 1)
        self.assertIn('plugins[0].path: cannot open /nonexistent/dir/stats.db', r.stderr)


if __name__ == '__main__':
    unittest.main()
