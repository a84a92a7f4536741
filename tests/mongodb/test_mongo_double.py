#!/usr/bin/python3
"""Self-test of mongo_double.py (a MongoDB test double), with pymongo 3.11 as the client
and, when a compiler and libmongoc are there, libmongoc_probe.c as a second one.

    /usr/bin/python3 test_mongo_double.py [-v]

Starts the double as a program on a free port (and once in-process), stops everything it
started, and bounds every wait."""

import datetime
import faulthandler
import os
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unittest
import uuid

import pymongo
from bson.binary import Binary, UuidRepresentation
from bson.codec_options import CodecOptions
from bson.decimal128 import Decimal128
from bson.int64 import Int64
from bson.objectid import ObjectId
from bson.son import SON
from pymongo import monitoring
from pymongo.errors import BulkWriteError, DuplicateKeyError, OperationFailure

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from mongo_double import MongoDouble  # noqa: E402

UTC = datetime.timezone.utc
# SON documents keep field order visible; tz-aware datetimes compare with what was written.
READ = CodecOptions(document_class=SON, tz_aware=True, uuid_representation=UuidRepresentation.UNSPECIFIED)
TIMEOUTS = dict(serverSelectionTimeoutMS=5000, connectTimeoutMS=5000, socketTimeoutMS=15000)


class Commands(monitoring.CommandListener):
    """Counts the commands a client sends, by name."""

    def __init__(self):
        self.names = []

    def started(self, event):
        self.names.append(event.command_name)

    def succeeded(self, event):
        pass

    def failed(self, event):
        pass

    def count(self, name):
        return self.names.count(name)


class DoubleProcess:
    """mongo_double.py run as a program, as the plugin's tests will run it."""

    def __init__(self, port=0, data_dir=None):
        self.log = tempfile.TemporaryFile(mode='w+')
        args = [sys.executable, os.path.join(HERE, 'mongo_double.py'), '--port', str(port)]
        if data_dir:
            args += ['--data-dir', data_dir]
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=self.log, text=True)
        ready, _, _ = select.select([self.proc.stdout], [], [], 15)
        line = self.proc.stdout.readline() if ready else ''
        if not line.startswith('mongo_double listening on 127.0.0.1:'):
            log = self.stderr()
            self.kill()
            raise RuntimeError('the double did not start: %r %s' % (line, log))
        self.port = int(line.rsplit(':', 1)[1])

    def client(self, **options):
        return pymongo.MongoClient('127.0.0.1', self.port, **TIMEOUTS, **options)

    def stderr(self):
        self.log.seek(0)
        return self.log.read()[-2000:]

    def terminate(self):
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(10)

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        self.proc.stdout.close()
        self.log.close()


double = None


def setUpModule():
    global double
    faulthandler.dump_traceback_later(600, exit=True)  # the last bound on everything
    double = DoubleProcess()


def tearDownModule():
    code = double.terminate()
    log = double.stderr()
    double.kill()
    faulthandler.cancel_dump_traceback_later()
    assert code == 0 and 'Traceback' not in log and 'failed' not in log, 'exit %s on SIGTERM: %s' % (code, log)


class DoubleTest(unittest.TestCase):
    def setUp(self):
        self.commands = Commands()
        self.client = double.client(event_listeners=[self.commands])
        self.db = self.client.get_database('t_' + self._testMethodName, codec_options=READ)

    def tearDown(self):
        self.client.drop_database(self.db.name)
        self.client.close()


