"""The rspamd plugin (python:popgate.plugins.rspamd) end to end: a real Dovecot, a real
rspamd (Debian's, pgtest.rspamd), popgate, and poplib as the client; a fake rspamd only
for what the real one can't do on demand (keep-alive, a stall, garbage).

What must hold: rspamd's reject (GTUBE) quarantines the original byte for byte and the
client gets popgate's notice; with reject = "tag" the message is delivered with X-Spam:
Yes; ham gets X-Rspamd-Score and the X-Spamd-Result rspamd's own milter_headers would
write, and no X-Spam; forged fields of those names are removed; rspamd stopped, stalling
or answering garbage follows on_error (pass: untouched; tempfail: -ERR, the message stays
on the server); connections are reused when the server keeps them open, and one the
server closed is retried once; a bad option stops start-up with exit status 2.
"""

from __future__ import annotations

import poplib
import re
import socket
import time
from pathlib import Path

import pytest

from pgtest.config import start_popgate
from pgtest.dovecot import Dovecot
from pgtest.pop3 import login, retr
from pgtest.popgate import Popgate, PopgateError
from pgtest.rspamd import (STALL, FakeRspamd, Rspamd, check, gtube_message, ham_message,
                           http_answer, scan_answer)

poplib._MAXLINE = 1 << 20

PLUGIN = "python:popgate.plugins.rspamd"
HAM = ham_message("ham-1")
FORGED = HAM.replace(b"Subject: Lunch", b"X-Spam: No\r\nX-Spamd-Result: forged\r\n"
                     b"X-Rspamd-Score: -100.00\r\nSubject: Lunch", 1)
GTUBE = gtube_message("reject", "gtube-1")
ADD_HEADER = gtube_message("add header", "gtube-2", subject="second")
REWRITE = gtube_message("rewrite subject", "gtube-3", subject="third")
MESSAGES = [HAM, GTUBE, ADD_HEADER, REWRITE, FORGED]


@pytest.fixture(scope="module")
def dovecot():
    with Dovecot(users={"dave": "pw"}) as dc:
        yield dc


@pytest.fixture()
def mailstore(dovecot):
    dovecot.reset("dave", MESSAGES)
    return dovecot


@pytest.fixture(scope="module")
def rspamd():
    with Rspamd() as rs:
        yield rs


def start(tmp_path: Path, upstream: str, url: str | None = None, extra: str = "",
          **options) -> Popgate:
    plugin = {"use": PLUGIN, **({"url": url} if url else {}), **options}
    return start_popgate(tmp_path, upstream, [plugin], extra)


def direct(mailstore: Dovecot, number: int) -> bytes:
    """The message as Dovecot serves it, without popgate."""
    host, port = mailstore.address.rsplit(":", 1)
    p = poplib.POP3(host, int(port), timeout=30)
    p.user("dave")
    p.pass_("pw")
    data = retr(p, number)
    p.quit()
    mailstore.wait_until_idle("dave")
    return data


def head(message: bytes) -> list[tuple[str, str]]:
    """The header fields, unfolded."""
    block = message.split(b"\r\n\r\n", 1)[0].decode("utf-8", "surrogateescape")
    block = re.sub(r"\r\n[ \t]+", " ", block)
    return [(name, value.strip()) for name, value in
            (line.split(":", 1) for line in block.split("\r\n"))]


def fields(message: bytes, name: str) -> list[str]:
    return [value for key, value in head(message) if key.lower() == name.lower()]


def symbols(result: str) -> tuple[str, list[str]]:
    """X-Spamd-Result as (verdict part, sorted symbol entries): rspamd orders symbols of
    equal score arbitrarily, and folds the field with different whitespace."""
    parts = [part.strip() for part in re.sub(r"\s+", " ", result).split(";")]
    return parts[0], sorted(parts[1:])


def quarantined(path: Path) -> list[bytes]:
    new = path / "new"
    return [f.read_bytes() for f in sorted(new.iterdir())] if new.is_dir() else []


