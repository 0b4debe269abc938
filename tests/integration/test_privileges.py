"""Production operations: popgate started as root gives root up once it has bound its
listeners and opened its files (`user`, --user), and `popgate -t` checks a configuration
without binding or connecting (DESIGN.md, "Operations: the contract").

These tests run as root (the project's test machine does): binding below 1024 and the
switch itself need it. What they look at is the kernel's view of the running process,
/proc/PID/status, not popgate's own log line about it.
"""

from __future__ import annotations

import os
import poplib
import pwd
import re
import socket
import ssl
import subprocess
import tempfile
import textwrap
import time
from pathlib import Path

import pytest

from pgtest import pop3
from pgtest.dovecot import Dovecot, free_port
from pgtest.popgate import Popgate, popgate_bin
from pgtest.tlsca import TestCA

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root: binds below 1024, switches user")

NOBODY = pwd.getpwnam("nobody")
DAEMON = pwd.getpwnam("daemon")


def mail(subject: str, body: bytes) -> bytes:
    return (b"From: alice@example.org\r\nTo: dave@example.org\r\nSubject: " + subject.encode() +
            b"\r\nMessage-ID: <" + subject.replace(" ", ".").encode() + b"@example.org>\r\n\r\n" +
            body)


MESSAGES = [mail("plain note", b"Nothing to see.\r\n.leading dot\r\n"),
            mail("virus inside", b"MZ pretend executable\r\n")]

# With `report`, configure() starts a thread of its own, before popgate switches users; it
# keeps writing the ids it runs with (getresuid, getresgid) to that file.
REJECTER = """
    import os, threading, time
    import popgate

    class Guard(popgate.Plugin):
        def configure(self, options):
            report = options.get("report")
            if report:
                def watch():
                    while True:
                        with open(report, "w") as out:
                            out.write(" ".join(map(str, os.getresuid() + os.getresgid())))
                        time.sleep(0.05)
                threading.Thread(target=watch, daemon=True).start()

        def message(self, session, msg):
            if b"MZ" in msg.body:
                return popgate.reject("looks like an executable")
"""

BROKEN = """
    import popgate

    class Broken(popgate.Plugin):
        def configure(self, options):
            raise RuntimeError("configure refuses: " + options["why"])
"""


@pytest.fixture(scope="module")
def ca(tmp_path_factory):
    """A CA whose localhost key only root may read, as /etc/ssl/private keys are."""
    made = TestCA(tmp_path_factory.mktemp("ca"))
    os.chown(made.localhost.key, 0, 0)
    made.localhost.key.chmod(0o600)
    return made


def tls_listener(ca: TestCA, port: int) -> str:
    return (f'[[listen]]\naddress = "127.0.0.1:{port}"\ntls = "implicit"\n'
            f'cert = "{ca.localhost.cert}"\nkey = "{ca.localhost.key}"\n')


@pytest.fixture(scope="module")
def mailstore():
    with Dovecot(users={"dave": "pw"}) as dc:
        dc.populate("dave", MESSAGES)
        yield dc


def low_free_port(after: int = 899) -> int:
    """A port in 900-1023 (above `after`) nothing listens on now: only root may bind there."""
    for port in range(max(900, after + 1), 1024):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    pytest.fail("no free port in 900-1023")


def config_file(directory: Path, upstream: str, port: int, *, top: str = "",
                extra: str = "") -> tuple[Path, list[str]]:
    """popgate.toml in `directory`: `top` (top-level keys such as user = ...) first, as
    TOML wants them before any table; returns the file and its lines."""
    text = (top + f'[upstream]\naddress = "{upstream}"\n'
            f'[[listen]]\naddress = "127.0.0.1:{port}"\n' + extra)
    path = directory / "popgate.toml"
    path.write_text(text)
    return path, text.splitlines()


def plugin_table(path: Path, **options: str) -> str:
    return f'[[plugin]]\nuse = "{path}"\n' + "".join(f'{k} = "{v}"\n' for k, v in options.items())


def write_plugin(directory: Path, name: str, source: str) -> Path:
    path = directory / name
    path.write_text(textwrap.dedent(source))
    return path


