"""The server never crashes on input: thousands of malformed, mutated and
random requests, each answered with a well-formed status or a close, and
the same worker processes still serving afterwards.

Inputs come from a fixed seed, so a failure names an input that can be
replayed (it is printed)."""

import random
import socket
import time
import unittest

import harness

SEED = 20261124
CASES = 1500
VALID = [
    b'GET /small.bin HTTP/1.1\r\nHost: x\r\n\r\n',
    b'GET /medium.bin HTTP/1.1\r\nHost: x\r\nRange: bytes=0-99,200-299\r\n\r\n',
    b'HEAD /sub/file.txt HTTP/1.0\r\n\r\n',
    b'GET /a%20b.txt HTTP/1.1\r\nHost: x\r\nIf-None-Match: "x", W/"y"\r\nIf-Range: "z"\r\nRange: bytes=-5\r\n\r\n',
    b'GET http://x/small.bin?q=1 HTTP/1.1\r\nHost: x\r\nIf-Modified-Since: Sun, 06 Nov 1994 08:49:37 GMT\r\n\r\n',
]
ALLOWED = {200, 206, 304, 400, 403, 404, 405, 412, 414, 416, 431, 505}
SPICE = [b'\r\n', b'\n', b' ', b':', b'%', b'%00', b'%2e%2e/', b'\x00', b'\xff', b'-', b',', b'=', b'"',
         b'Range: bytes=', b'99999999999999999999999', b'Transfer-Encoding: chunked\r\n', b'Host: y\r\n']


def mutate(rng, data):
    data = bytearray(data)
    for _ in range(rng.randint(1, 6)):
        op = rng.random()
        at = rng.randrange(len(data) + 1)
        if op < 0.3 and data:
            data[min(at, len(data) - 1)] = rng.randrange(256)
        elif op < 0.55:
            data[at:at] = rng.choice(SPICE)
        elif op < 0.75 and data:
            del data[at:at + rng.randint(1, 8)]
        elif op < 0.9:
            data[at:at] = data[at:at + rng.randint(1, 40)] * rng.randint(2, 50)
        else:
            data = data[:at]
    return bytes(data)


def inputs():
    rng = random.Random(SEED)
    for i in range(CASES):
        kind = i % 4
        if kind == 0:
            yield bytes(rng.randrange(256) for _ in range(rng.randint(1, 300)))
        elif kind == 3:
            yield mutate(rng, rng.choice(VALID)) + mutate(rng, rng.choice(VALID))
        else:
            yield mutate(rng, rng.choice(VALID))


def exchange(port, data):
    """Send `data`, half-close, and read until the server closes (bounded)."""
    with socket.create_connection(('127.0.0.1', port), timeout=3.0) as s:
        try:
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        chunks = []
        try:
            while sum(map(len, chunks)) < (8 << 20):
                chunk = s.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
        except (socket.timeout, ConnectionResetError):
            pass
        return b''.join(chunks)


class Garbage(harness.ServerTestCase):
    server_config = {'workers': 2}

    def test_malformed_input_never_crashes_a_worker(self):
        workers = self.server.wait_workers(2)
        deadline = time.monotonic() + 90
        for number, data in enumerate(inputs()):
            self.assertLess(time.monotonic(), deadline, 'ran out of time at input %d' % number)
            reply = exchange(self.server.port, data)
            if not reply:
                continue  # an incomplete request the client gave up on: closed, fine
            self.assertRegex(reply[:13], rb'^HTTP/1\.1 \d{3} ', 'input %d %r' % (number, data))
            status = int(reply[9:12])
            self.assertIn(status, ALLOWED, 'input %d %r got %d' % (number, data, status))
        self.assertEqual(self.server.workers(), workers, 'a worker was replaced:\n' + self.server.log_tail())
        self.assertEqual(harness.http(self.server.port, 'GET', '/small.bin').status, 200)


if __name__ == '__main__':
    unittest.main()
