#!/usr/bin/python3
"""Range requests (RFC 9110 section 14) and conditional requests
(RFC 9110 section 13)."""

import email.utils
import re
import time

import harness
from harness import http


class RangeTest(harness.ServerTestCase):

    NAME = 'medium.bin'
    PATH = '/medium.bin'

    @property
    def data(self):
        return self.content(self.NAME)

    @property
    def size(self):
        return len(self.data)

    def get(self, headers, path=None, method='GET'):
        return http(self.port, method, path or self.PATH, headers)

    def assert_206(self, resp, first, last):
        self.assertEqual(resp.status, 206, 'expected 206, got %r' % resp)
        self.assertEqual(resp.header('content-range'),
                         'bytes %d-%d/%d' % (first, last, self.size))
        self.assertEqual(resp.header('content-length'), str(last - first + 1))
        self.assertEqual(len(resp.body), last - first + 1)
        self.assertTrue(resp.body == self.data[first:last + 1], 'body bytes differ')

    def assert_full_200(self, resp):
        self.assertEqual(resp.status, 200, 'expected 200, got %r' % resp)
        self.assertIsNone(resp.header('content-range'))
        self.assertEqual(len(resp.body), self.size)
        self.assertTrue(resp.body == self.data, 'full body differs')

    # -- single ranges ------------------------------------------------

    def test_single_range(self):
        self.assert_206(self.get({'Range': 'bytes=0-99'}), 0, 99)

    def test_single_range_middle(self):
        self.assert_206(self.get({'Range': 'bytes=1000-4999'}), 1000, 4999)

    def test_single_byte(self):
        self.assert_206(self.get({'Range': 'bytes=5-5'}), 5, 5)

    def test_last_byte(self):
        n = self.size
        self.assert_206(self.get({'Range': 'bytes=%d-%d' % (n - 1, n - 1)}), n - 1, n - 1)

    def test_suffix_range(self):
        self.assert_206(self.get({'Range': 'bytes=-500'}), self.size - 500, self.size - 1)

    def test_suffix_longer_than_file(self):
        resp = http(self.port, 'GET', '/small.bin', {'Range': 'bytes=-5000'})
        self.assertEqual(resp.status, 206)
        self.assertEqual(resp.header('content-range'), 'bytes 0-1023/1024')
        self.assertEqual(resp.body, self.content('small.bin'))

    def test_open_ended_range(self):
        self.assert_206(self.get({'Range': 'bytes=100-'}), 100, self.size - 1)

    def test_range_whole_file(self):
        self.assert_206(self.get({'Range': 'bytes=0-'}), 0, self.size - 1)

    def test_range_end_past_eof_is_clamped(self):
        n = self.size
        resp = self.get({'Range': 'bytes=%d-%d' % (n - 10, n + 100000)})
        self.assert_206(resp, n - 10, n - 1)

    def test_range_on_head_is_ignored(self):
        # RFC 9110 14.2: range handling is defined for GET only; a server
        # MUST ignore Range on other methods, so HEAD gets a plain 200
        resp = self.get({'Range': 'bytes=0-99'}, method='HEAD')
        self.assertEqual(resp.status, 200, repr(resp))
        self.assertEqual(resp.header('content-length'), str(self.size))
        self.assertIsNone(resp.header('content-range'))
        self.assertEqual(resp.body, b'')

    def test_range_response_has_validators(self):
        resp = self.get({'Range': 'bytes=0-0'})
        self.assertIsNotNone(resp.header('etag'))
        self.assertEqual(resp.header('accept-ranges'), 'bytes')

    def test_huge_last_position_clamps(self):
        resp = self.get({'Range': 'bytes=10-99999999999999999999999999'})
        self.assert_206(resp, 10, self.size - 1)

    def test_repeated_range_field_ignored(self):
        raw = (b'GET /medium.bin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n'
               b'Range: bytes=0-9\r\nRange: bytes=20-29\r\n\r\n')
        self.assert_full_200(harness.raw_request(self.port, raw))

    # -- unsatisfiable ------------------------------------------------

    def test_huge_first_position_416(self):
        resp = self.get({'Range': 'bytes=99999999999999999999999999-'})
        self.assertEqual(resp.status, 416, repr(resp))
        self.assertEqual(resp.header('content-range'), 'bytes */%d' % self.size)

    def test_zero_suffix_416(self):
        resp = self.get({'Range': 'bytes=-0'})
        self.assertEqual(resp.status, 416, repr(resp))
        self.assertEqual(resp.header('content-range'), 'bytes */%d' % self.size)

    def test_range_of_empty_file_416(self):
        for value in ('bytes=0-0', 'bytes=0-', 'bytes=-5'):
            with self.subTest(range=value):
                resp = http(self.port, 'GET', '/empty.bin', {'Range': value})
                self.assertEqual(resp.status, 416, repr(resp))
                self.assertEqual(resp.header('content-range'), 'bytes */0')

    def test_start_past_end_is_416(self):
        resp = self.get({'Range': 'bytes=%d-' % self.size})
        self.assertEqual(resp.status, 416, repr(resp))
        self.assertEqual(resp.header('content-range'), 'bytes */%d' % self.size)

    def test_start_far_past_end_is_416(self):
        resp = self.get({'Range': 'bytes=%d-%d' % (self.size + 10, self.size + 20)})
        self.assertEqual(resp.status, 416, repr(resp))
        self.assertEqual(resp.header('content-range'), 'bytes */%d' % self.size)
        self.assertNotIn(self.data[:64], resp.body)

    def test_416_keeps_connection_usable(self):
        with harness.Conn(self.port) as c:
            c.send(harness.request_bytes('GET', self.PATH,
                                         {'Range': 'bytes=%d-' % (self.size + 1)}, close=False))
            r1 = c.read_response()
            c.send(harness.request_bytes('GET', '/small.bin', close=False))
            r2 = c.read_response()
        self.assertEqual(r1.status, 416)
        self.assertEqual(r2.status, 200)
        self.assertEqual(r2.body, self.content('small.bin'))

    # -- invalid Range headers are ignored ------------------------------

    def test_garbage_range_ignored(self):
        for value in ('bytes=abc', 'items=0-1', 'bytes=', 'bytes 0-1', 'bytes=--1'):
            with self.subTest(range=value):
                self.assert_full_200(self.get({'Range': value}))

    def test_reversed_range_ignored_or_rejected(self):
        # last < first is an invalid range-spec: RFC 9110 allows ignoring
        # (200) or rejecting (416) it, nothing else
        resp = self.get({'Range': 'bytes=5-2'})
        self.assertIn(resp.status, (200, 416), repr(resp))
        if resp.status == 200:
            self.assert_full_200(resp)

    # -- multiple ranges -----------------------------------------------

    def test_multi_range(self):
        ranges = [(0, 9), (20, 29), (100, 199)]
        resp = self.get({'Range': 'bytes=' + ','.join('%d-%d' % r for r in ranges)})
        self.assertEqual(resp.status, 206, repr(resp))
        ctype = resp.header('content-type', '')
        self.assertTrue(ctype.startswith('multipart/byteranges'), 'Content-Type %r' % ctype)
        self.assertIsNone(resp.header('content-range'), 'multipart response has a top-level Content-Range')
        if resp.header('content-length') is not None:
            self.assertEqual(int(resp.header('content-length')), len(resp.body))
        parts = harness.parse_multipart_byteranges(ctype, resp.body)
        self.assertEqual(len(parts), len(ranges), 'got %d parts' % len(parts))
        for (hdrs, body), (first, last) in zip(parts, ranges):
            self.assertEqual(hdrs.get('content-range'), 'bytes %d-%d/%d' % (first, last, self.size))
            self.assertTrue(hdrs.get('content-type'), 'part lacks Content-Type: %r' % hdrs)
            self.assertEqual(body, self.data[first:last + 1], 'part %d-%d body differs' % (first, last))

    def test_multi_range_parsed_with_email_module(self):
        import email.parser
        import email.policy
        resp = self.get({'Range': 'bytes=0-9,-10'})
        self.assertEqual(resp.status, 206)
        msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            b'Content-Type: ' + resp.header('content-type').encode() + b'\r\n\r\n' + resp.body)
        self.assertTrue(msg.is_multipart())
        parts = list(msg.iter_parts())
        self.assertEqual(len(parts), 2)
        self.assertEqual(parts[0]['content-range'], 'bytes 0-9/%d' % self.size)
        self.assertEqual(parts[1]['content-range'],
                         'bytes %d-%d/%d' % (self.size - 10, self.size - 1, self.size))
        self.assertEqual(parts[0].get_payload(decode=True), self.data[:10])
        self.assertEqual(parts[1].get_payload(decode=True), self.data[-10:])

    def test_multi_range_on_big_file(self):
        mib = harness.MIB
        ranges = [(0, mib - 1), (5 * mib, 5 * mib + 99), (20 * mib - 1000, 20 * mib - 1)]
        resp = http(self.port, 'GET', '/big.bin',
                    {'Range': 'bytes=' + ','.join('%d-%d' % r for r in ranges)}, timeout=20)
        self.assertEqual(resp.status, 206)
        parts = harness.parse_multipart_byteranges(resp.header('content-type'), resp.body)
        big = self.content('big.bin')
        self.assertEqual(len(parts), 3)
        for (hdrs, body), (first, last) in zip(parts, ranges):
            self.assertEqual(hdrs.get('content-range'), 'bytes %d-%d/%d' % (first, last, len(big)))
            self.assertTrue(body == big[first:last + 1], 'part %d-%d differs' % (first, last))

    def test_multi_range_with_one_unsatisfiable_part(self):
        # RFC 9110 14.2: unsatisfiable ranges are dropped, the rest is served
        resp = self.get({'Range': 'bytes=0-9,%d-%d' % (self.size + 5, self.size + 10)})
        self.assertEqual(resp.status, 206, repr(resp))
        ctype = resp.header('content-type', '')
        if ctype.startswith('multipart/byteranges'):
            parts = harness.parse_multipart_byteranges(ctype, resp.body)
            self.assertEqual(len(parts), 1)
            self.assertEqual(parts[0][1], self.data[:10])
        else:
            self.assert_206(resp, 0, 9)

    def test_overlapping_ranges_merged(self):
        # overlapping ranges may be merged (RFC 9110 17.15): whatever the
        # shape, the bytes 0-149 must come back exactly once
        resp = self.get({'Range': 'bytes=50-149,0-99'})
        self.assertEqual(resp.status, 206, repr(resp))
        ctype = resp.header('content-type', '')
        if ctype.startswith('multipart/byteranges'):
            parts = harness.parse_multipart_byteranges(ctype, resp.body)
            self.assertEqual(len(parts), 1, 'overlapping ranges not merged: %r'
                             % [h.get('content-range') for h, _ in parts])
            body = parts[0][1]
        else:
            self.assertEqual(resp.header('content-range'), 'bytes 0-149/%d' % self.size)
            body = resp.body
        self.assertEqual(body, self.data[:150])

    def test_non_overlapping_ranges_keep_client_order(self):
        resp = self.get({'Range': 'bytes=100-109,0-9'})
        self.assertEqual(resp.status, 206)
        parts = harness.parse_multipart_byteranges(resp.header('content-type'), resp.body)
        self.assertEqual([h['content-range'] for h, _ in parts],
                         ['bytes 100-109/%d' % self.size, 'bytes 0-9/%d' % self.size])

    def test_more_than_max_ranges_gives_full_200(self):
        # max_ranges is 16 in the test config
        ranges = ','.join('%d-%d' % (i * 100, i * 100 + 9) for i in range(17))
        self.assert_full_200(self.get({'Range': 'bytes=' + ranges}))

    def test_exactly_max_ranges_is_206(self):
        ranges = ','.join('%d-%d' % (i * 100, i * 100 + 9) for i in range(16))
        resp = self.get({'Range': 'bytes=' + ranges})
        self.assertEqual(resp.status, 206)
        parts = harness.parse_multipart_byteranges(resp.header('content-type'), resp.body)
        self.assertEqual(len(parts), 16)
        for i, (_, body) in enumerate(parts):
            self.assertEqual(body, self.data[i * 100:i * 100 + 10])

    # -- If-Range -----------------------------------------------------

    def etag(self):
        return http(self.port, 'HEAD', self.PATH).header('etag')

    def last_modified(self):
        return http(self.port, 'HEAD', self.PATH).header('last-modified')

    def test_if_range_current_etag(self):
        resp = self.get({'Range': 'bytes=0-99', 'If-Range': self.etag()})
        self.assert_206(resp, 0, 99)

    def test_if_range_stale_etag(self):
        resp = self.get({'Range': 'bytes=0-99', 'If-Range': '"stale-etag-0000"'})
        self.assert_full_200(resp)

    def test_if_range_weak_etag_never_matches(self):
        # If-Range uses the strong comparison: W/"x" never matches
        resp = self.get({'Range': 'bytes=0-99', 'If-Range': 'W/' + self.etag()})
        self.assert_full_200(resp)

    def test_if_range_current_date(self):
        resp = self.get({'Range': 'bytes=0-99', 'If-Range': self.last_modified()})
        self.assert_206(resp, 0, 99)

    def test_if_range_other_date(self):
        resp = self.get({'Range': 'bytes=0-99', 'If-Range': 'Sat, 01 Jan 2000 00:00:00 GMT'})
        self.assert_full_200(resp)

    # -- If-Match / If-Unmodified-Since ---------------------------------

    def test_if_match_current_etag_200(self):
        self.assert_full_200(self.get({'If-Match': self.etag()}))

    def test_if_match_star_200(self):
        self.assert_full_200(self.get({'If-Match': '*'}))

    def test_if_match_other_etag_412(self):
        resp = self.get({'If-Match': '"other"'})
        self.assertEqual(resp.status, 412, repr(resp))
        self.assertNotEqual(resp.body[:64], self.data[:64])

    def test_if_match_weak_etag_412(self):
        # If-Match uses the strong comparison
        resp = self.get({'If-Match': 'W/' + self.etag()})
        self.assertEqual(resp.status, 412, repr(resp))

    def test_if_match_with_range_206(self):
        self.assert_206(self.get({'If-Match': self.etag(), 'Range': 'bytes=0-9'}), 0, 9)

    def test_if_unmodified_since_past_412(self):
        resp = self.get({'If-Unmodified-Since': 'Sat, 01 Jan 2000 00:00:00 GMT'})
        self.assertEqual(resp.status, 412, repr(resp))

    def test_if_unmodified_since_equal_200(self):
        self.assert_full_200(self.get({'If-Unmodified-Since': self.last_modified()}))

    def test_if_match_takes_precedence_over_ius(self):
        # matching If-Match: If-Unmodified-Since is not evaluated
        resp = self.get({'If-Match': self.etag(),
                         'If-Unmodified-Since': 'Sat, 01 Jan 2000 00:00:00 GMT'})
        self.assert_full_200(resp)

    def test_if_match_failure_beats_if_none_match(self):
        # RFC 9110 13.2.2: If-Match is evaluated first
        resp = self.get({'If-Match': '"other"', 'If-None-Match': self.etag()})
        self.assertEqual(resp.status, 412, repr(resp))

    # -- If-None-Match / If-Modified-Since -----------------------------

    def test_if_none_match_current_etag_304(self):
        etag = self.etag()
        resp = self.get({'If-None-Match': etag})
        self.assertEqual(resp.status, 304, repr(resp))
        self.assertEqual(resp.body, b'', '304 carried a body')
        self.assertEqual(resp.header('etag'), etag)

    def test_if_none_match_list_304(self):
        resp = self.get({'If-None-Match': '"aaa", %s, "bbb"' % self.etag()})
        self.assertEqual(resp.status, 304, repr(resp))

    def test_if_none_match_star_304(self):
        resp = self.get({'If-None-Match': '*'})
        self.assertEqual(resp.status, 304, repr(resp))

    def test_if_none_match_weak_comparison_304(self):
        # RFC 9110 13.1.2: If-None-Match uses the weak comparison
        resp = self.get({'If-None-Match': 'W/' + self.etag()})
        self.assertEqual(resp.status, 304, repr(resp))

    def test_if_none_match_other_etag_200(self):
        self.assert_full_200(self.get({'If-None-Match': '"something-else"'}))

    def test_if_none_match_head_304(self):
        resp = self.get({'If-None-Match': self.etag()}, method='HEAD')
        self.assertEqual(resp.status, 304)

    def test_304_keeps_connection_usable(self):
        etag = self.etag()
        with harness.Conn(self.port) as c:
            c.send(harness.request_bytes('GET', self.PATH, {'If-None-Match': etag}, close=False))
            r1 = c.read_response()
            c.send(harness.request_bytes('GET', '/small.bin', close=False))
            r2 = c.read_response()
        self.assertEqual(r1.status, 304)
        self.assertEqual(r2.status, 200)
        self.assertEqual(r2.body, self.content('small.bin'))

    def test_if_modified_since_equal_304(self):
        resp = self.get({'If-Modified-Since': self.last_modified()})
        self.assertEqual(resp.status, 304, repr(resp))
        self.assertEqual(resp.body, b'')

    def test_if_modified_since_future_304(self):
        future = email.utils.formatdate(time.time() + 86400, usegmt=True)
        resp = self.get({'If-Modified-Since': future})
        self.assertEqual(resp.status, 304, repr(resp))

    def test_if_modified_since_past_200(self):
        self.assert_full_200(self.get({'If-Modified-Since': 'Sat, 01 Jan 2000 00:00:00 GMT'}))

    def test_if_modified_since_invalid_date_ignored(self):
        self.assert_full_200(self.get({'If-Modified-Since': 'not a date'}))

    def test_if_none_match_takes_precedence_over_ims(self):
        # non-matching If-None-Match: If-Modified-Since must be ignored -> 200
        resp = self.get({'If-None-Match': '"other"', 'If-Modified-Since': self.last_modified()})
        self.assert_full_200(resp)

    def test_if_none_match_match_with_old_ims_304(self):
        resp = self.get({'If-None-Match': self.etag(),
                         'If-Modified-Since': 'Sat, 01 Jan 2000 00:00:00 GMT'})
        self.assertEqual(resp.status, 304, repr(resp))

    def test_last_modified_is_http_date(self):
        lm = self.last_modified()
        self.assertRegex(lm, r'^[A-Z][a-z]{2}, \d{2} [A-Z][a-z]{2} \d{4} \d{2}:\d{2}:\d{2} GMT$')


if __name__ == '__main__':
    harness.main()
