"""IP addresses anonymised (issue 18, `privacy.anonymize_ip`): the worker
looks the whole address up in the geo-IP databases, then shortens it before
the record is logged, stored or handed to a plugin. The store holds only
shortened addresses but the place of the whole one, the access log and a
plugin see only shortened ones, no file the server writes holds a client's
whole address, and a download's requests still merge. `privacy.access_log:
false` keeps the whole address in the access log alone; a bad value is
refused by -t with its key and line."""

import glob
import os
import sqlite3
import subprocess
import time
import unittest

import harness
from harness import MIB

LOCATED = '203.0.113.77'  # in the test databases: FR, Paris, AS64500
LOCATED_SHORT = '203.0.0.0'  # 16 bits zeroed: in no network of the databases
V6 = '2001:db8:abcd:12:3456:789a:bcde:f012'
V6_SHORT = '2001:db8:abcd::'  # 80 bits zeroed


def make_databases(env):
    here = os.path.dirname(os.path.abspath(__file__))
    paths = {}
    for kind in ('city', 'asn'):
        paths[kind] = env.path('%s.mmdb' % kind)
        r = harness.run(['perl', os.path.join(here, 'make_mmdb.pl'), kind, paths[kind]], timeout=30)
        assert r.returncode == 0, r.stderr
    return paths


def private_server(env, db, counts, access_log=True):
    """A server with addresses shortened, its store at `db`, hook_counter
    writing to `counts`."""
    mmdb = make_databases(env)
    port = harness.free_port()
    privacy = '{anonymize_ip: {ipv4: 16, ipv6: 80}%s}' % ('' if access_log else ', access_log: false')
    access = env.path('access.log')
    text = harness.config_text(port, env.www, workers=2, access_log=access, core_extra={
        'tracking': '{enabled: true, idle_window: 1s}',
        'geoip': '{city_db: %s, asn_db: %s}' % (mmdb['city'], mmdb['asn']),
        'trusted_proxies': '[127.0.0.0/8]',
        'privacy': privacy})
    text = text.replace('plugins: []', 'plugins:\n  - module: sqlite\n    path: %s\n'
                        '  - module: hook_counter\n    output: %s\n' % (db, counts))
    server = harness.Server(env, port=port, config=text)
    server.access_log = access
    return server


def query(db, sql, *args):
    connection = sqlite3.connect(db)
    try:
        return connection.execute(sql, args).fetchall()
    finally:
        connection.close()


