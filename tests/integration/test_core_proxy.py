"""The core proxy against a real Dovecot: framing, pipelining, logins,
deletion, concurrency, command checks and CAPA rewriting.

Where a test makes sense against Dovecot itself it runs twice (`target`
"dovecot" and "popgate"): the dovecot run shows that the expectation is what
a real server does, the popgate run that popgate keeps it."""

import base64
import hashlib
import hmac
import poplib
import re
import threading
import time

import pytest

from pgtest import clients
from pgtest.compare import assert_same_bytes, assert_same_messages
from pgtest.mailbox import TEST_USERS as USERS
from pgtest.wire import CRLF, RawPop3, Relay, exchange, split_commands, stuff, unstuff

ALICE = ("alice", USERS["alice"])


@pytest.fixture(params=["dovecot", "popgate"])
def target(request, dovecot):
    """(host, port) of Dovecot itself or of a popgate in front of it."""
    if request.param == "dovecot":
        return dovecot.host, dovecot.port
    pg = request.getfixturevalue("popgate")
    return pg.host, pg.port


# ---------------------------------------------------------------- greeting

def test_greeting_is_relayed_verbatim(dovecot, popgate_factory):
    with Relay(dovecot.host, dovecot.port) as relay:
        pg = popgate_factory(relay.address)
        with RawPop3(pg.host, pg.port) as c:
            client_greeting = c.greeting
            c.command("QUIT")
        upstream_greeting = bytes(relay.connections[0].s2c).split(CRLF)[0] + CRLF
    assert re.match(rb"\+OK .*<[\x21-\x7e]+@[\x21-\x7e]+>\r\n$", upstream_greeting), upstream_greeting
    assert client_greeting == upstream_greeting


# ---------------------------------------------------------------- pipelining

BURST = b"STAT\r\nLIST\r\nUIDL\r\nRETR 1\r\n"
SPLITS = {
    "one-write": None,
    "byte-by-byte": list(range(1, len(BURST))),
    "cuts-3-7-11": [3, 7, 11],
    "cuts-5-13-20-27": [5, 13, 20, 27],  # inside LIST, across UIDL's CRLF, inside "RETR 1"
}


@pytest.mark.parametrize("split", list(SPLITS))
def test_pipelined_burst_matches_direct(split, dovecot, popgate, alice_messages):
    cuts = SPLITS[split]
    whole = cuts is None
    direct = exchange(dovecot.host, dovecot.port, *ALICE, BURST, cuts, whole)
    proxied = exchange(popgate.host, popgate.port, *ALICE, BURST, cuts, whole)
    # Sanity: the exchange ends with message 1 in full.
    assert direct.endswith(stuff(alice_messages[0].wire))
    assert_same_bytes(proxied, direct, "popgate vs Dovecot")


# Commands real clients send in TRANSACTION, in upper and lower case, with
# arguments that make Dovecot answer -ERR (single line, even for RETR/TOP/LIST).
# Ends in RSET, so nothing is deleted.
TRANSACTION_SCRIPT = [
    b"STAT", b"LIST", b"LIST 3", b"list 4", b"UIDL", b"uidl", b"UIDL 5",
    b"TOP 1 0", b"top 2 0", b"TOP 2 3", b"TOP 6 99999999", b"TOP 4 99999999",
    b"RETR 3", b"retr 2", b"capa", b"NOOP",
    b"RETR 99", b"TOP 99 0", b"LIST 99", b"UIDL 99", b"DELE 99",
    b"DELE 1", b"LIST 1", b"RETR 1", b"TOP 1 0", b"STAT", b"RSET", b"STAT", b"RETR 1",
]


def _errors_without_text(data: bytes) -> bytes:
    """-ERR texts may differ where popgate answers itself; keep the -ERR."""
    return re.sub(rb"(?m)^-ERR[^\r\n]*\r\n", b"-ERR\r\n", data)


