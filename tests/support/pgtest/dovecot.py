"""A private Dovecot POP3 server for tests and benchmarks.

    with Dovecot(users={"alice": "secret"}) as dc:
        dc.populate("alice", mailbox.alice_messages())
        ... connect to dc.host, dc.port ...

Each instance writes its own dovecot.conf into a temporary directory, runs
``dovecot -F -c CONF`` as a child process and keeps everything it touches
(base_dir, state_dir, logs, passwd-file, Maildirs) inside that directory, so
several instances can run side by side and /etc/dovecot and /var/run/dovecot
are never used. Mail is owned by an unprivileged user (``popgate-test``,
created with useradd when missing; ``nobody`` as a fall-back), because Dovecot
refuses to serve mail as root.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from . import mailbox as mb

DOVECOT_BIN = os.environ.get("DOVECOT_BIN", "/usr/sbin/dovecot")
MAIL_USER = "popgate-test"


def free_port(host: str = "127.0.0.1") -> int:
    """A port the kernel considers free right now (bind port 0, read, close)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def mail_owner() -> tuple[int, int]:
    """uid/gid that owns test mail: popgate-test (created if missing), else nobody."""
    try:
        pw = pwd.getpwnam(MAIL_USER)
    except KeyError:
        if os.geteuid() == 0:
            subprocess.run(
                ["useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent",
                 "--shell", "/usr/sbin/nologin", "--user-group", MAIL_USER],
                check=False, capture_output=True)
        try:
            pw = pwd.getpwnam(MAIL_USER)
        except KeyError:
            pw = pwd.getpwnam("nobody")
    return pw.pw_uid, pw.pw_gid


class DovecotError(RuntimeError):
    pass


