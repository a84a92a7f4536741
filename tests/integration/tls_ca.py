#!/usr/bin/python3
"""A throwaway certificate authority for the TLS tests, made with Debian's
`openssl` command (3.0): ECDSA P-256 keys, so that the whole set takes a
fraction of a second.

    ca = tls_ca.make(directory)
    ca.ca_cert                      # the CA certificate (clients trust it)
    ca.leaves['localhost'].cert     # leaf for localhost, 127.0.0.1 (serial 0x1001)
    ca.leaves['localhost'].key

Leaves (name: what it is, serial):
  localhost          CN=localhost, SAN DNS:localhost, IP:127.0.0.1     0x1001
  localhost-renewed  the same names, another key, O=Renewed            0x1002
  other              CN=other.test, SAN DNS:other.test                 0x2001
  expired            CN=localhost, valid in January 2020 only          0x3001
  expiring           CN=localhost, expires in 5 days                   0x4001
plus `mismatched_key`: a fresh key that belongs to no certificate.

Each leaf's .cert holds the leaf, then the chain (here only the CA): the
order the server's `certificate:` file expects. .leaf holds the leaf alone.

Run by itself (python3 tls_ca.py [DIR]) it makes the set and checks every
leaf with `openssl verify`.

OpenSSL 3.0's `x509 -req` has no -not_before/-not_after (3.4 has), so the
expired leaf is signed with `openssl ca`, whose -startdate/-enddate take any
dates.
"""

import os
import subprocess
import sys
import tempfile

OPENSSL = 'openssl'
TIMEOUT = 30

CA_CONFIG = """\
[ req ]
distinguished_name = dn
prompt = no
[ dn ]
CN = SMProtocol Test CA
[ ca_ext ]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[ ca ]
default_ca = test_ca
[ test_ca ]
dir = {dir}
database = {dir}/index.txt
new_certs_dir = {dir}/newcerts
serial = {dir}/serial
certificate = {dir}/ca.pem
private_key = {dir}/ca.key
default_md = sha256
policy = any_policy
unique_subject = no
email_in_dn = no
copy_extensions = none
[ any_policy ]
commonName = supplied
organizationName = optional
"""

LEAF_EXT = """\
[ leaf ]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
subjectAltName = {san}
"""

LEAVES = {
    # name: (subject, SAN, serial)
    'localhost': ('/CN=localhost', 'DNS:localhost, IP:127.0.0.1', 0x1001),
    'localhost-renewed': ('/O=Renewed/CN=localhost', 'DNS:localhost, IP:127.0.0.1', 0x1002),
    'other': ('/CN=other.test', 'DNS:other.test', 0x2001),
    'expired': ('/CN=localhost', 'DNS:localhost, IP:127.0.0.1', 0x3001),
    'expiring': ('/CN=localhost', 'DNS:localhost, IP:127.0.0.1', 0x4001),
}


class Leaf:
    def __init__(self, name, cert, leaf, key, serial, subject):
        self.name = name
        self.cert = cert        # leaf + chain (PEM)
        self.leaf = leaf        # the leaf alone (PEM)
        self.key = key
        self.serial = serial    # int
        self.subject = subject  # as given to openssl, e.g. '/CN=other.test'

    def __repr__(self):
        return '<Leaf %s serial=%#x %s>' % (self.name, self.serial, self.cert)


class TestCA:
    def __init__(self, directory):
        self.dir = directory
        self.ca_cert = os.path.join(directory, 'ca.pem')
        self.ca_key = os.path.join(directory, 'ca.key')
        self.leaves = {}
        self.mismatched_key = os.path.join(directory, 'mismatched.key')

    def path(self, name):
        return os.path.join(self.dir, name)


def openssl(*args, cwd=None):
    r = subprocess.run([OPENSSL] + list(args), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True, timeout=TIMEOUT, cwd=cwd)
    if r.returncode != 0:
        raise RuntimeError('openssl %s failed (%s):\n%s%s' % (' '.join(args), r.returncode, r.stdout, r.stderr))
    return r.stdout


def new_key(path):
    openssl('genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:P-256', '-out', path)
    os.chmod(path, 0o600)
    return path


def _write(path, text):
    with open(path, 'w') as f:
        f.write(text)
    return path


def _read(path):
    with open(path) as f:
        return f.read()


def make(directory=None):
    """Make the CA and every leaf in `directory` (a new temp dir if None)."""
    directory = directory or tempfile.mkdtemp(prefix='smp-tls-')
    os.makedirs(directory, exist_ok=True)
    ca = TestCA(directory)
    cnf = _write(ca.path('ca.cnf'), CA_CONFIG.format(dir=directory))
    os.makedirs(ca.path('newcerts'), exist_ok=True)
    _write(ca.path('index.txt'), '')
    _write(ca.path('serial'), '3001\n')

    new_key(ca.ca_key)
    openssl('req', '-config', cnf, '-new', '-x509', '-key', ca.ca_key, '-sha256', '-days', '3650',
            '-extensions', 'ca_ext', '-set_serial', '1', '-out', ca.ca_cert)

    for name, (subject, san, serial) in LEAVES.items():
        key = new_key(ca.path('%s.key' % name))
        csr = ca.path('%s.csr' % name)
        leaf = ca.path('%s.leaf.pem' % name)
        ext = _write(ca.path('%s.ext' % name), LEAF_EXT.format(san=san))
        openssl('req', '-new', '-key', key, '-subj', subject, '-out', csr)
        if name == 'expired':
            # `openssl ca` takes its serial from the serial file (0x3001).
            openssl('ca', '-batch', '-config', cnf, '-notext', '-in', csr, '-out', leaf,
                    '-startdate', '20200101000000Z', '-enddate', '20200201000000Z',
                    '-extfile', ext, '-extensions', 'leaf')
        else:
            days = '5' if name == 'expiring' else '365'
            openssl('x509', '-req', '-in', csr, '-CA', ca.ca_cert, '-CAkey', ca.ca_key,
                    '-set_serial', str(serial), '-days', days, '-sha256',
                    '-extfile', ext, '-extensions', 'leaf', '-out', leaf)
        cert = _write(ca.path('%s.pem' % name), _read(leaf) + _read(ca.ca_cert))
        ca.leaves[name] = Leaf(name, cert, leaf, key, serial, subject)

    new_key(ca.mismatched_key)
    return ca


def cert_field(path, field):
    """`openssl x509 -noout -FIELD` of the first certificate in path, value only
    (e.g. field='serial' -> '1001', 'subject' -> 'CN = localhost')."""
    out = openssl('x509', '-noout', '-' + field, '-in', path).strip()
    return out.split('=', 1)[1].strip() if '=' in out else out


def main():
    directory = sys.argv[1] if len(sys.argv) > 1 else None
    ca = make(directory)
    print('CA:', ca.ca_cert)
    for name, leaf in ca.leaves.items():
        r = subprocess.run([OPENSSL, 'verify', '-CAfile', ca.ca_cert, leaf.leaf], capture_output=True,
                           text=True, timeout=TIMEOUT)
        dates = openssl('x509', '-noout', '-serial', '-subject', '-enddate', '-ext', 'subjectAltName',
                        '-in', leaf.cert).strip().replace('\n', '; ')
        print('%-18s verify: %s | %s' % (name, (r.stdout + r.stderr).strip().replace('\n', ' / '), dates))
    print('mismatched key:', ca.mismatched_key)


if __name__ == '__main__':
    main()