@pytest.mark.parametrize("password_first", ["right", "wrong-then-right"])
def test_pipelined_login_matches_direct(password_first, dovecot, popgate):
    """USER, PASS and what follows in one write, as mpop does; a wrong
    password in the middle of the pipeline must not put the sides out of step."""
    script = b"USER alice\r\nPASS " + USERS["alice"].encode() + b"\r\nSTAT\r\nLIST\r\nRETR 2\r\nNOOP\r\n"
    if password_first == "wrong-then-right":
        script = b"USER alice\r\nPASS wrong-password\r\nSTAT\r\n" + script

    def run(host, port):
        with RawPop3(host, port) as c:
            c.send(script)
            return c.read_responses(split_commands(script))

    direct = run(dovecot.host, dovecot.port)
    proxied = run(popgate.host, popgate.port)
    assert direct.endswith(b"+OK\r\n")  # sanity: the NOOP after login was answered
    assert_same_bytes(_errors_without_text(proxied), _errors_without_text(direct), "popgate vs Dovecot")


@pytest.mark.parametrize("mode", ["one-by-one", "pipelined"])
def test_transaction_commands_match_direct(mode, dovecot, popgate):
    def run(host, port):
        with RawPop3(host, port) as c:
            out = c.login(*ALICE)
            if mode == "one-by-one":
                out += b"".join(c.command(cmd) for cmd in TRANSACTION_SCRIPT)
            else:
                c.send(b"".join(cmd + CRLF for cmd in TRANSACTION_SCRIPT))
                out += c.read_responses(TRANSACTION_SCRIPT)
            out += c.command("QUIT")
            out += c.read_available(1.0)  # nothing more, and the server closes
            return out

    direct = run(dovecot.host, dovecot.port)
    proxied = run(popgate.host, popgate.port)
    assert direct.endswith(b"+OK Logging out.\r\n")  # sanity: RSET undid the DELE
    assert_same_bytes(proxied, direct, "popgate vs Dovecot")


ODD_COMMANDS = [b"LIST ", b"UIDL ", b"LIST 1 2", b"LIST\t1", b"UIDL\t", b"TOP 1", b"RETR",
                b"RETR 1 2", b"TOP 1 0 0", b"list  1", b"STAT 1", b"CAPA x", b"NOOP x"]


@pytest.mark.parametrize("command", ODD_COMMANDS, ids=[c.decode().replace("\t", "\\t") for c in ODD_COMMANDS])
def test_odd_argument_forms_keep_the_session_in_step(command, target, alice_messages):
    """Whether a +OK answer has a body depends on the argument count (HAZARDS,
    Framing); whatever popgate does with these (relay, normalise or refuse),
    the client gets exactly one complete response, and the next command's
    answer is its own."""
    with RawPop3(*target) as c:
        c.login(*ALICE)
        c.send(command + CRLF)
        got = c.read_available(0.2)
        status, _, rest = got.partition(CRLF)
        assert status.startswith((b"+OK", b"-ERR")), got[:200]
        assert rest == b"" or (status.startswith(b"+OK") and rest.endswith(b"\r\n.\r\n")
                               and rest.count(b"\r\n.\r\n") == 1), got[:300]
        assert c.command("STAT") == b"+OK 8 %d\r\n" % sum(len(m.data) for m in alice_messages)


def test_connection_closes_after_quit(target):
    for login in (False, True):
        with RawPop3(*target) as c:
            if login:
                c.login(*ALICE)
            assert c.command("QUIT").startswith(b"+OK")
            c.sock.settimeout(5)
            assert c.sock.recv(100) == b"", "connection still open after QUIT"


def test_auth_without_mechanism_keeps_the_session_in_step(target):
    """AUTH alone is answered with a multi-line mechanism list (Dovecot does;
    popgate may answer it itself): afterwards, commands and answers must
    still pair up."""
    with RawPop3(*target) as c:
        r = c.command("AUTH")
        assert r.startswith(b"+OK") and r.endswith(b"\r\n.\r\n"), r
        c.login(*ALICE)
        assert c.command("LIST 2").startswith(b"+OK 2 ")


