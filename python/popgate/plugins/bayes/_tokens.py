"""A message's tokens: the set of words the classifier counts, in the spirit of SpamBayes'
tokenizer (lower-cased words of 3 to 20 characters; longer ones become a "skip" token
that keeps only their first character and rough length, so base64 or hex noise that
slipped through doesn't flood the database with one-off tokens).

- Header fields: only those that say something about the sender and the content
  (HEADER_FIELDS), RFC 2047 decoded, each word prefixed by the field's name
  (``subject:free``), addresses split into name words, the local part and the domain
  and its parents (``from:addr:example.org``, ``from:addr:org``).
- Body: every text/plain and text/html part that is not an attachment, decoded as MIME
  says (base64, quoted-printable, the charset), HTML tags stripped and entities
  unescaped; URLs give ``url:HOST`` tokens too.
- Attachments (a non-text part, or any part with ``Content-Disposition: attachment``)
  give only their content type and file name tokens, never their bytes.

The message is parsed from bytes with the email package's compat32 policy: it is the
fast one (no header objects), and this code decodes what it reads itself. A token set,
not a list: a word counts once per message, as in SpamBayes and bogofilter.
"""

from __future__ import annotations

import email
import email.header
import email.message
import email.policy
import email.utils
import html
import re
from collections.abc import Iterator

#: Header fields whose words become tokens (lower-case names).
HEADER_FIELDS = ("subject", "from", "reply-to", "to", "cc", "sender", "return-path",
                 "x-mailer", "user-agent", "content-type", "list-id", "organization")
ADDRESS_FIELDS = frozenset({"from", "reply-to", "to", "cc", "sender", "return-path"})
MIN_WORD, MAX_WORD = 3, 20
MAX_PART_CHARS = 200_000  # enough to tell; a huge text part costs time, not accuracy
MAX_PARTS = 100  # a message of thousands of tiny parts is itself the tell

_WORD = re.compile(r"[^\W_](?:[\w$€£'.\-]*[^\W_])?")
_URL = re.compile(r"(?i)\b(?:https?|ftp)://([^\s/:?#\"'<>]+)")
_ENCODED_WORD = re.compile(r"=\?[^?\s]+\?[bBqQ]\?[^?\s]*\?=")
_BETWEEN_WORDS = re.compile(r"\?=\s+=\?")
_TAG = re.compile(r"<[^>]*>")
_HIDDEN = re.compile(r"(?is)<(style|script)\b.*?</\1\s*>|<!--.*?-->")


def words(text: str) -> Iterator[str]:
    """The distinct lower-cased words: 3 to 20 characters as they are, longer ones as
    ``skip:C N`` (first character, length to the ten), shorter ones dropped."""
    # Each distinct word once: words repeat, and a set is made in C.
    for word in set(_WORD.findall(text.lower())):
        if len(word) < MIN_WORD:
            continue
        if len(word) > MAX_WORD:
            yield f"skip:{word[0]} {len(word) // 10 * 10}"
        else:
            yield word


def _decoded_word(match: re.Match[str]) -> str:
    try:
        return str(email.header.make_header(email.header.decode_header(match.group())))
    except (ValueError, LookupError, UnicodeError):
        return match.group()


def decoded_header(value: str) -> str:
    """RFC 2047 encoded words decoded, one by one (so 8-bit text beside them doesn't
    stop it); each one that can't be decoded stays as it is."""
    if "=?" not in value:
        return value
    # RFC 2047 6.2: white space between two encoded words is not text.
    joined = _BETWEEN_WORDS.sub("?==?", value)
    return _ENCODED_WORD.sub(_decoded_word, joined)