class Documents(DoubleTest):
    def test_types_round_trip(self):
        when = datetime.datetime(2026, 3, 4, 5, 6, 7, 891000, tzinfo=UTC)
        docs = [SON([('_id', i), ('small64', Int64(i)), ('big64', Int64(2 ** 40 + i)), ('int32', i),
                     ('double', i + 0.5), ('when', when), ('geo', SON([('country', 'DE'), ('city', 'Berlin'),
                                                                       ('location', SON([('type', 'Point'),
                                                                                         ('coordinates', [13.4, 52.5])]))])),
                     ('tags', ['a', 'b']), ('oid', ObjectId()), ('flag', True), ('none', None),
                     ('blob', b'\x00\x01'), ('uuid', Binary(uuid.uuid4().bytes, 4)),
                     ('dec', Decimal128('1.10'))]) for i in range(3)]
        self.assertEqual(self.db.c.insert_many(docs).inserted_ids, [0, 1, 2])
        got = list(self.db.c.find().sort('_id', 1))
        self.assertEqual(got, docs)
        for doc, back in zip(docs, got):
            self.assertEqual(list(back), list(doc), 'field order')
            self.assertEqual(list(back['geo']), ['country', 'city', 'location'])
            self.assertIs(type(back['small64']), Int64, 'a small Int64 stays an Int64')
            self.assertIs(type(back['big64']), Int64)
            self.assertIs(type(back['int32']), int, 'an int32 stays an int32')
            self.assertEqual(back['when'], when)
            self.assertEqual(back['uuid'].subtype, 4)
            self.assertEqual(back['dec'], Decimal128('1.10'))
        # The same holds for documents an update rewrote.
        self.db.c.update_one({'_id': 1}, {'$inc': {'small64': 1, 'int32': 1}, '$set': {'geo.city': 'Bonn'}})
        back = self.db.c.find_one({'_id': 1})
        self.assertEqual((back['small64'], back['int32'], back['geo']['city']), (2, 2, 'Bonn'))
        self.assertIs(type(back['small64']), Int64)
        self.assertIs(type(back['int32']), int)
        self.assertEqual(list(back), list(docs[1]))

    def test_unique_index_and_duplicate_keys(self):
        c = self.db.c
        self.assertEqual(c.create_index('id', unique=True), 'id_1')
        self.assertEqual(c.create_index('id', unique=True), 'id_1', 'creating it again is fine')
        info = c.index_information()
        self.assertEqual(sorted(info), ['_id_', 'id_1'])
        self.assertTrue(info['id_1']['unique'])
        c.insert_one({'id': Int64(1)})
        with self.assertRaises(DuplicateKeyError) as caught:
            c.insert_one({'id': 1.0})  # 1.0 == Int64(1) for MongoDB
        self.assertEqual(caught.exception.code, 11000)
        self.assertIn('index: id_1 dup key: { id: 1', str(caught.exception))
        with self.assertRaises(DuplicateKeyError):
            c.insert_one({'_id': c.find_one()['_id'], 'id': 99})
        with self.assertRaises(BulkWriteError) as caught:
            c.insert_many([{'id': 2}, {'id': 1}, {'id': 3}], ordered=False)
        details = caught.exception.details
        self.assertEqual(details['nInserted'], 2)
        self.assertEqual([(e['index'], e['code']) for e in details['writeErrors']], [(1, 11000)])
        with self.assertRaises(BulkWriteError) as caught:
            c.insert_many([{'id': 4}, {'id': 1}, {'id': 5}])  # ordered: stops at the error
        self.assertEqual(caught.exception.details['nInserted'], 1)
        self.assertEqual(sorted(c.distinct('id')), [1, 2, 3, 4])
        with self.assertRaises(DuplicateKeyError):
            c.update_one({'id': 2}, {'$set': {'id': 3}})
        self.assertEqual(c.count_documents({'id': 3}), 1)
        with self.assertRaises(OperationFailure) as caught:
            c.create_index('id', name='other')  # same key, another name
        self.assertEqual(caught.exception.code, 85)
        # A unique index cannot be built over documents that already repeat a key.
        self.db.d.insert_many([{'k': 'x'}, {'k': 'x'}])
        with self.assertRaises(OperationFailure) as caught:
            self.db.d.create_index('k', unique=True)
        self.assertEqual(caught.exception.code, 11000)
        self.assertEqual(sorted(self.db.d.index_information()), ['_id_'])
        c.drop_index('id_1')
        c.insert_one({'id': 1})
        self.assertEqual(c.count_documents({'id': 1}), 2)

    def test_leading_field_of_a_partial_compound_unique_index(self):
        """The mongodb store's merge reads {key: {$in: [...]}, last_us: {$gte: ...}}: the double
        answers it from the {key, seq} index, and must answer what a scan would."""
        c = self.db.downloads
        c.create_index([('key', 1), ('seq', 1)], unique=True, name='key_seq',
                       partialFilterExpression={'key': {'$exists': True}})
        c.insert_many([{'old': 1}, {'old': 2}])  # no key: not in the index, never unique-checked
        c.insert_many([{'key': Int64(k), 'seq': Int64(n), 'last_us': Int64(10 * n + k)}
                       for n in range(3) for k in (7, 8, 9)])
        with self.assertRaises(DuplicateKeyError):
            c.insert_one({'key': Int64(8), 'seq': Int64(1)})
        found = list(c.find({'key': {'$in': [Int64(7), Int64(9), Int64(99)]}, 'last_us': {'$gte': 10}}))
        self.assertEqual([(d['key'], d['seq']) for d in found], [(7, 1), (9, 1), (7, 2), (9, 2)])  # natural order
        self.assertEqual([d['seq'] for d in c.find({'key': 8}).sort('seq', -1).limit(1)], [2])
        c.update_one({'key': 8, 'seq': 2}, {'$set': {'key': Int64(9), 'seq': Int64(5)}})
        self.assertEqual(c.count_documents({'key': 8}), 2)
        self.assertEqual(sorted(d['seq'] for d in c.find({'key': {'$in': [9]}})), [0, 1, 2, 5])
        c.delete_one({'key': 9, 'seq': 5})
        maxima = {d['_id']: d['seq'] for d in c.aggregate([{'$match': {'key': {'$in': [7, 8]}}},
                                                           {'$group': {'_id': '$key', 'seq': {'$max': '$seq'}}}])}
        self.assertEqual(maxima, {7: 2, 8: 1})
        self.assertEqual(c.count_documents({'key': {'$in': [None]}}), 2)  # null: a scan, as MongoDB matches missing

    def test_upsert_creates_once_then_updates(self):
        c = self.db.downloads
        c.create_index('id', unique=True)
        first = datetime.datetime(2026, 1, 1, tzinfo=UTC)
        update = {'$set': {'path': '/a.bin', 'last': first}, '$setOnInsert': {'first': first},
                  '$inc': {'requests': Int64(1)}, '$max': {'peak': 5}, '$min': {'low': 5}}
        r = c.update_one({'id': Int64(7), 'geo.country': 'DE'}, update, upsert=True)
        self.assertEqual((r.matched_count, r.modified_count), (0, 0))
        self.assertIsNotNone(r.upserted_id)
        later = first + datetime.timedelta(seconds=1)
        update = {'$set': {'last': later}, '$setOnInsert': {'first': later}, '$inc': {'requests': 1},
                  '$max': {'peak': 9}, '$min': {'low': 9}, '$push': {'log': 'x'}, '$unset': {'path': ''}}
        r = c.update_one({'id': Int64(7), 'geo.country': 'DE'}, update, upsert=True)
        self.assertEqual((r.matched_count, r.modified_count, r.upserted_id), (1, 1, None))
        docs = list(c.find({}, {'_id': 0}))
        self.assertEqual(docs, [{'id': 7, 'geo': {'country': 'DE'}, 'last': later, 'first': first,
                                 'requests': 2, 'peak': 9, 'low': 5, 'log': ['x']}])
        self.assertIs(type(docs[0]['requests']), Int64, 'Int64 + int stays Int64')
        r = c.update_one({'id': 7}, {'$set': {'last': later}})
        self.assertEqual((r.matched_count, r.modified_count), (1, 0), 'no change, not modified')
        # Replacement upserts and multi updates.
        r = c.replace_one({'id': 8}, {'id': 8, 'path': '/b.bin'}, upsert=True)
        self.assertIsNotNone(r.upserted_id)
        self.assertEqual(c.find_one({'id': 8}, {'_id': 0}), {'id': 8, 'path': '/b.bin'})
        self.assertEqual(c.update_many({}, {'$set': {'seen': True}}).modified_count, 2)
        self.assertEqual(c.delete_many({'seen': True}).deleted_count, 2)
        self.assertEqual(c.count_documents({}), 0)


