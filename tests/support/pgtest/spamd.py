"""A private SpamAssassin spamd for tests.

    with Spamd() as sd:                      # starts it, waits for PING -> PONG
        ... talk SPAMC to sd.host, sd.port (sd.address is "127.0.0.1:PORT") ...
    # stopped (SIGTERM to its PID) and its directory removed

spamd (Debian package ``spamd``) runs in the foreground as a child of the test
process, on 127.0.0.1 and a port picked at run time (optionally also on a unix
socket, ``unix_socket=True`` -> ``sd.socket_path``). Everything it touches is
in one temporary directory: the site configuration (a copy of Debian's
``/etc/spamassassin/*.pre`` plugin lists and a ``local.cf`` written here), the
helper home directory, the PID file and the log. The default rules come from
``/usr/share/spamassassin`` (or what ``-C`` points at); nothing is fetched.

Offline and deterministic: ``--local`` (no DNS or network tests), no RBLs,
no Bayes, no auto-learning, no AWL/TxRep, no per-user configuration. spamd
refuses to run as root, so as root it drops to ``debian-spamd`` (made by the
package), else ``nobody``.

Start-up compiles the rule set and takes several seconds: start one per test
session (or module) and share it. :meth:`stop` and :meth:`start` again reuse
the same port, for "spamd went away and came back" tests.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from .dovecot import free_port
from .service import PrivateService

SPAMD_BIN = os.environ.get("SPAMD_BIN", "/usr/sbin/spamd")
SITE_PRE_DIR = Path("/etc/spamassassin")

# SpamAssassin's own test string (GTUBE): any message whose body holds it scores 1000.
GTUBE = b"XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"

# Settings that keep spamd offline, fast and deterministic.
OFFLINE_CF = """\
# Written by pgtest.spamd: offline, deterministic, no learning.
dns_available no
skip_rbl_checks 1
use_bayes 0
bayes_auto_learn 0
use_razor2 0
use_pyzor 0
"""


class SpamdError(RuntimeError):
    pass


def _crlf(*lines: str | bytes) -> bytes:
    out = [line.encode() if isinstance(line, str) else line for line in lines]
    return b"\r\n".join(out) + b"\r\n"


def gtube_message(msgid: str = "gtube-1") -> bytes:
    """A complete message (CRLF line endings) whose body holds GTUBE."""
    return _crlf(
        "From: Sender <sender@example.org>",
        "To: Alice <alice@example.org>",
        "Subject: Test spam mail (GTUBE)",
        "Date: Tue, 14 Nov 2023 10:00:00 +0000",
        f"Message-ID: <{msgid}@popgate.test>",
        "",
        "This is the GTUBE, the",
        "  Generic Test for Unsolicited Bulk Email",
        "",
        GTUBE,
        "",
    )


def ham_message(msgid: str = "ham-1") -> bytes:
    """An ordinary personal message that the default rules score near 0."""
    return _crlf(
        "From: Sender <sender@example.org>",
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


def spamd_user() -> str | None:
    """The user spamd runs as when started by root (None when not root)."""
    if os.geteuid() != 0:
        return None
    for name in ("debian-spamd", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    raise SpamdError("no user for spamd to run as (debian-spamd or nobody)")


def ping(host: str, port: int, timeout: float = 2.0) -> bool:
    """Whether a spamd answers `PING SPAMC/1.5` with `SPAMD/1.5 0 PONG`."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as s:
            s.sendall(b"PING SPAMC/1.5\r\n\r\n")
            data = b""
            while b"\n" not in data:
                chunk = s.recv(256)
                if not chunk:
                    break
                data += chunk
            return data.startswith(b"SPAMD/") and b" 0 PONG" in data
    except OSError:
        return False


def _group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes in process group `pgid`, from /proc."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid pgrp ...: comm may hold spaces, so split after ')'.
        fields = stat[stat.rfind(")") + 2:].split()
        if len(fields) >= 3 and int(fields[2]) == pgid and fields[0] != "Z":
            members.append(int(entry))
    return members


