"""Signed, expiring links (issue 18, nginx's secure_link): `smprotocol sign`
makes PATH?expires=...&signature=..., http_download serves only such links
when `secure_link` is set: curl and aria2c -x8 with a valid link (one
completed download), a tampered path or expiry and an unsigned request (403),
an expired link (410, reason link_expired), the old secret still valid, and a
link bound to the client's address."""

import base64
import hashlib
import hmac
import json
import os
import subprocess
import time
import unittest
import urllib.parse

import harness
from harness import MIB

NEW = 'new-secret-0123456789'
OLD = 'old-secret-0123456789'


def signature(secret, path, expires, ip=''):
    message = '%s\n%d' % (path, expires) + ('\n' + ip if ip else '')
    digest = hmac.new(secret.encode(), message.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip('=')


def link(secret, path, expires, ip=''):
    return '%s?expires=%d&signature=%s' % (urllib.parse.quote(path), expires, signature(secret, path, expires, ip))


class SecureLink(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.env = harness.TestEnv({'a.bin': 1 * MIB, 'big.bin': 16 * MIB, 'dir/x y.bin': 1000})
        cls.port = harness.free_port()
        cls.bound_port = harness.free_port()
        text = harness.config_text(cls.port, cls.env.www, workers=2,
                                   core_extra={'tracking': '{enabled: true, idle_window: 1s}'},
                                   secure_link='{secrets: [%s, %s]}' % (NEW, OLD))
        text = text.replace('plugins: []', '\n'.join([
            '  - module: http_download',
            '    host: 127.0.0.1',
            '    port: %d' % cls.bound_port,
            '    root: %s' % cls.env.www,
            '    secure_link: {secrets: [%s], bind_ip: true}' % NEW,
            'plugins: []']))
        cls.config = cls.env.path('links.yaml')
        harness.write_file(cls.config, text)
        cls.server = harness.Server(cls.env, port=cls.port, config=text)
        cls.server.start()
        cls.out = cls.env.path('out')
        os.makedirs(cls.out)

    @classmethod
    def tearDownClass(cls):
        cls.server.kill()
        cls.env.cleanup()

    def sign(self, *args):
        r = subprocess.run([harness.BINARY, 'sign', '--config', self.config, *args], capture_output=True, text=True,
                           timeout=30)
        self.assertEqual(r.returncode, 0, r.stderr)
        return r.stdout.strip()

    def status(self, target, port=None):
        return harness.http(port or self.port, 'GET', target).status

    def test_sign_prints_a_link_the_server_serves(self):
        signed = self.sign('--ttl', '1h', '/a.bin')
        path, _, query = signed.partition('?')
        self.assertEqual(path, '/a.bin')
        fields = urllib.parse.parse_qs(query)
        expires = int(fields['expires'][0])
        self.assertAlmostEqual(expires, time.time() + 3600, delta=60)
        self.assertEqual(fields['signature'][0], signature(NEW, '/a.bin', expires))
        response = harness.http(self.port, 'GET', signed)
        self.assertEqual(response.status, 200)
        self.assertEqual(response.body, self.env.content['a.bin'])
        # A name that needs encoding: signed decoded, printed encoded.
        signed = self.sign('dir/x y.bin')
        self.assertTrue(signed.startswith('/dir/x%20y.bin?expires='), signed)
        self.assertEqual(self.status(signed), 200)

    def test_curl_and_aria2c_with_a_link(self):
        signed = self.sign('/big.bin')
        url = self.server.url(signed)
        out = os.path.join(self.out, 'curl-big.bin')
        r = harness.run(['curl', '-s', '--noproxy', '*', '-o', out, url])
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(harness.sha256_file(out), harness.sha256_bytes(self.env.content['big.bin']))
        r = harness.run(['aria2c', '-x8', '-s8', '-k1M', '--allow-overwrite=true', '--auto-file-renaming=false',
                         '--file-allocation=none', '--console-log-level=warn', '--summary-interval=0',
                         '--max-tries=1', '--all-proxy=', '-d', self.out, '-o', 'aria-big.bin', url], timeout=90)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertEqual(harness.sha256_file(os.path.join(self.out, 'aria-big.bin')),
                         harness.sha256_bytes(self.env.content['big.bin']))

        def aria_downloads():
            r = subprocess.run([harness.BINARY, 'stats', '--config', self.config, '--json', 'downloads'],
                               capture_output=True, text=True, timeout=30)
            rows = json.loads(r.stdout)['rows'] if r.returncode == 0 else []
            return [row for row in rows if row['path'] == 'big.bin' and row['user_agent'].startswith('aria2')
                    and row['finished']]
        rows = harness.wait_for(aria_downloads, 15, interval=0.3)
        self.assertEqual(len(rows), 1, rows)  # the segments carry the same link: one download
        self.assertTrue(rows[0]['completed'])
        self.assertGreaterEqual(rows[0]['requests'], 2)

    def test_tampered_unsigned_and_expired(self):
        expires = int(time.time()) + 600
        good = link(NEW, '/a.bin', expires)
        self.assertEqual(self.status(good), 200)
        self.assertEqual(self.status(good.replace('/a.bin', '/big.bin')), 403)  # another file
        self.assertEqual(self.status(good.replace(str(expires), str(expires + 3600))), 403)  # a longer life
        self.assertEqual(self.status('/a.bin'), 403)  # unsigned
        self.assertEqual(self.status('/a.bin?expires=%d' % expires), 403)
        self.assertEqual(self.status(link('someone-else-0123456789', '/a.bin', expires)), 403)
        self.assertEqual(self.status(link(NEW, '/a.bin', int(time.time()) - 5)), 410)
        # A forged link is refused as forged, whatever its time.
        self.assertEqual(self.status(link('someone-else-0123456789', '/a.bin', int(time.time()) - 5)), 403)

    def test_the_old_secret_still_verifies(self):
        self.assertEqual(self.status(link(OLD, '/a.bin', int(time.time()) + 600)), 200)

    def test_expired_is_recorded_as_link_expired(self):
        self.assertEqual(self.status(link(NEW, '/big.bin', int(time.time()) - 60)), 410)

        def recorded():
            r = subprocess.run([harness.BINARY, 'stats', '--config', self.config, '--json', 'reasons'],
                               capture_output=True, text=True, timeout=30)
            rows = json.loads(r.stdout)['rows'] if r.returncode == 0 else []
            return [row for row in rows if row['reason'] == 'link_expired']
        self.assertTrue(harness.wait_for(recorded, 10, interval=0.3))

    def test_a_link_bound_to_the_client_address(self):
        expires = int(time.time()) + 600
        self.assertEqual(self.status(link(NEW, '/a.bin', expires, '127.0.0.1'), self.bound_port), 200)
        self.assertEqual(self.status(link(NEW, '/a.bin', expires, '127.0.0.2'), self.bound_port), 403)
        self.assertEqual(self.status(link(NEW, '/a.bin', expires), self.bound_port), 403)  # names no address
        signed = self.sign('--ip', '127.0.0.1', '/a.bin')
        self.assertEqual(self.status(signed, self.bound_port), 200)
        self.assertEqual(self.status(signed), 403)  # the unbound listener checks without the address

    def test_config_check_names_the_key(self):
        text = harness.config_text(harness.free_port(), self.env.www, secure_link='{secrets: [short]}')
        path = self.env.path('bad-link.yaml')
        harness.write_file(path, text)
        r = subprocess.run([harness.BINARY, '-t', '--config', path], capture_output=True, text=True, timeout=30)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn('secure_link.secrets', r.stdout + r.stderr)
        self.assertIn('at least 16 characters', r.stdout + r.stderr)


if __name__ == '__main__':
    unittest.main()