class Queries(DoubleTest):
    def setUp(self):
        super().setUp()
        self.docs = [{'_id': i, 'n': Int64(i) if i % 3 else (float(i) if i % 2 else i), 'mod': i % 7,
                      'name': 'file%03d' % i, 'geo': {'country': ['DE', 'FR', 'US'][i % 3]},
                      'tags': ['even' if i % 2 == 0 else 'odd'] + (['ten'] if i % 10 == 0 else [])}
                     for i in range(250)]
        self.db.c.insert_many(self.docs)

    def ids(self, query, **kwargs):
        return [d['_id'] for d in self.db.c.find(query, **kwargs)]

    def test_find_sort_limit_projection_and_get_more(self):
        got = list(self.db.c.find({'mod': {'$lt': 6}}, {'name': 1, 'geo.country': 1}).sort(
            [('geo.country', -1), ('_id', 1)]).skip(5).limit(150))
        expected = sorted((d for d in self.docs if d['mod'] < 6), key=lambda d: (-ord(d['geo']['country'][0]), d['_id']))
        self.assertEqual(len(got), 150)
        self.assertEqual([d['_id'] for d in got], [d['_id'] for d in expected[5:155]])
        self.assertEqual(got[0], {'_id': expected[5]['_id'], 'name': expected[5]['name'],
                                  'geo': {'country': 'US'}})
        self.assertEqual(self.commands.count('getMore'), 1, '150 documents: 101, then one getMore')
        everything = list(self.db.c.find({}, {'_id': 0, 'tags': 0}).batch_size(30))
        self.assertEqual(len(everything), 250)
        self.assertEqual(everything[249], {'n': 249.0, 'mod': 4, 'name': 'file249', 'geo': {'country': 'DE'}})
        self.assertIs(type(everything[249]['n']), float)
        self.assertEqual(self.commands.count('getMore'), 1 + 8)
        self.assertEqual(len(list(self.db.c.find().limit(-120))), 101, 'a negative limit: one default batch')
        self.assertEqual(self.commands.count('getMore'), 1 + 8)

    def test_query_operators(self):
        self.assertEqual(self.ids({'n': {'$gte': 247}}), [247, 248, 249], 'int, Int64 and double by value')
        self.assertEqual(self.ids({'n': {'$in': [3, Int64(4), 5.0]}}), [3, 4, 5])
        self.assertEqual(self.ids({'geo.country': 'FR', '_id': {'$lt': 10}}), [1, 4, 7])
        self.assertEqual(self.ids({'tags': 'ten', '_id': {'$lte': 30}}), [0, 10, 20, 30], 'an array element')
        self.assertEqual(self.ids({'tags': ['odd', 'ten']}), [], 'whole-array equality')
        self.assertEqual(self.ids({'tags': ['even', 'ten'], '_id': {'$gt': 230}}), [240])
        self.assertEqual(self.ids({'$or': [{'_id': 3}, {'name': {'$regex': '^FILE24[89]$', '$options': 'i'}}]}),
                         [3, 248, 249])
        self.assertEqual(self.ids({'_id': {'$lt': 6}, '$nor': [{'mod': 1}, {'mod': 2}]}), [0, 3, 4, 5])
        self.assertEqual(self.ids({'_id': {'$lt': 6, '$not': {'$in': [1, 2]}, '$nin': [3], '$ne': 4}}), [0, 5])
        self.db.c.insert_many([{'_id': 'x', 'n': None}, {'_id': 'y'}])
        self.assertEqual(self.ids({'n': None}), ['x', 'y'], 'null matches null and missing')
        self.assertEqual(self.ids({'n': {'$exists': False}}), ['y'])
        self.assertEqual(self.ids({'_id': {'$gt': 'a'}}), ['x', 'y'], 'strings only compare with strings')
        self.assertEqual(self.db.c.count_documents({'geo.country': 'US', 'mod': 0}), 12)
        self.assertEqual(sorted(self.db.c.distinct('tags')), ['even', 'odd', 'ten'])
        with self.assertRaises(OperationFailure) as caught:
            list(self.db.c.find({'n': {'$where': 'x'}}))
        self.assertIn('test double: unsupported query operator $where', str(caught.exception))

    def test_aggregate(self):
        pipeline = [{'$match': {'mod': {'$ne': 0}}},
                    {'$group': {'_id': '$geo.country', 'files': {'$sum': 1}, 'total': {'$sum': '$n'},
                                'top': {'$max': '$_id'}, 'avg': {'$avg': '$mod'}, 'first': {'$first': '$name'}}},
                    {'$sort': {'files': -1, '_id': 1}}, {'$limit': 2},
                    {'$project': {'_id': 0, 'country': '$_id', 'files': 1, 'total': 1, 'top': 1,
                                  'half': {'$divide': ['$files', 2]}, 'big': {'$gt': ['$total', 10000]}}}]
        got = list(self.db.c.aggregate(pipeline))
        expected = {}
        for d in self.docs:
            if d['mod']:
                e = expected.setdefault(d['geo']['country'], {'files': 0, 'total': 0, 'top': 0})
                e['files'] += 1
                e['total'] += d['n']
                e['top'] = d['_id']
        ranked = sorted(expected.items(), key=lambda kv: (-kv[1]['files'], kv[0]))[:2]
        self.assertEqual(got, [{'files': e['files'], 'total': e['total'], 'top': e['top'], 'country': k,
                                'half': e['files'] / 2, 'big': e['total'] > 10000} for k, e in ranked])
        self.assertIs(type(got[0]['total']), float, 'a $sum over doubles is a double')
        # A result of many batches.
        many = list(self.db.c.aggregate([{'$group': {'_id': '$name', 'n': {'$sum': '$n'}}}, {'$sort': {'_id': -1}}],
                                        batchSize=40))
        self.assertEqual([d['_id'] for d in many], sorted((d['name'] for d in self.docs), reverse=True))
        self.assertEqual(self.commands.count('getMore'), 6, '250 groups in batches of 40')
        # Other stages and expressions.
        got = list(self.db.c.aggregate([
            {'$match': {'_id': {'$in': [10, 11]}}}, {'$unwind': '$tags'},
            {'$addFields': {'kind': {'$cond': [{'$eq': ['$tags', 'ten']}, 'round', 'plain']},
                            'none': {'$ifNull': ['$missing', 'dflt']}, 'nil': {'$add': ['$n', None]},
                            'long': {'$toLong': '$mod'}}},
            {'$project': {'tags': 1, 'kind': 1, 'none': 1, 'nil': 1, 'long': 1}}]))
        self.assertEqual(got, [{'_id': 10, 'tags': 'even', 'kind': 'plain', 'none': 'dflt', 'nil': None, 'long': 3},
                               {'_id': 10, 'tags': 'ten', 'kind': 'round', 'none': 'dflt', 'nil': None, 'long': 3},
                               {'_id': 11, 'tags': 'odd', 'kind': 'plain', 'none': 'dflt', 'nil': None, 'long': 4}])
        self.assertIs(type(got[0]['long']), Int64)
        # $mod: the dividend's sign, as MongoDB and C give it; a long stays a long.
        got = list(self.db.c.aggregate([{'$match': {'_id': 10}}, {'$project': {
            '_id': 0, 'negative': {'$mod': [-7, 3]}, 'n': {'$mod': ['$n', 4]}, 'double': {'$mod': [7.5, 2]},
            'hour': {'$mod': [Int64(1796119210000000), Int64(3600000000)]}, 'nil': {'$mod': ['$missing', 2]}}}]))
        [doc10] = [d for d in self.docs if d['_id'] == 10]
        self.assertEqual(got, [{'negative': -1, 'n': doc10['n'] % 4, 'double': 1.5, 'hour': 10000000, 'nil': None}])
        self.assertIs(type(got[0]['hour']), Int64)
        with self.assertRaises(OperationFailure) as caught:
            list(self.db.c.aggregate([{'$project': {'x': {'$mod': ['$n', 0]}}}]))
        self.assertIn("can't $mod by zero", str(caught.exception))
        facet = list(self.db.c.aggregate([{'$facet': {
            'count': [{'$match': {'mod': 0}}, {'$count': 'n'}],
            'countries': [{'$sortByCount': '$geo.country'}],
            'tags': [{'$unwind': '$tags'}, {'$group': {'_id': None, 'all': {'$addToSet': '$tags'}}}]}}]))
        self.assertEqual(facet[0]['count'], [{'n': 36}])
        countries = facet[0]['countries']
        self.assertEqual(countries[0], {'_id': 'DE', 'count': 84})
        self.assertEqual(sorted(c['_id'] for c in countries[1:] if c['count'] == 83), ['FR', 'US'])
        self.assertEqual(sorted(facet[0]['tags'][0]['all']), ['even', 'odd', 'ten'])
        with self.assertRaises(OperationFailure) as caught:
            list(self.db.c.aggregate([{'$lookup': {'from': 'x', 'as': 'y'}}]))
        self.assertEqual(caught.exception.code, 40324)
        self.assertIn('test double: unsupported stage $lookup', str(caught.exception))
        with self.assertRaises(OperationFailure) as caught:
            list(self.db.c.aggregate([{'$project': {'x': {'$dateToString': {'date': '$n'}}}}]))
        self.assertIn('unsupported expression operator $dateToString', str(caught.exception))


