#!/usr/bin/python3
"""The mongodb store (plugins/mongodb), end to end: the real smprotocol binary, the
plugin's real libmongoc code, over TCP.

These tests run against the TEST DOUBLE tests/mongodb/mongo_double.py (a small
in-memory server that speaks MongoDB's wire protocol), NOT against a real MongoDB:
no MongoDB server can be installed on the build machines. Passing here shows that
the plugin writes the documented documents with the documented BSON types, uses
the right databases, survives the database being killed or absent, and answers
`smprotocol stats` with sqlite's numbers. It does not show that the plugin works
with a real MongoDB server (write concern majority, replica sets, ...).

When SMP_TEST_MONGODB_URI is set (e.g. mongodb://127.0.0.1:27017/?w=majority),
the class OnRealServer also runs the tests that only need what MongoDB itself
guarantees against that server, each in databases of its own that are dropped
afterwards; otherwise it is skipped, saying so.

Run with Debian's /usr/bin/python3 (it has pymongo 3.11 and bson):

    cd build && SMP_BINARY=$PWD/core/smprotocol /usr/bin/python3 ../tests/integration/test_mongodb.py -v
"""

import datetime
import glob
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
import unittest

try:
    import pymongo
    import pymongo.errors
    from bson.int64 import Int64
    from bson.objectid import ObjectId
except ImportError as e:  # the pyenv python3 first on some PATHs has no pymongo
    sys.exit('test_mongodb.py needs pymongo and bson (Debian python3-pymongo): run it with '
             '/usr/bin/python3 (%s)' % e)

import harness
import tls_ca
from harness import MIB

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
DOUBLE_SCRIPT = os.path.join(REPO, 'tests', 'mongodb', 'mongo_double.py')
PYTHON = '/usr/bin/python3'
REAL_URI = os.environ.get('SMP_TEST_MONGODB_URI')
EPOCH = datetime.datetime(1970, 1, 1)  # pymongo hands back naive UTC datetimes
OUTAGE = '[mongodb] cannot '
RECOVERED = '[mongodb] store writable again'
CANNOT_START = '[mongodb] cannot start the store'
REPORTS = ('summary', 'files', 'countries', 'reasons', 'downloads', 'tls', 'timeseries', 'in_progress', 'clients',
           'daily')

DOWNLOAD_FIELDS = {'_id', 'node', 'id', 'client_ip', 'user_agent', 'path', 'etag', 'file_size', 'distinct_bytes',
                   'bytes_sent', 'wasted_bytes', 'completed', 'finished', 'requests', 'resumes', 'first', 'last',
                   'first_us', 'last_us', 'active_us', 'duration_us', 'reason', 'delivered',
                   'client_class', 'key', 'seq', 'version', 'nodes', 'parts'}  # + 'geo' when known
# A download's part from one node (docs/scale.md): what the merged document is made of.
PART_FIELDS = {'node', 'id', 'requests', 'bytes_sent', 'file_size', 'first_us', 'last_us', 'finished', 'reason',
               'delivered', 'active'}
REQUEST_FIELDS = {'_id', 'node', 'module', 'worker_id', 'connection_id', 'request_id', 'start', 'end', 'start_us',
                  'end_us', 'client_ip', 'forwarded_ip', 'client_port', 'status', 'method', 'path', 'target',
                  'protocol', 'user_agent', 'referer', 'range', 'etag', 'file_size', 'header_bytes', 'body_bytes',
                  'received_bytes', 'intervals', 'reason', 'tls_version',
                  'client_class'}  # tls_version: over TLS only
REQUEST_ALWAYS = {'_id', 'node', 'module', 'worker_id', 'connection_id', 'request_id', 'start', 'end', 'start_us',
                  'end_us', 'client_ip', 'client_port', 'status', 'header_bytes', 'body_bytes', 'received_bytes',
                  'reason', 'client_class'}
GOOGLEBOT = ('Mozilla/5.0 AppleWebKit/537.36 (KHTML, like Gecko; compatible; Googlebot/2.1; '
             '+http://www.google.com/bot.html) Chrome/120.0.6099.129 Safari/537.36')
FIREFOX = 'Mozilla/5.0 (X11; Linux x86_64; rv:109.0) Gecko/20100101 Firefox/115.0'


