"""A private ClamAV clamd for tests, and a fake one for what a real clamd won't do.

    with Clamd() as cd:                      # starts it, waits for PING -> PONG
        ... INSTREAM to cd.address ("127.0.0.1:PORT") or cd.socket_path ...
    # stopped (SIGTERM to its PID) and its directory removed

clamd (Debian package ``clamav-daemon``) runs in the foreground (``Foreground yes``) as a
child of the test process, from a clamd.conf written into its own temporary directory:
TCP on 127.0.0.1 and a port picked at run time, and/or a unix socket in that directory,
and a database directory holding one signature file written here, an EICAR signature
(``popgate-test.ndb``: a body pattern, so it matches the test string wherever clamd's mail
parser finds it, in a plain body or a base64 attachment it decodes). Nothing is
downloaded and /etc/clamav, /var/lib/clamav are never read. clamd reports it as
``Popgate.Test.EICAR.UNOFFICIAL`` (clamd appends ``.UNOFFICIAL`` to a signature that is
not from ClamAV's own databases): :data:`VIRUS_NAME`.

``StreamMaxLength`` (default 1M here, 25M in clamd) is small, so a test can reach clamd's
"INSTREAM size limit exceeded" without sending 25 MiB. ``LogClean yes``: clamd's log has a
line for every stream it scanned (``cd.scans()``, ``cd.wait_for_scans(n)``), clean or not.

:class:`FakeClamd` accepts connections and stalls (never answers) or answers what it is
told: the slow and garbled clamd a real one can't be made to be on demand.
"""

from __future__ import annotations

import base64
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from .dovecot import free_port
from .service import PrivateService

CLAMD_BIN = os.environ.get("CLAMD_BIN", "/usr/sbin/clamd")

# The EICAR anti-virus test file (eicar.org): 68 bytes every scanner reports.
EICAR = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
SIGNATURE_NAME = "Popgate.Test.EICAR"
VIRUS_NAME = SIGNATURE_NAME + ".UNOFFICIAL"


def eicar_ndb() -> str:
    """A one-line ClamAV body signature (NAME:TARGET:OFFSET:HEX): target 0 (any file),
    offset * (anywhere), the EICAR string in hex."""
    return f"{SIGNATURE_NAME}:0:*:{EICAR.hex()}\n"


class ClamdError(RuntimeError):
    pass


# -- messages -------------------------------------------------------------------------

def _crlf(*lines: str | bytes) -> bytes:
    out = [line.encode() if isinstance(line, str) else line for line in lines]
    return b"\r\n".join(out) + b"\r\n"


def _head(subject: str, msgid: str, *extra: str) -> list[str]:
    return ["From: Sender <sender@example.org>", "To: Dave <dave@example.org>",
            f"Subject: {subject}", "Date: Tue, 14 Nov 2023 10:00:00 +0000",
            f"Message-ID: <{msgid}@popgate.test>", *extra]


def eicar_plain_message(msgid: str = "eicar-plain") -> bytes:
    """The EICAR string as a line of a plain-text body."""
    return _crlf(*_head("plain eicar", msgid), "", "Hello,", "", EICAR, "", "Bye.")


def eicar_attachment_message(msgid: str = "eicar-attached", filename: str = "eicar.com") -> bytes:
    """A multipart/mixed message whose second part is the EICAR file, base64-encoded (so
    the string itself is nowhere in the message's bytes)."""
    encoded = base64.encodebytes(EICAR).decode().strip().splitlines()
    return _crlf(*_head("invoice attached", msgid, "MIME-Version: 1.0",
                        'Content-Type: multipart/mixed; boundary="=-=-b0undary-=-="'),
                 "", "This is a multi-part message in MIME format.",
                 "--=-=-b0undary-=-=", "Content-Type: text/plain; charset=us-ascii", "",
                 "Please find the invoice attached.", "",
                 "--=-=-b0undary-=-=",
                 f'Content-Type: application/octet-stream; name="{filename}"',
                 "Content-Transfer-Encoding: base64",
                 f'Content-Disposition: attachment; filename="{filename}"', "",
                 *encoded, "--=-=-b0undary-=-=--")


def clean_message(msgid: str = "clean", body_lines: int = 3) -> bytes:
    """An ordinary message; dot-leading lines included (they are stuffed on the wire)."""
    body = [f"line {i}: nothing to see here" for i in range(body_lines)]
    return _crlf(*_head("lunch on thursday", msgid), "", "Hi Dave,", ".a leading dot",
                 *body, "..", "Bob")