class Server(DoubleTest):
    def test_databases_are_isolated(self):
        a, b = self.client.get_database('t_iso_a'), self.client.get_database('t_iso_b')
        try:
            a.c.insert_many([{'db': 'a', 'i': i} for i in range(3)])
            b.c.insert_one({'db': 'b'})
            b.c.create_index('db', unique=True)
            a.c.insert_one({'db': 'b'})  # b's unique index is not a's
            self.assertEqual(a.c.count_documents({}), 4)
            self.assertEqual(b.c.distinct('db'), ['b'])
            self.assertEqual(sorted(a.c.index_information()), ['_id_'])
            self.assertIn('t_iso_a', self.client.list_database_names())
            self.client.drop_database(a)
            self.assertNotIn('t_iso_a', self.client.list_database_names())
            self.assertEqual(a.c.count_documents({}), 0)
            self.assertEqual(b.list_collection_names(), ['c'])
            self.assertEqual(b.c.count_documents({'db': 'b'}), 1)
        finally:
            self.client.drop_database(a)
            self.client.drop_database(b)

    def test_commands_and_errors(self):
        self.assertEqual(self.client.server_info()['version'], '6.0.0-testdouble')
        self.assertEqual(self.db.command('ping')['ok'], 1.0)
        with self.assertRaises(OperationFailure) as caught:
            self.db.command('frobnicate')
        self.assertEqual(caught.exception.code, 59)
        self.assertEqual(caught.exception.details['errmsg'], "no such command: 'frobnicate'")
        self.db.create_collection('made')
        with self.assertRaises(OperationFailure) as caught:
            self.db.command('create', 'made')
        self.assertEqual(caught.exception.code, 48)
        self.assertEqual(self.db.list_collection_names(), ['made'])
        self.db.drop_collection('made')
        self.assertEqual(self.db.list_collection_names(), [])
        # An unacknowledged write (OP_MSG moreToCome) is applied without a reply.
        self.db.get_collection('w0', write_concern=pymongo.WriteConcern(w=0)).insert_one({'_id': 1})
        deadline = time.monotonic() + 5
        while self.db.w0.count_documents({}) == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertEqual(self.db.w0.count_documents({}), 1)

    def test_garbage_closes_only_its_connection(self):
        for garbage in (b'\xff' * 64, struct.pack('<iiii', 40, 1, 0, 2013) + b'\0\0\0\0\x00' + b'\x05' * 19,
                        struct.pack('<iiii', 21, 1, 0, 9999) + b'12345'):
            with socket.create_connection(('127.0.0.1', double.port), timeout=5) as sock:
                sock.sendall(garbage)
                try:
                    answer = sock.recv(100)
                except ConnectionResetError:  # closed with our bytes unread
                    answer = b''
                self.assertEqual(answer, b'', 'the double closes the connection')
        self.assertEqual(self.db.command('ping')['ok'], 1.0)
        log = double.stderr()
        for reason in ('bad message length -1', 'bad BSON document length', 'unsupported opcode 9999'):
            self.assertIn(reason, log)

    def test_library_mode(self):
        inner = MongoDouble(port=0).start()
        try:
            with pymongo.MongoClient('127.0.0.1', inner.port, **TIMEOUTS) as client:
                client.lib.c.insert_one({'x': Int64(1)})
                self.assertIs(type(client.lib.c.find_one()['x']), Int64)
        finally:
            inner.stop()
        with self.assertRaises(OSError):
            socket.create_connection(('127.0.0.1', inner.port), timeout=2).close()


