"""Test messages with exactly known bytes, and Maildir writing.

Every message is built as bytes with CRLF line endings, the way Dovecot sends
them on the wire, so a client that fetches one unchanged gets these very bytes
back (except ``no_final_newline``: Dovecot ends the last line with CRLF before
the terminating dot, so the wire form is the message plus CRLF; see
:func:`wire_form`).
"""

from __future__ import annotations

import base64
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

CRLF = b"\r\n"


@dataclass(frozen=True)
class Message:
    name: str  # short label, used in assertion messages
    data: bytes  # the file content as stored in the Maildir

    @property
    def wire(self) -> bytes:
        return wire_form(self.data)


def wire_form(data: bytes) -> bytes:
    """The message as a POP3 server sends it, without dot-stuffing: every line
    ends with CRLF (Dovecot adds the missing final one)."""
    return data if data.endswith(CRLF) else data + CRLF


def _lines(*lines: bytes | str) -> bytes:
    out = []
    for line in lines:
        out.append(line.encode("utf-8") if isinstance(line, str) else line)
    return CRLF.join(out) + CRLF


def _headers(subject: str | bytes, msgid: str, extra: tuple = ()) -> list:
    return [
        "From: Sender <sender@example.org>",
        "To: Alice <alice@example.org>",
        subject if isinstance(subject, bytes) else f"Subject: {subject}",
        "Date: Tue, 14 Nov 2023 10:00:00 +0000",
        f"Message-ID: <{msgid}@popgate.test>",
        *extra,
    ]


def ordinary(n: int, user: str = "alice", body_lines: int = 5) -> bytes:
    body = [f"Line {i} of ordinary message {n} for {user}." for i in range(body_lines)]
    return _lines(*_headers(f"Ordinary message {n}", f"ord-{user}-{n}"), "", *body)


def dot_lines() -> bytes:
    """Lines that need dot-stuffing on the wire: '.', '..', '.hidden', '...x',
    and a body that ends with a lone '.' line just before the terminator."""
    return _lines(
        *_headers("Dots", "dots"),
        "",
        "Before the dots.",
        ".",
        "..",
        ".hidden",
        "...x",
        " .not at start",
        "a line with a dot.",
        ".",
        "...",
        ".",
    )


def no_final_newline() -> bytes:
    head = _lines(*_headers("No final newline", "nonl"), "", "First body line.")
    return head + b"last line without newline"


def eight_bit() -> bytes:
    """8-bit headers and body, in UTF-8 and in raw Latin-1 (not valid UTF-8)."""
    return _lines(
        *_headers("Subject: Grüße aus Köln – ünïcödé".encode("utf-8"), "8bit",
                  ("X-Latin1: caf\xe9 cr\xe8me br\xfbl\xe9e".encode("latin-1"),
                   "MIME-Version: 1.0",
                   "Content-Type: text/plain; charset=utf-8",
                   "Content-Transfer-Encoding: 8bit")),
        "",
        "UTF-8 body: Ærøskøbing, Straße, 日本語, emoji 📬.",
        "Latin-1 body: ".encode() + "Ærøskøbing, Straße, naïve".encode("latin-1"),
        bytes(range(0x80, 0x100)),
        "end",
    )


