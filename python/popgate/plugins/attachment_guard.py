"""Takes executable attachments out of mail before a client opens them, and keeps the
original in popgate's quarantine, so nothing is lost.

A part is executable when its file name (``Content-Disposition`` ``filename`` or
``Content-Type`` ``name``; RFC 2231 and RFC 2047 encoded names are decoded, trailing dots
and spaces dropped as Windows drops them) ends in one of ``extensions``, or, with
``check_content`` on, when an attachment's decoded content (a named part, or one that
is not text) starts with ``MZ`` (a Windows program), whatever it is called: an ``invoice.pdf`` that is really a program. Parts inside attached
messages (``message/rfc822``) are looked at too.

Each such part is replaced, where it stands, by a short ``text/plain`` part naming what was
removed and why. Every other byte stays as the server sent it: the header block, the other
parts, the boundaries, the preamble. On ``RETR`` the plugin returns
:func:`popgate.quarantine`: popgate stores the original in ``[quarantine]`` before the client
gets a byte, and the delivered message carries ``X-Popgate-Quarantine-Id`` naming it. Without
a ``[quarantine]`` path popgate withholds such a message as a temporary failure (the server
keeps it). On ``TOP`` the parts are replaced alike but nothing is stored: ``TOP`` deletes
nothing, so the server still has the original.

    [[plugin]]
    use = "python:popgate.plugins.attachment_guard"
    # extensions = [".exe", ".scr"]   # replaces the default list
    # check_content = true            # also catch programs under an innocent name

    [quarantine]
    path = "/var/lib/popgate/quarantine"

A multipart part whose boundary never appears is left as it is (there are no parts to tell
apart); so is anything nested deeper than 20 levels.
"""

from __future__ import annotations

import binascii
import email.message
import email.parser
import email.policy
import quopri
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import popgate
from popgate.plugins._options import check_known

DEFAULT_EXTENSIONS = (".exe", ".scr", ".js", ".vbs", ".bat", ".cmd", ".com", ".jar", ".ps1",
                      ".lnk")
OPTIONS = ("extensions", "check_content")
MAX_DEPTH = 20  # deeper nesting is no real mail; it is someone testing the parser
NAME_LIMIT = 200  # characters of a file name quoted in the notice and the reason
SNIFF_BYTES = 64  # of an encoded body: enough to decode the first two bytes

_header_parser = email.parser.BytesHeaderParser(policy=email.policy.default)


@dataclass
class Removal:
    start: int  # the part's first byte in the message (its first header line)
    end: int  # just past its content, before the line break that opens the next boundary
    header_end: int  # where its content starts
    name: str  # as the sender named it, "" when unnamed
    content_type: str
    why: str  # "its name ends in .exe" or "its content is a Windows program"


def _line_break(raw: bytes) -> bytes:
    first = raw.find(b"\n")
    return b"\r\n" if first > 0 and raw[first - 1:first] == b"\r" else b"\n"


def _header_block_end(raw: bytes, start: int, end: int) -> int:
    """Where the entity at raw[start:end] has its content (after the blank line)."""
    if raw.startswith(b"\r\n", start):
        return start + 2
    if raw.startswith(b"\n", start):
        return start + 1
    found = [i + n for i, n in ((raw.find(b"\r\n\r\n", start, end), 4),
                                (raw.find(b"\n\n", start, end), 2)) if i >= 0]
    return min(found) if found else end


def _printable(text: str) -> str:
    """A name from the sender, safe on one line of the notice: no controls, bounded."""
    text = "".join(c if c.isprintable() else "?" for c in text)
    return text if len(text) <= NAME_LIMIT else text[:NAME_LIMIT] + "..."


def _starts_with_mz(content: bytes, encoding: str) -> bool:
    head = content.lstrip(b"\r\n")[:SNIFF_BYTES * 2]
    if encoding == "base64":
        text = re.sub(rb"[^A-Za-z0-9+/]", b"", head)[:SNIFF_BYTES]
        text = text[:len(text) - len(text) % 4]
        try:
            decoded = binascii.a2b_base64(text)
        except binascii.Error:
            return False
    elif encoding == "quoted-printable":
        decoded = quopri.decodestring(head)
    else:
        decoded = head
    return decoded.startswith(b"MZ")


