"""popgate's Python plugin API (DESIGN.md, "Python plugins: the contract").

A plugin is a class derived from :class:`Plugin` whose methods are named after the events
it wants (mitmproxy's addons), every one optional and each may be ``async def``:

- ``configure(options)``: once, with the ``[[plugin]]`` table's own keys (TOML types);
- ``session_start(session)`` and ``session_end(session)``;
- ``command(session, command)``: return None (allow), :func:`deny` or :func:`rewrite`;
- ``message(session, msg)``: RETR and TOP; edit ``msg`` and return None (pass),
  :func:`tempfail`, :func:`reject` or :func:`quarantine`;
- ``message_done(session, msg, report)``: after the chain, for logging;
- ``done()``: at shutdown, or when a reload retires the plugin.

One instance serves every session; per-session state goes in ``session.data``.
Test a plugin without a server with ``popgate.testing.check`` or
``python3 -m popgate check PLUGIN MESSAGE.eml``.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

# Inside popgate the message model is the embedded module `_popgate` (the proxy's own
# types); under plain python3 it is the extension next to this file. Never both: the two
# would register the same C++ types twice.
if "_popgate" in sys.builtin_module_names:
    _popgate = importlib.import_module("_popgate")
else:
    from . import _popgate  # type: ignore[no-redef]

Message = _popgate.Message
Headers = _popgate.Headers

__all__ = [
    "HEADERS", "WHOLE_MESSAGE", "Plugin", "Message", "Headers", "Session", "Command",
    "Report", "Verdict", "Decision", "tempfail", "reject", "quarantine", "deny", "rewrite",
]

#: ``Plugin.needs``: the plugin sees the header block and the blank line only (partial);
#: the body streams past it.
HEADERS = "headers"
#: ``Plugin.needs``: the plugin sees the whole message (the default).
WHOLE_MESSAGE = "whole"


class Plugin:
    """Base class of Python plugins. Define only the hooks you need (see the module's
    docstring); set ``needs = popgate.HEADERS`` if the header block is enough."""

    needs: str = WHOLE_MESSAGE


def _text(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{what} must be str, not {type(value).__name__}")
    return value


class Verdict:
    """What ``message`` returns to stop a message or keep its original: made by
    :func:`tempfail`, :func:`reject` and :func:`quarantine`. Immutable."""

    __slots__ = ("kind", "reason")
    kind: str
    reason: str

    def __init__(self, kind: str, reason: str) -> None:
        if kind not in ("tempfail", "reject", "quarantine"):
            raise ValueError(f"unknown verdict {kind!r}")
        object.__setattr__(self, "kind", kind)
        object.__setattr__(self, "reason", _text(reason, "reason"))

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Verdict) and (self.kind, self.reason) ==
                (other.kind, other.reason))

    def __hash__(self) -> int:
        return hash((Verdict, self.kind, self.reason))

    def __repr__(self) -> str:
        return f"popgate.{self.kind}({self.reason!r})"


class Decision:
    """What ``command`` returns to change a command: made by :func:`deny` and
    :func:`rewrite`. Immutable."""

    __slots__ = ("kind", "text")
    kind: str
    text: str

    def __init__(self, kind: str, text: str) -> None:
        if kind not in ("deny", "rewrite"):
            raise ValueError(f"unknown decision {kind!r}")
        object.__setattr__(self, "kind", kind)
        object.__setattr__(self, "text", _text(text, "text"))

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Decision) and (self.kind, self.text) == (other.kind, other.text)

    def __hash__(self) -> int:
        return hash((Decision, self.kind, self.text))

    def __repr__(self) -> str:
        return f"popgate.{self.kind}({self.text!r})"


def tempfail(reason: str) -> Verdict:
    """The client gets ``-ERR [SYS/TEMP]``; the message stays on the server."""
    return Verdict("tempfail", reason)


def reject(reason: str) -> Verdict:
    """The original goes to the quarantine; the client gets a short notice instead."""
    return Verdict("reject", reason)


def quarantine(reason: str) -> Verdict:
    """The original goes to the quarantine; the client gets the message as the plugins
    left it (an attachment removed, say), with ``X-Popgate-Quarantine-Id`` naming the
    original. Later plugins still run. Needs the whole message (``needs`` left at
    WHOLE_MESSAGE): a headers-only chain withholds the message as a tempfail instead."""
    return Verdict("quarantine", reason)


def deny(reply: str) -> Decision:
    """The command is not forwarded; the client gets ``-ERR`` + reply (one line)."""
    return Decision("deny", reply)


def rewrite(line: str) -> Decision:
    """This command line (no CRLF) is forwarded instead of the client's."""
    return Decision("rewrite", line)


class Session:
    """The client session a hook runs in. Secrets never appear here."""

    __slots__ = ("id", "client_address", "user", "upstream", "client_tls", "upstream_tls",
                 "data")

    def __init__(self, id: int, client_address: str, user: str, upstream: str,
                 client_tls: bool, upstream_tls: bool) -> None:
        self.id = id
        self.client_address = client_address
        self.user = user  # "" until the client has logged in
        self.upstream = upstream
        self.client_tls = client_tls
        self.upstream_tls = upstream_tls
        self.data: dict[str, Any] = {}  # the plugin's own, for this session

    def __repr__(self) -> str:
        return (f"popgate.Session(id={self.id}, client_address={self.client_address!r}, "
                f"user={self.user!r}, upstream={self.upstream!r})")


class Command:
    """A client command, before it is forwarded."""

    __slots__ = ("keyword", "args", "secret")

    def __init__(self, keyword: str, args: tuple[str, ...], secret: bool) -> None:
        self.keyword = keyword.upper()
        self.args = () if secret else tuple(args)  # never credentials
        self.secret = secret

    def __repr__(self) -> str:
        return f"popgate.Command({self.keyword!r}, {self.args!r}, secret={self.secret})"


class Report:
    """What the chain made of a message (``message_done``)."""

    __slots__ = ("verdict", "reason", "decided_by", "size_in", "size_out", "quarantine_id")

    def __init__(self, verdict: str, reason: str, decided_by: str, size_in: int, size_out: int,
                 quarantine_id: str | None) -> None:
        self.verdict = verdict  # "pass" | "tempfail" | "reject" | "quarantine"
        self.reason = reason
        self.decided_by = decided_by
        self.size_in = size_in
        self.size_out = size_out
        self.quarantine_id = quarantine_id

    def __repr__(self) -> str:
        return (f"popgate.Report(verdict={self.verdict!r}, reason={self.reason!r}, "
                f"decided_by={self.decided_by!r}, size_in={self.size_in}, "
                f"size_out={self.size_out}, quarantine_id={self.quarantine_id!r})")