def test_gtube_is_quarantined_byte_for_byte_and_ham_tagged_as_milter_headers_would(
        tmp_path, mailstore, rspamd):
    original = direct(mailstore, 2)
    assert original == GTUBE
    quarantine = tmp_path / "quarantine"
    with start(tmp_path, mailstore.address, rspamd.url,
               extra=f'[quarantine]\npath = "{quarantine}"\n') as pg:
        p = login(pg.port)
        notice = retr(p, 2)
        assert re.search(rb"X-Popgate-Quarantine-Id: \S+", notice), notice
        assert b"rspamd: reject, score 15.00 / 15.00: GTUBE" in notice, notice
        assert quarantined(quarantine) == [original]

        ham = retr(p, 1)
        p.quit()
    # Ham: everything as Dovecot has it, plus two fields at the end of the header block.
    tagged = head(ham)
    assert [name for name, _ in tagged[-2:]] == ["X-Spamd-Result", "X-Rspamd-Score"]
    assert ham.split(b"\r\n\r\n", 1)[1] == HAM.split(b"\r\n\r\n", 1)[1]
    assert tagged[:-2] == head(HAM)
    assert fields(ham, "X-Spam") == []
    # What rspamd's own milter_headers writes for the same message and request headers.
    own = check(rspamd.url, HAM, {"Deliver-To": "dave"})
    expected = own["milter"]["add_headers"]["X-Spamd-Result"]["value"]
    assert symbols(fields(ham, "X-Spamd-Result")[0]) == symbols(expected)
    assert fields(ham, "X-Rspamd-Score") == ["%.2f" % own["score"]]
    assert own["action"] == "no action"


def test_reject_tag_delivers_spam_tagged_and_forged_fields_go(tmp_path, mailstore, rspamd):
    quarantine = tmp_path / "quarantine"
    with start(tmp_path, mailstore.address, rspamd.url, reject="tag",
               subject_prefix="[SPAM] ",
               extra=f'[quarantine]\npath = "{quarantine}"\n') as pg:
        p = login(pg.port)
        gtube, add_header, rewrite, forged = (retr(p, n) for n in (2, 3, 4, 5))
        p.quit()
    assert quarantined(quarantine) == []
    assert fields(gtube, "X-Spam") == ["Yes"]
    assert fields(gtube, "X-Spamd-Result") == ["default: True [15.00 / 15.00]; GTUBE(0.00)[]"]
    assert fields(gtube, "X-Rspamd-Score") == ["15.00"]
    assert fields(gtube, "Subject") == ["[SPAM] Test spam mail (GTUBE)"]
    assert GTUBE.split(b"\r\n\r\n", 1)[1] == gtube.split(b"\r\n\r\n", 1)[1]
    # rspamd's "add header": spam, not a reject.
    assert fields(add_header, "X-Spam") == ["Yes"]
    assert fields(add_header, "X-Spamd-Result")[0].startswith("default: False [")
    assert fields(add_header, "Subject") == ["[SPAM] second"]
    # "rewrite subject": the Subject rspamd sent back (its default template).
    assert fields(rewrite, "X-Spam") == ["Yes"]
    assert fields(rewrite, "Subject") == ["*** SPAM *** third"]
    # A sender's own X-Spam, X-Spamd-Result and X-Rspamd-Score do not survive.
    assert fields(forged, "X-Spam") == []
    assert len(fields(forged, "X-Spamd-Result")) == 1
    assert fields(forged, "X-Spamd-Result")[0].startswith("default: False [")
    assert fields(forged, "X-Rspamd-Score") != ["-100.00"]
    assert fields(forged, "Subject") == ["Lunch on Thursday"]


