"""Connection limits of a worker: max_connections, and running out of file
descriptors. Past either, new connections wait in the listen backlog and
are served once room is made; the worker never spins."""

import os
import socket
import time
import unittest

import harness


def worker_cpu_seconds(pid):
    fields = harness._stat_fields(pid)
    # The fields after the command name: state is [0], utime [11], stime [12].
    return (int(fields[11]) + int(fields[12])) / os.sysconf('SC_CLK_TCK')


class MaxConnections(unittest.TestCase):
    def setUp(self):
        self.env = harness.TestEnv({'small.bin': 4096})
        port = harness.free_port()
        text = harness.config_text(port, self.env.www, workers=1).replace('max_connections: 1024',
                                                                          'max_connections: 2')
        self.server = harness.Server(self.env, port=port, config=text)
        self.server.start()

    def tearDown(self):
        self.server.kill()
        self.env.cleanup()

    def test_third_connection_waits_until_one_closes(self):
        first, second = harness.Conn(self.server.port), harness.Conn(self.server.port)
        for c in (first, second):
            c.send(harness.request_bytes('GET', '/small.bin', close=False))
            self.assertEqual(c.read_response().status, 200)
        third = harness.connect(self.server.port, timeout=0.3)
        third.sendall(harness.request_bytes('GET', '/small.bin'))
        with self.assertRaises(socket.timeout, msg='a third connection was served past max_connections'):
            third.recv(1)
        first.close()
        third.settimeout(5.0)
        data, _ = harness.recv_all(third, timeout=5.0)
        self.assertTrue(data.startswith(b'HTTP/1.1 200'), data[:100])
        third.close()
        second.close()

    def test_longest_idle_connection_makes_room(self):
        # Full, with a client waiting: once a connection has been idle for
        # 1 s, the one idle longest is closed to admit it (docs/http.md,
        # "Slow clients"); the other keeps its keep-alive.
        first, second = harness.Conn(self.server.port), harness.Conn(self.server.port)
        for c in (first, second):
            c.send(harness.request_bytes('GET', '/small.bin', close=False))
            self.assertEqual(c.read_response().status, 200)
        time.sleep(0.5)
        second.send(harness.request_bytes('GET', '/small.bin', close=False))
        self.assertEqual(second.read_response().status, 200)
        waiting = time.monotonic()
        third = harness.connect(self.server.port, timeout=5.0)
        third.sendall(harness.request_bytes('GET', '/small.bin'))
        data, _ = harness.recv_all(third, timeout=5.0)
        third.close()
        self.assertTrue(data.startswith(b'HTTP/1.1 200'), data[:100])
        self.assertLess(time.monotonic() - waiting, 3.0)
        first.sock.settimeout(2.0)
        self.assertEqual(first.sock.recv(1), b'', 'the longest idle connection is still open')
        second.send(harness.request_bytes('GET', '/small.bin', close=False))
        self.assertEqual(second.read_response().status, 200)
        first.close()
        second.close()


class OutOfDescriptors(unittest.TestCase):
    def setUp(self):
        self.env = harness.TestEnv({'small.bin': 4096})
        # The server raises its soft limit to the hard one; prlimit sets both.
        self.wrapper = harness.write_file(self.env.path('limited.sh'),
                                          '#!/bin/sh\nexec prlimit --nofile=40:40 %s "$@"\n' % harness.BINARY)
        os.chmod(self.wrapper, 0o755)
        self.binary, harness.BINARY = harness.BINARY, self.wrapper
        self.server = harness.Server(self.env, workers=1)
        self.server.start()

    def tearDown(self):
        harness.BINARY = self.binary
        self.server.kill()
        self.env.cleanup()

    def test_accepts_pause_instead_of_spinning(self):
        worker = self.server.wait_workers(1)[0]
        clients = []
        for _ in range(60):
            s = harness.connect(self.server.port)
            s.sendall(harness.request_bytes('GET', '/small.bin', close=False))
            clients.append(s)
        time.sleep(0.5)
        before = worker_cpu_seconds(worker)
        time.sleep(1.0)
        spent = worker_cpu_seconds(worker) - before
        self.assertLess(spent, 0.3, 'the worker spun at %.2f s of CPU per second' % spent)
        self.assertIn('pausing accepts', self.server.log())
        for s in clients:
            s.close()
        # Room again: a new client is served, and the waiting ones got their turn.
        resp = harness.wait_for(lambda: harness.maybe_response(self.server.port, harness.request_bytes(
            'GET', '/small.bin')), 5.0)
        self.assertIsNotNone(resp)
        self.assertEqual(resp.status, 200)


def server_side_of(server_port, client_port):
    """(state, inode) of the server's end of a TCP connection, or None.
    Inode 0: no process holds it any more."""
    for local, remote, state, inode in harness.tcp_sockets():
        if local == server_port and remote == client_port:
            return state, int(inode)
    return None


class CloseAfterTheLastResponse(harness.ServerTestCase):
    """A response that ends the connection: the worker closes its socket at
    once when the client sent nothing it did not read, as nginx does, and
    lingers (shuts its side, reads and drops, then closes) only when the
    client did: a socket closed with unread bytes resets the connection, and
    the reset could destroy the response before the client has read it."""
    files = {'small.bin': 4096}

    def exchange(self, request):
        c = harness.Conn(self.server.port)
        client_port = c.sock.getsockname()[1]
        c.send(request)
        first = c.read_response()
        self.assertEqual(first.status, 200)
        self.assertEqual(first.body, self.content('small.bin'))
        # The server's FIN: the connection ends there for the client.
        self.assertFalse(c._fill(time.monotonic() + 5), 'more than one response: %r' % c.buf[:100])
        return c, client_port

    def test_closed_at_once_when_nothing_is_unread(self):
        c, client_port = self.exchange(b'GET /small.bin HTTP/1.0\r\n\r\n')
        try:
            # The client has not closed: only the worker's close orphans its
            # end. It closes as it sends its FIN, which the client has seen; a
            # lingering close would hold the socket for lingering_timeout (2 s).
            orphaned = harness.wait_for(lambda: (server_side_of(self.server.port, client_port) or ('', 1))[1] == 0, 1)
            self.assertTrue(orphaned, 'the worker still holds the socket: %r'
                            % (server_side_of(self.server.port, client_port),))
        finally:
            c.sock.close()

    def test_lingers_when_the_client_sent_more(self):
        # A second request after one that said close: unread, so the worker
        # shuts its side and waits for the client's close.
        c, client_port = self.exchange(b'GET /small.bin HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'
                                       b'GET /small.bin HTTP/1.1\r\nHost: x\r\n\r\n')
        try:
            time.sleep(0.5)
            side = server_side_of(self.server.port, client_port)
            self.assertIsNotNone(side)
            self.assertNotEqual(side[1], 0, 'the worker closed a socket holding unread bytes')
        finally:
            c.sock.close()
        self.assertTrue(harness.wait_for(lambda: (server_side_of(self.server.port, client_port) or ('', 0))[1] == 0, 5),
                        'the lingering socket was not closed after the client closed')


if __name__ == '__main__':
    unittest.main()
