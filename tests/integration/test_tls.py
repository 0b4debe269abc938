"""TLS on both legs (issue 3): implicit TLS and STLS towards clients, implicit
TLS and STLS towards the upstream with certificate verification, against a
real Dovecot that serves a certificate from a test CA made by these tests
(tests/support/pgtest/tlsca.py), STLS on its plain port and POP3S on a second.

Where a test fetches mail, the messages must be byte-identical to what the
same client gets straight from Dovecot. Which leg really ran TLS is checked,
not assumed: STLS listeners under test trust no loopback address
(--trusted-network 192.0.2.0/24), so a login only succeeds after STLS, and
Dovecot's own "Login:" log line says "TLS" for an upstream TLS leg.

HAZARDS.md, "TLS and STARTTLS", lists the traps these tests aim at."""

from __future__ import annotations

import base64
import hashlib
import re
import socket
import ssl
import subprocess
import threading
import time

import pytest

from pgtest import clients
from pgtest.compare import assert_same_messages
from pgtest.dovecot import Dovecot
from pgtest.fakes import HANDLED, STOP, FakePop3, Pop3Script
from pgtest.mailbox import TEST_USERS as USERS
from pgtest.popgate import Popgate
from pgtest.tlsca import TestCA
from pgtest.wire import CRLF, RawPop3, Relay, split_commands, unstuff

ALICE = ("alice", USERS["alice"])
UNTRUSTING = ("--trusted-network", "192.0.2.0/24")  # no loopback address is trusted

PLAINTEXT_REFUSED = (b"-ERR [AUTH] Plaintext authentication disallowed on non-secure "
                     b"(SSL/TLS) connections.\r\n")
UPSTREAM_TLS_FAILED = b"-ERR [SYS/TEMP] Upstream TLS failed\r\n"
STLS_GO = re.compile(rb"\+OK[^\r\n]*\r\n")
APOP_TIMESTAMP = re.compile(rb" *<[^<>@\s]+@[^<>\s]+>")


# ---------------------------------------------------------------- fixtures

@pytest.fixture(scope="session")
def test_ca(tmp_path_factory):
    ca = TestCA(tmp_path_factory.mktemp("tlsca"))
    # Harness self-check: each bad certificate is bad for the intended reason only.
    assert ca.verify(ca.localhost) == "OK"
    assert ca.verify(ca.wrong_name) == "OK"
    assert "unable to get local issuer certificate" in ca.verify(ca.unknown_ca)
    assert "certificate has expired" in ca.verify(ca.expired)
    return ca


@pytest.fixture(scope="session")
def tls_dovecot(test_ca, alice_messages):
    """Dovecot with the test CA's localhost certificate: STLS on `port`,
    implicit TLS on `pop3s_port`; APOP on (its greeting has a timestamp)."""
    with Dovecot(USERS, ssl_cert=test_ca.localhost.cert, ssl_key=test_ca.localhost.key,
                 pop3s=True) as dc:
        dc.populate("alice", alice_messages)
        yield dc


BAD_CERTS = ["wrong_name", "unknown_ca", "expired"]


@pytest.fixture(scope="session")
def bad_dovecots(test_ca, alice_messages):
    """One Dovecot (STLS and POP3S) per bad certificate."""
    started = {}
    try:
        for kind in BAD_CERTS:
            cert = getattr(test_ca, kind)
            dc = Dovecot(USERS, ssl_cert=cert.cert, ssl_key=cert.key, pop3s=True).start()
            started[kind] = dc
            dc.populate("alice", alice_messages[:4])
        yield started
    finally:
        for dc in started.values():
            dc.stop()


def client_context(ca: TestCA) -> ssl.SSLContext:
    """A verifying client context (chain and host name) that trusts the test CA."""
    return ssl.create_default_context(cafile=str(ca.cert))


def server_context(cert) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(cert.cert), str(cert.key))
    return ctx


def listen_args(ca: TestCA, mode: str) -> list[str]:
    if mode == "none":
        return []
    return ["--listen-tls", mode, "--cert", str(ca.localhost.cert), "--key", str(ca.localhost.key)]


def upstream_args(ca: TestCA, mode: str) -> list[str]:
    if mode == "none":
        return []
    return ["--upstream-tls", mode, "--upstream-ca", str(ca.cert)]


def upstream_address(dc: Dovecot, mode: str) -> str:
    return dc.pop3s_address if mode == "implicit" else dc.address


def start_popgate(factory, ca, upstream: str, listen: str = "none", up: str = "none",
                  *extra: str) -> Popgate:
    return factory(upstream, *listen_args(ca, listen), *upstream_args(ca, up),
                   "--log-level", "debug", *extra)


def warnings(pg: Popgate, session: int) -> list[str]:
    """popgate's warning lines about one session."""
    return re.findall(rf"(?m)^\S+ warn\w* session {session} .*$", pg.log)


_LOGIN = re.compile(r"pop3-login: Info: Login:")
_LOGGED_OUT = re.compile(r"pop3\([^)]*\)<\d+><[^>]*>: Info: Disconnected")


def settled_log_offset(dc: Dovecot, timeout: float = 10.0) -> int:
    """The end of Dovecot's log once every earlier session is in it: no mail
    process left and one "Disconnected" line per "Login:" line (Dovecot's log
    process writes lines from several processes, some later than others)."""
    dc.wait_until_idle()
    deadline = time.monotonic() + timeout
    while True:
        text = dc.log_text()
        if len(_LOGIN.findall(text)) == len(_LOGGED_OUT.findall(text)):
            return len(text)
        if time.monotonic() > deadline:
            raise TimeoutError(f"Dovecot's log does not settle:\n{text[-3000:]}")
        time.sleep(0.02)


def dovecot_logins(dc: Dovecot, start: int) -> list[str]:
    """Dovecot's "Login:" lines after log offset `start` (at least one)."""
    dc.wait_for_log(r"pop3-login: Info: Login:", start=start)
    return [line for line in dc.log_text()[start:].splitlines() if "pop3-login: Info: Login:" in line]