def test_pipelined_retr_of_every_message(dovecot, popgate, alice_messages):
    """All RETRs in one write, including the dot-stuffed, 8-bit, long-line and
    5 MB messages: the byte stream equals Dovecot's."""
    script = b"".join(b"RETR %d\r\n" % (i + 1) for i in range(len(alice_messages))) + b"QUIT\r\n"
    direct = exchange(dovecot.host, dovecot.port, *ALICE, script)
    proxied = exchange(popgate.host, popgate.port, *ALICE, script)
    assert direct.endswith(b"+OK Logging out.\r\n")
    assert_same_bytes(proxied, direct, "popgate vs Dovecot")


# ---------------------------------------------------------------- logins

def _sasl_login(c: RawPop3, mech: str, user: str, password: str) -> bytes:
    if mech == "PLAIN":
        return c.command(b"AUTH PLAIN " + base64.b64encode(f"\0{user}\0{password}".encode()))
    if mech == "LOGIN":
        r = c.command("AUTH LOGIN")
        assert r.startswith(b"+ "), r
        c.send(base64.b64encode(user.encode()) + CRLF)
        r = c.read_line()
        assert r.startswith(b"+ "), r
        c.send(base64.b64encode(password.encode()) + CRLF)
        return c.read_line()
    if mech == "CRAM-MD5":
        r = c.command("AUTH CRAM-MD5")
        assert r.startswith(b"+ "), r
        challenge = base64.b64decode(r[2:].strip())
        digest = hmac.new(password.encode(), challenge, hashlib.md5).hexdigest()
        c.send(base64.b64encode(f"{user} {digest}".encode()) + CRLF)
        return c.read_line()
    raise ValueError(mech)


def _apop_digest(greeting: bytes, password: str) -> str:
    stamp = re.search(rb"<[^>]*>", greeting).group(0)
    return hashlib.md5(stamp + password.encode()).hexdigest()


LOGIN_METHODS = ["USER/PASS", "APOP", "PLAIN", "LOGIN", "CRAM-MD5"]


def _login(c: RawPop3, method: str, user: str, password: str) -> bytes:
    if method == "USER/PASS":
        r = c.command(f"USER {user}")
        assert r.startswith(b"+OK"), r
        return c.command(f"PASS {password}")
    if method == "APOP":
        return c.command(f"APOP {user} {_apop_digest(c.greeting, password)}")
    return _sasl_login(c, method, user, password)


@pytest.mark.parametrize("method", LOGIN_METHODS)
def test_login_methods(method, target):
    """Each login method: a wrong password gets -ERR and the connection stays
    usable; the right one then logs in on the same connection."""
    with RawPop3(*target) as c:
        bad = _login(c, method, "alice", "wrong-password")
        assert bad.startswith(b"-ERR"), bad
        good = _login(c, method, *ALICE)
        assert good.startswith(b"+OK"), good
        assert c.command("STAT").startswith(b"+OK 8 ")
        assert c.command("QUIT").startswith(b"+OK")


@pytest.mark.parametrize("mech", ["PLAIN", "LOGIN", "CRAM-MD5"])
def test_sasl_cancel_then_login(mech, target):
    """A client may cancel an AUTH exchange with '*' (RFC 5034 §4); that line
    is SASL data, not a command, and the session goes on unauthenticated."""
    with RawPop3(*target) as c:
        r = c.command(f"AUTH {mech}")
        assert r.startswith(b"+ "), r
        c.send(b"*\r\n")
        r = c.read_line()
        assert r.startswith(b"-ERR"), r
        assert c.command("STAT").startswith(b"-ERR")  # still not logged in
        c.login(*ALICE)
        assert c.command("STAT").startswith(b"+OK 8 ")


