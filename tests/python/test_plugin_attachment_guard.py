"""The attachment_guard plugin without a server: which parts it finds on real MIME (nested
multipart, RFC 2231 and RFC 2047 names, a program under a .pdf name, a whole message that
is a program), that everything it does not remove stays byte for byte, RETR against TOP,
`python3 -m popgate check` on an .eml file, and the option errors."""

from __future__ import annotations

import email
import email.policy
import os
import subprocess
from pathlib import Path

import pytest

from popgate.plugins import attachment_guard
import popgate
from pgtest import attachments
from pgtest.attachments import (ALTERNATIVE, DISGUISED, HEAD, NAMED_EXE, PDF, PROGRAM,
                                 REAL_PDF, b64, part)
from popgate.testing import check, session

PLUGIN = "python:popgate.plugins.attachment_guard"


def multipart(*parts: bytes) -> bytes:
    return attachments.multipart(*parts, epilogue=b"bye\r\n")


MESSAGE = multipart(ALTERNATIVE, REAL_PDF, DISGUISED, NAMED_EXE)


def parts_of(raw: bytes) -> list[email.message.EmailMessage]:
    parsed = email.message_from_bytes(raw, policy=email.policy.default)
    return [p for p in parsed.walk() if not p.is_multipart()]  # type: ignore[misc]


def test_finds_the_program_under_a_pdf_name_and_the_encoded_exe_name_only() -> None:
    found = attachment_guard.find_executables(MESSAGE)
    assert [(r.name, r.why) for r in found] == [
        ("invoice.pdf", "its content is a Windows program (it starts with MZ)"),
        ("setup\u2013v2.EXE", "its name ends in .exe"),
    ]
    # The offsets are exactly the parts' bytes, headers included.
    assert MESSAGE[found[0].start:found[0].end] == DISGUISED
    assert MESSAGE[found[1].start:found[1].end] == NAMED_EXE


def test_retr_replaces_each_program_and_keeps_every_other_byte() -> None:
    result = check(PLUGIN, MESSAGE)
    assert result.verdict == "quarantine"
    assert result.reason == 'removed "invoice.pdf", "setup\u2013v2.EXE"'
    out = result.message.raw
    # Everything but the two parts is as it was, in order, byte for byte.
    kept = [b"--outer\r\n" + ALTERNATIVE + b"\r\n", b"--outer\r\n" + REAL_PDF + b"\r\n"]
    assert out.startswith(HEAD + b"".join(kept))
    assert out.endswith(b"\r\n--outer--\r\nbye\r\n")
    leaves = parts_of(out)
    assert [p.get_content_type() for p in leaves] == [
        "text/plain", "text/html", "application/pdf", "text/plain", "text/plain"]
    assert leaves[2].get_content() == PDF  # the real PDF, decoded, is untouched
    notice = leaves[3].get_content()
    assert '"invoice.pdf" (application/pdf' in notice and "starts with MZ" in notice
    assert "X-Popgate-Quarantine-Id" in notice
    assert '"setup\u2013v2.EXE"' in leaves[4].get_content()
    assert b"TVqQ" not in out  # base64 of "MZ\x90": the program's bytes are gone


def test_a_message_that_is_only_a_program_keeps_its_header_fields() -> None:
    raw = (b"From: alice@example.org\r\nSubject: run me\r\nMIME-Version: 1.0\r\n"
           b"Content-Type: application/x-msdownload; name=run.scr\r\n"
           b"Content-Transfer-Encoding: base64\r\n\r\n" + b64(PROGRAM) + b"\r\n")
    result = check(PLUGIN, raw)
    assert result.verdict == "quarantine"
    out = result.message.raw
    assert out.startswith(b"From: alice@example.org\r\nSubject: run me\r\nMIME-Version: 1.0\r\n"
                          b"Content-Type: text/plain; charset=utf-8\r\n")
    assert b"x-msdownload" not in out.split(b"\r\n\r\n", 1)[0]
    assert b'"run.scr"' in out and out.endswith(b"\r\n")