def read_until_closed(sock: socket.socket, timeout: float = 10.0) -> bytes:
    """Everything until the peer closes (a TLS peer without close_notify too)."""
    sock.settimeout(timeout)
    out = bytearray()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            data = sock.recv(65536)
        except (ssl.SSLEOFError, ConnectionResetError):
            break
        if not data:
            break
        out += data
    else:
        raise AssertionError(f"connection still open after {timeout}s; got {bytes(out)!r}")
    return bytes(out)


def apop_digest(greeting: bytes, password: str) -> str:
    stamp = re.search(rb"<[^<>]+>", greeting).group(0)
    return hashlib.md5(stamp + password.encode()).hexdigest()


# ---------------------------------------------------------------- the five modes (and implicit both ways)

MODES = {  # name: (client leg, upstream leg)
    "plain-plain": ("none", "none"),
    "plain-implicit": ("none", "implicit"),
    "plain-starttls": ("none", "starttls"),
    "starttls-plain": ("starttls", "none"),
    "implicit-plain": ("implicit", "none"),
    "implicit-implicit": ("implicit", "implicit"),
}
CLIENTS_BY_LEG = {
    "none": ["poplib", "curl", "fetchmail"],
    "starttls": ["poplib", "curl", "fetchmail", "s_client", "s_client-stepwise", "mpop"],
    "implicit": ["poplib", "curl", "fetchmail", "s_client", "mpop"],
}
MATRIX = [(mode, name) for mode, (leg, _) in MODES.items() for name in CLIENTS_BY_LEG[leg]]


def tls_fetch(name: str, leg: str, host: str, port: int, ca: TestCA, count: int) -> list[bytes]:
    """alice's mailbox fetched by client `name` over a `leg` connection
    ("none", "starttls", "implicit"); every TLS client verifies the server
    certificate against the test CA."""
    user, password = ALICE
    mode = {"none": None, "starttls": "stls", "implicit": "implicit"}[leg]
    if name == "poplib":
        return clients.fetch_poplib(host, port, user, password, tls=mode,
                                    context=client_context(ca) if mode else None)
    if name == "curl":
        return clients.fetch_curl(host, port, user, password, tls=mode,
                                  cacert=ca.cert if mode else None)
    if name == "fetchmail":
        if mode is None:
            return clients.fetch_fetchmail(host, port, user, password)
        return clients.fetch_fetchmail(host, port, user, password, tls=mode, cafile=ca.cert,
                                       tls_name="localhost")
    if name == "mpop":
        tls = "" if mode is None else (
            f"tls on\ntls_starttls {'on' if mode == 'stls' else 'off'}\ntls_trust_file {ca.cert}\n")
        return clients.fetch_mpop(host, port, user, password, extra_config=tls)
    if name.startswith("s_client"):
        assert mode is not None
        return clients.fetch_s_client(host, port, user, password, count=count, cafile=ca.cert,
                                      starttls=mode == "stls", stepwise=name.endswith("stepwise"))
    raise ValueError(name)


_direct = {}


def direct_fetch(name: str, dc: Dovecot, ca: TestCA, count: int) -> list[bytes]:
    """The client's delivery straight from Dovecot: plaintext, except
    s_client, which speaks STLS to Dovecot (once per run)."""
    base = "s_client" if name.startswith("s_client") else name
    if base not in _direct:
        leg = "starttls" if base == "s_client" else "none"
        _direct[base] = tls_fetch(base, leg, dc.host, dc.port, ca, count)
    return _direct[base]


COMPARABLE = {"fetchmail": (clients.fetchmail_comparable, clients.fetchmail_to_wire),
              "mpop": (lambda m: m, clients.lf_to_crlf)}


@pytest.mark.clients
@pytest.mark.parametrize("mode,name", MATRIX, ids=[f"{m}-{n}" for m, n in MATRIX])
def test_fetch_through_tls_modes(mode, name, tls_dovecot, test_ca, popgate_factory,
                                 alice_messages):
    leg, up = MODES[mode]
    extra = UNTRUSTING if leg == "starttls" else ()
    pg = start_popgate(popgate_factory, test_ca, upstream_address(tls_dovecot, up), leg, up,
                       *extra)
    names = [m.name for m in alice_messages]
    direct = direct_fetch(name, tls_dovecot, test_ca, len(alice_messages))
    log_start = settled_log_offset(tls_dovecot)

    proxied = tls_fetch(name, leg, pg.host, pg.port, test_ca, len(alice_messages))

    comparable, to_wire = COMPARABLE.get(name, (lambda m: m, lambda m: m))
    assert_same_messages([comparable(m) for m in proxied], [comparable(m) for m in direct], names,
                         f"{name} through popgate ({mode}) vs {name} direct from Dovecot")
    assert_same_messages([to_wire(m) for m in proxied], [m.wire for m in alice_messages], names,
                         f"{name} through popgate ({mode}), normalised, vs the generated messages")
    # The upstream leg really was TLS (or really was not).
    logins = dovecot_logins(tls_dovecot, log_start)
    expect_tls = up != "none"
    assert all((", TLS," in line) == expect_tls for line in logins), (
        f"upstream leg {up}: Dovecot's logins say otherwise:\n" + "\n".join(logins))
    if leg == "starttls":
        assert "Plaintext authentication disallowed" not in pg.log


# ---------------------------------------------------------------- upstream verification

BAD_CERT_CASES = {
    # case: (Dovecot, extra popgate args, the reason popgate must log)
    "wrong-name": ("wrong_name", ["--upstream-server-name", "localhost"], "hostname mismatch"),
    "wrong-name-ip": ("wrong_name", [], "IP address mismatch"),  # server_name = 127.0.0.1
    "unknown-ca": ("unknown_ca", [], "unable to get local issuer certificate"),
    "expired": ("expired", [], "certificate has expired"),
}


