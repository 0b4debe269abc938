"""audit_log's trail against a real Dovecot, whatever else is in the chain (issue 11).

audit_log only reports (OnMessageDone, SessionEnd): it edits nothing, so a chain that
skips message hooks nobody edits with, or fills SessionInfo::user only when a command
hook runs, leaves it with an empty trail. What must hold, for each chain shape (audit_log
alone; with a headers-only plugin; with a whole-message plugin; with a command-only
plugin): every RETR and TOP has its message record, naming the message and the user; the
session record names the user and counts the messages. And the session record names the
user for every login method, also when the session fetched nothing.

An IPv6 client (popgate listening on [::1]) is written `[::1]:PORT` in popgate's log, the
audit records and SessionInfo::client_address (which audit_log writes as `client`).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import poplib
import re
import socket
import time
from pathlib import Path

import pytest

from pgtest import mailbox as mb
from pgtest.dovecot import Dovecot
from pgtest.popgate import Popgate, popgate_bin
from pgtest.wire import RawPop3

USER, PASSWORD = "audit", "Aud1t-trail"
MESSAGES = [mb.ordinary(n, user=USER) for n in (1, 2, 3)]


def message_id(n: int) -> str:
    return f"<ord-{USER}-{n}@popgate.test>"  # as mb.ordinary writes it


def library(name: str) -> Path:
    directory = Path(os.environ.get("POPGATE_SO_PLUGIN_DIR") or popgate_bin().parent)
    path = directory / f"lib{name}.so"
    assert path.exists(), f"test plugin not built: {path} (set POPGATE_SO_PLUGIN_DIR)"
    return path


@pytest.fixture(scope="module")
def mailstore():
    # Read only: no test deletes (keep_on_server would refuse it anyway).
    with Dovecot(users={USER: PASSWORD}) as dc:
        dc.populate(USER, MESSAGES)
        yield dc


def start(tmp_path: Path, upstream: str, plugins: list[str], listen: str = "127.0.0.1:0"):
    """popgate with the [[plugin]] tables `plugins` (TOML text each) and audit_log last;
    returns it and the audit log's path."""
    audit = tmp_path / "audit.jsonl"
    text = f'[upstream]\naddress = "{upstream}"\n[[listen]]\naddress = "{listen}"\n'
    for plugin in [*plugins, f'use = "audit_log"\npath = "{audit}"']:
        text += f"[[plugin]]\n{plugin}\n"
    config = tmp_path / "popgate.toml"
    config.write_text(text)
    return Popgate.start(["-c", str(config), "--log-level", "debug"]), audit


def records(audit: Path, sessions: int = 1, timeout: float = 10) -> tuple[list, list]:
    """(message records, session records) once `sessions` session records are written:
    SessionEnd runs after the session has closed, on another thread."""
    deadline = time.monotonic() + timeout
    while True:
        text = audit.read_text() if audit.exists() else ""
        parsed = [json.loads(line) for line in text.splitlines()]
        ended = [r for r in parsed if r["event"] == "session"]
        if len(ended) >= sessions or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert len(ended) == sessions, f"expected {sessions} session record(s):\n{text}"
    return [r for r in parsed if r["event"] == "message"], ended


CHAINS = {
    "alone": [],
    "headers-only": [f'use = "so:{library("popgate_add_header")}"\nvalue = "audited"'],
    "whole-message": [f'use = "so:{library("popgate_behave")}"\nadd = "X-Behave: audited"'],
    "command-only": ['use = "keep_on_server"'],
}
# What each session of the chain tests fetches, in order.
FETCHES = [("RETR", 1), ("TOP", 2, 0), ("RETR", 3), ("TOP", 1, 3), ("RETR", 1)]


@pytest.mark.parametrize("chain", list(CHAINS))
def test_every_retr_and_top_has_its_record_whatever_the_chain(chain, tmp_path, mailstore):
    pg, audit = start(tmp_path, mailstore.address, CHAINS[chain])
    with pg:
        p = poplib.POP3("127.0.0.1", pg.port, timeout=30)
        p.user(USER)
        p.pass_(PASSWORD)
        for command, number, *lines in FETCHES:
            response, got, _ = p.retr(number) if command == "RETR" else p.top(number, *lines)
            assert response.startswith(b"+OK") and got
        p.quit()
        pg.wait_for_log(r"session \d+ end")
        messages, (session,) = records(audit)

    assert [(m["command"], m["number"]) for m in messages] == [f[:2] for f in FETCHES]
    for record, (_, number, *_) in zip(messages, FETCHES):
        assert record["message_id"] == message_id(number), record
        assert record["user"] == USER, record
        assert record["client"].startswith("127.0.0.1:"), record
        assert record["verdict"] == "pass" and record["size_out"] > 0, record
    assert session["user"] == USER, session
    assert session["messages"] == len(FETCHES), session
    assert session["client"] == messages[0]["client"]
    assert session["session"] == messages[0]["session"]


