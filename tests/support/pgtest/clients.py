"""Fetch every message of a POP3 mailbox with real clients.

Each ``fetch_<client>(host, port, user, password)`` returns the messages as
that client delivered them (list of bytes, in mailbox order) and never
deletes anything on the server. What each client changes, measured against
Dovecot 2.3.19 with the versions in Debian 12, and undone by its ``to_wire``
function (which turns a delivered message back into the POP3 wire form: CRLF
line ends, no dot-stuffing):

poplib    (Python 3.11) nothing. poplib.retr() returns lines without their
          ends and with one leading dot removed; joined with CRLF plus a final
          CRLF this is exactly the wire form. poplib refuses lines over 2048
          octets (poplib._MAXLINE) with error_proto('line too long'), even from
          Dovecot directly; this module raises poplib._MAXLINE to 1 MiB.
curl      (7.88.1) nothing: `curl pop3://host:port/N` writes the unstuffed
          data, CRLF line ends kept.
fetchmail (6.4.37, `--mda`, options `keep fetchall no rewrite no stripcr
          sslproto ''`, global `set invisible`) nothing, except for lines of
          more than 8191 octets counting their CRLF: fetchmail delivers the
          first 8191 octets of such a line, then 2 octets that are not in the
          message (they vary between runs: seen 00 00 and 00 C6), then CRLF,
          then the rest of the line, cut the same way again (so a line of 8190
          characters comes out as 8190 characters, CR, 2 stray octets, CRLF,
          LF). Checked with lines of 8189 to 20000 characters. `invisible` suppresses its
          Received: header, `no stripcr` keeps CRLF (the MDA default strips CR),
          `no rewrite` keeps address headers, `sslproto ''` stops it from trying
          STLS (without it fetchmail 6.4.37 sends STLS even when CAPA does not
          list it, and fails the poll when the server refuses). comparable()
          masks the 2 stray octets; to_wire() rejoins the line.
getmail6  (6.18.11, SimplePOP3Retriever, MDA_external, `delivered_to = false`,
          `received = false`, unixfrom false) prepends one line
          `Return-Path: <unknown>` (always written by Message.flatten(); the
          value comes from the message's Return-Path:/Sender: header, which the
          test messages lack) and ends lines with LF instead of CRLF
          (it re-generates the message with os.linesep). Otherwise the bytes are
          unchanged (8-bit headers too). to_wire() drops that first line and
          turns LF into CRLF.
mpop      (1.4.18, `delivery mda`, `received_header off`, `keep on`,
          `only_new off`, `auth user`, `tls off`) ends lines with LF instead of
          CRLF. to_wire() turns LF into CRLF.

The direct-versus-proxy comparison uses comparable(delivered), which is the
delivered bytes themselves for every client but fetchmail.

Logins against Dovecot's CAPA (SASL PLAIN LOGIN CRAM-MD5): poplib, getmail6
and mpop (`auth user`) use USER/PASS; curl and fetchmail pick AUTH CRAM-MD5;
"fetchmail-apop" (fetchmail `proto apop`) uses APOP.

TLS (all optional, for tests/integration/test_tls.py): poplib `tls="stls"`
(POP3.stls(), which checks CAPA for STLS first) or `tls="implicit"`
(POP3_SSL), with an ssl.SSLContext; curl `tls="stls"` (--ssl-reqd: STLS or
fail) or `tls="implicit"` (pop3s://), both with --cacert; fetchmail
`tls="stls"` (sslproto 'tls1.2+' without ssl: STLS is mandatory) or
`tls="implicit"` (ssl, sslproto 'tls1.2+'), both with sslcertck and
sslcertfile; fetchmail checks the certificate against the host it connects
to ("Server CommonName mismatch: localhost != 127.0.0.1"; `via` does not
change that), so `tls_name` (e.g. "localhost") goes into sslcommonname.
fetch_s_client
scripts `openssl s_client -starttls pop3` (or an implicit TLS connection):
USER, PASS, RETR 1..count, QUIT in one go, certificate and host name checked
(-verify_return_error). mpop takes TLS through extra_config (`tls on`,
`tls_starttls on|off`, `tls_trust_file CA`).
"""

