"""Shared helpers for the SMProtocol integration tests.

Only the Python standard library is used. Every wait is bounded, every
subprocess has a timeout and every server started here is stopped (and, as
a last resort, its whole process group killed) when the test ends.
"""

import atexit
import hashlib
import os
import re
import resource
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import unittest

BINARY = os.environ.get('SMP_BINARY', '/work/main/build/core/smprotocol')

KIB = 1024
MIB = 1024 * 1024

# name -> size of the random files created in every test www/ folder
DEFAULT_FILES = {
    'empty.bin': 0,
    'small.bin': 1 * KIB,
    'medium.bin': 1 * MIB,
    'big.bin': 20 * MIB,
    'a b.txt': 1 * KIB,
    'sub/file.txt': 2 * KIB,
}

SOCK_TIMEOUT = 5.0

# Loopback only: never let a proxy setting reach curl/wget/aria2c.
for _var in ('http_proxy', 'https_proxy', 'HTTP_PROXY', 'HTTPS_PROXY', 'all_proxy', 'ALL_PROXY'):
    os.environ.pop(_var, None)


# --------------------------------------------------------------------------
# small utilities
# --------------------------------------------------------------------------

def free_port():
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        while True:
            chunk = f.read(1 << 20)
            if not chunk:
                break
            h.update(chunk)
    return h.hexdigest()


def sha256_bytes(data):
    return hashlib.sha256(data).hexdigest()


def run(cmd, timeout=60, **kw):
    """Run cmd with a timeout, capturing text output.

    The command runs in its own session; on timeout its whole process group
    is killed (so a server started by mistake cannot leave workers behind)
    and a CompletedProcess with returncode None is returned."""
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True, errors='replace',
                         start_new_session=True, **kw)
    try:
        out, err = p.communicate(timeout=timeout)
        return subprocess.CompletedProcess(cmd, p.returncode, out, err)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            out, err = p.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            out, err = '', ''
        return subprocess.CompletedProcess(cmd, None, out or '',
                                           (err or '') + '\n[harness] TIMEOUT after %ss' % timeout)