@pytest.mark.parametrize("up", ["implicit", "starttls"])
@pytest.mark.parametrize("case", list(BAD_CERT_CASES))
def test_upstream_bad_certificate_is_refused(case, up, bad_dovecots, test_ca, popgate_factory):
    kind, extra, reason = BAD_CERT_CASES[case]
    dc = bad_dovecots[kind]
    log_start = settled_log_offset(dc)
    pg = start_popgate(popgate_factory, test_ca, upstream_address(dc, up), "none", up, *extra)
    with socket.create_connection((pg.host, pg.port), timeout=10) as s:
        got = read_until_closed(s)
    assert got == UPSTREAM_TLS_FAILED, f"client got {got!r}"
    pg.wait_for_log(r"session 1 end .*reason=upstream-tls")
    lines = warnings(pg, 1)
    assert len(lines) == 1 and reason in lines[0], (
        f"expected one warning naming {reason!r}, got:\n" + "\n".join(lines))
    assert "Login:" not in dc.log_text()[log_start:]


def test_upstream_insecure_accepts_wrong_name_and_warns(bad_dovecots, test_ca, popgate_factory,
                                                        alice_messages):
    dc = bad_dovecots["wrong_name"]
    pg = popgate_factory(dc.pop3s_address, "--upstream-tls", "implicit", "--upstream-insecure")
    expected = [m.wire for m in alice_messages[:4]]
    for _ in range(2):
        got = clients.fetch_poplib(pg.host, pg.port, *ALICE)
        assert_same_messages(got, expected, [m.name for m in alice_messages[:4]],
                             "poplib through popgate --upstream-insecure")
    pg.wait_for_log(r"session 2 end")
    assert "(certificate NOT verified)" in pg.log  # start-up line
    for session in (1, 2):
        lines = warnings(pg, session)
        assert len(lines) == 1 and "NOT verified" in lines[0], (
            f"session {session}: expected one 'NOT verified' warning, got {lines}")


@pytest.mark.parametrize("how", ["server-name", "host-name", "ip-address"])
def test_upstream_sni_and_name_check(how, test_ca, popgate_factory):
    """SNI carries server_name (default: the host of --upstream); an IP
    address is never sent as SNI (RFC 6066) and is checked against the
    certificate's IP SAN instead."""
    seen = []
    ctx = server_context(test_ca.localhost)
    ctx.sni_callback = lambda sslobj, name, _ctx: seen.append(name)

    def tls_pop3(conn):
        conn.sock.settimeout(10)
        conn.sock = ctx.wrap_socket(conn.sock, server_side=True)
        Pop3Script()(conn)

    with FakePop3(default=tls_pop3) as fake:
        if how == "server-name":
            args = (fake.address, "--upstream-server-name", "localhost")
        elif how == "host-name":
            args = (f"localhost:{fake.port}",)
        else:
            args = (fake.address,)
        pg = popgate_factory(args[0], *args[1:], "--upstream-tls", "implicit",
                             "--upstream-ca", str(test_ca.cert))
        with RawPop3(pg.host, pg.port) as c:
            assert c.greeting.startswith(b"+OK fake POP3 ready"), c.greeting
            c.login(*ALICE)
            assert c.command("QUIT").startswith(b"+OK")
        assert fake.conn(0).error is None, fake.conn(0).error
    assert seen == ([None] if how == "ip-address" else ["localhost"])


# ---------------------------------------------------------------- upstream STLS

def test_upstream_without_stls_is_never_plaintext(dovecot, test_ca, popgate_factory):
    """Dovecot with ssl = no: CAPA lacks STLS. The client gets -ERR [SYS/TEMP]
    and nothing but CAPA ever goes upstream."""
    with Relay(dovecot.host, dovecot.port) as relay:
        pg = start_popgate(popgate_factory, test_ca, relay.address, "none", "starttls")
        with socket.create_connection((pg.host, pg.port), timeout=10) as s:
            got = read_until_closed(s)
        assert got == UPSTREAM_TLS_FAILED, f"client got {got!r}"
        relay.connections[0].client_closed.wait(5)
        assert bytes(relay.connections[0].c2s) == b"CAPA\r\n"
    pg.wait_for_log(r"session 1 end .*reason=upstream-tls")
    lines = warnings(pg, 1)
    assert len(lines) == 1 and "STLS" in lines[0], lines


def _capa_with_stls(conn, line, args):
    conn.send(b"+OK\r\nUSER\r\nUIDL\r\nSTLS\r\n.\r\n")
    return HANDLED


def _stls_then_tls(ctx):
    """An STLS override that answers +OK and goes on over TLS (the control)."""
    def override(conn, line, args):
        conn.send(b"+OK Begin TLS negotiation\r\n")
        conn.sock.settimeout(10)
        conn.sock = ctx.wrap_socket(conn.sock, server_side=True)
        return HANDLED
    return override


def _stls_injecting(split: bool):
    def override(conn, line, args):
        if split:
            conn.send(b"+OK\r\n")
            time.sleep(0.2)
            conn.send(b"+OK injected\r\n")
        else:
            conn.send(b"+OK\r\n+OK injected\r\n")  # one write, one segment
        conn.stall(10)
        return STOP
    return override


def test_upstream_stls_control_fake_works(test_ca, popgate_factory):
    """Control for the injection test: the same fake, answering STLS
    correctly, works through popgate; its greeting's APOP timestamp is
    stripped and APOP is refused without reaching the upstream."""
    script = Pop3Script(overrides={"CAPA": _capa_with_stls,
                                   "STLS": _stls_then_tls(server_context(test_ca.localhost))})
    with FakePop3(default=script) as fake:
        pg = start_popgate(popgate_factory, test_ca, fake.address, "none", "starttls")
        with RawPop3(pg.host, pg.port) as c:
            assert c.greeting == b"+OK fake POP3 ready\r\n"
            assert c.command(f"APOP alice {'0' * 32}") == b"-ERR APOP not available\r\n"
            c.login(*ALICE)
            assert c.command("RETR 1").startswith(b"+OK")
            assert c.command("QUIT").startswith(b"+OK")
        conn = fake.conn(0)
        conn.finished.wait(5)
        assert conn.error is None, conn.error
        assert conn.verbs[:4] == [b"CAPA", b"STLS", b"USER", b"PASS"], conn.verbs
        assert b"APOP" not in conn.verbs