from __future__ import annotations

import functools
import os
import poplib
import shutil
import ssl
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

CRLF = b"\r\n"
TIMEOUT = 120

poplib._MAXLINE = max(poplib._MAXLINE, 1 << 20)

# An MDA that stores its standard input as the next numbered file in DIR.
# Deliveries are sequential in every client used here, so numbering by the
# count of files already present keeps mailbox order.
_MDA_SCRIPT = """#!/bin/sh
d="$1"; n=$(ls "$d" | wc -l); exec cat > "$d/$(printf %06d $((n+1)))"
"""


class ClientError(RuntimeError):
    pass


class _Workdir:
    """A temporary directory with an MDA script and an output directory,
    removed on exit unless PGTEST_KEEP is set in the environment."""

    def __init__(self, client: str):
        self.path = Path(tempfile.mkdtemp(prefix=f"pg-{client}-"))
        self.out = self.path / "out"
        self.out.mkdir()
        self.mda = self.path / "deliver.sh"
        self.mda.write_text(_MDA_SCRIPT)
        self.mda.chmod(0o755)

    def delivered(self) -> list[bytes]:
        return [p.read_bytes() for p in sorted(self.out.iterdir())]

    def run(self, argv: list[str], ok_codes=(0,), env_extra: dict | None = None, timeout: float = TIMEOUT):
        env = dict(os.environ, HOME=str(self.path), **(env_extra or {}))
        try:
            proc = subprocess.run(argv, capture_output=True, env=env, timeout=timeout, cwd=self.path)
        except subprocess.TimeoutExpired as e:
            raise ClientError(f"{argv[0]} timed out after {timeout}s (PGTEST_KEEP=1 keeps {self.path})\n"
                              f"stdout: {e.stdout!r}\nstderr: {e.stderr!r}") from None
        if proc.returncode not in ok_codes:
            raise ClientError(f"{' '.join(argv)} exited {proc.returncode} (PGTEST_KEEP=1 keeps {self.path})\n"
                              f"stdout:\n{proc.stdout.decode(errors='replace')[-3000:]}\n"
                              f"stderr:\n{proc.stderr.decode(errors='replace')[-3000:]}")
        return proc

    def __enter__(self) -> "_Workdir":
        return self

    def __exit__(self, *exc) -> None:
        if not os.environ.get("PGTEST_KEEP"):
            shutil.rmtree(self.path, ignore_errors=True)


# ---------------------------------------------------------------- poplib

def fetch_poplib(host: str, port: int, user: str, password: str, *, apop: bool = False,
                 timeout: float = 60, tls: str | None = None,
                 context: ssl.SSLContext | None = None) -> list[bytes]:
    """tls: None (plaintext), "stls" (POP3.stls(context) before logging in) or
    "implicit" (POP3_SSL)."""
    if tls == "implicit":
        p = poplib.POP3_SSL(host, port, timeout=timeout, context=context)
    else:
        p = poplib.POP3(host, port, timeout=timeout)
    try:
        if tls == "stls":
            p.stls(context)
        elif tls not in (None, "implicit"):
            raise ValueError(f"tls={tls!r}")
        if apop:
            p.apop(user, password)
        else:
            p.user(user)
            p.pass_(password)
        count, _ = p.stat()
        msgs = []
        for n in range(1, count + 1):
            _, lines, _ = p.retr(n)
            msgs.append(b"".join(line + CRLF for line in lines))
        p.quit()
        return msgs
    finally:
        p.close()


# ---------------------------------------------------------------- curl