def long_line(length: int = 10_000) -> bytes:
    """One body line of ``length`` characters (Python's poplib refuses lines
    over 2048 octets unless poplib._MAXLINE is raised)."""
    line = ("0123456789abcdefghijklmnopqrstuvwxyz" * (length // 36 + 1))[:length]
    return _lines(*_headers("One long line", "longline"), "", "Before.", line, "After.")


def big_attachment(size: int = 5 * 1024 * 1024) -> bytes:
    """A MIME message with a base64 attachment of ``size`` raw bytes
    (deterministic pseudo-random content)."""
    chunks = []
    seed = b"popgate"
    total = 0
    while total < size:
        seed = hashlib.sha256(seed).digest()
        chunks.append(seed)
        total += len(seed)
    raw = b"".join(chunks)[:size]
    b64 = base64.encodebytes(raw).replace(b"\n", CRLF)  # 76-column lines
    head = _lines(
        *_headers("Big attachment", "big",
                  ("MIME-Version: 1.0",
                   'Content-Type: multipart/mixed; boundary="BOUNDARY"')),
        "",
        "This is a multi-part message in MIME format.",
        "--BOUNDARY",
        "Content-Type: text/plain; charset=us-ascii",
        "",
        "See the attachment.",
        "--BOUNDARY",
        "Content-Type: application/octet-stream",
        "Content-Transfer-Encoding: base64",
        'Content-Disposition: attachment; filename="blob.bin"',
        "",
    )
    return head + b64 + _lines("--BOUNDARY--")


# The users of the integration tests, with passwords distinctive enough to
# search logs for.
TEST_USERS = {
    "alice": "Al1ce-secret",  # alice_messages(); tests never change it
    "bob": "B0b-secret",      # bob_messages(); tests never change it
    "carol": "Car0l-secret",  # scratch mailbox for deletion tests
}


def alice_messages() -> list[Message]:
    """alice's mailbox, in mailbox order."""
    return [
        Message("ordinary-1", ordinary(1)),
        Message("dot-lines", dot_lines()),
        Message("no-final-newline", no_final_newline()),
        Message("eight-bit", eight_bit()),
        Message("long-line", long_line()),
        Message("big-attachment", big_attachment()),
        Message("ordinary-2", ordinary(2)),
        Message("ordinary-3", ordinary(3, body_lines=40)),
    ]


def bob_messages(count: int = 200) -> list[Message]:
    return [Message(f"bob-{i + 1}", ordinary(i + 1, user="bob", body_lines=1 + i % 7)) for i in range(count)]


def sized_messages(count: int, size: int, user: str = "bench") -> list[Message]:
    """``count`` messages of exactly ``size`` bytes each (wire form, CRLF lines
    of at most 78 columns), for benchmarks. ``size`` must be at least 400."""
    msgs = []
    for i in range(count):
        head = _lines(*_headers(f"Bench message {i + 1}", f"bench-{user}-{i + 1}"), "")
        if size < len(head) + 10:
            raise ValueError(f"size {size} too small; need at least {len(head) + 10}")
        remaining = size - len(head)
        body = bytearray()
        filler = b"abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ-_" * 2
        while remaining > 0:
            n = min(76, remaining - 2)
            if n <= 0:  # one byte left: make the previous line one longer
                body[-2:-2] = b"x"
                remaining -= 1
                continue
            body += filler[:n] + CRLF
            remaining -= n + 2
        msgs.append(Message(f"bench-{i + 1}", head + bytes(body)))
        assert len(msgs[-1].data) == size, (len(msgs[-1].data), size)
    return msgs


# ---------------------------------------------------------------- Maildir

_counter = 0


def maildir_create(path: Path) -> None:
    for sub in ("cur", "new", "tmp"):
        (path / sub).mkdir(parents=True, exist_ok=True)


def maildir_write(path: Path, messages: list[Message] | list[bytes], subdir: str = "new",
                  base_time: int = 1_700_000_000) -> list[Path]:
    """Write messages into a Maildir so that Dovecot numbers them in list order.

    Dovecot assigns UIDs to new files sorted by file name; names start with an
    increasing timestamp, so message n of the list becomes POP3 message n.
    """
    global _counter
    maildir_create(path)
    written = []
    for i, msg in enumerate(messages):
        data = msg.data if isinstance(msg, Message) else msg
        _counter += 1
        name = f"{base_time + i}.M{_counter}P{os.getpid()}.popgate,S={len(data)}"
        if subdir == "cur":
            name += ":2,"
        target = path / subdir / name
        tmp = path / "tmp" / name.split(":")[0]
        tmp.write_bytes(data)
        os.replace(tmp, target)
        written.append(target)
    return written
