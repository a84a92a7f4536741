#!/usr/bin/python3
"""mongo_double: a small in-memory MongoDB server for tests.

This is a test double, not MongoDB: it speaks enough of the wire protocol for
libmongoc 1.23 and pymongo 3.11 to run the storage plugin's operations against
it on 127.0.0.1, keeps everything in memory (optionally journaled to a
directory), and answers "unsupported" rather than guess when asked for more.

Implements: OP_QUERY commands (the legacy handshake) and OP_MSG (body and
document-sequence sections, checksum skipped, moreToCome honoured); one
standalone server with several databases; the commands hello/isMaster, ping,
buildInfo, endSessions, insert, update, delete, find, getMore, killCursors,
aggregate, count, distinct, create, drop, dropDatabase, createIndexes,
listIndexes, dropIndexes, listCollections, listDatabases; unique indexes
(also sparse and partial ones); the common query, update and projection
operators; the aggregation stages and expressions listed in STAGES and
EXPRESSIONS below; an append-only journal (--data-dir) replayed on start.

Does not implement: authentication, TLS, replica sets or sharding,
transactions, compression (OP_COMPRESSED), collations, text or geo queries
(such indexes are accepted but not used), $lookup and the other stages not
listed, change streams, write concern beyond acknowledging (w: "majority" is
accepted), a real storage engine or any query planner.

Usage: /usr/bin/python3 mongo_double.py --port 0 [--host 127.0.0.1] [--data-dir DIR] [--trace]
prints "mongo_double listening on 127.0.0.1:PORT" and serves until SIGTERM/SIGINT.
Library: MongoDouble(port=0, data_dir=None).start() ... .port ... .stop()
"""

import argparse
import datetime
import functools
import ipaddress
import itertools
import math
import os
import random
import re
import signal
import socket
import socketserver
import struct
import sys
import threading
import time

import bson
from bson import json_util
from bson.binary import UuidRepresentation
from bson.code import Code
from bson.codec_options import CodecOptions
from bson.decimal128 import Decimal128
from bson.int64 import Int64
from bson.max_key import MaxKey
from bson.min_key import MinKey
from bson.objectid import ObjectId
from bson.regex import Regex
from bson.timestamp import Timestamp

# dict keeps field order; UNSPECIFIED keeps every binary subtype as bson.Binary,
# so values go back out exactly as they came in (Int64 stays Int64 too).
CODEC = CodecOptions(document_class=dict, tz_aware=True, uuid_representation=UuidRepresentation.UNSPECIFIED)
MAX_BSON = 16 * 1024 * 1024
MAX_MESSAGE = 48000000
MAX_WRITE_BATCH = 100000
DEFAULT_BATCH = 101
OP_REPLY, OP_QUERY, OP_MSG = 1, 2004, 2013
EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)


def log(message):
    print('mongo_double: %s' % message, file=sys.stderr, flush=True)


class CommandError(Exception):
    """A command failure, sent back as {ok: 0, errmsg, code, codeName} (or a write error)."""

    def __init__(self, code, code_name, errmsg, **extra):
        super().__init__(errmsg)
        self.code, self.code_name, self.errmsg, self.extra = code, code_name, errmsg, extra

    def reply(self):
        return {'ok': 0.0, 'errmsg': self.errmsg, 'code': self.code, 'codeName': self.code_name, **self.extra}


def unsupported(what):
    return CommandError(40324, 'Location40324', 'test double: unsupported %s' % what)


def bad_value(errmsg):
    return CommandError(2, 'BadValue', errmsg)


# ---------------------------------------------------------------- BSON values

class _Missing:
    """A field that is not there (distinct from null)."""

    def __repr__(self):
        return 'MISSING'


MISSING = _Missing()


def to_ms(dt):
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=datetime.timezone.utc)
    return (dt - EPOCH) // datetime.timedelta(milliseconds=1)


def canon(v):
    """A hashable key for a BSON value: equal keys for values MongoDB finds equal
    (1 == 1.0 == Int64(1)), and keys sort in MongoDB's cross-type order."""
    if v is MISSING:
        return (2, -1)  # below null, as aggregation compares them
    if v is None:
        return (2, 0)
    if isinstance(v, bool):  # before int: bool is an int in Python
        return (9, v)
    if isinstance(v, (int, float)):
        return (3, v)
    if isinstance(v, Decimal128):
        return (3, v.to_decimal())
    if isinstance(v, Code):  # before str: Code is a str in Python
        return (13, str(v))
    if isinstance(v, str):
        return (4, v)  # code point order == UTF-8 byte order, as MongoDB compares
    if isinstance(v, dict):
        return (5, tuple((k, canon(x)) for k, x in v.items()))
    if isinstance(v, list):
        return (6, tuple(canon(x) for x in v))
    if isinstance(v, bytes):
        return (7, (getattr(v, 'subtype', 0), bytes(v)))
    if isinstance(v, ObjectId):
        return (8, v.binary)
    if isinstance(v, datetime.datetime):
        return (10, to_ms(v))
    if isinstance(v, Timestamp):
        return (11, (v.time, v.inc))
    if isinstance(v, (Regex, re.Pattern)):
        return (12, (v.pattern, str(v.flags)))
    if isinstance(v, MinKey):
        return (1, 0)
    if isinstance(v, MaxKey):
        return (127, 0)
    return (50, repr(v))


def is_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def truthy(v):
    return not (v is None or v is MISSING or v is False or (is_number(v) and v == 0))


def number_result(value, *operands):
    """MongoDB's numeric result type: double if any operand is a double, else long
    if any is a long (or the value no longer fits an int32), else int."""
    if any(isinstance(o, float) for o in operands) or isinstance(value, float):
        return float(value)
    if not -2 ** 63 <= value < 2 ** 63:
        return float(value)
    if any(isinstance(o, Int64) for o in operands):
        return Int64(value)
    return int(value)  # bson writes it as int32, or int64 when it does not fit


def numeric(v, what):
    if isinstance(v, Decimal128):
        raise unsupported('Decimal128 arithmetic in %s' % what)
    if not is_number(v):
        raise CommandError(14, 'TypeMismatch', '%s only supports numeric types, not %s' % (what, type(v).__name__))
    return v


def clone(doc):
    return bson.decode(bson.encode(doc, codec_options=CODEC), codec_options=CODEC)


def ensure_id_first(doc):
    if '_id' not in doc:
        return {'_id': ObjectId(), **doc}
    if next(iter(doc)) != '_id':
        return {'_id': doc['_id'], **{k: v for k, v in doc.items() if k != '_id'}}
    return doc


# ---------------------------------------------------------------- paths

def lookup(value, parts):
    """Values a dotted path reaches, as queries see them: arrays of documents are
    walked into, and numeric parts also index arrays."""
    if not parts:
        return [value]
    head, rest = parts[0], parts[1:]
    if isinstance(value, dict):
        return lookup(value[head], rest) if head in value else []
    if isinstance(value, list):
        found = []
        if head.isdigit() and int(head) < len(value):
            found += lookup(value[int(head)], rest)
        for elem in value:
            if isinstance(elem, dict):
                found += lookup(elem, parts)
        return found
    return []


def field_value(value, parts):
    """A "$a.b" field path as expressions see it: through an array it yields the array of values."""
    for i, part in enumerate(parts):
        if isinstance(value, dict):
            value = value.get(part, MISSING)
        elif isinstance(value, list):
            found = (field_value(e, parts[i:]) for e in value if isinstance(e, (dict, list)))
            return [x for x in found if x is not MISSING]
        else:
            return MISSING
    return value


def plain_get(doc, parts):
    for part in parts:
        if not isinstance(doc, dict) or part not in doc:
            return MISSING
        doc = doc[part]
    return doc


def with_path(doc, parts, value):
    """A copy of doc with the dotted path set (MISSING: removed); only the documents on the path are copied."""
    out = dict(doc)
    head = parts[0]
    if len(parts) == 1:
        if value is MISSING:
            out.pop(head, None)
        else:
            out[head] = value
    else:
        sub = doc.get(head)
        out[head] = with_path(sub if isinstance(sub, dict) else {}, parts[1:], value)
    return out