def fetch_curl(host: str, port: int, user: str, password: str, try_tls: bool = False, *,
               tls: str | None = None, cacert: str | os.PathLike | None = None) -> list[bytes]:
    """One curl run to LIST, then one per message (curl fetches one URL per
    connection). try_tls adds --ssl: curl then sends STLS when CAPA lists it
    (and fails if the handshake or certificate check fails), else goes on in
    plaintext. tls="stls": --ssl-reqd (STLS, or fail); tls="implicit":
    pop3s://; with either, cacert is the trust anchor (--cacert)."""
    with _Workdir("curl") as wd:
        base = ["curl", "-sS", "--max-time", str(TIMEOUT), "-u", f"{user}:{password}"]
        scheme = "pop3"
        if try_tls:
            base.append("--ssl")
        if tls == "stls":
            base.append("--ssl-reqd")
        elif tls == "implicit":
            scheme = "pop3s"
        elif tls is not None:
            raise ValueError(f"tls={tls!r}")
        if cacert is not None:
            base += ["--cacert", str(cacert)]
        listing = wd.run([*base, f"{scheme}://{host}:{port}/"]).stdout
        numbers = [int(line.split()[0]) for line in listing.splitlines() if line.strip()]
        if numbers != list(range(1, len(numbers) + 1)):
            raise ClientError(f"unexpected LIST output from curl: {listing[:500]!r}")
        return [wd.run([*base, f"{scheme}://{host}:{port}/{n}"]).stdout for n in numbers]


# ---------------------------------------------------------------- fetchmail

def fetch_fetchmail(host: str, port: int, user: str, password: str,
                    sslproto: str | None = "", protocol: str = "pop3", *,
                    tls: str | None = None, cafile: str | os.PathLike | None = None,
                    tls_name: str | None = None) -> list[bytes]:
    """sslproto '' (the default here) stops fetchmail from trying STLS.
    None leaves fetchmail's own default, with which fetchmail 6.4.37 sends
    STLS after CAPA even when CAPA does not list it, and gives up the poll
    ("upgrade to TLS failed") when the server refuses. protocol "apop" logs
    in with APOP (fetchmail's "pop3" uses CRAM-MD5 when SASL offers it).
    tls="stls" (sslproto 'tls1.2+', STLS mandatory) or "implicit" (ssl)
    override sslproto and add sslcertck and sslcertfile `cafile`; tls_name
    is the name the certificate must carry (sslcommonname)."""
    with _Workdir("fetchmail") as wd:
        ssl_option = "" if sslproto is None else f" sslproto '{sslproto}'"
        if tls is not None:
            if tls not in ("stls", "implicit"):
                raise ValueError(f"tls={tls!r}")
            ssl_option = " sslproto 'tls1.2+' sslcertck"
            if tls == "implicit":
                ssl_option += " ssl"
            if cafile is not None:
                ssl_option += f' sslcertfile "{cafile}"'
            if tls_name is not None:
                ssl_option += f' sslcommonname "{tls_name}"'
        rc = wd.path / "fetchmailrc"
        rc.write_text(
            "set no syslog\n"
            "set invisible\n"
            f'set idfile "{wd.path}/fetchids"\n'
            f'set pidfile "{wd.path}/fetchmail.pid"\n'
            f"poll {host} with proto {protocol} port {port} timeout {TIMEOUT}\n"
            f'  user "{user}" there with password "{password}" is "root" here\n'
            f"  options keep fetchall no rewrite no stripcr{ssl_option}\n"
            f'  mda "{wd.mda} {wd.out}"\n')
        rc.chmod(0o600)
        # exit 1 means "no mail"; -N: stay in the foreground; -d0: no daemon.
        wd.run(["fetchmail", "-f", str(rc), "-N", "-d0"], ok_codes=(0, 1),
               env_extra={"FETCHMAILHOME": str(wd.path)})
        return wd.delivered()


# ---------------------------------------------------------------- openssl s_client