def header_tokens(name: str, value: str) -> Iterator[str]:
    text = decoded_header(value)
    if name == "content-type":
        # Its type and charset; a boundary is random text, one-off tokens.
        kind, _, params = text.partition(";")
        yield f"content-type:{kind.strip().lower()}"
        charset = re.search(r'(?i)\bcharset\s*=\s*"?([\w.:-]+)', params)
        if charset:
            yield f"content-type:charset:{charset.group(1).lower()}"
    elif name in ADDRESS_FIELDS:
        for real_name, address in email.utils.getaddresses([text]):
            for word in words(real_name):
                yield f"{name}:{word}"
            if "@" in address:
                local, _, domain = address.lower().rpartition("@")
                yield f"{name}:addr:{local[:MAX_WORD]}"
                labels = domain.strip(".").split(".")
                for i in range(len(labels)):  # example.org, then org
                    yield f"{name}:addr:{'.'.join(labels[i:])}"
            elif address:
                yield f"{name}:addr:{address.lower()[:MAX_WORD]}"
    else:
        for word in words(text):
            yield f"{name}:{word}"


def _charset_text(payload: bytes, charset: str | None) -> str:
    """Text in its declared charset; when that is wrong or unknown, UTF-8, and failing
    that latin-1 (every byte is a character): 8-bit spam often lies about its charset."""
    for candidate in (charset or "us-ascii", "utf-8"):
        try:
            return payload.decode(candidate)
        except (LookupError, UnicodeDecodeError):
            continue
    return payload.decode("latin-1")


def raw_header_text(value: str) -> str:
    """A field as the parser kept it (8-bit bytes as surrogates): UTF-8 if it is, else
    latin-1."""
    data = value.encode("ascii", "surrogateescape")
    return _charset_text(data, "utf-8")


def part_text(part: email.message.Message) -> str:
    """A text part's content as str: transfer encoding and charset decoded."""
    payload = part.get_payload(decode=True)  # base64 and quoted-printable undone
    if not isinstance(payload, bytes):
        return ""
    return _charset_text(payload[:MAX_PART_CHARS * 4], part.get_content_charset())[
        :MAX_PART_CHARS]


def html_text(text: str) -> str:
    return html.unescape(_TAG.sub(" ", _HIDDEN.sub(" ", text)))


def _is_attachment(part: email.message.Message) -> bool:
    disposition = (part.get("Content-Disposition") or "").split(";", 1)[0].strip().lower()
    return disposition == "attachment" or part.get_content_maintype() != "text"


def _attachment_tokens(part: email.message.Message) -> Iterator[str]:
    yield f"attachment:type:{part.get_content_type()}"
    filename = part.get_filename()
    if filename:
        filename = decoded_header(filename).lower()
        stem, dot, extension = filename.rpartition(".")
        if dot and extension:
            yield f"attachment:ext:{extension[:MAX_WORD]}"
        for word in words(stem if dot else filename):
            yield f"attachment:name:{word}"


def body_tokens(message: email.message.Message) -> Iterator[str]:
    for count, part in enumerate(message.walk()):
        if count >= MAX_PARTS:
            yield "parts:many"
            return
        if part.is_multipart():
            yield f"multipart:{part.get_content_subtype()}"
            continue
        if _is_attachment(part):  # also a one-part message that is all attachment
            yield from _attachment_tokens(part)
            continue
        subtype = part.get_content_subtype()
        if subtype not in ("plain", "html"):  # inline text/calendar, text/csv...
            yield f"part:type:{part.get_content_type()}"
            continue
        encoding = (part.get("Content-Transfer-Encoding") or "").strip().lower()
        if encoding in ("base64", "quoted-printable"):
            yield f"part:encoding:{encoding}"
        text = part_text(part)
        for host in _URL.findall(text) if "://" in text else ():  # the test is cheaper
            labels = host.lower().strip(".").split(".")
            for i in range(max(len(labels) - 1, 1)):
                yield f"url:{'.'.join(labels[i:])}"
        if subtype == "html":
            yield "part:html"
            text = html_text(text)
        yield from words(text)


def tokens(raw: bytes) -> frozenset[str]:
    """The tokens of one message (bytes as on the wire or in a file; CRLF or LF)."""
    message = email.message_from_bytes(raw, policy=email.policy.compat32)
    found: set[str] = set()
    for name, value in message.raw_items():
        name = name.lower()
        if name in HEADER_FIELDS:
            found.update(header_tokens(name, raw_header_text(value)))
    found.update(body_tokens(message))
    return frozenset(found)