class Dovecot:
    """A running (after start()) Dovecot with POP3 on 127.0.0.1:port.

    users:          {name: password}; passwords are stored in plain text
                    (scheme=PLAIN) so APOP and CRAM-MD5 work.
    ssl:            False: `ssl = no` (CAPA has no STLS). True: a self-signed
                    certificate is made and STLS is offered (plaintext auth
                    stays allowed).
    ssl_cert, ssl_key: PEM files to use instead of the self-signed certificate
                    (both or neither; giving them implies ssl=True), e.g. from
                    pgtest.tlsca.TestCA.
    pop3s:          also listen for implicit TLS (POP3S) on 127.0.0.1:pop3s_port,
                    a port picked like `port` (implies ssl=True). Without it
                    the pop3s listener is off (port 0), as before.
    performance:    True: high-performance login set-up
                    (`service pop3-login { service_count = 0; process_min_avail = N }`)
                    and generous process/client limits, for benchmarks.
    login_processes: N for process_min_avail in performance mode (default: CPU count).
    auth_failure_delay: seconds Dovecot waits before answering a failed login
                    (Dovecot's default is 2; tests use 0 to stay fast; Dovecot
                    still answers failures on a 0.5 s tick).
    auth_penalty:   False (default): switch off Dovecot's per-IP penalty for
                    failed logins (`service anvil { unix_listener
                    anvil-auth-penalty { mode = 0 } }`). Every test connects from
                    127.0.0.1, and with the penalty one failed login delays
                    every later login, failed or not, by 2 to 15 s.
    extra_conf:     text appended to dovecot.conf.
    workdir:        directory to use (created; kept on stop) instead of a fresh
                    temporary one (removed on stop).
    """

    def __init__(self, users: dict[str, str] | None = None, *, host: str = "127.0.0.1",
                 port: int | None = None, ssl: bool = False,
                 ssl_cert: str | os.PathLike | None = None,
                 ssl_key: str | os.PathLike | None = None, pop3s: bool = False,
                 performance: bool = False,
                 login_processes: int | None = None, auth_failure_delay: float = 0,
                 auth_penalty: bool = False,
                 extra_conf: str = "", workdir: str | os.PathLike | None = None,
                 start_timeout: float = 20.0):
        self.users = dict(users or {})
        self.host = host
        self._fixed_port = port
        self.port: int | None = None
        if (ssl_cert is None) != (ssl_key is None):
            raise ValueError("ssl_cert and ssl_key go together")
        self.ssl_cert = Path(ssl_cert) if ssl_cert is not None else None
        self.ssl_key = Path(ssl_key) if ssl_key is not None else None
        self.pop3s = pop3s
        self.pop3s_port: int | None = None  # set by start() when pop3s
        self.ssl = ssl or pop3s or ssl_cert is not None
        self.performance = performance
        self.login_processes = login_processes or os.cpu_count() or 2
        self.auth_failure_delay = auth_failure_delay
        self.auth_penalty = auth_penalty
        self.extra_conf = extra_conf
        self.start_timeout = start_timeout
        self._own_workdir = workdir is None
        self._workdir_arg = workdir
        self.dir: Path | None = None
        self.proc: subprocess.Popen | None = None
        self.uid, self.gid = mail_owner()

    # ------------------------------------------------------------ paths
    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def pop3s_address(self) -> str:
        if not self.pop3s_port:
            raise DovecotError("this Dovecot has no pop3s listener (pop3s=True)")
        return f"{self.host}:{self.pop3s_port}"

    @property
    def conf_path(self) -> Path:
        return self.dir / "dovecot.conf"

    @property
    def log_path(self) -> Path:
        return self.dir / "dovecot.log"

    @property
    def passwd_path(self) -> Path:
        return self.dir / "passwd"

    def maildir(self, user: str) -> Path:
        return self.dir / "mail" / user

    # ------------------------------------------------------------ config
    def _write_passwd(self) -> None:
        lines = []
        for user, password in self.users.items():
            if ":" in user or ":" in password or "\n" in user + password:
                raise ValueError(f"unsupported user or password: {user!r}")
            home = self.dir / "home" / user
            lines.append(f"{user}:{{PLAIN}}{password}:{self.uid}:{self.gid}::{home}::\n")
        tmp = self.passwd_path.with_suffix(".tmp")
        tmp.write_text("".join(lines))
        tmp.chmod(0o644)  # the auth process runs as the dovecot user
        os.replace(tmp, self.passwd_path)

    def _make_cert(self) -> tuple[Path, Path]:
        cert, key = self.dir / "cert.pem", self.dir / "key.pem"
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
             "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(cert)],
            check=True, capture_output=True)
        key.chmod(0o600)
        return cert, key

    def config_text(self) -> str:
        d = self.dir
        limit = 2000 if self.performance else 1000
        ssl = "no"
        ssl_lines = ""
        if self.ssl:
            cert, key = (self.ssl_cert, self.ssl_key) if self.ssl_cert else self._make_cert()
            ssl = "yes"
            ssl_lines = f"ssl_cert = <{cert}\nssl_key = <{key}\n"
        anvil_penalty = "" if self.auth_penalty else (
            "  unix_listener anvil-auth-penalty {\n    mode = 0\n  }\n")
        pop3s_listener = "    port = 0\n"
        if self.pop3s:
            pop3s_listener = (f"    address = {self.host}\n"
                              f"    port = {self.pop3s_port}\n"
                              f"    ssl = yes\n")
        login_service = ""
        if self.performance:
            login_service = (f"  service_count = 0\n"
                             f"  process_min_avail = {self.login_processes}\n"
                             f"  client_limit = {limit}\n")
        return f"""# written by tests/support/pgtest/dovecot.py
base_dir = {d}/run
state_dir = {d}/state
instance_name = popgate-test-{self.port}
log_path = {d}/dovecot.log
info_log_path = {d}/dovecot.log
debug_log_path = {d}/dovecot.log
log_timestamp = "%Y-%m-%d %H:%M:%S "
verbose_proctitle = yes
protocols = pop3
listen = {self.host}
ssl = {ssl}
{ssl_lines}disable_plaintext_auth = no
auth_mechanisms = plain login apop cram-md5
auth_failure_delay = {self.auth_failure_delay} secs
auth_verbose = yes
default_internal_user = dovecot
default_login_user = dovenull
first_valid_uid = {self.uid}
last_valid_uid = 0
first_valid_gid = {self.gid}
mail_location = maildir:{d}/mail/%u
mail_fsync = never
default_process_limit = {limit}
default_client_limit = {limit * 4}
shutdown_clients = yes
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {self.passwd_path}
}}
userdb {{
  driver = passwd-file
  args = username_format=%u {self.passwd_path}
}}
service pop3-login {{
  inet_listener pop3 {{
    address = {self.host}
    port = {self.port}
  }}
  inet_listener pop3s {{
{pop3s_listener}  }}
{login_service}}}
service pop3 {{
  process_limit = {limit}
}}
service anvil {{
  client_limit = {limit * 4}
{anvil_penalty}}}
service auth {{
  client_limit = {limit * 4}
}}
protocol pop3 {{
  mail_max_userip_connections = {limit}
}}
{self.extra_conf}
"""

    # ------------------------------------------------------------ lifecycle
    def start(self) -> "Dovecot":
        if self.proc is not None:
            raise DovecotError("already started")
        if self._own_workdir:
            self.dir = Path(tempfile.mkdtemp(prefix="pgdc-"))
        else:
            self.dir = Path(self._workdir_arg)
            self.dir.mkdir(parents=True, exist_ok=True)
        # Login processes (dovenull), auth (dovecot) and mail processes
        # (popgate-test) all need to traverse this directory.
        self.dir.chmod(0o755)
        for sub in ("mail", "home"):
            (self.dir / sub).mkdir(exist_ok=True)
            os.chown(self.dir / sub, self.uid, self.gid)
        self._write_passwd()
        for user in self.users:
            self._ensure_user_dirs(user)

        attempts = 1 if self._fixed_port else 3
        for attempt in range(attempts):
            self.port = self._fixed_port or free_port(self.host)
            if self.pop3s:
                self.pop3s_port = free_port(self.host)
                while self.pop3s_port == self.port:
                    self.pop3s_port = free_port(self.host)
            self.conf_path.write_text(self.config_text())
            self._stderr = open(self.dir / "dovecot.stderr", "wb")
            self.proc = subprocess.Popen([DOVECOT_BIN, "-F", "-c", str(self.conf_path)],
                                         stdin=subprocess.DEVNULL, stdout=self._stderr,
                                         stderr=self._stderr, start_new_session=True)
            try:
                self._wait_ready()
                return self
            except DovecotError:
                self._kill()
                if attempt + 1 == attempts or "Address already in use" not in self.diagnostics():
                    self.stop()  # the error carries the diagnostics; remove the directory
                    raise
        raise AssertionError("unreachable")

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise DovecotError(f"dovecot exited with {self.proc.returncode}:\n{self.diagnostics()}")
            try:
                with socket.create_connection((self.host, self.port), timeout=2) as s:
                    s.settimeout(5)
                    greeting = s.recv(512)
                    if greeting.startswith(b"+OK") and self._pop3s_ready():
                        return
            except OSError:
                pass
            time.sleep(0.05)
        raise DovecotError(f"dovecot did not greet on {self.address} within "
                           f"{self.start_timeout}s:\n{self.diagnostics()}")

    def _pop3s_ready(self) -> bool:
        """True without a pop3s listener; else whether it accepts connections
        (both listeners are opened by the master before it forks, so this is
        a formality)."""
        if not self.pop3s:
            return True
        try:
            with socket.create_connection((self.host, self.pop3s_port), timeout=2):
                return True
        except OSError:
            return False

    def diagnostics(self) -> str:
        out = []
        for name in ("dovecot.stderr", "dovecot.log"):
            p = self.dir / name
            if p.exists():
                out.append(f"--- {p}\n{p.read_text(errors='replace')[-4000:]}")
        return "\n".join(out)

    def _kill(self, timeout: float = 10.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                # SIGKILL the whole process group: master and its children.
                try:
                    os.killpg(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait()
        rc = self.proc.returncode
        self.proc = None
        self._stderr.close()
        return rc

    def stop(self) -> None:
        self._kill()
        if self._own_workdir and self.dir is not None and not os.environ.get("PGTEST_KEEP"):
            shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> "Dovecot":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    # ------------------------------------------------------------ users and mail
    def _ensure_user_dirs(self, user: str) -> None:
        for p in (self.dir / "home" / user, self.maildir(user)):
            p.mkdir(parents=True, exist_ok=True)
        mb.maildir_create(self.maildir(user))
        self._chown_tree(self.dir / "home" / user)
        self._chown_tree(self.maildir(user))

    def _chown_tree(self, root: Path) -> None:
        os.chown(root, self.uid, self.gid)
        for dirpath, dirnames, filenames in os.walk(root):
            for name in dirnames + filenames:
                os.chown(os.path.join(dirpath, name), self.uid, self.gid)

    def add_user(self, user: str, password: str) -> None:
        """Add (or change) a user; Dovecot re-reads the passwd-file when it changes."""
        self.users[user] = password
        if self.dir is not None:
            self._write_passwd()
            self._ensure_user_dirs(user)

    def populate(self, user: str, messages, subdir: str = "new") -> None:
        """Append messages (mailbox.Message or bytes) to user's Maildir."""
        if user not in self.users:
            raise KeyError(f"unknown user {user!r}")
        mb.maildir_write(self.maildir(user), messages, subdir=subdir)
        self._chown_tree(self.maildir(user))

    def mail_processes(self, user: str | None = None) -> list[int]:
        """PIDs of this Dovecot's pop3 mail processes (of `user`, if given).
        A session's process still writes indexes and the UID list for a moment
        after Dovecot has logged its "Disconnected" line."""
        prefix = f"dovecot-popgate-test-{self.port}/pop3 ["
        pids = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                if ppid != self.pid:
                    continue
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    title = f.read().replace(b"\0", b" ").decode(errors="replace")
            except (OSError, IndexError, ValueError):
                continue  # gone meanwhile
            # verbose_proctitle: "dovecot-<instance>/pop3 [user ip]"
            if title.startswith(prefix) and (user is None or title[len(prefix):].startswith(f"{user} ")):
                pids.append(int(entry))
        return pids

    def wait_until_idle(self, user: str | None = None, timeout: float = 10.0) -> None:
        """Wait until no pop3 mail process (of `user`) is left."""
        deadline = time.monotonic() + timeout
        while self.mail_processes(user):
            if time.monotonic() > deadline:
                raise TimeoutError(f"pop3 processes still running after {timeout}s: "
                                   f"{self.mail_processes(user)}")
            time.sleep(0.02)

    def reset(self, user: str, messages=()) -> None:
        """Empty user's Maildir (messages, flags, UID list, indexes), then
        write `messages`. Waits for the user's sessions to end first (and
        fails if one stays open)."""
        self.wait_until_idle(user)
        path = self.maildir(user)
        shutil.rmtree(path, ignore_errors=True)
        self._ensure_user_dirs(user)
        if messages:
            self.populate(user, messages)

    def maildir_state(self, user: str) -> list[tuple[str, bytes]]:
        """(file name, content) of every message file in new/ and cur/, sorted
        by name (so in delivery order)."""
        path = self.maildir(user)
        files = []
        for sub in ("new", "cur"):
            for f in (path / sub).iterdir():
                files.append((f.name, f.read_bytes()))
        files.sort()
        return files

    def message_count(self, user: str) -> int:
        path = self.maildir(user)
        return sum(1 for sub in ("new", "cur") for _ in (path / sub).iterdir())

    # ------------------------------------------------------------ log
    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_for_log(self, pattern: str, timeout: float = 10.0, start: int = 0) -> re.Match:
        """Wait until `pattern` (a regex) appears in the log after offset `start`
        (use len(log_text()) taken earlier to look only at new lines)."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while True:
            m = rx.search(self.log_text(), start)
            if m:
                return m
            if time.monotonic() > deadline:
                raise TimeoutError(f"no log line matching {pattern!r} within {timeout}s; "
                                   f"log tail:\n{self.log_text()[-3000:]}")
            time.sleep(0.05)
