"""A throw-away certificate authority for TLS tests, made with the openssl CLI.

    ca = TestCA(tmp_dir)            # root CA (ca.cert) and everything below
    ca.localhost.cert, ca.localhost.key     # CN=localhost, SAN DNS:localhost, IP:127.0.0.1
    ca.wrong_name                   # signed by the CA, for wrong.example only
    ca.unknown_ca                   # localhost, but signed by a CA nobody trusts
    ca.expired                      # localhost, signed by the CA, validity over in the past
    ca.other_key                    # a key that belongs to none of the certificates

Keys are ECDSA P-256 (quick to make). Leaf certificates are issued with
``openssl ca`` because, in OpenSSL 3.0, only it can set both ends of the
validity period (``-startdate``/``-enddate``); ``openssl x509 -req`` has
``-days`` only (``-not_before``/``-not_after`` arrived in 3.4). Every leaf gets
the same extensions a real server certificate has: serverAuth,
digitalSignature, no CA, and its subjectAltName.
"""

from __future__ import annotations

import datetime as dt
import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class CertKey:
    cert: Path  # PEM certificate (leaf only)
    key: Path   # PEM private key, unencrypted
    names: tuple[str, ...] = ()


def _openssl(*args: str, cwd: Path | None = None) -> None:
    proc = subprocess.run(["openssl", *args], capture_output=True, cwd=cwd)
    if proc.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args)} failed ({proc.returncode}):\n"
                           f"{proc.stderr.decode(errors='replace')}")


def _asn1_time(t: dt.datetime) -> str:
    return t.astimezone(dt.timezone.utc).strftime("%Y%m%d%H%M%SZ")


_CA_CONF = """\
[ ca ]
default_ca = test_ca

[ test_ca ]
dir = {dir}
database = $dir/index.txt
new_certs_dir = $dir/issued
serial = $dir/serial
certificate = $dir/ca.pem
private_key = $dir/ca.key
default_md = sha256
policy = anything
unique_subject = no
copy_extensions = none
email_in_dn = no

[ anything ]
commonName = supplied
organizationName = optional
"""

_LEAF_EXT = """\
[ leaf ]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
subjectAltName = {san}
"""


class _Authority:
    """One CA: a self-signed root and an `openssl ca` database in `dir`."""

    def __init__(self, dir: Path, name: str):
        self.dir = dir
        dir.mkdir(parents=True, exist_ok=True)
        (dir / "issued").mkdir(exist_ok=True)
        (dir / "index.txt").write_text("")
        (dir / "serial").write_text("1000\n")
        (dir / "ca.cnf").write_text(_CA_CONF.format(dir=dir))
        self.key = dir / "ca.key"
        self.cert = dir / "ca.pem"
        _new_key(self.key)
        _openssl("req", "-x509", "-new", "-key", str(self.key), "-out", str(self.cert),
                 "-days", "30", "-subj", f"/O=popgate tests/CN={name}", "-sha256",
                 "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign",
                 "-addext", "subjectKeyIdentifier=hash")

    def issue(self, label: str, cn: str, san: list[str], *, not_before: dt.datetime,
              not_after: dt.datetime) -> CertKey:
        key = self.dir / f"{label}.key"
        csr = self.dir / f"{label}.csr"
        cert = self.dir / f"{label}.pem"
        ext = self.dir / f"{label}.ext"
        _new_key(key)
        _openssl("req", "-new", "-key", str(key), "-out", str(csr), "-subj", f"/CN={cn}")
        ext.write_text(_LEAF_EXT.format(san=", ".join(san)))
        _openssl("ca", "-config", str(self.dir / "ca.cnf"), "-batch", "-notext",
                 "-in", str(csr), "-out", str(cert), "-extfile", str(ext), "-extensions", "leaf",
                 "-startdate", _asn1_time(not_before), "-enddate", _asn1_time(not_after))
        return CertKey(cert, key, tuple(san))


def _new_key(path: Path) -> None:
    _openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-out", str(path))
    path.chmod(0o600)


LOCALHOST_SAN = ["DNS:localhost", "IP:127.0.0.1"]


class TestCA:
    """The test CA and the certificates the TLS tests need, made in `dir`."""

    __test__ = False  # not a pytest test class

    def __init__(self, dir: Path | str):
        self.dir = Path(dir)
        now = dt.datetime.now(dt.timezone.utc)
        day = dt.timedelta(days=1)
        ca = _Authority(self.dir / "ca", "popgate test CA")
        rogue = _Authority(self.dir / "rogue", "popgate rogue CA")
        self.cert = ca.cert  # the trust anchor (--upstream-ca, --cacert, sslcertfile)
        self.rogue_cert = rogue.cert
        self.localhost = ca.issue("localhost", "localhost", LOCALHOST_SAN,
                                  not_before=now - day, not_after=now + 30 * day)
        self.wrong_name = ca.issue("wrong-name", "wrong.example", ["DNS:wrong.example"],
                                   not_before=now - day, not_after=now + 30 * day)
        self.unknown_ca = rogue.issue("unknown-ca", "localhost", LOCALHOST_SAN,
                                      not_before=now - day, not_after=now + 30 * day)
        self.expired = ca.issue("expired", "localhost", LOCALHOST_SAN,
                                not_before=now - 30 * day, not_after=now - 2 * day)
        self.other_key = self.dir / "other.key"
        _new_key(self.other_key)

    def verify(self, leaf: CertKey) -> str:
        """`openssl verify` of a leaf against this CA: "OK" or OpenSSL's reason
        (a harness self-check: each bad certificate is bad for the intended reason)."""
        proc = subprocess.run(["openssl", "verify", "-CAfile", str(self.cert), str(leaf.cert)],
                              capture_output=True, text=True)
        return "OK" if proc.returncode == 0 else (proc.stdout + proc.stderr)
