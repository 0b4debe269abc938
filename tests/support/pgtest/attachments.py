"""Real MIME for the attachment_guard tests: a multipart/mixed message with a nested
multipart/alternative, a PDF named in RFC 2231 encoding, a Windows program (it starts
with MZ) named invoice.pdf, and an RFC 2231 named .EXE that is not a program at all.
Every piece is a constant, so a test can say which bytes must come through untouched."""

from __future__ import annotations

import base64

PROGRAM = b"MZ\x90\x00\x03\x00\x00\x00\x04\x00" + bytes(range(256)) * 16
PDF = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\nendobj\n"


def b64(data: bytes) -> bytes:
    """Base64 in 76-character lines, as mail programs write it."""
    encoded = base64.b64encode(data)
    return b"\r\n".join(encoded[i:i + 76] for i in range(0, len(encoded), 76))


def part(headers: bytes, content: bytes) -> bytes:
    return headers + b"\r\n" + content


HEAD = (b"From: alice@example.org\r\nTo: dave@example.org\r\nSubject: invoice\r\n"
        b"Message-ID: <invoice@example.org>\r\nMIME-Version: 1.0\r\n"
        b"Content-Type: multipart/mixed; boundary=\"outer\"\r\n\r\n"
        b"This is a multi-part message in MIME format.\r\n")
ALTERNATIVE = part(b"Content-Type: multipart/alternative; boundary=inner\r\n",
                   b"--inner\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nHello, see "
                   b"attached.\r\n.a line with a leading dot\r\n--inner\r\n"
                   b"Content-Type: text/html; charset=utf-8\r\n\r\n<p>Hello</p>\r\n--inner--\r\n")
REAL_PDF = part(b"Content-Type: application/pdf\r\nContent-Disposition: attachment;\r\n"
                b" filename*=UTF-8''Rechnung%20M%C3%A4rz.pdf\r\n"
                b"Content-Transfer-Encoding: base64\r\n", b64(PDF))
DISGUISED = part(b"Content-Type: application/pdf; name=\"invoice.pdf\"\r\n"
                 b"Content-Disposition: attachment; filename=\"invoice.pdf\"\r\n"
                 b"Content-Transfer-Encoding: base64\r\n", b64(PROGRAM))
NAMED_EXE = part(b"Content-Type: application/octet-stream\r\nContent-Disposition: attachment;"
                 b" filename*=UTF-8''setup%E2%80%93v2.EXE\r\n"
                 b"Content-Transfer-Encoding: base64\r\n", b64(b"not really a program"))


def multipart(*parts: bytes, epilogue: bytes = b"") -> bytes:
    """HEAD, then each part after an "outer" boundary line, the close line, `epilogue`."""
    return (HEAD + b"".join(b"--outer\r\n" + p + b"\r\n" for p in parts) + b"--outer--\r\n"
            + epilogue)
