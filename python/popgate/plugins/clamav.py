"""Scans every message with ClamAV's daemon, clamd, and quarantines the infected ones.

The message, as it stands when this plugin's hook runs, is streamed to clamd with its
``INSTREAM`` command over a unix socket or TCP. ``stream: NAME FOUND`` rejects it: popgate
puts the original in its quarantine and the client gets a notice naming the virus.
``stream: OK`` passes it unchanged.

Anything else raises, and the plugin's ``on_error`` applies: clamd down or refusing, an
``ERROR`` answer (``INSTREAM size limit exceeded``: clamd's ``StreamMaxLength`` is below
``max_size``), a garbled answer, or no answer within popgate's ``timeout`` for the plugin
(which bounds the whole scan; popgate cancels it there). Use ``on_error = "tempfail"`` so
no message reaches a client unscanned: the client gets ``-ERR [SYS/TEMP]`` and the
message stays on the server until clamd is back.

A message larger than ``max_size`` is passed unscanned and logged (a warning): clamd would
refuse it, and scanning only its first ``max_size`` bytes as if they were the whole would
miss what is after them. Set ``max_size`` to clamd's ``StreamMaxLength`` (both default to
25 MiB).

    [[plugin]]
    use = "python:popgate.plugins.clamav"
    clamd = "/var/run/clamav/clamd.ctl"     # or "127.0.0.1:3310"
    max_size = 26214400                     # clamd's StreamMaxLength (25M)
    header = true                           # X-Virus-Scanned on what passes; default false
    timeout = 60                            # popgate's: the whole scan, seconds
    on_error = "tempfail"                   # clamd down: the message waits on the server

With ``header = true`` a scanned, clean message gets ``X-Virus-Scanned: clamav`` and one
over ``max_size`` ``X-Virus-Scanned: clamav (not scanned: over max_size)``, replacing any
field of that name the sender wrote. Without it (the default) a clean message passes byte
for byte.
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import struct
from dataclasses import dataclass
from typing import Any

import popgate
from popgate.plugins._options import check_known

DEFAULT_CLAMD = "/var/run/clamav/clamd.ctl"  # Debian's clamav-daemon LocalSocket
DEFAULT_MAX_SIZE = 25 * 1024 * 1024  # clamd's own StreamMaxLength default (25M)
CHUNK = 64 * 1024  # bytes per INSTREAM chunk
MAX_ANSWER = 64 * 1024  # longer than any real answer: beyond it clamd is not talking sense
PROBE_TIMEOUT = 2.0  # seconds for the VERSION probe at start-up
OPTIONS = ("clamd", "max_size", "header")
HEADER = "X-Virus-Scanned"
SCANNED = "clamav"
NOT_SCANNED = "clamav (not scanned: over max_size)"

# clamd's answer to a stream: "stream: OK", "stream: NAME FOUND", "MESSAGE ERROR".
FOUND = re.compile(r"stream: (.+) FOUND")
HOST_PORT = re.compile(r"(?:\[(?P<ipv6>[0-9A-Fa-f:.]+)\]|(?P<host>[^:\[\]/\s]+)):(?P<port>\d+)")

log = logging.getLogger("popgate.plugins.clamav")


class ClamdError(RuntimeError):
    """clamd could not be asked, or did not say OK or FOUND: the plugin's on_error applies."""


@dataclass(frozen=True)
class ClamdAddress:
    """Where clamd listens: a unix socket's path, or a TCP host and port."""

    path: str | None = None
    host: str = ""
    port: int = 0

    def __str__(self) -> str:
        if self.path is not None:
            return self.path
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    async def connect(self) -> socket.socket:
        """A connected non-blocking socket, for the event loop's sock_* calls."""
        loop = asyncio.get_running_loop()
        if self.path is not None:
            targets: list[tuple[int, Any]] = [(socket.AF_UNIX, self.path)]
        else:
            found = await loop.getaddrinfo(self.host, self.port, type=socket.SOCK_STREAM)
            targets = [(family, address) for family, _, _, _, address in found]
        failure: OSError = OSError(f"{self.host}: no address")
        for family, address in targets:
            sock = socket.socket(family, socket.SOCK_STREAM)
            try:
                sock.setblocking(False)
                await loop.sock_connect(sock, address)
                return sock
            except OSError as error:
                sock.close()
                failure = error
            except BaseException:
                sock.close()
                raise
        raise failure

    def open_blocking(self, timeout: float) -> socket.socket:
        if self.path is not None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.settimeout(timeout)
                sock.connect(self.path)
            except BaseException:
                sock.close()
                raise
            return sock
        return socket.create_connection((self.host, self.port), timeout=timeout)


# -- options --------------------------------------------------------------------------

def clamd_address(value: object) -> ClamdAddress:
    """``HOST:PORT`` (``[::1]:3310`` for IPv6) or a unix socket's absolute path."""
    if not isinstance(value, str) or not value:
        raise TypeError(f"clamav: option clamd must be a string, HOST:PORT or a unix "
                        f"socket's path, not {value!r}")
    if value.startswith("/"):
        if "\0" in value:
            raise ValueError("clamav: option clamd: a socket path must not contain NUL")
        return ClamdAddress(path=value)
    match = HOST_PORT.fullmatch(value)
    if match is None:
        raise ValueError(f"clamav: option clamd must be HOST:PORT or a unix socket's "
                         f"absolute path, not {value!r}")
    port = int(match["port"])
    if not 1 <= port <= 65535:
        raise ValueError(f"clamav: option clamd: port {port} is not between 1 and 65535")
    return ClamdAddress(host=match["ipv6"] or match["host"], port=port)