def date_of_us(us):
    """The BSON date (milliseconds) of an instant in microseconds, as pymongo reads it."""
    return EPOCH + datetime.timedelta(milliseconds=us // 1000)


def now_us():
    return int(time.time() * 1e6)


def quiet_tail(log, lines=40):
    """The last lines of a server log without the one-line-per-request chatter."""
    kept = [l for l in log.splitlines() if 'File downloaded' not in l and 'Download finished' not in l]
    return '\n'.join(kept[-lines:])


# --------------------------------------------------------------------------
# the test double, as a program

class Double:
    """tests/mongodb/mongo_double.py as a subprocess: start() on a port (0: any free
    one), kill() with SIGKILL, start() again on the same port and data dir."""

    def __init__(self, env, port=0, data_dir=None, name='double', args=()):
        self.env, self.port, self.data_dir, self.args = env, port, data_dir, list(args)
        self.log_path = env.path('%s.log' % name)
        self.proc = None

    def start(self, timeout=15.0):
        cmd = [PYTHON, DOUBLE_SCRIPT, '--port', str(self.port)] + self.args
        if self.data_dir:
            cmd += ['--data-dir', self.data_dir]
        with open(self.log_path, 'ab') as err:
            self.proc = harness.spawn(cmd, stdout=subprocess.PIPE, stderr=err, start_new_session=True)
        deadline = time.monotonic() + timeout
        line = b''
        while not line.endswith(b'\n'):
            left = deadline - time.monotonic()
            if left <= 0 or self.proc.poll() is not None:
                self.kill()
                raise RuntimeError('mongo_double did not start (port %s): %r\n%s' % (self.port, line, self.log_tail()))
            ready, _, _ = select.select([self.proc.stdout], [], [], left)
            if ready:
                chunk = os.read(self.proc.stdout.fileno(), 4096)
                if not chunk:
                    continue
                line += chunk
        text = line.decode().strip()
        if not text.startswith('mongo_double listening on 127.0.0.1:'):
            self.kill()
            raise RuntimeError('unexpected first line from mongo_double: %r' % text)
        self.port = int(text.rsplit(':', 1)[1])
        return self

    def uri(self):
        return ('mongodb://127.0.0.1:%d/?appname=smprotocol&serverSelectionTimeoutMS=2000&connectTimeoutMS=1000'
                % self.port)

    def kill(self):
        """SIGKILL: no goodbye, acknowledged writes only survive in --data-dir."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self._reap()

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
        self._reap()

    def _reap(self):
        if self.proc is not None:
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
            if self.proc.stdout:
                self.proc.stdout.close()

    def log_tail(self, lines=20):
        try:
            with open(self.log_path, 'rb') as f:
                return '\n'.join(f.read().decode('utf-8', 'replace').splitlines()[-lines:])
        except OSError:
            return ''


def mongo_entry(uri, database, batch_size=500, flush_interval='1s', write_concern='majority'):
    return ('  - module: mongodb\n'
            '    uri: "%s"\n'
            '    database: %s\n'
            '    batch_size: %d\n'
            '    flush_interval: %s\n'
            '    write_concern: %s\n' % (uri, database, batch_size, flush_interval, write_concern))


def sqlite_entry(path):
    return '  - module: sqlite\n    path: %s\n' % path


def server_config(port, www, entries, core_extra=None):
    extra = {'tracking': '{enabled: true, idle_window: 1s}'}
    extra.update(core_extra or {})
    text = harness.config_text(port, www, workers=2, core_extra=extra)
    return text.replace('plugins: []', 'plugins:\n' + ''.join(entries))


def make_stats_traffic(port):
    """test_stats.py's traffic, plus a client located by geo-IP (behind the trusted
    proxy 127.0.0.1) for the countries report."""
    harness.stats_traffic(port, located_ip='203.0.113.9')


class Traffic(threading.Thread):
    """GET /small.bin again and again, each from a user agent of its own (so each is one
    download), until stop(); remembers the agents answered 200 and anything else."""

    def __init__(self, port, prefix, pause=0.02):
        super().__init__(daemon=True)
        self.port, self.prefix, self.pause = port, prefix, pause
        self.agents, self.problems = [], []
        self.halt = threading.Event()

    def run(self):
        i = 0
        while not self.halt.is_set():
            agent = '%s%05d' % (self.prefix, i)
            i += 1
            try:
                status = harness.http(self.port, 'GET', '/small.bin', {'User-Agent': agent}).status
            except Exception as e:  # noqa: BLE001 - reported by the test
                self.problems.append('%s: %r' % (agent, e))
                continue
            if status == 200:
                self.agents.append(agent)
            else:
                self.problems.append('%s: status %d' % (agent, status))
            self.halt.wait(self.pause)

    def stop(self):
        self.halt.set()
        self.join(15)
        return list(self.agents)


def make_geo_databases(env):
    """city.mmdb and asn.mmdb for 203.0.113.0/24 (FR, Paris, AS64500), as test_tracking.py does."""
    city, asn = env.path('city.mmdb'), env.path('asn.mmdb')
    for kind, out in (('city', city), ('asn', asn)):
        r = harness.run(['perl', os.path.join(HERE, 'make_mmdb.pl'), kind, out], timeout=30)
        if r.returncode != 0:
            raise AssertionError('make_mmdb.pl %s failed: %s' % (kind, r.stderr))
    return {'geoip': '{city_db: %s, asn_db: %s}' % (city, asn), 'trusted_proxies': '[127.0.0.0/8]'}


# --------------------------------------------------------------------------
# base

class MongoCase(harness.TailsOnFailure):
    """A temp dir, servers and doubles started by the test (all stopped after it), and a
    pymongo client per URI. Subclasses say where MongoDB is: uri() and db_name()."""

    files = {'big.bin': 20 * MIB, 'small.bin': 4096, 'a.bin': 2 * MIB, 'b.bin': 3 * MIB}

    def setUp(self):
        self.env = harness.TestEnv(self.files, prefix='smp-mongo-')
        self.servers, self.doubles, self.clients, self.databases = [], [], {}, []

    def tearDown(self):
        for server in self.servers:
            try:
                server.terminate(timeout=20)
            finally:
                server.kill()
        for double in self.doubles:
            double.stop()
        # Kept for run(), which prints them when the test failed (the temp dir is gone by then).
        self._tails = ([('server log tail (%s)' % s.log_path, quiet_tail(s.log())) for s in self.servers] +
                       [('mongo_double log tail (%s)' % d.log_path, d.log_tail()) for d in self.doubles])
        for (uri, name) in self.databases:
            try:
                self.client(uri).drop_database(name)
            except pymongo.errors.PyMongoError:
                pass
        for client in self.clients.values():
            client.close()
        if os.environ.get('SMP_KEEP_TMP'):
            sys.stderr.write('[test_mongodb] kept %s\n' % self.env.dir)
        else:
            self.env.cleanup()

    # where MongoDB is
    def uri(self):
        raise NotImplementedError

    def db_name(self, tag):
        return tag

    def client(self, uri=None):
        uri = uri or self.uri()
        if uri not in self.clients:
            self.clients[uri] = pymongo.MongoClient(uri, serverSelectionTimeoutMS=3000)
        return self.clients[uri]

    def db(self, name):
        return self.client()[name]

    # processes
    def start_double(self, port=0, data_dir=None, name='double'):
        double = Double(self.env, port=port, data_dir=data_dir, name=name)
        self.doubles.append(double)
        return double.start()

    def new_server(self, entries, core_extra=None, start=True):
        port = harness.free_port()
        server = harness.Server(self.env, port=port, config=server_config(port, self.env.www, entries, core_extra))
        self.servers.append(server)
        if start:
            server.start()
        return server

    def stopped(self, server):
        self.assertEqual(server.terminate(), 0, server.log_tail())

    # reading back
    def per_agent(self, database, collection, prefix):
        """{user_agent: number of documents} for the agents starting with prefix."""
        counts = {}
        for doc in self.db(database)[collection].find({'user_agent': {'$regex': '^' + prefix}},
                                                      {'user_agent': 1, '_id': 0}):
            counts[doc['user_agent']] = counts.get(doc['user_agent'], 0) + 1
        return counts

    def wait_agents(self, database, collection, prefix, agents, timeout):
        """Waits until every agent has a document; returns the counts last read."""
        want = set(agents)

        def read():
            try:
                counts = self.per_agent(database, collection, prefix)
            except pymongo.errors.PyMongoError:
                return None
            return counts if want <= set(counts) else None
        return harness.wait_for(read, timeout, interval=0.25) or self.per_agent(database, collection, prefix)

    def stats(self, config, report, *args):
        r = harness.run([harness.BINARY, 'stats', '--config', config, '--json', *args, report], timeout=60)
        self.assertEqual(r.returncode, 0, '%s %s: %s' % (report, args, r.stderr))
        answer = json.loads(r.stdout)
        self.assertEqual(answer['report'], report)
        return answer['rows']


# --------------------------------------------------------------------------
# the tests that hold against any MongoDB: run on the double, and on a real server when given

class StoreTests:
    """Mixed into a MongoCase."""

    def test_documents_and_bson_types(self):
        database = self.db_name('dl_docs')
        t0 = now_us()
        server = self.new_server([mongo_entry(self.uri(), database)])
        port = server.port
        out = self.env.path('aria')
        r = harness.run(['aria2c', '-q', '-x8', '-s8', '-k1M', '--user-agent=mongo-aria', '--allow-overwrite=true',
                         '--auto-file-renaming=false', '--file-allocation=none', '-d', out, '-o', 'big.bin',
                         server.url('/big.bin')], timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(harness.sha256_file(os.path.join(out, 'big.bin')),
                         harness.sha256_bytes(self.env.content['big.bin']))
        head_request = harness.request_bytes('HEAD', '/small.bin', {'User-Agent': 'mongo-head'})
        self.assertEqual(harness.raw_request(port, head_request).status, 200)
        self.assertEqual(harness.http(port, 'GET', '/nothing', {'User-Agent': 'mongo-404'}).status, 404)
        c = harness.curl(['-A', 'mongo-range', '-r', '100-199', '-o', self.env.path('range.out'),
                          '-w', '%{http_code}', server.url('/small.bin')])
        self.assertEqual(c.stdout, '206', c.stderr)
        self.stopped(server)
        t1 = now_us()
        db = self.db(database)
        size = 20 * MIB

        # ---- downloads: the aria2c one and the Range one; HEAD and 404 are not downloads
        self.assertEqual(sorted(d['user_agent'] for d in db.downloads.find()), ['mongo-aria', 'mongo-range'])
        [d] = list(db.downloads.find({'user_agent': 'mongo-aria'}))
        self.assertEqual(set(d), DOWNLOAD_FIELDS)  # no geo: 127.0.0.1 is in no geo database
        self.assertIs(type(d['_id']), ObjectId)
        self.assertEqual(d['node'], socket.gethostname())
        for field in ('id', 'file_size', 'distinct_bytes', 'bytes_sent', 'wasted_bytes', 'first_us', 'last_us',
                      'active_us', 'duration_us'):
            self.assertIs(type(d[field]), Int64, '%s is %s' % (field, type(d[field]).__name__))
        for field in ('requests', 'resumes'):
            self.assertIs(type(d[field]), int, '%s is %s, not Int32' % (field, type(d[field]).__name__))
        for field in ('completed', 'finished'):
            self.assertIs(type(d[field]), bool, '%s is %s' % (field, type(d[field]).__name__))
        for field in ('first', 'last'):
            self.assertIs(type(d[field]), datetime.datetime, field)
        for field in ('client_ip', 'user_agent', 'path', 'etag', 'reason'):
            self.assertIs(type(d[field]), str, field)
        self.assertEqual((d['path'], d['client_ip'], d['reason']), ('big.bin', '127.0.0.1', 'completed'))
        self.assertIs(d['completed'], True)
        self.assertIs(d['finished'], True)
        self.assertGreaterEqual(d['requests'], 8)
        self.assertEqual(d['file_size'], size)
        self.assertEqual(d['distinct_bytes'], size)
        self.assertGreaterEqual(d['bytes_sent'], size)
        self.assertEqual(d['wasted_bytes'], d['bytes_sent'] - d['distinct_bytes'])
        self.assertTrue(t0 <= d['first_us'] <= d['last_us'] <= t1, (t0, d['first_us'], d['last_us'], t1))
        self.assertEqual(d['duration_us'], d['last_us'] - d['first_us'])
        # The core counts active time as a union of inclusive [start_us, end_us] spans: up to 1 us over.
        self.assertTrue(0 < d['active_us'] <= d['duration_us'] + 1, (d['active_us'], d['duration_us']))
        self.assertEqual(d['first'], date_of_us(d['first_us']))
        self.assertEqual(d['last'], date_of_us(d['last_us']))
        self.assertIs(type(d['delivered']), list)
        for interval in d['delivered']:
            self.assertIs(type(interval), list)
            self.assertEqual([type(v) for v in interval], [Int64, Int64], interval)
        self.assertEqual(d['delivered'], [[0, size - 1]])
        # One node served it: one part, the download's own numbers; active spans in order.
        self.assertEqual(d['nodes'], [socket.gethostname()])
        self.assertIs(type(d['key']), Int64)
        self.assertEqual((d['seq'], d['version']), (0, d['version']))
        [part] = d['parts']
        self.assertEqual(set(part), PART_FIELDS)
        self.assertEqual((part['node'], part['id'], part['requests'], part['bytes_sent'], part['delivered']),
                         (d['node'], d['id'], d['requests'], d['bytes_sent'], d['delivered']))
        self.assertEqual((part['first_us'], part['last_us'], part['finished']), (d['first_us'], d['last_us'], True))
        spans = part['active']
        self.assertTrue(spans and all(a[0] <= a[1] < b[0] for a, b in zip(spans, spans[1:] + [[1 << 62] * 2])), spans)
        self.assertEqual(sum(e - s for s, e in spans), d['active_us'])
        self.assertEqual(len(spans) - 1, d['resumes'])

        [ranged] = list(db.downloads.find({'user_agent': 'mongo-range'}))
        self.assertEqual((ranged['path'], ranged['file_size'], ranged['distinct_bytes'], ranged['requests']),
                         ('small.bin', 4096, 100, 1))
        self.assertIs(ranged['completed'], False)
        self.assertEqual(ranged['reason'], 'incomplete')
        self.assertEqual(ranged['delivered'], [[100, 199]])
        self.assertNotEqual(ranged['id'], d['id'])

        # ---- requests: every one, downloads or not
        requests = list(db.requests.find())
        by_agent = {}
        for doc in requests:
            by_agent.setdefault(doc.get('user_agent'), []).append(doc)
        self.assertEqual({agent: len(docs) for agent, docs in by_agent.items()},
                         {'mongo-aria': d['requests'], 'mongo-head': 1, 'mongo-404': 1, 'mongo-range': 1})
        for doc in requests:
            self.assertLessEqual(set(doc), REQUEST_FIELDS, doc)
            self.assertLessEqual(REQUEST_ALWAYS, set(doc), doc)
            # The request's own identity, the same fields as in the document.
            key = doc['_id']
            self.assertIs(type(key), dict, key)
            self.assertEqual(set(key), {'node', 'worker', 'connection', 'request', 'start_us'}, key)
            self.assertEqual([type(key[f]) for f in ('node', 'worker', 'connection', 'request', 'start_us')],
                             [str, int, Int64, Int64, Int64], key)
            self.assertEqual((key['node'], key['worker'], key['connection'], key['request'], key['start_us']),
                             (doc['node'], doc['worker_id'], doc['connection_id'], doc['request_id'], doc['start_us']))
            for field in ('start', 'end'):
                self.assertIs(type(doc[field]), datetime.datetime, field)
            for field in ('start_us', 'end_us', 'connection_id', 'request_id', 'header_bytes', 'body_bytes',
                          'received_bytes'):
                self.assertIs(type(doc[field]), Int64, '%s is %s' % (field, type(doc[field]).__name__))
            for field in ('status', 'worker_id', 'client_port'):
                self.assertIs(type(doc[field]), int, '%s is %s, not Int32' % (field, type(doc[field]).__name__))
            self.assertNotIn('tls_version', doc)  # plain TCP
            self.assertEqual(doc['start'], date_of_us(doc['start_us']))
            self.assertEqual(doc['end'], date_of_us(doc['end_us']))
            self.assertTrue(t0 <= doc['start_us'] <= doc['end_us'] <= t1)
            self.assertEqual((doc['node'], doc['module'], doc['client_ip']),
                             (socket.gethostname(), 'http_download', '127.0.0.1'))
            self.assertEqual(doc['protocol'], 'HTTP/1.1')
            self.assertNotIn('forwarded_ip', doc)  # no trusted proxy here
            self.assertNotIn('referer', doc)  # no client sent one
            for interval in doc.get('intervals', []):
                self.assertEqual([type(v) for v in interval], [Int64, Int64], interval)
            if 'file_size' in doc:
                self.assertIs(type(doc['file_size']), Int64)

        aria = by_agent['mongo-aria']
        self.assertLessEqual({doc['status'] for doc in aria}, {200, 206})
        self.assertEqual({(doc['method'], doc['path'], doc['file_size']) for doc in aria}, {('GET', 'big.bin', size)})
        self.assertIn('completed', {doc['reason'] for doc in aria})
        self.assertLessEqual({doc['reason'] for doc in aria}, {'completed', 'client_closed'})
        self.assertEqual({doc['etag'] for doc in aria}, {d['etag']})
        self.assertEqual(sum(last - first + 1 for doc in aria for first, last in doc['intervals']), d['bytes_sent'])

        [head] = by_agent['mongo-head']
        self.assertEqual((head['method'], head['status'], head['body_bytes'], head['file_size']), ('HEAD', 200, 0, 4096))
        self.assertEqual(head['received_bytes'], len(head_request))  # the request head, as sent
        self.assertEqual(head.get('intervals', []), [])

        [missing] = by_agent['mongo-404']
        self.assertEqual((missing['status'], missing['reason'], missing['target']), (404, 'not_found', '/nothing'))
        self.assertNotIn('file_size', missing)
        self.assertNotIn('etag', missing)

        [rng] = by_agent['mongo-range']
        self.assertEqual((rng['status'], rng['range'], rng['intervals'], rng['body_bytes'], rng['file_size']),
                         (206, 'bytes=100-199', [[100, 199]], 100, 4096))
        self.assertNotIn('range', head)

        # ---- indexes, as documented
        def keys(collection):
            return {tuple((field, int(order)) for field, order in info['key']): info.get('unique', False)
                    for info in collection.index_information().values()}
        dl = keys(db.downloads)
        # One document a download across nodes: unique by merge key and sequence
        # (docs/scale.md); {node, id} of one node's download is no longer unique.
        self.assertIs(dl.get((('key', 1), ('seq', 1))), True, dl)
        self.assertNotIn((('node', 1), ('id', 1)), dl)
        for key in ((('first_us', 1),), (('path', 1), ('first_us', 1)), (('geo.country', 1),)):
            self.assertIn(key, dl)
        rq = keys(db.requests)
        for key in ((('start_us', 1),), (('reason', 1), ('start_us', 1))):
            self.assertIn(key, rq)
        self.assertIs(keys(db.daily).get((('day', 1), ('path', 1), ('client_class', 1))), True)

    def test_two_databases(self):
        dl_a, dl_b = self.db_name('dl_a'), self.db_name('dl_b')
        # One server, both databases listed: both get every batch.
        server = self.new_server([mongo_entry(self.uri(), dl_a), mongo_entry(self.uri(), dl_b)])
        agents = ['both-%d' % i for i in range(6)]
        for agent in agents:
            self.assertEqual(harness.http(server.port, 'GET', '/small.bin', {'User-Agent': agent}).status, 200)
        self.assertEqual(harness.http(server.port, 'GET', '/gone', {'User-Agent': 'both-404'}).status, 404)
        self.stopped(server)
        docs = {}
        for name in (dl_a, dl_b):
            self.assertEqual(self.per_agent(name, 'downloads', 'both-'), {a: 1 for a in agents}, name)
            self.assertEqual(self.per_agent(name, 'requests', 'both-'), dict({a: 1 for a in agents}, **{'both-404': 1}))
            docs[name] = sorted((d['id'], d['user_agent'], d['distinct_bytes'], d['first_us'], d['last_us'])
                                for d in self.db(name).downloads.find())
        self.assertEqual(docs[dl_a], docs[dl_b])  # the same downloads, same ids
        # A server listing only dl_b: its downloads are in dl_b, and nothing of them in dl_a.
        server = self.new_server([mongo_entry(self.uri(), dl_b)])
        only = ['only-b-%d' % i for i in range(4)]
        for agent in only:
            self.assertEqual(harness.http(server.port, 'GET', '/small.bin', {'User-Agent': agent}).status, 200)
        self.stopped(server)
        self.assertEqual(self.per_agent(dl_b, 'downloads', 'only-b-'), {a: 1 for a in only})
        self.assertEqual(self.per_agent(dl_a, 'downloads', 'only-b-'), {})
        self.assertEqual(self.per_agent(dl_a, 'requests', 'only-b-'), {})
        self.assertEqual(self.db(dl_a).downloads.count_documents({}), len(agents))
        self.assertEqual(self.db(dl_a).requests.count_documents({}), len(agents) + 1)
        self.assertEqual(self.db(dl_b).requests.count_documents({}), len(agents) + 1 + len(only))

    def test_geo(self):
        database = self.db_name('dl_geo')
        server = self.new_server([mongo_entry(self.uri(), database)], core_extra=make_geo_databases(self.env))
        self.assertEqual(harness.http(server.port, 'GET', '/small.bin',
                                      {'User-Agent': 'geo-paris', 'X-Forwarded-For': '203.0.113.9'}).status, 200)
        self.assertEqual(harness.http(server.port, 'GET', '/small.bin', {'User-Agent': 'geo-none'}).status, 200)
        self.stopped(server)
        db = self.db(database)
        [located] = list(db.downloads.find({'user_agent': 'geo-paris'}))
        self.assertEqual(located['client_ip'], '203.0.113.9')
        geo = located['geo']
        self.assertEqual(set(geo), {'country', 'city', 'location', 'asn', 'organisation'})
        self.assertEqual((geo['country'], geo['city'], geo['organisation']), ('FR', 'Paris', 'Example Transit'))
        self.assertIs(type(geo['asn']), Int64)
        self.assertEqual(geo['asn'], 64500)
        self.assertEqual(set(geo['location']), {'type', 'coordinates'})
        self.assertEqual(geo['location']['type'], 'Point')
        lon, lat = geo['location']['coordinates']  # GeoJSON: longitude first
        self.assertAlmostEqual(lon, 2.3522, places=4)
        self.assertAlmostEqual(lat, 48.8566, places=4)
        self.assertEqual([type(v) for v in geo['location']['coordinates']], [float, float])
        [plain] = list(db.downloads.find({'user_agent': 'geo-none'}))
        self.assertNotIn('geo', plain)  # 127.0.0.1 is in no database: no geo at all
        [request] = list(db.requests.find({'user_agent': 'geo-paris'}))
        self.assertEqual((request['client_ip'], request['forwarded_ip']), ('127.0.0.1', '203.0.113.9'))
        [request] = list(db.requests.find({'user_agent': 'geo-none'}))
        self.assertNotIn('forwarded_ip', request)
        self.assertEqual(db.downloads.count_documents({'geo.country': 'FR'}), 1)

    def test_same_numbers_as_sqlite(self):
        database = self.db_name('dl_same')
        sqlite_db = self.env.path('same.db')
        geo = make_geo_databases(self.env)
        server = self.new_server([sqlite_entry(sqlite_db), mongo_entry(self.uri(), database)], core_extra=geo)
        make_stats_traffic(server.port)
        self.stopped(server)
        configs = {}
        for store, entry in (('sqlite', sqlite_entry(sqlite_db)), ('mongodb', mongo_entry(self.uri(), database))):
            configs[store] = harness.write_file(self.env.path('stats-%s.yaml' % store),
                                                server_config(harness.free_port(), self.env.www, [entry], geo))
        filters = ((), ('--file', '/a.bin'), ('--since', '2h'), ('--since', '2099-01-01'))
        for report in REPORTS:
            for args in filters:
                with self.subTest(report=report, filter=args):
                    sqlite_rows = self.stats(configs['sqlite'], report, *args)
                    mongo_rows = self.stats(configs['mongodb'], report, *args)
                    if report == 'downloads':
                        sqlite_rows, mongo_rows = [dict(r) for r in sqlite_rows], [dict(r) for r in mongo_rows]
                    self.assertEqual(mongo_rows, sqlite_rows, 'mongodb (first) vs sqlite (second)')
        for bucket in ('minute', 'day'):
            with self.subTest(report='timeseries', bucket=bucket):
                self.assertEqual(self.stats(configs['mongodb'], 'timeseries', '--bucket', bucket),
                                 self.stats(configs['sqlite'], 'timeseries', '--bucket', bucket))
        # Not equal by being empty: the sqlite side saw the traffic.
        self.assertEqual(sum(r['downloads'] for r in self.stats(configs['sqlite'], 'timeseries', '--bucket', 'day')),
                         6)
        downloads = self.stats(configs['sqlite'], 'downloads')
        self.assertEqual(len(downloads), 6, downloads)  # 4 whole files, the located one, the halfway one
        self.assertEqual({r['country'] for r in self.stats(configs['sqlite'], 'countries')}, {'FR', None})
        self.assertLessEqual({'not_found', 'not_modified', 'range_not_satisfiable', 'client_closed', 'completed'},
                             {r['reason'] for r in self.stats(configs['sqlite'], 'reasons')})

    def test_client_class_stored_and_reports_same_as_sqlite(self):
        database = self.db_name('dl_classes')
        sqlite_db = self.env.path('classes.db')
        server = self.new_server([sqlite_entry(sqlite_db), mongo_entry(self.uri(), database)])
        # Two bot downloads (one of them a 404 too), a browser's, two of curl's, one with no agent.
        for agent in (GOOGLEBOT, GOOGLEBOT.replace('Googlebot/2.1', 'bingbot/2.0'), FIREFOX, 'curl/7.88.1'):
            self.assertEqual(harness.http(server.port, 'GET', '/small.bin', {'User-Agent': agent}).status, 200)
        self.assertEqual(harness.http(server.port, 'GET', '/a.bin', {'User-Agent': 'curl/7.88.1'}).status, 200)
        self.assertEqual(harness.http(server.port, 'GET', '/small.bin').status, 200)
        self.assertEqual(harness.http(server.port, 'GET', '/gone', {'User-Agent': GOOGLEBOT}).status, 404)
        self.stopped(server)
        db = self.db(database)
        classes = {doc.get('user_agent'): doc['client_class'] for doc in db.downloads.find()}
        self.assertEqual(classes, {GOOGLEBOT: 'bot', GOOGLEBOT.replace('Googlebot/2.1', 'bingbot/2.0'): 'bot',
                                   FIREFOX: 'browser', 'curl/7.88.1': 'tool', '': 'unknown'})  # '': no agent
        self.assertEqual(sorted(doc['client_class'] for doc in db.requests.find({'path': 'gone'})), ['bot'])
        self.assertEqual(db.requests.count_documents({'client_class': 'bot'}), 3)
        configs = {}
        for store, entry in (('sqlite', sqlite_entry(sqlite_db)), ('mongodb', mongo_entry(self.uri(), database))):
            configs[store] = harness.write_file(self.env.path('classes-%s.yaml' % store),
                                                server_config(harness.free_port(), self.env.www, [entry]))
        for report in REPORTS:
            for args in ((), ('--include-bots',)):
                with self.subTest(report=report, args=args):
                    self.assertEqual(self.stats(configs['mongodb'], report, *args),
                                     self.stats(configs['sqlite'], report, *args), 'mongodb (first) vs sqlite')
        [people] = self.stats(configs['mongodb'], 'summary')
        [everyone] = self.stats(configs['mongodb'], 'summary', '--include-bots')
        self.assertEqual((people['downloads'], everyone['downloads']), (4, 6))
        reasons = {r['reason']: r['requests'] for r in self.stats(configs['mongodb'], 'reasons')}
        self.assertNotIn('not_found', reasons)  # the bot's 404
        clients = [(r['client_class'], r['rank'], r['user_agent'], r['downloads'], r['distinct_clients'])
                   for r in self.stats(configs['mongodb'], 'clients')]
        self.assertEqual(clients, [
            ('bot', 0, None, 2, 1),
            ('bot', 1, GOOGLEBOT, 1, 1),  # ties by agent: 'G' before 'b'
            ('bot', 2, GOOGLEBOT.replace('Googlebot/2.1', 'bingbot/2.0'), 1, 1),
            ('tool', 0, None, 2, 1),
            ('tool', 1, 'curl/7.88.1', 2, 1),
            ('browser', 0, None, 1, 1),
            ('browser', 1, FIREFOX, 1, 1),
            ('unknown', 0, None, 1, 1),
            ('unknown', 1, '', 1, 1),
        ])

    def test_in_progress_same_as_sqlite(self):
        # While the server runs: the download the halfway client left is open (the idle
        # window is 120 s) and in both stores' in_progress; the whole ones are not.
        database = self.db_name('dl_open')
        sqlite_db = self.env.path('open.db')
        server = self.new_server([sqlite_entry(sqlite_db), mongo_entry(self.uri(), database)],
                                 core_extra={'tracking': '{enabled: true, idle_window: 120s}'})
        harness.stats_traffic(server.port)
        configs = {}
        for store, entry in (('sqlite', sqlite_entry(sqlite_db)), ('mongodb', mongo_entry(self.uri(), database))):
            configs[store] = harness.write_file(self.env.path('open-%s.yaml' % store),
                                                server_config(harness.free_port(), self.env.www, [entry]))

        def both(*args):
            """The rows of in_progress when both stores give the same ones, and they are the
            halfway client's only. (Until the collector has every record, a download may be
            open for a tick: a.bin's resume read before its whole request, from the other
            worker's log, was once the one row both stores agreed on.)"""
            mongo_rows, sqlite_rows = [self.stats(configs[store], 'in_progress', *args)
                                       for store in ('mongodb', 'sqlite')]
            settled = [row['path'] for row in mongo_rows] == ['big.bin']
            return mongo_rows if settled and mongo_rows == sqlite_rows else None
        self.assertTrue(harness.wait_for(both, 15.0, interval=0.5), both() or 'never equal: %s' % [
            self.stats(configs[store], 'in_progress') for store in ('mongodb', 'sqlite')])
        [row] = both()
        self.assertEqual(set(row), {'id', 'started', 'path', 'client_ip', 'country', 'file_size', 'bytes',
                                    'coverage', 'speed_bps', 'requests', 'last_seen'})
        self.assertEqual((row['path'], row['client_ip'], row['country'], row['file_size'], row['requests']),
                         ('big.bin', '127.0.0.1', None, 20 * MIB, 1))
        self.assertGreaterEqual(row['bytes'], 10 * MIB)
        self.assertAlmostEqual(row['coverage'], row['bytes'] / (20 * MIB), places=4)
        self.assertGreater(row['speed_bps'], 0)
        self.assertLessEqual(row['started'], row['last_seen'])
        self.assertEqual(self.stats(configs['mongodb'], 'in_progress', '--file', '/a.bin'), [])
        self.assertEqual(self.stats(configs['mongodb'], 'in_progress', '--since', '2099-01-01'), [])
        self.assertEqual(both('--file', '/big.bin'), [row])
        # The other reports, and timeseries, while downloads are open. The mongodb
        # store writes at most once a second (flush_interval): it may be a batch behind.
        for report in REPORTS:
            with self.subTest(report=report):
                harness.wait_for(lambda: self.stats(configs['mongodb'], report) == self.stats(configs['sqlite'], report),
                                 5.0, interval=0.5)
                self.assertEqual(self.stats(configs['mongodb'], report), self.stats(configs['sqlite'], report))
        self.stopped(server)
        # Ended when the server stopped.
        self.assertEqual(self.stats(configs['mongodb'], 'in_progress'), [])

    def test_tls_report_same_as_sqlite(self):
        database = self.db_name('dl_tls')
        sqlite_db = self.env.path('tls.db')
        ca = tls_ca.make(self.env.path('ca'))
        port, tls_port = harness.free_port(), harness.free_port()
        text = server_config(port, self.env.www, [sqlite_entry(sqlite_db), mongo_entry(self.uri(), database)])
        server = harness.Server(self.env, port=port,
                                config=harness.with_tls_listener(text, tls_port, self.env.www, ca.leaves['localhost']))
        self.servers.append(server)
        server.start()
        self.assertTrue(harness.wait_for(lambda: harness.port_accepts(tls_port), 5), 'the TLS listener is not open')
        expected = harness.tls_stats_traffic(port, tls_port, ca.ca_cert)
        self.stopped(server)
        configs = {}
        for store, entry in (('sqlite', sqlite_entry(sqlite_db)), ('mongodb', mongo_entry(self.uri(), database))):
            configs[store] = harness.write_file(self.env.path('tls-%s.yaml' % store),
                                                server_config(harness.free_port(), self.env.www, [entry]))
        for args in ((), ('--file', '/a.bin'), ('--since', '2h'), ('--since', '2099-01-01')):
            with self.subTest(filter=args):
                self.assertEqual(self.stats(configs['mongodb'], 'tls', *args),
                                 self.stats(configs['sqlite'], 'tls', *args), 'mongodb (first) vs sqlite (second)')
        # Not equal by being empty: what the clients counted.
        self.assertEqual(self.stats(configs['mongodb'], 'tls'), [
            {'tls_version': 'plain', 'requests': 3, 'percent': 50.0, 'bytes_sent': expected['plain'][1]},
            {'tls_version': 'TLSv1.3', 'requests': 2, 'percent': 33.3, 'bytes_sent': expected['TLSv1.3'][1]},
            {'tls_version': 'TLSv1.2', 'requests': 1, 'percent': 16.7, 'bytes_sent': expected['TLSv1.2'][1]},
        ])
        self.assertEqual(self.stats(configs['mongodb'], 'tls', '--file', '/b.bin'),
                         [{'tls_version': 'TLSv1.2', 'requests': 1, 'percent': 100.0,
                           'bytes_sent': len(self.env.content['b.bin'])}])