def fetch_s_client(host: str, port: int, user: str, password: str, *, count: int,
                   cafile: str | os.PathLike, tls_name: str = "localhost",
                   starttls: bool = True, stepwise: bool = False,
                   timeout: float = TIMEOUT) -> list[bytes]:
    """`openssl s_client [-starttls pop3]` with USER, PASS, RETR 1..count and
    QUIT written to its standard input in one go (-quiet: nothing but the
    server's bytes on stdout, and no 'Q'/'R' command letters); the server
    certificate is checked against `cafile` and `tls_name`
    (-verify_return_error). Returns the messages in wire form.
    stepwise: write USER alone and wait for its answer before writing the rest
    (s_client forwards each read of its standard input at once, so the whole
    script otherwise arrives pipelined, USER and PASS in one TLS record)."""
    user_line = f"USER {user}\r\n".encode()
    rest = (f"PASS {password}\r\n"
            + "".join(f"RETR {n}\r\n" for n in range(1, count + 1)) + "QUIT\r\n").encode()
    argv = ["openssl", "s_client", "-connect", f"{host}:{port}", "-quiet",
            "-verify_return_error", "-CAfile", str(cafile), "-verify_hostname", tls_name,
            "-servername", tls_name]
    if starttls:
        argv += ["-starttls", "pop3"]
    if stepwise:
        proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        killer = threading.Timer(timeout, proc.kill)
        killer.start()
        try:
            proc.stdin.write(user_line)
            proc.stdin.flush()
            first = proc.stdout.readline()  # the answer to USER
            try:
                proc.stdin.write(rest)
                proc.stdin.close()
            except BrokenPipeError:
                pass
            out, err = first + proc.stdout.read(), proc.stderr.read()
            rc = proc.wait()
        finally:
            killer.cancel()
    else:
        try:
            proc = subprocess.run(argv, input=user_line + rest, capture_output=True,
                                  timeout=timeout)
        except subprocess.TimeoutExpired as e:
            raise ClientError(f"openssl s_client timed out after {timeout}s\n"
                              f"stdout: {(e.stdout or b'')[-500:]!r}\nstderr: {e.stderr!r}") from None
        out, err, rc = proc.stdout, proc.stderr, proc.returncode

    def fail(why: str):
        raise ClientError(f"openssl s_client: {why} (exit {rc})\n"
                          f"stdout: {out[:300]!r}...{out[-300:]!r}\n"
                          f"stderr: {err.decode(errors='replace')[-2000:]}")
    pos = 0

    def line() -> bytes:
        nonlocal pos
        end = out.find(b"\r\n", pos)
        if end < 0:
            fail(f"output ends early at offset {pos}")
        text = out[pos:end]
        pos = end + 2
        return text
    # With -starttls, s_client reads the greeting itself; with implicit TLS
    # the greeting is the first line of its output.
    for what in ("USER", "PASS") if starttls else ("greeting", "USER", "PASS"):
        status = line()
        if not status.startswith(b"+OK"):
            fail(f"{what} answered {status!r}")
    msgs = []
    for n in range(1, count + 1):
        status = line()
        if not status.startswith(b"+OK"):
            fail(f"RETR {n} answered {status!r}")
        data = bytearray()
        while (text := line()) != b".":
            data += (text[1:] if text.startswith(b".") else text) + CRLF
        msgs.append(bytes(data))
    status = line()
    if not status.startswith(b"+OK") or pos != len(out):
        fail(f"QUIT answered {status!r}, {len(out) - pos} octets after it")
    return msgs


_FM_CHUNK = 8191  # octets of a long line fetchmail delivers before its stray 2 octets + CRLF


def _fetchmail_pieces(data: bytes):
    """Yield (kind, bytes): 'data' spans, and 'stray' 2-octet spans that
    fetchmail inserted when it cut a long line."""
    lines = data.split(CRLF)
    i = 0
    while i < len(lines):
        line = lines[i]
        last = i == len(lines) - 1
        if len(line) == _FM_CHUNK + 2 and not last:
            yield "data", line[:_FM_CHUNK]
            yield "stray", line[_FM_CHUNK:]
        else:
            yield "data", line + (b"" if last else CRLF)
        i += 1


