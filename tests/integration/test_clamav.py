"""The clamav plugin (python:popgate.plugins.clamav) end to end: a real Dovecot, popgate,
poplib as the client, and a real clamd (pgtest.clamd: Debian's clamd with an EICAR
signature written by the test), over its unix socket and over TCP.

What must hold: an EICAR message (a plain body, a base64 attachment) is quarantined byte
for byte as Dovecot serves it and the client's notice names the virus; a clean message
passes byte for byte (with `header = true` it gains only X-Virus-Scanned, a forged one
replaced); a message over max_size is never sent to clamd, passes untouched and is
logged; clamd's own size limit below max_size, clamd stopped, a clamd that stalls past the
plugin's timeout and one that answers garbage all follow on_error (pass delivers,
tempfail gives -ERR and the message stays on the server); a bad option stops start-up
with exit status 2.
"""

from __future__ import annotations

import poplib
import re
import time
from pathlib import Path

import pytest

from pgtest.clamd import (EICAR, VIRUS_NAME, Clamd, FakeClamd, clean_message,
                          eicar_attachment_message, eicar_plain_message, padded)
from pgtest.config import write_config
from pgtest.dovecot import Dovecot
from pgtest.pop3 import login, retr
from pgtest.popgate import Popgate, PopgateError

poplib._MAXLINE = 1 << 20

PLUGIN = "python:popgate.plugins.clamav"
USERS = {"dave": "pw"}

PLAIN = eicar_plain_message()
ATTACHED = eicar_attachment_message()
CLEAN = clean_message()
MESSAGES = [PLAIN, ATTACHED, CLEAN]


@pytest.fixture(scope="module")
def dovecot():
    with Dovecot(users=USERS) as dc:
        yield dc


@pytest.fixture()
def mailstore(dovecot):
    dovecot.reset("dave", MESSAGES)
    return dovecot


@pytest.fixture(scope="module")
def clamd():
    # StreamMaxLength 1M: clamd's own size limit is reachable without 25 MiB messages.
    with Clamd(tcp=True, unix_socket=True, stream_max_length="1M") as cd:
        yield cd


def config(tmp_path: Path, upstream: str, options: dict[str, object]) -> Path:
    quarantine = tmp_path / "quarantine"
    return write_config(tmp_path, upstream, [{"use": PLUGIN, **options}],
                        f'[quarantine]\npath = "{quarantine}"\n')


def start(tmp_path: Path, upstream: str, **options: object) -> Popgate:
    return Popgate.start(["-c", str(config(tmp_path, upstream, options))])


def direct(mailstore: Dovecot) -> list[bytes]:
    """Every message as Dovecot serves it, straight (no popgate)."""
    host, port = mailstore.address.rsplit(":", 1)
    p = poplib.POP3(host, int(port), timeout=30)
    p.user("dave")
    p.pass_(USERS["dave"])
    got = [retr(p, n) for n in range(1, p.stat()[0] + 1)]
    p.quit()
    mailstore.wait_until_idle("dave")
    return got


def quarantined(tmp_path: Path) -> list[bytes]:
    new = tmp_path / "quarantine" / "new"
    return sorted(f.read_bytes() for f in new.iterdir()) if new.is_dir() else []


def notice_id(notice: bytes) -> str:
    found = re.search(rb"X-Popgate-Quarantine-Id: (\S+)", notice)
    assert found, notice
    return found[1].decode()


@pytest.mark.parametrize("transport", ["unix", "tcp"])
def test_eicar_is_quarantined_byte_for_byte_and_the_notice_names_it_a_clean_message_passes(
        tmp_path, mailstore, clamd, transport):
    served = direct(mailstore)
    assert served == MESSAGES
    target = str(clamd.socket_path) if transport == "unix" else clamd.address
    scanned = len(clamd.scans())
    with start(tmp_path, mailstore.address, clamd=target, on_error="tempfail") as pg:
        p = login(pg.port)
        notices = [retr(p, 1), retr(p, 2)]
        got_clean = retr(p, 3)
        assert p.stat()[0] == 3
        p.quit()
    for notice in notices:
        assert f"virus found: {VIRUS_NAME}".encode() in notice, notice
        assert EICAR not in notice
    assert notice_id(notices[0]) != notice_id(notices[1])
    # The originals as Dovecot serves them, byte for byte, and nothing else.
    assert quarantined(tmp_path) == sorted(served[:2])
    assert got_clean == served[2] == CLEAN
    # clamd really scanned the three (its own log), through the socket asked for.
    lines = clamd.wait_for_scans(scanned + 3)[scanned:]
    via = "instream(local)" if transport == "unix" else "instream(127.0.0.1@"
    assert len(lines) == 3 and all(via in line for line in lines), lines
    assert sum(VIRUS_NAME in line for line in lines) == 2
    assert sum(line.endswith(": OK") for line in lines) == 1