@pytest.mark.parametrize("split", [False, True], ids=["one-segment", "two-segments"])
def test_upstream_stls_response_injection(split, test_ca, popgate_factory):
    script = Pop3Script(overrides={"CAPA": _capa_with_stls, "STLS": _stls_injecting(split)})
    with FakePop3(default=script) as fake:
        pg = start_popgate(popgate_factory, test_ca, fake.address, "none", "starttls")
        with socket.create_connection((pg.host, pg.port), timeout=10) as s:
            got = read_until_closed(s)
        assert got == UPSTREAM_TLS_FAILED, f"client got {got!r}"
        assert b"injected" not in got
        conn = fake.conn(0)
        conn.finished.wait(5)
        # After STLS popgate sent nothing, or the start of a handshake (a TLS
        # record), never a POP3 command in plaintext.
        assert conn.verbs[:2] == [b"CAPA", b"STLS"], conn.verbs
        after = bytes(conn.raw).split(b"STLS\r\n", 1)[1]
        assert after == b"" or after.startswith(b"\x16\x03"), after[:100]
    pg.wait_for_log(r"session 1 end .*reason=upstream-tls")
    lines = warnings(pg, 1)
    assert len(lines) == 1, lines


def test_upstream_stls_refused(test_ca, popgate_factory):
    def refuse(conn, line, args):
        conn.send_line(b"-ERR not now")
        return HANDLED
    script = Pop3Script(overrides={"CAPA": _capa_with_stls, "STLS": refuse})
    with FakePop3(default=script) as fake:
        pg = start_popgate(popgate_factory, test_ca, fake.address, "none", "starttls")
        with socket.create_connection((pg.host, pg.port), timeout=10) as s:
            got = read_until_closed(s)
        assert got == UPSTREAM_TLS_FAILED, f"client got {got!r}"
        conn = fake.conn(0)
        conn.finished.wait(5)
        assert conn.verbs == [b"CAPA", b"STLS"], conn.verbs


@pytest.mark.parametrize("up", ["implicit", "starttls"])
def test_upstream_handshake_stall_times_out(up, test_ca, popgate_factory):
    """An upstream that never answers the ClientHello: the upstream timeout
    ends the session with -ERR [SYS/TEMP]."""
    def stls_stall(conn, line, args):
        conn.send(b"+OK\r\n")
        conn.stall(10)
        return STOP
    script = (Pop3Script(greeting=None) if up == "implicit"
              else Pop3Script(overrides={"CAPA": _capa_with_stls, "STLS": stls_stall}))
    with FakePop3(default=script) as fake:
        pg = start_popgate(popgate_factory, test_ca, fake.address, "none", up,
                           "--upstream-timeout", "1")
        started = time.monotonic()
        with socket.create_connection((pg.host, pg.port), timeout=10) as s:
            got = read_until_closed(s, timeout=5)
        assert got.startswith(b"-ERR [SYS/TEMP]") and got.count(b"\r\n") == 1, got
        assert time.monotonic() - started < 4


# ---------------------------------------------------------------- APOP and the greeting

def test_greeting_over_upstream_stls_loses_apop_timestamp(tls_dovecot, test_ca, popgate_factory):
    pg = start_popgate(popgate_factory, test_ca, tls_dovecot.address, "none", "starttls")
    with RawPop3(tls_dovecot.host, tls_dovecot.port) as direct:
        direct_greeting = direct.greeting
    assert APOP_TIMESTAMP.search(direct_greeting), direct_greeting
    with RawPop3(pg.host, pg.port) as c:
        assert c.greeting == APOP_TIMESTAMP.sub(b"", direct_greeting)
        assert b"STLS" not in keywords(capa_lines(c.command("CAPA")))  # the upstream's, hidden
        assert c.command(f"APOP alice {apop_digest(direct_greeting, ALICE[1])}") == \
            b"-ERR APOP not available\r\n"
        c.login(*ALICE)  # USER/PASS still work
        assert c.command("QUIT").startswith(b"+OK")


def test_greeting_over_upstream_implicit_keeps_apop(tls_dovecot, test_ca, popgate_factory,
                                                    alice_messages):
    pg = start_popgate(popgate_factory, test_ca, tls_dovecot.pop3s_address, "none", "implicit")
    with RawPop3(pg.host, pg.port) as c:
        assert re.fullmatch(rb"\+OK Dovecot \(Debian\) ready\. <[^<>@]+@[^<>]+>\r\n", c.greeting), \
            c.greeting
        # Dovecot accepts the digest only if the timestamp is its own, unchanged.
        assert c.command(f"APOP alice {apop_digest(c.greeting, ALICE[1])}").startswith(b"+OK")
        retr = c.command("RETR 1")
        assert unstuff(retr.split(CRLF, 1)[1]) == alice_messages[0].wire
        assert c.command("QUIT").startswith(b"+OK")
    got = clients.fetch_poplib(pg.host, pg.port, *ALICE, apop=True)
    assert_same_messages(got, [m.wire for m in alice_messages], [m.name for m in alice_messages],
                         "poplib APOP through popgate, implicit TLS upstream")


# ---------------------------------------------------------------- client STLS: policy and CAPA

def capa_lines(response: bytes) -> list[bytes]:
    assert response.startswith(b"+OK"), response
    return unstuff(response.split(CRLF, 1)[1]).split(CRLF)[:-1]


def keywords(lines: list[bytes]) -> set[bytes]:
    return {line.split()[0].upper() for line in lines if line}


