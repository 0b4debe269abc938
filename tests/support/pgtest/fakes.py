"""A scriptable fake POP3 server for fault tests.

    fake = FakePop3()                                   # a well-behaved server
    fake = FakePop3(scripts=[Pop3Script(overrides={"STAT": stall}), Pop3Script()])

Each accepted connection runs one script in its own thread: the first connection
the first script of `scripts`, the second the second, and so on; once the list is
used up, `default` (a plain Pop3Script unless given). A script is any callable
taking a FakeConn; Pop3Script is a small, correct POP3 server (RFC 1939, AUTH PLAIN
per RFC 5034) whose answer to any command can be replaced by an override:

    def stall(conn, line, args):       # line: the command line as received
        conn.stall()                   # say nothing until the peer closes
        return STOP                    # end the script (STOP closes the socket)

Everything a connection receives is recorded (FakeConn.lines, FakeConn.raw), and
whether its peer closed it (FakeConn.peer_closed) and whether QUIT ever arrived
(FakeConn.got_quit), so tests can assert on what crossed the wire.
"""

from __future__ import annotations

import base64
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

CRLF = b"\r\n"
STOP = object()  # returned by an override: end the script and close the connection
HANDLED = None   # returned by an override: answered, go on reading commands


def stuff(content: bytes) -> bytes:
    """Content (any line endings) -> wire lines, CRLF, dot-stuffed, with the
    terminating '.' line (RFC 1939 §3)."""
    if content and not content.endswith(b"\n"):
        content += CRLF
    out = bytearray()
    for line in content.split(b"\n")[:-1] if content else []:
        if line.endswith(b"\r"):
            line = line[:-1]
        if line.startswith(b"."):
            out += b"."
        out += line + CRLF
    out += b".\r\n"
    return bytes(out)


