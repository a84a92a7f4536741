"""`smprotocol stats` over the sqlite store: the reports after real traffic,
the JSON checked field by field, the timeseries and CSV; the tls report after
plain and HTTPS traffic."""

import calendar
import csv
import io
import json
import socket
import subprocess
import time
import unittest

import harness
import tls_ca
from harness import MIB


def as_json(field, like):
    """A CSV field as the JSON value `like` is of the same cell: booleans are 0 or 1, no
    value an empty field."""
    if like is None:
        return None if field == '' else field
    if type(like) is bool:
        return {'0': False, '1': True}.get(field, field)
    return field if isinstance(like, str) else json.loads(field)


class Stats(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.env = harness.TestEnv({'a.bin': 2 * MIB, 'b.bin': 3 * MIB, 'big.bin': 20 * MIB})
        cls.db = cls.env.path('stats.db')
        port = harness.free_port()
        text = harness.config_text(port, cls.env.www, workers=2,
                                   core_extra={'tracking': '{enabled: true, idle_window: 1s}'})
        cls.config = cls.env.path('stats.yaml')
        harness.write_file(cls.config, text.replace('plugins: []',
                                                    'plugins:\n  - module: sqlite\n    path: %s\n' % cls.db))
        with open(cls.config) as f:
            cls.server = harness.Server(cls.env, port=port, config=f.read())
        cls.server.start()
        try:
            cls.traffic_began = time.time()
            harness.stats_traffic(port)
            cls.traffic_ended = time.time()
        finally:
            cls.stopped = cls.server.terminate()

    @classmethod
    def tearDownClass(cls):
        cls.server.kill()
        cls.env.cleanup()

    def stats(self, *args):
        r = subprocess.run([harness.BINARY, 'stats', '--config', self.config, *args], capture_output=True,
                           text=True, timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr)
        return r.stdout

    def rows(self, report, *args):
        answer = json.loads(self.stats('--json', *args, report))
        self.assertEqual(answer['report'], report)
        return answer['rows']

    def run_stats(self, *args):
        """The exit code, the stdout as bytes (CRLF kept) and the stderr."""
        r = subprocess.run([harness.BINARY, 'stats', '--config', self.config, *args], capture_output=True,
                           timeout=30)
        return r.returncode, r.stdout, r.stderr.decode()

    def test_server_stopped_cleanly(self):
        self.assertEqual(self.stopped, 0)

    def test_summary_json_field_by_field(self):
        [summary] = self.rows('summary')
        self.assertEqual(set(summary), {'downloads', 'completed', 'completion_rate', 'bytes', 'distinct_clients',
                                        'median_duration_s', 'p95_duration_s'})
        self.assertEqual(summary['downloads'], 5)  # four whole files and the halfway one
        self.assertEqual(summary['completed'], 4)
        self.assertAlmostEqual(summary['completion_rate'], 0.8, places=3)
        self.assertGreater(summary['bytes'], 2 * (2 + 3) * MIB)  # plus what the halfway client got
        self.assertEqual(summary['distinct_clients'], 1)  # all from 127.0.0.1
        self.assertIsInstance(summary['median_duration_s'], float)
        self.assertGreaterEqual(summary['p95_duration_s'], summary['median_duration_s'])

    def test_files_counts_are_exact(self):
        files = {row['path']: row for row in self.rows('files')}
        self.assertEqual(set(files), {'a.bin', 'b.bin', 'big.bin'})
        self.assertEqual((files['a.bin']['downloads'], files['a.bin']['completed']), (2, 2))
        self.assertEqual((files['b.bin']['downloads'], files['b.bin']['completed']), (2, 2))
        self.assertEqual(files['a.bin']['bytes'], 2 * 2 * MIB)
        self.assertEqual((files['big.bin']['downloads'], files['big.bin']['completed']), (1, 0))

    def test_downloads_per_client_and_the_resume(self):
        downloads = self.rows('downloads')
        self.assertEqual(set(downloads[0]), {'id', 'started', 'path', 'client_ip', 'user_agent', 'country', 'asn',
                                             'coverage', 'completed', 'requests', 'resumes', 'duration_s',
                                             'active_s', 'reason', 'finished', 'nodes'})
        # One node, named by the host: the node of every download.
        self.assertEqual({row['nodes'] for row in downloads}, {socket.gethostname()})
        # JSON booleans, not 0 and 1: the server stopped, so every one ended.
        self.assertEqual([row['finished'] for row in downloads], [True] * len(downloads))
        self.assertEqual(sorted(row['completed'] for row in downloads), [False] + [True] * 4)
        self.assertTrue(all(type(row[key]) is bool for row in downloads for key in ('completed', 'finished')))
        per_agent = {}
        for row in downloads:
            per_agent.setdefault(row['user_agent'], []).append(row)
        self.assertEqual(len(per_agent['agent-one']), 2)
        self.assertEqual(len(per_agent['agent-two']), 2)
        resumed = [row for row in per_agent['agent-one'] if row['path'] == 'a.bin'][0]
        self.assertEqual(resumed['requests'], 2)
        [halfway] = per_agent['halfway']
        self.assertEqual(halfway['reason'], 'client_closed')
        self.assertIs(halfway['completed'], False)
        self.assertGreater(halfway['coverage'], 0.45)
        self.assertLess(halfway['coverage'], 0.9)
        self.assertNotIn('other', per_agent)  # HEAD, 304, 404, 416 are not downloads

    def test_reasons_count_requests_that_are_not_downloads(self):
        reasons = {row['reason']: row for row in self.rows('reasons')}
        self.assertEqual(reasons['not_found']['requests'], 1)
        self.assertEqual(reasons['not_found']['downloads'], 0)
        self.assertEqual(reasons['not_modified']['requests'], 1)
        self.assertEqual(reasons['range_not_satisfiable']['requests'], 1)
        self.assertEqual(reasons['client_closed']['downloads'], 1)

    def test_filters(self):
        self.assertEqual(self.rows('summary', '--since', '2h')[0]['downloads'], 5)
        self.assertEqual(self.rows('summary', '--since', '2099-01-01')[0]['downloads'], 0)
        self.assertEqual(self.rows('summary', '--file', '/b.bin')[0]['downloads'], 2)

    def test_human_table(self):
        text = self.stats('files')
        self.assertTrue(text.startswith('path'), text)
        self.assertIn('a.bin', text)

    def test_timeseries_by_minute_hour_and_day(self):
        # What the traffic's downloads add up to: four whole files (agent-one's a.bin in two
        # requests, 100 bytes sent twice) and at least the 10 MiB the halfway client read of
        # big.bin, at most all of it.
        whole_files = (2 * MIB + 2 * MIB - 100) + 2 * MIB + 2 * 3 * MIB
        for bucket, width in (('minute', 60), ('hour', 3600), ('day', 86400)):
            with self.subTest(bucket=bucket):
                rows = self.rows('timeseries', '--bucket', bucket)
                self.assertEqual(set(rows[0]), {'time', 'downloads', 'completed', 'bytes'})
                starts = [calendar.timegm(time.strptime(row['time'], '%Y-%m-%dT%H:%M:%SZ')) for row in rows]
                self.assertEqual(starts, sorted(starts))
                self.assertEqual([start % width for start in starts], [0] * len(rows))
                self.assertGreaterEqual(starts[0], int(self.traffic_began) // width * width)
                self.assertLessEqual(starts[-1], self.traffic_ended)
                self.assertLessEqual(len(rows), 2)  # the traffic takes seconds: one bucket, two across a border
                self.assertEqual(sum(row['downloads'] for row in rows), 5)  # no HEAD, 304, 404 or 416
                self.assertEqual(sum(row['completed'] for row in rows), 4)
                total = sum(row['bytes'] for row in rows)
                self.assertGreaterEqual(total, whole_files + 10 * MIB)
                self.assertLessEqual(total, whole_files + 20 * MIB)
        self.assertEqual(self.rows('timeseries'), self.rows('timeseries', '--bucket', 'hour'))
        [b] = self.rows('timeseries', '--bucket', 'day', '--file', '/b.bin')
        self.assertEqual((b['downloads'], b['completed'], b['bytes']), (2, 2, 2 * 3 * MIB))
        self.assertEqual(self.rows('timeseries', '--since', '2099-01-01'), [])
        text = self.stats('timeseries', '--bucket', 'day').splitlines()
        self.assertEqual(text[0].split(), ['time', 'downloads', 'completed', 'bytes'])

    def test_in_progress_after_the_server_stopped(self):
        # Every download ended when the server stopped (test_mongodb.py lists one in progress).
        self.assertEqual(self.rows('in_progress'), [])
        code, out, _ = self.run_stats('--csv', 'in_progress')
        self.assertEqual((code, out), (0, b'id,started,path,client_ip,country,file_size,bytes,coverage,speed_bps,'
                                          b'requests,last_seen\r\n'))

    def test_csv_has_the_json_rows(self):
        for report, args in (('downloads', ()), ('files', ()), ('summary', ('--file', '/a.bin')),
                             ('timeseries', ('--bucket', 'minute'))):
            with self.subTest(report=report):
                code, out, err = self.run_stats('--csv', *args, report)
                self.assertEqual(code, 0, err)
                lines = out.split(b'\r\n')
                self.assertEqual(lines[-1], b'')  # every line ends with CRLF
                self.assertNotIn(b'\n', b''.join(lines))
                records = list(csv.reader(io.StringIO(out.decode(), newline='')))
                rows = self.rows(report, *args)
                self.assertEqual(records[0], list(rows[0]))
                self.assertEqual([dict(zip(records[0], map(as_json, fields, row.values())))
                                  for fields, row in zip(records[1:], rows)], rows)
                self.assertEqual(len(records), len(rows) + 1)
        # No value is an empty field: 127.0.0.1 has no country.
        code, out, _ = self.run_stats('--csv', 'countries')
        self.assertEqual(out, b'country,downloads,completed,bytes\r\n,5,4,%d\r\n'
                         % self.rows('countries')[0]['bytes'])

    def test_csv_and_bucket_usage_errors(self):
        for args, message in ((('--csv', '--json', 'files'), '--json and --csv: one or the other'),
                              (('--bucket', 'week', 'timeseries'), "--bucket: 'week' is not minute, hour or day"),
                              (('--bucket', 'day', 'files'), '--bucket: only the timeseries report has buckets')):
            with self.subTest(args=args):
                code, out, err = self.run_stats(*args)
                self.assertEqual((code, out), (2, b''))
                self.assertIn(message, err)
                self.assertIn('timeseries, in_progress', err)  # the usage names the reports

    def test_bad_report_and_time(self):
        r = subprocess.run([harness.BINARY, 'stats', '--config', self.config, 'bogus'], capture_output=True,
                           text=True, timeout=30)
        self.assertEqual(r.returncode, 1)
        self.assertIn("no report 'bogus'", r.stderr)
        r = subprocess.run([harness.BINARY, 'stats', '--config', self.config, '--since', 'soon', 'summary'],
                           capture_output=True, text=True, timeout=30)
        self.assertEqual(r.returncode, 2)
        self.assertIn("--since: 'soon' is not a time", r.stderr)


class TLSReport(unittest.TestCase):
    """The tls report: requests and body bytes per TLS version, plain HTTP as
    `plain`, against what the clients counted (harness.tls_stats_traffic)."""

    @classmethod
    def setUpClass(cls):
        cls.env = harness.TestEnv({'a.bin': 64 * 1024, 'b.bin': 100 * 1024})
        ca = tls_ca.make(cls.env.path('ca'))
        port, tls_port = harness.free_port(), harness.free_port()
        text = harness.config_text(port, cls.env.www, workers=2,
                                   core_extra={'tracking': '{enabled: true, idle_window: 1s}'})
        text = harness.with_tls_listener(text, tls_port, cls.env.www, ca.leaves['localhost'])
        cls.config = harness.write_file(cls.env.path('tls.yaml'), text)
        cls.server = harness.Server(cls.env, port=port, config=text)
        cls.server.start()
        try:
            assert harness.wait_for(lambda: harness.port_accepts(tls_port), 5), 'the TLS listener is not open'
            cls.expected = harness.tls_stats_traffic(port, tls_port, ca.ca_cert)
        finally:
            cls.stopped = cls.server.terminate()

    @classmethod
    def tearDownClass(cls):
        cls.server.kill()
        cls.env.cleanup()

    stats = Stats.stats
    rows = Stats.rows

    def test_server_stopped_cleanly(self):
        self.assertEqual(self.stopped, 0)

    def test_json_counts_requests_and_bytes_by_version(self):
        self.assertEqual(set(self.expected), {'plain', 'TLSv1.3', 'TLSv1.2'})
        plain, tls13, tls12 = self.expected['plain'], self.expected['TLSv1.3'], self.expected['TLSv1.2']
        self.assertEqual(self.rows('tls'), [
            {'tls_version': 'plain', 'requests': 3, 'percent': 50.0, 'bytes_sent': plain[1]},
            {'tls_version': 'TLSv1.3', 'requests': 2, 'percent': 33.3, 'bytes_sent': tls13[1]},
            {'tls_version': 'TLSv1.2', 'requests': 1, 'percent': 16.7, 'bytes_sent': tls12[1]},
        ])
        # The bodies: a.bin, nothing for the HEAD, the 404's page; a.bin and 100 bytes of it; b.bin.
        self.assertGreater(plain[1], 64 * 1024)
        self.assertEqual((tls13[1], tls12[1]), (64 * 1024 + 100, 100 * 1024))

    def test_text_table(self):
        lines = [line.split() for line in self.stats('tls').splitlines()]
        self.assertEqual(lines, [['tls_version', 'requests', 'percent', 'bytes_sent'],
                                 ['plain', '3', '50.0', str(self.expected['plain'][1])],
                                 ['TLSv1.3', '2', '33.3', str(self.expected['TLSv1.3'][1])],
                                 ['TLSv1.2', '1', '16.7', str(self.expected['TLSv1.2'][1])]])

    def test_filters(self):
        self.assertEqual(self.rows('tls', '--file', '/b.bin'),
                         [{'tls_version': 'TLSv1.2', 'requests': 1, 'percent': 100.0, 'bytes_sent': 100 * 1024}])
        self.assertEqual([(r['tls_version'], r['requests']) for r in self.rows('tls', '--file', '/a.bin')],
                         [('TLSv1.3', 2), ('plain', 2)])  # a tie: by name
        self.assertEqual(len(self.rows('tls', '--since', '2h')), 3)
        self.assertEqual(self.rows('tls', '--since', '2099-01-01'), [])
        self.assertEqual(self.rows('tls', '--until', '2020-01-01'), [])


if __name__ == '__main__':
    unittest.main()