@pytest.fixture
def untrusted_stls(tls_dovecot, test_ca, popgate_factory):
    """An STLS listener on 127.0.0.1 that trusts only 127.0.0.1 itself;
    tests connect from 127.0.0.2. Upstream through a recording relay."""
    relay = Relay(tls_dovecot.host, tls_dovecot.port)
    pg = start_popgate(popgate_factory, test_ca, relay.address, "starttls", "none",
                       "--trusted-network", "127.0.0.1/32")
    yield pg, relay
    relay.close()


FROM_UNTRUSTED = ("127.0.0.2", 0)


def test_plaintext_login_refused_before_stls_from_untrusted(untrusted_stls, test_ca,
                                                            alice_messages):
    pg, relay = untrusted_stls
    with RawPop3(pg.host, pg.port, source_address=FROM_UNTRUSTED) as c:
        plain = base64.b64encode(b"\0alice\0" + ALICE[1].encode()).decode()
        for command in ("USER alice", f"PASS {ALICE[1]}", f"APOP alice {'0' * 32}",
                        f"AUTH PLAIN {plain}", "AUTH PLAIN"):
            assert c.command(command) == PLAINTEXT_REFUSED, command
        # After STLS the same client logs in and fetches.
        assert STLS_GO.fullmatch(c.command("STLS"))
        c.start_tls(client_context(test_ca), "localhost")
        c.login(*ALICE)
        retr = c.command("RETR 1")
        assert unstuff(retr.split(CRLF, 1)[1]) == alice_messages[0].wire
        assert c.command("QUIT").startswith(b"+OK")
    relay.connections[0].client_closed.wait(5)
    # None of the refused commands reached the upstream: only what came after STLS.
    assert split_commands(bytes(relay.connections[0].c2s)) == [
        b"USER alice", f"PASS {ALICE[1]}".encode(), b"RETR 1", b"QUIT"]


def test_plaintext_login_allowed_from_trusted(untrusted_stls):
    pg, _ = untrusted_stls
    with RawPop3(pg.host, pg.port, source_address=("127.0.0.1", 0)) as c:
        c.login(*ALICE)
        assert c.command("STAT").startswith(b"+OK")
        assert c.command("STLS").startswith(b"-ERR")  # not after login
        assert c.command("QUIT").startswith(b"+OK")


def test_loopback_is_trusted_by_default(tls_dovecot, test_ca, popgate_factory):
    pg = start_popgate(popgate_factory, test_ca, tls_dovecot.address, "starttls", "none")
    with RawPop3(pg.host, pg.port, source_address=FROM_UNTRUSTED) as c:  # 127.0.0.0/8
        assert b"USER" in keywords(capa_lines(c.command("CAPA")))
        c.login(*ALICE)
        assert c.command("QUIT").startswith(b"+OK")


def test_capa_before_and_after_stls_untrusted(untrusted_stls, test_ca):
    pg, _ = untrusted_stls
    with RawPop3(pg.host, pg.port, source_address=FROM_UNTRUSTED) as c:
        before = keywords(capa_lines(c.command("CAPA")))
        assert b"STLS" in before
        assert b"USER" not in before and b"SASL" not in before, before
        assert b"UIDL" in before  # the rest passes through
        assert STLS_GO.fullmatch(c.command("STLS"))
        c.start_tls(client_context(test_ca), "localhost")
        after = capa_lines(c.command("CAPA"))
        assert b"STLS" not in keywords(after)
        assert b"USER" in keywords(after)
        sasl = [line for line in after if line.upper().startswith(b"SASL ")]
        assert sasl and b"PLAIN" in sasl[0].split(), after
        assert c.command("STLS") == b"-ERR Already using TLS\r\n"
        assert c.command("QUIT").startswith(b"+OK")


def test_capa_before_and_after_stls_trusted(tls_dovecot, test_ca, popgate_factory):
    pg = start_popgate(popgate_factory, test_ca, tls_dovecot.address, "starttls", "none")
    with RawPop3(pg.host, pg.port) as c:
        before = keywords(capa_lines(c.command("CAPA")))
        assert {b"STLS", b"USER", b"SASL"} <= before, before
        assert STLS_GO.fullmatch(c.command("STLS"))
        c.start_tls(client_context(test_ca), "localhost")
        after = keywords(capa_lines(c.command("CAPA")))
        assert b"STLS" not in after and {b"USER", b"SASL"} <= after, after


@pytest.mark.parametrize("listen", ["none", "implicit"])
def test_capa_without_stls_elsewhere(listen, tls_dovecot, test_ca, popgate_factory):
    """A plain listener never offers STLS (even though Dovecot does); an
    implicit one has TLS already."""
    pg = start_popgate(popgate_factory, test_ca, tls_dovecot.address, listen, "none")
    tls = client_context(test_ca) if listen == "implicit" else None
    with RawPop3(pg.host, pg.port, tls_context=tls, server_hostname="localhost") as c:
        capa = keywords(capa_lines(c.command("CAPA")))
        assert b"STLS" not in capa and b"USER" in capa, capa
        expected = b"-ERR Already using TLS\r\n" if tls else b"-ERR STLS not available\r\n"
        assert c.command("STLS") == expected
        c.login(*ALICE)
        assert c.command("QUIT").startswith(b"+OK")


# ---------------------------------------------------------------- client STLS injection

def test_client_stls_injection_gets_no_answer(untrusted_stls, test_ca):
    """`STLS\\r\\nCAPA\\r\\n` in one segment: the CAPA is discarded, before and
    after the handshake; the first thing over TLS is the answer to what the
    client sends next."""
    pg, _ = untrusted_stls
    with RawPop3(pg.host, pg.port, source_address=FROM_UNTRUSTED) as c:
        c.send(b"STLS\r\nCAPA\r\n")
        before = c.read_available(0.5)
        assert STLS_GO.fullmatch(before), f"before the handshake: {before!r}"
        c.start_tls(client_context(test_ca), "localhost")
        after = c.read_available(0.7)
        assert after == b"", f"over TLS, unasked: {after!r}"
        # The discarded CAPA was the untrusted plaintext one; now it is the TLS one.
        capa = c.command("CAPA")
        assert b"USER" in keywords(capa_lines(capa)) and b"STLS" not in keywords(capa_lines(capa))
        assert c.read_available(0.3) == b""  # one answer, not two
        assert c.command("QUIT").startswith(b"+OK")


