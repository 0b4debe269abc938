"""Python plugins inside popgate, end to end: a real Dovecot, poplib as the client, and
plugin files written by each test, as a user would write them.

What must hold (DESIGN.md, "Python plugins: the contract"): a plugin's edits arrive; a
reject quarantines the original before the notice; a raising plugin follows on_error; a
plugin that can't be loaded stops start-up with its traceback; a slow plugin, sync or
async, delays only the message it holds (8 sessions waiting 1 s each take about 1 s, and
other sessions' commands answer at once); a hook past its timeout passes the original;
hundreds of sessions waiting on an async plugin need no thread each.
"""

from __future__ import annotations

import os
import poplib
import re
import signal
import textwrap
import threading
import time
from pathlib import Path

import pytest

from pgtest import pop3
from pgtest.config import start_popgate
from pgtest.dovecot import Dovecot
from pgtest.popgate import PopgateError

poplib._MAXLINE = 1 << 20


def mail(subject: str, body: bytes = b"Hello.\r\n", extra: bytes = b"") -> bytes:
    return (b"From: alice@example.org\r\nTo: dave@example.org\r\n"
            b"Subject: " + subject.encode() + b"\r\nMessage-ID: <" +
            subject.replace(" ", ".").encode() + b"@example.org>\r\n" + extra + b"\r\n" + body)


MESSAGES = [
    mail("lottery winner", b"First line.\r\n.leading dot\r\nlast\r\n"),
    mail("virus inside", b"MZ pretend executable\r\n"),
    mail("plain note", b"Nothing to see.\r\n",
         extra=b"X-Folded: first part\r\n second part\r\n"),
]


@pytest.fixture()
def mailstore():
    with Dovecot(users={"dave": "pw"}) as dc:
        dc.populate("dave", MESSAGES)
        yield dc


def plugin_file(tmp_path: Path, name: str, source: str) -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(source))
    return path


# popgate on a config file with these [[plugin]] tables (dicts) and `extra` tables.
start = start_popgate


def login(port: int, timeout: float = 30) -> poplib.POP3:
    return pop3.login(port, timeout=timeout)


def direct(dovecot: Dovecot) -> poplib.POP3:
    host, port = dovecot.address.rsplit(":", 1)
    p = poplib.POP3(host, int(port), timeout=30)
    p.user("dave")
    p.pass_("pw")
    return p


def split(lines: list[bytes]) -> tuple[list[bytes], list[bytes]]:
    blank = lines.index(b"")
    return lines[:blank], lines[blank:]


TAGGER = """
    import popgate

    class Tagger(popgate.Plugin):
        needs = popgate.HEADERS

        def configure(self, options):
            self.words = [w.lower() for w in options.get("words", ["lottery"])]
            self.label = options.get("label", "yes")

        def message(self, session, msg):
            subject = (msg.headers.get("Subject") or "").lower()
            if any(w in subject for w in self.words):
                msg.headers.add("X-Lottery", self.label)
            msg.headers.add("X-Seen-By", f"{session.user} {msg.command} {msg.number}")
"""


def test_a_python_plugins_tags_arrive_and_the_rest_is_byte_identical(tmp_path, mailstore):
    path = plugin_file(tmp_path, "tagger.py", TAGGER)
    with start(tmp_path, mailstore.address,
               [{"use": str(path), "words": ["lottery", "winner"], "label": "big"}]) as pg:
        p = login(pg.port)
        d = direct(mailstore)
        for n in (1, 2, 3):
            got_head, got_body = split(p.retr(n)[1])
            want_head, want_body = split(d.retr(n)[1])
            assert got_body == want_body
            added = [b"X-Lottery: big"] if n == 1 else []
            assert got_head == want_head + added + [f"X-Seen-By: dave RETR {n}".encode()]
        # TOP: partial, the same tags, the lines asked for.
        got_head, got_body = split(p.top(1, 1)[1])
        assert got_head[-2:] == [b"X-Lottery: big", b"X-Seen-By: dave TOP 1"]
        assert got_body == [b"", b"First line."]
        p.quit()


def test_a_relative_plugin_path_is_found_beside_the_config_file(tmp_path, mailstore):
    plugin_file(tmp_path, "tagger.py", TAGGER)
    with start(tmp_path, mailstore.address, [{"use": "tagger.py"}]) as pg:
        p = login(pg.port)
        assert b"X-Lottery: yes" in p.retr(1)[1]
        p.quit()