class Persistence(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix='mongo_double_')
        self.processes = []

    def tearDown(self):
        for p in self.processes:
            p.kill()
        shutil.rmtree(self.dir)

    def start(self, port=0):
        process = DoubleProcess(port, self.dir)
        self.processes.append(process)
        return process

    def test_kill_9_and_restart_keeps_acknowledged_writes(self):
        first = self.start()
        client = first.client(retryWrites=False)
        c = client.p.c
        c.create_index('id', unique=True)
        acked = {'inserted': [], 'incs': 0, 'batches': 0, 'error': None}
        stop = threading.Event()

        def traffic():
            i = 0
            try:
                while not stop.is_set():
                    c.insert_one({'id': Int64(i), 'at': datetime.datetime.now(UTC)})
                    acked['inserted'].append(i)
                    c.update_one({'id': -1}, {'$inc': {'n': Int64(1)}}, upsert=True)
                    acked['incs'] += 1
                    client.p.batches.insert_many([{'batch': i, 'j': j} for j in range(20)])
                    acked['batches'] += 1
                    i += 1
            except pymongo.errors.ConnectionFailure:
                pass  # the double is gone
            except Exception as error:
                acked['error'] = error

        writer = threading.Thread(target=traffic)
        writer.start()
        deadline = time.monotonic() + 20
        while acked['batches'] < 150 and time.monotonic() < deadline:
            time.sleep(0.01)
        first.proc.send_signal(signal.SIGKILL)  # mid-traffic
        first.kill()
        writer.join(30)
        stop.set()
        self.assertFalse(writer.is_alive())
        client.close()
        self.assertIsNone(acked['error'])
        self.assertGreaterEqual(acked['batches'], 150)

        for attempt in range(2):  # the second restart replays the snapshot the first one wrote
            second = self.start(first.port)
            self.assertEqual(second.port, first.port)
            with second.client(document_class=SON) as client:
                c = client.p.c
                ids = {d['id'] for d in c.find({'id': {'$gte': 0}})}
                self.assertTrue(set(acked['inserted']) <= ids, 'every acknowledged insert is back')
                self.assertLessEqual(len(ids - set(acked['inserted'])), 1, 'at most the one in flight')
                counter = c.find_one({'id': -1})
                self.assertIn(counter['n'], (acked['incs'], acked['incs'] + 1))
                self.assertIs(type(counter['n']), Int64)
                self.assertIs(type(c.find_one({'id': 0})['id']), Int64)
                batches = list(client.p.batches.aggregate([{'$group': {'_id': '$batch', 'n': {'$sum': 1}}}]))
                whole = {b['_id'] for b in batches if b['n'] == 20}
                self.assertTrue(set(range(acked['batches'])) <= whole, 'acknowledged batches are whole')
                self.assertLessEqual(len(batches), acked['batches'] + 1)
                with self.assertRaises(DuplicateKeyError):
                    c.insert_one({'id': Int64(0)})  # the unique index came back too
                c.insert_one({'id': Int64(10 ** 6 + attempt)})
                acked['inserted'].append(10 ** 6 + attempt)
            self.assertEqual(second.terminate(), 0)
            self.assertEqual(second.stderr(), '', 'nothing to complain about')
            second.kill()