def test_client_stls_behind_a_pipelined_command(untrusted_stls, test_ca):
    """`CAPA\r\nSTLS\r\nCAPA\r\n` in one segment: the first CAPA is answered
    (in plaintext, before +OK to STLS), the one after STLS is discarded."""
    pg, _ = untrusted_stls
    with RawPop3(pg.host, pg.port, source_address=FROM_UNTRUSTED) as c:
        c.send(b"CAPA\r\nSTLS\r\nCAPA\r\n")
        first = c.read_response(True)
        assert b"STLS" in keywords(capa_lines(first))
        assert STLS_GO.fullmatch(c.read_line())
        assert c.read_available(0.5) == b""
        c.start_tls(client_context(test_ca), "localhost")
        assert c.read_available(0.7) == b"", "an answer to the discarded CAPA"
        assert b"STLS" not in keywords(capa_lines(c.command("CAPA")))
        assert c.command("QUIT").startswith(b"+OK")


def test_client_stls_forgets_user_sent_with_it(untrusted_stls, test_ca):
    """USER in the segment after STLS is discarded: PASS after the handshake
    needs a new USER."""
    pg, relay = untrusted_stls
    with RawPop3(pg.host, pg.port, source_address=FROM_UNTRUSTED) as c:
        c.send(b"STLS\r\nUSER alice\r\n")
        assert STLS_GO.fullmatch(c.read_available(0.5))
        c.start_tls(client_context(test_ca), "localhost")
        assert c.command(f"PASS {ALICE[1]}").startswith(b"-ERR")
        c.login(*ALICE)
        assert c.command("QUIT").startswith(b"+OK")
    relay.connections[0].client_closed.wait(5)
    assert bytes(relay.connections[0].c2s).count(b"USER alice") == 1


@pytest.mark.parametrize("target", ["dovecot", "popgate"])
def test_pipelined_login_after_stls(target, tls_dovecot, test_ca, popgate_factory):
    """USER and PASS in one write after STLS (RFC 2449 pipelining; what
    `openssl s_client` sends when its input is a script) log in, as they do
    on Dovecot itself."""
    if target == "dovecot":
        host, port = tls_dovecot.host, tls_dovecot.port
    else:
        pg = start_popgate(popgate_factory, test_ca, tls_dovecot.address, "starttls", "none")
        host, port = pg.host, pg.port
    with RawPop3(host, port) as c:
        assert STLS_GO.fullmatch(c.command("STLS"))
        c.start_tls(client_context(test_ca), "localhost")
        c.send(f"USER alice\r\nPASS {ALICE[1]}\r\nSTAT\r\n".encode())
        answers = [c.read_line() for _ in range(3)]
        assert all(a.startswith(b"+OK") for a in answers), answers
        assert c.command("QUIT").startswith(b"+OK")


# ---------------------------------------------------------------- implicit listener

def test_implicit_listener_reads_nothing_before_handshake(test_ca, popgate_factory):
    """Plaintext POP3 to a POP3S listener: the handshake fails, nothing is
    answered and the upstream is never contacted."""
    with FakePop3() as fake:
        pg = start_popgate(popgate_factory, test_ca, fake.address, "implicit", "none")
        with socket.create_connection((pg.host, pg.port), timeout=10) as s:
            s.sendall(b"USER alice\r\nPASS secret\r\nLIST\r\n")
            got = read_until_closed(s)
        assert b"+OK" not in got and b"-ERR" not in got, got
        pg.wait_for_log(r"session 1 end")
        assert fake.connections == []


def test_idle_timeout_over_tls(tls_dovecot, test_ca, popgate_factory):
    pg = start_popgate(popgate_factory, test_ca, tls_dovecot.address, "implicit", "none",
                       "--idle-timeout", "1")
    with RawPop3(pg.host, pg.port, tls_context=client_context(test_ca),
                 server_hostname="localhost") as c:
        c.login(*ALICE)
        c.sock.settimeout(5)
        assert c.read_line() == b"-ERR Disconnected for inactivity\r\n"


@pytest.mark.parametrize("target", ["dovecot", "popgate-implicit", "popgate-starttls"])
def test_tls_session_ends_with_close_notify(target, tls_dovecot, test_ca, popgate_factory):
    """After QUIT the server closes TLS properly (close_notify, RFC 8446
    §6.1), as Dovecot does; without it a strict client sees a truncation
    error (`openssl s_client`: "unexpected eof while reading")."""
    ctx = client_context(test_ca)
    # Some Python builds (Debian's 3.11) set OP_IGNORE_UNEXPECTED_EOF, which
    # turns a missing close_notify into a plain EOF; this test needs to see it.
    ctx.options &= ~getattr(ssl, "OP_IGNORE_UNEXPECTED_EOF", 0)
    if target == "dovecot":
        host, port, leg = tls_dovecot.host, tls_dovecot.pop3s_port, "implicit"
    else:
        leg = target.split("-")[1]
        pg = start_popgate(popgate_factory, test_ca, tls_dovecot.address, leg, "none")
        host, port = pg.host, pg.port
    raw = socket.create_connection((host, port), timeout=10)
    if leg == "starttls":
        f = raw.makefile("rb")
        f.readline()
        raw.sendall(b"STLS\r\n")
        assert f.readline().startswith(b"+OK")
        f.close()
    s = ctx.wrap_socket(raw, server_hostname="localhost", suppress_ragged_eofs=False)
    try:
        if leg == "implicit":
            assert s.recv(4096).startswith(b"+OK")
        s.sendall(b"QUIT\r\n")
        got = b""
        while not got.endswith(b"\r\n"):
            got += s.recv(4096)
        assert got.startswith(b"+OK")
        expect_close_notify(s, f"{target}, after QUIT")
    finally:
        s.close()


