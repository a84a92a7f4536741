"""Headless Chromium for the integration tests (Debian's `chromium`).

The standard library and websocket-client (Debian python3-websocket) only.
Every wait is bounded. Each Chromium gets a throwaway directory (its profile,
its output), runs in a process group of its own, and is killed with all its
children and its directory removed when done: also when a test fails, and,
through the harness's clean-up, when the script is interrupted.

What Chromium 156 does here, found by trying:
- `--headless=new` is the only headless mode left in the chromium binary.
- `--virtual-time-budget` stops virtual time while any fetch is pending, and a
  Server-Sent Events stream is always pending: a page that keeps one open (the
  dashboard) never uses its budget up, and Chromium runs until it is killed.
  Without a budget, `--dump-dom` prints the DOM at the load event: the page's
  scripts have run, the answers to their fetches have not arrived. Use Browser
  to see what such a page shows later.
- DevTools refuses a websocket whose Origin header it was not told to allow
  (`--remote-allow-origins`); the client here sends none.
"""

import base64
import collections
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request

import harness

try:
    import websocket
except ImportError:  # the tests that need it skip, saying why (see available())
    websocket = None

CHROMIUM = os.environ.get('SMP_CHROMIUM', 'chromium')

FLAGS = [
    '--headless=new',
    '--no-sandbox',
    '--disable-gpu',
    # A container or chroot may have a small /dev/shm, or none: Chromium's
    # shared memory goes to /tmp instead.
    '--disable-dev-shm-usage',
    # No first-run screens and no calls home: the tests talk to 127.0.0.0/8 only,
    # and any other host name resolves to nothing.
    '--no-first-run',
    '--no-default-browser-check',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
    '--disable-default-apps',
    '--disable-extensions',
    '--disable-breakpad',
    '--password-store=basic',
    '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.*',
    '--mute-audio',
    '--hide-scrollbars',
]

STARTUP_TIMEOUT = 20.0
CALL_TIMEOUT = 10.0


class BrowserError(Exception):
    pass


def available():
    """None when Chromium and websocket-client are installed, else why not."""
    if shutil.which(CHROMIUM) is None:
        return '%s is not installed (Debian: apt install chromium)' % CHROMIUM
    if websocket is None:
        return 'websocket-client is not installed (Debian: apt install python3-websocket)'
    return None


class _Chromium:
    """One Chromium process group with its own temp dir: profile, stdout, stderr."""

    def __init__(self, args):
        self.dir = tempfile.mkdtemp(prefix='smp-chromium-')
        self.profile = os.path.join(self.dir, 'profile')
        self._stdout_path = os.path.join(self.dir, 'stdout')
        self._stderr_path = os.path.join(self.dir, 'stderr')
        self._stderr_text = None
        cmd = [CHROMIUM] + FLAGS + ['--user-data-dir=' + self.profile] + list(args)
        try:
            with open(self._stdout_path, 'wb') as out, open(self._stderr_path, 'wb') as err:
                self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                             start_new_session=True)
        except OSError as error:
            shutil.rmtree(self.dir, ignore_errors=True)
            raise BrowserError('cannot run %s: %s' % (CHROMIUM, error))
        # The harness kills what is in this list when the script ends or is
        # interrupted: poll() and kill() are all it calls.
        harness._LIVE_CLIENTS.append(self)

    def poll(self):
        return self.proc.poll()

    def wait(self, timeout):
        """The exit code, or None if Chromium still runs after `timeout` seconds."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def stdout(self):
        with open(self._stdout_path, 'rb') as f:
            return f.read().decode('utf-8', 'replace')

    def _stderr(self):
        if self._stderr_text is None:
            try:
                with open(self._stderr_path, 'rb') as f:
                    return f.read().decode('utf-8', 'replace')
            except OSError:
                return ''
        return self._stderr_text

    def stderr_tail(self, lines=25):
        """The end of Chromium's stderr, without the D-Bus complaints of a machine without a session bus."""
        kept = [line for line in self._stderr().splitlines() if ':ERROR:dbus/' not in line]
        return '\n'.join(kept[-lines:])

    def kill(self):
        """SIGKILL the whole process group (the browser, its zygote, its
        renderers) and wait until none is left, keep the stderr for the
        failure messages, and remove the temp dir. (Chromium's crash handlers
        run in groups of their own; they exit when the browser does.)"""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        harness.wait_for(lambda: not harness.group_members(self.proc.pid), 5)
        self._stderr_text = self._stderr()
        shutil.rmtree(self.dir, ignore_errors=True)
        if self in harness._LIVE_CLIENTS:
            harness._LIVE_CLIENTS.remove(self)

    def describe(self, what):
        return '%s\n----- chromium stderr (tail) -----\n%s' % (what, self.stderr_tail())


