"""Fault tests: popgate between raw clients (or poplib) and a scripted fake upstream
(tests/support/pgtest/fakes.py). Each test scripts one failure from HAZARDS.md and
asserts what reached the client and what reached the fake.

Run: /usr/bin/python3 -m pytest tests/integration/test_faults.py
The binary is $POPGATE_BIN, else build/popgate.
"""

from __future__ import annotations

import base64
import poplib
import signal
import socket
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "support"))

from pgtest.fakes import STOP, FakeConn, FakePop3, Pop3Script, message, stuff  # noqa: E402
from pgtest.popgate import Popgate  # noqa: E402

UPSTREAM_TIMEOUT = 2  # seconds, for the timeout tests
SYS_TEMP = b"-ERR [SYS/TEMP]"


# ---------------------------------------------------------------- fixtures

@pytest.fixture
def fakes():
    made: list[FakePop3] = []

    def make(*args, **kwargs) -> FakePop3:
        fake = FakePop3(*args, **kwargs)
        made.append(fake)
        return fake

    yield make
    for fake in made:
        fake.close()


@pytest.fixture
def popgate():
    started: list[Popgate] = []

    def start(upstream: str, *extra: str) -> Popgate:
        args = ["--upstream", upstream]
        if "--upstream-timeout" not in extra:
            args += ["--upstream-timeout", str(UPSTREAM_TIMEOUT)]
        if "--drain-timeout" not in extra:
            # A session a failing test leaves open must not hold up the teardown.
            args += ["--drain-timeout", "1"]
        args += list(extra)
        pg = Popgate.start(args)
        started.append(pg)
        return pg

    yield start
    for pg in started:
        pg.stop(check=False)
        # Captured output: pytest shows it only when the test fails.
        print(f"--- popgate {' '.join(pg.argv[1:])}\n{pg.log[-6000:]}")


# ---------------------------------------------------------------- a raw client