def message(size: int, subject: str = "test") -> bytes:
    """A message of about `size` octets, CRLF lines of 78 characters."""
    head = f"From: a@example.org\r\nTo: b@example.org\r\nSubject: {subject}\r\n\r\n".encode()
    line = b"x" * 76 + CRLF
    n = max(0, (size - len(head)) // len(line))
    return head + line * n


class FakeConn:
    """One accepted connection: recording reads, plain writes."""

    def __init__(self, sock: socket.socket, index: int):
        self.sock = sock
        self.index = index
        self.raw = bytearray()            # every byte received
        self.lines: list[bytes] = []      # every complete line received, without CR/LF
        self.peer_closed = threading.Event()  # EOF or reset seen from the peer
        self.send_failed = threading.Event()  # a write failed (peer gone)
        self.finished = threading.Event()     # the script has returned
        self.bytes_sent = 0
        self.closed_by_us = False
        self.error: BaseException | None = None
        self._buf = bytearray()
        self._lock = threading.Lock()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    # ------------------------------------------------------------ reading
    def read_line(self, timeout: float | None = 30.0) -> bytes | None:
        """The next line without its line ending; None when the peer closed (or
        nothing came within `timeout`)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            i = self._buf.find(b"\n")
            if i >= 0:
                line = bytes(self._buf[:i])
                del self._buf[:i + 1]
                if line.endswith(b"\r"):
                    line = line[:-1]
                with self._lock:
                    self.lines.append(line)
                return line
            if not self._recv(deadline):
                return None

    def _recv(self, deadline: float | None) -> bool:
        if self.peer_closed.is_set() or self.closed_by_us:
            return False
        try:
            if deadline is not None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self.sock.settimeout(remaining)
            else:
                self.sock.settimeout(None)
            data = self.sock.recv(65536)
        except socket.timeout:
            return False
        except OSError:
            self.peer_closed.set()
            return False
        if not data:
            self.peer_closed.set()
            return False
        with self._lock:
            self.raw += data
        self._buf += data
        return True

    def wait_closed(self, timeout: float) -> bool:
        """Read (and record) until the peer closes; True if it did in time."""
        deadline = time.monotonic() + timeout
        while not self.peer_closed.is_set():
            if self.closed_by_us or time.monotonic() >= deadline:
                return False
            self._recv(deadline)
            # Keep complete lines recorded even though nobody asks for them.
            while True:
                i = self._buf.find(b"\n")
                if i < 0:
                    break
                line = bytes(self._buf[:i]).rstrip(b"\r")
                del self._buf[:i + 1]
                with self._lock:
                    self.lines.append(line)
        return True

    def stall(self, timeout: float = 30.0) -> None:
        """Say nothing; return when the peer closes (or after `timeout`)."""
        self.wait_closed(timeout)

    # ------------------------------------------------------------ writing
    def send(self, data: bytes) -> bool:
        """False if the peer is gone."""
        try:
            self.sock.settimeout(60)
            self.sock.sendall(data)
        except OSError:
            self.send_failed.set()
            self._drain()
            return False
        self.bytes_sent += len(data)
        return True

    def _drain(self) -> None:
        """After a failed write: record whatever the peer sent before it went away
        (so that, e.g., a QUIT sent just before a close is not missed)."""
        self.wait_closed(0.3)
        self.peer_closed.set()

    def send_line(self, line: bytes | str) -> bool:
        if isinstance(line, str):
            line = line.encode()
        return self.send(line + CRLF)

    def close(self) -> None:
        self.closed_by_us = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()

    # ------------------------------------------------------------ record
    @property
    def commands(self) -> list[bytes]:
        """Received lines (commands and SASL data), in order."""
        with self._lock:
            return list(self.lines)

    @property
    def verbs(self) -> list[bytes]:
        return [ln.split(b" ", 1)[0].upper() for ln in self.commands if ln]

    @property
    def got_quit(self) -> bool:
        return b"QUIT" in self.verbs


Override = Callable[[FakeConn, bytes, list], object]


@dataclass
class Pop3Script:
    """A correct little POP3 server, with per-command overrides.

    messages: message contents (CRLF lines, un-stuffed), numbered from 1.
    raw_bodies: message number -> exact bytes to send after "+OK" for RETR,
      terminator included (for malformed or hostile bodies).
    overrides: upper-case verb -> fn(conn, line, args) returning STOP, or
      HANDLED (None) after answering; the override replaces the normal answer.
    greeting: the first line (None: send none, wait for the peer to close).
    """

    messages: list[bytes] = field(default_factory=lambda: [message(300, "one"), message(500, "two")])
    raw_bodies: dict[int, bytes] = field(default_factory=dict)
    overrides: dict[str, Override] = field(default_factory=dict)
    greeting: bytes | None = b"+OK fake POP3 ready <1896.697170952@fake.example>"
    users: dict[str, str] | None = None  # None: any user and password
    after_login: Callable[[FakeConn], object] | None = None  # runs after +OK to PASS/AUTH

    def __call__(self, conn: FakeConn) -> None:
        if self.greeting is None:
            conn.stall()
            return
        if not conn.send_line(self.greeting):
            return
        deleted: set[int] = set()
        user = None
        while True:
            line = conn.read_line(timeout=60)
            if line is None:
                return
            words = line.split()
            verb = words[0].upper().decode("latin-1") if words else ""
            args = words[1:]
            override = self.overrides.get(verb)
            if override is not None:
                if override(conn, line, args) is STOP:
                    return
                continue
            if verb == "USER" and len(args) == 1:
                user = args[0].decode("latin-1")
                conn.send_line(b"+OK user accepted")
            elif verb == "PASS":
                password = line[5:].decode("latin-1")
                if self.users is not None and self.users.get(user or "") != password:
                    conn.send_line(b"-ERR [AUTH] invalid credentials")
                else:
                    conn.send_line(b"+OK logged in")
                    if self.after_login:
                        if self.after_login(conn) is STOP:
                            return
            elif verb == "APOP" and len(args) == 2:
                conn.send_line(b"+OK logged in")
                if self.after_login and self.after_login(conn) is STOP:
                    return
            elif verb == "AUTH":
                if not self._auth(conn, args):
                    return
            elif verb == "STAT":
                live = self._live(deleted)
                conn.send_line(f"+OK {len(live)} {sum(len(m) for _, m in live)}")
            elif verb == "LIST" and not args:
                live = self._live(deleted)
                body = b"".join(f"{n} {len(m)}\r\n".encode() for n, m in live)
                conn.send(f"+OK {len(live)} messages\r\n".encode() + stuff(body))
            elif verb == "LIST":
                n = self._number(args[0], deleted)
                conn.send_line(f"+OK {n} {len(self.messages[n - 1])}" if n else "-ERR no such message")
            elif verb == "UIDL" and not args:
                live = self._live(deleted)
                body = b"".join(f"{n} uid{n}\r\n".encode() for n, _ in live)
                conn.send(b"+OK\r\n" + stuff(body))
            elif verb == "UIDL":
                n = self._number(args[0], deleted)
                conn.send_line(f"+OK {n} uid{n}" if n else "-ERR no such message")
            elif verb in ("RETR", "TOP") and args:
                n = self._number(args[0], deleted)
                if not n:
                    conn.send_line(b"-ERR no such message")
                elif verb == "RETR" and n in self.raw_bodies:
                    conn.send(b"+OK message follows\r\n" + self.raw_bodies[n])
                else:
                    data = self.messages[n - 1]
                    if verb == "TOP":
                        head, _, body = data.partition(b"\r\n\r\n")
                        k = int(args[1]) if len(args) > 1 else 0
                        data = head + b"\r\n\r\n" + b"".join(
                            ln + CRLF for ln in body.split(CRLF)[:k] if ln or k)
                    conn.send(f"+OK {len(data)} octets\r\n".encode() + stuff(data))
            elif verb == "DELE" and args:
                n = self._number(args[0], deleted)
                if n:
                    deleted.add(n)
                    conn.send_line(f"+OK message {n} deleted")
                else:
                    conn.send_line(b"-ERR no such message")
            elif verb == "NOOP":
                conn.send_line(b"+OK")
            elif verb == "RSET":
                deleted.clear()
                conn.send_line(b"+OK")
            elif verb == "CAPA":
                conn.send(b"+OK capability list follows\r\n"
                          + stuff(b"USER\r\nUIDL\r\nTOP\r\nSASL PLAIN\r\nRESP-CODES\r\n"))
            elif verb == "QUIT":
                conn.send_line(b"+OK bye")
                return
            else:
                conn.send_line(b"-ERR unknown command")

    def _live(self, deleted: set[int]) -> list[tuple[int, bytes]]:
        return [(i + 1, m) for i, m in enumerate(self.messages) if i + 1 not in deleted]

    def _number(self, arg: bytes, deleted: set[int]) -> int:
        try:
            n = int(arg)
        except ValueError:
            return 0
        return n if 1 <= n <= len(self.messages) and n not in deleted else 0

    def _auth(self, conn: FakeConn, args: list) -> bool:
        """AUTH PLAIN (RFC 4616, RFC 5034): initial response or one '+ ' challenge.
        False when the connection is gone."""
        if not args:
            return conn.send(b"+OK\r\n" + stuff(b"PLAIN\r\n"))
        if args[0].upper() != b"PLAIN":
            return conn.send_line(b"-ERR unsupported mechanism")
        if len(args) > 1:
            payload = args[1]
        else:
            conn.send_line(b"+ ")
            payload = conn.read_line(timeout=60)
            if payload is None:
                return False
        if payload == b"*":
            return conn.send_line(b"-ERR authentication cancelled")
        try:
            parts = base64.b64decode(payload, validate=True).split(b"\0")
        except ValueError:
            return conn.send_line(b"-ERR bad base64")
        if len(parts) != 3:
            return conn.send_line(b"-ERR bad PLAIN message")
        ok = conn.send_line(b"+OK logged in")
        if ok and self.after_login and self.after_login(conn) is STOP:
            return False
        return ok


class FakePop3:
    """Listens on 127.0.0.1:0; runs one script per accepted connection.

    accept=False: listen with a minimal backlog and never accept; fill_backlog()
    then occupies the queue, so further connects are not completed (a server that
    never accepts).
    """

    def __init__(self, scripts: list[Callable[[FakeConn], object]] | None = None,
                 default: Callable[[FakeConn], object] | None = None, accept: bool = True):
        self.scripts = list(scripts or [])
        self.default = default if default is not None else Pop3Script()
        self.connections: list[FakeConn] = []
        self._cond = threading.Condition()
        self._closed = False
        self._fillers: list[socket.socket] = []
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(256 if accept else 0)
        self.host, self.port = self.lsock.getsockname()
        if accept:
            threading.Thread(target=self._accept_loop, daemon=True).start()

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def _accept_loop(self) -> None:
        while True:
            try:
                sock, _ = self.lsock.accept()
            except OSError:
                return
            with self._cond:
                if self._closed:
                    sock.close()
                    return
                conn = FakeConn(sock, len(self.connections))
                script = self.scripts[conn.index] if conn.index < len(self.scripts) else self.default
                self.connections.append(conn)
                self._cond.notify_all()
            threading.Thread(target=self._run, args=(conn, script), daemon=True).start()

    def _run(self, conn: FakeConn, script) -> None:
        try:
            script(conn)
        except BaseException as e:  # recorded for the test to report
            conn.error = e
        finally:
            # Record whatever the peer still sends (a late QUIT would show here),
            # briefly, then close our side.
            if not (conn.peer_closed.is_set() or conn.send_failed.is_set() or conn.closed_by_us):
                conn.wait_closed(0.2)
            conn.close()
            conn.finished.set()

    def fill_backlog(self, count: int = 8) -> None:
        """Occupy the accept queue of a non-accepting fake (non-blocking connects;
        the ones beyond the queue stay pending)."""
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            try:
                s.connect((self.host, self.port))
            except BlockingIOError:
                pass
            self._fillers.append(s)
        time.sleep(0.2)

    def wait_connections(self, n: int, timeout: float = 5.0) -> list[FakeConn]:
        with self._cond:
            if not self._cond.wait_for(lambda: len(self.connections) >= n, timeout):
                raise TimeoutError(f"fake upstream: {len(self.connections)} connection(s), "
                                   f"expected {n}")
            return list(self.connections)

    def conn(self, index: int, timeout: float = 5.0) -> FakeConn:
        return self.wait_connections(index + 1, timeout)[index]

    def close(self) -> None:
        with self._cond:
            self._closed = True
        try:
            self.lsock.close()
        except OSError:
            pass
        for s in self._fillers:
            s.close()
        for c in list(self.connections):
            c.close()

    def __enter__(self) -> "FakePop3":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
