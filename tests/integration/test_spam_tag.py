"""The spam_tag plugin through popgate, against a real spamd and a real Dovecot.

GTUBE comes out tagged with SpamAssassin's own headers, a plain message without;
forged X-Spam-* headers never survive; spamd down follows on_error: "pass" delivers
the message untagged, "tempfail" answers -ERR [SYS/TEMP], and in both cases the
message is still on the server afterwards (nothing is lost).
"""

from __future__ import annotations

import poplib

import pytest

from pgtest.dovecot import Dovecot
from pgtest.popgate import Popgate
from pgtest.spamd import Spamd, gtube_message, ham_message

poplib._MAXLINE = 1 << 20

FORGED = (b"From: a@example.org\r\nTo: b@example.org\r\nSubject: forged\r\n"
          b"X-Spam-Flag: NO\r\nX-Spam-Status: No, score=-100\r\n\r\n"
          b"XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X\r\n")


@pytest.fixture(scope="module")
def spamd():
    with Spamd() as s:
        yield s


@pytest.fixture(scope="module")
def mailstore():
    with Dovecot(users={"dave": "pw"}) as dc:
        dc.populate("dave", [ham_message(), gtube_message(), FORGED])
        yield dc


def start_popgate(tmp_path, upstream, spamd_address, extra=""):
    config = tmp_path / "popgate.toml"
    config.write_text(
        f'[upstream]\naddress = "{upstream}"\n'
        f'[[listen]]\naddress = "127.0.0.1:0"\n'
        f'[[plugin]]\nuse = "spam_tag"\nspamd = "{spamd_address}"\n{extra}')
    return Popgate.start(["-c", str(config)])


def headers(message_lines: list[bytes]) -> dict[bytes, list[bytes]]:
    out: dict[bytes, list[bytes]] = {}
    for line in message_lines:
        if not line:
            break
        if b":" in line and not line[:1].isspace():
            name, value = line.split(b":", 1)
            out.setdefault(name.lower(), []).append(value.strip())
    return out


def fetch_all(port: int) -> list[list[bytes]]:
    p = poplib.POP3("127.0.0.1", port, timeout=30)
    try:
        p.user("dave")
        p.pass_("pw")
        count, _ = p.stat()
        return [p.retr(n)[1] for n in range(1, count + 1)]
    finally:
        p.quit()


def test_gtube_is_tagged_and_ham_is_not(tmp_path, spamd, mailstore):
    with start_popgate(tmp_path, mailstore.address, spamd.address,
                       'subject_prefix = "[SPAM] "\n') as pg:
        ham, spam, forged = (headers(m) for m in fetch_all(pg.port))
    assert spam[b"x-spam-flag"] == [b"YES"]
    assert spam[b"x-spam-status"][0].startswith(b"Yes, score=1000")
    assert spam[b"x-spam-score"] == [b"1000.0"]
    assert spam[b"subject"][0].startswith(b"[SPAM] ")
    assert b"x-spam-flag" not in ham
    assert ham[b"x-spam-status"][0].startswith(b"No, ")
    assert not ham[b"subject"][0].startswith(b"[SPAM]")
    # The sender's own "X-Spam-Flag: NO" is gone; only SpamAssassin's verdict remains.
    assert forged[b"x-spam-flag"] == [b"YES"]
    assert len(forged[b"x-spam-status"]) == 1


def test_body_is_unchanged_apart_from_added_headers(tmp_path, spamd, mailstore):
    with start_popgate(tmp_path, mailstore.address, spamd.address) as pg:
        through = fetch_all(pg.port)
    direct = fetch_all(mailstore.port)
    for via, plain in zip(through, direct):
        body_via = via[via.index(b"") + 1:]
        body_plain = plain[plain.index(b"") + 1:]
        assert body_via == body_plain
        # Every original header line is still there, in order, except forged X-Spam-*
        # fields (and their continuation lines), which SpamAssassin's replace.
        original = [line for line in plain[:plain.index(b"")]
                    if not line.lower().startswith(b"x-spam")]
        kept = [line for line in via[:via.index(b"")] if line in original]
        assert kept == original