class Spamd(PrivateService):
    """A spamd on 127.0.0.1:port (after start()).

    port:          fixed port instead of one picked at start.
    unix_socket:   also listen on a unix socket, ``socket_path`` (in the directory).
    max_children:  spamd's --max-children (each child checks one message at a time).
    extra_cf:      lines appended to local.cf, e.g. ``"add_header all Score _SCORE_"``
                   or ``"required_score 3.0"``.
    timeout_child: spamd's own limit on one check (--timeout-child), seconds.
    start_timeout: how long start() waits for PONG (rule compilation is slow).
    workdir:       directory to use (created, kept on stop) instead of a fresh
                   temporary one (removed by cleanup(), which the context
                   manager calls on exit).
    """

    def __init__(self, *, host: str = "127.0.0.1", port: int | None = None,
                 unix_socket: bool = False, max_children: int = 2, extra_cf: str = "",
                 timeout_child: int = 60, start_timeout: float = 120.0,
                 workdir: str | os.PathLike | None = None):
        self.host = host
        self.port: int | None = port
        self.unix_socket = unix_socket
        self.max_children = max_children
        self.extra_cf = extra_cf
        self.timeout_child = timeout_child
        self.start_timeout = start_timeout
        self._own_workdir = workdir is None
        self._workdir_arg = workdir
        self.dir: Path | None = None
        self.proc: subprocess.Popen | None = None
        self._log_file = None
        self._log_offset = 0
        self.start_seconds: float | None = None  # how long the last start() waited

    # ------------------------------------------------------------ paths
    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def socket_path(self) -> Path:
        if not self.unix_socket:
            raise SpamdError("this spamd has no unix socket (unix_socket=True)")
        return self.dir / "spamd.sock"

    @property
    def log_path(self) -> Path:
        return self.dir / "spamd.log"

    @property
    def pid_path(self) -> Path:
        return self.dir / "spamd.pid"

    @property
    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    # ------------------------------------------------------------ lifecycle
    def _prepare_dir(self) -> None:
        if self.dir is None:
            if self._own_workdir:
                self.dir = Path(tempfile.mkdtemp(prefix="pgtest-spamd-"))
            else:
                self.dir = Path(self._workdir_arg)
                self.dir.mkdir(parents=True, exist_ok=True)
        site = self.dir / "site"
        home = self.dir / "home"
        site.mkdir(exist_ok=True)
        home.mkdir(exist_ok=True)
        # The .pre files say which plugins load; without them spamd runs with almost none.
        for pre in sorted(SITE_PRE_DIR.glob("*.pre")):
            shutil.copy2(pre, site / pre.name)
        (site / "local.cf").write_text(OFFLINE_CF + self.extra_cf + "\n")
        # spamd drops to an unprivileged user: it must read the config and write
        # in its home directory.
        user = spamd_user()
        os.chmod(self.dir, 0o755)
        for p in (site, *site.iterdir()):
            os.chmod(p, 0o755 if p.is_dir() else 0o644)
        if user is not None:
            pw = pwd.getpwnam(user)
            os.chown(home, pw.pw_uid, pw.pw_gid)

    def argv(self) -> list[str]:
        args = [
            SPAMD_BIN,
            f"--listen={self.host}:{self.port}",
            f"--allowed-ips={self.host}",
            f"--pidfile={self.pid_path}",
            "--nouser-config",
            "--local",
            f"--siteconfigpath={self.dir / 'site'}",
            f"--helper-home-dir={self.dir / 'home'}",
            "--syslog=stderr",
            f"--max-children={self.max_children}",
            "--min-children=1",
            f"--timeout-child={self.timeout_child}",
        ]
        if self.unix_socket:
            args += [f"--listen={self.socket_path}", "--socketmode=0666"]
        user = spamd_user()
        if user is not None:
            args.append(f"--username={user}")
        return args

    def start(self) -> "Spamd":
        if self.proc is not None and self.proc.poll() is None:
            raise SpamdError("spamd is already running")
        if not os.access(SPAMD_BIN, os.X_OK):
            raise SpamdError(f"spamd not found at {SPAMD_BIN} (Debian package 'spamd')")
        self._prepare_dir()
        fixed = self.port is not None
        attempts = 1 if fixed else 3
        last = ""
        for _ in range(attempts):
            if not fixed:
                self.port = free_port(self.host)
            if self._start_once():
                return self
            last = self._new_log()[-3000:]
            if "Address already in use" not in last:
                break
        raise SpamdError(f"spamd did not start on {self.address}; log:\n{last}")

    def _start_once(self) -> bool:
        if self.unix_socket and self.socket_path.exists():
            self.socket_path.unlink()
        self._log_file = open(self.log_path, "ab")
        self._log_offset = self._log_file.tell()
        begin = time.monotonic()
        self.proc = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL,
                                     stdout=self._log_file, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = begin + self.start_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self._reap()
                return False
            if "Address already in use" in self._new_log():
                # spamd would retry the bind for ~10 s: give up at once, so
                # start() can pick another port.
                self.stop()
                return False
            if ping(self.host, self.port, timeout=1.0):
                self.start_seconds = time.monotonic() - begin
                return True
            time.sleep(0.1)
        self.stop()
        raise SpamdError(f"spamd did not answer PING within {self.start_timeout} s; "
                         f"log:\n{self._new_log()[-3000:]}")

    def _new_log(self) -> str:
        """The log written since the last start attempt."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self._log_offset)
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM to spamd's PID (it passes it on to its children), wait for
        it and for its children (its own process group, from
        start_new_session); SIGKILL to that group for whatever has not gone
        within `timeout`. Idempotent. Afterwards nothing listens: a connection
        to the port is refused."""
        if self.proc is None:
            return
        pgid = self.proc.pid
        deadline = time.monotonic() + timeout
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
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

    def _reap(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def cleanup(self) -> None:
        if self.dir is not None and self._own_workdir:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None