def test_with_header_a_clean_message_gains_only_x_virus_scanned_and_a_forged_one_goes(
        tmp_path, mailstore, clamd):
    forged = CLEAN.replace(b"\r\n\r\n", b"\r\nX-Virus-Scanned: clean, trust me\r\n\r\n", 1)
    mailstore.reset("dave", [CLEAN, forged])
    with start(tmp_path, mailstore.address, clamd=clamd.address, header=True) as pg:
        p = login(pg.port)
        got = [retr(p, 1), retr(p, 2)]
        p.quit()
    tagged = CLEAN.replace(b"\r\n\r\n", b"\r\nX-Virus-Scanned: clamav\r\n\r\n", 1)
    assert got == [tagged, tagged]


def test_a_fetchmail_style_top_of_an_infected_message_gets_the_notice(
        tmp_path, mailstore, clamd):
    # TOP runs the chain on the whole message: a preview can't carry the virus past it.
    with start(tmp_path, mailstore.address, clamd=clamd.address) as pg:
        p = login(pg.port)
        preview = b"\r\n".join(p.top(2, 99999999)[1])
        p.quit()
    assert EICAR not in preview and b"eicar.com" not in preview, preview
    assert f"virus found: {VIRUS_NAME}".encode() in preview, preview


def test_a_message_over_max_size_is_not_scanned_passes_untouched_and_is_logged(
        tmp_path, mailstore, clamd):
    big = padded(eicar_plain_message("eicar-big"), 300_000)
    mailstore.reset("dave", [big, PLAIN])
    scanned = len(clamd.wait_for_scans(0))
    with start(tmp_path, mailstore.address, clamd=clamd.address, max_size=200_000,
               on_error="tempfail") as pg:
        p = login(pg.port)
        assert retr(p, 1) == big  # EICAR and all: never sent to clamd, never cut
        pg.wait_for_log(rf"RETR 1: {len(big)} bytes, over max_size \(200000\): passed unscanned")
        assert VIRUS_NAME.encode() in retr(p, 2)  # a smaller one still is scanned
        p.quit()
    assert len(clamd.wait_for_scans(scanned + 1)) == scanned + 1
    time.sleep(0.3)
    assert len(clamd.scans()) == scanned + 1
    assert quarantined(tmp_path) == [PLAIN]


def test_over_max_size_with_header_says_not_scanned(tmp_path, mailstore, clamd):
    big = padded(clean_message("clean-big"), 50_000)
    mailstore.reset("dave", [big])
    with start(tmp_path, mailstore.address, clamd=clamd.address, max_size=40_000,
               header=True) as pg:
        p = login(pg.port)
        got = retr(p, 1)
        p.quit()
    assert got == big.replace(
        b"\r\n\r\n", b"\r\nX-Virus-Scanned: clamav (not scanned: over max_size)\r\n\r\n", 1)


def test_clamds_own_size_limit_below_max_size_is_an_error_not_a_pass(
        tmp_path, mailstore, clamd):
    # clamd's StreamMaxLength is 1M; max_size is the default 25 MiB. clamd answers
    # "INSTREAM size limit exceeded. ERROR": never taken for a clean scan.
    big = padded(eicar_plain_message("eicar-1m"), 1_200_000)
    mailstore.reset("dave", [big])
    for target in (clamd.address, str(clamd.socket_path)):
        with start(tmp_path, mailstore.address, clamd=target, on_error="tempfail") as pg:
            p = login(pg.port)
            with pytest.raises(poplib.error_proto, match=r"\[SYS/TEMP\]"):
                p.retr(1)
            pg.wait_for_log(r"INSTREAM size limit exceeded")
            p.quit()
        mailstore.wait_until_idle("dave")
        assert mailstore.message_count("dave") == 1
    assert quarantined(tmp_path) == []


