"""The filter chain in sessions, against a real Dovecot (and a fake upstream where a real
one can't show the point), with `behave`, a test plugin loaded as a shared object that
does what its options say: tag, delay, reject, throw, deny a command, record what it saw.

What must hold: plugins see whole messages (TOP too, widened) or header blocks only (the
body streams past); tempfail and reject never lose mail (the quarantine holds the
original, byte-identical, before the client reads the notice); per-plugin timeouts and
on_error; a slow plugin never times the client out; messages past filter_memory are
spooled and filtered alike, those over max_filter_size pass unfiltered.
"""

from __future__ import annotations

import poplib
import socket
import threading
import time
from pathlib import Path

import pytest

from pgtest.dovecot import Dovecot
from pgtest.fakes import FakePop3, Pop3Script, message
from pgtest.popgate import Popgate, popgate_bin

poplib._MAXLINE = 1 << 20

BIG_BODY = b"".join(b"line %07d of a large attachment, base64-like payload ABCDEFGHIJKLMNOP\r\n" % i
                    for i in range(40000))  # about 3 MB


def mail(subject: str, body: bytes = b"Hello.\r\n") -> bytes:
    return (b"From: alice@example.org\r\nTo: bob@example.org\r\n"
            b"Subject: " + subject.encode() + b"\r\nMessage-ID: <" + subject.encode() +
            b"@example.org>\r\n\r\n" + body)


MESSAGES = [
    mail("plain", b"First line.\r\n.leading dot\r\n..two dots\r\n.\r\nthird\r\nfourth\r\nfifth\r\n"),
    mail("REJECTME please", b"Buy now.\r\n"),
    mail("big", BIG_BODY),
]


def behave_so() -> Path:
    path = popgate_bin().parent / "libpopgate_behave.so"
    assert path.exists(), f"test plugin not built: {path}"
    return path


def toml_value(value) -> str:
    return str(value) if isinstance(value, int) else '"' + str(value) + '"'


def write_config(tmp_path: Path, upstream: str, plugins: list[dict], extra: str = "") -> Path:
    text = f'[upstream]\naddress = "{upstream}"\n[[listen]]\naddress = "127.0.0.1:0"\n'
    for plugin in plugins:
        text += "[[plugin]]\n" + "".join(f"{k} = {toml_value(v)}\n" for k, v in plugin.items())
    path = tmp_path / "popgate.toml"
    path.write_text(text + extra)
    return path


def behave(**options) -> dict:
    return {"use": f"so:{behave_so()}", **options}


def start(tmp_path, upstream, plugins, extra="", args=()) -> Popgate:
    return Popgate.start(["-c", str(write_config(tmp_path, upstream, plugins, extra)), *args])


def login(port: int, timeout: float = 30) -> poplib.POP3:
    p = poplib.POP3("127.0.0.1", port, timeout=timeout)
    p.user("dave")
    p.pass_("pw")
    return p


def direct(dovecot: Dovecot, timeout: float = 30) -> poplib.POP3:
    host, port = dovecot.address.rsplit(":", 1)
    p = poplib.POP3(host, int(port), timeout=timeout)
    p.user("dave")
    p.pass_("pw")
    return p