def _run_once(args, timeout, what):
    """Run Chromium to its end (at most `timeout` seconds); returns its stdout."""
    chromium = _Chromium(args)
    try:
        code = chromium.wait(timeout)
        if code is None:
            raise BrowserError(chromium.describe('%s did not finish within %ss' % (what, timeout)))
        if code != 0:
            raise BrowserError(chromium.describe('%s exited with %s' % (what, code)))
        return chromium.stdout()
    finally:
        chromium.kill()


def dump_dom(url, timeout=30, budget_ms=None, width=1280, height=900):
    """The DOM of `url` as Chromium serialises it, once the page loaded, or
    after `budget_ms` of virtual time (which a page with an open stream
    never spends: see the module's docstring)."""
    args = ['--window-size=%d,%d' % (width, height)]
    if budget_ms is not None:
        args.append('--virtual-time-budget=%d' % budget_ms)
    return _run_once(args + ['--dump-dom', url], timeout, 'chromium --dump-dom %s' % url)


def screenshot(url, path, width=1280, height=900, timeout=30, budget_ms=None):
    """A PNG of the window at `path` (made absolute), taken when the page has
    loaded or after `budget_ms` of virtual time, as dump_dom."""
    path = os.path.abspath(path)
    args = ['--window-size=%d,%d' % (width, height), '--screenshot=' + path]
    if budget_ms is not None:
        args.append('--virtual-time-budget=%d' % budget_ms)
    _run_once(args + [url], timeout, 'chromium --screenshot %s' % url)
    if not os.path.exists(path):
        raise BrowserError('chromium --screenshot %s exited without writing %s' % (url, path))
    return path


def _get_json(url, timeout):
    # No proxy, whatever the environment says: DevTools listens on loopback.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(url, timeout=timeout) as response:
        return json.loads(response.read().decode('utf-8'))