# --------------------------------------------------------------------------
# on the double

DAY_US = 86_400_000_000


class RetentionTests:
    """tracking.retention and the per-day totals in the mongodb store."""

    def test_daily_counts_once_and_outlives_the_purge(self):
        database = self.db_name('dl_retention')
        entry = mongo_entry(self.uri(), database)
        server = self.new_server([entry])
        for agent in ('old-1', 'old-2'):
            self.assertEqual(harness.http(server.port, 'GET', '/a.bin', {'User-Agent': agent}).status, 200)
        self.assertEqual(harness.http(server.port, 'GET', '/small.bin', {'User-Agent': 'recent'}).status, 200)
        self.stopped(server)
        db = self.db(database)
        self.assertEqual(db.downloads.count_documents({'finished': True}), 3)
        # Storing downloads never writes the per-day totals: only a purge does.
        self.assertEqual(db.daily.count_documents({}), 0)
        # The 'old-' rows move 800 days back.
        back = 800 * DAY_US
        for collection, first, last in ((db.requests, 'start_us', 'end_us'), (db.downloads, 'first_us', 'last_us')):
            for doc in collection.find({'user_agent': {'$regex': '^old-'}}):
                collection.update_one({'_id': doc['_id']},
                                      {'$set': {first: Int64(doc[first] - back), last: Int64(doc[last] - back)}})
        old_day = time.strftime('%Y-%m-%d', time.gmtime(db.downloads.find_one({'user_agent': 'old-1'})['first_us']
                                                        // 1_000_000))
        old_requests = db.requests.count_documents({'user_agent': {'$regex': '^old-'}})
        self.assertGreaterEqual(old_requests, 2)
        config = harness.write_file(self.env.path('stats-retention.yaml'),
                                    server_config(harness.free_port(), self.env.www, [entry]))
        # Each download counted once, from its row, though stored open and then finished.
        daily_before = self.stats(config, 'daily')
        self.assertEqual(daily_before[0], {'day': old_day, 'path': 'a.bin', 'downloads': 2, 'completed': 2,
                                           'bytes': 4 * MIB})
        self.assertEqual([(r['path'], r['downloads']) for r in daily_before], [('a.bin', 2), ('small.bin', 1)])
        days_before = self.stats(config, 'timeseries', '--bucket', 'day')
        self.assertEqual([(r['time'][:10], r['downloads']) for r in days_before][0], (old_day, 2))

        server = self.new_server([entry], core_extra={'tracking': '{enabled: true, idle_window: 1s, retention: 760d}'})
        harness.wait_for(lambda: 'retention: purged' in server.log(), 20.0)
        self.assertIn('[mongodb] retention: purged %d row(s)' % (old_requests + 2), server.log())
        self.stopped(server)
        self.assertEqual(db.requests.count_documents({'user_agent': {'$regex': '^old-'}}), 0)
        self.assertEqual([d['user_agent'] for d in db.downloads.find()], ['recent'])
        # The purged downloads moved into the totals, and only they.
        self.assertEqual([(d['day'], d['path'], d['client_class'], d['downloads'], d['completed'], d['bytes'])
                          for d in db.daily.find()], [(old_day, 'a.bin', 'unknown', 2, 2, 4 * MIB)])
        # The reports are the same: the old day is still there after its rows are gone.
        self.assertEqual(self.stats(config, 'daily'), daily_before)
        self.assertEqual(self.stats(config, 'timeseries', '--bucket', 'day'), days_before)


class OnDouble(RetentionTests, StoreTests, MongoCase):
    """Against tests/mongodb/mongo_double.py (not MongoDB): the store tests, and
    what only a double allows: killing it, starting without it."""

    def setUp(self):
        super().setUp()
        self.double = None
        if not self._testMethodName.startswith('test_down_at_start'):
            self.double = self.start_double(data_dir=self.env.path('double-data'))

    def uri(self):
        return self.double.uri()

    def test_killed_mid_traffic_loses_nothing_and_stores_once(self):
        database = self.db_name('dl_kill')
        server = self.new_server([mongo_entry(self.uri(), database)])
        traffic = Traffic(server.port, 'kill-')
        traffic.start()
        try:
            # Writes flow before the first kill.
            self.assertTrue(harness.wait_for(lambda: len(traffic.agents) >= 10, 10.0))
            counts = self.wait_agents(database, 'downloads', 'kill-', traffic.agents[:5], 10.0)
            self.assertLessEqual(set(traffic.agents[:5]), set(counts), server.log_tail())
            during = []
            for outage in (1, 2):
                self.double.kill()
                killed_at = len(traffic.agents)
                self.assertTrue(harness.wait_for(lambda: server.log().count(OUTAGE) >= outage, 10.0),
                                'no "%s" line after kill %d:\n%s' % (OUTAGE, outage, server.log_tail()))
                time.sleep(3)  # a few seconds down, traffic going on
                during.append(len(traffic.agents) - killed_at)
                self.double.start()  # the same port, the same data dir
                self.assertTrue(harness.wait_for(lambda: server.log().count(RECOVERED) >= outage, 20.0),
                                'no "%s" line after restart %d:\n%s' % (RECOVERED, outage, server.log_tail()))
                time.sleep(1.5)  # traffic stored directly again
        finally:
            agents = traffic.stop()
        self.assertEqual(traffic.problems, [])
        self.assertTrue(all(n > 0 for n in during), 'no traffic while the double was down: %s' % during)
        counts = self.wait_agents(database, 'downloads', 'kill-', agents, 15.0)
        self.assertEqual(set(counts), set(agents))
        self.stopped(server)
        expected = {agent: 1 for agent in agents}
        self.assertEqual(self.per_agent(database, 'downloads', 'kill-'), expected)  # every one, once
        self.assertEqual(self.per_agent(database, 'requests', 'kill-'), expected)
        self.assertEqual(self.db(database).downloads.count_documents({'finished': True}), len(agents))
        log = server.log()
        self.assertEqual(log.count(OUTAGE), 2, 'once per outage:\n' + log)
        self.assertEqual(log.count(RECOVERED), 2, log)
        self.assertNotIn('are lost', log)

    def send_agents(self, port, prefix, count):
        agents = ['%s%03d' % (prefix, i) for i in range(count)]
        for agent in agents:
            self.assertEqual(harness.http(port, 'GET', '/small.bin', {'User-Agent': agent}).status, 200)
        return agents

    def assert_stored(self, database, server, prefix, agents):
        counts = self.wait_agents(database, 'requests', prefix, agents, 15.0)
        self.assertEqual(set(counts), set(agents), 'not stored after %s:\n%s' % (prefix, server.log_tail()))

    def reload(self, server, config, wait_for_line):
        harness.write_file(server.config_path, config)
        os.kill(server.pid, signal.SIGHUP)
        self.assertTrue(harness.wait_for(lambda: wait_for_line in server.log(), 20.0),
                        'no "%s" after the reload:\n%s' % (wait_for_line, server.log_tail()))

    def test_reload_that_changes_the_store_still_stores(self):
        # A reload that changes the store entry starts a new collector. The
        # retired configuration used to tear libmongoc down (mongoc_cleanup) in
        # the master, and the new collector then spooled every batch for ever.
        database = self.db_name('dl_reload')
        server = self.new_server([mongo_entry(self.uri(), database)])
        self.assert_stored(database, server, 'first-', self.send_agents(server.port, 'first-', 5))
        self.reload(server, server_config(server.port, self.env.www, [mongo_entry(self.uri(), database, 100)]),
                    'Reload complete')
        self.assertTrue(harness.wait_for(lambda: "starting the new configuration's" in server.log(), 10.0),
                        server.log_tail())
        self.assert_stored(database, server, 'second-', self.send_agents(server.port, 'second-', 5))
        self.stopped(server)
        self.assertNotIn(OUTAGE, server.log())

    def test_kept_collector_killed_after_a_reload_its_successor_stores(self):
        database = self.db_name('dl_respawn')
        entries = [mongo_entry(self.uri(), database)]
        server = self.new_server(entries)
        self.assert_stored(database, server, 'first-', self.send_agents(server.port, 'first-', 5))
        # Nothing the collector depends on changes: it is kept, and the old
        # configuration retires (its modules' exit_master runs in the master).
        config = server_config(server.port, self.env.www, entries)
        self.assertIn('max_connections: 1024', config)
        self.reload(server, config.replace('max_connections: 1024', 'max_connections: 512'), 'Reload complete')
        self.assertIn('kept', server.log())
        collector = server.collector()
        self.assertIsNotNone(collector)
        os.kill(collector, signal.SIGKILL)
        self.assertTrue(harness.wait_for(lambda: server.collector() not in (None, collector), 15.0),
                        'no new collector:\n%s' % server.log_tail())
        self.assert_stored(database, server, 'second-', self.send_agents(server.port, 'second-', 5))
        self.stopped(server)
        self.assertNotIn(OUTAGE, server.log())

    def test_down_at_start_then_up(self):
        port = harness.free_port()
        uri = ('mongodb://127.0.0.1:%d/?appname=smprotocol&serverSelectionTimeoutMS=2000&connectTimeoutMS=1000'
               % port)
        database = self.db_name('dl_late')
        server = self.new_server([mongo_entry(uri, database)])  # nothing listens on `port`
        agents = ['late-%d' % i for i in range(10)]
        for agent in agents:
            self.assertEqual(harness.http(server.port, 'GET', '/small.bin', {'User-Agent': agent}).status, 200)
        self.assertTrue(harness.wait_for(lambda: CANNOT_START in server.log(), 10.0), server.log_tail())
        spool = self.env.path('state', 'spool', 'mongodb')
        self.assertTrue(harness.wait_for(lambda: glob.glob(os.path.join(spool, '*.spool')), 5.0),
                        'nothing spooled in %s' % spool)
        time.sleep(2.5)  # retried every second meanwhile
        self.assertTrue(server.running())
        self.assertEqual(server.log().count(CANNOT_START), 1, server.log_tail())
        self.double = self.start_double(port=port, name='late-double')
        started = time.monotonic()
        counts = self.wait_agents(database, 'downloads', 'late-', agents, 15.0)
        self.assertEqual(counts, {a: 1 for a in agents}, 'after %.1f s' % (time.monotonic() - started))
        after = ['late-after-%d' % i for i in range(3)]
        for agent in after:
            self.assertEqual(harness.http(server.port, 'GET', '/small.bin', {'User-Agent': agent}).status, 200)
        self.stopped(server)
        expected = {a: 1 for a in agents + after}
        self.assertEqual(self.per_agent(database, 'downloads', 'late-'), expected)
        self.assertEqual(self.per_agent(database, 'requests', 'late-'), expected)
        self.assertEqual(server.log().count(CANNOT_START), 1, server.log())
        self.assertEqual(glob.glob(os.path.join(spool, '*.spool')), [])

    def test_down_at_start_spool_replayed_twice_stores_once(self):
        # MongoDB is down for a whole run: the batches stay in the spool; the next start
        # stores them; the very same spool files offered once more store nothing twice.
        port = harness.free_port()
        uri = ('mongodb://127.0.0.1:%d/?appname=smprotocol&serverSelectionTimeoutMS=2000&connectTimeoutMS=1000'
               % port)
        database = self.db_name('dl_replay')
        server = self.new_server([mongo_entry(uri, database)])
        spool = self.env.path('state', 'spool', 'mongodb')
        agents = ['replay-%d' % i for i in range(8)]
        for agent in agents:
            self.assertEqual(harness.http(server.port, 'GET', '/small.bin', {'User-Agent': agent}).status, 200)
        self.assertEqual(harness.http(server.port, 'GET', '/none', {'User-Agent': 'replay-404'}).status, 404)
        self.assertTrue(harness.wait_for(lambda: glob.glob(os.path.join(spool, '*.spool')), 10.0), server.log_tail())
        self.stopped(server)
        self.assertIn('they are stored at the next start', server.log())
        saved = self.env.path('saved-spool')
        os.makedirs(saved)
        files = glob.glob(os.path.join(spool, '*.spool'))
        self.assertTrue(files)
        for name in files:
            with open(name, 'rb') as src, open(os.path.join(saved, os.path.basename(name)), 'wb') as dst:
                dst.write(src.read())
        self.double = self.start_double(port=port, name='replay-double')
        expected = {a: 1 for a in agents}
        for attempt in range(2):
            if attempt == 1:  # the same files again
                for name in os.listdir(saved):
                    with open(os.path.join(saved, name), 'rb') as src, open(os.path.join(spool, name), 'wb') as dst:
                        dst.write(src.read())
            server.start()
            self.assertTrue(harness.wait_for(lambda: not glob.glob(os.path.join(spool, '*.spool')), 15.0),
                            'spool not replayed (attempt %d):\n%s' % (attempt + 1, server.log_tail()))
            self.stopped(server)
            self.assertEqual(self.per_agent(database, 'downloads', 'replay-'), expected, 'attempt %d' % (attempt + 1))
            self.assertEqual(self.per_agent(database, 'requests', 'replay-'), dict(expected, **{'replay-404': 1}),
                             'attempt %d' % (attempt + 1))
        self.assertEqual(server.log().count('replaying the spool'), 2, server.log_tail())


# --------------------------------------------------------------------------
# config errors (no MongoDB needed)

class ConfigErrors(unittest.TestCase):
    def setUp(self):
        self.env = harness.TestEnv({'small.bin': 16})

    def tearDown(self):
        self.env.cleanup()

    def check(self, entries):
        path = harness.write_file(self.env.path('check.yaml'),
                                  server_config(harness.free_port(), self.env.www, entries))
        return harness.run([harness.BINARY, '-t', '-c', path], timeout=30)

    def test_bad_uri_stops_the_start_naming_uri(self):
        r = self.check([mongo_entry('notmongodb://x', 'dl')])
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn('plugins[0].uri', r.stderr)
        r = self.check([sqlite_entry(self.env.path('ok.db')), mongo_entry('notmongodb://x', 'dl')])
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn('plugins[1].uri', r.stderr)

    def test_server_down_is_not_a_config_error(self):
        port = harness.free_port()  # nothing listens there
        r = self.check([mongo_entry('mongodb://127.0.0.1:%d/?serverSelectionTimeoutMS=1000' % port, 'dl')])
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)

    def test_batch_size_out_of_range_is_refused(self):
        for bad in (0, 100001):
            r = self.check([mongo_entry('mongodb://127.0.0.1:1/', 'dl', batch_size=bad)])
            self.assertEqual(r.returncode, 1, 'batch_size %d: %s' % (bad, r.stdout + r.stderr))
            self.assertIn('batch_size', r.stderr)

    def test_bad_write_concern_is_refused(self):
        r = self.check([mongo_entry('mongodb://127.0.0.1:1/', 'dl', write_concern='sometimes')])
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertIn('write_concern', r.stderr)


# --------------------------------------------------------------------------
# on a real MongoDB, when one is given

class OnRealServer(StoreTests, MongoCase):
    """The StoreTests against the server at SMP_TEST_MONGODB_URI, in databases named
    smp_it_<pid>_<n>_<tag> that are dropped afterwards."""

    _n = 0

    def setUp(self):
        if not REAL_URI:
            self.skipTest('SMP_TEST_MONGODB_URI not set: no real MongoDB here')
        super().setUp()
        OnRealServer._n += 1

    def uri(self):
        return REAL_URI

    def db_name(self, tag):
        name = 'smp_it_%d_%d_%s' % (os.getpid(), OnRealServer._n, tag)
        self.databases.append((self.uri(), name))
        return name


if __name__ == '__main__':
    harness.main()