class Anonymised(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.env = harness.TestEnv({'a.bin': 2 * MIB, 'small.bin': 4096})
        cls.db = cls.env.path('stats.db')
        cls.counts = cls.env.path('counts')
        cls.server = private_server(cls.env, cls.db, cls.counts)
        cls.server.start()
        port = cls.server.port
        http = harness.http
        try:
            assert http(port, 'GET', '/small.bin', {'User-Agent': 'located', 'X-Forwarded-For': LOCATED}).status == 200
            assert http(port, 'GET', '/small.bin', {'User-Agent': 'v6', 'X-Forwarded-For': V6}).status == 200
            # One download in two requests, the second a resume: they still merge.
            assert http(port, 'GET', '/a.bin', {'User-Agent': 'resumer', 'Range': 'bytes=0-999999'}).status == 206
            time.sleep(0.2)
            assert http(port, 'GET', '/a.bin', {'User-Agent': 'resumer', 'Range': 'bytes=1000000-'}).status == 206
            cls.finished = harness.wait_for(lambda: len(query(cls.db, 'SELECT 1 FROM downloads WHERE finished = 1')) >= 3,
                                            15)
        finally:
            cls.stopped = cls.server.terminate()

    @classmethod
    def tearDownClass(cls):
        cls.server.kill()
        cls.env.cleanup()

    def test_stored_addresses_are_shortened_and_placed_from_the_whole_one(self):
        self.assertTrue(self.finished, self.server.log_tail())
        [(ip, country, city, asn, organisation)] = query(
            self.db, "SELECT client_ip, country, city, asn, organisation FROM downloads WHERE user_agent = 'located'")
        self.assertEqual(ip, LOCATED_SHORT)
        # A look-up of the shortened address finds nothing: the place is the whole address's.
        self.assertEqual((country, city, asn, organisation), ('FR', 'Paris', 64500, 'Example Transit'))
        [(peer, forwarded)] = query(self.db,
                                    "SELECT client_ip, forwarded_ip FROM requests WHERE user_agent = 'located'")
        self.assertEqual((peer, forwarded), ('127.0.0.0', LOCATED_SHORT))
        [(ip, forwarded)] = query(self.db, "SELECT d.client_ip, r.forwarded_ip FROM downloads d JOIN requests r "
                                  "ON r.user_agent = d.user_agent WHERE d.user_agent = 'v6'")
        self.assertEqual((ip, forwarded), (V6_SHORT, V6_SHORT))
        addresses = {row[0] for row in query(self.db, 'SELECT client_ip FROM requests UNION '
                                             'SELECT forwarded_ip FROM requests UNION SELECT client_ip FROM downloads')}
        self.assertEqual(addresses - {None}, {'127.0.0.0', LOCATED_SHORT, V6_SHORT})

    def test_requests_of_one_download_still_merge(self):
        self.assertTrue(self.finished, self.server.log_tail())
        rows = query(self.db, "SELECT client_ip, requests, resumes, completed FROM downloads "
                     "WHERE user_agent = 'resumer'")
        self.assertEqual(rows, [('127.0.0.0', 2, 1, 1)])

    def test_access_log_and_plugins_see_only_shortened_addresses(self):
        self.assertEqual(self.stopped, 0)
        lines = self.server.access_lines()
        self.assertEqual(len(lines), 4, lines)
        text = '\n'.join(lines)
        for whole in ('127.0.0.1', LOCATED, V6):
            self.assertNotIn(whole, text)
        self.assertEqual({line.split()[0] for line in lines}, {'127.0.0.0'})  # the log names the peer
        seen = set()
        for path in glob.glob(self.counts + '.*'):
            with open(path) as f:
                seen |= {line.split()[1] for line in f if line.startswith('address ')}
        self.assertEqual(seen, {'127.0.0.0', LOCATED_SHORT, V6_SHORT})

    def test_server_log_lines_name_the_shortened_peer(self):
        log = self.server.log()
        self.assertEqual(log.count('bytes to 127.0.0.0:'), 4, self.server.log_tail())  # "File downloaded ..."
        self.assertNotIn('to 127.0.0.1:', log)  # the listener's own "Binding on 127.0.0.1:PORT" stays

    def test_no_file_the_server_wrote_holds_a_whole_forwarded_address(self):
        self.assertEqual(self.stopped, 0)
        # The store, its spool and checkpoint, the record logs: all of state/.
        files = [self.db] + [p for p in glob.glob(os.path.join(self.env.dir, 'state', '**'), recursive=True)
                             if os.path.isfile(p)]
        self.assertGreater(len(files), 1)
        for path in files + [self.server.access_log]:
            with open(path, 'rb') as f:
                data = f.read()
            for whole in (LOCATED, V6):
                self.assertNotIn(whole.encode(), data, path)


class AccessLogKept(unittest.TestCase):
    """`privacy.access_log: false`: the access log keeps the whole address
    (for abuse reports), the store still gets the shortened one."""

    def test_whole_address_in_the_access_log_only(self):
        env = harness.TestEnv({'small.bin': 4096})
        db = env.path('stats.db')
        server = private_server(env, db, env.path('counts'), access_log=False)
        try:
            server.start()
            port = server.port
            self.assertEqual(harness.http(port, 'GET', '/small.bin', {'X-Forwarded-For': LOCATED}).status, 200)
            self.assertTrue(harness.wait_for(lambda: query(db, 'SELECT client_ip FROM downloads'), 15))
            self.assertEqual(server.terminate(), 0)
            self.assertEqual(query(db, 'SELECT client_ip FROM downloads'), [(LOCATED_SHORT,)])
            self.assertEqual([line.split()[0] for line in server.access_lines()], ['127.0.0.1'])
        finally:
            server.kill()
            env.cleanup()


class BadValues(unittest.TestCase):
    def test_config_check_names_the_key_and_line(self):
        env = harness.TestEnv({})
        try:
            for privacy, key in (('{anonymize_ip: {ipv4: 33}}', 'privacy.anonymize_ip.ipv4'),
                                 ('{anonymize_ip: {ipv6: -1}}', 'privacy.anonymize_ip.ipv6'),
                                 ('{anonymize_ip: 16}', 'privacy.anonymize_ip'),
                                 ('{anonymise_ip: {ipv4: 16}}', 'privacy.anonymise_ip')):
                text = harness.config_text(harness.free_port(), env.www, core_extra={'privacy': privacy})
                path = harness.write_file(env.path('bad.yaml'), text)
                line = text.splitlines().index('privacy: %s' % privacy) + 1
                r = subprocess.run([harness.BINARY, '-t', '-c', path], capture_output=True, text=True, timeout=20)
                self.assertNotEqual(r.returncode, 0, privacy)
                self.assertIn('bad.yaml:%d: %s' % (line, key), r.stdout + r.stderr)
        finally:
            env.cleanup()


if __name__ == '__main__':
    unittest.main()