class _Scanner:
    def __init__(self, raw: bytes, extensions: tuple[str, ...], check_content: bool) -> None:
        self.raw = raw
        self.extensions = extensions
        self.check_content = check_content
        self.removals: list[Removal] = []

    def entity(self, start: int, end: int, depth: int) -> None:
        header_end = _header_block_end(self.raw, start, end)
        fields = _header_parser.parsebytes(self.raw[start:header_end])
        content_type = fields.get_content_type()
        if depth >= MAX_DEPTH:
            return
        if fields.get_content_maintype() == "multipart":
            boundary = fields.get_boundary()
            if boundary:
                for part_start, part_end in self.parts(header_end, end, boundary):
                    self.entity(part_start, part_end, depth + 1)
            return
        why = self.executable(fields, header_end, end)
        if why:
            name = fields.get_filename() or ""
            self.removals.append(Removal(start, end, header_end, _printable(str(name)),
                                         _printable(content_type), why))
        elif content_type == "message/rfc822":
            self.entity(header_end, end, depth + 1)

    def parts(self, start: int, end: int, boundary: str) -> Iterable[tuple[int, int]]:
        """The body parts between the boundary lines of raw[start:end] (RFC 2046 5.1.1:
        the line break before a boundary line belongs to the boundary)."""
        delimiter = re.compile(rb"^--" + re.escape(boundary.encode("utf-8", "replace")) +
                               rb"(--)?[ \t]*\r?$", re.MULTILINE)
        part_start: int | None = None
        for found in delimiter.finditer(self.raw, start, end):
            if part_start is not None:
                part_end = found.start()
                if self.raw[part_end - 2:part_end] == b"\r\n":
                    part_end -= 2
                elif self.raw[part_end - 1:part_end] == b"\n":
                    part_end -= 1
                yield part_start, max(part_start, part_end)
            if found.group(1):  # the close delimiter: the epilogue follows, not a part
                return
            line_end = self.raw.find(b"\n", found.end(), end)
            part_start = end if line_end < 0 else line_end + 1
        if part_start is not None and part_start < end:  # no close delimiter: to the end
            yield part_start, end

    def executable(self, fields: email.message.Message, content_start: int,
                   content_end: int) -> str:
        name = fields.get_filename()
        if name:
            bare = str(name).rstrip(". ").lower()
            for extension in self.extensions:
                if bare.endswith(extension):
                    return f"its name ends in {extension}"
        # Only attachments are sniffed: a named part or one that isn't text, so a letter
        # that happens to begin with "MZ" stays a letter.
        if self.check_content and (name or fields.get_content_maintype() != "text"):
            encoding = str(fields.get("content-transfer-encoding", "")).strip().lower()
            if _starts_with_mz(self.raw[content_start:content_end], encoding):
                return "its content is a Windows program (it starts with MZ)"
        return ""


def find_executables(raw: bytes, extensions: Iterable[str] = DEFAULT_EXTENSIONS,
                     check_content: bool = True) -> list[Removal]:
    """The parts of the message ``raw`` that attachment_guard removes, in message order."""
    scanner = _Scanner(raw, tuple(e.lower() for e in extensions), check_content)
    scanner.entity(0, len(raw), 0)
    return scanner.removals


def _replacement(raw: bytes, removal: Removal, eol: bytes, kept: str) -> bytes:
    """The part in its place: its own non-Content-* fields kept (a message's From and
    Subject, when the whole message was the program), a text/plain notice instead."""
    lines = re.split(rb"\r?\n", raw[removal.start:removal.header_end])
    fields: list[bytes] = []
    keep = False
    for line in lines:
        if not line:
            continue
        if line[:1] in (b" ", b"\t"):
            if keep:
                fields.append(line)
            continue
        keep = not line.lower().startswith(b"content-")
        if keep:
            fields.append(line)
    what = f'"{removal.name}"' if removal.name else "an unnamed part"
    text = (f"popgate removed an attachment from this message: {what} "
            f"({removal.content_type}, {removal.end - removal.header_end} bytes as sent), "
            f"because {removal.why}.{eol.decode()}{kept}")
    if removal.end == len(raw):  # the whole message was the program: end its last line
        text += eol.decode()
    fields += [b"Content-Type: text/plain; charset=utf-8",
               b"Content-Disposition: inline",
               b"Content-Transfer-Encoding: 8bit"]
    return eol.join(fields) + eol + eol + text.encode("utf-8")


def strip(raw: bytes, removals: list[Removal], kept: str) -> bytes:
    """``raw`` with each removal's part replaced by its notice; other bytes untouched."""
    eol = _line_break(raw)
    out = raw
    for removal in reversed(removals):  # from the end, so earlier offsets still hold
        out = out[:removal.start] + _replacement(raw, removal, eol, kept) + out[removal.end:]
    return out


def _describe(removals: list[Removal]) -> str:
    return ", ".join(f'"{r.name}"' if r.name else f"an unnamed {r.content_type} part"
                     for r in removals)


class AttachmentGuard(popgate.Plugin):
    extensions: tuple[str, ...] = DEFAULT_EXTENSIONS
    check_content: bool = True

    def configure(self, options: dict[str, Any]) -> None:
        check_known("attachment_guard", options, OPTIONS)
        if "extensions" in options:
            extensions = options["extensions"]
            if not isinstance(extensions, list) or not all(
                    isinstance(e, str) and e.strip(". ") for e in extensions):
                raise ValueError("attachment_guard: option extensions must be a list of file "
                                 'name endings such as [".exe", ".scr"]')
            self.extensions = tuple("." + e.strip().lstrip(".").lower() for e in extensions)
        check_content = options.get("check_content", True)
        if not isinstance(check_content, bool):
            raise ValueError("attachment_guard: option check_content must be true or false")
        self.check_content = check_content

    def message(self, session: popgate.Session, msg: popgate.Message) -> popgate.Verdict | None:
        raw = msg.raw
        removals = find_executables(raw, self.extensions, self.check_content)
        if not removals:
            return None
        if msg.command == "TOP":
            msg.replace(strip(raw, removals, "This is a preview: the server still has the "
                                              "whole message."))
            return None
        msg.replace(strip(raw, removals, "The original message, attachment included, is "
                                         "kept in quarantine: to have it, ask your "
                                         "administrator, quoting this message's "
                                         "X-Popgate-Quarantine-Id."))
        return popgate.quarantine(f"removed {_describe(removals)}")