class Client:
    """A POP3 client that returns exact bytes and never raises on a closed
    connection: read_line() gives b"" at EOF, None on timeout."""

    def __init__(self, pg: Popgate, timeout: float = 5.0, greet: bool = True):
        self.sock = socket.create_connection((pg.host, pg.port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        self.eof = False
        self.greeting = self.read_line(timeout) if greet else None

    def _fill(self, deadline: float) -> bool:
        if self.eof:
            return False
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        self.sock.settimeout(remaining)
        try:
            data = self.sock.recv(1 << 20)
        except socket.timeout:
            return False
        except OSError:  # reset
            data = b""
        if not data:
            self.eof = True
            return False
        self.buf += data
        return True

    def read_line(self, timeout: float = 5.0) -> bytes | None:
        deadline = time.monotonic() + timeout
        while True:
            i = self.buf.find(b"\n")
            if i >= 0:
                line = bytes(self.buf[:i + 1])
                del self.buf[:i + 1]
                return line
            if not self._fill(deadline):
                if self.eof:
                    rest = bytes(self.buf)
                    self.buf.clear()
                    return rest  # b"" or a partial line
                return None

    def read_body(self, timeout: float = 10.0) -> bytes:
        """Lines through the terminating '.' line (raises if it never comes)."""
        out = bytearray()
        while True:
            line = self.read_line(timeout)
            if not line:
                raise AssertionError(f"no terminator; got {bytes(out)[-300:]!r} then {line!r}")
            out += line
            if line == b".\r\n":
                return bytes(out)

    def read_rest(self, timeout: float) -> tuple[bytes, bool]:
        """Everything until EOF or `timeout`; (bytes, closed)."""
        deadline = time.monotonic() + timeout
        while self._fill(deadline):
            pass
        data = bytes(self.buf)
        self.buf.clear()
        return data, self.eof

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def command(self, line: bytes | str, timeout: float = 5.0) -> bytes | None:
        if isinstance(line, str):
            line = line.encode()
        self.send(line + b"\r\n")
        return self.read_line(timeout)

    def login(self, user: str = "alice", password: str = "secret") -> None:
        assert self.greeting and self.greeting.startswith(b"+OK"), self.greeting
        r1 = self.command(f"USER {user}")
        r2 = self.command(f"PASS {password}")
        assert r1 and r1.startswith(b"+OK") and r2 and r2.startswith(b"+OK"), (r1, r2)

    def close(self, abort: bool = False) -> None:
        if abort:
            import struct
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()


def served_normally(pg: Popgate) -> None:
    """A fresh client logs in, gets a STAT and a whole RETR, and QUITs."""
    c = Client(pg)
    try:
        c.login()
        stat = c.command("STAT")
        assert stat is not None and stat.startswith(b"+OK "), stat
        status = c.command("RETR 1")
        assert status is not None and status.startswith(b"+OK"), status
        body = c.read_body()
        assert b"Subject: one" in body
        assert c.command("QUIT") == b"+OK bye\r\n"
    finally:
        c.close()


def no_quit(conn: FakeConn) -> bool:
    return not conn.got_quit and b"QUIT" not in bytes(conn.raw).upper()


# ---------------------------------------------------------------- fake behaviours

def die_mid_retr(size: int):
    """RETR: +OK and the first half of the body, then close."""
    wire = stuff(message(size))

    def override(conn: FakeConn, line, args):
        conn.send(b"+OK message follows\r\n" + wire[:len(wire) // 2])
        time.sleep(0.05)
        conn.close()
        return STOP

    return override


def stall_mid_retr(size: int):
    """RETR: +OK and part of the body, then silence until popgate hangs up."""
    wire = stuff(message(size))

    def override(conn: FakeConn, line, args):
        conn.send(b"+OK message follows\r\n" + wire[:len(wire) // 2])
        conn.stall()
        return STOP

    return override


def stall(conn: FakeConn, line, args):
    conn.stall()
    return STOP


def answer(data: bytes, then_stall: bool = False):
    def override(conn: FakeConn, line, args):
        conn.send(data)
        if then_stall:
            conn.stall()
            return STOP
        return None

    return override


def assert_no_terminator(data: bytes) -> None:
    assert not data.endswith(b".\r\n"), data[-200:]
    assert b"\r\n.\r\n" not in data, "a terminating '.' line reached the client"
    assert not data.startswith(b".\r\n")


# ================================================================ upstream dies / stalls

@pytest.mark.parametrize("size", [4_000, 2_000_000], ids=["small", "large"])
def test_upstream_dies_mid_retr_raw_client(fakes, popgate, size):
    fake = fakes(scripts=[Pop3Script(overrides={"RETR": die_mid_retr(size)})])
    pg = popgate(fake.address)
    c = Client(pg)
    c.login()
    c.send(b"RETR 1\r\n")
    data, closed = c.read_rest(5)
    assert closed, "popgate kept the client connection open after the upstream died mid-RETR"
    assert_no_terminator(data)
    # Either an -ERR before any of the response was relayed, or a cut response.
    assert data.startswith(b"+OK") or data.startswith(SYS_TEMP), data[:200]
    assert pg.alive()


@pytest.mark.parametrize("size", [4_000, 2_000_000], ids=["small", "large"])
def test_upstream_dies_mid_retr_poplib(fakes, popgate, size):
    fake = fakes(scripts=[Pop3Script(overrides={"RETR": die_mid_retr(size)})])
    pg = popgate(fake.address)
    p = poplib.POP3(pg.host, pg.port, timeout=5)
    p.user("alice")
    p.pass_("secret")
    with pytest.raises((poplib.error_proto, EOFError, OSError)):
        p.retr(1)
    p.close()


@pytest.mark.parametrize("size", [4_000, 2_000_000], ids=["small", "large"])
def test_upstream_stalls_mid_body(fakes, popgate, size):
    fake = fakes(scripts=[Pop3Script(overrides={"RETR": stall_mid_retr(size)})])
    pg = popgate(fake.address)
    c = Client(pg)
    c.login()
    t0 = time.monotonic()
    c.send(b"RETR 1\r\n")
    data, closed = c.read_rest(UPSTREAM_TIMEOUT + 4)
    elapsed = time.monotonic() - t0
    assert closed, "client connection still open after the upstream stalled mid-body"
    assert UPSTREAM_TIMEOUT - 0.5 <= elapsed <= UPSTREAM_TIMEOUT + 2, elapsed
    assert_no_terminator(data)
    conn = fake.conn(0)
    assert conn.peer_closed.wait(2), "popgate did not close the stalled upstream connection"
    assert no_quit(conn), conn.commands


def test_upstream_stalls_before_stat(fakes, popgate):
    fake = fakes(scripts=[Pop3Script(overrides={"STAT": stall})])
    pg = popgate(fake.address)
    c = Client(pg)
    c.login()
    t0 = time.monotonic()
    reply = c.command("STAT", timeout=UPSTREAM_TIMEOUT + 4)
    elapsed = time.monotonic() - t0
    assert reply is not None and reply.startswith(SYS_TEMP), reply
    assert UPSTREAM_TIMEOUT - 0.5 <= elapsed <= UPSTREAM_TIMEOUT + 2, elapsed
    _, closed = c.read_rest(2)
    assert closed
    conn = fake.conn(0)
    assert conn.peer_closed.wait(2)
    assert no_quit(conn), conn.commands


def test_upstream_never_greets(fakes, popgate):
    fake = fakes(scripts=[Pop3Script(greeting=None)])
    pg = popgate(fake.address)
    t0 = time.monotonic()
    c = Client(pg, timeout=UPSTREAM_TIMEOUT + 4)
    elapsed = time.monotonic() - t0
    assert c.greeting is not None and c.greeting.startswith(SYS_TEMP), c.greeting
    assert UPSTREAM_TIMEOUT - 0.5 <= elapsed <= UPSTREAM_TIMEOUT + 2, elapsed
    _, closed = c.read_rest(2)
    assert closed


def test_upstream_never_accepts(fakes, popgate):
    fake = fakes(accept=False)
    fake.fill_backlog()
    pg = popgate(fake.address)
    t0 = time.monotonic()
    c = Client(pg, timeout=UPSTREAM_TIMEOUT + 4)
    elapsed = time.monotonic() - t0
    assert c.greeting is not None and c.greeting.startswith(SYS_TEMP), c.greeting
    assert UPSTREAM_TIMEOUT - 0.5 <= elapsed <= UPSTREAM_TIMEOUT + 2, elapsed


def test_upstream_port_closed(popgate):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    pg = popgate(f"127.0.0.1:{port}")
    t0 = time.monotonic()
    c = Client(pg)
    assert c.greeting is not None and c.greeting.startswith(SYS_TEMP), c.greeting
    assert time.monotonic() - t0 < 1.0
    _, closed = c.read_rest(2)
    assert closed
    assert pg.alive()


# ================================================================ a broken upstream

def after_login_unsolicited(conn: FakeConn):
    time.sleep(0.2)
    conn.send(b"+OK unsolicited\r\n")


TEN_MB_NO_LF = b"A" * (10 << 20)

# name -> (first connection's script, client command or None (just the greeting),
#          bytes that must never reach the client, extra popgate flags)
GARBAGE = {
    "garbage-status": (Pop3Script(overrides={"STAT": answer(b"HELLO I AM NOT POP3\r\n")}),
                       "STAT", b"HELLO", []),
    "garbage-greeting": (Pop3Script(greeting=b"* OK IMAP4rev1 server ready"), None, b"IMAP4", []),
    "nul-status": (Pop3Script(overrides={"STAT": answer(b"\0" * 64 + b"\r\n")}),
                   "STAT", b"\0", []),
    "nul-in-ok-line": (Pop3Script(overrides={"STAT": answer(b"+OK 1 2\0\0smuggled\r\n")}),
                       "STAT", b"\0", []),
    # A client that takes a bare CR for a line end would see a second answer.
    "bare-cr-in-ok-line": (Pop3Script(overrides={"STAT": answer(b"+OK 1 2\r+OK injected\r\n")}),
                           "STAT", b"injected", []),
    "nul-greeting": (Pop3Script(greeting=b"+OK hello\0world"), None, b"\0", []),
    "continuation-to-stat": (Pop3Script(overrides={"STAT": answer(b"+ c2VjcmV0\r\n")}),
                             "STAT", b"c2VjcmV0", []),
    "endless-line": (Pop3Script(overrides={"STAT": answer(TEN_MB_NO_LF, then_stall=True)}),
                     "STAT", b"AAAA", ["--upstream-timeout", "6"]),
    "overlong-status": (Pop3Script(overrides={"STAT": answer(b"+OK " + b"x" * 5000 + b"\r\n")}),
                        "STAT", b"xxxxxxxx", ["--max-upstream-line", "1024"]),
    "overlong-greeting": (Pop3Script(greeting=b"+OK " + b"x" * 5000), None, b"xxxxxxxx",
                          ["--max-upstream-line", "1024"]),
    "unsolicited": (Pop3Script(after_login=after_login_unsolicited), "STAT", b"unsolicited", []),
}


@pytest.mark.parametrize("case", list(GARBAGE))
def test_broken_upstream_ends_session_cleanly(fakes, popgate, case):
    script, command, forbidden, flags = GARBAGE[case]
    fake = fakes(scripts=[script])  # later connections: a correct server
    pg = popgate(fake.address, *flags)
    c = Client(pg, timeout=10)
    t0 = time.monotonic()
    if command is None:
        first = c.greeting
        assert first is not None and first.startswith(b"-ERR"), first
        data, closed = c.read_rest(3)
        received = first + data
    else:
        c.login()
        if case == "unsolicited":
            time.sleep(0.6)  # the unsolicited line arrives while nothing is outstanding
        try:
            c.send(command.encode() + b"\r\n")
        except OSError:
            pass  # popgate may already have closed the session
        data, closed = c.read_rest(4)
        received = data
        # The session ends: -ERR or a plain close, never a relayed garbage answer.
        assert data == b"" or data.startswith(b"-ERR"), data[:200]
    assert closed, f"session not closed; client got {received[:200]!r}"
    assert forbidden not in received, received[:200]
    if case == "endless-line":
        # Over --max-upstream-line is over: no need to read 10 MB or wait for a timeout.
        assert time.monotonic() - t0 < 3, "popgate read the endless line to its end"
    assert pg.alive()
    served_normally(pg)
    assert pg.alive()


def test_unsolicited_line_is_not_taken_for_next_answer(fakes, popgate):
    """The unsolicited '+OK' sits in popgate's buffer; the client's next command must
    not get it as its answer (the client would think DELE succeeded)."""
    fake = fakes(scripts=[Pop3Script(after_login=after_login_unsolicited,
                                     overrides={"DELE": answer(b"-ERR not deleted\r\n")})])
    pg = popgate(fake.address)
    c = Client(pg)
    c.login()
    time.sleep(0.6)
    try:
        c.send(b"DELE 1\r\n")
    except OSError:
        pass
    data, _ = c.read_rest(3)
    assert not data.startswith(b"+OK"), data


# ================================================================ the client goes away

def test_client_vanishes_mid_large_retr(fakes, popgate):
    big = stuff(message(20 << 20, "big"))
    fake = fakes(scripts=[Pop3Script(raw_bodies={1: big})])
    pg = popgate(fake.address)
    c = Client(pg)
    c.login()
    c.send(b"RETR 1\r\n")
    got = 0
    deadline = time.monotonic() + 5
    while got < 200_000 and time.monotonic() < deadline:
        line = c.read_line()
        assert line, "RETR stream ended early"
        got += len(line)
    c.close(abort=True)

    # popgate keeps serving others meanwhile.
    served_normally(pg)

    conn = fake.conn(0)
    ended = conn.finished.wait(5)
    assert ended, "the upstream connection of the vanished client is still open"
    assert conn.send_failed.is_set() or conn.peer_closed.is_set()
    assert conn.bytes_sent < len(big) + 1000 or conn.peer_closed.is_set()
    assert no_quit(conn), f"popgate sent QUIT upstream for a vanished client: {conn.commands}"
    assert pg.alive()


def test_client_disconnects_after_dele(fakes, popgate):
    fake = fakes()
    pg = popgate(fake.address)
    c = Client(pg)
    c.login()
    assert c.command("DELE 1") == b"+OK message 1 deleted\r\n"
    c.close()
    conn = fake.conn(0)
    assert conn.peer_closed.wait(3), "popgate did not close the upstream connection"
    assert b"DELE 1" in conn.commands
    assert no_quit(conn), f"popgate sent QUIT upstream (deletes!): {conn.commands}"


# ================================================================ smuggling

# Dots after bare LF, stuffed as they should be: "..\n" is content ".".
STUFFED_BARE_LF = (b"Subject: smuggle\r\n\r\nfirst\r\na\n..\n+OK injected\n.hidden\n"
                   b"..dots\nlast\r\n.\r\n")
# After a bare LF only ".." is taken as stuffing; a single leading dot is content
# (the sender may not have stuffed it), so ".hidden" keeps its dot: nothing is lost.
STUFFED_BARE_LF_LINES = [b"Subject: smuggle", b"", b"first", b"a", b".", b"+OK injected",
                         b".hidden", b".dots", b"last"]
# A lone "." after bare LF, as a server that stuffs only after CRLF would send it:
# poplib straight to this server ends the message at "a" and takes "+OK injected" for
# its next answer. Only CRLF "." CRLF ends a message (HAZARDS.md).
LONE_DOT_BARE_LF = (b"Subject: smuggle\r\n\r\nfirst\r\na\n.\n+OK injected\n.hidden\n"
                    b"last\r\n.\r\n")

SMUGGLING = {"stuffed-dot-lines": STUFFED_BARE_LF, "lone-dot-line": LONE_DOT_BARE_LF}


@pytest.mark.parametrize("case", list(SMUGGLING))
def test_smuggling_poplib_gets_whole_message(fakes, popgate, case):
    script = Pop3Script(raw_bodies={1: SMUGGLING[case]})
    fake = fakes(scripts=[script])
    pg = popgate(fake.address)
    p = poplib.POP3(pg.host, pg.port, timeout=5)
    try:
        p.user("alice")
        p.pass_("secret")
        resp, lines, _ = p.retr(1)
        assert resp.startswith(b"+OK")
        assert b"+OK injected" in lines, lines
        assert lines[-1] == b"last", lines
        if case == "stuffed-dot-lines":
            assert lines == STUFFED_BARE_LF_LINES
        # The next answer is the upstream's answer to the next command.
        expected = (len(script.messages), sum(len(m) for m in script.messages))
        assert p.stat() == expected
        p.quit()
    finally:
        p.close()


@pytest.mark.parametrize("case", list(SMUGGLING))
def test_smuggling_raw_client_sees_canonical_lines(fakes, popgate, case):
    fake = fakes(scripts=[Pop3Script(raw_bodies={1: SMUGGLING[case]})])
    pg = popgate(fake.address)
    c = Client(pg)
    c.login()
    status = c.command("RETR 1")
    assert status is not None and status.startswith(b"+OK"), status
    body = c.read_body()
    lines = body.split(b"\r\n")
    assert lines[-1] == b"" and lines[-2] == b"."
    content = lines[:-2]
    for line in content:
        assert b"\n" not in line, f"bare LF relayed: {body!r}"
        assert line != b".", f"an early terminator: {body!r}"
        if line.startswith(b"."):
            assert line.startswith(b".."), f"unstuffed dot line {line!r}"
    assert b"+OK injected" in content, body
    assert content[-1] == b"last", body
    assert c.command("NOOP") == b"+OK\r\n"


# ================================================================ command hygiene

def test_bad_commands_never_reach_upstream(fakes, popgate):
    fake = fakes()
    pg = popgate(fake.address)
    c = Client(pg)
    long_user = b"USER " + b"u" * 293  # 300 octets with CRLF
    assert len(long_user) + 2 == 300
    reply = c.command(long_user)
    assert reply is not None and reply.startswith(b"-ERR"), reply
    c.login()
    reply = c.command("XYZZY")
    assert reply is not None and reply.startswith(b"-ERR"), reply
    long_dele = b"DELE " + b"1" * 293
    reply = c.command(long_dele)
    assert reply is not None and reply.startswith(b"-ERR"), reply

    # Framing-relevant normalisation: "LIST " must not reach the server as a LIST
    # with an (empty) argument, nor "list\t1" as something else than LIST 1.
    status = c.command("LIST ")
    assert status is not None and status.startswith(b"+OK"), status
    body = c.read_body()
    assert body.startswith(b"1 ") and body.endswith(b"\r\n.\r\n"), body
    assert c.command("list\t1") == b"+OK 1 %d\r\n" % len(message(300, "one"))
    assert c.command("uidl  2 ") == b"+OK 2 uid2\r\n"
    assert c.command("QUIT") == b"+OK bye\r\n"

    conn = fake.conn(0)
    conn.finished.wait(3)
    commands = conn.commands
    assert commands == [b"USER alice", b"PASS secret", b"LIST", b"LIST 1", b"UIDL 2", b"QUIT"], \
        commands
    assert b"XYZZY" not in bytes(conn.raw).upper()


# ================================================================ AUTH

PLAIN = base64.b64encode(b"\0alice\0secret")


def test_auth_plain_with_challenge(fakes, popgate):
    fake = fakes()
    pg = popgate(fake.address)
    c = Client(pg)
    assert c.command("AUTH PLAIN") == b"+ \r\n"
    assert c.command(PLAIN) == b"+OK logged in\r\n"
    assert c.command("STAT").startswith(b"+OK 2 ")
    conn = fake.conn(0)
    assert conn.commands[:3] == [b"AUTH PLAIN", PLAIN, b"STAT"]


def test_auth_long_initial_response_reaches_upstream_intact(fakes, popgate):
    fake = fakes()
    pg = popgate(fake.address)
    c = Client(pg)
    payload = base64.b64encode(b"\0alice\0" + b"p" * 2240)
    line = b"AUTH PLAIN " + payload
    assert len(line) > 3000
    assert c.command(line) == b"+OK logged in\r\n"
    assert c.command("NOOP") == b"+OK\r\n"
    assert fake.conn(0).commands[0] == line


def test_auth_client_lines_are_sasl_data(fakes, popgate):
    fake = fakes()
    pg = popgate(fake.address)
    c = Client(pg)
    assert c.command("AUTH PLAIN") == b"+ \r\n"
    # "STAT" here is SASL data: the fake decodes it as base64 and refuses it.
    assert c.command("STAT") == b"-ERR bad PLAIN message\r\n"
    assert fake.conn(0).commands[:2] == [b"AUTH PLAIN", b"STAT"]
    # "*" cancels (RFC 5034 §4) and is relayed as such.
    assert c.command("AUTH PLAIN") == b"+ \r\n"
    assert c.command("*") == b"-ERR authentication cancelled\r\n"
    # Back to commands: USER is a command again.
    assert c.command("USER alice") == b"+OK user accepted\r\n"
    assert fake.conn(0).commands[2:5] == [b"AUTH PLAIN", b"*", b"USER alice"]


# ================================================================ timeouts and limits

def test_idle_timeout(fakes, popgate):
    fake = fakes()
    pg = popgate(fake.address, "--idle-timeout", "2")
    c = Client(pg)
    c.login()
    t0 = time.monotonic()
    line = c.read_line(timeout=6)
    elapsed = time.monotonic() - t0
    assert line is not None and line.startswith(b"-ERR"), line
    assert 1.5 <= elapsed <= 4.5, elapsed
    _, closed = c.read_rest(2)
    assert closed
    conn = fake.conn(0)
    assert conn.peer_closed.wait(2)
    assert no_quit(conn), conn.commands


def test_max_sessions(fakes, popgate):
    fake = fakes()
    pg = popgate(fake.address, "--max-sessions", "2")
    c1, c2 = Client(pg), Client(pg)
    c1.login()
    c2.login()
    c3 = Client(pg)
    assert c3.greeting is not None and c3.greeting.startswith(SYS_TEMP), c3.greeting
    _, closed = c3.read_rest(2)
    assert closed
    assert fake.wait_connections(2) and len(fake.connections) == 2, "refused client went upstream"

    assert c1.command("QUIT") == b"+OK bye\r\n"
    _, closed = c1.read_rest(2)
    assert closed
    # The session's end is asynchronous: give popgate a moment to count it out.
    deadline = time.monotonic() + 2
    while True:
        c4 = Client(pg)
        if c4.greeting and c4.greeting.startswith(b"+OK"):
            break
        c4.close()
        assert time.monotonic() < deadline, f"no slot freed after QUIT: {c4.greeting!r}"
        time.sleep(0.1)
    c4.login()
    assert c4.command("STAT").startswith(b"+OK")
    assert c2.command("NOOP") == b"+OK\r\n"


def test_sigterm_lets_active_session_finish(fakes, popgate):
    fake = fakes()
    pg = popgate(fake.address, "--drain-timeout", "5")
    c = Client(pg)
    c.login()
    t0 = time.monotonic()
    pg.proc.send_signal(signal.SIGTERM)
    pg.wait_for_log(r"shutting down|signal", timeout=3)
    time.sleep(0.2)
    # No new clients.
    with pytest.raises(OSError):
        late = socket.create_connection((pg.host, pg.port), timeout=2)
        late.settimeout(2)
        if not late.recv(100):  # accepted by a backlog, then closed unserved
            raise ConnectionResetError("closed without greeting")
    # The active one finishes its work.
    assert c.command("STAT").startswith(b"+OK 2 ")
    assert c.command("RETR 1").startswith(b"+OK")
    c.read_body()
    assert c.command("QUIT") == b"+OK bye\r\n"
    rc = pg.proc.wait(4)
    assert rc == 0
    assert time.monotonic() - t0 < 4.5, "popgate waited for the drain timeout after the last QUIT"
    assert fake.conn(0).got_quit


def test_sigterm_closes_unfinished_session_after_drain_timeout(fakes, popgate):
    fake = fakes()
    pg = popgate(fake.address, "--drain-timeout", "1")
    c = Client(pg)
    c.login()
    t0 = time.monotonic()
    pg.proc.send_signal(signal.SIGTERM)
    _, closed = c.read_rest(4)
    elapsed = time.monotonic() - t0
    assert closed, "session still open after the drain timeout"
    assert 0.7 <= elapsed <= 3, elapsed
    assert pg.proc.wait(3) == 0
    conn = fake.conn(0)
    assert conn.peer_closed.wait(2)
    assert no_quit(conn), conn.commands


# ================================================================ log hygiene

def test_secrets_never_logged(fakes, popgate):
    password = "Pa55-w0rd with spaces"
    wrong = "Wr0ng-Pa55word"
    digest = "c4c9334bac560ecc979e58001b3e22fb"
    ir = base64.b64encode(b"\0alice\0IRsecret-Xy7").decode()
    challenge_data = base64.b64encode(b"\0alice\0CHsecret-Qz9").decode()
    users = {"alice": password}
    fake = fakes(default=Pop3Script(users=users))
    pg = popgate(fake.address, "--log-level", "trace")

    c = Client(pg)
    c.login("alice", password)
    c.command("QUIT")
    c = Client(pg)
    assert c.command("USER alice").startswith(b"+OK")
    assert c.command(f"PASS {wrong}").startswith(b"-ERR")
    c.command("QUIT")
    c = Client(pg)
    assert c.command(f"APOP alice {digest}").startswith(b"+OK")
    c.command("QUIT")
    c = Client(pg)
    assert c.command(f"AUTH PLAIN {ir}").startswith(b"+OK")
    c.command("QUIT")
    c = Client(pg)
    assert c.command("AUTH PLAIN") == b"+ \r\n"
    assert c.command(challenge_data).startswith(b"+OK")
    c.command("QUIT")
    fake.wait_connections(5)
    time.sleep(0.3)
    pg.stop()
    log = pg.log
    assert "session" in log, "no session logging at trace level?"
    for secret in (password, "Pa55-w0rd", wrong, digest, ir, challenge_data,
                   "IRsecret", "CHsecret"):
        assert secret not in log, f"{secret!r} appears in popgate's log"


# ================================================================ pass-through

def test_pass_through_commands_reach_the_upstream_only_when_listed(fakes, popgate):
    def xtnd(conn, line, args):
        conn.send_line(b"+OK xtnd " + b" ".join(args))

    script = Pop3Script(overrides={"XTND": xtnd})
    fake = fakes(scripts=[script, script])

    # Not listed: popgate answers -ERR itself and the upstream never sees it.
    pg = popgate(fake.address)
    c = Client(pg)
    c.login()
    reply = c.command("XTND XMIT")
    assert reply is not None and reply.startswith(b"-ERR"), reply
    assert c.command("QUIT") == b"+OK bye\r\n"
    fake.conn(0).finished.wait(3)
    assert b"XTND" not in bytes(fake.conn(0).raw).upper()

    # Listed: relayed in canonical form, its single-line answer relayed back, in order.
    pg2 = popgate(fake.address, "--pass-through", "xtnd")
    c = Client(pg2)
    c.login()
    assert c.command("xtnd  XMIT ") == b"+OK xtnd XMIT\r\n"
    assert c.command("STAT").startswith(b"+OK 2 ")
    assert c.command("QUIT") == b"+OK bye\r\n"
    conn = fake.conn(1)
    conn.finished.wait(3)
    assert b"XTND XMIT" in conn.commands, conn.commands