@unittest.skipUnless(shutil.which('cc') and shutil.which('pkg-config') and
                     subprocess.run(['pkg-config', '--exists', 'libmongoc-1.0'], timeout=30).returncode == 0,
                     'no C compiler or no libmongoc-1.0 (pkg-config)')
class LibmongocProbe(unittest.TestCase):
    def test_probe(self):
        work = tempfile.mkdtemp(prefix='mongo_probe_')
        try:
            flags = subprocess.run(['pkg-config', '--cflags', '--libs', 'libmongoc-1.0'], capture_output=True,
                                   text=True, timeout=30, check=True).stdout.split()
            probe = os.path.join(work, 'probe')
            build = subprocess.run(['cc', '-O1', '-Wall', os.path.join(HERE, 'libmongoc_probe.c')] + flags +
                                   ['-o', probe], capture_output=True, text=True, timeout=120)
            self.assertEqual(build.returncode, 0, build.stderr)
            self.assertEqual(build.stderr, '', 'no warnings')
            uri = 'mongodb://127.0.0.1:%d/?serverSelectionTimeoutMS=5000&connectTimeoutMS=5000' % double.port
            run = subprocess.run([probe, uri, 't_probe'], capture_output=True, text=True, timeout=120)
            if '-v' in sys.argv:
                print('\n' + run.stdout, end='')
            self.assertEqual(run.returncode, 0, run.stdout + run.stderr)
            self.assertIn('probe: OK', run.stdout)
        finally:
            shutil.rmtree(work)
        with double.client(document_class=SON, tz_aware=True) as client:
            db = client.t_probe
            try:
                self.assertEqual(db.requests.count_documents({}), 1000)
                doc = db.requests.find_one({'request_id': 7})
                self.assertEqual(list(doc), ['_id', 'node', 'worker_id', 'request_id', 'start', 'start_us',
                                             'client_ip', 'status', 'body_bytes', 'geo'])
                self.assertIs(type(doc['_id']), ObjectId)
                self.assertIs(type(doc['request_id']), Int64)
                self.assertIs(type(doc['worker_id']), int)
                self.assertEqual(doc['body_bytes'], 7 * 5000000000)
                self.assertIs(type(doc['body_bytes']), Int64)
                self.assertEqual(doc['start'], datetime.datetime(2026, 1, 1, 0, 0, 0, 7000, tzinfo=UTC))
                self.assertEqual(doc['geo'], {'country': 'JP', 'location': {'type': 'Point',
                                                                            'coordinates': [13.4, 50.5]}})
                self.assertEqual(db.downloads.count_documents({}), 300)
                self.assertEqual(len(db.downloads.distinct('id')), 300)
                download = db.downloads.find_one({'id': 5})
                self.assertEqual(download['bytes_sent'], 5002, 'the second round wrote last')
                self.assertIs(type(download['bytes_sent']), Int64)
                self.assertEqual(download['first'], datetime.datetime(2026, 1, 1, 0, 0, 0, 1000, tzinfo=UTC),
                                 '$setOnInsert only once')
                self.assertTrue(db.downloads.index_information()['id_1']['unique'])
            finally:
                client.drop_database(db)


if __name__ == '__main__':
    unittest.main(verbosity=2)  # names every test, and the reason of a skip