def test_clean_mail_and_text_that_happens_to_start_with_mz_pass_untouched() -> None:
    clean = multipart(ALTERNATIVE, REAL_PDF)
    result = check(PLUGIN, clean)
    assert result.verdict == "pass" and not result.message.modified
    # Only attachments are sniffed: a named part, or one that is not text.
    text = b"Subject: hi\r\n\r\nMZ, as promised: the minutes.\r\n"
    assert attachment_guard.find_executables(text) == []
    unnamed = multipart(part(b"Content-Type: application/octet-stream\r\n"
                             b"Content-Transfer-Encoding: base64\r\n", b64(PROGRAM)))
    assert [r.name for r in attachment_guard.find_executables(unnamed)] == [""]
    assert check(PLUGIN, unnamed).reason == "removed an unnamed application/octet-stream part"


def test_an_attached_message_is_looked_into() -> None:
    inner = (b"From: bob@example.org\r\nSubject: fwd\r\nMIME-Version: 1.0\r\n"
             b"Content-Type: multipart/mixed; boundary=b2\r\n\r\n--b2\r\n" + NAMED_EXE +
             b"\r\n--b2--\r\n")
    raw = multipart(part(b"Content-Type: message/rfc822\r\n", inner))
    found = attachment_guard.find_executables(raw)
    assert [r.name for r in found] == ["setup\u2013v2.EXE"]


def test_top_strips_alike_but_asks_for_no_quarantine() -> None:
    # As the proxy hands a whole-message plugin a TOP: the whole message, widened.
    guard = attachment_guard.AttachmentGuard()
    guard.configure({})
    top = popgate.Message(MESSAGE, command="TOP")
    assert guard.message(session(), top) is None
    assert b"TVqQ" not in top.raw and b"preview" in top.raw


def test_extensions_replace_the_default_list_and_check_content_can_be_off() -> None:
    only_js = check(PLUGIN, MESSAGE, options={"extensions": ["JS"], "check_content": False})
    assert only_js.verdict == "pass"
    pdfs = attachment_guard.find_executables(MESSAGE, [".pdf"], check_content=False)
    assert [r.name for r in pdfs] == ["Rechnung M\u00e4rz.pdf", "invoice.pdf"]


def test_trailing_dots_and_spaces_do_not_hide_an_extension() -> None:
    raw = multipart(part(b'Content-Type: application/octet-stream; name="tool.exe. ."\r\n',
                         b"harmless?\r\n"))
    assert [r.why for r in attachment_guard.find_executables(raw)] == ["its name ends in .exe"]


def test_a_hostile_name_cannot_add_lines_to_the_notice() -> None:
    raw = multipart(part(b"Content-Type: application/octet-stream; name=\"=?utf-8?q?a=0D=0A"
                         b"Subject=3A_x.exe?=\"\r\n", b"data\r\n"))
    out = check(PLUGIN, raw).message.raw
    notice = parts_of(out)[0].get_content().splitlines()
    assert len(notice) == 2  # the line naming the part, the line saying where the original is
    assert notice[0].startswith('popgate removed an attachment from this message: "a??Subject: '
                                'x.exe"')


@pytest.mark.parametrize("options, complaint", [
    ({"extensions": ".exe"}, "extensions must be a list"),
    ({"extensions": [1]}, "extensions must be a list"),
    ({"extensions": ["."]}, "extensions must be a list"),
    ({"check_content": "yes"}, "check_content must be true or false"),
    ({"extension": [".exe"]}, "unknown option extension"),
])
def test_bad_options_are_refused(options: dict[str, object], complaint: str) -> None:
    with pytest.raises(ValueError, match=complaint):
        check(PLUGIN, MESSAGE, options=options)


def test_popgate_check_on_an_eml_prints_the_verdict(tmp_path: Path, python_dir: Path) -> None:
    eml = tmp_path / "invoice.eml"
    eml.write_bytes(MESSAGE)
    env = dict(os.environ, PYTHONPATH=str(python_dir))
    done = subprocess.run(["/usr/bin/python3", "-m", "popgate", "check", PLUGIN, str(eml)],
                          capture_output=True, env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    first = done.stdout.decode().splitlines()[0]
    assert first == 'quarantine: removed "invoice.pdf", "setup\u2013v2.EXE"'
