"""The sqlite store: finished requests and logical downloads written by the
stats collector, read back here with Python's own sqlite3 module; the spool
that keeps what the store cannot take, across an outage and a restart."""

import glob
import os
import shutil
import socket
import sqlite3
import subprocess
import unittest

import harness
from harness import MIB


class SqliteStore(unittest.TestCase):
    idle_window = '1s'

    def setUp(self):
        self.env = harness.TestEnv({'big.bin': 20 * MIB, 'small.bin': 4096})
        self.db = self.env.path('stats.db')
        self.spool = self.env.path('state', 'spool', 'sqlite')
        self.server = self.make_server(self.db)
        self.server.start()

    def make_server(self, db):
        port = harness.free_port()
        text = harness.config_text(port, self.env.www, workers=2,
                                   core_extra={'tracking': '{enabled: true, idle_window: %s}' % self.idle_window})
        text = text.replace('plugins: []', 'plugins:\n  - module: sqlite\n    path: %s\n' % db)
        return harness.Server(self.env, port=port, config=text)

    def spool_files(self):
        return sorted(glob.glob(os.path.join(self.spool, '*.spool')))

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
        head = harness.request_bytes('HEAD', '/small.bin', {'User-Agent': 'stored'})
        self.assertEqual(harness.raw_request(port, head).status, 200)
        self.assertEqual(harness.http(port, 'GET', '/nothing', {'User-Agent': 'stored'}).status, 404)
        self.assertEqual(self.server.terminate(), 0, self.server.log_tail())

        self.assertEqual(self.query('PRAGMA journal_mode')[0][0], 'wal')
        self.assertEqual(self.query('PRAGMA user_version')[0][0], 9)
        # The bytes received from the client: the request head, as sent.
        self.assertEqual(self.query("SELECT received_bytes FROM requests WHERE method = 'HEAD' AND user_agent = ?",
                                    'stored'), [(len(head),)])
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
        harness.wait_for(lambda: 'store writable again' in self.server.log(), 15.0)
        self.assertEqual(self.server.terminate(), 0, self.server.log_tail())
        self.assertEqual(self.server.log().count('cannot store downloads'), 1, 'logged once per outage')
        agents = [row[0] for row in self.query("SELECT user_agent FROM downloads WHERE user_agent LIKE 'locked-%'")]
        self.assertEqual(sorted(agents), sorted('locked-%d' % i for i in range(20)))  # all there, none twice
        requests = self.query("SELECT count(*), count(DISTINCT user_agent) FROM requests "
                              "WHERE user_agent LIKE 'locked-%'")[0]
        self.assertEqual(requests, (20, 20))

    def hold_write_lock(self):
        locker = sqlite3.connect(self.db, isolation_level=None, timeout=10)
        locker.execute('BEGIN EXCLUSIVE')
        return locker

    def test_spool_survives_a_stop_and_is_replayed_once(self):
        # The store stays locked until the server has stopped: its batches
        # must be on disk, then stored by the next start, and stored once even
        # when the same spool files are offered again.
        port = self.server.port
        locker = self.hold_write_lock()
        try:
            for i in range(10):
                harness.http(port, 'GET', '/small.bin', {'User-Agent': 'spooled-%d' % i})
            harness.wait_for(lambda: self.spool_files(), 10.0)
            self.assertEqual(self.server.terminate(), 0, self.server.log_tail())
        finally:
            locker.execute('ROLLBACK')
            locker.close()
        self.assertIn('they are stored at the next start', self.server.log())
        files = self.spool_files()
        self.assertTrue(files, 'nothing was spooled:\n' + self.server.log_tail())
        saved = self.env.path('saved-spool')
        shutil.copytree(self.spool, saved)
        self.assertEqual(self.query("SELECT count(*) FROM downloads WHERE user_agent LIKE 'spooled-%'"), [(0,)])

        for attempt in range(2):  # the second start replays the very same files again
            if attempt == 1:
                for name in os.listdir(saved):
                    shutil.copy(os.path.join(saved, name), self.spool)
            self.server.start()
            self.assertTrue(harness.wait_for(lambda: not self.spool_files(), 10.0), 'spool not replayed')
            self.assertEqual(self.server.terminate(), 0, self.server.log_tail())
            agents = [row[0] for row in
                      self.query("SELECT user_agent FROM downloads WHERE user_agent LIKE 'spooled-%'")]
            self.assertEqual(sorted(agents), sorted('spooled-%d' % i for i in range(10)))
            self.assertEqual(self.query("SELECT count(*) FROM requests WHERE user_agent LIKE 'spooled-%'"), [(10,)])
        self.assertEqual(self.server.log().count('replaying the spool'), 2)

    def test_a_version_2_database_is_migrated_to_9(self):
        # Version 2 is version 3 without requests.received_bytes, version 3
        # is version 4 without log_positions and with two more indexes on
        # downloads, version 4 is version 5 without requests.tls_version
        # and tls, version 5 is version 6 without client_class on both
        # tables, version 6 is version 7 without daily, and version 7 is
        # version 8 without downloads.node, and version 8 has a table of
        # requests where version 9 has blocks of them and a view: made here
        # from a database this server wrote, with a row that predates the
        # columns.
        port = self.server.port
        self.assertEqual(harness.http(port, 'GET', '/small.bin', {'User-Agent': 'before'}).status, 200)
        self.assertEqual(self.server.terminate(), 0, self.server.log_tail())
        with sqlite3.connect(self.db) as db:
            db.execute('CREATE TABLE requests_8 (id INTEGER PRIMARY KEY, node TEXT, worker_id INTEGER, '
                       'connection_id INTEGER, request_id INTEGER, module TEXT, start_us INTEGER NOT NULL, '
                       'end_us INTEGER NOT NULL, client_ip TEXT, client_port INTEGER, forwarded_ip TEXT, '
                       'method TEXT, path TEXT, target TEXT, protocol TEXT, user_agent TEXT, referer TEXT, '
                       'range TEXT, etag TEXT, file_size INTEGER, status INTEGER NOT NULL, '
                       'header_bytes INTEGER NOT NULL, body_bytes INTEGER NOT NULL, intervals TEXT NOT NULL, '
                       'reason TEXT NOT NULL, received_bytes INTEGER NOT NULL DEFAULT 0, tls_version TEXT, '
                       'tls INTEGER GENERATED ALWAYS AS (tls_version IS NOT NULL) VIRTUAL, client_class TEXT)')
            db.execute('INSERT INTO requests_8 SELECT id, node, worker_id, connection_id, request_id, module, '
                       'start_us, end_us, client_ip, client_port, forwarded_ip, method, path, target, protocol, '
                       'user_agent, referer, range, etag, file_size, status, header_bytes, body_bytes, intervals, '
                       'reason, received_bytes, tls_version, client_class FROM requests')
            db.execute('DROP VIEW requests')
            db.execute('DROP TABLE request_blocks')
            db.execute('ALTER TABLE requests_8 RENAME TO requests')
            db.execute('CREATE INDEX requests_by_time ON requests (start_us)')
            db.execute('ALTER TABLE requests DROP COLUMN client_class')
            db.execute('ALTER TABLE downloads DROP COLUMN client_class')
            db.execute('ALTER TABLE downloads DROP COLUMN node')
            db.execute('ALTER TABLE requests DROP COLUMN tls')
            db.execute('ALTER TABLE requests DROP COLUMN tls_version')
            db.execute('ALTER TABLE requests DROP COLUMN received_bytes')
            db.execute('DROP TABLE log_positions')
            db.execute('DROP TABLE daily')
            db.execute('CREATE INDEX downloads_by_path ON downloads (path)')
            db.execute('CREATE INDEX downloads_by_country ON downloads (country)')
            db.execute('PRAGMA user_version = 2')
        db.close()
        self.assertNotIn('received_bytes', [row[1] for row in self.query('PRAGMA table_info(requests)')])

        self.server.start()
        request = harness.request_bytes('GET', '/small.bin', {'User-Agent': 'after', 'X-Padding': 'p' * 100})
        self.assertEqual(harness.raw_request(self.server.port, request).status, 200)
        self.assertEqual(self.server.terminate(), 0, self.server.log_tail())
        self.assertEqual(self.query('PRAGMA user_version')[0][0], 9)
        self.assertEqual(self.query("SELECT name FROM sqlite_schema WHERE name LIKE 'downloads_by_%'"),
                         [('downloads_by_time',)])
        # The requests are in blocks now: the one from before in the first
        # (with its id), the new one in a block of its own.
        self.assertEqual(self.query("SELECT type FROM sqlite_schema WHERE name = 'requests'"), [('view',)])
        self.assertEqual(self.query('SELECT id, count FROM request_blocks ORDER BY id'), [(1, 1), (2, 1)])
        self.assertEqual(self.query("SELECT user_agent, id FROM requests WHERE user_agent IN ('before', 'after') "
                                    'ORDER BY id'), [('before', 1), ('after', 1025)])
        self.assertEqual(self.query("SELECT count(*) FROM downloads WHERE user_agent IN ('before', 'after')"), [(2,)])
        self.assertEqual(self.query('SELECT user_agent, received_bytes FROM requests WHERE user_agent IN (?, ?) '
                                    'ORDER BY start_us', 'before', 'after'),
                         [('before', 0), ('after', len(request))])
        self.assertEqual(self.query("SELECT typeof(received_bytes), typeof(tls_version) FROM requests "
                                    "WHERE user_agent = 'after'"), [('integer', 'null')])
        # Over plain TCP: no version, and the generated column says 0.
        self.assertEqual(self.query('SELECT user_agent, tls_version, tls FROM requests WHERE user_agent IN (?, ?) '
                                    'ORDER BY start_us', 'before', 'after'),
                         [('before', None, 0), ('after', None, 0)])
        # The row from before has no class (read as unknown); the new one has its agent's.
        for table, time in (('requests', 'start_us'), ('downloads', 'first_us')):
            self.assertEqual(self.query('SELECT user_agent, client_class FROM %s WHERE user_agent IN (?, ?) '
                                        'ORDER BY %s' % (table, time), 'before', 'after'),
                             [('before', None), ('after', 'unknown')])
        # The download from before has no node (shown empty); the new one has this host's.
        self.assertEqual(self.query("SELECT user_agent, node FROM downloads WHERE user_agent IN ('before', 'after') "
                                    'ORDER BY first_us'), [('before', None), ('after', socket.gethostname())])

    def test_unwritable_path_stops_the_start(self):
        text = harness.config_text(harness.free_port(), self.env.www).replace(
            'plugins: []', 'plugins:\n  - module: sqlite\n    path: /nonexistent/dir/stats.db\n')
        path = harness.write_file(self.env.path('bad.yaml'), text)
        r = harness.run([harness.BINARY, '-t', '-c', path], timeout=20)
        self.assertEqual(r.returncode, 1)
        self.assertIn('plugins[0].path: cannot open /nonexistent/dir/stats.db', r.stderr)


