"""A TCP relay on 127.0.0.1 that delays every chunk of bytes, in each
direction, by a fixed time while keeping their order: a slow network in front
of a real server (test_memcache.py puts it between smprotocol and memcached).

Per accepted connection it opens one to the target and runs two pipes (client
to target, target to client), each a reader thread and a writer thread: the
reader timestamps every chunk recv() returns and queues it, the writer sends it
`delay` seconds after it was read. An end of stream is forwarded the same way
(shutdown of the writing side), a reset closes both sockets. stop() closes
everything and joins every thread (bounded), so nothing outlives the test."""

import queue
import socket
import threading
import time


class DelayRelay:
    def __init__(self, target_port, delay=0.05, target_host='127.0.0.1'):
        self.target = (target_host, target_port)
        self.delay = delay
        self.listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(('127.0.0.1', 0))
        self.listener.listen(64)
        self.listener.settimeout(0.2)
        self.port = self.listener.getsockname()[1]
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = []
        self._sockets = []
        # What went through, for the test to check that it was used.
        self.connections = 0
        self.chunks = {'up': 0, 'down': 0}
        self.bytes = {'up': 0, 'down': 0}

    def start(self):
        self._spawn(self._accept_loop)
        return self

    def __enter__(self):
        return self.start()

    def __exit__(self, *a):
        self.stop()

    def _spawn(self, fn, *args):
        t = threading.Thread(target=fn, args=args, daemon=True)
        with self._lock:
            self._threads.append(t)
        t.start()

    def _accept_loop(self):
        while not self._stop.is_set():
            try:
                client, _ = self.listener.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            for s in (client, upstream):
                s.settimeout(None)
                # No Nagle (nor its wait on a delayed ACK): the delay is ours alone.
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with self._lock:
                if self._stop.is_set():
                    client.close()
                    upstream.close()
                    return
                self._sockets += [client, upstream]
                self.connections += 1
            self._pipe(client, upstream, 'up')
            self._pipe(upstream, client, 'down')

    def _pipe(self, src, dst, direction):
        q = queue.Queue()
        self._spawn(self._read, src, q, direction)
        self._spawn(self._write, dst, src, q)

    def _read(self, src, q, direction):
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                data = None  # reset or closed by stop()
            due = time.monotonic() + self.delay
            if not data:
                q.put((due, data))  # b'': end of stream, None: error
                return
            with self._lock:
                self.chunks[direction] += 1
                self.bytes[direction] += len(data)
            q.put((due, data))

    def _write(self, dst, src, q):
        while not self._stop.is_set():
            try:
                due, data = q.get(timeout=0.2)
            except queue.Empty:
                continue
            wait = due - time.monotonic()
            if wait > 0 and self._stop.wait(wait):
                return
            try:
                if data:
                    dst.sendall(data)
                    continue
                if data == b'':
                    dst.shutdown(socket.SHUT_WR)
                    return
            except OSError:
                pass
            # An error on either side: drop the connection both ways.
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            return

    def stop(self, timeout=5.0):
        self._stop.set()
        try:
            self.listener.close()
        except OSError:
            pass
        with self._lock:
            sockets, threads = list(self._sockets), list(self._threads)
        for s in sockets:
            try:
                s.shutdown(socket.SHUT_RDWR)  # wakes a reader blocked in recv()
            except OSError:
                pass
        deadline = time.monotonic() + timeout
        for t in threads:
            t.join(max(0.0, deadline - time.monotonic()))
        for s in sockets:
            s.close()
        return [t for t in threads if t.is_alive()]