def wait_for(predicate, timeout, interval=0.05):
    """Poll predicate() until truthy or timeout; returns the last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)


def port_accepts(port, host='127.0.0.1', timeout=0.5):
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


# --------------------------------------------------------------------------
# /proc helpers
# --------------------------------------------------------------------------

def _stat_fields(pid):
    try:
        with open('/proc/%d/stat' % pid, 'rb') as f:
            data = f.read().decode('ascii', 'replace')
    except OSError:
        return None
    # comm may contain spaces and parentheses: split after the last ')'
    return data[data.rindex(')') + 2:].split()


def proc_stat(pid):
    """(state, ppid) of a pid, or None if it does not exist."""
    rest = _stat_fields(pid)
    return None if rest is None else (rest[0], int(rest[1]))


def group_members(pgid):
    """Live (non-zombie) pids whose process group is pgid."""
    pids = []
    for name in os.listdir('/proc'):
        if name.isdigit():
            rest = _stat_fields(int(name))
            if rest and int(rest[2]) == pgid and rest[0] != 'Z':
                pids.append(int(name))
    return pids


def children_of(ppid, include_zombies=True):
    """Pids whose parent is ppid (read from /proc/*/stat)."""
    pids = []
    for name in os.listdir('/proc'):
        if not name.isdigit():
            continue
        st = proc_stat(int(name))
        if st is None or st[1] != ppid:
            continue
        if not include_zombies and st[0] == 'Z':
            continue
        pids.append(int(name))
    return sorted(pids)


def tcp_sockets():
    """(local port, remote port, state, inode) of every TCP socket in
    /proc/net/tcp{,6}: state '01' is ESTABLISHED; inode 0 is a socket no
    process holds any more (closed, the kernel finishing it)."""
    for table in ('/proc/net/tcp', '/proc/net/tcp6'):
        try:
            with open(table) as f:
                next(f)
                for line in f:
                    fields = line.split()
                    yield (int(fields[1].rsplit(':', 1)[1], 16), int(fields[2].rsplit(':', 1)[1], 16), fields[3],
                           fields[9])
        except OSError:
            pass


def tcp_established_inodes(port):
    """Socket inodes of ESTABLISHED TCP connections whose local port is `port`."""
    inodes = set()
    for local, _, state, inode in tcp_sockets():
        if state == '01' and local == port:
            inodes.add(inode)
    return inodes


def pids_holding_connections(port, pids):
    """Which of `pids` hold an established connection on local `port`."""
    inodes = tcp_established_inodes(port)
    holders = []
    for pid in pids:
        try:
            fds = os.listdir('/proc/%d/fd' % pid)
        except OSError:
            continue
        for fd in fds:
            try:
                link = os.readlink('/proc/%d/fd/%s' % (pid, fd))
            except OSError:
                continue
            if link.startswith('socket:[') and link[8:-1] in inodes:
                holders.append(pid)
                break
    return holders


def comm_of(pid):
    """The process name (/proc/PID/comm), or '' if it is gone."""
    try:
        with open('/proc/%d/comm' % pid) as f:
            return f.read().strip()
    except OSError:
        return ''


COLLECTOR_NAME = 'smp-collector'

# The master's line for each child it forks (core/process/master.cpp).
_FORKED = re.compile(r'Success: detached with pid <(\d+)>, parent pid <(\d+)> \((worker|stats collector)')


def describe_process(pid):
    """A pid's state and each of its threads' state and kernel wait
    channel: a zombie whose threads still run is a process still exiting
    (the kernel has not told its parent yet), not one its parent left."""
    threads = []
    try:
        tids = sorted(os.listdir('/proc/%d/task' % pid), key=int)
    except OSError:
        return 'pid %d: gone' % pid
    for tid in tids:
        fields = _stat_fields(int(tid)) or ['?']
        try:
            with open('/proc/%d/task/%s/wchan' % (pid, tid)) as f:
                wchan = f.read().strip() or '-'
        except OSError:
            wchan = '?'
        threads.append('%s %s %s' % (tid, fields[0], wchan))
    return 'pid %d (%s): threads %s' % (pid, comm_of(pid), ', '.join(threads))


def zombie_children(ppid):
    return [p for p in children_of(ppid) if (proc_stat(p) or ('?',))[0] == 'Z']


# --------------------------------------------------------------------------
# test data
# --------------------------------------------------------------------------

class TestEnv:
    """A temp dir with www/ full of random files, and room for configs/logs."""

    def __init__(self, files=None, prefix='smp-it-'):
        self.dir = tempfile.mkdtemp(prefix=prefix)
        _LIVE_DIRS.append(self.dir)
        self.www = os.path.join(self.dir, 'www')
        os.makedirs(self.www)
        self.content = {}
        for name, size in (files or DEFAULT_FILES).items():
            self.add_file(name, os.urandom(size))

    def add_file(self, name, data):
        path = os.path.join(self.www, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, 'wb') as f:
            f.write(data)
        self.content[name] = data
        return path

    def path(self, *parts):
        return os.path.join(self.dir, *parts)

    def cleanup(self):
        shutil.rmtree(self.dir, ignore_errors=True)


def config_text(port, root, workers=2, access_log=None, log_level='info',
                shutdown_timeout='30s', core_extra=None, log_extra=None, **proto):
    """YAML text of a config with one http_download protocol. Tracking is on
    (the default), into the default store under the test's own state/.
    log_extra: more keys of the log section (access_log_buffer...)."""
    p = {
        'block_size': '256KiB',
        'max_ranges': 16,
        'header_timeout': '10s',
        'keepalive_timeout': '75s',
        'send_timeout': '60s',
    }
    p.update(proto)
    lines = [
        'workers: %d' % workers,
        'max_connections: 1024',
        'backlog: 511',
        'shutdown_timeout: %s' % shutdown_timeout,
        'state_dir: %s' % os.path.join(os.path.dirname(os.path.abspath(root)), 'state'),
    ]
    for k, v in (core_extra or {}).items():
        lines.append('%s: %s' % (k, v))
    lines.append('log:')
    lines.append('  level: %s' % log_level)
    if access_log:
        lines.append('  access_log: %s' % access_log)
    for k, v in (log_extra or {}).items():
        lines.append('  %s: %s' % (k, v))
    lines += [
        'protocols:',
        '  - module: http_download',
        '    host: 127.0.0.1',
        '    port: %d' % port,
        '    root: %s' % root,
    ]
    for k, v in p.items():
        lines.append('    %s: %s' % (k, v))
    lines.append('plugins: []')
    return '\n'.join(lines) + '\n'


def write_file(path, text):
    with open(path, 'w') as f:
        f.write(text)
    return path


def stats_traffic(port, located_ip=None):
    """Traffic whose reports the stats tests know: two files, two agents
    interleaved (four downloads), a resume with a Range, a HEAD, a 304, a 404, a
    416, a client that leaves halfway through big.bin; with located_ip, one
    more download of b.bin forwarded for that address (needs a trusted proxy)."""
    for path in ('/a.bin', '/b.bin'):
        for agent in ('agent-one', 'agent-two'):
            assert http(port, 'GET', path, {'User-Agent': agent}).status == 200
    # agent-one resumes a.bin with a range: same download, a second request.
    assert http(port, 'GET', '/a.bin', {'User-Agent': 'agent-one', 'Range': 'bytes=100-'}).status == 206
    # Not downloads: a HEAD, a 304, a 404, a 416.
    etag = http(port, 'HEAD', '/a.bin', {'User-Agent': 'other'}).header('etag')
    assert http(port, 'GET', '/a.bin', {'User-Agent': 'other', 'If-None-Match': etag}).status == 304
    assert http(port, 'GET', '/missing.bin', {'User-Agent': 'other'}).status == 404
    assert http(port, 'GET', '/a.bin', {'User-Agent': 'other', 'Range': 'bytes=999999999-'}).status == 416
    if located_ip:
        assert http(port, 'GET', '/b.bin', {'User-Agent': 'located', 'X-Forwarded-For': located_ip}).status == 200
    # A client that leaves halfway, with a small receive buffer so the server cannot run ahead.
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    s.settimeout(10)
    s.connect(('127.0.0.1', port))
    s.sendall(request_bytes('GET', '/big.bin', {'User-Agent': 'halfway'}))
    received = 0
    while received < 10 * MIB:
        received += len(s.recv(65536))
    s.close()


def with_tls_listener(text, port, root, leaf):
    """config_text's text (its plugins as they are) with a second
    http_download listener on `port`, over TLS with tls_ca's `leaf` (the
    first, plain listener is the one Server waits for)."""
    head, plugins, tail = text.rpartition('\nplugins:')
    assert plugins, text
    lines = ['  - module: http_download', '    host: 127.0.0.1', '    port: %d' % port, '    root: %s' % root,
             '    tls:', '      certificate: %s' % leaf.cert, '      key: %s' % leaf.key]
    return head + '\n' + '\n'.join(lines) + plugins + tail


def https(port, method, path, headers=None, cafile=None, version=None, timeout=SOCK_TIMEOUT):
    """One request over TLS on a fresh connection (Connection: close), with
    `version` (ssl.TLSVersion) alone when given: (response, the version spoken)."""
    context = ssl.create_default_context(cafile=cafile)
    if version is not None:
        context.minimum_version = context.maximum_version = version
    with context.wrap_socket(connect(port, timeout), server_hostname='localhost') as s:
        s.sendall(request_bytes(method, path, headers))
        data = b''
        try:
            while True:
                chunk = s.recv(1 << 16)
                if not chunk:
                    break
                data += chunk
        except (ssl.SSLEOFError, ConnectionResetError):
            pass
        return parse_response(data), s.version()


def tls_stats_traffic(port, tls_port, cafile):
    """Traffic whose tls report the stats tests know, on a plain listener and
    a TLS one: three requests over plain HTTP (a GET, a HEAD, a 404), two over
    TLS 1.3 (a GET, a Range), one over TLS 1.2. Returns what the report must
    say, counted by the client: {TLS version or 'plain': [requests, body bytes]}."""
    expected = {}

    def count(name, response):
        counts = expected.setdefault(name, [0, 0])
        counts[0] += 1
        counts[1] += len(response.body)

    for method, path, status in (('GET', '/a.bin', 200), ('HEAD', '/a.bin', 200), ('GET', '/missing.bin', 404)):
        response = http(port, method, path, {'User-Agent': 'plain-client'})
        assert response.status == status, response
        count('plain', response)
    for version, path, headers, status in ((ssl.TLSVersion.TLSv1_3, '/a.bin', {}, 200),
                                           (ssl.TLSVersion.TLSv1_3, '/a.bin', {'Range': 'bytes=0-99'}, 206),
                                           (ssl.TLSVersion.TLSv1_2, '/b.bin', {}, 200)):
        response, spoken = https(tls_port, 'GET', path, dict(headers, **{'User-Agent': 'tls-client'}), cafile,
                                 version)
        assert response.status == status, response
        count(spoken, response)
    return expected


# --------------------------------------------------------------------------
# server process
# --------------------------------------------------------------------------

class ServerError(Exception):
    pass


# Everything started or created here, so that nothing outlives the script
# even when it is interrupted (meson sends SIGTERM on timeout).
_LIVE_SERVERS = []
_LIVE_DIRS = []
_LIVE_CLIENTS = []


def spawn(cmd, **kw):
    """Popen for a background client (curl...), killed at exit if still running."""
    p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, **kw)
    _LIVE_CLIENTS.append(p)
    return p


def _emergency_cleanup():
    for p in list(_LIVE_CLIENTS):
        if p.poll() is None:
            p.kill()
    for s in list(_LIVE_SERVERS):
        s.kill()
    if not os.environ.get('SMP_KEEP_TMP'):
        for d in list(_LIVE_DIRS):
            shutil.rmtree(d, ignore_errors=True)


def _on_sigterm(signum, frame):
    sys.stderr.write('[harness] signal %d: killing servers and exiting\n' % signum)
    _emergency_cleanup()
    os._exit(128 + signum)


atexit.register(_emergency_cleanup)


class Server:
    """One smprotocol master process started from a config file."""

    _counter = 0

    def __init__(self, env, port=None, access_log=True, config=None, nofile=None, **cfg):
        Server._counter += 1
        self.env = env
        self.nofile = nofile  # RLIMIT_NOFILE (soft and hard) of the server, or the test's
        self.port = port or free_port()
        n = Server._counter
        self.access_log = env.path('access-%d.log' % n) if access_log else None
        self.config_path = env.path('smp-%d.yaml' % n)
        self.log_path = env.path('server-%d.log' % n)
        if config is None:
            config = config_text(self.port, env.www, access_log=self.access_log, **cfg)
        write_file(self.config_path, config)
        self.proc = None
        self._log = None
        self._forked, self._forked_offset = {}, 0  # the master's fork announcements read so far

    @property
    def pid(self):
        return self.proc.pid

    def start(self, timeout=10.0):
        if not os.path.exists(BINARY):
            raise ServerError('server binary %s does not exist (set SMP_BINARY)' % BINARY)
        self._log = open(self.log_path, 'ab')
        if self not in _LIVE_SERVERS:
            _LIVE_SERVERS.append(self)
        limit = None
        if self.nofile is not None:
            limit = lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (self.nofile, self.nofile))
        self.proc = subprocess.Popen([BINARY, '--config', self.config_path],
                                     stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=subprocess.STDOUT, cwd=self.env.dir,
                                     start_new_session=True, preexec_fn=limit)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerError('server exited with %s during start-up; log:\n%s'
                                  % (self.proc.returncode, self.log_tail()))
            if port_accepts(self.port):
                return self
            time.sleep(0.05)
        self.kill()
        raise ServerError('server did not accept on port %d within %ss; log:\n%s'
                          % (self.port, timeout, self.log_tail()))

    def wait_workers(self, count, timeout=5.0):
        """Wait until the master has `count` live workers; returns the pids."""
        pids = wait_for(lambda: (lambda c: c if len(c) == count else None)(self.workers()), timeout)
        return pids or self.workers()

    def _children_by_role(self):
        """Live children of the master: (workers, collectors). The master's
        announcement of each fork ('Success: detached with pid <N> ...', at
        level info) tells them apart; without it, the collector's process
        name. A collector just forked still has the master's name, and a
        test that took it for a worker killed it."""
        # Read on from where the last call stopped: a log at level info under
        # load grows by megabytes.
        try:
            with open(self.log_path, 'rb') as f:
                if os.fstat(f.fileno()).st_size < self._forked_offset:
                    self._forked_offset = 0  # truncated: read it again
                f.seek(self._forked_offset)
                text = f.read()
        except OSError:
            text = b''
        text = text[:text.rfind(b'\n') + 1]  # whole lines only
        self._forked_offset += len(text)
        for pid, parent, role in _FORKED.findall(text.decode('utf-8', 'replace')):
            self._forked[int(pid)] = (int(parent), role)  # a pid used again: its latest fork counts
        workers, collectors = [], []
        for p in children_of(self.pid, include_zombies=False):
            parent, role = self._forked.get(p, (None, None))
            if parent != self.pid:
                role = 'stats collector' if comm_of(p) == COLLECTOR_NAME else 'worker'
            (collectors if role == 'stats collector' else workers).append(p)
        return workers, collectors

    def workers(self):
        """Live children of the master, the stats collector excepted."""
        return self._children_by_role()[0]

    def collector(self):
        """Pid of the stats collector, or None."""
        found = self._children_by_role()[1]
        return found[0] if found else None

    def wait_collector(self, timeout=5.0):
        """Wait until the master has forked its stats collector (the port
        accepts before it has); returns its pid or None."""
        return wait_for(self.collector, timeout)

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def terminate(self, timeout=40.0):
        """SIGTERM the master and wait for it; returns the exit code or None
        if it had to be killed."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                return None
        self._reap_group()
        return self.proc.returncode

    stop = terminate

    def kill(self):
        """Last resort: SIGKILL the master and every process left in its
        process group (its workers), each by pid."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                self.proc.kill()
            except ProcessLookupError:
                pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        self._reap_group()

    def _reap_group(self):
        # workers left behind by a master that exited: kill them by pid
        for _ in range(3):
            members = group_members(self.proc.pid)
            if not members:
                break
            for pid in members:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.05)
        self._close_log()

    def _close_log(self):
        if self._log is not None:
            self._log.close()
            self._log = None

    def log(self):
        try:
            with open(self.log_path, 'rb') as f:
                return f.read().decode('utf-8', 'replace')
        except OSError:
            return ''

    def log_tail(self, lines=40):
        return '\n'.join(self.log().splitlines()[-lines:])

    def access_lines(self):
        if not self.access_log:
            return []
        try:
            with open(self.access_log, 'rb') as f:
                return f.read().decode('utf-8', 'replace').splitlines()
        except OSError:
            return []

    def url(self, path='/'):
        return 'http://127.0.0.1:%d%s' % (self.port, path)


# --------------------------------------------------------------------------
# raw HTTP
# --------------------------------------------------------------------------

class Response:
    def __init__(self, status, reason, version, headers, header_list, body, raw_head):
        self.status = status
        self.reason = reason
        self.version = version
        self.headers = headers          # lower-cased name -> last value
        self.header_list = header_list  # [(name, value)] as received
        self.body = body
        self.raw_head = raw_head

    def header(self, name, default=None):
        return self.headers.get(name.lower(), default)

    def __repr__(self):
        return '<Response %s %r headers=%r body=%d bytes>' % (
            self.status, self.reason, self.headers, len(self.body))


def parse_head(head):
    """Parse b'HTTP/1.1 200 OK\\r\\nA: b\\r\\n...' (without the blank line)."""
    text = head.decode('iso-8859-1')
    lines = text.split('\r\n')
    m = re.match(r'(HTTP/\d\.\d) (\d{3})(?: (.*))?$', lines[0])
    if not m:
        raise ValueError('bad status line %r' % lines[0])
    headers, header_list = {}, []
    for line in lines[1:]:
        if not line:
            continue
        name, _, value = line.partition(':')
        header_list.append((name.strip(), value.strip()))
        headers[name.strip().lower()] = value.strip()
    return m.group(1), int(m.group(2)), m.group(3) or '', headers, header_list


def parse_response(data):
    """Parse one complete raw response (body = everything after the head)."""
    idx = data.find(b'\r\n\r\n')
    if idx < 0:
        raise ValueError('no end of headers in %r' % data[:200])
    version, status, reason, headers, hl = parse_head(data[:idx])
    return Response(status, reason, version, headers, hl, data[idx + 4:], data[:idx])


def request_bytes(method, path, headers=None, version='HTTP/1.1', host=True, close=True):
    lines = ['%s %s %s' % (method, path, version)]
    hdrs = dict(headers or {})
    if host and not any(k.lower() == 'host' for k in hdrs):
        lines.append('Host: 127.0.0.1')
    if close and not any(k.lower() == 'connection' for k in hdrs):
        lines.append('Connection: close')
    for k, v in hdrs.items():
        lines.append('%s: %s' % (k, v))
    return ('\r\n'.join(lines) + '\r\n\r\n').encode('latin-1')


def connect(port, timeout=SOCK_TIMEOUT):
    s = socket.create_connection(('127.0.0.1', port), timeout=timeout)
    s.settimeout(timeout)
    return s


def recv_all(sock, timeout=SOCK_TIMEOUT, limit=64 * MIB):
    """Read until the peer closes, the overall timeout expires or `limit`
    bytes arrived. Returns (data, closed) where closed tells whether the
    peer closed (EOF or reset) before the timeout."""
    chunks, total = [], 0
    deadline = time.monotonic() + timeout
    closed = False
    while total < limit:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        sock.settimeout(left)
        try:
            chunk = sock.recv(1 << 16)
        except socket.timeout:
            break
        except (ConnectionResetError, BrokenPipeError):
            closed = True
            break
        if not chunk:
            closed = True
            break
        chunks.append(chunk)
        total += len(chunk)
    return b''.join(chunks), closed


def raw_exchange(port, data, timeout=SOCK_TIMEOUT):
    """Connect, send `data`, read until close/timeout.
    Returns (bytes received, closed-by-peer)."""
    with connect(port, timeout) as s:
        try:
            s.sendall(data)
        except (ConnectionResetError, BrokenPipeError):
            pass
        return recv_all(s, timeout)


def raw_request(port, data, timeout=SOCK_TIMEOUT):
    """Send raw bytes on a fresh connection and parse the first response.
    Reading stops as soon as that response is complete (Content-Length),
    so a server that keeps the connection open does not slow tests down."""
    resp = maybe_response(port, data, timeout)
    if resp is None:
        raise AssertionError('connection closed without a response to %r' % data[:200])
    return resp


def maybe_response(port, data, timeout=SOCK_TIMEOUT):
    """Like raw_request, but returns None when the server closes the
    connection without answering."""
    with Conn(port, timeout) as c:
        try:
            c.send(data)
        except (ConnectionResetError, BrokenPipeError):
            pass
        try:
            return c.read_response(head_request=data.startswith(b'HEAD '))
        except ConnectionError:
            if c.buf:
                raise
            return None


def http(port, method, path, headers=None, timeout=SOCK_TIMEOUT, **kw):
    """One request on a fresh connection (Connection: close)."""
    return raw_request(port, request_bytes(method, path, headers, **kw), timeout)


class Conn:
    """A persistent connection that can read responses one at a time
    (for keep-alive and pipelining tests)."""

    def __init__(self, port, timeout=SOCK_TIMEOUT):
        self.sock = connect(port, timeout)
        self.buf = b''
        self.timeout = timeout
        self.eof = False

    def send(self, data):
        self.sock.sendall(data)

    def _fill(self, deadline):
        left = deadline - time.monotonic()
        if left <= 0:
            raise socket.timeout('timed out waiting for response data')
        self.sock.settimeout(left)
        try:
            chunk = self.sock.recv(1 << 16)
        except (ConnectionResetError, BrokenPipeError):
            chunk = b''
        if not chunk:
            self.eof = True
            return False
        self.buf += chunk
        return True

    def read_response(self, head_request=False):
        """Read exactly one response (Content-Length, chunked or until close)."""
        deadline = time.monotonic() + self.timeout
        while b'\r\n\r\n' not in self.buf:
            if not self._fill(deadline):
                raise ConnectionError('connection closed before a full response head '
                                      '(have %r)' % self.buf[:200])
        idx = self.buf.index(b'\r\n\r\n')
        head, self.buf = self.buf[:idx], self.buf[idx + 4:]
        version, status, reason, headers, hl = parse_head(head)
        no_body = head_request or status in (204, 304) or 100 <= status < 200
        if no_body:
            body = b''
        elif 'content-length' in headers:
            n = int(headers['content-length'])
            while len(self.buf) < n:
                if not self._fill(deadline):
                    raise ConnectionError('closed after %d of %d body bytes' % (len(self.buf), n))
            body, self.buf = self.buf[:n], self.buf[n:]
        elif 'chunked' in headers.get('transfer-encoding', '').lower():
            body = self._read_chunked(deadline)
        else:
            while self._fill(deadline):
                pass
            body, self.buf = self.buf, b''
        return Response(status, reason, version, headers, hl, body, head)

    def _read_chunked(self, deadline):
        body = b''
        while True:
            line = self._read_line(deadline)
            size = int(line.split(b';')[0], 16)
            if size == 0:
                while self._read_line(deadline):  # trailer fields up to the empty line
                    pass
                return body
            while len(self.buf) < size + 2:
                if not self._fill(deadline):
                    raise ConnectionError('closed inside a chunk')
            body += self.buf[:size]
            self.buf = self.buf[size + 2:]

    def _read_line(self, deadline):
        while b'\r\n' not in self.buf:
            if not self._fill(deadline):
                raise ConnectionError('closed inside a chunked body')
        line, self.buf = self.buf.split(b'\r\n', 1)
        return line

    def closed_by_peer(self, timeout=3.0):
        """True if the peer closes (EOF/reset) within timeout with no extra data."""
        deadline = time.monotonic() + timeout
        try:
            while True:
                if not self._fill(deadline):
                    return True
        except socket.timeout:
            return False
        except OSError:
            return True

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()


def parse_multipart_byteranges(content_type, body):
    """Split a multipart/byteranges body into [(headers-dict, bytes)]."""
    m = re.search(r'boundary="?([^";]+)"?', content_type)
    if not m:
        raise ValueError('no boundary in %r' % content_type)
    delim = b'--' + m.group(1).encode('latin-1')
    # Each part starts with CRLF--boundary (the first one may lack the CRLF)
    data = b'\r\n' + body if not body.startswith(b'\r\n') else body
    pieces = data.split(b'\r\n' + delim)
    parts = []
    closed = False
    for piece in pieces[1:]:
        if piece.startswith(b'--'):
            closed = True
            break
        if not piece.startswith(b'\r\n'):
            raise ValueError('garbage after boundary: %r' % piece[:50])
        piece = piece[2:]
        idx = piece.find(b'\r\n\r\n')
        if idx < 0:
            raise ValueError('part without header end: %r' % piece[:100])
        hdrs = {}
        for line in piece[:idx].decode('latin-1').split('\r\n'):
            if line:
                k, _, v = line.partition(':')
                hdrs[k.strip().lower()] = v.strip()
        parts.append((hdrs, piece[idx + 4:]))
    if not closed:
        raise ValueError('multipart body has no closing delimiter')
    return parts


# --------------------------------------------------------------------------
# unittest glue
# --------------------------------------------------------------------------

class TailsOnFailure(unittest.TestCase):
    """On a failing test, prints what failure_tails() gives: (title, text)
    pairs, by default self._tails, which a tearDown keeps (the temporary
    directory with the logs is gone by the time run() knows)."""

    def failure_tails(self):
        return getattr(self, '_tails', [])

    def run(self, result=None):
        if result is None:
            return super().run(result)
        before = len(result.failures) + len(result.errors)
        out = super().run(result)
        if len(result.failures) + len(result.errors) > before:
            for title, text in self.failure_tails():
                sys.stderr.write('\n----- %s for %s -----\n%s\n' % (title, self.id(), text))
        return out


class ServerTestCase(TailsOnFailure):
    """Base class: one TestEnv + one server per class (set `server_config`
    to change config keywords, or `start_class_server = False`). Extra
    servers made with self.new_server() are stopped after each test. On a
    failing test the tail of every involved server log is printed."""

    server_config = {}
    start_class_server = True
    files = None

    @classmethod
    def setUpClass(cls):
        cls.env = TestEnv(cls.files)
        cls.server = None
        if cls.start_class_server:
            cls.server = Server(cls.env, **cls.server_config)
            try:
                cls.server.start()
            except Exception:
                cls.server.kill()
                cls.env.cleanup()
                raise

    @classmethod
    def tearDownClass(cls):
        try:
            if cls.server is not None:
                cls.server.terminate(timeout=15)
        finally:
            if cls.server is not None:
                cls.server.kill()
            if os.environ.get('SMP_KEEP_TMP'):
                sys.stderr.write('[harness] kept %s\n' % cls.env.dir)
            else:
                cls.env.cleanup()

    def setUp(self):
        self._servers = []

    def tearDown(self):
        for s in self._servers:
            try:
                s.terminate(timeout=15)
            finally:
                s.kill()

    def new_server(self, start=True, **cfg):
        s = Server(self.env, **cfg)
        self._servers.append(s)
        if start:
            s.start()
        return s

    @property
    def port(self):
        return self.server.port

    def content(self, name):
        return self.env.content[name]

    def run(self, result=None):
        self._servers = []
        return super().run(result)

    def failure_tails(self):
        tails = []
        for s in ([self.server] if getattr(self, 'server', None) else []) + getattr(self, '_servers', []):
            tails.append(('server log tail (%s, port %d)' % (s.log_path, s.port), s.log_tail()))
            if s.access_log:
                tails.append(('access log tail', '\n'.join(s.access_lines()[-10:])))
        return tails


def curl(args, timeout=60):
    return run(['curl', '--silent', '--show-error', '--noproxy', '*'] + list(args), timeout=timeout)


def main():
    signal.signal(signal.SIGTERM, _on_sigterm)
    signal.signal(signal.SIGHUP, _on_sigterm)
    unittest.main(verbosity=2)
