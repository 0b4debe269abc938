"""The attachment_guard plugin (python:popgate.plugins.attachment_guard) end to end, and
with it the `quarantine` verdict: a real Dovecot, popgate, poplib as the client.

What must hold: the client gets the message with each program replaced by a notice and
every other byte as the server has it; the original is in the quarantine, byte for byte,
before the client has the message, and the delivered message names it in
X-Popgate-Quarantine-Id; deleting the message then loses nothing; without a [quarantine]
path the message is withheld (-ERR [SYS/TEMP]) and stays on the server; a headers-only
plugin asking for a quarantine is withheld alike; TOP strips without storing; a bad option
stops start-up with exit status 2.
"""

from __future__ import annotations

import email
import email.policy
import poplib
import re
import textwrap
from pathlib import Path

import pytest

from pgtest.attachments import ALTERNATIVE, DISGUISED, HEAD, PROGRAM, REAL_PDF, b64, multipart
from pgtest.config import start_popgate
from pgtest.dovecot import Dovecot
from pgtest.pop3 import login, retr
from pgtest.popgate import Popgate, PopgateError

poplib._MAXLINE = 1 << 20

USERS = {"dave": "pw"}
INVOICE = multipart(ALTERNATIVE, REAL_PDF, DISGUISED)
PLAIN = b"From: bob@example.org\r\nSubject: plain\r\n\r\nNothing attached.\r\n"
MESSAGES = [PLAIN, INVOICE]


@pytest.fixture(scope="module")
def dovecot():
    with Dovecot(users=USERS) as dc:
        yield dc


@pytest.fixture()
def mailstore(dovecot):
    dovecot.reset("dave", MESSAGES)
    return dovecot


def start(tmp_path: Path, upstream: str, plugins: list[str], quarantine: Path | None) -> Popgate:
    extra = f'[quarantine]\npath = "{quarantine}"\n' if quarantine is not None else ""
    return start_popgate(tmp_path, upstream, plugins, extra)


GUARD = 'use = "python:popgate.plugins.attachment_guard"\n'


def field(message: bytes, name: str) -> list[str]:
    head = message.split(b"\r\n\r\n", 1)[0].decode()
    return re.findall(rf"(?mi)^{name}: *(.*)$", head)


def test_the_client_gets_the_message_without_the_program_and_the_quarantine_the_original(
        tmp_path, mailstore):
    quarantine = tmp_path / "quarantine"
    with start(tmp_path, mailstore.address, [GUARD], quarantine) as pg:
        p = login(pg.port)
        got = retr(p, 2)
        # By the time the client has the message, its original is stored, byte for byte.
        stored = list((quarantine / "new").iterdir())
        ids = field(got, "X-Popgate-Quarantine-Id")
        assert len(stored) == 1 and ids == [stored[0].name]
        assert stored[0].read_bytes() == INVOICE
        assert retr(p, 1) == PLAIN  # clean mail passes as it is, nothing stored
        assert len(list((quarantine / "new").iterdir())) == 1
        p.dele(2)
        p.quit()
        pg.wait_for_log(r'session \d+ RETR 2 delivered edited by python:popgate\.plugins\.'
                        r'attachment_guard \(removed "invoice\.pdf"\): original quarantined as '
                        + re.escape(ids[0]))
    # The edited message: the header block plus the quarantine id, the other parts and
    # the boundaries byte for byte, the program's part replaced by a notice.
    head, body = got.split(b"\r\n\r\n", 1)
    assert head == HEAD.split(b"\r\n\r\n", 1)[0] + b"\r\nX-Popgate-Quarantine-Id: " + \
        ids[0].encode()
    kept = (b"This is a multi-part message in MIME format.\r\n--outer\r\n" + ALTERNATIVE +
            b"\r\n--outer\r\n" + REAL_PDF + b"\r\n--outer\r\n")
    assert body.startswith(kept) and body.endswith(b"\r\n--outer--\r\n")
    notice = body[len(kept):-len(b"\r\n--outer--\r\n")]
    assert notice.startswith(b"Content-Type: text/plain; charset=utf-8\r\n")
    assert b'"invoice.pdf" (application/pdf' in notice and b"starts with MZ" in notice
    assert b64(PROGRAM)[:40] not in got
    parsed = email.message_from_bytes(got, policy=email.policy.default)
    assert [p.get_content_type() for p in parsed.walk()] == [
        "multipart/mixed", "multipart/alternative", "text/plain", "text/html",
        "application/pdf", "text/plain"]
    # Deleted upstream, and still whole in the quarantine.
    mailstore.wait_until_idle("dave")
    assert mailstore.message_count("dave") == 1
    assert (quarantine / "new" / ids[0]).read_bytes() == INVOICE


def test_without_a_quarantine_the_message_is_withheld_and_stays(tmp_path, mailstore):
    with start(tmp_path, mailstore.address, [GUARD], None) as pg:
        p = login(pg.port)
        with pytest.raises(poplib.error_proto, match=r"\[SYS/TEMP\]"):
            p.retr(2)
        assert retr(p, 1) == PLAIN  # the session goes on in step
        p.quit()
    mailstore.wait_until_idle("dave")
    assert mailstore.message_count("dave") == 2


def test_top_strips_the_program_and_stores_nothing(tmp_path, mailstore):
    quarantine = tmp_path / "quarantine"
    with start(tmp_path, mailstore.address, [GUARD], quarantine) as pg:
        p = login(pg.port)
        lines = p.top(2, 400)[1]
        p.quit()
    preview = b"\r\n".join(lines)
    assert b"invoice.pdf" in preview and b"preview" in preview
    assert b64(PROGRAM)[:40] not in preview
    assert not (quarantine / "new").exists() or list((quarantine / "new").iterdir()) == []


HEADERS_ONLY = """
    import popgate

    class Asks(popgate.Plugin):
        needs = popgate.HEADERS

        def message(self, session, msg):
            return popgate.quarantine("keep it")
"""


def test_a_headers_only_plugin_cannot_quarantine_and_the_message_stays(tmp_path, mailstore):
    plugin = tmp_path / "asks.py"
    plugin.write_text(textwrap.dedent(HEADERS_ONLY))
    quarantine = tmp_path / "quarantine"
    with start(tmp_path, mailstore.address, [f'use = "{plugin}"\n'], quarantine) as pg:
        p = login(pg.port)
        with pytest.raises(poplib.error_proto, match=r"\[SYS/TEMP\]"):
            p.retr(1)
        p.quit()
        pg.wait_for_log(r"quarantine needs the whole message")
    mailstore.wait_until_idle("dave")
    assert mailstore.message_count("dave") == 2


@pytest.mark.parametrize("option, complaint", [
    ("extensions = \".exe\"\n", "extensions must be a list"),
    ("check_content = 1\n", "check_content must be true or false"),
])
def test_a_bad_option_stops_start_up(tmp_path, mailstore, option, complaint):
    with pytest.raises(PopgateError) as failed:
        start(tmp_path, mailstore.address, [GUARD + option], tmp_path / "q").stop()
    text = str(failed.value)
    assert "exited with 2 before listening" in text, text
    assert complaint in text, text