def fetchmail_to_wire(data: bytes) -> bytes:
    return b"".join(b for kind, b in _fetchmail_pieces(data) if kind == "data")


def fetchmail_comparable(data: bytes) -> bytes:
    return b"".join(b if kind == "data" else b"??" + CRLF for kind, b in _fetchmail_pieces(data))


# ---------------------------------------------------------------- getmail6

def fetch_getmail(host: str, port: int, user: str, password: str) -> list[bytes]:
    with _Workdir("getmail") as wd:
        gmdir = wd.path / "getmail"
        gmdir.mkdir()
        rc = wd.path / "getmailrc"
        rc.write_text(
            "[retriever]\n"
            "type = SimplePOP3Retriever\n"
            f"server = {host}\n"
            f"port = {port}\n"
            f"username = {user}\n"
            f"password = {password}\n"
            f"timeout = {TIMEOUT}\n"
            "\n[destination]\n"
            "type = MDA_external\n"
            f"path = {wd.mda}\n"
            f'arguments = ("{wd.out}",)\n'
            "unixfrom = false\n"
            "allow_root_commands = true\n"
            "\n[options]\n"
            "read_all = true\n"
            "delete = false\n"
            "delivered_to = false\n"
            "received = false\n"
            "verbose = 0\n")
        rc.chmod(0o600)
        wd.run(["getmail", "--rcfile", str(rc), "--getmaildir", str(gmdir)])
        return wd.delivered()


_GETMAIL_RETURN_PATH = b"Return-Path: <unknown>\n"


def getmail_to_wire(data: bytes) -> bytes:
    if not data.startswith(_GETMAIL_RETURN_PATH):
        raise ValueError(f"getmail delivery lacks its Return-Path line: {data[:80]!r}")
    return data[len(_GETMAIL_RETURN_PATH):].replace(b"\n", CRLF)


# ---------------------------------------------------------------- mpop

def mpop_config(host: str, port: int, user: str, password: str, workdir: Path, mda: str,
                extra: str = "") -> Path:
    rc = workdir / "mpoprc"
    rc.write_text(
        "account default\n"
        f"host {host}\n"
        f"port {port}\n"
        f"user {user}\n"
        f"password {password}\n"
        "auth user\n"
        "tls off\n"
        "keep on\n"
        "only_new off\n"
        "received_header off\n"
        f"timeout {TIMEOUT}\n"
        f"uidls_file {workdir}/uidls\n"
        f'delivery mda "{mda}"\n'
        + extra)
    rc.chmod(0o600)  # mpop refuses a password in a file others can read
    return rc


def fetch_mpop(host: str, port: int, user: str, password: str, extra_config: str = "") -> list[bytes]:
    with _Workdir("mpop") as wd:
        rc = mpop_config(host, port, user, password, wd.path, f"{wd.mda} {wd.out}", extra_config)
        wd.run(["mpop", "-q", "-C", str(rc), "default"])
        return wd.delivered()


def lf_to_crlf(data: bytes) -> bytes:
    return data.replace(b"\n", CRLF)


# ---------------------------------------------------------------- registry

def _identity(data: bytes) -> bytes:
    return data


@dataclass(frozen=True)
class Client:
    name: str
    fetch: Callable[[str, int, str, str], list[bytes]]
    to_wire: Callable[[bytes], bytes]  # undo the client's documented changes
    comparable: Callable[[bytes], bytes] = _identity  # mask what differs between runs


CLIENTS = {
    "poplib": Client("poplib", fetch_poplib, _identity),
    "curl": Client("curl", fetch_curl, _identity),
    "fetchmail": Client("fetchmail", fetch_fetchmail, fetchmail_to_wire, fetchmail_comparable),
    "fetchmail-apop": Client("fetchmail-apop", functools.partial(fetch_fetchmail, protocol="apop"),
                             fetchmail_to_wire, fetchmail_comparable),
    "getmail6": Client("getmail6", fetch_getmail, getmail_to_wire),
    "mpop": Client("mpop", fetch_mpop, lf_to_crlf),
}