def mount_tmpfs(path, size):
    """Mounts a small tmpfs at path; the reason when this machine cannot (not root, no CAP_SYS_ADMIN)."""
    os.makedirs(path, exist_ok=True)
    r = harness.run(['mount', '-t', 'tmpfs', '-o', 'size=%s' % size, 'tmpfs', path], timeout=10)
    return None if r.returncode == 0 else 'cannot mount a tmpfs here: %s' % r.stderr.strip()


class UnwritableVolume(unittest.TestCase):
    """The database on its own small volume, made read-only and then full
    during traffic: the batches go to the spool and every download is stored
    once the volume can be written again."""

    def setUp(self):
        self.env = harness.TestEnv({'small.bin': 4096})
        self.volume = self.env.path('volume')
        reason = mount_tmpfs(self.volume, '8m')
        if reason:
            self.env.cleanup()
            self.skipTest(reason)
        self.db = os.path.join(self.volume, 'stats.db')
        port = harness.free_port()
        text = harness.config_text(port, self.env.www, workers=2,
                                   core_extra={'tracking': '{enabled: true, idle_window: 1s}'})
        text = text.replace('plugins: []', 'plugins:\n  - module: sqlite\n    path: %s\n' % self.db)
        self.server = harness.Server(self.env, port=port, config=text)
        self.server.start()

    def tearDown(self):
        self.server.kill()
        harness.run(['umount', '-l', self.volume], timeout=10)
        if os.environ.get('SMP_KEEP_TMP'):
            print('kept', self.env.dir)
        else:
            self.env.cleanup()

    def stored(self, prefix):
        db = sqlite3.connect('file:%s?mode=ro' % self.db, uri=True)  # closed: the volume may be remounted
        try:
            return sorted(row[0] for row in db.execute(
                'SELECT user_agent FROM downloads WHERE user_agent LIKE ?', (prefix + '%',)))
        finally:
            db.close()

    def outage(self, prefix, break_volume, mend_volume, restart=False):
        """One download stored, the volume broken, 20 more, the volume mended:
        all 21 stored once. With restart, the server is stopped around
        break_volume (a volume with files open for writing cannot be
        remounted read-only)."""
        port = self.server.port
        harness.http(port, 'GET', '/small.bin', {'User-Agent': prefix + 'before'})
        self.assertTrue(harness.wait_for(lambda: self.stored(prefix) == [prefix + 'before'], 10.0))
        outages = self.server.log().count('[sqlite] cannot ')
        if restart:
            self.assertEqual(self.server.terminate(), 0, self.server.log_tail())
        break_volume()
        try:
            if restart:
                self.server.start()
            for i in range(20):
                self.assertEqual(harness.http(port, 'GET', '/small.bin', {'User-Agent': '%s%02d' % (prefix, i)}).status,
                                 200)
            self.assertTrue(harness.wait_for(lambda: self.server.log().count('[sqlite] cannot ') > outages, 10.0),
                            self.server.log_tail())
            self.assertTrue(harness.wait_for(lambda: glob.glob(self.env.path('state', 'spool', 'sqlite', '*')), 5.0),
                            'nothing spooled')
        finally:
            mend_volume()
        self.assertTrue(harness.wait_for(lambda: len(self.stored(prefix)) == 21, 15.0), self.stored(prefix))
        self.assertEqual(self.server.terminate(), 0, self.server.log_tail())
        expected = sorted([prefix + 'before'] + ['%s%02d' % (prefix, i) for i in range(20)])
        self.assertEqual(self.stored(prefix), expected)  # every one, none twice
        self.assertEqual(self.server.log().count('[sqlite] cannot '), outages + 1, 'logged once per outage')
        self.assertNotIn('are lost', self.server.log())

    def test_read_only_then_writable(self):
        def remount(mode):
            r = harness.run(['mount', '-o', 'remount,' + mode, self.volume], timeout=10)
            self.assertEqual(r.returncode, 0, r.stderr)

        self.outage('ro-', lambda: remount('ro'), lambda: remount('rw'), restart=True)

    def test_full_then_freed(self):
        filler = os.path.join(self.volume, 'filler')

        def fill():
            # dd stops at ENOSPC: the volume is full afterwards.
            subprocess.run(['dd', 'if=/dev/zero', 'of=' + filler, 'bs=64k'], capture_output=True, timeout=30)

        self.outage('full-', fill, lambda: os.unlink(filler))