def expect_close_notify(s: ssl.SSLSocket, what: str) -> None:
    try:
        tail = s.recv(4096)
    except ssl.SSLError as e:  # SSLEOFError, or SSLError on older Pythons
        if "EOF" not in str(e):
            raise
        pytest.fail(f"{what}: TCP closed without TLS close_notify ({e})")
    assert tail == b"", f"{what}: {tail!r} instead of the end"


def test_tls_error_reply_ends_with_close_notify(test_ca, popgate_factory):
    """popgate's own closing -ERR over TLS (here: the upstream is down) is
    followed by close_notify too (RFC 8446 §6.1: before closing the write side)."""
    with socket.socket() as placeholder:
        placeholder.bind(("127.0.0.1", 0))  # a port nobody listens on
        down = f"127.0.0.1:{placeholder.getsockname()[1]}"
        pg = start_popgate(popgate_factory, test_ca, down, "implicit", "none")
        ctx = client_context(test_ca)
        ctx.options &= ~getattr(ssl, "OP_IGNORE_UNEXPECTED_EOF", 0)
        raw = socket.create_connection((pg.host, pg.port), timeout=10)
        with ctx.wrap_socket(raw, server_hostname="localhost", suppress_ragged_eofs=False) as s:
            got = b""
            while not got.endswith(b"\r\n"):
                got += s.recv(4096)
            assert got == b"-ERR [SYS/TEMP] Upstream server unavailable\r\n"
            expect_close_notify(s, "after -ERR [SYS/TEMP]")


def test_max_sessions_refusal_on_implicit_listener(tls_dovecot, test_ca, popgate_factory):
    """Over the session limit, a POP3S client still gets its -ERR [SYS/TEMP]
    (RFC 3206) over TLS, like a plaintext client on a plain port, and no
    plaintext POP3 ever goes out on a TLS port."""
    pg = start_popgate(popgate_factory, test_ca, tls_dovecot.address, "implicit", "none",
                       "--max-sessions", "1")
    ctx = client_context(test_ca)
    with RawPop3(pg.host, pg.port, tls_context=ctx, server_hostname="localhost") as first:
        assert first.greeting.startswith(b"+OK")
        with socket.create_connection((pg.host, pg.port), timeout=10) as raw:
            raw.settimeout(0.5)
            try:
                early = raw.recv(4096)
            except socket.timeout:
                early = b""
            assert not early.startswith((b"-ERR", b"+OK")), f"plaintext on a TLS port: {early!r}"
        try:
            with RawPop3(pg.host, pg.port, tls_context=ctx, server_hostname="localhost") as second:
                assert second.greeting.startswith(b"-ERR [SYS/TEMP]"), second.greeting
        except ssl.SSLError as e:
            pytest.fail(f"the refused POP3S client got no TLS at all: {e}")
        assert first.command("QUIT").startswith(b"+OK")


# ---------------------------------------------------------------- ALPN and protocol versions

ALPN_CASES = {
    "none": (None, True, None),
    "pop3": (["pop3"], True, "pop3"),
    "http-then-pop3": (["http/1.1", "pop3"], True, "pop3"),
    "http-only": (["http/1.1"], False, None),
    "imap-h2": (["imap", "h2"], False, None),
}


@pytest.mark.parametrize("listen", ["implicit", "starttls"])
@pytest.mark.parametrize("case", list(ALPN_CASES))
def test_alpn(case, listen, test_ca, popgate_factory):
    offer, accepted, selected = ALPN_CASES[case]
    with FakePop3() as fake:
        pg = start_popgate(popgate_factory, test_ca, fake.address, listen, "none")
        ctx = client_context(test_ca)
        if offer is not None:
            ctx.set_alpn_protocols(offer)
        raw = socket.create_connection((pg.host, pg.port), timeout=10)
        try:
            if listen == "starttls":
                f = raw.makefile("rb")
                assert f.readline().startswith(b"+OK")
                raw.sendall(b"STLS\r\n")
                assert f.readline().startswith(b"+OK")
                f.close()
            if not accepted:
                with pytest.raises(ssl.SSLError, match="NO_APPLICATION_PROTOCOL|no application protocol"):
                    ctx.wrap_socket(raw, server_hostname="localhost")
                pg.wait_for_log(r"session 1 end .*reason=client-tls")
                if listen == "implicit":
                    assert fake.connections == [], "upstream contacted for a refused handshake"
                return
            s = ctx.wrap_socket(raw, server_hostname="localhost")
            assert s.selected_alpn_protocol() == selected
            if listen == "starttls":
                s.sendall(b"CAPA\r\n")  # the greeting came before STLS
            line = s.recv(4096)
            assert line.startswith(b"+OK"), line
            s.close()
        finally:
            raw.close()


def _legacy_client_context(ca, maximum):
    ctx = client_context(ca)
    ctx.minimum_version = ssl.TLSVersion.TLSv1
    ctx.maximum_version = maximum
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")  # OpenSSL 3 allows TLS < 1.2 only at level 0
    return ctx


LEGACY_TLS = pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1:DeprecationWarning")


@LEGACY_TLS
def test_tls11_client_can_do_tls11(test_ca):
    """Harness check: this client really offers TLS 1.1 (a server that allows
    it completes the handshake), so its refusal below is popgate's doing."""
    server_ctx = server_context(test_ca.localhost)
    server_ctx.minimum_version = ssl.TLSVersion.TLSv1
    server_ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    lsock = socket.create_server(("127.0.0.1", 0))
    result = {}

    def serve():
        conn, _ = lsock.accept()
        try:
            with server_ctx.wrap_socket(conn, server_side=True) as s:
                result["version"] = s.version()
                s.sendall(b"+OK\r\n")
        except ssl.SSLError as e:
            result["error"] = e

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    ctx = _legacy_client_context(test_ca, ssl.TLSVersion.TLSv1_1)
    try:
        with ctx.wrap_socket(socket.create_connection(lsock.getsockname(), timeout=10),
                             server_hostname="localhost") as s:
            assert s.version() == "TLSv1.1"
    except ssl.SSLError as e:
        pytest.fail(f"this Python/OpenSSL cannot do TLS 1.1 at all ({e}); test_tls_versions "
                    "then proves nothing")
    finally:
        t.join(5)
        lsock.close()
    assert result.get("version") == "TLSv1.1", result