def test_apop_with_poplib(target, alice_messages):
    p = poplib.POP3(*target, timeout=30)
    try:
        assert re.search(rb"<[^<>]+@[^<>]+>$", p.getwelcome())
        with pytest.raises(poplib.error_proto, match="-ERR"):
            p.apop("alice", "wrong-password")
        p.apop(*ALICE)
        _, lines, _ = p.retr(2)
        assert b"".join(line + CRLF for line in lines) == alice_messages[1].wire
        p.quit()
    finally:
        p.close()


def test_secrets_never_logged(dovecot, popgate_factory):
    """Log in every way through a popgate logging at debug level; no password,
    APOP digest or SASL data may appear in its log."""
    pg = popgate_factory(dovecot.address, "--log-level", "debug")
    secrets = [USERS["alice"], "wrong-password"]
    for method in LOGIN_METHODS:
        for password in ("wrong-password", USERS["alice"]):
            with RawPop3(pg.host, pg.port) as c:
                if method == "APOP":
                    secrets.append(_apop_digest(c.greeting, password))
                _login(c, method, "alice", password)
                c.command("QUIT")
    secrets.append(base64.b64encode(f"\0alice\0{USERS['alice']}".encode()).decode())
    secrets.append(base64.b64encode(USERS["alice"].encode()).decode())
    pg.stop()
    leaked = [s for s in secrets if s in pg.log]
    assert not leaked, f"secrets in popgate's log: {leaked}\nlog:\n{pg.log[-3000:]}"


# ---------------------------------------------------------------- deletion

def test_dele_then_quit_deletes(target, dovecot, carol):
    log_start = len(dovecot.log_text())
    with RawPop3(*target) as c:
        c.login("carol", USERS["carol"])
        assert c.command("DELE 2").startswith(b"+OK")
        assert c.command("QUIT").startswith(b"+OK")
    dovecot.wait_for_log(r"pop3(\(carol\)\S*)?: Info: Disconnected: Logged out .*del=1/3", start=log_start)
    remaining = [data for _, data in dovecot.maildir_state("carol")]
    assert remaining == [carol[0].data, carol[2].data]
    with RawPop3(dovecot.host, dovecot.port) as c:
        c.login("carol", USERS["carol"])
        assert c.command("STAT").startswith(b"+OK 2 ")


@pytest.mark.parametrize("how", ["fin", "rst"])
def test_dele_then_disconnect_deletes_nothing(how, target, dovecot, carol):
    log_start = len(dovecot.log_text())
    c = RawPop3(*target)
    c.login("carol", USERS["carol"])
    assert c.command("DELE 1").startswith(b"+OK")
    assert c.command("DELE 3").startswith(b"+OK")
    c.close(abort=(how == "rst"))
    # Dovecot logs "Logged out" only after a QUIT; anything else means the
    # connection was closed without one. (The line's prefix lacks "(carol)"
    # when the client vanishes early; "pop3:" is not "pop3-login:".)
    m = dovecot.wait_for_log(r"pop3(\(carol\)\S*)?: Info: Disconnected: (.*)", start=log_start)
    assert "Logged out" not in m.group(2), f"the session was ended with QUIT: {m.group(0)}"
    assert [data for _, data in dovecot.maildir_state("carol")] == [m.data for m in carol]


# ---------------------------------------------------------------- concurrency