def test_clamd_stopped_pass_delivers_tempfail_keeps_the_message_and_back_again_it_scans(
        tmp_path, mailstore):
    with Clamd(tcp=True, unix_socket=True) as cd:
        cd.stop()
        for transport in (cd.address, str(cd.socket_path)):
            tmp = tmp_path / transport.replace("/", "_")
            tmp.mkdir()
            with start(tmp, mailstore.address, clamd=transport, on_error="pass") as pg:
                p = login(pg.port)
                assert retr(p, 1) == PLAIN  # unscanned, as on_error = "pass" says
                pg.wait_for_log(rf"can't connect to clamd at {re.escape(transport)}")
                p.quit()
            assert quarantined(tmp) == []

        with start(tmp_path, mailstore.address, clamd=cd.address,
                   on_error="tempfail") as pg:
            p = login(pg.port)
            for number in (1, 2, 3):
                with pytest.raises(poplib.error_proto, match=r"\[SYS/TEMP\]"):
                    p.retr(number)
                p.dele(number)  # the client deletes nothing it never got...
            p.rset()
            p.quit()
            mailstore.wait_until_idle("dave")
            assert mailstore.message_count("dave") == 3  # ...and the server keeps all

            cd.start()  # the same port: the running popgate needs no restart
            p = login(pg.port)
            assert VIRUS_NAME.encode() in retr(p, 1)
            assert retr(p, 3) == CLEAN
            p.quit()
        assert quarantined(tmp_path) == [PLAIN]


@pytest.mark.parametrize("on_error", ["pass", "tempfail"])
def test_a_clamd_that_stalls_is_given_up_at_the_timeout(tmp_path, mailstore, on_error):
    with FakeClamd(answer=None) as fake:
        with start(tmp_path, mailstore.address, clamd=fake.address, timeout=1,
                   on_error=on_error) as pg:
            p = login(pg.port)
            began = time.monotonic()
            if on_error == "pass":
                assert retr(p, 1) == PLAIN
            else:
                with pytest.raises(poplib.error_proto, match=r"\[SYS/TEMP\]"):
                    p.retr(1)
            took = time.monotonic() - began
            pg.wait_for_log(r"timed out \(1000 ms\) in RETR 1")
            p.quit()
        assert fake.connections >= 2  # the probe at start-up, then the scan
    assert 0.9 < took < 4.0, took
    assert quarantined(tmp_path) == []
    if on_error == "tempfail":
        mailstore.wait_until_idle("dave")
        assert mailstore.message_count("dave") == 3


@pytest.mark.parametrize("answer, logged", [
    (b"stream: Something unexpected\0", "answered 'stream: Something unexpected'"),
    (b"", "closed the connection without an answer"),
    (b"UNKNOWN COMMAND\0", "answered 'UNKNOWN COMMAND'"),
])
def test_a_garbled_answer_follows_on_error(tmp_path, mailstore, answer, logged):
    with FakeClamd(answer=answer) as fake:
        with start(tmp_path, mailstore.address, clamd=fake.address,
                   on_error="tempfail") as pg:
            p = login(pg.port)
            with pytest.raises(poplib.error_proto, match=r"\[SYS/TEMP\]"):
                p.retr(3)
            pg.wait_for_log(re.escape(logged))
            p.quit()
    assert quarantined(tmp_path) == []


@pytest.mark.parametrize("option, expected", [
    ("clamd = 3310", "option clamd must be a string"),
    ('clamd = "localhost"', "option clamd must be HOST:PORT or a unix socket's absolute path"),
    ('clamd = "clamd.sock"', "option clamd must be HOST:PORT or a unix socket's absolute path"),
    ('clamd = "127.0.0.1:70000"', "port 70000 is not between 1 and 65535"),
    ('max_size = "25M"', "option max_size must be an integer (bytes), not '25M'"),
    ("max_size = 0", "option max_size must be positive, not 0"),
    ('header = "yes"', "option header must be true or false, not 'yes'"),
    ("max_szie = 100", "unknown option max_szie"),
])
def test_a_bad_option_stops_start_up_with_exit_2(tmp_path, mailstore, option, expected):
    path = tmp_path / "popgate.toml"
    path.write_text(f'[upstream]\naddress = "{mailstore.address}"\n'
                    f'[[listen]]\naddress = "127.0.0.1:0"\n'
                    f'[[plugin]]\nuse = "{PLUGIN}"\n{option}\n')
    with pytest.raises(PopgateError) as failure:
        Popgate.start(["-c", str(path)])
    message = str(failure.value)
    assert "exited with 2 before listening" in message, message
    assert expected in message, message
    assert "clamav: " in message, message  # the plugin names itself