def test_spamd_down_with_on_error_pass_delivers_untagged(tmp_path, mailstore):
    from pgtest.dovecot import free_port
    address = f"127.0.0.1:{free_port()}"
    with start_popgate(tmp_path, mailstore.address, address, 'on_error = "pass"\n') as pg:
        messages = fetch_all(pg.port)
        log = pg.log
    assert len(messages) == 3
    assert all(b"x-spam-flag" not in headers(m) or headers(m)[b"x-spam-flag"] == [b"NO"]
               for m in messages[:2])
    assert b"x-spam-status" not in headers(messages[1])  # GTUBE passed untagged
    assert "spam_tag" in log and "connection_refused" in log


def test_spamd_down_with_on_error_tempfail_loses_nothing(tmp_path, mailstore):
    from pgtest.dovecot import free_port
    address = f"127.0.0.1:{free_port()}"
    with start_popgate(tmp_path, mailstore.address, address, 'on_error = "tempfail"\n') as pg:
        p = poplib.POP3("127.0.0.1", pg.port, timeout=30)
        p.user("dave")
        p.pass_("pw")
        with pytest.raises(poplib.error_proto) as failure:
            p.retr(2)
        assert failure.value.args[0].startswith(b"-ERR [SYS/TEMP]")
        # The session goes on, and the message is still there.
        assert p.stat()[0] == 3
        p.quit()
    assert mailstore.message_count("dave") == 3
    assert len(fetch_all(mailstore.port)) == 3


def test_unknown_plugin_stops_start_up(tmp_path, mailstore):
    config = tmp_path / "bad.toml"
    config.write_text(f'[upstream]\naddress = "{mailstore.address}"\n'
                      '[[plugin]]\nuse = "no_such_plugin"\n')
    import subprocess
    from pgtest.popgate import popgate_bin
    run = subprocess.run([str(popgate_bin()), "-c", str(config)], capture_output=True, text=True,
                         timeout=10)
    assert run.returncode == 2
    assert "bad.toml:3" in run.stderr and "no_such_plugin" in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1


def test_an_outage_is_logged_once_and_its_end_once(tmp_path, spamd, mailstore):
    """spamd down: the first failure is logged, the rest counted; when spamd answers
    again one line says so. Not one warning per message (issue 11.3)."""
    with start_popgate(tmp_path, mailstore.address, spamd.address, 'on_error = "pass"\n') as pg:
        assert b"x-spam-status" in headers(fetch_all(pg.port)[1])  # spamd answers
        spamd.stop()
        try:
            for _ in range(3):
                assert len(fetch_all(pg.port)) == 3  # 9 messages, untagged, none lost
        finally:
            spamd.start()
        failing = pg.log
        fetched = fetch_all(pg.port)
        pg.wait_for_log(r"spam_tag works again after 9 failed calls")
        log = pg.log
    assert failing.count("plugin spam_tag failed") == 1, failing
    assert "further failures of spam_tag are counted" in failing
    assert b"x-spam-status" in headers(fetched[1])
    assert log.count("spam_tag works again after") == 1


def test_the_spamd_call_is_bounded_by_the_plugins_timeout(tmp_path, mailstore):
    """A spamd that accepts and never answers (a fake: a real one can't stall on demand).
    With timeout = 2 the spamd call gives up by itself within the 2 s, with its own error,
    instead of running on for 30 s behind the chain's back."""
    import socket
    import time
    with socket.socket() as stall:
        stall.bind(("127.0.0.1", 0))
        stall.listen(16)
        address = "127.0.0.1:%d" % stall.getsockname()[1]
        with start_popgate(tmp_path, mailstore.address, address,
                           'on_error = "pass"\ntimeout = 2\n') as pg:
            began = time.monotonic()
            messages = fetch_all(pg.port)
            took = time.monotonic() - began
            log = pg.log
    assert len(messages) == 3
    assert took < 3 * 2.5, took  # three messages, each given up within its 2 s
    assert "plugin spam_tag failed in RETR 1: spamd " + address + ": timeout" in log, log
    assert "timed out (2000 ms)" not in log, log