def test_a_module_plugin_and_class_selection(tmp_path, mailstore):
    package = tmp_path / "mycompany"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "filters.py").write_text(textwrap.dedent("""
        import popgate

        class First(popgate.Plugin):
            def message(self, session, msg):
                msg.headers.add("X-Which", "first")

        class Second(popgate.Plugin):
            def message(self, session, msg):
                msg.headers.add("X-Which", "second")
    """))
    with start(tmp_path, mailstore.address,
               [{"use": "python:mycompany.filters", "class": "Second"}],
               env={**os.environ, "POPGATE_PYTHONPATH": str(tmp_path)}) as pg:
        p = login(pg.port)
        assert b"X-Which: second" in p.retr(3)[1]
        p.quit()


def test_reject_quarantines_the_original_before_the_notice(tmp_path, mailstore):
    path = plugin_file(tmp_path, "guard.py", """
        import popgate

        class Guard(popgate.Plugin):
            def message(self, session, msg):
                if b"MZ" in msg.body:
                    return popgate.reject("looks like an executable")
    """)
    quarantine = tmp_path / "quarantine"
    with start(tmp_path, mailstore.address, [{"use": str(path)}],
               extra=f'[quarantine]\npath = "{quarantine}"\n') as pg:
        p = login(pg.port)
        notice = b"\r\n".join(p.retr(2)[1])
        match = re.search(rb"X-Popgate-Quarantine-Id: (\S+)", notice)
        assert match, notice
        assert b"looks like an executable" in notice
        stored = list((quarantine / "new").iterdir())
        assert len(stored) == 1
        assert stored[0].read_bytes() == MESSAGES[1]
        # The others pass untouched.
        assert b"\r\n".join(p.retr(1)[1]) + b"\r\n" == MESSAGES[0]
        p.quit()


RAISER = """
    import popgate

    class Raiser(popgate.Plugin):
        def message(self, session, msg):
            msg.headers.add("X-Half-Done", "yes")
            raise ValueError("boom in the plugin")
"""


def test_a_raising_plugin_with_on_error_pass_delivers_the_original(tmp_path, mailstore):
    path = plugin_file(tmp_path, "raiser.py", RAISER)
    with start(tmp_path, mailstore.address, [{"use": str(path), "on_error": "pass"}]) as pg:
        p = login(pg.port)
        assert b"\r\n".join(p.retr(1)[1]) + b"\r\n" == MESSAGES[0]  # no half-done edit
        # Python logs the traceback before it answers; the chain's line comes after the
        # session has the answer: wait for that one (under load it can lag).
        pg.wait_for_log(r"plugin \S*raiser.py failed in RETR 1: ValueError: boom")
        log = pg.log
        assert "Traceback (most recent call last)" in log
        assert "raiser.py" in log and "ValueError: boom in the plugin" in log
        p.quit()


def test_a_raising_plugin_with_on_error_tempfail_withholds_the_message(tmp_path, mailstore):
    path = plugin_file(tmp_path, "raiser.py", RAISER)
    with start(tmp_path, mailstore.address,
               [{"use": str(path), "on_error": "tempfail"}]) as pg:
        p = login(pg.port)
        with pytest.raises(poplib.error_proto, match=r"\[SYS/TEMP\]"):
            p.retr(1)
        assert p.stat()[0] == 3  # nothing changed upstream
        p.quit()


PEER_GONE = """
    import socket
    import popgate

    class PeerGone(popgate.Plugin):
        # A service that closed its end, as a plugin's rspamd or clamd may: the write
        # must fail in the hook (BrokenPipeError), not end popgate with SIGPIPE.
        def message(self, session, msg):
            mine, theirs = socket.socketpair()
            theirs.close()
            try:
                mine.send(b"x" * 65536)
            finally:
                mine.close()
"""


def test_a_plugin_writing_to_a_closed_socket_fails_its_hook_not_popgate(tmp_path, mailstore):
    path = plugin_file(tmp_path, "peer_gone.py", PEER_GONE)
    with start(tmp_path, mailstore.address, [{"use": str(path), "on_error": "pass"}]) as pg:
        p = login(pg.port)
        assert b"\r\n".join(p.retr(1)[1]) + b"\r\n" == MESSAGES[0]
        assert b"\r\n".join(p.retr(2)[1]) + b"\r\n" == MESSAGES[1]
        p.quit()
        pg.wait_for_log(r"BrokenPipeError")
        assert pg.alive()


