"""A private rspamd for tests, and a fake one for what the real one can't do on demand.

    with Rspamd() as rs:                     # starts it, waits for GET /ping -> pong
        ... POST to rs.url + "/checkv2" ...  # rs.url is "http://127.0.0.1:PORT"
    # stopped (SIGTERM to its PID) and its directory removed

rspamd (Debian package ``rspamd``, 3.4 on Debian 12) runs in the foreground (``-f``) as
a child of the test process, its normal worker on 127.0.0.1 and a port picked at run
time. Everything it touches is in one temporary directory: its own ``rspamd.conf`` (given
with ``-c``; Debian's /etc/rspamd is read only for the metric, action, group and
composite definitions), the database and run directories (``--var DBDIR``, ``--var
RUNDIR``, ``--var LOCAL_CONFDIR``), the log, and a PID file (rspamd writes none with
``-f``: "skip writing pid in no-fork mode", so this helper writes the PID it started).
As root it runs as ``_rspamd`` (``-u``/``-g``; the package makes that user), which must
be able to read the configuration and write the database directory.

Offline and fast: only the regexp and chartable C modules and the Lua rules that ship
with the package, no Lua plugin but milter_headers (so a test can compare this plugin's
X-Spamd-Result with rspamd's own), no redis, no controller, no fuzzy, no hyperscan
(pcre is enough and saves a compile of several CPU seconds), a two-line-per-TLD list of
top-level domains instead of the 9,600-entry public suffix list (its compile takes ~10
s), and DNS pointed at a closed port on 127.0.0.1, so any lookup fails at once and no
query leaves the machine. ``enable_test_patterns`` turns on rspamd's GTUBE variants for
the "add header", "rewrite subject" and "no action" actions (GTUBE itself means reject).
Start-up takes 1-3 s.

:class:`FakeRspamd` answers /checkv2 from a script, over real sockets, to test keep-alive
(rspamd 3.4's normal worker closes every connection after its answer), a stall, garbage,
and a server that drops idle connections.
"""

from __future__ import annotations

import json
import os
import pwd
import grp
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Callable

from .dovecot import free_port
from .service import PrivateService

RSPAMD_BIN = os.environ.get("RSPAMD_BIN", "/usr/bin/rspamd")
RSPAMD_USER = "_rspamd"

# rspamd's test patterns (src/libmime/message.c): GTUBE means "reject"; with
# enable_test_patterns the variants mean the other actions.
GTUBE = b"XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"
GTUBE_FOR = {
    "reject": GTUBE,
    "add header": b"Y" + GTUBE[1:],
    "rewrite subject": b"Z" + GTUBE[1:],
    "no action": b"A" + GTUBE[1:],
}

CONFIG = """\
# Written by pgtest.rspamd: one normal worker, offline, no redis, no controller.
.include "$CONFDIR/metrics.conf"
.include "$CONFDIR/actions.conf"
.include "$CONFDIR/groups.conf"
.include "$CONFDIR/composites.conf"
lua = "$RULESDIR/rspamd.lua"
modules {{ path = "${{PLUGINSDIR}}"; }}
options {{
  filters = "regexp,chartable";
  dns {{ nameserver = ["127.0.0.1:{dns_port}"]; timeout = 0.2s; retransmits = 1; }}
  enable_test_patterns = true;
  disable_hyperscan = true;
  allow_raw_input = true;
  task_timeout = 8s;
  url_tld = "{dir}/tld.dat";
  hs_cache_dir = "{dir}/db/";
  cache_file = "{dir}/db/symbols.cache";
  tempdir = "{dir}/run";
  control_socket = "{dir}/run/rspamd.sock mode=0600";
}}
logging {{ type = "console"; level = "info"; color = false; }}
worker "normal" {{
  bind_socket = "{host}:{port}";
  count = 1;
  mime = true;
}}
milter_headers {{
  use = ["x-spamd-result", "x-spam-status"];
  skip_local = false;
  skip_authenticated = false;
}}
{extra}
"""