def test_rspamd_stopped_follows_on_error(tmp_path, mailstore):
    with Rspamd() as rs:
        (tmp_path / "pass").mkdir()
        (tmp_path / "tempfail").mkdir()
        with start(tmp_path / "pass", mailstore.address, rs.url) as passing, \
                start(tmp_path / "tempfail", mailstore.address, rs.url,
                      on_error="tempfail") as failing:
            p = login(passing.port)
            assert fields(retr(p, 1), "X-Rspamd-Score")  # rspamd up: tagged
            p.quit()
            mailstore.wait_until_idle("dave")
            rs.stop()

            p = login(passing.port)  # pass: delivered untouched
            assert retr(p, 1) == HAM
            assert retr(p, 3) == ADD_HEADER
            p.quit()
            passing.wait_for_log(r"rspamd at http://127\.0\.0\.1:\d+: can't connect")
            mailstore.wait_until_idle("dave")

            p = login(failing.port)  # tempfail: -ERR, and the message stays
            with pytest.raises(poplib.error_proto, match=r"\[SYS/TEMP\]"):
                p.retr(1)
            p.dele(2)
            p.quit()
            mailstore.wait_until_idle("dave")
            assert mailstore.message_count("dave") == len(MESSAGES) - 1

            rs.start()  # back on the same port: tagged again
            p = login(failing.port)
            assert fields(retr(p, 1), "X-Rspamd-Score")
            p.quit()


def test_a_stalling_rspamd_times_out_into_on_error(tmp_path, mailstore):
    with FakeRspamd(lambda conn, n, request: STALL) as fake:
        # The plugin's own scan_timeout: its error, then on_error = "pass".
        with start(tmp_path, mailstore.address, fake.url, scan_timeout=1, timeout=10) as pg:
            p = login(pg.port)
            began = time.monotonic()
            assert retr(p, 1) == HAM
            assert 0.9 < time.monotonic() - began < 5.0  # 1 s, with room for a loaded machine
            p.quit()
            pg.wait_for_log(r"rspamd at http://127\.0\.0\.1:\d+: no answer within 1 s")
        # popgate's own timeout first: the hook is cancelled, on_error = "tempfail".
        mailstore.wait_until_idle("dave")
        with start(tmp_path, mailstore.address, fake.url, timeout=1,
                   on_error="tempfail") as pg:
            p = login(pg.port)
            began = time.monotonic()
            with pytest.raises(poplib.error_proto, match=r"\[SYS/TEMP\]"):
                p.retr(2)
            assert time.monotonic() - began < 5.0
            p.quit()
            pg.wait_for_log(r"timed out \(1000 ms\) in RETR 2")
        mailstore.wait_until_idle("dave")
        assert mailstore.message_count("dave") == len(MESSAGES)
        deadline = time.monotonic() + 5
        while len(fake.peer_closed) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert sorted(fake.peer_closed) == [0, 1]  # neither connection was left open


@pytest.mark.parametrize("answer, said", [
    (http_answer(b"<html>surprise</html>"), "rspamd's answer is not JSON"),
    (b"SPAMD/1.1 0 EX_OK\r\n\r\n", "not an HTTP answer"),
    (http_answer(b'{"action": "explode", "score": 1, "required_score": 15}'),
     "unknown action 'explode'"),
    (http_answer(b'{"error": "bad request"}', status="400 Bad Request"), "HTTP 400"),
])
def test_garbage_from_rspamd_follows_on_error(tmp_path, mailstore, answer, said):
    with FakeRspamd(lambda conn, n, request: answer) as fake, \
            start(tmp_path, mailstore.address, fake.url, on_error="tempfail") as pg:
        p = login(pg.port)
        with pytest.raises(poplib.error_proto, match=r"\[SYS/TEMP\]"):
            p.retr(1)
        p.quit()
        pg.wait_for_log(re.escape(said))
    mailstore.wait_until_idle("dave")
    assert mailstore.message_count("dave") == len(MESSAGES)


