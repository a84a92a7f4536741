#!/usr/bin/python3
"""Open N idle HTTP/1.1 keep-alive connections to a server and hold them.

Helper for bench.py (row "RSS per idle keep-alive connection"); stdlib only.
Run it pinned to the client CPU, e.g. `taskset -c 1 python3 idle_conns.py ...`.

Protocol on stdout/stdin (one JSON object per line on stdout):
  -> {"event": "ready", "target": N, "ok": K, "failed": F, "elapsed_s": T, ...}
     once every connection has sent `GET PATH` and read the full response,
     so each of the K sockets is an idle keep-alive connection.
  <- "check\\n"  -> {"event": "checked", "open": K2, "closed_by_server": C}
  <- "close\\n"  -> closes all sockets, {"event": "closed"}, exit 0.
  stdin EOF also closes everything and exits.
"""

import argparse
import errno
import json
import resource
import selectors
import socket
import sys
import time


def emit(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


class Conn:
    __slots__ = ("sock", "state", "buf", "need")

    def __init__(self, sock):
        self.sock = sock
        self.state = "connecting"
        self.buf = b""
        self.need = None  # total bytes (header + body) once headers are parsed


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--path", default="/4k.bin")
    ap.add_argument("--inflight", type=int, default=200,
                    help="max connections being set up at once")
    ap.add_argument("--timeout", type=float, default=90.0,
                    help="give up setting up connections after this many s")
    args = ap.parse_args()

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = args.n + 64
    if hard != resource.RLIM_INFINITY and want > hard:
        want = hard
    if want > soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    n = min(args.n, soft - 64)
    if n < 1:
        emit({"event": "error", "msg": "RLIMIT_NOFILE too low: %d" % soft})
        return 2

    request = ("GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % args.path).encode()
    sel = selectors.DefaultSelector()
    started = 0
    active = 0
    ok = []
    failed = 0
    errors = {}
    t0 = time.monotonic()

    def fail(c, why):
        nonlocal failed, active
        failed += 1
        active -= 1
        errors[why] = errors.get(why, 0) + 1
        try:
            sel.unregister(c.sock)
        except (KeyError, ValueError):
            pass
        c.sock.close()

    while (started < n or active > 0) and time.monotonic() - t0 < args.timeout:
        while started < n and active < args.inflight:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            rc = s.connect_ex((args.host, args.port))
            started += 1
            c = Conn(s)
            active += 1
            if rc not in (0, errno.EINPROGRESS):
                fail(c, "connect:" + errno.errorcode.get(rc, str(rc)))
                continue
            sel.register(s, selectors.EVENT_WRITE, c)
        for key, _ in sel.select(timeout=1.0):
            c = key.data
            if c.state == "connecting":
                err = c.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    fail(c, "connect:" + errno.errorcode.get(err, str(err)))
                    continue
                try:
                    c.sock.send(request)  # tiny: fits the empty send buffer
                except OSError as e:
                    fail(c, "send:" + errno.errorcode.get(e.errno, str(e.errno)))
                    continue
                c.state = "reading"
                sel.modify(c.sock, selectors.EVENT_READ, c)
                continue
            try:
                data = c.sock.recv(65536)
            except BlockingIOError:
                continue
            except OSError as e:
                fail(c, "recv:" + errno.errorcode.get(e.errno, str(e.errno)))
                continue
            if not data:
                fail(c, "closed-before-response-complete")
                continue
            c.buf += data
            if c.need is None:
                end = c.buf.find(b"\r\n\r\n")
                if end < 0:
                    continue
                head = c.buf[:end].decode("latin-1").split("\r\n")
                parts = head[0].split(" ", 2)
                if len(parts) < 2 or parts[1] != "200":
                    fail(c, "status:" + (parts[1] if len(parts) > 1 else "?"))
                    continue
                clen = None
                for line in head[1:]:
                    k, _, v = line.partition(":")
                    if k.strip().lower() == "content-length":
                        clen = int(v.strip())
                if clen is None:
                    fail(c, "no-content-length")
                    continue
                c.need = end + 4 + clen
            if len(c.buf) >= c.need:
                sel.unregister(c.sock)
                c.buf = b""
                c.state = "idle"
                active -= 1
                ok.append(c.sock)
    # Anything still in flight at the timeout counts as failed.
    for key in list(sel.get_map().values()):
        fail(key.data, "timeout")
    elapsed = time.monotonic() - t0

    emit({"event": "ready", "target": args.n, "attempted": n, "ok": len(ok),
          "failed": failed, "errors": errors, "elapsed_s": round(elapsed, 3),
          "nofile_soft": soft, "nofile_hard": hard})

    for line in sys.stdin:
        cmd = line.strip()
        if cmd == "check":
            still = 0
            closed = 0
            for s in ok:
                try:
                    d = s.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
                    if d == b"":
                        closed += 1
                    else:
                        still += 1  # unexpected data; the socket is open
                except BlockingIOError:
                    still += 1
                except OSError:
                    closed += 1
            emit({"event": "checked", "open": still, "closed_by_server": closed})
        elif cmd == "close":
            break
    for s in ok:
        s.close()
    emit({"event": "closed"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