# The top-level domains the tests' addresses use: enough for rspamd's URL and address
# parsing, in a fraction of the start-up time of the whole public suffix list.
TLDS = "com\norg\nnet\nexample\ntest\ninvalid\n"


class RspamdError(RuntimeError):
    pass


def _crlf(*lines: str | bytes) -> bytes:
    out = [line.encode() if isinstance(line, str) else line for line in lines]
    return b"\r\n".join(out) + b"\r\n"


def gtube_message(action: str = "reject", msgid: str = "gtube-1",
                  subject: str = "Test spam mail (GTUBE)") -> bytes:
    """A message (CRLF) that rspamd gives `action` ("reject", "add header",
    "rewrite subject", "no action")."""
    return _crlf(
        "From: Sender <sender@example.org>",
        "To: Alice <alice@example.org>",
        f"Subject: {subject}",
        "Date: Tue, 14 Nov 2023 10:00:00 +0000",
        f"Message-ID: <{msgid}@popgate.test>",
        "",
        "This is the GTUBE, the",
        "  Generic Test for Unsolicited Bulk Email",
        "",
        GTUBE_FOR[action],
        "",
    )


def ham_message(msgid: str = "ham-1") -> bytes:
    """An ordinary personal message that rspamd scores far below any action."""
    return _crlf(
        "From: Bob <bob@example.org>",
        "To: Alice <alice@example.org>",
        "Subject: Lunch on Thursday",
        "Date: Tue, 14 Nov 2023 10:00:00 +0000",
        f"Message-ID: <{msgid}@popgate.test>",
        "",
        "Hi Alice,",
        "",
        "shall we meet for lunch on Thursday at noon, as usual?",
        "",
        "Cheers,",
        "Bob",
    )


def free_udp_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def ping(url: str, timeout: float = 1.0) -> bool:
    """Whether rspamd's worker at `url` answers GET /ping with "pong"."""
    try:
        with urllib.request.urlopen(url + "/ping", timeout=timeout) as answer:
            return answer.read().strip() == b"pong"
    except OSError:
        return False


def check(url: str, message: bytes, headers: dict[str, str] | None = None,
          timeout: float = 30.0) -> dict:
    """rspamd's /checkv2 answer, straight (no popgate), for comparisons."""
    request = urllib.request.Request(url + "/checkv2", data=message, method="POST",
                                     headers=headers or {})
    with urllib.request.urlopen(request, timeout=timeout) as answer:
        return json.loads(answer.read())


def _group_members(pgid: int) -> list[int]:
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        if len(fields) >= 3 and int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry))
    return members