def line_of(lines: list[str], starts: str) -> int:
    return next(n for n, line in enumerate(lines, 1) if line.startswith(starts))


def run(*args: str) -> subprocess.CompletedProcess:
    """popgate run to its end (a start-up that fails, or -t)."""
    return subprocess.run([str(popgate_bin()), *args], stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=60)


def status_ids(pid: int, task: str | None = None) -> dict[str, list[int]]:
    """Uid, Gid (real, effective, saved, fs) and Groups of a process (or one thread)."""
    where = Path(f"/proc/{pid}") / ("task/" + task if task else "")
    ids = {}
    for line in (where / "status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("Uid", "Gid", "Groups"):
            ids[name] = [int(v) for v in value.split()]
    return ids


def assert_runs_as(pid: int, account: pwd.struct_passwd) -> None:
    """Every thread of `pid`: all four uids and gids the account's, no group root's."""
    tasks = os.listdir(f"/proc/{pid}/task")
    assert len(tasks) > 1  # the I/O and worker threads are there too
    for task in tasks:
        ids = status_ids(pid, task)
        assert ids["Uid"] == [account.pw_uid] * 4, (task, ids)
        assert ids["Gid"] == [account.pw_gid] * 4, (task, ids)
        assert 0 not in ids["Groups"], (task, ids)
        assert account.pw_gid in ids["Groups"], (task, ids)


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def world_readable_dir() -> Path:
    """A fresh directory the dropped user can reach (pytest's tmp_path is root's 0700)."""
    path = Path(tempfile.mkdtemp(prefix="popgate-priv-"))
    path.chmod(0o755)
    return path


# ------------------------------------------------------------------------ the switch


def test_a_low_port_bound_as_root_is_served_as_nobody(tmp_path, mailstore):
    port = low_free_port()
    config, _ = config_file(tmp_path, mailstore.address, port, top='user = "nobody"\n')
    with Popgate.start(["-c", str(config)]) as pg:
        assert pg.port == port
        pg.wait_for_log(r"running as user nobody \(uid 65534, gid 65534\)")
        p = pop3.login(port)
        assert pop3.retr(p, 1) == MESSAGES[0]
        assert pop3.retr(p, 2) == MESSAGES[1]
        p.quit()
        assert_runs_as(pg.pid, NOBODY)
        # The listener bound as root still accepts: a second session after the first.
        p = pop3.login(port)
        assert p.stat()[0] == 2
        p.quit()
        assert "running as root" not in pg.log
        assert pg.stop() == 0


def test_a_key_only_root_may_read_serves_implicit_tls_after_the_switch(tmp_path, mailstore, ca):
    port = low_free_port()
    config, _ = config_file(tmp_path, mailstore.address, 0, top='user = "nobody"\n',
                            extra=tls_listener(ca, port))
    with Popgate.start(["-c", str(config)]) as pg:
        pg.wait_for_log(r"running as user nobody")
        context = ssl.create_default_context(cafile=str(ca.cert))
        p = poplib.POP3_SSL("127.0.0.1", port, context=context, timeout=30)
        p.user("dave")
        p.pass_("pw")
        assert pop3.retr(p, 1) == MESSAGES[0]
        p.quit()
        assert_runs_as(pg.pid, NOBODY)
        # The key stayed root's: only the process that was root could read it.
        assert os.stat(ca.localhost.key).st_uid == 0


def test_the_user_flag_overrides_the_file(tmp_path, mailstore):
    config, _ = config_file(tmp_path, mailstore.address, 0, top='user = "nobody"\n')
    with Popgate.start(["-c", str(config), "--user", "daemon"]) as pg:
        pg.wait_for_log(r"running as user daemon \(uid 1, gid 1\)")
        p = pop3.login(pg.port)
        assert pop3.retr(p, 1) == MESSAGES[0]
        p.quit()
        assert_runs_as(pg.pid, DAEMON)


def test_an_unknown_user_is_a_config_error_naming_its_line(tmp_path, mailstore):
    port = low_free_port()
    config, lines = config_file(tmp_path, mailstore.address, port,
                                top='threads = 2\nuser = "popgate-no-such-user"\n')
    done = run("-c", str(config))
    assert done.returncode == 2, done.stderr
    line = line_of(lines, "user =")
    assert done.stderr == (f'popgate: {config}:{line}: user: no such user '
                           f'"popgate-no-such-user"\n')
    assert port_is_free(port)
    # The flag's is named as the flag.
    good, _ = config_file(tmp_path, mailstore.address, port)
    done = run("-c", str(good), "--user", "popgate-no-such-user")
    assert done.returncode == 2
    assert done.stderr == 'popgate: --user: no such user "popgate-no-such-user"\n'


def test_root_without_a_user_is_warned_about_and_keeps_running(tmp_path, mailstore):
    config, _ = config_file(tmp_path, mailstore.address, 0)
    with Popgate.start(["-c", str(config)]) as pg:
        pg.wait_for_log(r"warn.*running as root: sessions and plugins keep root's privileges; "
                        r'set user = "NAME" \(or --user NAME\)')
        p = pop3.login(pg.port)
        assert pop3.retr(p, 1) == MESSAGES[0]
        p.quit()
        assert status_ids(pg.pid)["Uid"] == [0, 0, 0, 0]
        assert pg.stop() == 0


# ------------------------------------------------------------------- the quarantine


def test_a_missing_quarantine_is_made_for_the_user_and_stores_after_the_switch(tmp_path,
                                                                                mailstore):
    base = world_readable_dir()
    quarantine = base / "var" / "quarantine"  # neither exists yet
    guard = write_plugin(tmp_path, "guard.py", REJECTER)
    report = base / "ids"
    report.touch(mode=0o666)
    report.chmod(0o666)
    config, _ = config_file(tmp_path, mailstore.address, 0, top='user = "nobody"\n',
                            extra=plugin_table(guard, report=report) +
                            f'[quarantine]\npath = "{quarantine}"\n')
    with Popgate.start(["-c", str(config)]) as pg:
        # The plugin's own thread, older than the switch, switched with the process.
        nobody = " ".join([str(NOBODY.pw_uid)] * 3 + [str(NOBODY.pw_gid)] * 3)
        deadline = time.monotonic() + 10
        seen = report.read_text()
        while seen != nobody and time.monotonic() < deadline:
            time.sleep(0.05)
            seen = report.read_text()
        assert seen == nobody
        for made in (base / "var", quarantine, quarantine / "tmp", quarantine / "new",
                     quarantine / "cur"):
            info = made.stat()
            assert (info.st_uid, info.st_gid) == (NOBODY.pw_uid, NOBODY.pw_gid), made
            assert info.st_mode & 0o777 == 0o700, made
        p = pop3.login(pg.port)
        notice = pop3.retr(p, 2)
        assert b"looks like an executable" in notice
        match = re.search(rb"X-Popgate-Quarantine-Id: (\S+)", notice)
        assert match, notice
        p.quit()
        stored = quarantine / "new" / match.group(1).decode()
        assert stored.read_bytes() == MESSAGES[1]
        assert stored.stat().st_uid == NOBODY.pw_uid  # written after the switch
        assert_runs_as(pg.pid, NOBODY)
        assert pg.stop() == 0
    assert base.stat().st_uid == 0  # what existed keeps its owner


def test_a_quarantine_only_root_may_write_stops_start_up(tmp_path, mailstore):
    """Decided: popgate never takes over a directory an admin made; one the user could
    not store into stops start-up (exit 2) before any session, naming the setting."""
    base = world_readable_dir()
    quarantine = base / "quarantine"
    quarantine.mkdir(mode=0o700)  # root's, 0700
    config, lines = config_file(tmp_path, mailstore.address, 0, top='user = "nobody"\n',
                                extra=f'[quarantine]\npath = "{quarantine}"\n')
    expected = (f"popgate: {config}:{line_of(lines, 'path =')}: quarantine.path: "
                f"{quarantine}/tmp is not writable by user nobody (uid 65534, gid 65534): "
                f"Permission denied (popgate writes there as that user once started)\n")
    done = run("-c", str(config))
    assert done.returncode == 2, done.stderr
    assert done.stderr.endswith(expected), done.stderr
    # -t says the same, and exits as the start-up did.
    checked = run("-t", "-c", str(config))
    assert checked.returncode == 2, checked.stderr
    assert checked.stderr.endswith(expected), checked.stderr
    assert checked.stdout == ""
    # Owned by the user, the same directory works.
    os.chown(quarantine, NOBODY.pw_uid, NOBODY.pw_gid)
    for sub in ("tmp", "new", "cur"):
        os.chown(quarantine / sub, NOBODY.pw_uid, NOBODY.pw_gid)
    checked = run("-t", "-c", str(config))
    assert checked.returncode == 0, checked.stderr


# -------------------------------------------------------------------------------- -t


def test_check_config_accepts_a_good_one_and_binds_and_connects_nothing(tmp_path, ca):
    # The upstream is a socket that counts connections; the listener a low port.
    with socket.socket() as upstream:
        upstream.bind(("127.0.0.1", 0))
        upstream.listen(8)
        upstream.setblocking(False)
        port = low_free_port()
        guard = write_plugin(tmp_path, "guard.py", REJECTER)
        tls_port = low_free_port(after=port)
        quarantine = world_readable_dir() / "q"
        config, _ = config_file(tmp_path, f"127.0.0.1:{upstream.getsockname()[1]}", port,
                                top='user = "nobody"\n',
                                extra=tls_listener(ca, tls_port) + plugin_table(guard) +
                                '[[plugin]]\nuse = "audit_log"\n'
                                f'path = "{tmp_path}/audit.jsonl"\n'
                                f'[quarantine]\npath = "{quarantine}"\n')
        done = run("-t", "-c", str(config))
        assert done.returncode == 0, done.stderr
        assert done.stdout == f"popgate: configuration {config} is ok\n"
        assert "listening" not in done.stderr
        assert port_is_free(port) and port_is_free(tls_port)
        with pytest.raises(BlockingIOError):
            upstream.accept()  # nobody connected


def broken_python(tmp_path: Path) -> str:
    return plugin_table(write_plugin(tmp_path, "broken.py", BROKEN), why="no database")


def without_log_lines(stderr: str) -> str:
    """stderr without popgate's timestamped log lines: what start-up printed as its error."""
    return "".join(line for line in stderr.splitlines(keepends=True)
                   if not re.match(r"\d{4}-\d\d-\d\dT", line))


@pytest.mark.parametrize("what", ["bad-option", "bad-plugin-option", "broken-python",
                                  "bad-certificate"])
def test_check_config_refuses_what_start_up_refuses_with_the_same_message(tmp_path, what):
    port = free_port()
    extra = {
        "bad-option": "[limits]\nmax_sessions = 0\n",
        "bad-plugin-option": '[[plugin]]\nuse = "audit_log"\npaht = "/tmp/x"\n',
        "broken-python": broken_python(tmp_path),
        "bad-certificate": "",
    }[what]
    config, _ = config_file(tmp_path, "127.0.0.1:110", port, extra=extra)
    if what == "bad-certificate":
        text = config.read_text().replace(
            f'address = "127.0.0.1:{port}"\n',
            f'address = "127.0.0.1:{port}"\ntls = "implicit"\ncert = "/dev/null"\n'
            f'key = "/dev/null"\n')
        config.write_text(text)
    started = run("-c", str(config))
    checked = run("-t", "-c", str(config))
    assert started.returncode == 2, started.stderr
    assert checked.returncode == 2, checked.stderr
    assert checked.stdout == ""
    error = without_log_lines(checked.stderr)
    assert error.startswith("popgate: "), checked.stderr
    assert error == without_log_lines(started.stderr)
    if what == "broken-python":
        assert "RuntimeError: configure refuses: no database" in error
        assert "Traceback (most recent call last)" in error
    if what == "bad-certificate":
        assert "listen[0].cert: cannot load a certificate chain from /dev/null" in error
    assert port_is_free(port)
