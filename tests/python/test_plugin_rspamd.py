"""The rspamd plugin without popgate: `python3 -m popgate check` and popgate.testing.check
on .eml files against a real rspamd (pgtest.rspamd), the header fields it writes, what
it tells rspamd, the keep-alive pool (against a fake: rspamd 3.4 closes every
connection), timeouts and garbage, and the errors bad options give."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "support"))

from pgtest.rspamd import (STALL, FakeRspamd, Rspamd, check as rspamd_check,  # noqa: E402
                           http_answer, scan_answer)

import popgate  # noqa: E402
from popgate import testing  # noqa: E402
from popgate.plugins import rspamd as rs  # noqa: E402

PLUGIN = "python:popgate.plugins.rspamd"
DATA = Path(__file__).resolve().parent / "data" / "rspamd"


@pytest.fixture(scope="module")
def rspamd():
    with Rspamd() as server:
        yield server


@pytest.fixture
def run(python_dir: Path):
    def run(*args: object) -> subprocess.CompletedProcess[bytes]:
        env = dict(os.environ, PYTHONPATH=str(python_dir))
        return subprocess.run(["/usr/bin/python3", "-m", "popgate", *map(str, args)],
                              capture_output=True, env=env, timeout=60)

    return run


def lines(done: subprocess.CompletedProcess[bytes]) -> list[str]:
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout.decode().splitlines()


# -- against the real rspamd -------------------------------------------------------------

def test_check_gtube_is_a_reject_with_score_and_symbols(run, rspamd):
    out = lines(run("check", PLUGIN, DATA / "gtube.eml", "--option", f"url={rspamd.url}"))
    assert out == ["reject: rspamd: reject, score 15.00 / 15.00: GTUBE(0.00)"]


def test_check_gtube_with_reject_tag_adds_the_fields(run, rspamd):
    out = lines(run("check", PLUGIN, DATA / "gtube.eml", "--option", f"url={rspamd.url}",
                    "--option", "reject=tag", "--option", "subject_prefix=[SPAM] "))
    assert out == ["pass",
                   "+ X-Spamd-Result: default: True [15.00 / 15.00]; GTUBE(0.00)[]",
                   "+ X-Rspamd-Score: 15.00",
                   "+ X-Spam: Yes",
                   "- Subject: Test spam mail (GTUBE)",
                   "+ Subject: [SPAM] Test spam mail (GTUBE)"]


def test_check_ham_gets_the_fields_rspamds_milter_headers_would_write(run, rspamd):
    out = lines(run("check", PLUGIN, DATA / "ham.eml", "--option", f"url={rspamd.url}"))
    assert out[0] == "pass"
    assert [line.split(":", 1)[0] for line in out[1:]] == ["+ X-Spamd-Result",
                                                           "+ X-Rspamd-Score"]
    ours = out[1].split(": ", 1)[1]
    # The same request headers as the plugin sends for popgate.testing's session.
    own = rspamd_check(rspamd.url, (DATA / "ham.eml").read_bytes(),
                       {"Deliver-To": "user", "From": "bob@example.org"})
    theirs = " ".join(own["milter"]["add_headers"]["X-Spamd-Result"]["value"].split())
    assert sorted(ours.split("; ")[1:]) == sorted(theirs.split("; ")[1:])
    assert ours.split("; ")[0] == theirs.split("; ")[0] == (
        "default: False [%.2f / 15.00]" % own["score"])
    # The envelope sender from Return-Path reached rspamd: it compared it with From.
    assert "FROM_EQ_ENVFROM(0.00)[]" in ours


def test_check_top_is_not_scanned(run, rspamd):
    assert lines(run("check", PLUGIN, DATA / "gtube.eml", "--option", f"url={rspamd.url}",
                     "--top", "5")) == ["pass"]


@pytest.mark.parametrize("name, prefix, subject", [
    ("add_header.eml", "", "second"),
    ("add_header.eml", "[SPAM] ", "[SPAM] second"),
    ("rewrite_subject.eml", "", "*** SPAM *** third"),  # rspamd's own, from its answer
    ("rewrite_subject.eml", "[SPAM] ", "*** SPAM *** third"),
])
def test_spam_actions_tag_and_set_the_subject(rspamd, name, prefix, subject):
    result = testing.check(PLUGIN, DATA / name,
                           options={"url": rspamd.url, "subject_prefix": prefix})
    assert result.verdict == "pass"
    headers = result.message.headers
    assert headers.get("X-Spam") == "Yes"
    assert headers.get("Subject") == subject
    assert headers.get("X-Spamd-Result").startswith("default: False [")
    assert "GTUBE(0.00)[]" in headers.get("X-Spamd-Result")


def test_rspamd_down_raises_naming_the_url(run, rspamd):
    with Rspamd() as stopped:
        url = stopped.url
    done = run("check", PLUGIN, DATA / "ham.eml", "--option", f"url={url}")
    assert done.returncode == 2
    assert f"RspamdError: rspamd at {url}: can't connect" in done.stderr.decode()


# -- the fields, and what rspamd is told -------------------------------------------------

def test_spamd_result_orders_by_absolute_score_then_name_and_joins_options():
    scan = rs.Scan("add header", 7.25, 15.0, (
        rs.Symbol("SMALL", 0.5, ()), rs.Symbol("B_ZERO", 0.0, ()),
        rs.Symbol("A_ZERO", 0.0, ("x", "y")), rs.Symbol("BIG_HAM", -3.0, ("a\r\nb",)),
        rs.Symbol("BIG", 9.75, ("one",))), None)
    assert rs.spamd_result(scan) == (
        "default: False [7.25 / 15.00]; BIG(9.75)[one]; BIG_HAM(-3.00)[a b]; "
        "SMALL(0.50)[]; A_ZERO(0.00)[x,y]; B_ZERO(0.00)[]")
    assert rs.score_text(scan) == "7.25"
    assert scan.is_spam
    assert scan.summary() == ("rspamd: add header, score 7.25 / 15.00: BIG(9.75), "
                              "BIG_HAM(-3.00), SMALL(0.50)")


@pytest.mark.parametrize("user, return_path, expected", [
    ("dave", None, [("Deliver-To", "dave")]),
    ("dave@example.org", "<bob@example.org>",
     [("Deliver-To", "dave@example.org"), ("Rcpt", "dave@example.org"),
      ("From", "bob@example.org")]),
    ("", "<>", []),  # no user yet; a bounce's null sender says nothing
    ("a b", None, []),  # not something to put in a request header
])
def test_request_headers(user, return_path, expected):
    data = (f"Return-Path: {return_path}\r\n" if return_path else "") + "Subject: x\r\n\r\nhi\r\n"
    msg = testing.message(data.encode())
    session = testing.session(user)
    assert rs.request_headers(session, msg) == expected


@pytest.mark.parametrize("body, said", [
    (b"not json", "not JSON"),
    (b"[1, 2]", "not a JSON object"),
    (b'{"action": "no action", "score": "high", "required_score": 15}', "score is not a number"),
    (b'{"action": "no action", "score": 1, "required_score": 15, "symbols": []}',
     "symbols is not an object"),
    (b'{"error": "Message is empty"}', "rspamd: Message is empty"),
    (b'{"action": "teleport", "score": 1, "required_score": 15}', "unknown action"),
])
def test_garbage_answers_raise(body, said):
    with pytest.raises(rs.RspamdError, match=said):
        rs.parse_scan(body)


# -- the connection pool, timeouts, garbage on the wire (a fake rspamd) -------------------

def configured(url: str, **options: object) -> rs.Rspamd:
    plugin = rs.Rspamd()
    plugin.configure({"url": url, **options})
    return plugin


async def scan_several(plugin: rs.Rspamd, count: int) -> list[popgate.Verdict | None]:
    """`count` messages on one loop, then done() as popgate calls it at shutdown."""
    data = (DATA / "ham.eml").read_bytes()
    session = testing.session("dave")
    try:
        return [await plugin.message(session, testing.message(data, number=n))
                for n in range(1, count + 1)]
    finally:
        await plugin.done()


def wait_closed(fake: FakeRspamd, count: int) -> list[int]:
    deadline = time.monotonic() + 5
    while len(fake.peer_closed) < count and time.monotonic() < deadline:
        time.sleep(0.02)
    return sorted(fake.peer_closed)


def test_one_connection_per_loop_serves_many_messages():
    answer = http_answer(scan_answer("reject", 20.0, symbols={"FAKE": 20.0}))
    with FakeRspamd(lambda conn, n, request: answer) as fake:
        plugin = configured(fake.url)
        verdicts = asyncio.run(scan_several(plugin, 3))
        assert [v.kind if v else None for v in verdicts] == ["reject"] * 3
        assert [len(c) for c in fake.connections] == [3]
        assert wait_closed(fake, 1) == [0]  # done() closed the idle connection
        asyncio.run(scan_several(plugin, 2))  # a new loop: a connection of its own
        assert [len(c) for c in fake.connections] == [3, 2]
        assert plugin.client.opened == 2


@pytest.mark.parametrize("answer", [
    http_answer(scan_answer(), keep_alive=False),  # as rspamd 3.4 answers
    b"HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(scan_answer()), scan_answer()),
])
def test_a_connection_the_server_closes_is_not_reused(answer):
    with FakeRspamd(lambda conn, n, request: answer) as fake:
        asyncio.run(scan_several(configured(fake.url), 3))
        assert [len(c) for c in fake.connections] == [1, 1, 1]


def test_a_reused_connection_closed_by_the_server_is_retried_once_only():
    # Every connection answers once, then closes on the next request: each reuse fails,
    # and the retry on a fresh connection goes through.
    answer = http_answer(scan_answer())
    with FakeRspamd(lambda conn, n, request: answer if n == 0 else None) as fake:
        asyncio.run(scan_several(configured(fake.url), 3))
        assert [len(c) for c in fake.connections] == [2, 2, 1]
    # A fresh connection closed without an answer is an error, not retried.
    with FakeRspamd(lambda conn, n, request: None) as fake:
        with pytest.raises(rs.RspamdError, match="closed the connection without answering"):
            asyncio.run(scan_several(configured(fake.url), 1))
        assert len(fake.connections) == 1


def test_a_stall_ends_at_scan_timeout_and_the_connection_is_closed():
    with FakeRspamd(lambda conn, n, request: STALL) as fake:
        with pytest.raises(rs.RspamdError, match=r"no answer within 0\.5 s"):
            asyncio.run(scan_several(configured(fake.url, scan_timeout=0.5), 1))
        assert len(fake.connections) == 1


def test_chunked_answers_and_a_path_prefix_are_understood():
    body = scan_answer("add header", 6.0)
    chunked = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" +
               b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in (body[:10], body[10:]))
               + b"0\r\n\r\n")
    with FakeRspamd(lambda conn, n, request: chunked) as fake:
        result = testing.check(PLUGIN, DATA / "ham.eml", options={"url": fake.url + "/rs/"})
        assert result.message.headers.get("X-Spam") == "Yes"
        assert fake.requests[0].request_line == "POST /rs/checkv2 HTTP/1.1"


# -- options ----------------------------------------------------------------------------

@pytest.mark.parametrize("options, expected", [
    ({"url": "ftp://h"}, "option url 'ftp://h': expected http://HOST[:PORT][/PATH]"),
    ({"url": "https://h"}, "https is not supported"),
    ({"url": "http://u:p@h"}, "user and password are not supported"),
    ({"url": "http://h:port"}, "Port could not be cast"),
    ({"url": "http://h/x?y=1"}, "no query or fragment"),
    ({"url": "http://h x"}, "must not contain spaces"),
    ({"url": ""}, "option url must be a non-empty string"),
    ({"reject": True}, "option reject must be"),
    ({"subject_prefix": "[S]\r\nBcc: x"}, "must not contain CR, LF or NUL"),
    ({"subject_prefix": "x" * 201}, "longer than 200 bytes"),
    ({"scan_timeout": True}, "option scan_timeout must be a number"),
    ({"scan_timeout": -1}, "more than 0 and at most 3600"),
    ({"timeout": 5}, "unknown option timeout"),  # popgate's own key, never the plugin's
])
def test_bad_options(options, expected):
    with pytest.raises(ValueError, match=None) as failure:
        testing.check(PLUGIN, DATA / "ham.eml", options=options)
    assert expected in str(failure.value)
    assert str(failure.value).startswith("rspamd: ")


def test_defaults():
    plugin = rs.Rspamd()
    plugin.configure({})
    assert (plugin.endpoint.host, plugin.endpoint.port, plugin.endpoint.path) == (
        "127.0.0.1", 11333, "")
    assert (plugin.reject, plugin.subject_prefix, plugin.scan_timeout) == (
        "quarantine", "", 20.0)
    ipv6 = rs.parse_url("http://[::1]/")
    assert (ipv6.host, ipv6.port, ipv6.authority) == ("::1", 11333, "[::1]:11333")


def test_check_cli_reports_a_bad_option_with_exit_2(run):
    done = run("check", PLUGIN, DATA / "ham.eml", "--option", "reject=drop")
    assert done.returncode == 2
    assert "rspamd: option reject must be \"quarantine\" or \"tag\", not 'drop'" in \
        done.stderr.decode()