def container_of(doc, parts, create):
    """The document or array holding parts[-1] (updates, in place on a copy); None if absent and not create."""
    cur = doc
    for i, part in enumerate(parts[:-1]):
        if isinstance(cur, list) and part.isdigit():
            index = int(part)
            if index >= len(cur):
                if not create:
                    return None
                cur.extend([None] * (index + 1 - len(cur)))
            if cur[index] is None and create:
                cur[index] = {}
            nxt = cur[index]
        elif isinstance(cur, dict):
            if part not in cur:
                if not create:
                    return None
                cur[part] = {}
            nxt = cur[part]
        else:
            nxt = None
        if not isinstance(nxt, (dict, list)):
            if not create:
                return None
            raise CommandError(28, 'PathNotViable', "Cannot create field '%s' in element {%s: %s}"
                               % (parts[i + 1], part, json_util.dumps(nxt)))
        cur = nxt
    if isinstance(cur, list) and not parts[-1].isdigit():
        if not create:
            return None
        raise CommandError(28, 'PathNotViable', "Cannot create field '%s' in an array" % parts[-1])
    return cur


def child_get(container, key):
    if isinstance(container, list):
        index = int(key)
        return container[index] if index < len(container) else MISSING
    return container.get(key, MISSING)


def child_set(container, key, value):
    if isinstance(container, list):
        index = int(key)
        container.extend([None] * (index + 1 - len(container)))
        container[index] = value
    else:
        container[key] = value


def child_unset(container, key):
    if isinstance(container, list):
        if int(key) < len(container):
            container[int(key)] = None  # as MongoDB: $unset of an element leaves null
    else:
        container.pop(key, None)


# ---------------------------------------------------------------- queries

@functools.lru_cache(maxsize=256)
def compile_regex(pattern, options):
    flags = 0
    for letter in options:
        flags |= {'i': re.I, 'm': re.M, 's': re.S, 'x': re.X}.get(letter, 0)
    return re.compile(pattern, flags)


def as_regex(v, options=''):
    if isinstance(v, re.Pattern):
        return v
    if isinstance(v, Regex):
        return compile_regex(v.pattern, ''.join(c for c in 'imsx' if v.flags & {'i': re.I, 'm': re.M, 's': re.S,
                                                                              'x': re.X}[c]))
    return compile_regex(v, options)


def is_operator_doc(v):
    return isinstance(v, dict) and bool(v) and next(iter(v)).startswith('$')


def expanded(values):
    """Candidates for a comparison: each value and, for arrays, their elements; missing compares as null."""
    out = []
    for v in values:
        out.append(v)
        if isinstance(v, list):
            out.extend(v)
    return out or [None]


def equals(values, target):
    if isinstance(target, (Regex, re.Pattern)):
        return regex_matches(values, as_regex(target))
    key = canon(target)
    return any(canon(v) == key for v in expanded(values))


def regex_matches(values, regex):
    return any(isinstance(v, str) and regex.search(v) for v in expanded(values))


def compares(values, target, test):
    key = canon(target)
    return any(k[0] == key[0] and test(k, key) for k in map(canon, expanded(values)))


def elem_matches(elem, cond):
    if is_operator_doc(cond) and next(iter(cond)) not in ('$and', '$or', '$nor', '$expr'):
        return field_matches([elem], cond)
    return isinstance(elem, dict) and matches(elem, cond)


QUERY_OPERATORS = {
    '$eq': lambda vals, arg: equals(vals, arg),
    '$ne': lambda vals, arg: not equals(vals, arg),
    '$gt': lambda vals, arg: compares(vals, arg, lambda a, b: a > b),
    '$gte': lambda vals, arg: compares(vals, arg, lambda a, b: a >= b),
    '$lt': lambda vals, arg: compares(vals, arg, lambda a, b: a < b),
    '$lte': lambda vals, arg: compares(vals, arg, lambda a, b: a <= b),
    '$in': lambda vals, arg: any(equals(vals, x) for x in arg),
    '$nin': lambda vals, arg: not any(equals(vals, x) for x in arg),
    '$exists': lambda vals, arg: bool(vals) == truthy(arg),
    '$not': lambda vals, arg: not (regex_matches(vals, as_regex(arg)) if isinstance(arg, (Regex, re.Pattern))
                                   else field_matches(vals, arg)),
    '$size': lambda vals, arg: any(isinstance(v, list) and len(v) == arg for v in vals),
    '$all': lambda vals, arg: bool(arg) and all(equals(vals, x) for x in arg),
    '$elemMatch': lambda vals, arg: any(isinstance(v, list) and any(elem_matches(e, arg) for e in v) for v in vals),
}


def field_matches(values, cond):
    """Whether the values a path reaches satisfy cond (an operator document or a value to equal)."""
    if not is_operator_doc(cond):
        return equals(values, cond)
    for op, arg in cond.items():
        if op == '$regex':
            if not regex_matches(values, as_regex(arg, cond.get('$options', ''))):
                return False
        elif op == '$options':
            continue
        elif op in QUERY_OPERATORS:
            if not QUERY_OPERATORS[op](values, arg):
                return False
        else:
            raise CommandError(2, 'BadValue', 'test double: unsupported query operator %s' % op)
    return True


def matches(doc, query):
    for key, cond in query.items():
        if key == '$and':
            ok = all(matches(doc, q) for q in cond)
        elif key == '$or':
            ok = any(matches(doc, q) for q in cond)
        elif key == '$nor':
            ok = not any(matches(doc, q) for q in cond)
        elif key == '$expr':
            ok = truthy(evaluate(cond, doc))
        elif key == '$comment':
            continue
        elif key.startswith('$'):
            raise CommandError(2, 'BadValue', 'test double: unsupported query operator %s' % key)
        else:
            ok = field_matches(lookup(doc, key.split('.')), cond)
        if not ok:
            return False
    return True


def sort_docs(docs, spec):
    """Sorts in place like MongoDB: per key, an array sorts by its smallest element
    ascending and its largest descending; missing sorts as null."""
    for path, direction in reversed(list(spec.items())):
        if not is_number(direction) or direction not in (1, -1):
            raise unsupported('sort specification %s: %r' % (path, direction))
        descending = direction < 0
        parts = path.split('.')

        def key(doc):
            values = []
            for v in lookup(doc, parts):
                values.extend(v) if isinstance(v, list) else values.append(v)
            keys = [canon(v) for v in values] or [canon(None)]
            return max(keys) if descending else min(keys)

        docs.sort(key=key, reverse=descending)  # stable, also reversed
    return docs


# ---------------------------------------------------------------- updates

def push_items(arg, op):
    if isinstance(arg, dict) and '$each' in arg:
        if set(arg) != {'$each'}:
            raise unsupported('%s modifiers %s' % (op, sorted(set(arg) - {'$each'})))
        return list(arg['$each'])
    return [arg]