class OpenDownloads(SqliteStore):
    """A download is in the store while it is open, not only once it ended."""
    idle_window = '60s'

    def test_open_download_is_stored_then_finished(self):
        r = harness.http(self.server.port, 'GET', '/small.bin', {'User-Agent': 'open'})
        self.assertEqual(r.status, 200)
        query = "SELECT completed, finished, requests FROM downloads WHERE user_agent = 'open'"
        rows = harness.wait_for(lambda: self.query(query), 5.0)
        self.assertEqual(rows, [(1, 0, 1)])  # within a second or two, long before the 60 s window ends
        r = harness.http(self.server.port, 'GET', '/small.bin', {'User-Agent': 'open', 'Range': 'bytes=0-99'})
        self.assertEqual(r.status, 206)
        self.assertTrue(harness.wait_for(lambda: self.query(query) == [(1, 0, 2)], 5.0), self.query(query))
        self.assertEqual(self.server.terminate(), 0, self.server.log_tail())
        self.assertEqual(self.query(query), [(1, 1, 2)])  # the same row, now finished

    # The inherited tests run once, in SqliteStore.
    test_downloads_and_requests_are_stored = None
    test_store_locked_during_traffic_loses_nothing = None
    test_spool_survives_a_stop_and_is_replayed_once = None
    test_unwritable_path_stops_the_start = None


if __name__ == '__main__':
    unittest.main()