@LEGACY_TLS
@pytest.mark.parametrize("version,accepted", [
    ("TLSv1", False), ("TLSv1_1", False), ("TLSv1_2", True), ("TLSv1_3", True)])
def test_tls_versions(version, accepted, test_ca, popgate_factory, tls_dovecot):
    pg = start_popgate(popgate_factory, test_ca, tls_dovecot.address, "implicit", "none")
    v = getattr(ssl.TLSVersion, version)
    ctx = _legacy_client_context(test_ca, v)
    ctx.minimum_version = v
    raw = socket.create_connection((pg.host, pg.port), timeout=10)
    try:
        if not accepted:
            with pytest.raises(ssl.SSLError) as err:
                ctx.wrap_socket(raw, server_hostname="localhost")
            # The server said no (an alert), not the client's own policy.
            assert "ALERT_PROTOCOL_VERSION" in str(err.value) or \
                "protocol version" in str(err.value), err.value
            return
        with ctx.wrap_socket(raw, server_hostname="localhost") as s:
            assert s.version() == version.replace("_", ".")
            assert s.recv(4096).startswith(b"+OK")
    finally:
        raw.close()


# ---------------------------------------------------------------- several listeners, start-up

def test_several_listeners_from_toml(tls_dovecot, test_ca, popgate_binary, popgate_factory,
                                     tmp_path, alice_messages):
    conf = tmp_path / "popgate.toml"
    conf.write_text(f"""
trusted_networks = ["192.0.2.0/24"]

[[listen]]
address = "127.0.0.1:0"
tls = "implicit"
cert = "{test_ca.localhost.cert}"
key = "{test_ca.localhost.key}"

[[listen]]
address = "127.0.0.1:0"
tls = "starttls"
cert = "{test_ca.localhost.cert}"
key = "{test_ca.localhost.key}"

[[listen]]
address = "127.0.0.1:0"

[upstream]
address = "{tls_dovecot.pop3s_address}"
tls = "implicit"
ca_file = "{test_ca.cert}"
server_name = "localhost"
""")
    pg = Popgate.start(["-c", str(conf)], binary=popgate_binary)
    popgate_factory.instances.append(pg)
    pg.wait_for_log(r"(?s)(listening on .*){3}")
    ports = {mode: int(port) for port, mode in
             re.findall(r"listening on 127\.0\.0\.1:(\d+) tls=(\w+)", pg.log)}
    assert set(ports) == {"implicit", "starttls", "none"}, pg.log
    expected = [m.wire for m in alice_messages]
    names = [m.name for m in alice_messages]
    ctx = client_context(test_ca)
    for mode, tls in (("implicit", "implicit"), ("starttls", "stls"), ("none", None)):
        got = clients.fetch_poplib("127.0.0.1", ports[mode], *ALICE, tls=tls, context=ctx)
        assert_same_messages(got, expected, names, f"poplib via the {mode} listener")
    # The starttls listener trusts nobody here: plaintext login is refused there.
    with RawPop3("127.0.0.1", ports["starttls"]) as c:
        assert c.command("USER alice") == PLAINTEXT_REFUSED


def _start_fails(binary, args) -> str:
    if binary is None:
        pytest.fail("popgate binary not found (set POPGATE_BIN or build it)")
    proc = subprocess.run([str(binary), *args], capture_output=True, timeout=20,
                          stdin=subprocess.DEVNULL)
    err = proc.stderr.decode(errors="replace")
    assert proc.returncode == 2, f"exit {proc.returncode}; stderr:\n{err}"
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("popgate: "), f"stderr:\n{err}"
    return lines[0]


@pytest.mark.parametrize("case", ["key-mismatch", "missing-cert", "missing-key", "missing-ca"])
def test_startup_errors_name_the_file(case, test_ca, popgate_binary, tmp_path):
    cert, key = str(test_ca.localhost.cert), str(test_ca.localhost.key)
    missing = str(tmp_path / "no-such-file.pem")
    args = ["--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:1"]
    if case == "key-mismatch":
        key = str(test_ca.other_key)
        named = key
    elif case == "missing-cert":
        cert = named = missing
    elif case == "missing-key":
        key = named = missing
    else:
        args += ["--upstream-tls", "implicit", "--upstream-ca", missing]
        named = missing
    line = _start_fails(popgate_binary, [*args, "--listen-tls", "implicit", "--cert", cert,
                                         "--key", key])
    assert named in line, line


def test_startup_error_from_toml_listener(test_ca, popgate_binary, tmp_path):
    conf = tmp_path / "popgate.toml"
    conf.write_text(f"""
[[listen]]
address = "127.0.0.1:0"
tls = "starttls"
cert = "{test_ca.localhost.cert}"
key = "{test_ca.other_key}"

[upstream]
address = "127.0.0.1:1"
""")
    line = _start_fails(popgate_binary, ["-c", str(conf)])
    assert str(test_ca.other_key) in line, line


@pytest.mark.parametrize("listen,tls,warned", [
    ("0.0.0.0:0", "none", True), ("127.0.0.1:0", "none", False), ("0.0.0.0:0", "starttls", False)])
def test_plaintext_listener_warning(listen, tls, warned, test_ca, popgate_binary, popgate_factory):
    args = ["--listen", listen, "--upstream", "127.0.0.1:1", *listen_args(test_ca, tls)]
    pg = Popgate.start(args, binary=popgate_binary)
    popgate_factory.instances.append(pg)
    pg.wait_for_log(r"upstream 127\.0\.0\.1:1")
    assert ("plaintext only" in pg.log) == warned, pg.log