class Browser:
    """A headless Chromium driven over the DevTools protocol, one page.

    with Browser() as b:
        b.navigate(url)
        b.wait_for('document.body.dataset.loaded === "1"', 10)
        value = b.evaluate('document.title')

    It keeps what helps a failure message: the page's console messages and
    uncaught exceptions (`console`), the URL of every request the page made
    (`requests`), and Chromium's stderr."""

    def __init__(self, width=1280, height=900, startup_timeout=STARTUP_TIMEOUT):
        self.width = width
        self.height = height
        self.startup_timeout = startup_timeout
        self.console = collections.deque(maxlen=200)
        self.requests = []
        self.document_status = None
        self._chromium = None
        self._ws = None
        self._next_id = 0
        self._loads = 0

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self.close()

    def start(self):
        reason = available()
        if reason:
            raise BrowserError(reason)
        self._chromium = _Chromium(['--remote-debugging-port=0', '--window-size=%d,%d' % (self.width, self.height),
                                    'about:blank'])
        try:
            deadline = time.monotonic() + self.startup_timeout
            port = self._devtools_port(deadline)
            page = self._page_target(port, deadline)
            self._ws = websocket.create_connection(page['webSocketDebuggerUrl'], timeout=CALL_TIMEOUT,
                                                   suppress_origin=True)
            for domain in ('Page', 'Runtime', 'Network'):
                self._call(domain + '.enable')
        except BaseException:
            self.close()
            raise
        return self

    def _devtools_port(self, deadline):
        # Chromium writes the port it chose, then the browser's websocket path.
        path = os.path.join(self._chromium.profile, 'DevToolsActivePort')
        while True:
            try:
                with open(path) as f:
                    first = f.readline().strip()
                if first.isdigit():
                    return int(first)
            except OSError:
                pass
            if self._chromium.poll() is not None:
                raise BrowserError(self._chromium.describe('chromium exited with %s before DevTools listened'
                                                           % self._chromium.poll()))
            if time.monotonic() >= deadline:
                raise BrowserError(self._chromium.describe('no %s within %ss' % (path, self.startup_timeout)))
            time.sleep(0.05)

    def _page_target(self, port, deadline):
        last_error = None
        while time.monotonic() < deadline:
            try:
                pages = [t for t in _get_json('http://127.0.0.1:%d/json/list' % port, 2) if t.get('type') == 'page']
                if pages:
                    return pages[0]
            except (OSError, ValueError) as error:
                last_error = error
            time.sleep(0.05)
        raise BrowserError(self._chromium.describe('DevTools on port %d listed no page within %ss (last error: %s)'
                                                   % (port, self.startup_timeout, last_error)))

    # ----- the DevTools protocol -----

    def _receive(self, deadline, what):
        left = deadline - time.monotonic()
        if left <= 0:
            raise BrowserError(self.describe('no %s in time' % what))
        self._ws.settimeout(left)
        try:
            return json.loads(self._ws.recv())
        except websocket.WebSocketTimeoutException:
            raise BrowserError(self.describe('no %s in time' % what))
        except (websocket.WebSocketException, OSError) as error:
            raise BrowserError(self.describe('DevTools connection lost waiting for %s: %s' % (what, error)))

    def _call(self, method, params=None, timeout=CALL_TIMEOUT):
        self._next_id += 1
        call_id = self._next_id
        self._ws.send(json.dumps({'id': call_id, 'method': method, 'params': params or {}}))
        deadline = time.monotonic() + timeout
        while True:
            message = self._receive(deadline, 'answer to %s' % method)
            if message.get('id') == call_id:
                if 'error' in message:
                    raise BrowserError(self.describe('%s failed: %s' % (method, message['error'].get('message'))))
                return message.get('result', {})
            self._on_event(message.get('method'), message.get('params', {}))

    def _pump(self, deadline, what):
        """Take in one event (BrowserError if none comes before `deadline`)."""
        message = self._receive(deadline, what)
        self._on_event(message.get('method'), message.get('params', {}))

    def _on_event(self, method, params):
        if method == 'Page.loadEventFired':
            self._loads += 1
        elif method == 'Network.requestWillBeSent':
            self.requests.append(params['request']['url'])
        elif method == 'Network.responseReceived' and params.get('type') == 'Document':
            self.document_status = params['response']['status']
        elif method == 'Runtime.consoleAPICalled':
            words = [str(a.get('value', a.get('description', ''))) for a in params.get('args', [])]
            self.console.append('console.%s: %s' % (params.get('type'), ' '.join(words)))
        elif method == 'Runtime.exceptionThrown':
            details = params.get('exceptionDetails', {})
            self.console.append('uncaught: %s' % details.get('exception', {}).get('description', details.get('text')))

    def describe(self, what):
        """`what`, with the page's last console lines and Chromium's stderr, for a failure message."""
        console = '\n'.join(list(self.console)[-20:]) or '(none)'
        text = '%s\n----- page console (tail) -----\n%s' % (what, console)
        return self._chromium.describe(text) if self._chromium else text

    # ----- what the tests use -----

    def navigate(self, url, timeout=15):
        """Open `url` and wait for its load event; an HTTP error status is an error."""
        loads = self._loads
        self.document_status = None
        result = self._call('Page.navigate', {'url': url}, timeout)
        if result.get('errorText'):
            raise BrowserError(self.describe('navigating to %s: %s' % (url, result['errorText'])))
        deadline = time.monotonic() + timeout
        while self._loads == loads:
            self._pump(deadline, 'load event of %s' % url)
        if self.document_status is not None and self.document_status >= 400:
            raise BrowserError(self.describe('%s answered %s' % (url, self.document_status)))

    def evaluate(self, expression, timeout=CALL_TIMEOUT):
        """The value of a JavaScript expression in the page (JSON-like values;
        a promise is awaited); an exception in the page is a BrowserError."""
        result = self._call('Runtime.evaluate', {'expression': expression, 'returnByValue': True,
                                                 'awaitPromise': True}, timeout)
        if 'exceptionDetails' in result:
            details = result['exceptionDetails']
            why = details.get('exception', {}).get('description') or details.get('text')
            raise BrowserError(self.describe('%s threw: %s' % (expression, why)))
        return result.get('result', {}).get('value')

    def wait_for(self, predicate, timeout, interval=0.1):
        """Evaluate `predicate` until it is truthy (returns its value) or
        `timeout` seconds passed (BrowserError with its last value)."""
        deadline = time.monotonic() + timeout
        while True:
            value = self.evaluate(predicate, timeout=max(1.0, min(CALL_TIMEOUT, deadline - time.monotonic())))
            if value:
                return value
            if time.monotonic() >= deadline:
                raise BrowserError(self.describe('%s was still %r after %ss' % (predicate, value, timeout)))
            time.sleep(interval)

    def wait_for_request(self, fragment, timeout):
        """The first URL the page asked for that contains `fragment`, waiting
        at most `timeout` seconds for the page to ask."""
        deadline = time.monotonic() + timeout
        while True:
            found = [url for url in self.requests if fragment in url]
            if found:
                return found[0]
            self._pump(deadline, 'request for %s' % fragment)

    def screenshot(self, path, full_page=True):
        """A PNG of the page at `path`: the whole page, or only the window."""
        params = {'format': 'png'}
        if full_page:
            size = self._call('Page.getLayoutMetrics')['cssContentSize']
            params['clip'] = {'x': 0, 'y': 0, 'width': size['width'], 'height': size['height'], 'scale': 1}
            params['captureBeyondViewport'] = True
        data = self._call('Page.captureScreenshot', params, timeout=30)['data']
        with open(path, 'wb') as f:
            f.write(base64.b64decode(data))
        return path

    def close(self):
        """Ask Chromium to quit, then kill what is left of it and remove its temp dir."""
        if self._ws is not None:
            try:
                self._call('Browser.close', timeout=5)
            except BrowserError:
                pass
            try:
                self._ws.close()
            except (websocket.WebSocketException, OSError):
                pass
            self._ws = None
        if self._chromium is not None:
            self._chromium.wait(5)
            self._chromium.kill()
