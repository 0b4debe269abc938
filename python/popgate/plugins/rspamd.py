"""Asks rspamd about each message a client downloads and adds the header fields rspamd's
own ``milter_headers`` module adds, so mail fetched over POP3 is tagged as mail delivered
through an rspamd-enabled MTA would be.

Each whole ``RETR`` goes to rspamd's normal worker over its HTTP protocol
(``POST /checkv2``). The answer becomes:

- ``X-Spamd-Result: default: False [1.50 / 15.00]; DATE_IN_PAST(1.00)[26869]; ...``, as
  milter_headers writes it (the verdict, score / reject threshold, then every symbol with
  its score and options, largest absolute score first);
- ``X-Rspamd-Score: 1.50``;
- ``X-Spam: Yes`` when rspamd's action says spam (add header, rewrite subject, reject);
- for those actions, ``subject_prefix`` before the Subject; for "rewrite subject" the
  Subject rspamd sends back in its answer, when it sends one.

Fields of those names already in the message (a sender's forged ``X-Spam: No``) are
removed first. rspamd's "reject" action (and "discard" and "quarantine") either rejects
the message into popgate's quarantine, the client getting popgate's notice (``reject =
"quarantine"``, the default), or only tags it (``reject = "tag"``). ``TOP`` is not
scanned: rspamd would judge a cut message, and tagging a preview differently from the
message is worse than not tagging it.

rspamd down, refusing, slower than ``scan_timeout`` or answering something that is not
a scan result makes the hook raise, so popgate's ``on_error`` applies: ``"pass"``
delivers the message untagged, ``"tempfail"`` keeps it on the server for a later try.

    [[plugin]]
    use = "python:popgate.plugins.rspamd"
    url = "http://127.0.0.1:11333"      # rspamd's normal worker (the default)
    reject = "quarantine"               # quarantine | tag
    subject_prefix = "[SPAM] "          # optional
    scan_timeout = 20                   # seconds for the whole rspamd call
    timeout = 30                        # popgate's own limit for the hook
    on_error = "pass"

Connections are kept open and reused (HTTP/1.1 keep-alive, a few idle ones per event
loop) when rspamd allows it; a reused connection rspamd had closed meanwhile is retried
once on a fresh one. rspamd 3.4's normal worker answers every request with
``Connection: close``, so with it each message takes a new connection.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import time
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

import popgate
from popgate.plugins._options import check_known

DEFAULT_URL = "http://127.0.0.1:11333"
DEFAULT_SCAN_TIMEOUT = 20.0  # below popgate's default hook timeout (30 s)
OPTIONS = ("url", "reject", "subject_prefix", "scan_timeout")
REJECT_POLICIES = ("quarantine", "tag")
MAX_SUBJECT_PREFIX = 200  # room for "Subject: " and the subject on a 998-octet line
DEFAULT_REWRITTEN = "*** SPAM *** "  # rspamd's own default for "rewrite subject"

# The header fields this plugin writes; any the message already has are removed first.
RESULT_FIELD = "X-Spamd-Result"
SCORE_FIELD = "X-Rspamd-Score"
SPAM_FIELD = "X-Spam"
OUR_FIELDS = (RESULT_FIELD, SCORE_FIELD, SPAM_FIELD)

# rspamd's actions (rspamd's cfg_file.h, METRIC_ACTION_*): which mean spam, which ask
# for the message to go away. The rest ("no action", "greylist", "soft reject") are
# about SMTP timing and mean nothing for mail already delivered.
ACTIONS = frozenset({"reject", "soft reject", "rewrite subject", "add header", "greylist",
                     "no action", "discard", "quarantine"})
SPAM_ACTIONS = frozenset({"reject", "rewrite subject", "add header", "discard", "quarantine"})
REJECT_ACTIONS = frozenset({"reject", "discard", "quarantine"})

POOL_SIZE = 4  # idle connections kept per event loop
IDLE_SECONDS = 30.0  # an idle connection older than this is closed, not reused
MAX_ANSWER = 16 << 20  # an answer larger than this is not rspamd's
MAX_HEAD = 64 << 10  # status line and header fields of the answer
# What a broken connection or a runaway answer raises from asyncio's streams
# (IncompleteReadError is an EOFError; a line past the reader's limit a ValueError).
STREAM_ERRORS = (OSError, EOFError, ValueError)

log = logging.getLogger("popgate.plugins.rspamd")


class RspamdError(Exception):
    """rspamd could not be asked, or its answer is not a scan result."""


# -- options --------------------------------------------------------------------------

@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int
    path: str  # where /checkv2 is, with no trailing slash ("" at the root)
    url: str

    @property
    def authority(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def parse_url(value: object) -> Endpoint:
    if not isinstance(value, str) or not value:
        raise ValueError(f"rspamd: option url must be a non-empty string, not {value!r}")
    where = f"rspamd: option url {value!r}"
    if any(ord(c) < 33 or ord(c) == 127 for c in value):
        raise ValueError(f"{where}: must not contain spaces or control characters")
    try:
        parts = urllib.parse.urlsplit(value)
        port = parts.port
    except ValueError as error:
        raise ValueError(f"{where}: {error}") from None
    if parts.scheme == "https":
        raise ValueError(f"{where}: https is not supported; talk to rspamd over http on a "
                         "trusted network or the loopback")
    if parts.scheme != "http":
        raise ValueError(f"{where}: expected http://HOST[:PORT][/PATH]")
    if not parts.hostname:
        raise ValueError(f"{where}: no host (expected http://HOST[:PORT])")
    if parts.username is not None or parts.password is not None:
        raise ValueError(f"{where}: user and password are not supported")
    if parts.query or parts.fragment:
        raise ValueError(f"{where}: no query or fragment expected")
    if port == 0:
        raise ValueError(f"{where}: port 0")
    return Endpoint(parts.hostname, port or 11333, parts.path.rstrip("/"), value)


def parse_reject(value: object) -> str:
    if value not in REJECT_POLICIES:
        raise ValueError(f"rspamd: option reject must be \"quarantine\" or \"tag\", not "
                         f"{value!r}")
    return str(value)


def parse_subject_prefix(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"rspamd: option subject_prefix must be a string, not {value!r}")
    if any(c in value for c in "\r\n\0"):
        raise ValueError("rspamd: option subject_prefix must not contain CR, LF or NUL")
    if len(value.encode("utf-8", "surrogateescape")) > MAX_SUBJECT_PREFIX:
        raise ValueError(f"rspamd: option subject_prefix is longer than "
                         f"{MAX_SUBJECT_PREFIX} bytes")
    return value


def parse_scan_timeout(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"rspamd: option scan_timeout must be a number of seconds, not "
                         f"{value!r}")
    if not math.isfinite(value) or not 0 < value <= 3600:
        raise ValueError(f"rspamd: option scan_timeout must be more than 0 and at most "
                         f"3600 seconds, not {value}")
    return float(value)


# -- rspamd's answer ------------------------------------------------------------------

@dataclass(frozen=True)
class Symbol:
    name: str
    score: float
    options: tuple[str, ...]


@dataclass(frozen=True)
class Scan:
    """What /checkv2 answered (rspamd's protocol.c, rspamd_protocol_write_ucl)."""

    action: str
    score: float
    required_score: float
    symbols: tuple[Symbol, ...]
    subject: str | None  # for "rewrite subject": the Subject rspamd wants

    @property
    def is_spam(self) -> bool:
        return self.action in SPAM_ACTIONS

    def summary(self) -> str:
        """For a reject reason and the log: action, score, the symbols that scored."""
        scored = [s for s in ordered(self.symbols) if s.score != 0] or list(self.symbols)
        names = ", ".join(f"{s.name}({s.score:.2f})" for s in scored[:10])
        more = f", +{len(scored) - 10} more" if len(scored) > 10 else ""
        return (f"rspamd: {self.action}, score {self.score:.2f} / "
                f"{self.required_score:.2f}: {names or 'no symbols'}{more}")


def _number(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RspamdError(f"rspamd's answer: {what} is not a number: {value!r}")
    return float(value)


def parse_scan(body: bytes) -> Scan:
    try:
        answer = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise RspamdError(f"rspamd's answer is not JSON: {body[:200]!r}") from None
    if not isinstance(answer, dict):
        raise RspamdError(f"rspamd's answer is not a JSON object: {body[:200]!r}")
    if "error" in answer and "action" not in answer:
        raise RspamdError(f"rspamd: {answer['error']}")
    action = answer.get("action")
    if not isinstance(action, str) or action not in ACTIONS:
        raise RspamdError(f"rspamd's answer: unknown action {action!r}")
    score = _number(answer.get("score"), "score")
    required = _number(answer.get("required_score"), "required_score")
    table = answer.get("symbols", {})
    if not isinstance(table, dict):
        raise RspamdError("rspamd's answer: symbols is not an object")
    symbols = []
    for key, entry in table.items():
        if not isinstance(entry, dict):
            raise RspamdError(f"rspamd's answer: symbol {key!r} is not an object")
        options = entry.get("options", [])
        if not isinstance(options, list):
            raise RspamdError(f"rspamd's answer: options of {key!r} are not a list")
        symbols.append(Symbol(str(entry.get("name", key)),
                              _number(entry.get("score", 0.0), f"score of {key!r}"),
                              tuple(str(option) for option in options)))
    subject = answer.get("subject")
    return Scan(action, score, required, tuple(symbols),
                subject if isinstance(subject, str) else None)


def ordered(symbols: tuple[Symbol, ...]) -> list[Symbol]:
    """milter_headers' order: the largest absolute score first (by name among equals,
    where rspamd's own order is arbitrary)."""
    return sorted(symbols, key=lambda s: (-abs(s.score), s.name))


_CONTROLS = re.compile(r"[\x00-\x1f\x7f]+")


def clean(text: str) -> str:
    """Text from rspamd made safe for one header field: no line breaks or controls."""
    return _CONTROLS.sub(" ", text)


def spamd_result(scan: Scan) -> str:
    """X-Spamd-Result as milter_headers writes it (its routine 'x-spamd-result'); popgate
    folds it where it is too long."""
    parts = ["default: %s [%.2f / %.2f]" % ("True" if scan.action == "reject" else "False",
                                           scan.score, scan.required_score)]
    parts += ["%s(%.2f)[%s]" % (clean(s.name), s.score, clean(",".join(s.options)))
              for s in ordered(scan.symbols)]
    return "; ".join(parts)


def score_text(scan: Scan) -> str:
    return "%.2f" % scan.score


# -- HTTP/1.1 to rspamd, with a small pool of kept-alive connections ------------------

@dataclass
class Connection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    idle_since: float = field(default_factory=time.monotonic)

    def usable(self) -> bool:
        return (not self.writer.is_closing() and not self.reader.at_eof() and
                time.monotonic() - self.idle_since < IDLE_SECONDS)

    def close(self) -> None:
        self.writer.close()


class ClosedBeforeAnswer(Exception):
    """The connection ended before the first byte of an answer: on a reused connection,
    rspamd (or something between) closed it while it was idle."""


@dataclass
class Answer:
    version: str  # "1.0" or "1.1"
    status: int
    reason: str
    headers: dict[str, str]
    body: bytes

    @property
    def keep_alive(self) -> bool:
        # RFC 9112 §9.3: HTTP/1.1 keeps the connection unless told "close"; 1.0 closes it
        # unless told "keep-alive".
        tokens = {t.strip().lower() for t in self.headers.get("connection", "").split(",")}
        if self.version == "1.0":
            return "keep-alive" in tokens
        return "close" not in tokens


class Client:
    """POSTs to one rspamd endpoint; keeps up to POOL_SIZE idle connections per event
    loop (popgate runs async hooks on one loop; popgate.testing makes a loop per check,
    and a connection belongs to the loop that opened it)."""

    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self._pools: dict[asyncio.AbstractEventLoop, list[Connection]] = {}
        self.opened = 0  # connections opened, for the tests

    def _pool(self) -> list[Connection]:
        loop = asyncio.get_running_loop()
        # A loop that is gone (asyncio.run returned) takes its connections with it: they
        # can't be closed from here, and dropping them lets the loop and its sockets be
        # collected instead of kept forever.
        for gone in [other for other in self._pools if other.is_closed()]:
            del self._pools[gone]
        pool = self._pools.get(loop)
        if pool is None:
            pool = self._pools[loop] = []
        return pool

    async def _connect(self) -> Connection:
        try:
            reader, writer = await asyncio.open_connection(self.endpoint.host,
                                                           self.endpoint.port)
        except OSError as error:
            raise RspamdError(f"rspamd at {self.endpoint.url}: can't connect: "
                              f"{error.strerror or error}") from None
        self.opened += 1
        return Connection(reader, writer)

    def _idle(self) -> Connection | None:
        pool = self._pool()
        while pool:
            conn = pool.pop()
            if conn.usable():
                return conn
            conn.close()
        return None

    def _keep(self, conn: Connection) -> None:
        pool = self._pool()
        if len(pool) >= POOL_SIZE:
            conn.close()
            return
        conn.idle_since = time.monotonic()
        pool.append(conn)

    async def post(self, path: str, headers: list[tuple[str, str]], body: bytes) -> Answer:
        request = self._request(path, headers, body)
        conn = self._idle()
        if conn is not None:
            try:
                return await self._exchange(conn, request)
            except ClosedBeforeAnswer:
                pass  # closed while idle: once more on a fresh connection
        conn = await self._connect()
        try:
            return await self._exchange(conn, request)
        except ClosedBeforeAnswer:
            raise RspamdError(f"rspamd at {self.endpoint.url} closed the connection "
                              "without answering") from None

    def _request(self, path: str, headers: list[tuple[str, str]], body: bytes) -> bytes:
        lines = [f"POST {self.endpoint.path}{path} HTTP/1.1",
                 f"Host: {self.endpoint.authority}",
                 "Connection: keep-alive",
                 f"Content-Length: {len(body)}"]
        lines += [f"{name}: {value}" for name, value in headers]
        head = "\r\n".join(lines) + "\r\n\r\n"
        return head.encode("utf-8", "surrogateescape") + body

    async def _exchange(self, conn: Connection, request: bytes) -> Answer:
        """One request and its answer. The connection goes back to the pool only after a
        whole answer that allows it; on anything else (an error, a cancellation) it is
        closed, since what is still in flight on it is unknown."""
        kept = False
        try:
            try:
                conn.writer.write(request)
                await conn.writer.drain()
                status_line = await conn.reader.readline()
            except (ConnectionResetError, BrokenPipeError):
                raise ClosedBeforeAnswer() from None
            if not status_line:
                raise ClosedBeforeAnswer()
            answer = await self._read_answer(conn.reader, status_line)
            if answer.keep_alive:
                self._keep(conn)
                kept = True
            return answer
        except STREAM_ERRORS as error:
            raise RspamdError(f"rspamd at {self.endpoint.url}: connection failed during "
                              f"the answer: {error}") from None
        finally:
            if not kept:
                conn.close()

    async def _read_answer(self, reader: asyncio.StreamReader, status_line: bytes) -> Answer:
        match = re.fullmatch(rb"HTTP/1\.([01]) (\d{3})(?: ([^\r\n]*))?\r?\n", status_line)
        if match is None:
            raise RspamdError(f"rspamd at {self.endpoint.url}: not an HTTP answer: "
                              f"{status_line[:100]!r}")
        headers: dict[str, str] = {}
        size = len(status_line)
        while True:
            line = await reader.readline()
            size += len(line)
            if size > MAX_HEAD:
                raise RspamdError(f"rspamd at {self.endpoint.url}: answer header too long")
            if not line.endswith(b"\n"):
                raise RspamdError(f"rspamd at {self.endpoint.url}: connection closed in "
                                  "the answer's header")
            if line in (b"\r\n", b"\n"):
                break
            name, colon, value = line.decode("latin-1").partition(":")
            if not colon:
                raise RspamdError(f"rspamd at {self.endpoint.url}: bad header line "
                                  f"{line[:100]!r}")
            headers[name.strip().lower()] = value.strip()
        if "chunked" in headers.get("transfer-encoding", "").lower():
            body = await self._read_chunked(reader)
        elif "content-length" in headers:
            length = headers["content-length"]
            if not length.isdigit() or int(length) > MAX_ANSWER:
                raise RspamdError(f"rspamd at {self.endpoint.url}: bad Content-Length "
                                  f"{length!r}")
            body = await reader.readexactly(int(length))
        else:  # RFC 9112 §6.3: no length, the body runs to the end of the connection
            body = await reader.read(MAX_ANSWER + 1)
            while len(body) <= MAX_ANSWER and not reader.at_eof():
                more = await reader.read(MAX_ANSWER + 1 - len(body))
                if not more:
                    break
                body += more
            if len(body) > MAX_ANSWER:
                raise RspamdError(f"rspamd at {self.endpoint.url}: answer too large")
            headers["connection"] = "close"
        return Answer("1." + match.group(1).decode(), int(match.group(2)),
                      (match.group(3) or b"").decode("latin-1"), headers, body)

    async def _read_chunked(self, reader: asyncio.StreamReader) -> bytes:
        body = b""
        while True:
            line = await reader.readline()
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise RspamdError(f"rspamd at {self.endpoint.url}: bad chunk size "
                                  f"{line[:50]!r}") from None
            if size == 0:
                while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                    pass  # trailer fields: none that matter here
                return body
            if len(body) + size > MAX_ANSWER:
                raise RspamdError(f"rspamd at {self.endpoint.url}: answer too large")
            body += await reader.readexactly(size)
            await reader.readexactly(2)  # the CRLF after each chunk

    def close_idle(self) -> None:
        """Closes this loop's idle connections (the others belong to loops that are gone
        or not running here; they close when collected)."""
        pool = self._pool()
        while pool:
            pool.pop().close()


# -- what popgate knows about the message, as rspamd's request headers ----------------

_PRINTABLE = re.compile(r"[\x21-\x7e]+")
_ADDRESS = re.compile(r"<([^<>\s]*)>")


def request_headers(session: popgate.Session, msg: popgate.Message) -> list[tuple[str, str]]:
    """rspamd's protocol headers (rspamd's protocol.c) for what popgate knows. The POP3
    user is the mailbox the message was delivered to: `Deliver-To`, and `Rcpt` when it
    is an address. Not `User` (rspamd takes that for an SMTP-authenticated sender and
    treats the mail as outbound) and not `IP` (the POP3 client's address says nothing
    about where the message came from). The envelope sender, where the delivering MTA
    recorded it, is Return-Path."""
    headers: list[tuple[str, str]] = []
    user = session.user
    if user and _PRINTABLE.fullmatch(user):
        headers.append(("Deliver-To", user))
        if "@" in user:
            headers.append(("Rcpt", user))
    return_path = msg.headers.get("Return-Path")
    if return_path is not None:
        found = _ADDRESS.search(return_path)
        sender = found.group(1) if found else return_path.strip()
        if sender and _PRINTABLE.fullmatch(sender):
            headers.append(("From", sender))
    if msg.uidl and _PRINTABLE.fullmatch(msg.uidl):
        headers.append(("Queue-Id", msg.uidl))
    return headers


# -- the plugin -----------------------------------------------------------------------

def prefix_subject(headers: popgate.Headers, prefix: str) -> None:
    """Puts `prefix` before the Subject, once."""
    if not prefix:
        return
    subject = headers.get("Subject")
    if subject is None:
        headers.add("Subject", prefix.rstrip() or prefix)
    elif not subject.startswith(prefix):
        headers.set("Subject", prefix + subject)


class Rspamd(popgate.Plugin):
    needs = popgate.WHOLE_MESSAGE  # rspamd judges the body too

    def configure(self, options: dict[str, Any]) -> None:
        check_known("rspamd", options, OPTIONS)
        self.endpoint = parse_url(options.get("url", DEFAULT_URL))
        self.reject = parse_reject(options.get("reject", "quarantine"))
        self.subject_prefix = parse_subject_prefix(options.get("subject_prefix", ""))
        self.scan_timeout = parse_scan_timeout(options.get("scan_timeout",
                                                           DEFAULT_SCAN_TIMEOUT))
        self.client = Client(self.endpoint)

    async def scan(self, session: popgate.Session, msg: popgate.Message) -> Scan:
        try:
            async with asyncio.timeout(self.scan_timeout):
                answer = await self.client.post("/checkv2", request_headers(session, msg),
                                                msg.raw)
        except TimeoutError:
            raise RspamdError(f"rspamd at {self.endpoint.url}: no answer within "
                              f"{self.scan_timeout:g} s") from None
        if answer.status != 200:
            detail = answer.body[:200].decode("utf-8", "replace")
            raise RspamdError(f"rspamd at {self.endpoint.url}: HTTP {answer.status} "
                              f"{answer.reason}: {detail}")
        return parse_scan(answer.body)

    async def message(self, session: popgate.Session,
                      msg: popgate.Message) -> popgate.Verdict | None:
        if msg.command.upper() != "RETR" or msg.partial:
            return None  # a preview: rspamd would judge part of a message
        scan = await self.scan(session, msg)
        log.debug("message %d of session %d: %s", msg.number, session.id, scan.summary())
        if scan.action in REJECT_ACTIONS and self.reject == "quarantine":
            return popgate.reject(scan.summary())  # the original goes to the quarantine
        headers = msg.headers
        for name in OUR_FIELDS:
            headers.remove(name)
        headers.add(RESULT_FIELD, spamd_result(scan))
        headers.add(SCORE_FIELD, score_text(scan))
        if scan.is_spam:
            headers.add(SPAM_FIELD, "Yes")
            if scan.action == "rewrite subject" and scan.subject is not None:
                headers.set("Subject", clean(scan.subject))
            elif scan.action == "rewrite subject" and not self.subject_prefix:
                prefix_subject(headers, DEFAULT_REWRITTEN)
            else:
                prefix_subject(headers, self.subject_prefix)
        return None

    async def done(self) -> None:
        # On the loop that owns the connections: a transport is closed from its loop.
        self.client.close_idle()
