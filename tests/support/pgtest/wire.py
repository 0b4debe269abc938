"""Byte-level POP3 helpers: a raw client that knows response framing, and a
recording TCP relay to watch (and hold back) what crosses a connection."""

from __future__ import annotations

import socket
import threading
import time

CRLF = b"\r\n"
TERMINATOR = b"\r\n.\r\n"


def is_multiline(command: bytes) -> bool:
    """Whether a +OK answer to `command` has a multi-line body (RFC 1939,
    RFC 2449): RETR, TOP, CAPA, and LIST/UIDL/AUTH without an argument
    (AUTH alone lists mechanisms, a common extension)."""
    words = command.strip().split()
    if not words:
        return False
    verb = words[0].upper()
    if verb in (b"RETR", b"TOP", b"CAPA"):
        return True
    if verb in (b"LIST", b"UIDL", b"AUTH"):
        return len(words) == 1
    return False


def split_commands(data: bytes) -> list[bytes]:
    """Complete command lines (without CRLF) in a client byte stream."""
    return [line.rstrip(b"\r") for line in data.split(b"\n")[:-1]]


def stuff(data: bytes) -> bytes:
    """Wire-form data (CRLF lines) -> multi-line body with dot-stuffing and
    the terminating '.' line."""
    if not data.endswith(CRLF):
        raise ValueError("data must end with CRLF")
    lines = data[:-2].split(CRLF)
    return b"".join((b"." + ln if ln.startswith(b".") else ln) + CRLF for ln in lines) + b".\r\n"


def unstuff(body: bytes) -> bytes:
    """Multi-line response body (after the status line, with the final
    '.' CRLF line) -> the data it carries, CRLF line ends, dots removed."""
    if not body.endswith(b".\r\n"):
        raise ValueError("not a complete multi-line body")
    lines = body[:-3].split(CRLF)
    assert lines[-1] == b""
    return b"".join((ln[1:] if ln.startswith(b".") else ln) + CRLF for ln in lines[:-1])