class Rspamd(PrivateService):
    """A real rspamd whose normal worker listens on 127.0.0.1:port (after start()).

    extra_conf:    UCL appended to rspamd.conf (e.g. an ``actions { ... }`` block).
    port:          a fixed port instead of one picked at start (for stop and start again).
    start_timeout: how long start() waits for /ping.
    """

    def __init__(self, *, host: str = "127.0.0.1", port: int | None = None,
                 extra_conf: str = "", start_timeout: float = 60.0):
        self.host = host
        self.port: int | None = port
        self.extra_conf = extra_conf
        self.start_timeout = start_timeout
        self.dir: Path | None = None
        self.proc: subprocess.Popen | None = None
        self._log_file = None
        self.start_seconds: float | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.dir / "rspamd.log"

    @property
    def pid_path(self) -> Path:
        return self.dir / "rspamd.pid"

    @property
    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def connections_accepted(self) -> int:
        """How many connections the normal worker has accepted (its log says each)."""
        return len(re.findall(r"rspamd_worker_body_handler: accepted connection", self.log))

    def wait_for_log(self, pattern: str, timeout: float = 10.0) -> re.Match:
        deadline = time.monotonic() + timeout
        while True:
            found = re.search(pattern, self.log)
            if found:
                return found
            if time.monotonic() > deadline:
                raise RspamdError(f"no {pattern!r} in rspamd's log:\n{self.log[-3000:]}")
            time.sleep(0.05)

    # ------------------------------------------------------------ lifecycle
    @staticmethod
    def _owner() -> tuple[int, int] | None:
        """Who rspamd's workers run as: _rspamd when started by root."""
        if os.geteuid() != 0:
            return None
        try:
            return pwd.getpwnam(RSPAMD_USER).pw_uid, grp.getgrnam(RSPAMD_USER).gr_gid
        except KeyError:
            raise RspamdError(f"no user {RSPAMD_USER} (made by Debian's rspamd package)") \
                from None

    def _prepare_dir(self) -> None:
        if self.dir is None:
            self.dir = Path(tempfile.mkdtemp(prefix="pgtest-rspamd-"))
        os.chmod(self.dir, 0o755)  # the workers read the configuration as _rspamd
        for sub in ("db", "run"):
            (self.dir / sub).mkdir(exist_ok=True)
            owner = self._owner()
            if owner is not None:
                os.chown(self.dir / sub, *owner)
        (self.dir / "tld.dat").write_text(TLDS)

    def _write_config(self) -> None:
        text = CONFIG.format(dir=self.dir, host=self.host, port=self.port,
                             dns_port=free_udp_port(self.host), extra=self.extra_conf)
        (self.dir / "rspamd.conf").write_text(text)

    def argv(self) -> list[str]:
        args = [RSPAMD_BIN, "-f", "-c", str(self.dir / "rspamd.conf"),
                "--var", f"DBDIR={self.dir / 'db'}", "--var", f"RUNDIR={self.dir / 'run'}",
                "--var", f"LOCAL_CONFDIR={self.dir}"]
        if self._owner() is not None:
            args += ["-u", RSPAMD_USER, "-g", RSPAMD_USER]
        return args

    def start(self) -> "Rspamd":
        if self.alive():
            raise RspamdError("rspamd is already running")
        if not os.access(RSPAMD_BIN, os.X_OK):
            raise RspamdError(f"rspamd not found at {RSPAMD_BIN} (Debian package 'rspamd')")
        self._prepare_dir()
        fixed = self.port is not None
        last = ""
        for _ in range(1 if fixed else 3):
            if not fixed:
                self.port = free_port(self.host)
            self._write_config()
            if self._start_once():
                return self
            last = self.log[-3000:]
            if "Address already in use" not in last:
                break
        raise RspamdError(f"rspamd did not start on {self.url}; log:\n{last}")

    def _start_once(self) -> bool:
        self._log_file = open(self.log_path, "ab")
        begin = time.monotonic()
        self.proc = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL,
                                     stdout=self._log_file, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self.pid_path.write_text(f"{self.proc.pid}\n")
        deadline = begin + self.start_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self._reap()
                return False
            if ping(self.url, timeout=1.0):
                self.start_seconds = time.monotonic() - begin
                return True
            time.sleep(0.1)
        self.stop()
        raise RspamdError(f"rspamd did not answer /ping within {self.start_timeout} s; "
                          f"log:\n{self.log[-3000:]}")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int | None:
        try:
            return int(self.pid_path.read_text())
        except (OSError, ValueError, TypeError):
            return None

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM to rspamd's main process (by its PID; it stops its workers), then
        SIGKILL to its process group for whatever is left after `timeout`. Idempotent;
        afterwards a connection to the port is refused."""
        if self.proc is None:
            return
        pgid = self.proc.pid
        deadline = time.monotonic() + timeout
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        while _group_members(pgid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if _group_members(pgid) or self.proc.poll() is None:
            try:
                os.killpg(pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(timeout=10)
        self._reap()
        if self.dir is not None:
            self.pid_path.unlink(missing_ok=True)

    def _reap(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def cleanup(self) -> None:
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None


# -- a fake rspamd ---------------------------------------------------------------------

def scan_answer(action: str = "no action", score: float = 0.0, required: float = 15.0,
                symbols: dict | None = None) -> bytes:
    """A /checkv2 answer body as rspamd writes it."""
    table = {name: {"name": name, "score": value, "metric_score": value}
             for name, value in (symbols or {"FAKE_SYMBOL": score}).items()}
    return json.dumps({"is_skipped": False, "score": score, "required_score": required,
                       "action": action, "symbols": table, "messages": {}}).encode()


class FakeRequest:
    def __init__(self, head: bytes, body: bytes):
        self.head = head
        self.body = body
        lines = head.decode("latin-1").split("\r\n")
        self.request_line = lines[0]
        self.headers = {}
        for line in lines[1:]:
            if ":" in line:
                name, value = line.split(":", 1)
                self.headers[name.strip().lower()] = value.strip()


# A script gets the connection's index (0 for the first accepted) and its request
# number on that connection (0 for the first), and returns the bytes to send back;
# None means "close the connection without answering", STALL "say nothing until the
# peer goes away".
STALL = object()
Script = Callable[[int, int, FakeRequest], "bytes | object | None"]


def http_answer(body: bytes, *, keep_alive: bool = True, status: str = "200 OK") -> bytes:
    head = (f"HTTP/1.1 {status}\r\nServer: fake-rspamd\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n"
            f"Connection: {'keep-alive' if keep_alive else 'close'}\r\n\r\n")
    return head.encode() + body


class FakeRspamd:
    """An HTTP/1.1 server on 127.0.0.1:port that answers requests from `script`, keeping
    connections open between requests unless the script says otherwise. Records each
    connection's requests (``connections``: a list per accepted connection)."""

    def __init__(self, script: Script | None = None):
        self.script: Script = script or (lambda conn, n, req: http_answer(scan_answer()))
        self.connections: list[list[FakeRequest]] = []
        self.peer_closed: list[int] = []  # connections the client closed
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._stopping = False
        self._sockets: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def requests(self) -> list[FakeRequest]:
        with self._lock:
            return [r for conn in self.connections for r in conn]

    def __enter__(self) -> "FakeRspamd":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._stopping = True
        try:
            self._listener.close()
        except OSError:
            pass
        with self._lock:
            for s in self._sockets:
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()

    def _accept_loop(self) -> None:
        while not self._stopping:
            try:
                sock, _ = self._listener.accept()
            except OSError:
                return
            with self._lock:
                index = len(self.connections)
                self.connections.append([])
                self._sockets.append(sock)
            threading.Thread(target=self._serve, args=(sock, index), daemon=True).start()

    @staticmethod
    def _read_request(sock: socket.socket, buffer: bytearray) -> FakeRequest | None:
        while b"\r\n\r\n" not in buffer:
            chunk = sock.recv(65536)
            if not chunk:
                return None
            buffer += chunk
        end = buffer.index(b"\r\n\r\n") + 4
        head = bytes(buffer[:end - 4])
        match = re.search(rb"(?im)^content-length:\s*(\d+)", head)
        length = int(match.group(1)) if match else 0
        while len(buffer) < end + length:
            chunk = sock.recv(65536)
            if not chunk:
                return None
            buffer += chunk
        body = bytes(buffer[end:end + length])
        del buffer[:end + length]
        return FakeRequest(head, body)

    def _serve(self, sock: socket.socket, index: int) -> None:
        buffer = bytearray()
        number = 0
        try:
            while True:
                request = self._read_request(sock, buffer)
                if request is None:  # the client closed it (or half-closed it)
                    with self._lock:
                        self.peer_closed.append(index)
                    return
                with self._lock:
                    self.connections[index].append(request)
                answer = self.script(index, number, request)
                number += 1
                if answer is STALL:
                    while sock.recv(65536):
                        pass
                    with self._lock:
                        self.peer_closed.append(index)
                    return
                if answer is None:
                    return
                assert isinstance(answer, bytes)
                sock.sendall(answer)
                if b"\r\nConnection: close\r\n" in answer.split(b"\r\n\r\n", 1)[0] + b"\r\n":
                    return
        except OSError:
            return
        finally:
            try:
                sock.close()
            except OSError:
                pass