def test_100_concurrent_sessions(dovecot, popgate, alice_messages):
    """100 poplib sessions, all logged in at once, each RETRs every message
    of alice's mailbox; every message must be byte-identical."""
    n = 100
    expected = [m.wire for m in alice_messages]
    barrier = threading.Barrier(n, timeout=60)
    results: dict[int, object] = {}

    def session(i: int) -> None:
        try:
            p = poplib.POP3(popgate.host, popgate.port, timeout=60)
            p.user("alice")
            p.pass_(USERS["alice"])
            barrier.wait()  # all n sessions are open and logged in here
            got = []
            for k in range(1, len(expected) + 1):
                _, lines, _ = p.retr(k)
                got.append(b"".join(line + CRLF for line in lines))
            p.quit()
            bad = [alice_messages[k].name for k in range(len(expected)) if got[k] != expected[k]]
            results[i] = bad or "ok"
        except Exception as e:  # noqa: BLE001 - reported by the main thread
            results[i] = f"{type(e).__name__}: {e}"
            barrier.abort()

    threads = [threading.Thread(target=session, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    failures = {i: r for i, r in results.items() if r != "ok"}
    assert len(results) == n, f"only {len(results)} of {n} sessions finished"
    assert not failures, f"{len(failures)} of {n} sessions failed: {dict(list(failures.items())[:5])}"


def _greets(pg) -> bytes:
    with RawPop3(pg.host, pg.port) as c:
        return c.greeting


def _open_session(pg, timeout: float = 5.0) -> RawPop3:
    """A connection that got popgate's +OK greeting, retrying while popgate
    may still be releasing the slots of sessions that just ended."""
    deadline = time.monotonic() + timeout
    while True:
        c = RawPop3(pg.host, pg.port)
        if c.greeting.startswith(b"+OK"):
            return c
        c.close()
        if time.monotonic() > deadline:
            raise AssertionError(f"no session slot came free within {timeout}s: {c.greeting!r}\n"
                                 f"log:\n{pg.log[-3000:]}")
        time.sleep(0.05)


def test_session_slots_are_released(dovecot, popgate_factory):
    """With --max-sessions 2, end sessions in every way a client can; each
    must give its slot back."""
    import socket

    pg = popgate_factory(dovecot.address, "--max-sessions", "2")

    def quit_before_login(c):
        c.command("QUIT")

    def quit_after_login(c):
        c.login(*ALICE)
        c.command("QUIT")

    def fin_after_login(c):
        c.login(*ALICE)

    def rst_during_big_retr(c):
        c.login(*ALICE)
        c.send(b"RETR 6\r\n")  # the 5 MB message
        c.read_line()
        c.close(abort=True)

    def rst_mid_command(c):
        c.send(b"USER ali")
        c.close(abort=True)

    for _ in range(3):
        for end in (quit_before_login, quit_after_login, fin_after_login, rst_during_big_retr,
                    rst_mid_command):
            c = _open_session(pg)
            end(c)
            c.close()
        socket.create_connection((pg.host, pg.port)).close()  # gone before the greeting
    conns = [_open_session(pg) for _ in range(2)]
    assert _greets(pg).startswith(b"-ERR"), "a third session was let in"
    for c in conns:
        c.login(*ALICE)
        assert c.command("STAT").startswith(b"+OK 8 ")
        c.command("QUIT")
        c.close()


# ---------------------------------------------------------------- command checks

@pytest.mark.parametrize("phase", ["before-login", "after-login"])
def test_unknown_command_is_refused_locally(phase, dovecot, popgate_factory):
    with Relay(dovecot.host, dovecot.port) as relay:
        pg = popgate_factory(relay.address)
        with RawPop3(pg.host, pg.port) as c:
            if phase == "after-login":
                c.login(*ALICE)
            r = c.command("XYZZY plugh")
            assert r.startswith(b"-ERR"), r
            if phase == "before-login":
                c.login(*ALICE)
            assert c.command("STAT").startswith(b"+OK 8 ")
            assert c.command("QUIT").startswith(b"+OK")
        upstream = bytes(relay.connections[0].c2s)
    assert b"XYZZY" not in upstream.upper(), f"forwarded upstream: {split_commands(upstream)}"


LONG_LINES = {
    # Dovecot itself accepts both of these with +OK.
    "before-login": b"USER " + b"a" * 293 + CRLF,
    "after-login": b"NOOP " + b"x" * 293 + CRLF,
}


@pytest.mark.parametrize("phase", list(LONG_LINES))
def test_overlong_command_line(phase, dovecot, popgate_factory):
    line = LONG_LINES[phase]
    assert len(line) == 300
    with Relay(dovecot.host, dovecot.port) as relay:
        pg = popgate_factory(relay.address)
        with RawPop3(pg.host, pg.port) as c:
            if phase == "after-login":
                c.login(*ALICE)
            c.send(line)
            r = c.read_line()
            assert r.startswith(b"-ERR"), r
            assert c.read_available(0.3) == b"", "more than one response to one line"
            if phase == "before-login":
                c.login(*ALICE)
            assert c.command("STAT").startswith(b"+OK 8 ")
            assert c.command("QUIT").startswith(b"+OK")
        upstream = bytes(relay.connections[0].c2s)
    assert line[5:40] not in upstream, f"forwarded upstream: {[x[:50] for x in split_commands(upstream)]}"


# ---------------------------------------------------------------- CAPA

def _capa(host, port, login=None) -> list[bytes]:
    with RawPop3(host, port) as c:
        if login:
            c.login(*login)
        r = c.command("CAPA")
        assert r.startswith(b"+OK"), r
        return unstuff(r.split(CRLF, 1)[1]).split(CRLF)[:-1]


@pytest.mark.parametrize("upstream", ["dovecot", "dovecot_stls"])
@pytest.mark.parametrize("phase", ["before-login", "after-login"])
def test_capa_drops_stls_keeps_the_rest(upstream, phase, request, popgate_factory):
    dc = request.getfixturevalue(upstream)
    pg = popgate_factory(dc.address)
    login = ALICE if phase == "after-login" else None
    direct = _capa(dc.host, dc.port, login)
    proxied = _capa(pg.host, pg.port, login)
    if upstream == "dovecot_stls" and phase == "before-login":
        assert b"STLS" in direct, "harness: this Dovecot should offer STLS"
    assert not [c for c in proxied if c.upper().split()[0] == b"STLS"], proxied
    kept = [c for c in direct if c.upper().split()[0] not in (b"STLS", b"IMPLEMENTATION")]
    missing = [c for c in kept if c not in proxied]
    assert not missing, f"popgate's CAPA {proxied} lacks {missing} (Dovecot's: {direct})"
    if phase == "before-login":
        for cap in (b"PIPELINING", b"USER"):
            assert cap in proxied
        assert any(c.startswith(b"SASL ") for c in proxied)


def test_stls_refused_when_not_offered(dovecot_stls, popgate_factory):
    """popgate removed STLS from CAPA (no TLS on this listener), so a client
    that sends STLS anyway gets -ERR and stays in plaintext."""
    pg = popgate_factory(dovecot_stls.address)
    with RawPop3(pg.host, pg.port) as c:
        r = c.command("STLS")
        assert r.startswith(b"-ERR"), r
        c.login(*ALICE)
        assert c.command("STAT").startswith(b"+OK 8 ")


@pytest.mark.clients
def test_opportunistic_tls_client_with_an_stls_upstream(dovecot_stls, popgate_factory, alice_messages):
    """`curl --ssl` sends STLS whenever CAPA lists it and fails on this
    upstream's self-signed certificate. Through popgate, which has no TLS on
    its listener, it must see no STLS and fetch in plaintext."""
    with pytest.raises(clients.ClientError, match="certificate"):  # harness check
        clients.fetch_curl(dovecot_stls.host, dovecot_stls.port, *ALICE, try_tls=True)
    pg = popgate_factory(dovecot_stls.address)
    msgs = clients.fetch_curl(pg.host, pg.port, *ALICE, try_tls=True)
    assert_same_messages(msgs, [m.wire for m in alice_messages], [m.name for m in alice_messages],
                         "curl --ssl through popgate vs the generated messages")