# ---------------------------------------------------------------- logins


def apop(c: RawPop3) -> bytes:
    stamp = re.search(rb"<[^>]*>", c.greeting).group(0)
    return c.command(f"APOP {USER} {hashlib.md5(stamp + PASSWORD.encode()).hexdigest()}")


def auth_plain(c: RawPop3) -> bytes:
    # The credentials as an initial response, on the AUTH line (RFC 5034 §4).
    return c.command(b"AUTH PLAIN " + base64.b64encode(f"\0{USER}\0{PASSWORD}".encode()))


def auth_plain_challenge(c: RawPop3) -> bytes:
    # The credentials as the answer to the server's empty challenge: SASL data, not a command.
    assert c.command("AUTH PLAIN") == b"+ \r\n"
    c.send(base64.b64encode(f"\0{USER}\0{PASSWORD}".encode()) + b"\r\n")
    return c.read_line()


def user_pass(c: RawPop3) -> bytes:
    assert c.command(f"USER {USER}").startswith(b"+OK")
    return c.command(f"PASS {PASSWORD}")


LOGINS = {"USER/PASS": user_pass, "APOP": apop, "AUTH PLAIN": auth_plain,
          "AUTH PLAIN, challenge": auth_plain_challenge}


@pytest.mark.parametrize("fetch", [False, True], ids=["fetches-nothing", "retr"])
@pytest.mark.parametrize("method", list(LOGINS))
def test_the_session_record_names_the_user_whatever_the_login(method, fetch, tmp_path, mailstore):
    pg, audit = start(tmp_path, mailstore.address, [])
    with pg:
        with RawPop3("127.0.0.1", pg.port) as c:
            assert LOGINS[method](c).startswith(b"+OK")
            assert c.command("STAT").startswith(b"+OK 3 ")
            if fetch:
                assert c.command("RETR 2").startswith(b"+OK")
            assert c.command("QUIT").startswith(b"+OK")
        pg.wait_for_log(rf"session \d+ logged in user={USER}")
        messages, (session,) = records(audit)
    assert session["user"] == USER, session
    assert session["messages"] == int(fetch), session
    assert [(m["command"], m["number"], m["user"]) for m in messages] == (
        [("RETR", 2, USER)] if fetch else [])


def test_a_session_that_drops_without_quit_still_names_its_user(tmp_path, mailstore):
    pg, audit = start(tmp_path, mailstore.address, [])
    with pg:
        c = RawPop3("127.0.0.1", pg.port)
        assert user_pass(c).startswith(b"+OK")
        c.close(abort=True)
        pg.wait_for_log(r"session \d+ end")
        _, (session,) = records(audit)
    assert session["user"] == USER and session["messages"] == 0, session


# ---------------------------------------------------------------- IPv6


def ipv6_loopback_missing() -> str | None:
    """Why a socket cannot listen on ::1 here (no IPv6, or ::1 not configured), else None."""
    if not socket.has_ipv6:
        return "Python was built without IPv6"
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
    except OSError as e:
        return f"cannot bind to [::1] on this machine: {e}"
    return None


def test_an_ipv6_client_is_written_in_brackets_everywhere(tmp_path, mailstore):
    reason = ipv6_loopback_missing()
    if reason:
        pytest.skip(reason)
    plugins = [f'use = "so:{library("popgate_add_header")}"\nvalue = "v6"']
    pg, audit = start(tmp_path, mailstore.address, plugins, listen="[::1]:0")
    with pg:
        assert pg.wait_for_log(r"listening on (\S+) ").group(1) == f"[::1]:{pg.port}"
        p = poplib.POP3("::1", pg.port, timeout=30)
        client_port = p.sock.getsockname()[1]
        p.user(USER)
        p.pass_(PASSWORD)
        _, lines, _ = p.retr(1)
        assert b"X-Popgate-Example: v6" in lines  # the plugin ran for this session
        p.quit()
        client = f"[::1]:{client_port}"
        assert pg.wait_for_log(r"session \d+ start client=(\S+)").group(1) == client
        assert pg.wait_for_log(r"session \d+ end client=(\S+)").group(1) == client
        messages, (session,) = records(audit)
    # audit_log writes SessionInfo::client_address as it gets it: what every plugin sees.
    assert [m["client"] for m in messages] == [client]
    assert session["client"] == client