class RawPop3:
    """A POP3 connection that returns exact bytes.

    source_address: (host, port) to bind the client socket to first (e.g.
    ("127.0.0.2", 0) to connect from another loopback address).
    tls_context: an ssl.SSLContext for implicit TLS (POP3S): the handshake
    comes before the greeting. start_tls() upgrades a plaintext connection
    after STLS. A TLS peer that closes without close_notify reads as a plain
    EOF here (Python's suppress_ragged_eofs)."""

    def __init__(self, host: str, port: int, timeout: float = 15.0, *,
                 source_address: tuple[str, int] | None = None, tls_context=None,
                 server_hostname: str | None = None):
        self.sock = socket.create_connection((host, port), timeout=timeout,
                                             source_address=source_address)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        if tls_context is not None:
            self.sock = tls_context.wrap_socket(self.sock, server_hostname=server_hostname)
        self.greeting = self.read_line()

    def start_tls(self, context, server_hostname: str | None = None) -> None:
        """TLS handshake on the connection as it is (after `+OK` to STLS).
        Fails if bytes are buffered that arrived before the handshake: they
        would be protocol data that TLS does not protect."""
        if self.buf:
            raise AssertionError(f"bytes received before the TLS handshake: {bytes(self.buf)!r}")
        self.sock = context.wrap_socket(self.sock, server_hostname=server_hostname)

    # ------------------------------------------------------------ reading
    def _fill(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError(f"connection closed; unread: {bytes(self.buf)[:200]!r}")
        self.buf += data

    def read_line(self) -> bytes:
        """One line including its CRLF."""
        while True:
            i = self.buf.find(b"\n")
            if i >= 0:
                line = bytes(self.buf[:i + 1])
                del self.buf[:i + 1]
                return line
            self._fill()

    def read_response(self, multiline: bool) -> bytes:
        """One response, status line and (for +OK on a multi-line command)
        the body through its terminating '.' line, as raw bytes."""
        status = self.read_line()
        if not (multiline and status.startswith(b"+OK")):
            return status
        out = bytearray(status)
        while True:
            line = self.read_line()
            out += line
            if line == b".\r\n":
                return bytes(out)

    def read_responses(self, commands: list[bytes]) -> bytes:
        return b"".join(self.read_response(is_multiline(c)) for c in commands)

    def read_available(self, wait: float = 0.3) -> bytes:
        """Whatever arrives within `wait` seconds (for asserting silence)."""
        self.sock.settimeout(wait)
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    break
                self.buf += data
        except (socket.timeout, BlockingIOError):
            pass
        finally:
            self.sock.settimeout(15.0)
        out = bytes(self.buf)
        self.buf.clear()
        return out

    # ------------------------------------------------------------ writing
    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send_in_pieces(self, data: bytes, cuts: list[int] | None = None, pause: float = 0.02) -> None:
        """Send `data` cut at the given offsets (default: every byte), pausing
        between pieces so that they arrive as separate segments."""
        if cuts is None:
            cuts = list(range(1, len(data)))
        bounds = [0, *sorted(c for c in cuts if 0 < c < len(data)), len(data)]
        for a, b in zip(bounds, bounds[1:]):
            self.sock.sendall(data[a:b])
            time.sleep(pause)

    def command(self, line: bytes | str) -> bytes:
        if isinstance(line, str):
            line = line.encode()
        self.send(line + CRLF)
        return self.read_response(is_multiline(line))

    def login(self, user: str, password: str) -> bytes:
        """USER/PASS; returns both responses; raises unless both are +OK."""
        r1 = self.command(f"USER {user}")
        r2 = self.command(f"PASS {password}")
        if not (r1.startswith(b"+OK") and r2.startswith(b"+OK")):
            raise AssertionError(f"login failed: {r1!r} {r2!r}")
        return r1 + r2

    def close(self, abort: bool = False) -> None:
        """Close; with abort, send a TCP RST instead of FIN."""
        if abort:
            import struct
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.sock.close()

    def __enter__(self) -> "RawPop3":
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def exchange(host: str, port: int, user: str, password: str, script: bytes,
             cuts: list[int] | None = None, whole: bool = True) -> bytes:
    """Log in, send `script` (several CRLF-terminated commands) in one write
    (whole=True) or cut into pieces, and return the exact response bytes."""
    with RawPop3(host, port) as c:
        out = c.login(user, password)
        if whole:
            c.send(script)
        else:
            c.send_in_pieces(script, cuts)
        return out + c.read_responses(split_commands(script))


# ---------------------------------------------------------------- relay

class RelayConnection:
    def __init__(self):
        self.c2s = bytearray()  # client -> server bytes
        self.s2c = bytearray()  # server -> client bytes
        self.c2s_chunks: list[bytes] = []
        self.client_closed = threading.Event()  # the client side sent EOF/RST
        self.server_closed = threading.Event()
        self.held_timeout = False  # a hold ended by timeout, not by the gate
        self.cond = threading.Condition()
        self._pumps_done = 0

    def pump_done(self, *socks) -> None:
        with self.cond:
            self._pumps_done += 1
            last = self._pumps_done == 2
        if last:
            for s in socks:
                s.close()


class Relay:
    """Listens on 127.0.0.1:0 and relays each connection to upstream,
    recording both directions.

    hold: optional gate(conn) -> bool. While it returns False, server->client
    bytes are held back (up to hold_timeout seconds each time); it is
    re-evaluated whenever the client sends something. Used to prove that a
    client sends a command before it has the answer to the previous one.
    """

    def __init__(self, upstream_host: str, upstream_port: int, hold=None, hold_timeout: float = 3.0):
        self.upstream = (upstream_host, upstream_port)
        self.hold = hold
        self.hold_timeout = hold_timeout
        self.connections: list[RelayConnection] = []
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(256)
        self.host, self.port = self.lsock.getsockname()
        self._stop = False
        self._threads: list[threading.Thread] = []
        t = threading.Thread(target=self._accept_loop, daemon=True)
        t.start()
        self._threads.append(t)

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def _accept_loop(self) -> None:
        while not self._stop:
            try:
                csock, _ = self.lsock.accept()
            except OSError:
                return
            try:
                ssock = socket.create_connection(self.upstream, timeout=10)
            except OSError:
                csock.close()
                continue
            ssock.settimeout(None)
            for s in (csock, ssock):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn = RelayConnection()
            self.connections.append(conn)
            for target in (self._pump_c2s, self._pump_s2c):
                t = threading.Thread(target=target, args=(conn, csock, ssock), daemon=True)
                t.start()
                self._threads.append(t)

    def _pump_c2s(self, conn: RelayConnection, csock, ssock) -> None:
        try:
            while True:
                data = csock.recv(65536)
                if not data:
                    break
                with conn.cond:
                    conn.c2s += data
                    conn.c2s_chunks.append(data)
                    conn.cond.notify_all()
                ssock.sendall(data)
        except OSError:
            pass
        finally:
            with conn.cond:
                conn.client_closed.set()
                conn.cond.notify_all()
            try:
                ssock.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            conn.pump_done(csock, ssock)

    def _pump_s2c(self, conn: RelayConnection, csock, ssock) -> None:
        try:
            while True:
                data = ssock.recv(65536)
                if not data:
                    break
                if self.hold is not None:
                    with conn.cond:
                        if not self.hold(conn):
                            released = conn.cond.wait_for(
                                lambda: self.hold(conn) or conn.client_closed.is_set(),
                                self.hold_timeout)
                            if not released:
                                conn.held_timeout = True
                conn.s2c += data
                csock.sendall(data)
        except OSError:
            pass
        finally:
            conn.server_closed.set()
            try:
                csock.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            conn.pump_done(csock, ssock)

    def close(self) -> None:
        self._stop = True
        self.lsock.close()

    def __enter__(self) -> "Relay":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