def padded(message: bytes, size: int) -> bytes:
    """`message` with body lines appended until it is at least `size` bytes."""
    line = b"padding " + b"x" * 70 + b"\r\n"
    missing = max(0, size - len(message))
    return message + line * (missing // len(line) + 1)


# -- talking to a clamd ---------------------------------------------------------------

def _connect(target: tuple[str, int] | str | os.PathLike, timeout: float) -> socket.socket:
    if isinstance(target, tuple):
        return socket.create_connection(target, timeout=timeout)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(os.fspath(target))
    except BaseException:
        sock.close()
        raise
    return sock


def _answer(sock: socket.socket) -> bytes:
    data = b""
    while True:
        try:
            chunk = sock.recv(4096)
        except ConnectionResetError:
            # clamd closed with chunks of ours unread (its size limit): on a unix socket
            # that resets the connection after its answer.
            if data:
                return data
            raise
        if not chunk:
            return data
        data += chunk


def ping(target: tuple[str, int] | str | os.PathLike, timeout: float = 2.0) -> bool:
    """Whether a clamd at (host, port) or a socket path answers zPING with PONG."""
    try:
        with _connect(target, timeout) as sock:
            sock.sendall(b"zPING\0")
            return _answer(sock) == b"PONG\0"
    except OSError:
        return False


def instream(target: tuple[str, int] | str | os.PathLike, data: bytes,
             timeout: float = 30.0) -> str:
    """clamd's answer to INSTREAM of `data` ("stream: OK", "stream: NAME FOUND", ...),
    straight from the test, to compare with what the plugin makes of it."""
    with _connect(target, timeout) as sock:
        sock.sendall(b"zINSTREAM\0")
        try:
            for start in range(0, len(data), 65536):
                piece = data[start:start + 65536]
                sock.sendall(struct.pack(">I", len(piece)) + piece)
            sock.sendall(struct.pack(">I", 0))
        except OSError:
            pass  # clamd refused the rest; its answer says why
        return _answer(sock).rstrip(b"\0").decode()


# -- the real clamd -------------------------------------------------------------------

class Clamd(PrivateService):
    """A clamd on 127.0.0.1:port and/or a unix socket (after start()).

    tcp, unix_socket:   which sockets it listens on (at least one).
    port:               fixed TCP port instead of one picked at start.
    stream_max_length:  clamd's StreamMaxLength ("1M", "100K", bytes).
    extra_conf:         lines appended to clamd.conf.
    start_timeout:      how long start() waits for PONG.

    :meth:`stop` and :meth:`start` again reuse the port and the socket path, for "clamd
    went away and came back" tests.
    """

    def __init__(self, *, tcp: bool = True, unix_socket: bool = True, port: int | None = None,
                 host: str = "127.0.0.1", stream_max_length: str = "1M",
                 extra_conf: str = "", start_timeout: float = 60.0):
        if not tcp and not unix_socket:
            raise ClamdError("clamd needs a TCP or a unix socket")
        self.tcp = tcp
        self.unix_socket = unix_socket
        self.host = host
        self.port: int | None = port
        self.stream_max_length = stream_max_length
        self.extra_conf = extra_conf
        self.start_timeout = start_timeout
        self.dir: Path | None = None
        self.proc: subprocess.Popen | None = None
        self._stderr = None
        self.start_seconds: float | None = None

    # ------------------------------------------------------------ paths
    @property
    def address(self) -> str:
        if not self.tcp:
            raise ClamdError("this clamd has no TCP socket (tcp=True)")
        return f"{self.host}:{self.port}"

    @property
    def socket_path(self) -> Path:
        if not self.unix_socket:
            raise ClamdError("this clamd has no unix socket (unix_socket=True)")
        return self.dir / "clamd.sock"

    @property
    def conf_path(self) -> Path:
        return self.dir / "clamd.conf"

    @property
    def log_path(self) -> Path:
        return self.dir / "clamd.log"

    @property
    def log(self) -> str:
        text = ""
        for path in (self.log_path, self.dir / "clamd.stderr"):
            try:
                text += path.read_text(errors="replace")
            except OSError:
                pass
        return text

    def scans(self) -> list[str]:
        """clamd's log lines for the streams it scanned ("...: OK", "...: NAME FOUND")."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return []
        return re.findall(r"^.*instream\(.*$", text, re.MULTILINE)

    def wait_for_scans(self, count: int, timeout: float = 10.0) -> list[str]:
        """scans() once it has at least `count` lines (clamd logs after it answers)."""
        deadline = time.monotonic() + timeout
        while len(found := self.scans()) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"clamd logged {len(found)} scans, not {count}, within "
                                   f"{timeout}s; log tail:\n{self.log[-2000:]}")
            time.sleep(0.05)
        return found

    def _target(self) -> tuple[str, int] | Path:
        return (self.host, self.port) if self.tcp else self.socket_path

    # ------------------------------------------------------------ lifecycle
    def config_text(self) -> str:
        lines = [
            "# Written by pgtest.clamd: private, offline, one EICAR signature.",
            "Foreground yes",
            f"PidFile {self.dir / 'clamd.pid'}",
            f"LogFile {self.log_path}",
            "LogTime yes",
            "LogClean yes",
            f"DatabaseDirectory {self.dir / 'db'}",
            f"StreamMaxLength {self.stream_max_length}",
            "SelfCheck 0",          # no reload checks during a test
            "MaxThreads 4",
        ]
        if self.tcp:
            lines += [f"TCPSocket {self.port}", f"TCPAddr {self.host}"]
        if self.unix_socket:
            lines += [f"LocalSocket {self.socket_path}", "LocalSocketMode 666"]
        return "\n".join(lines) + "\n" + self.extra_conf + "\n"

    def _prepare_dir(self) -> None:
        if self.dir is None:
            self.dir = Path(tempfile.mkdtemp(prefix="pgtest-clamd-"))
        db = self.dir / "db"
        db.mkdir(exist_ok=True)
        (db / "popgate-test.ndb").write_text(eicar_ndb())
        os.chmod(self.dir, 0o755)

    def start(self) -> "Clamd":
        if self.alive():
            raise ClamdError("clamd is already running")
        if not os.access(CLAMD_BIN, os.X_OK):
            raise ClamdError(f"clamd not found at {CLAMD_BIN} (Debian package clamav-daemon)")
        self._prepare_dir()
        fixed = self.port is not None or not self.tcp
        last = ""
        for _ in range(1 if fixed else 3):
            if self.tcp and not fixed:
                self.port = free_port(self.host)
            if self._start_once():
                return self
            last = self.log[-3000:]
            if "in use" not in last:
                break
        raise ClamdError(f"clamd did not start; log:\n{last}")

    def _start_once(self) -> bool:
        if self.unix_socket and self.socket_path.exists():
            self.socket_path.unlink()
        self.conf_path.write_text(self.config_text())
        self._stderr = open(self.dir / "clamd.stderr", "ab")
        begin = time.monotonic()
        self.proc = subprocess.Popen([CLAMD_BIN, "-c", str(self.conf_path)],
                                     stdin=subprocess.DEVNULL, stdout=self._stderr,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        deadline = begin + self.start_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self._reap()
                return False
            if ping(self._target(), timeout=1.0) and (
                    not self.unix_socket or not self.tcp or ping(self.socket_path, 1.0)):
                self.start_seconds = time.monotonic() - begin
                return True
            time.sleep(0.05)
        self.stop()
        raise ClamdError(f"clamd did not answer PING within {self.start_timeout} s; "
                         f"log:\n{self.log[-3000:]}")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM to clamd's PID, wait; SIGKILL to its process group if it has not gone
        within `timeout`. Idempotent. Afterwards a connection is refused (TCP) or finds
        no socket (clamd removes its LocalSocket on exit; removed here if it didn't)."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait(timeout=10)
        self._reap()
        if self.unix_socket and self.dir is not None and self.socket_path.exists():
            self.socket_path.unlink()

    def _reap(self) -> None:
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    def cleanup(self) -> None:
        if self.dir is not None and not os.environ.get("PGTEST_KEEP"):
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None


# -- a fake clamd ---------------------------------------------------------------------

class FakeClamd:
    """Listens on 127.0.0.1:port; each connection reads what it is sent and then, with
    ``answer=None``, stalls: it never answers and never closes (until stop()), the clamd
    that hangs. With ``answer=b"..."`` it sends those bytes once the stream's zero-length
    end has come (or at once for any other command) and closes: a garbled clamd. With
    ``read=False`` it never reads either, so a sender's buffers fill and its sends block.
    ``connections`` counts the connections it got, ``closed`` those the peer closed."""

    def __init__(self, answer: bytes | None = None, host: str = "127.0.0.1",
                 read: bool = True):
        self.answer = answer
        self.read = read
        self.closed = 0
        self.host = host
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((host, 0))
        self._listener.listen(16)
        self.port: int = self._listener.getsockname()[1]
        self.connections = 0
        self._open: list[socket.socket] = []
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="fake-clamd", daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def _serve(self) -> None:
        while not self._stopping.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            self._open.append(conn)
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        if not self.read:
            self._stopping.wait()
            return
        data = b""
        try:
            while not self._stopping.is_set():
                chunk = conn.recv(65536)
                if not chunk:
                    self.closed += 1
                    return
                data += chunk
                if self.answer is not None and self._complete(data):
                    conn.sendall(self.answer)
                    conn.close()
                    return
                if len(data) > (1 << 20):
                    data = data[-(1 << 16):]  # a stall keeps reading; keep memory bounded
        except ConnectionResetError:
            self.closed += 1
        except OSError:
            return

    @staticmethod
    def _complete(data: bytes) -> bool:
        """The request is whole: a command other than INSTREAM, or INSTREAM up to its
        zero-length chunk."""
        if not data.startswith(b"zINSTREAM\0"):
            return b"\0" in data
        at = len(b"zINSTREAM\0")
        while at + 4 <= len(data):
            (size,) = struct.unpack(">I", data[at:at + 4])
            if size == 0:
                return True
            at += 4 + size
        return False

    def stop(self) -> None:
        self._stopping.set()
        try:
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the accept() (close doesn't)
        except OSError:
            pass
        self._listener.close()
        for conn in self._open:
            try:
                conn.close()
            except OSError:
                pass
        self._thread.join(5)

    def __enter__(self) -> "FakeClamd":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