@pytest.mark.parametrize("source, expected", [
    ("import popgate\nimport no_such_module_anywhere\n", "ModuleNotFoundError"),
    ("import popgate\n\ndef message(session, msg):\n    pass\n", "no popgate.Plugin subclass"),
    ("import popgate\n\nclass Bad(popgate.Plugin):\n    def configure(self, options):\n"
     "        raise RuntimeError('bad option value')\n", "RuntimeError: bad option value"),
    ("import popgate\nclass Broken(popgate.Plugin:\n", "SyntaxError"),
])
def test_a_plugin_that_cannot_load_stops_start_up_with_its_traceback(tmp_path, mailstore,
                                                                      source, expected):
    path = tmp_path / "broken.py"
    path.write_text(source)
    with pytest.raises(PopgateError) as failure:
        start(tmp_path, mailstore.address, [{"use": str(path)}])
    text = str(failure.value)
    assert "exited with 2 before listening" in text, text
    assert expected in text, text
    stderr = text.split("stderr:", 1)[1]
    assert "listening on" not in stderr, stderr
    # The first line says where in the config, as for any other plugin, and what failed.
    first = stderr.strip().splitlines()[0]
    assert first.startswith(f"popgate: {tmp_path / 'popgate.toml'}:5: plugin {path}: "), first
    assert expected in first, first


def test_what_a_plugin_logs_while_it_starts_is_in_popgates_log(tmp_path, mailstore):
    path = plugin_file(tmp_path, "chatty.py", """
        import logging
        import popgate

        class Chatty(popgate.Plugin):
            def configure(self, options):
                logging.getLogger("chatty").warning("service not answering yet")
    """)
    with start(tmp_path, mailstore.address, [{"use": str(path)}]) as pg:
        # On stderr with popgate's own lines, before it listens, not on stdout.
        assert re.search(r"(?m)^\S+ warning python chatty: service not answering yet$",
                         pg.log.split("listening on")[0]), pg.log


SLEEPERS = {
    "sync": """
        import time
        import popgate

        class Sleeper(popgate.Plugin):
            needs = popgate.HEADERS

            def message(self, session, msg):
                time.sleep(1)
                msg.headers.add("X-Slept", "sync")
    """,
    "async": """
        import asyncio
        import popgate

        class Sleeper(popgate.Plugin):
            needs = popgate.HEADERS

            async def message(self, session, msg):
                await asyncio.sleep(1)
                msg.headers.add("X-Slept", "async")
    """,
}


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_a_slow_plugin_delays_only_the_messages_it_holds(tmp_path, mailstore, kind):
    path = plugin_file(tmp_path, f"{kind}_sleeper.py", SLEEPERS[kind])
    with start(tmp_path, mailstore.address, [{"use": str(path)}]) as pg:
        clients = [login(pg.port) for _ in range(8)]
        other = login(pg.port)
        results: list[bytes] = []
        lock = threading.Lock()

        def fetch(p: poplib.POP3) -> None:
            lines = p.retr(1)[1]
            with lock:
                results.append(b"\r\n".join(lines))

        threads = [threading.Thread(target=fetch, args=(p,)) for p in clients]
        began = time.monotonic()
        for t in threads:
            t.start()
        time.sleep(0.2)
        # Meanwhile another session's commands answer at once.
        for _ in range(5):
            asked = time.monotonic()
            other.noop()
            other.stat()
            assert time.monotonic() - asked < 0.2
        for t in threads:
            t.join(30)
        took = time.monotonic() - began
        assert len(results) == 8
        assert all(f"X-Slept: {kind}".encode() in r for r in results)
        assert took < 3.0, f"8 sessions took {took:.1f} s: the hooks ran one after another"
        for p in clients + [other]:
            p.quit()


def test_a_hook_past_its_timeout_passes_the_original_in_about_the_timeout(tmp_path, mailstore):
    path = plugin_file(tmp_path, "stuck.py", """
        import time
        import popgate

        class Stuck(popgate.Plugin):
            def message(self, session, msg):
                time.sleep(6)
                msg.headers.add("X-Too-Late", "yes")
    """)
    with start(tmp_path, mailstore.address, [{"use": str(path), "timeout": 1}]) as pg:
        p = login(pg.port)
        began = time.monotonic()
        got = b"\r\n".join(p.retr(1)[1]) + b"\r\n"
        took = time.monotonic() - began
        assert got == MESSAGES[0]
        assert 0.9 < took < 3.0, took
        pg.wait_for_log(r"timed out \(1000 ms\) in RETR 1")
        p.quit()