def test_connections_are_reused_and_one_closed_meanwhile_is_retried_once(tmp_path, mailstore):
    answer = http_answer(scan_answer("add header", 7.5, symbols={"FAKE_SPAM": 7.5}))
    with FakeRspamd(lambda conn, n, request: answer) as fake, \
            start(tmp_path, mailstore.address, fake.url) as pg:
        p = login(pg.port)
        for n in (1, 2, 3):
            got = retr(p, n)
            assert fields(got, "X-Spam") == ["Yes"]
            assert fields(got, "X-Spamd-Result") == [
                "default: False [7.50 / 15.00]; FAKE_SPAM(7.50)[]"]
        p.top(4, 0)  # a preview is not scanned
        p.quit()
        p = login(pg.port)  # another session shares the pool
        retr(p, 4)
        p.quit()
        assert [len(requests) for requests in fake.connections] == [4]
        first = fake.requests[0]
        assert first.request_line == "POST /checkv2 HTTP/1.1"
        assert first.headers["connection"] == "keep-alive"
        assert first.headers["deliver-to"] == "dave"
        assert "user" not in first.headers and "ip" not in first.headers
        assert first.body == HAM

    # A server that drops a connection when the next request comes (as one that closed
    # it while idle would): each reuse fails once and goes through on a fresh connection.
    def one_answer_per_connection(conn: int, number: int, request):
        return answer if number == 0 else None

    with FakeRspamd(one_answer_per_connection) as fake, \
            start(tmp_path, mailstore.address, fake.url, on_error="tempfail") as pg:
        p = login(pg.port)
        for n in (1, 2, 3):
            assert fields(retr(p, n), "X-Spam") == ["Yes"]
        p.quit()
        assert [len(requests) for requests in fake.connections] == [2, 2, 1]


def test_real_rspamd_closes_each_connection_and_the_plugin_does_not_retry(
        tmp_path, mailstore, rspamd):
    # rspamd 3.4's normal worker answers "Connection: close": one connection per message,
    # none wasted on a reuse that would fail.
    with start(tmp_path, mailstore.address, rspamd.url, reject="tag") as pg:
        before = rspamd.connections_accepted()
        p = login(pg.port)
        for n in (1, 2, 3):
            assert fields(retr(p, n), "X-Rspamd-Score")
        p.quit()
    assert rspamd.connections_accepted() - before == 3


@pytest.mark.parametrize("option, expected", [
    ({"url": "ftp://127.0.0.1:11333"}, "option url 'ftp://127.0.0.1:11333': expected http://"),
    ({"url": "https://127.0.0.1:11333"}, "https is not supported"),
    ({"url": "http://127.0.0.1:99999"}, "Port out of range"),
    ({"url": "http://"}, "no host"),
    ({"url": 11333}, "option url must be a non-empty string"),
    ({"reject": "drop"}, "option reject must be \"quarantine\" or \"tag\", not 'drop'"),
    ({"subject_prefix": 3}, "option subject_prefix must be a string"),
    ({"scan_timeout": "5"}, "option scan_timeout must be a number of seconds"),
    ({"scan_timeout": 0}, "option scan_timeout must be more than 0"),
    ({"host": "127.0.0.1"}, "unknown option host"),
])
def test_a_bad_option_stops_start_up_with_exit_2(tmp_path, mailstore, option, expected):
    with pytest.raises(PopgateError) as failure:
        start(tmp_path, mailstore.address, **option)
    text = str(failure.value)
    assert "exited with 2 before listening" in text, text
    # popgate prints the traceback; the plugin's own error names it and the option.
    assert re.search(r"ValueError: rspamd: .*" + re.escape(expected), text), text


def test_the_default_url_is_rspamds_normal_worker(tmp_path, mailstore):
    # Nothing listens on 127.0.0.1:11333 here (no system rspamd runs in the tests), so
    # the default shows in the error.
    if check_port_open(11333):
        pytest.skip("something listens on 127.0.0.1:11333")
    with start(tmp_path, mailstore.address) as pg:
        p = login(pg.port)
        assert retr(p, 1) == HAM
        p.quit()
        pg.wait_for_log(r"rspamd at http://127\.0\.0\.1:11333: can't connect")


def check_port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0