def apply_operator(doc, op, path, arg):
    parts = path.split('.')
    if any(part.startswith('$') for part in parts):
        raise unsupported('positional update path %s' % path)
    container = container_of(doc, parts, create=op not in ('$unset', '$pull', '$rename'))
    if container is None:
        return
    key = parts[-1]
    cur = child_get(container, key)
    if op in ('$set', '$setOnInsert'):
        child_set(container, key, arg)
    elif op == '$unset':
        child_unset(container, key)
    elif op in ('$inc', '$mul'):
        numeric(arg, op)
        if cur is MISSING:
            child_set(container, key, number_result(0 if op == '$mul' else arg, arg))
        else:
            numeric(cur, op)
            child_set(container, key, number_result(cur + arg if op == '$inc' else cur * arg, cur, arg))
    elif op in ('$max', '$min'):
        if cur is MISSING or (canon(arg) > canon(cur) if op == '$max' else canon(arg) < canon(cur)):
            child_set(container, key, arg)
    elif op in ('$push', '$addToSet'):
        if cur is MISSING:
            cur = []
        elif not isinstance(cur, list):
            raise bad_value("The field '%s' must be an array but is of type %s" % (path, type(cur).__name__))
        items = list(cur)
        for item in push_items(arg, op):
            if op == '$push' or canon(item) not in {canon(x) for x in items}:
                items.append(item)
        child_set(container, key, items)
    elif op == '$pull':
        if isinstance(cur, list):
            child_set(container, key, [e for e in cur if not (elem_matches(e, arg) if isinstance(arg, dict)
                                                              else equals([e], arg))])
    elif op == '$rename':
        if cur is not MISSING:
            child_unset(container, key)
            new_parts = arg.split('.')
            child_set(container_of(doc, new_parts, create=True), new_parts[-1], cur)
    elif op == '$currentDate':
        now = datetime.datetime.now(datetime.timezone.utc)
        if isinstance(arg, dict) and arg.get('$type') == 'timestamp':
            child_set(container, key, Timestamp(int(now.timestamp()), 1))
        else:
            child_set(container, key, now.replace(microsecond=now.microsecond // 1000 * 1000))


UPDATE_OPERATORS = {'$set', '$setOnInsert', '$unset', '$inc', '$mul', '$max', '$min', '$push', '$addToSet',
                    '$pull', '$rename', '$currentDate'}


def is_replacement(update):
    return not update or not next(iter(update)).startswith('$')


def apply_update(doc, update, inserting=False):
    """The updated copy of doc (stored documents are never changed in place)."""
    if isinstance(update, list):
        raise unsupported('pipeline-style update')
    if is_replacement(update):
        if any(k.startswith('$') for k in update):
            raise CommandError(52, 'DollarPrefixedFieldName', 'The dollar ($) prefixed field is not valid')
        new = ensure_id_first({'_id': doc['_id'], **update} if '_id' in doc else dict(update))
    else:
        new = clone(doc)
        for op, fields in update.items():
            if op not in UPDATE_OPERATORS:
                raise CommandError(9, 'FailedToParse', 'test double: unsupported update operator %s' % op)
            if op == '$setOnInsert' and not inserting:
                continue
            for path, arg in fields.items():
                apply_operator(new, op, path, arg)
    if '_id' in doc and canon(new.get('_id', MISSING)) != canon(doc['_id']):
        raise CommandError(66, 'ImmutableField', "After applying the update, the (immutable) field '_id' "
                           'was found to have been altered to _id: %s' % json_util.dumps(new.get('_id')))
    return new


def upsert_seed(query):
    """The document an upsert starts from: the equality fields of the query."""
    seed = {}

    def add(q):
        for key, cond in q.items():
            if key == '$and':
                for sub in cond:
                    add(sub)
            elif key.startswith('$') or isinstance(cond, (Regex, re.Pattern)):
                continue
            elif is_operator_doc(cond):
                if '$eq' in cond:
                    apply_operator(seed, '$set', key, cond['$eq'])
            else:
                apply_operator(seed, '$set', key, cond)

    add(query)
    return seed


# ---------------------------------------------------------------- aggregation expressions

def args_of(arg, doc):
    return [evaluate(a, doc) for a in (arg if isinstance(arg, list) else [arg])]


def two_args(arg, doc, name):
    values = args_of(arg, doc)
    if len(values) != 2:
        raise CommandError(16020, 'Location16020', 'Expression %s takes exactly 2 arguments. %d were passed in.'
                           % (name, len(values)))
    return values


def is_nullish(v):
    return v is None or v is MISSING


def expr_add(arg, doc):
    values = args_of(arg, doc)
    if any(is_nullish(v) for v in values):
        return None
    dates = [v for v in values if isinstance(v, datetime.datetime)]
    nums = [numeric(v, '$add') for v in values if not isinstance(v, datetime.datetime)]
    if len(dates) > 1:
        raise CommandError(16612, 'Location16612', 'only one date allowed in an $add expression')
    total = number_result(sum(nums), *nums)
    return dates[0] + datetime.timedelta(milliseconds=total) if dates else total


def expr_subtract(arg, doc):
    a, b = two_args(arg, doc, '$subtract')
    if is_nullish(a) or is_nullish(b):
        return None
    if isinstance(a, datetime.datetime):
        if isinstance(b, datetime.datetime):
            return Int64(to_ms(a) - to_ms(b))
        return a - datetime.timedelta(milliseconds=numeric(b, '$subtract'))
    return number_result(numeric(a, '$subtract') - numeric(b, '$subtract'), a, b)


def expr_multiply(arg, doc):
    values = args_of(arg, doc)
    if any(is_nullish(v) for v in values):
        return None
    return number_result(functools.reduce(lambda x, y: x * y, (numeric(v, '$multiply') for v in values), 1), *values)


def expr_divide(arg, doc):
    a, b = two_args(arg, doc, '$divide')
    if is_nullish(a) or is_nullish(b):
        return None
    if numeric(b, '$divide') == 0:
        raise CommandError(2, 'BadValue', "can't $divide by zero")
    return float(numeric(a, '$divide')) / b


def expr_mod(arg, doc):
    """The remainder with the dividend's sign, as MongoDB's $mod (and C's %) gives it."""
    a, b = two_args(arg, doc, '$mod')
    if is_nullish(a) or is_nullish(b):
        return None
    if numeric(b, '$mod') == 0:
        raise CommandError(16610, 'Location16610', "can't $mod by zero")
    if isinstance(numeric(a, '$mod'), float) or isinstance(b, float):
        return math.fmod(a, b)
    remainder = abs(a) % abs(b)
    return number_result(-remainder if a < 0 else remainder, a, b)


def expr_cond(arg, doc):
    if isinstance(arg, dict):
        arg = [arg.get('if'), arg.get('then'), arg.get('else')]
    if len(arg) != 3:
        raise bad_value('$cond takes exactly 3 arguments')
    return evaluate(arg[1] if truthy(evaluate(arg[0], doc)) else arg[2], doc)


def expr_if_null(arg, doc):
    for a in arg[:-1]:
        v = evaluate(a, doc)
        if not is_nullish(v):
            return v
    return evaluate(arg[-1], doc)


def expr_size(arg, doc):
    v = evaluate(arg[0] if isinstance(arg, list) else arg, doc)
    if not isinstance(v, list):
        raise CommandError(17124, 'Location17124', 'The argument to $size must be an array. Type of argument is %s'
                           % ('missing' if v is MISSING else type(v).__name__))
    return len(v)


def expr_array_elem_at(arg, doc):
    array, index = two_args(arg, doc, '$arrayElemAt')
    if is_nullish(array) or is_nullish(index):
        return None
    if not isinstance(array, list):
        raise CommandError(28689, 'Location28689', "$arrayElemAt's first argument must be an array")
    index = int(numeric(index, '$arrayElemAt'))
    return array[index] if -len(array) <= index < len(array) else MISSING


def converter(name, target, bits):
    """$toLong, $toInt, $toDouble: null stays null, a date becomes milliseconds, numbers truncate."""
    def convert(arg, doc):
        v = evaluate(arg, doc)
        if is_nullish(v):
            return None
        if isinstance(v, datetime.datetime):
            v = to_ms(v)
        elif isinstance(v, Decimal128):
            v = v.to_decimal()
        try:
            result = target(v)
            if bits and not -2 ** (bits - 1) <= result < 2 ** (bits - 1):
                raise OverflowError('out of range')
        except (TypeError, ValueError, OverflowError) as error:
            raise CommandError(241, 'ConversionFailure', 'Failed to parse number in %s: %s' % (name, error))
        return result
    return convert


def array_or_args(arg, doc):
    """$sum and friends as expressions: over the one array argument, or over the arguments."""
    values = args_of(arg, doc)
    return values[0] if len(values) == 1 and isinstance(values[0], list) else values


def compare_expr(test):
    def run(arg, doc):
        a, b = two_args(arg, doc, 'comparison')
        return test(canon(a), canon(b))
    return run


def expr_concat(arg, doc):
    values = args_of(arg, doc)
    if any(is_nullish(v) for v in values):
        return None
    if not all(isinstance(v, str) for v in values):
        raise CommandError(16702, 'Location16702', '$concat only supports strings')
    return ''.join(values)


def expr_in(arg, doc):
    value, array = two_args(arg, doc, '$in')
    if not isinstance(array, list):
        raise CommandError(40081, 'Location40081', '$in requires an array as a second argument')
    return canon(value) in {canon(x) for x in array}


def total(values):
    nums = [v for v in values if is_number(v)]
    return number_result(sum(nums), *nums)


def average(values):
    nums = [v for v in values if is_number(v)]
    return float(sum(nums)) / len(nums) if nums else None


def extreme(pick):
    def run(values):
        present = [v for v in values if not is_nullish(v)]
        return pick(present, key=canon) if present else None
    return run


def unique_values(values):
    seen, out = set(), []
    for v in values:
        if v is not MISSING and canon(v) not in seen:
            seen.add(canon(v))
            out.append(v)
    return out


EXPRESSIONS = {
    '$literal': lambda arg, doc: arg,
    '$cond': expr_cond,
    '$ifNull': expr_if_null,
    '$eq': compare_expr(lambda a, b: a == b),
    '$ne': compare_expr(lambda a, b: a != b),
    '$gt': compare_expr(lambda a, b: a > b),
    '$gte': compare_expr(lambda a, b: a >= b),
    '$lt': compare_expr(lambda a, b: a < b),
    '$lte': compare_expr(lambda a, b: a <= b),
    '$cmp': compare_expr(lambda a, b: (a > b) - (a < b)),
    '$and': lambda arg, doc: all(truthy(v) for v in args_of(arg, doc)),
    '$or': lambda arg, doc: any(truthy(v) for v in args_of(arg, doc)),
    '$not': lambda arg, doc: not truthy(args_of(arg, doc)[0]),
    '$add': expr_add,
    '$subtract': expr_subtract,
    '$multiply': expr_multiply,
    '$divide': expr_divide,
    '$mod': expr_mod,
    '$size': expr_size,
    '$arrayElemAt': expr_array_elem_at,
    '$in': expr_in,
    '$concat': expr_concat,
    '$toLong': converter('$toLong', lambda v: Int64(int(v)), 64),
    '$toInt': converter('$toInt', int, 32),
    '$toDouble': converter('$toDouble', float, 0),
    '$sum': lambda arg, doc: total(array_or_args(arg, doc)),
    '$avg': lambda arg, doc: average(array_or_args(arg, doc)),
    '$min': lambda arg, doc: extreme(min)(array_or_args(arg, doc)),
    '$max': lambda arg, doc: extreme(max)(array_or_args(arg, doc)),
}


def evaluate(expr, doc):
    """An aggregation expression on doc; MISSING when it names a field that is not there."""
    if isinstance(expr, str) and expr.startswith('$'):
        if expr.startswith('$$'):
            name, _, rest = expr[2:].partition('.')
            if name == 'REMOVE':
                return MISSING
            if name not in ('ROOT', 'CURRENT'):
                raise unsupported('variable $$%s' % name)
            return field_value(doc, rest.split('.')) if rest else doc
        return field_value(doc, expr[1:].split('.'))
    if isinstance(expr, list):
        return [None if v is MISSING else v for v in (evaluate(e, doc) for e in expr)]
    if isinstance(expr, dict):
        if is_operator_doc(expr):
            if len(expr) != 1:
                raise CommandError(15983, 'Location15983', 'An object representing an expression must have exactly '
                                   'one field: %s' % json_util.dumps(expr))
            op, arg = next(iter(expr.items()))
            if op not in EXPRESSIONS:
                raise CommandError(168, 'InvalidPipelineOperator', 'test double: unsupported expression operator %s'
                                   % op)
            return EXPRESSIONS[op](arg, doc)
        out = {}
        for key, sub in expr.items():
            value = evaluate(sub, doc)
            if value is not MISSING:
                out[key] = value
        return out
    return expr


# ---------------------------------------------------------------- projection and stages

def flatten_spec(spec, prefix=''):
    """(dotted path, value) pairs; nested non-operator documents become dotted paths."""
    for key, value in spec.items():
        path = prefix + key
        if isinstance(value, dict) and value and not is_operator_doc(value):
            yield from flatten_spec(value, path + '.')
        else:
            yield path, value


def path_tree(paths):
    tree = {}
    for path in paths:
        node = tree
        parts = path.split('.')
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if node is True:
                break
        else:
            node[parts[-1]] = True
    return tree


def include(doc, tree):
    out = {}
    for key, value in doc.items():
        node = tree.get(key)
        if node is True:
            out[key] = value
        elif node:
            if isinstance(value, dict):
                out[key] = include(value, node)
            elif isinstance(value, list):
                out[key] = [include(e, node) for e in value if isinstance(e, dict)]
    return out


def exclude(doc, tree):
    out = {}
    for key, value in doc.items():
        node = tree.get(key)
        if node is True:
            continue
        if node and isinstance(value, dict):
            value = exclude(value, node)
        elif node and isinstance(value, list):
            value = [exclude(e, node) if isinstance(e, dict) else e for e in value]
        out[key] = value
    return out


def projector(spec):
    """A function projecting a document as find's projection or $project does."""
    includes, excludes, computed = [], [], []
    for path, value in flatten_spec(spec):
        if isinstance(value, (bool, int, float)):
            (includes if value else excludes).append(path)
        elif is_operator_doc(value) and next(iter(value)) in ('$slice', '$elemMatch', '$meta'):
            raise unsupported('projection operator %s' % next(iter(value)))
        else:
            computed.append((path.split('.'), value))
    keep_id = '_id' not in excludes
    excludes = [p for p in excludes if p != '_id'] if includes or computed else excludes
    if (includes or computed) and excludes:
        raise CommandError(31254, 'Location31254', 'Cannot do exclusion on field %s in inclusion projection'
                           % excludes[0])
    if not includes and not computed:
        tree = path_tree(excludes)
        return lambda doc: exclude(doc, tree)
    tree = path_tree(includes + (['_id'] if keep_id else []))

    def project(doc):
        out = include(doc, tree)
        for parts, expr in computed:
            out = with_path(out, parts, evaluate(expr, doc))
        return out
    return project


def add_fields(docs, spec):
    fields = [(path.split('.'), expr) for path, expr in flatten_spec(spec)]
    out = []
    for doc in docs:
        new = doc
        for parts, expr in fields:
            new = with_path(new, parts, evaluate(expr, doc))
        out.append(new)
    return out


ACCUMULATORS = {
    '$sum': total,
    '$avg': average,
    '$min': extreme(min),
    '$max': extreme(max),
    '$first': lambda values: None if not values or values[0] is MISSING else values[0],
    '$last': lambda values: None if not values or values[-1] is MISSING else values[-1],
    '$push': lambda values: [v for v in values if v is not MISSING],
    '$addToSet': unique_values,
}


def group(docs, spec):
    if '_id' not in spec:
        raise CommandError(15955, 'Location15955', 'a group specification must include an _id')
    fields = []
    for name, acc in spec.items():
        if name == '_id':
            continue
        if not isinstance(acc, dict) or len(acc) != 1:
            raise CommandError(40234, 'Location40234', "The field '%s' must be an accumulator object" % name)
        op, expr = next(iter(acc.items()))
        if op == '$count':
            op, expr = '$sum', 1
        if op not in ACCUMULATORS:
            raise CommandError(15952, 'Location15952', 'test double: unsupported accumulator %s' % op)
        fields.append((name, ACCUMULATORS[op], expr))
    groups = {}  # first-seen order
    for doc in docs:
        key = evaluate(spec['_id'], doc)
        key = None if key is MISSING else key
        groups.setdefault(canon(key), (key, []))[1].append(doc)
    return [{'_id': key, **{name: finish([evaluate(expr, d) for d in members]) for name, finish, expr in fields}}
            for key, members in groups.values()]


def unwind(docs, arg):
    if isinstance(arg, str):
        arg = {'path': arg}
    path = arg.get('path')
    if not isinstance(path, str) or not path.startswith('$'):
        raise CommandError(28818, 'Location28818', '$unwind path must be a string starting with $')
    parts, preserve = path[1:].split('.'), arg.get('preserveNullAndEmptyArrays', False)
    index_parts = arg['includeArrayIndex'].split('.') if arg.get('includeArrayIndex') else None
    out = []
    for doc in docs:
        value = plain_get(doc, parts)
        if isinstance(value, list) and value:
            for i, elem in enumerate(value):
                new = with_path(doc, parts, elem)
                out.append(with_path(new, index_parts, Int64(i)) if index_parts else new)
        elif not isinstance(value, list) and not is_nullish(value):
            out.append(with_path(doc, index_parts, None) if index_parts else doc)
        elif preserve:
            new = with_path(doc, parts, MISSING) if value == [] else doc
            out.append(with_path(new, index_parts, None) if index_parts else new)
    return out


def replace_root(docs, expr):
    out = []
    for doc in docs:
        new = evaluate(expr, doc)
        if not isinstance(new, dict):
            raise CommandError(40228, 'Location40228', "'newRoot' expression must evaluate to an object")
        out.append(new)
    return out


def positive_int(value, stage):
    if not is_number(value) or value != int(value) or value < 0 or (stage == '$limit' and value == 0):
        raise bad_value('invalid argument to %s stage: %r' % (stage, value))
    return int(value)


def count_stage(docs, name):
    if not isinstance(name, str) or not name or name.startswith('$') or '.' in name:
        raise bad_value('the count field must be a non-empty string without $ or .')
    return [{name: len(docs)}] if docs else []


STAGES = {
    '$match': lambda docs, q: [d for d in docs if matches(d, q)],
    '$group': group,
    '$sort': lambda docs, spec: sort_docs(list(docs), spec),
    '$limit': lambda docs, n: docs[:positive_int(n, '$limit')],
    '$skip': lambda docs, n: docs[positive_int(n, '$skip'):],
    '$project': lambda docs, spec: list(map(projector(spec), docs)),
    '$addFields': add_fields,
    '$set': add_fields,
    '$unset': lambda docs, f: list(map(projector({p: 0 for p in ([f] if isinstance(f, str) else f)}), docs)),
    '$unwind': unwind,
    '$count': count_stage,
    '$replaceRoot': lambda docs, arg: replace_root(docs, arg.get('newRoot')),
    '$replaceWith': replace_root,
    '$facet': lambda docs, spec: [{name: run_pipeline(docs, sub) for name, sub in spec.items()}],
    '$sortByCount': lambda docs, expr: sort_docs(group(docs, {'_id': expr, 'count': {'$sum': 1}}), {'count': -1}),
}


def run_pipeline(docs, pipeline):
    for stage in pipeline:
        if not isinstance(stage, dict) or len(stage) != 1:
            raise CommandError(40323, 'Location40323', 'A pipeline stage specification object must contain exactly '
                               'one field.')
        name, arg = next(iter(stage.items()))
        if name not in STAGES:
            raise unsupported('stage %s' % name)
        docs = STAGES[name](docs, arg)
    return docs


# ---------------------------------------------------------------- storage

def index_values(doc, field):
    """What an index holds for one field: the value, each element of an array (multikey), or null."""
    found = []
    for v in lookup(doc, field.split('.')):
        found.extend(v) if isinstance(v, list) else found.append(v)
    return found or [None]


class Collection:
    def __init__(self):
        self.docs = {}  # canon(_id) -> document, in insertion (natural) order
        self.indexes = {'_id_': {'v': 2, 'key': {'_id': 1}, 'name': '_id_'}}
        self.unique = {}  # unique index name -> {key tuple: canon(_id) of the holder}
        self.leading = {}  # unique index name -> {canon(first field's value): {canon(_id), ...}}
        self.arrival = {}  # canon(_id) -> when it was first put: the natural order of a subset

    def index_keys(self, spec, doc):
        """The keys doc has in index spec (none when a sparse or partial index leaves it out)."""
        if spec.get('sparse') and not any(lookup(doc, field.split('.')) for field in spec['key']):
            return set()
        if 'partialFilterExpression' in spec and not matches(doc, spec['partialFilterExpression']):
            return set()
        values = [index_values(doc, field) for field in spec['key']]
        return {tuple(map(canon, combo)) for combo in itertools.product(*values)}

    def conflict(self, doc):
        """The unique index doc would violate, or None."""
        owner = canon(doc['_id'])
        for name, entries in self.unique.items():
            if any(entries.get(key, owner) != owner for key in self.index_keys(self.indexes[name], doc)):
                return name
        return None

    def _index(self, doc, add):
        owner = canon(doc['_id'])
        for name, entries in self.unique.items():
            leading = self.leading[name]
            for key in self.index_keys(self.indexes[name], doc):
                if add:
                    entries[key] = owner
                    leading.setdefault(key[0], set()).add(owner)
                elif entries.get(key) == owner:
                    del entries[key]
                    leading.get(key[0], set()).discard(owner)

    def put(self, doc):
        old = self.docs.get(canon(doc['_id']))
        if old is not None:
            self._index(old, add=False)
        else:
            self.arrival[canon(doc['_id'])] = len(self.arrival)
        self.docs[canon(doc['_id'])] = doc
        self._index(doc, add=True)

    def remove(self, doc_id):
        old = self.docs.pop(canon(doc_id), None)
        self.arrival.pop(canon(doc_id), None)
        if old is not None:
            self._index(old, add=False)

    def add_index(self, spec):
        self.indexes[spec['name']] = spec
        if spec.get('unique'):
            entries = self.unique[spec['name']] = {}
            leading = self.leading[spec['name']] = {}
            for doc in self.docs.values():
                for key in self.index_keys(spec, doc):
                    entries[key] = canon(doc['_id'])
                    leading.setdefault(key[0], set()).add(canon(doc['_id']))

    def drop_index(self, name):
        self.indexes.pop(name, None)
        self.unique.pop(name, None)
        self.leading.pop(name, None)

    def candidates(self, query):
        """Documents that may match query: by _id, or by a unique index (one field or
        several) whose fields all have a plain equality in the query, else all of them."""
        equal = {field: value for field, value in query.items()
                 if not field.startswith('$') and value is not None
                 and not isinstance(value, (dict, list, Regex, re.Pattern))}
        if '_id' in equal:
            doc = self.docs.get(canon(equal['_id']))
            return [doc] if doc is not None else []
        for name, entries in self.unique.items():
            spec = self.indexes[name]
            fields = list(spec['key'])
            if all(f in equal for f in fields) and 'partialFilterExpression' not in spec:
                holder = entries.get(tuple(canon(equal[f]) for f in fields))
                return [self.docs[holder]] if holder is not None else []
        # A unique index's first field equal to a value, or $in values: the documents
        # the index holds under them (a partial index holds only those it covers, and
        # the query's own test of that field keeps out the others), in natural order.
        for name in self.unique:
            first = next(iter(self.indexes[name]['key']))
            wanted = query.get(first)
            if isinstance(wanted, dict) and set(wanted) == {'$in'} and isinstance(wanted['$in'], list):
                values = wanted['$in']
            elif first in equal:
                values = [equal[first]]
            else:
                continue
            if any(isinstance(v, (dict, list, Regex, re.Pattern)) or v is None for v in values):
                continue
            owners = set()
            for v in values:
                owners |= self.leading[name].get(canon(v), set())
            return [self.docs[key] for key in sorted(owners, key=self.arrival.__getitem__)]
        return list(self.docs.values())

    def find(self, query):
        return [d for d in self.candidates(query) if matches(d, query)]


class Store:
    """All databases, under one lock; with a data directory every change is a journal
    record, written (one write per command) before the command is acknowledged."""

    def __init__(self, data_dir=None):
        self.dbs = {}  # db name -> {collection name -> Collection}
        self.lock = threading.Lock()
        self.pending = []
        self.journal = None
        if data_dir:
            os.makedirs(data_dir, exist_ok=True)
            self.path = os.path.join(data_dir, 'journal.bson')
            self._replay()
            self.journal = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def collection(self, db, name):
        return self.dbs.get(db, {}).get(name)

    def _apply(self, rec):
        op, db = rec['op'], rec['db']
        if op == 'dropDatabase':
            self.dbs.pop(db, None)
            return
        colls = self.dbs.setdefault(db, {})
        if op == 'drop':
            colls.pop(rec['coll'], None)
            if not colls:
                del self.dbs[db]
            return
        coll = colls.get(rec['coll'])
        if coll is None:
            coll = colls[rec['coll']] = Collection()
        if op == 'put':
            coll.put(rec['doc'])
        elif op == 'remove':
            coll.remove(rec['id'])
        elif op == 'createIndex':
            coll.add_index(rec['spec'])
        elif op == 'dropIndex':
            coll.drop_index(rec['name'])

    def change(self, op, db, coll=None, **fields):
        rec = {'op': op, 'db': db, 'coll': coll, **fields}
        self._apply(rec)
        if self.journal is not None:
            self.pending.append(bson.encode(rec, codec_options=CODEC))

    def commit(self):
        """Writes the pending records (to the OS: they survive the process being killed)."""
        data, self.pending = b''.join(self.pending), []
        view = memoryview(data)
        while view:
            view = view[os.write(self.journal, view):]

    def _replay(self):
        data = b''
        if os.path.exists(self.path):
            with open(self.path, 'rb') as f:
                data = f.read()
        pos = 0
        while pos + 4 <= len(data):
            size = struct.unpack_from('<i', data, pos)[0]
            if size < 5 or pos + size > len(data):
                break  # a record cut short by a kill: it was never acknowledged
            self._apply(bson.decode(data[pos:pos + size], codec_options=CODEC))
            pos += size
        if pos != len(data):
            log('journal: ignoring %d bytes of an incomplete record at the end' % (len(data) - pos))
        # Rewrite the journal as a snapshot of the state: compact, and without a torn tail.
        tmp = self.path + '.tmp'
        with open(tmp, 'wb') as f:
            for db, colls in self.dbs.items():
                for name, coll in colls.items():
                    f.write(bson.encode({'op': 'create', 'db': db, 'coll': name}, codec_options=CODEC))
                    for spec in coll.indexes.values():
                        if spec['name'] != '_id_':
                            f.write(bson.encode({'op': 'createIndex', 'db': db, 'coll': name, 'spec': spec},
                                                codec_options=CODEC))
                    for doc in coll.docs.values():
                        f.write(bson.encode({'op': 'put', 'db': db, 'coll': name, 'doc': doc}, codec_options=CODEC))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)

    def close(self):
        if self.journal is not None:
            os.close(self.journal)
            self.journal = None


# ---------------------------------------------------------------- commands

def dup_key_error(ns, name, spec, doc):
    key_value = {field: None if v is MISSING else v
                 for field, v in ((f, plain_get(doc, f.split('.'))) for f in spec['key'])}
    shown = ', '.join('%s: %s' % (k, json_util.dumps(v)) for k, v in key_value.items())
    return CommandError(11000, 'DuplicateKey', 'E11000 duplicate key error collection: %s index: %s dup key: { %s }'
                        % (ns, name, shown), keyPattern=spec['key'], keyValue=key_value)


def default_index_name(key):
    return '_'.join('%s_%s' % (field, value) for field, value in key.items())


INDEX_OPTIONS = ('unique', 'sparse', 'partialFilterExpression', 'expireAfterSeconds')


def same_options(a, b):
    return all(canon(a.get(o, MISSING)) == canon(b.get(o, MISSING)) for o in INDEX_OPTIONS[:3])


class Cursor:
    def __init__(self, ns, docs):
        self.ns, self.docs, self.used = ns, docs, time.monotonic()


class Server:
    """Runs commands on a Store; the network side is in MongoDouble."""

    def __init__(self, store):
        self.store = store
        self.cursors = {}
        self.commands = {
            'hello': self.cmd_hello, 'isMaster': self.cmd_hello, 'ismaster': self.cmd_hello,
            'ping': lambda db, body: {}, 'buildInfo': self.cmd_build_info, 'buildinfo': self.cmd_build_info,
            'endSessions': lambda db, body: {}, 'killCursors': self.cmd_kill_cursors,
            'insert': self.cmd_insert, 'update': self.cmd_update, 'delete': self.cmd_delete,
            'find': self.cmd_find, 'getMore': self.cmd_get_more, 'aggregate': self.cmd_aggregate,
            'count': self.cmd_count, 'distinct': self.cmd_distinct,
            'createIndexes': self.cmd_create_indexes, 'listIndexes': self.cmd_list_indexes,
            'dropIndexes': self.cmd_drop_indexes, 'create': self.cmd_create, 'drop': self.cmd_drop,
            'dropDatabase': self.cmd_drop_database, 'listCollections': self.cmd_list_collections,
            'listDatabases': self.cmd_list_databases,
        }

    def run(self, body, connection_id):
        name = next(iter(body), '')
        handler = self.commands.get(name)
        if handler is None:
            return {'ok': 0.0, 'errmsg': "no such command: '%s'" % name, 'code': 59, 'codeName': 'CommandNotFound'}
        if 'startTransaction' in body or 'autocommit' in body:
            return CommandError(20, 'IllegalOperation', 'test double: transactions are not supported').reply()
        db = body.get('$db', 'admin')
        try:
            if name in ('hello', 'isMaster', 'ismaster'):
                return {**self.cmd_hello(db, body, connection_id), 'ok': 1.0}
            with self.store.lock:
                try:
                    return {**handler(db, body), 'ok': 1.0}
                finally:
                    if self.store.pending:
                        self.store.commit()
        except CommandError as error:
            return error.reply()
        except Exception as error:  # a malformed command, or a gap in the double: an error reply either way
            log('%s command failed: %s: %s' % (name, type(error).__name__, error))
            return CommandError(1, 'InternalError', 'test double: %s command failed: %s: %s'
                                % (name, type(error).__name__, error)).reply()

    # -- server state

    def cmd_hello(self, db, body, connection_id=0):
        # A standalone (no setName, no "isdbgrid"), with sessions, and without topologyVersion
        # so that drivers poll instead of streaming. libmongoc 1.23 needs maxWireVersion >= 6.
        return {'isWritablePrimary' if next(iter(body)) == 'hello' else 'ismaster': True, 'helloOk': True,
                'maxBsonObjectSize': MAX_BSON, 'maxMessageSizeBytes': MAX_MESSAGE,
                'maxWriteBatchSize': MAX_WRITE_BATCH, 'localTime': datetime.datetime.now(datetime.timezone.utc),
                'logicalSessionTimeoutMinutes': 30, 'connectionId': connection_id,
                'minWireVersion': 0, 'maxWireVersion': 13, 'readOnly': False}

    def cmd_build_info(self, db, body):
        return {'version': '6.0.0-testdouble', 'versionArray': [6, 0, 0, 0], 'gitVersion': 'testdouble',
                'bits': 64, 'debug': False, 'maxBsonObjectSize': MAX_BSON}

    # -- cursors

    def cursor_reply(self, ns, docs, batch_size=None, single_batch=False):
        batch = self.take(docs, DEFAULT_BATCH if batch_size is None else batch_size)
        cursor_id = 0
        if len(batch) < len(docs) and not single_batch:
            now = time.monotonic()
            for stale in [k for k, c in self.cursors.items() if now - c.used > 600]:
                del self.cursors[stale]
            cursor_id = random.getrandbits(62) + 1
            self.cursors[cursor_id] = Cursor(ns, docs[len(batch):])
        return {'cursor': {'firstBatch': batch, 'id': Int64(cursor_id), 'ns': ns}}

    @staticmethod
    def take(docs, count):
        """The first count documents, cut short to keep a reply under 16 MiB (but at least one)."""
        batch, size = [], 0
        for doc in docs[:count]:
            size += len(bson.encode(doc, codec_options=CODEC))
            if batch and size > MAX_BSON - 16 * 1024:
                break
            batch.append(doc)
        return batch

    def cmd_get_more(self, db, body):
        cursor_id = int(body['getMore'])
        cursor = self.cursors.get(cursor_id)
        ns = '%s.%s' % (db, body.get('collection'))
        if cursor is None or cursor.ns != ns:
            raise CommandError(43, 'CursorNotFound', 'cursor id %d not found' % cursor_id)
        batch_size = body.get('batchSize') or len(cursor.docs)
        batch = self.take(cursor.docs, batch_size)
        cursor.docs, cursor.used = cursor.docs[len(batch):], time.monotonic()
        if not cursor.docs:
            del self.cursors[cursor_id]
            cursor_id = 0
        return {'cursor': {'nextBatch': batch, 'id': Int64(cursor_id), 'ns': ns}}

    def cmd_kill_cursors(self, db, body):
        killed, missing = [], []
        for cursor_id in body.get('cursors', []):
            (killed if self.cursors.pop(int(cursor_id), None) else missing).append(cursor_id)
        return {'cursorsKilled': killed, 'cursorsNotFound': missing, 'cursorsAlive': [], 'cursorsUnknown': []}

    # -- writes

    def insert_one(self, db, name, doc, coll):
        if isinstance(doc.get('_id'), list):
            raise bad_value("The '_id' value cannot be of type array")
        if coll is not None:
            if canon(doc['_id']) in coll.docs:
                raise dup_key_error('%s.%s' % (db, name), '_id_', coll.indexes['_id_'], doc)
            index = coll.conflict(doc)
            if index:
                raise dup_key_error('%s.%s' % (db, name), index, coll.indexes[index], doc)
        self.store.change('put', db, name, doc=doc)

    def replace(self, db, name, coll, new):
        index = coll.conflict(new)
        if index:
            raise dup_key_error('%s.%s' % (db, name), index, coll.indexes[index], new)
        self.store.change('put', db, name, doc=new)

    @staticmethod
    def write_reply(reply, errors):
        if errors:
            reply['writeErrors'] = errors
        return reply

    def cmd_insert(self, db, body):
        name, ordered = body['insert'], body.get('ordered', True)
        n, errors = 0, []
        for i, doc in enumerate(body.get('documents', [])):
            try:
                self.insert_one(db, name, ensure_id_first(doc), self.store.collection(db, name))
                n += 1
            except CommandError as error:
                errors.append({'index': i, 'code': error.code, 'errmsg': error.errmsg, **error.extra})
                if ordered:
                    break
        return self.write_reply({'n': n}, errors)

    def cmd_update(self, db, body):
        name, ordered = body['update'], body.get('ordered', True)
        n = modified = 0
        upserted, errors = [], []
        for i, spec in enumerate(body.get('updates', [])):
            try:
                matched, changed, new_id = self.update_one_spec(db, name, spec)
                n += matched
                modified += changed
                if new_id is not MISSING:
                    upserted.append({'index': i, '_id': new_id})
            except CommandError as error:
                errors.append({'index': i, 'code': error.code, 'errmsg': error.errmsg, **error.extra})
                if ordered:
                    break
        reply = {'n': n + len(upserted), 'nModified': modified}
        if upserted:
            reply['upserted'] = upserted
        return self.write_reply(reply, errors)

    def update_one_spec(self, db, name, spec):
        """Runs one update statement: (matched, modified, upserted _id or MISSING)."""
        query, update = spec.get('q', {}), spec['u']
        if spec.get('arrayFilters') or spec.get('collation'):
            raise unsupported('update option arrayFilters/collation')
        if spec.get('multi') and isinstance(update, dict) and is_replacement(update):
            raise CommandError(9, 'FailedToParse', 'multi update is not supported for replacement-style update')
        coll = self.store.collection(db, name)
        found = coll.find(query) if coll else []
        if not spec.get('multi'):
            found = found[:1]
        changed = 0
        for doc in found:
            new = apply_update(doc, update)
            if bson.encode(new, codec_options=CODEC) != bson.encode(doc, codec_options=CODEC):
                self.replace(db, name, coll, new)
                changed += 1
        if found or not spec.get('upsert'):
            return len(found), changed, MISSING
        seed = upsert_seed(query)
        if isinstance(update, dict) and is_replacement(update):
            new = {'_id': seed['_id'], **update} if '_id' in seed and '_id' not in update else dict(update)
        else:
            new = apply_update(seed, update, inserting=True)
        new = ensure_id_first(new)
        self.insert_one(db, name, new, coll)
        return 0, 0, new['_id']

    def cmd_delete(self, db, body):
        name, ordered = body['delete'], body.get('ordered', True)
        n, errors = 0, []
        coll = self.store.collection(db, name)
        for i, spec in enumerate(body.get('deletes', [])):
            try:
                found = coll.find(spec.get('q', {})) if coll else []
                for doc in found[:1] if spec.get('limit') else found:
                    self.store.change('remove', db, name, id=doc['_id'])
                    n += 1
            except CommandError as error:
                errors.append({'index': i, 'code': error.code, 'errmsg': error.errmsg, **error.extra})
                if ordered:
                    break
        return self.write_reply({'n': n}, errors)

    # -- reads

    def cmd_find(self, db, body):
        name = body['find']
        coll = self.store.collection(db, name)
        docs = coll.find(body.get('filter') or {}) if coll else []
        if body.get('sort'):
            sort_docs(docs, body['sort'])
        skip, limit = int(body.get('skip', 0)), int(body.get('limit', 0))
        docs = docs[skip:]
        if limit:
            docs = docs[:abs(limit)]
        if body.get('projection'):
            docs = list(map(projector(body['projection']), docs))
        return self.cursor_reply('%s.%s' % (db, name), docs, body.get('batchSize'),
                                 body.get('singleBatch') or limit < 0)

    def cmd_aggregate(self, db, body):
        name, pipeline = body['aggregate'], body.get('pipeline', [])
        if not isinstance(name, str):
            raise unsupported('database-level aggregate')
        if body.get('explain'):
            raise unsupported('aggregate explain')
        if not isinstance(body.get('cursor'), dict):
            raise CommandError(9, 'FailedToParse', "The 'cursor' option is required, except for aggregate with the "
                               'explain argument')
        coll = self.store.collection(db, name)
        if coll is None:
            docs = []
        elif pipeline and '$match' in pipeline[0]:  # let a leading $match use the indexes
            docs, pipeline = coll.find(pipeline[0]['$match']), pipeline[1:]
        else:
            docs = list(coll.docs.values())
        docs = run_pipeline(docs, pipeline)
        return self.cursor_reply('%s.%s' % (db, name), docs, body['cursor'].get('batchSize'))

    def cmd_count(self, db, body):
        coll = self.store.collection(db, body['count'])
        if not body.get('query') and not body.get('skip') and not body.get('limit'):
            return {'n': len(coll.docs) if coll else 0}  # the collection's size, as MongoDB's metadata count
        docs = coll.find(body.get('query') or {}) if coll else []
        docs = docs[int(body.get('skip', 0)):]
        limit = abs(int(body.get('limit', 0)))
        return {'n': len(docs[:limit] if limit else docs)}

    def cmd_distinct(self, db, body):
        coll = self.store.collection(db, body['distinct'])
        values = []
        for doc in coll.find(body.get('query') or {}) if coll else []:
            for v in lookup(doc, body['key'].split('.')):
                values.extend(v) if isinstance(v, list) else values.append(v)
        return {'values': unique_values(values)}

    # -- collections and indexes

    def cmd_create_indexes(self, db, body):
        name = body['createIndexes']
        ns = '%s.%s' % (db, name)
        coll = self.store.collection(db, name)
        created_automatically = coll is None
        if coll is None:
            self.store.change('create', db, name)
            coll = self.store.collection(db, name)
        before = len(coll.indexes)
        for spec in body.get('indexes', []):
            key = spec['key']
            if not isinstance(key, dict) or not key:
                raise CommandError(67, 'CannotCreateIndex', 'index key pattern must be a non-empty object')
            spec = {'v': 2, 'key': key, 'name': spec.get('name') or default_index_name(key),
                    **{o: spec[o] for o in INDEX_OPTIONS if o in spec}}
            same_name = coll.indexes.get(spec['name'])
            same_key = next((s for s in coll.indexes.values() if canon(s['key']) == canon(key)), None)
            if same_name and canon(same_name['key']) != canon(key):
                raise CommandError(86, 'IndexKeySpecsConflict', 'An existing index has the same name as the '
                                   'requested index but a different key: %s' % json_util.dumps(same_name))
            if same_key and same_key['name'] != spec['name']:
                raise CommandError(85, 'IndexOptionsConflict', 'Index already exists with a different name: %s'
                                   % same_key['name'])
            if same_key:
                if not same_options(same_key, spec):
                    raise CommandError(85, 'IndexOptionsConflict', 'An equivalent index already exists with the '
                                       'same name but different options: %s' % json_util.dumps(same_key))
                continue
            if spec.get('unique'):  # the documents already there must satisfy it
                seen = set()
                for doc in coll.docs.values():
                    keys = coll.index_keys(spec, doc)
                    if keys & seen:
                        raise dup_key_error(ns, spec['name'], spec, doc)
                    seen |= keys
            self.store.change('createIndex', db, name, spec=spec)
        reply = {'numIndexesBefore': before, 'numIndexesAfter': len(coll.indexes),
                 'createdCollectionAutomatically': created_automatically}
        if before == len(coll.indexes):
            reply['note'] = 'all indexes already exist'
        return reply

    def existing(self, db, name):
        coll = self.store.collection(db, name)
        if coll is None:
            raise CommandError(26, 'NamespaceNotFound', 'ns not found: %s.%s' % (db, name))
        return coll

    def cmd_list_indexes(self, db, body):
        coll = self.existing(db, body['listIndexes'])
        return self.cursor_reply('%s.%s' % (db, body['listIndexes']), list(coll.indexes.values()),
                                 body.get('cursor', {}).get('batchSize'))

    def cmd_drop_indexes(self, db, body):
        name, which = body['dropIndexes'], body.get('index')
        coll = self.existing(db, name)
        was = len(coll.indexes)
        if which == '*':
            names = [n for n in coll.indexes if n != '_id_']
        elif isinstance(which, dict):
            names = [s['name'] for s in coll.indexes.values() if canon(s['key']) == canon(which)]
            if not names:
                raise CommandError(27, 'IndexNotFound', "can't find index with key: %s" % json_util.dumps(which))
        else:
            names = [which] if isinstance(which, str) else list(which)
        for index in names:
            if index == '_id_':
                raise CommandError(72, 'InvalidOptions', 'cannot drop _id index')
            if index not in coll.indexes:
                raise CommandError(27, 'IndexNotFound', 'index not found with name [%s]' % index)
        for index in names:
            self.store.change('dropIndex', db, name, name=index)
        return {'nIndexesWas': was}

    def cmd_create(self, db, body):
        if self.store.collection(db, body['create']) is not None:
            raise CommandError(48, 'NamespaceExists', 'Collection %s.%s already exists.' % (db, body['create']))
        self.store.change('create', db, body['create'])
        return {}

    def cmd_drop(self, db, body):
        coll = self.existing(db, body['drop'])
        self.store.change('drop', db, body['drop'])
        return {'ns': '%s.%s' % (db, body['drop']), 'nIndexesWas': len(coll.indexes)}

    def cmd_drop_database(self, db, body):
        self.store.change('dropDatabase', db)
        return {'dropped': db}

    def cmd_list_collections(self, db, body):
        infos = [{'name': name, 'type': 'collection', 'options': {}, 'info': {'readOnly': False},
                  'idIndex': coll.indexes['_id_']} for name, coll in self.store.dbs.get(db, {}).items()]
        infos = [i for i in infos if matches(i, body.get('filter') or {})]
        if body.get('nameOnly'):
            infos = [{'name': i['name'], 'type': i['type']} for i in infos]
        return self.cursor_reply('%s.$cmd.listCollections' % db, infos, body.get('cursor', {}).get('batchSize'))

    def cmd_list_databases(self, db, body):
        dbs = [{'name': name, 'sizeOnDisk': float(sum(len(c.docs) for c in colls.values()) * 1024), 'empty': False}
               for name, colls in sorted(self.store.dbs.items())]
        dbs = [d for d in dbs if matches(d, body.get('filter') or {})]
        if body.get('nameOnly'):
            return {'databases': [{'name': d['name']} for d in dbs]}
        return {'databases': dbs, 'totalSize': sum(d['sizeOnDisk'] for d in dbs)}


# ---------------------------------------------------------------- wire protocol

class ProtocolError(Exception):
    pass


def recv_exact(sock, size):
    data = bytearray()
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        if not chunk:
            if data:
                raise ProtocolError('connection closed in the middle of a message')
            return None
        data += chunk
    return bytes(data)


def cstring(payload, pos):
    end = payload.index(b'\0', pos)
    return payload[pos:end].decode(), end + 1


def bson_at(payload, pos, end):
    size = struct.unpack_from('<i', payload, pos)[0]
    if size < 5 or pos + size > end:
        raise ProtocolError('bad BSON document length %d' % size)
    return bson.decode(payload[pos:pos + size], codec_options=CODEC), pos + size


def describe(body):
    """One line for --trace: the command, its collection and the interesting sizes."""
    name = next(iter(body), '?')
    keys = [k for k in body if k != name and k not in ('$db', 'lsid', '$clusterTime', '$readPreference')]
    sizes = ['%s[%d]' % (k, len(body[k])) for k in ('documents', 'updates', 'deletes', 'pipeline') if k in body]
    return '%s %r db=%s keys=%s %s' % (name, body.get(name), body.get('$db'), keys, ' '.join(sizes))


class _Handler(socketserver.BaseRequestHandler):
    def handle(self):
        double = self.server.double
        connection_id = double.connection_opened(self.request)
        try:
            while True:
                header = recv_exact(self.request, 16)
                if header is None:
                    return
                length, request_id, _, opcode = struct.unpack('<iiii', header)
                if not 16 < length <= MAX_MESSAGE:
                    raise ProtocolError('bad message length %d' % length)
                payload = recv_exact(self.request, length - 16)
                if payload is None:
                    raise ProtocolError('connection closed in the middle of a message')
                reply = double.message(opcode, request_id, payload, connection_id)
                if reply is not None:
                    self.request.sendall(reply)
        except (ConnectionError, TimeoutError):
            pass
        except OSError as error:
            if double.running:
                log('connection %d: %s' % (connection_id, error))
        except Exception as error:  # a malformed message costs its connection, never the server
            log('connection %d closed: %s: %s' % (connection_id, type(error).__name__, error))
        finally:
            double.connection_closed(self.request)


class _TCPServer(socketserver.ThreadingTCPServer):
    allow_reuse_address = True  # restart on the same port while old connections linger
    daemon_threads = True


class MongoDouble:
    """The server: MongoDouble(port=0).start(); .port; .stop()."""

    def __init__(self, port=0, data_dir=None, host='127.0.0.1', trace=False):
        if not ipaddress.ip_address(host).is_loopback:
            raise ValueError('mongo_double only binds a loopback address, not %s' % host)
        self.host, self.requested_port, self.trace = host, port, trace
        self.store = Store(data_dir)
        self.server = Server(self.store)
        self.tcp = None
        self.running = False
        self.clients = set()
        self.clients_lock = threading.Lock()
        self.connection_ids = itertools.count(1)
        self.request_ids = itertools.count(1)

    @property
    def port(self):
        return self.tcp.server_address[1]

    def start(self):
        self.tcp = _TCPServer((self.host, self.requested_port), _Handler)
        self.tcp.double = self
        self.running = True
        self.thread = threading.Thread(target=self.tcp.serve_forever, kwargs={'poll_interval': 0.1}, daemon=True)
        self.thread.start()
        return self

    def stop(self):
        self.running = False
        self.tcp.shutdown()
        with self.clients_lock:
            for sock in self.clients:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
        self.tcp.server_close()
        self.thread.join(5)
        with self.store.lock:
            self.store.close()

    def connection_opened(self, sock):
        with self.clients_lock:
            self.clients.add(sock)
            return next(self.connection_ids)

    def connection_closed(self, sock):
        with self.clients_lock:
            self.clients.discard(sock)

    def message(self, opcode, request_id, payload, connection_id):
        """The reply (bytes) to one message, or None when none is due."""
        if opcode == OP_MSG:
            return self.op_msg(request_id, payload, connection_id)
        if opcode == OP_QUERY:
            return self.op_query(request_id, payload, connection_id)
        raise ProtocolError('unsupported opcode %d' % opcode)

    def op_msg(self, request_id, payload, connection_id):
        # flagBits, then sections: kind 0 = the command body, kind 1 = a document
        # sequence (int32 size, cstring name, documents) that becomes body[name].
        flags = struct.unpack_from('<I', payload)[0]
        end = len(payload) - (4 if flags & 1 else 0)  # checksumPresent: a CRC-32C we do not check
        pos, body, sequences = 4, None, {}
        while pos < end:
            kind, pos = payload[pos], pos + 1
            if kind == 0:
                body, pos = bson_at(payload, pos, end)
            elif kind == 1:
                size = struct.unpack_from('<i', payload, pos)[0]
                if size < 5 or pos + size > end:
                    raise ProtocolError('bad document sequence length %d' % size)
                name, docs_at = cstring(payload, pos + 4)
                sequences[name] = bson.decode_all(payload[docs_at:pos + size], CODEC)
                pos += size
            else:
                raise ProtocolError('unknown OP_MSG section kind %d' % kind)
        if body is None:
            raise ProtocolError('OP_MSG without a body section')
        body.update(sequences)
        if self.trace:
            log('conn %d OP_MSG flags=%d %s' % (connection_id, flags, describe(body)))
        reply = self.server.run(body, connection_id)
        if flags & 2:  # moreToCome: an unacknowledged write, no reply wanted
            return None
        return self.pack(OP_MSG, request_id, struct.pack('<IB', 0, 0) + bson.encode(reply, codec_options=CODEC))

    def op_query(self, request_id, payload, connection_id):
        # Only commands: flags, "<db>.$cmd", skip, limit, the command (maybe wrapped in $query).
        ns, pos = cstring(payload, 4)
        query, _ = bson_at(payload, pos + 8, len(payload))
        if not ns.endswith('.$cmd'):
            reply, flags = {'$err': 'test double: OP_QUERY is only supported for commands', 'code': 352}, 2
        else:
            body = dict(query.get('$query', query))
            body['$db'] = ns[:-len('.$cmd')]
            if self.trace:
                log('conn %d OP_QUERY %s' % (connection_id, describe(body)))
            reply, flags = self.server.run(body, connection_id), 0
        doc = bson.encode(reply, codec_options=CODEC)
        return self.pack(OP_REPLY, request_id, struct.pack('<iqii', flags, 0, 0, 1) + doc)

    def pack(self, opcode, response_to, body):
        return struct.pack('<iiii', 16 + len(body), next(self.request_ids) & 0x7fffffff, response_to, opcode) + body


def main():
    parser = argparse.ArgumentParser(description='An in-memory MongoDB test double (not MongoDB).')
    parser.add_argument('--host', default='127.0.0.1', help='loopback address to bind (default 127.0.0.1)')
    parser.add_argument('--port', type=int, default=27017, help='port, 0 for any free one')
    parser.add_argument('--data-dir', help='journal every acknowledged write here and replay it on start')
    parser.add_argument('--trace', action='store_true', help='log every received command to stderr')
    args = parser.parse_args()
    host = '127.0.0.1' if args.host == 'localhost' else args.host
    double = MongoDouble(args.port, args.data_dir, host, args.trace).start()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    print('mongo_double listening on %s:%d' % (host, double.port), flush=True)
    while not stop.wait(0.5):
        pass
    double.stop()
    return 0


if __name__ == '__main__':
    sys.exit(main())