def test_an_async_hook_past_its_timeout_is_cancelled(tmp_path, mailstore):
    path = plugin_file(tmp_path, "stuck_async.py", """
        import asyncio
        import popgate

        class Stuck(popgate.Plugin):
            async def message(self, session, msg):
                try:
                    await asyncio.sleep(30)
                except asyncio.CancelledError:
                    open(session.data.setdefault("flag", "%s"), "w").write("cancelled")
                    raise
    """ % (tmp_path / "cancelled"))
    with start(tmp_path, mailstore.address,
               [{"use": str(path), "timeout": 1, "on_error": "tempfail"}]) as pg:
        p = login(pg.port)
        began = time.monotonic()
        with pytest.raises(poplib.error_proto, match=r"\[SYS/TEMP\]"):
            p.retr(1)
        assert time.monotonic() - began < 3.0
        deadline = time.monotonic() + 5
        while not (tmp_path / "cancelled").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert (tmp_path / "cancelled").read_text() == "cancelled"
        p.quit()


def test_session_command_and_options_reach_the_plugin_as_the_contract_says(tmp_path, mailstore):
    record = tmp_path / "record.txt"
    path = plugin_file(tmp_path, "observer.py", f"""
        import popgate

        RECORD = {str(record)!r}

        def note(line):
            with open(RECORD, "a") as f:
                f.write(line + "\\n")

        class Observer(popgate.Plugin):
            def configure(self, options):
                note("options " + repr(sorted((k, type(v).__name__, v)
                                              for k, v in options.items())))

            def session_start(self, session):
                session.data["commands"] = 0
                note(f"start {{session.id > 0}} {{session.client_address}} user={{session.user!r}} "
                     f"tls={{session.client_tls}}/{{session.upstream_tls}}")

            def command(self, session, command):
                session.data["commands"] += 1
                note(f"command {{command.keyword}} {{command.args}} secret={{command.secret}}")
                if command.keyword == "DELE":
                    return popgate.deny("[SYS/PERM] kept on the server")

            def message(self, session, msg):
                note(f"message {{msg.command}} {{msg.number}} partial={{msg.partial}} "
                     f"user={{session.user}}")

            def message_done(self, session, msg, report):
                note(f"done {{report.verdict}} {{report.size_in}} {{report.size_out}}")

            def session_end(self, session):
                note(f"end user={{session.user}} commands={{session.data['commands']}}")
    """)
    with start(tmp_path, mailstore.address,
               [{"use": str(path), "words": ["a", "b"], "limit": 3, "ratio": 0.5,
                 "strict": True, "spamd": {"size": 10, "host": "x"}}]) as pg:
        p = login(pg.port)
        p.retr(3)
        with pytest.raises(poplib.error_proto, match=r"kept on the server"):
            p.dele(1)
        p.quit()
        deadline = time.monotonic() + 5
        while "end user" not in (record.read_text() if record.exists() else ""):
            assert time.monotonic() < deadline, record.read_text()
            time.sleep(0.05)
    lines = record.read_text().splitlines()
    assert lines[0] == ("options [('limit', 'int', 3), ('ratio', 'float', 0.5), "
                        "('spamd', 'dict', {'host': 'x', 'size': 10}), "
                        "('strict', 'bool', True), ('words', 'list', ['a', 'b'])]")
    assert lines[1].startswith("start True 127.0.0.1:") and "user=''" in lines[1]
    assert lines[1].endswith("tls=False/False")
    assert "command USER ('dave',) secret=False" in lines
    assert "command PASS () secret=True" in lines  # never the password
    assert "message RETR 3 partial=False user=dave" in lines
    assert f"done pass {len(MESSAGES[2])} {len(MESSAGES[2])}" in lines
    assert "command DELE ('1',) secret=False" in lines
    assert lines[-1].startswith("end user=dave commands=")


def test_email_edits_are_written_back_and_untouched_reads_change_nothing(tmp_path, mailstore):
    path = plugin_file(tmp_path, "email_edit.py", """
        import popgate

        class EmailEdit(popgate.Plugin):
            def message(self, session, msg):
                email = msg.email
                if "lottery" in email["Subject"]:
                    email["X-Edited"] = "via email"
                    email.replace_header("Subject", "[tagged] " + email["Subject"])
                # Any other message: read, not changed.
                _ = email.get_content()
    """)
    with start(tmp_path, mailstore.address, [{"use": str(path)}]) as pg:
        p = login(pg.port)
        edited = p.retr(1)[1]
        assert b"Subject: [tagged] lottery winner" in edited
        assert b"X-Edited: via email" in edited
        # Read only: byte for byte as Dovecot has it, folding included.
        assert b"\r\n".join(p.retr(3)[1]) + b"\r\n" == MESSAGES[2]
        p.quit()