def size_limit(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"clamav: option max_size must be an integer (bytes), not {value!r}")
    if value < 1:
        raise ValueError(f"clamav: option max_size must be positive, not {value}")
    return value


def header_flag(value: object) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"clamav: option header must be true or false, not {value!r}")
    return value


# -- talking to clamd -----------------------------------------------------------------

def parse_answer(data: bytes, address: ClamdAddress) -> str | None:
    """The virus clamd found, None for OK; raises ClamdError for anything else. With the
    ``z`` prefix every answer ends in NUL; clamd's AllMatchScan may send several FOUND."""
    answers = [part.decode("utf-8", "replace").strip() for part in data.split(b"\0")]
    answers = [answer for answer in answers if answer]
    if not answers:
        raise ClamdError(f"clamd at {address} closed the connection without an answer")
    found = []
    for answer in answers:
        match = FOUND.fullmatch(answer)
        if match is not None:
            found.append(match[1])
        elif answer != "stream: OK":
            # "INSTREAM size limit exceeded. ERROR", "... ERROR", or not clamd at all.
            raise ClamdError(f"clamd at {address} answered {answer[:200]!r}")
    return ", ".join(found) if found else None


async def scan(address: ClamdAddress, data: bytes | memoryview, chunk: int = CHUNK) -> str | None:
    """Streams `data` to clamd (INSTREAM: 4-byte big-endian lengths, a zero length at the
    end) and returns the virus it found, or None. Raises ClamdError when clamd can't be
    asked or doesn't say OK or FOUND.

    The event loop's socket calls, not asyncio streams: when clamd refuses a stream (its
    size limit) it answers and closes while chunks are still coming, the next send fails,
    and a StreamReader then raises that failure instead of handing over the answer."""
    loop = asyncio.get_running_loop()
    try:
        sock = await address.connect()
    except OSError as error:
        raise ClamdError(f"can't connect to clamd at {address}: {error}") from error
    try:
        view = memoryview(data)
        sent: OSError | None = None
        try:
            await loop.sock_sendall(sock, b"zINSTREAM\0")
            for start in range(0, len(view), chunk):
                piece = view[start:start + chunk]
                await loop.sock_sendall(sock, struct.pack(">I", len(piece)))
                await loop.sock_sendall(sock, piece)  # one chunk at a time: no copies
            await loop.sock_sendall(sock, struct.pack(">I", 0))
        except OSError as error:
            sent = error  # clamd stopped reading: its answer, already sent, says why
        answer = b""
        try:
            while len(answer) < MAX_ANSWER:
                more = await loop.sock_recv(sock, MAX_ANSWER - len(answer))
                if not more:
                    break
                answer += more
        except OSError as error:
            # A reset (clamd closed with chunks of ours unread) comes after its answer:
            # keep the answer.
            if not answer:
                raise ClamdError(f"clamd at {address}: {sent or error}") from error
        if not answer and sent is not None:
            raise ClamdError(f"clamd at {address} closed the connection while the message "
                             f"was sent: {sent}") from sent
        if len(answer) >= MAX_ANSWER:
            raise ClamdError(f"clamd at {address} answered more than {MAX_ANSWER} bytes")
        return parse_answer(answer, address)
    finally:
        # Also when popgate cancels the scan at its timeout: the connection goes with it.
        sock.close()


def probe(address: ClamdAddress, timeout: float = PROBE_TIMEOUT) -> str:
    """clamd's VERSION answer ("ClamAV 1.4.6/..."); raises OSError or ClamdError."""
    with address.open_blocking(timeout) as sock:
        sock.sendall(b"zVERSION\0")
        answer = b""
        while b"\0" not in answer and len(answer) < MAX_ANSWER:
            more = sock.recv(4096)
            if not more:
                break
            answer += more
    text = answer.split(b"\0", 1)[0].decode("utf-8", "replace").strip()
    if not text.startswith("ClamAV"):
        raise ClamdError(f"answered VERSION with {text[:200]!r}")
    return text


def one_line(text: str) -> str:
    """A virus name as a reason: a notice and a log line, so no line breaks."""
    return " ".join(text.split())


# -- the plugin -----------------------------------------------------------------------

class ClamAV(popgate.Plugin):
    needs = popgate.WHOLE_MESSAGE  # a virus is in the body

    def configure(self, options: dict[str, Any]) -> None:
        check_known("clamav", options, OPTIONS)
        self.clamd = clamd_address(options.get("clamd", DEFAULT_CLAMD))
        self.max_size = size_limit(options.get("max_size", DEFAULT_MAX_SIZE))
        self.header = header_flag(options.get("header", False))
        # clamd may come up after popgate (on_error covers the meantime): say so, don't stop.
        try:
            log.info("clamd at %s: %s", self.clamd, probe(self.clamd))
        except (OSError, ClamdError) as error:
            log.warning("clamd at %s does not answer now (%s): messages follow on_error "
                        "until it does", self.clamd, error)

    async def message(self, session: popgate.Session,
                      msg: popgate.Message) -> popgate.Verdict | None:
        raw = msg.raw
        if len(raw) > self.max_size:
            log.warning("session %d (%s) %s %d: %d bytes, over max_size (%d): passed "
                        "unscanned", session.id, session.user, msg.command, msg.number,
                        len(raw), self.max_size)
            if self.header:
                msg.headers.set(HEADER, NOT_SCANNED)
            return None
        virus = await scan(self.clamd, raw)
        if virus is not None:
            return popgate.reject(f"virus found: {one_line(virus)}")
        if self.header:
            msg.headers.set(HEADER, SCANNED)
        return None