def logged_in_raw(port: int, commands: bytes) -> bytes:
    """Logs in over a raw socket, sends `commands` in one write, and returns everything
    popgate sends until it closes the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(b"USER dave\r\nPASS pw\r\n")
        time.sleep(0.5)
        sock.sendall(commands)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    return received


def header_names(lines: list[bytes]) -> list[bytes]:
    names = []
    for line in lines:
        if not line:
            break
        if not line[:1].isspace():
            names.append(line.split(b":", 1)[0].lower())
    return names


def split(lines: list[bytes]) -> tuple[list[bytes], list[bytes]]:
    blank = lines.index(b"")
    return lines[:blank], lines[blank:]


@pytest.fixture()
def mailstore():
    # Per test: several tests delete mail.
    with Dovecot(users={"dave": "pw"}) as dc:
        dc.populate("dave", MESSAGES)
        yield dc


def test_whole_message_plugin_tags_retr_and_top_alike(tmp_path, mailstore):
    record = tmp_path / "seen.txt"
    plugin = behave(add="X-Behave: tagged", record=str(record))
    with start(tmp_path, mailstore.address, [plugin]) as pg:
        p = login(pg.port)
        d = direct(mailstore)
        for n in (1, 2):
            got = p.retr(n)[1]
            want = d.retr(n)[1]
            got_head, got_body = split(got)
            want_head, want_body = split(want)
            assert got_body == want_body
            # Added at the end of the header block, everything else as it was.
            assert got_head == want_head + [b"X-Behave: tagged"]
            # TOP: the same tag, and exactly the lines asked for.
            for lines in (0, 2, 5, 99):
                top = p.top(n, lines)[1]
                want_top = d.top(n, lines)[1]
                top_head, top_body = split(top)
                want_top_head, want_top_body = split(want_top)
                assert top_head == want_top_head + [b"X-Behave: tagged"], (n, lines)
                assert top_body == want_top_body, (n, lines)
        p.quit()
        d.quit()
    seen = record.read_text().splitlines()
    # TOP was widened: the plugin saw whole messages, never a partial one.
    assert any(line.startswith("TOP 1 partial=0") for line in seen)
    assert not any("partial=1" in line for line in seen)


def test_headers_only_plugin_never_holds_the_body(tmp_path, mailstore):
    record = tmp_path / "seen.txt"
    plugin = behave(needs="headers", add="X-Behave: headers", record=str(record))
    with start(tmp_path, mailstore.address, [plugin]) as pg:
        p = login(pg.port)
        d = direct(mailstore)
        got, want = p.retr(3)[1], d.retr(3)[1]
        assert split(got)[1] == split(want)[1]
        assert split(got)[0] == split(want)[0] + [b"X-Behave: headers"]
        top = p.top(1, 1)[1]
        assert split(top)[0] == split(d.top(1, 1)[1])[0] + [b"X-Behave: headers"]
        assert split(top)[1] == split(d.top(1, 1)[1])[1]
        p.quit()
        d.quit()
    seen = record.read_text().splitlines()
    big = [line for line in seen if line.startswith("RETR 3 ")]
    assert big and "partial=1" in big[0]
    size = int(big[0].rsplit("size=", 1)[1])
    assert size < 1000, "the plugin was handed more than the header block"


def test_reject_quarantines_the_original_before_the_notice(tmp_path, mailstore):
    quarantine = tmp_path / "quarantine"
    plugin = behave(verdict="reject", when="REJECTME")
    extra = f'[quarantine]\npath = "{quarantine}"\n'
    with start(tmp_path, mailstore.address, [plugin], extra) as pg:
        d = direct(mailstore)
        original = b"\r\n".join(d.retr(2)[1]) + b"\r\n"
        d.quit()
        p = login(pg.port)
        notice = p.retr(2)[1]
        # By the time the client has the notice, the original is stored.
        stored = list((quarantine / "new").iterdir())
        ids = [line.split(b":", 1)[1].strip() for line in notice
               if line.lower().startswith(b"x-popgate-quarantine-id:")]
        assert len(ids) == 1 and len(stored) == 1
        assert stored[0].name == ids[0].decode()
        assert stored[0].read_bytes() == original
        assert b"REJECTME" not in b"\r\n".join(split(notice)[0]).split(b"Subject:", 1)[0]
        assert any(b"behave says reject" in line for line in notice)
        # Other messages pass; deleting the rejected one loses nothing.
        assert b"Subject: plain" in split(p.retr(1)[1])[0]
        p.dele(2)
        p.quit()
    d = direct(mailstore)
    assert d.stat()[0] == 2
    d.quit()
    assert (quarantine / "new" / ids[0].decode()).read_bytes() == original
    assert list((quarantine / "tmp").iterdir()) == []


def test_reject_without_a_quarantine_is_a_temporary_failure(tmp_path, mailstore):
    plugin = behave(verdict="reject", when="REJECTME")
    with start(tmp_path, mailstore.address, [plugin]) as pg:
        p = login(pg.port)
        with pytest.raises(poplib.error_proto, match=r"SYS/TEMP"):
            p.retr(2)
        # The session goes on in step.
        assert b"Subject: plain" in split(p.retr(1)[1])[0]
        p.quit()
    d = direct(mailstore)
    assert d.stat()[0] == 3
    d.quit()


@pytest.mark.parametrize("on_error", ["pass", "tempfail"])
def test_a_throwing_plugin_follows_on_error(tmp_path, mailstore, on_error):
    plugin = behave(add="X-Behave: tagged", on_error=on_error, throw="message")
    with start(tmp_path, mailstore.address, [plugin]) as pg:
        p = login(pg.port)
        if on_error == "pass":
            lines = p.retr(1)[1]
            assert b"x-behave" not in header_names(lines)
            assert split(lines)[1] == split(direct_retr(mailstore, 1))[1]
        else:
            with pytest.raises(poplib.error_proto, match=r"SYS/TEMP"):
                p.retr(1)
            assert p.stat()[0] == 3
        p.quit()
        assert "behave" in pg.log and "throw" in pg.log


def direct_retr(dovecot: Dovecot, n: int) -> list[bytes]:
    d = direct(dovecot)
    try:
        return d.retr(n)[1]
    finally:
        d.quit()


@pytest.mark.parametrize("on_error", ["pass", "tempfail"])
def test_a_plugin_past_its_timeout_is_given_up_without_harming_others(tmp_path, mailstore,
                                                                     on_error):
    slow = behave(add="X-Behave: late", delay_ms=6000, timeout=1, on_error=on_error,
                  when="plain")
    with start(tmp_path, mailstore.address, [slow]) as pg:
        p = login(pg.port)
        started = time.monotonic()
        if on_error == "pass":
            lines = p.retr(1)[1]
            assert b"x-behave" not in header_names(lines)
        else:
            with pytest.raises(poplib.error_proto, match=r"SYS/TEMP"):
                p.retr(1)
        assert time.monotonic() - started < 4
        # Another session meanwhile is served (its plugin instance is its own).
        q = login(pg.port)
        assert q.stat()[0] == 3
        q.quit()
        p.quit()
        assert "timed out" in pg.log or "timeout" in pg.log


def test_messages_over_max_filter_size_pass_unfiltered(tmp_path, mailstore):
    plugin = behave(add="X-Behave: tagged")
    extra = "[limits]\nmax_filter_size = 1048576\n"
    with start(tmp_path, mailstore.address, [plugin], extra) as pg:
        p = login(pg.port)
        big = p.retr(3)[1]
        small = p.retr(1)[1]
        p.quit()
        assert "passed unfiltered" in pg.log
    assert big == direct_retr(mailstore, 3)
    assert b"x-behave" in header_names(small)


def test_a_slow_plugin_never_times_the_client_out(tmp_path, mailstore):
    # 90 s in the plugin; the client gives up after 30 s of silence.
    slow = behave(add="X-Behave: slow but sure", delay_ms=90000, timeout=120, when="plain")
    with start(tmp_path, mailstore.address, [slow]) as pg:
        p = login(pg.port, timeout=30)
        lines = p.retr(1)[1]
        p.quit()
        assert "keeping the client alive" in pg.log
    want = direct_retr(mailstore, 1)
    assert split(lines)[0] == split(want)[0] + [b"X-Behave: slow but sure"]
    assert split(lines)[1] == split(want)[1]


def test_keepalive_reaches_the_upstream_and_its_answers_stay_out_of_the_session(tmp_path):
    fake = FakePop3(default=Pop3Script(messages=[message(2000, "one"), message(300, "two")]))
    slow = behave(add="X-Behave: slow", delay_ms=3500, timeout=30)
    extra = "[timeouts]\nfilter_keepalive = 1\n"
    with start(tmp_path, fake.address, [slow], extra) as pg:
        p = login(pg.port)
        lines = p.retr(1)[1]
        assert b"x-behave" in header_names(lines)
        # The NOOP answers were not relayed: the next answers are the right ones.
        assert p.stat()[0] == 2
        assert p.noop().startswith(b"+OK")
        p.quit()
    verbs = fake.connections[0].verbs
    assert verbs.count(b"NOOP") >= 2  # popgate's two or three, and the client's one


def test_withheld_after_keepalive_closes_without_completing_the_message(tmp_path, mailstore):
    quarantine = tmp_path / "quarantine"
    # Long enough for "From: al" to go ahead: the notice ("From: popgate ...") can't
    # follow those bytes.
    slow = behave(verdict="reject", delay_ms=8500, timeout=30)
    extra = f'[timeouts]\nfilter_keepalive = 1\n[quarantine]\npath = "{quarantine}"\n'
    with start(tmp_path, mailstore.address, [slow], extra) as pg:
        received = logged_in_raw(pg.port, b"RETR 1\r\n")
    # The status line and some header bytes went out; the end line never did.
    assert b"\r\n+OK" in received
    assert not received.endswith(b"\r\n.\r\n")
    # Nothing lost: still on the server, and quarantined.
    d = direct(mailstore)
    assert d.stat()[0] == 3
    d.quit()
    assert len(list((quarantine / "new").iterdir())) == 1


def test_keep_on_server_refuses_dele(tmp_path, mailstore):
    with start(tmp_path, mailstore.address, [{"use": "keep_on_server"}]) as pg:
        p = login(pg.port)
        with pytest.raises(poplib.error_proto, match=r"kept on the server"):
            p.dele(1)
        assert p.stat()[0] == 3
        p.quit()
    d = direct(mailstore)
    assert d.stat()[0] == 3
    d.quit()


def test_a_plugin_can_deny_a_command_in_a_pipelined_burst(tmp_path, mailstore):
    plugin = behave(deny="DELE")
    with start(tmp_path, mailstore.address, [plugin]) as pg:
        received = logged_in_raw(pg.port, b"STAT\r\nDELE 1\r\nNOOP\r\nQUIT\r\n")
    lines = received.split(b"\r\n")
    stat = next(i for i, line in enumerate(lines) if line.startswith(b"+OK 3 "))
    # In order: STAT's answer, the denial, NOOP's answer, QUIT's.
    assert lines[stat + 1].startswith(b"-ERR [SYS/PERM] DELE refused by behave")
    assert lines[stat + 2].startswith(b"+OK")
    d = direct(mailstore)
    assert d.stat()[0] == 3
    d.quit()


def test_audit_log_records_each_message_and_session_without_secrets(tmp_path, mailstore):
    import json

    log = tmp_path / "audit.jsonl"
    quarantine = tmp_path / "quarantine"
    plugins = [behave(verdict="reject", when="REJECTME"), {"use": "audit_log", "path": str(log)}]
    extra = f'[quarantine]\npath = "{quarantine}"\n'
    with start(tmp_path, mailstore.address, plugins, extra) as pg:
        p = login(pg.port)
        p.retr(1)
        p.retr(2)
        p.top(1, 0)
        p.quit()
        pg.wait_for_log(r"session \d+ end")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and '"event":"session"' not in log.read_text():
        time.sleep(0.1)  # SessionEnd runs on the filter pool after the session closes
    text = log.read_text()
    assert "PASS" not in text and '"pw"' not in text
    records = [json.loads(line) for line in text.splitlines()]
    messages = [r for r in records if r["event"] == "message"]
    sessions = [r for r in records if r["event"] == "session"]
    assert [(m["command"], m["number"], m["verdict"]) for m in messages] == [
        ("RETR", 1, "pass"), ("RETR", 2, "reject"), ("TOP", 1, "pass")]
    first, rejected, top = messages
    assert first["subject"] == "plain" and first["from"] == "alice@example.org"
    assert first["message_id"] == "<plain@example.org>"
    assert first["user"] == "dave" and first["client"].startswith("127.0.0.1:")
    assert first["size_in"] == first["size_out"] > 0
    assert first["plugins"][0]["name"] == "behave"
    assert first["plugins"][0]["verdict"] == "pass"
    assert rejected["decided_by"] == "behave" and rejected["reason"] == "behave says reject"
    assert (quarantine / "new" / rejected["quarantine_id"]).exists()
    assert not top["partial"]  # TOP was widened to the whole message
    assert len(sessions) == 1 and sessions[0]["user"] == "dave" and sessions[0]["messages"] == 3


@pytest.mark.parametrize("needs", ["whole", "headers"])
def test_an_inline_chain_filters_on_the_session_thread_alike(tmp_path, mailstore, needs):
    # Every plugin inline: no hand-off to worker threads; the results are the same,
    # reject and quarantine included (the quarantine's fsync still runs on a worker).
    quarantine = tmp_path / "quarantine"
    plugins = [behave(needs=needs, add="X-Behave: inline", inline="yes"),
               behave(needs=needs, verdict="reject", when="REJECTME", inline="yes")]
    extra = f'[quarantine]\npath = "{quarantine}"\n'
    with start(tmp_path, mailstore.address, plugins, extra, args=["--log-level", "debug"]) as pg:
        p = login(pg.port)
        pg.wait_for_log(r"filters: inline")
        for n in (1, 3):
            got, want = p.retr(n)[1], direct_retr(mailstore, n)
            assert split(got)[0] == split(want)[0] + [b"X-Behave: inline"]
            assert split(got)[1] == split(want)[1]
        notice = p.retr(2)[1]
        assert any(line.lower().startswith(b"x-popgate-quarantine-id:") for line in notice)
        assert split(p.top(1, 2)[1])[0][-1] == b"X-Behave: inline"
        p.quit()
    assert len(list((quarantine / "new").iterdir())) == 1


def vm_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"{field} not in /proc/{pid}/status")


@pytest.fixture(scope="module")
def big_mailstore():
    body = b"".join(b"%08d a 30 MB message, streamed or held, never both ABCDEFGHIJKLMNOPQRSTUVWXYZ\r\n" % i
                    for i in range(375000))  # about 30 MB
    with Dovecot(users={"dave": "pw"}) as dc:
        dc.populate("dave", [mail("small"), mail("huge", body)])
        yield dc


def spool_limits(tmp_path: Path, **limits: int) -> tuple[Path, str]:
    """A fresh spool directory, and the [limits] table that points popgate at it."""
    spool = tmp_path / "spool"
    spool.mkdir()
    lines = "".join(f"{key} = {value}\n" for key, value in limits.items())
    return spool, f'[limits]\n{lines}spool_dir = "{spool}"\n'


@pytest.mark.parametrize("needs,filter_memory_mib,bound_mib",
                         [("whole", 8, 16 * 8 + 24), ("whole", 1, 16 * 1 + 24), ("headers", 8, 24)])
def test_sixteen_30mb_retrs_stay_within_the_memory_bound(tmp_path, big_mailstore, needs,
                                                         filter_memory_mib, bound_mib):
    # Whole-message chain: each session holds at most filter_memory, then spools the rest
    # to a file and is filtered all the same; headers-only: the body streams past.
    plugin = behave(needs=needs, add="X-Behave: memory")
    spool, extra = spool_limits(tmp_path, filter_memory=filter_memory_mib << 20)
    with start(tmp_path, big_mailstore.address, [plugin], extra) as pg:
        if "libasan" in Path(f"/proc/{pg.pid}/maps").read_text():
            pytest.skip("memory is measured on the plain build: ASan keeps freed memory")
        warm = login(pg.port)
        warm.retr(1)  # threads, plugin and buffers in place before the baseline
        warm.quit()
        baseline = vm_kib(pg.pid, "VmRSS")
        fetched: list[list[bytes]] = []
        errors: list[BaseException] = []

        def fetch():
            try:
                p = login(pg.port, timeout=120)
                fetched.append(p.retr(2)[1])
                p.quit()
            except BaseException as e:  # noqa: BLE001 - reported below
                errors.append(e)

        threads = [threading.Thread(target=fetch) for _ in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(300)
        peak = vm_kib(pg.pid, "VmHWM")
        spooled = "spooled to disk" in pg.log
    assert not errors, errors
    assert len(fetched) == 16
    want = direct_retr(big_mailstore, 2)
    assert sum(len(line) + 2 for line in want) > 30_000_000
    for lines in fetched:  # each one filtered, and whole
        assert split(lines)[0] == split(want)[0] + [b"X-Behave: memory"]
        assert split(lines)[1] == split(want)[1]
    assert spooled == (needs == "whole")
    assert list(spool.iterdir()) == []  # unnamed files: nothing left behind
    growth_mib = (peak - baseline) / 1024
    print(f"{needs}, filter_memory {filter_memory_mib} MiB: baseline {baseline / 1024:.1f} MiB, "
          f"peak {peak / 1024:.1f} MiB, growth {growth_mib:.1f} MiB for 16 x 30 MB")
    assert growth_mib <= bound_mib


DOT_HEAVY_BODY = b"".join(b".%06d a line that begins with a dot\r\n..two\r\n.\r\nplain %d\r\n" % (i, i)
                          for i in range(30000))  # about 1.6 MB, a quarter of its lines dots


@pytest.fixture()
def dot_mailstore():
    with Dovecot(users={"dave": "pw"}) as dc:
        dc.populate("dave", [mail("dots", DOT_HEAVY_BODY), mail("big", BIG_BODY),
                             mail("small", b"a short line\r\n" * 150)])
        yield dc


def test_spooled_messages_are_filtered_and_byte_identical(tmp_path, dot_mailstore):
    # Past filter_memory (64 KiB here) a message is spooled; the plugin still sees all of
    # it, and what comes out is the original plus the tag, dot lines and all.
    spool, extra = spool_limits(tmp_path, filter_memory=65536)
    with start(tmp_path, dot_mailstore.address, [behave(add="X-Behave: spooled")], extra) as pg:
        p = login(pg.port)
        got = {n: p.retr(n)[1] for n in (1, 2)}
        top = p.top(1, 7)[1]
        p.quit()
        assert "spooled to disk" in pg.log
    d = direct(dot_mailstore)
    want = {n: d.retr(n)[1] for n in (1, 2)}
    want_top = d.top(1, 7)[1]
    d.quit()
    for n in (1, 2):
        assert split(got[n])[0] == split(want[n])[0] + [b"X-Behave: spooled"]
        assert split(got[n])[1] == split(want[n])[1]
    assert split(top)[0] == split(want_top)[0] + [b"X-Behave: spooled"]
    assert split(top)[1] == split(want_top)[1]
    assert list(spool.iterdir()) == []


def test_spooled_messages_over_max_filter_size_pass_unfiltered(tmp_path, dot_mailstore):
    # Spooled, then too large after all: what was spooled goes out, then the rest streams,
    # byte-identical; TOP gets the lines it asked for.
    _, extra = spool_limits(tmp_path, filter_memory=65536, max_filter_size=1048576)
    with start(tmp_path, dot_mailstore.address, [behave(add="X-Behave: tagged")], extra) as pg:
        p = login(pg.port)
        got = {n: p.retr(n)[1] for n in (1, 2)}
        top = p.top(1, 20)[1]
        p.quit()
        assert "passed unfiltered" in pg.log
    d = direct(dot_mailstore)
    assert got == {n: d.retr(n)[1] for n in (1, 2)}
    assert top == d.top(1, 20)[1]
    d.quit()


def test_a_spool_that_fails_is_a_temporary_failure(tmp_path, dot_mailstore):
    # The spool directory goes away after start-up: the message can't be filtered now, so
    # the client gets -ERR [SYS/TEMP], the session goes on, and nothing is lost. Message 3
    # (2 KB) arrives whole in one read, so the spool fails after its end was seen.
    spool, extra = spool_limits(tmp_path, filter_memory=1024)
    with start(tmp_path, dot_mailstore.address, [behave(add="X-Behave: tagged")], extra) as pg:
        spool.rmdir()
        p = login(pg.port)
        for n in (3, 1):
            started = time.monotonic()
            with pytest.raises(poplib.error_proto, match=r"SYS/TEMP"):
                p.retr(n)
            assert time.monotonic() - started < 5
        assert p.stat()[0] == 3
        p.dele(1)
        p.rset()  # the client would retry; the message is still there
        p.quit()
        assert "could not spool" in pg.log
    d = direct(dot_mailstore)
    assert d.stat()[0] == 3
    d.quit()