def test_two_hundred_sessions_waiting_on_an_async_service_need_no_thread_each(tmp_path, mailstore):
    path = plugin_file(tmp_path, "remote.py", """
        import asyncio
        import popgate

        class Remote(popgate.Plugin):
            needs = popgate.HEADERS

            async def message(self, session, msg):
                await asyncio.sleep(1)  # a round trip to a slow remote service
                msg.headers.add("X-Remote", "checked")
    """)
    with start(tmp_path, mailstore.address, [{"use": str(path)}], args=["--threads", "2"]) as pg:
        clients = [login(pg.port, timeout=60) for _ in range(200)]
        peak_threads = 0
        stop = threading.Event()

        def watch() -> None:
            nonlocal peak_threads
            while not stop.is_set():
                status = Path(f"/proc/{pg.pid}/status").read_text()
                peak_threads = max(peak_threads,
                                   int(re.search(r"^Threads:\s+(\d+)", status, re.M).group(1)))
                time.sleep(0.05)

        watcher = threading.Thread(target=watch)
        watcher.start()
        results: list[bool] = []

        def fetch(p: poplib.POP3) -> None:
            results.append(b"X-Remote: checked" in p.retr(1)[1])

        threads = [threading.Thread(target=fetch, args=(p,)) for p in clients]
        began = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        took = time.monotonic() - began
        stop.set()
        watcher.join()
        print(f"200 sessions through a 1 s async service: {took:.2f} s, "
              f"peak threads {peak_threads}")
        assert results.count(True) == 200
        assert took < 8.0, f"200 sessions took {took:.1f} s"
        # 2 I/O threads, the main thread, the loop, the sync pool (32), and a few of
        # popgate's own: far fewer than one per waiting session.
        assert peak_threads < 60, peak_threads
        for p in clients:
            p.quit()


VERSIONED = """
    import popgate

    class Versioned(popgate.Plugin):
        needs = popgate.HEADERS

        def configure(self, options):
            self.marker = options["marker"]

        def message(self, session, msg):
            msg.headers.add("X-Version", "{version}")

        def done(self):
            with open(self.marker, "a") as out:
                out.write("done {version}\\n")
"""


def version_of(p: poplib.POP3, n: int = 1) -> list[bytes]:
    head, _ = split(p.retr(n)[1])
    return [line for line in head if line.startswith(b"X-Version:")]


def test_sighup_loads_an_edited_plugin_keeps_running_sessions_on_theirs_and_survives_a_broken_one(
        tmp_path, mailstore):
    marker = tmp_path / "done.log"
    path = plugin_file(tmp_path, "versioned.py", VERSIONED.replace("{version}", "1"))
    with start(tmp_path, mailstore.address, [{"use": str(path), "marker": str(marker)}]) as pg:
        old_session = login(pg.port)
        assert version_of(old_session) == [b"X-Version: 1"]

        plugin_file(tmp_path, "versioned.py", VERSIONED.replace("{version}", "2"))
        mark = len(pg.log)
        os.kill(pg.pid, signal.SIGHUP)
        pg.wait_for_log(r"python plugins reloaded: 1 of 1", start=mark)
        new_session = login(pg.port)
        assert version_of(new_session) == [b"X-Version: 2"]
        # The session that started before the reload finishes on the code it started with,
        # and the old code's done() runs when that session, its last, ends.
        assert version_of(old_session, 2) == [b"X-Version: 1"]
        assert not marker.exists()
        old_session.quit()
        deadline = time.monotonic() + 10
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert marker.read_text() == "done 1\n"

        # A broken edit: the traceback is logged, the working code stays, popgate serves.
        path.write_text("import popgate\nclass Broken(popgate.Plugin:\n")
        mark = len(pg.log)
        os.kill(pg.pid, signal.SIGHUP)
        pg.wait_for_log(r"python plugins reloaded: 0 of 1", start=mark)
        assert "SyntaxError" in pg.log[mark:]
        assert "reload failed" in pg.log[mark:]
        third = login(pg.port)
        assert version_of(third) == [b"X-Version: 2"]
        third.quit()
        new_session.quit()
    # At shutdown, done() of the code still current.
    assert marker.read_text() == "done 1\ndone 2\n"
