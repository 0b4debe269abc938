from typing import Any, Final, Literal

from . import _popgate as _popgate
from ._popgate import Headers as Headers, Message as Message

HEADERS: Final = "headers"
WHOLE_MESSAGE: Final = "whole"

class Plugin:
    # Hooks (all optional, each may be async def): configure(options),
    # session_start(session), command(session, command) -> Decision | None,
    # message(session, msg) -> Verdict | None, message_done(session, msg, report),
    # session_end(session), done().
    needs: str

class Verdict:
    @property
    def kind(self) -> Literal["tempfail", "reject"]: ...
    @property
    def reason(self) -> str: ...
    def __init__(self, kind: Literal["tempfail", "reject"], reason: str) -> None: ...

class Decision:
    @property
    def kind(self) -> Literal["deny", "rewrite"]: ...
    @property
    def text(self) -> str: ...
    def __init__(self, kind: Literal["deny", "rewrite"], text: str) -> None: ...

def tempfail(reason: str) -> Verdict: ...
def reject(reason: str) -> Verdict: ...
def deny(reply: str) -> Decision: ...
def rewrite(line: str) -> Decision: ...

class Session:
    id: int
    client_address: str
    user: str
    upstream: str
    client_tls: bool
    upstream_tls: bool
    data: dict[str, Any]
    def __init__(self, id: int, client_address: str, user: str, upstream: str,
                 client_tls: bool, upstream_tls: bool) -> None: ...

class Command:
    @property
    def keyword(self) -> str: ...
    @property
    def args(self) -> tuple[str, ...]: ...
    @property
    def secret(self) -> bool: ...
    def __init__(self, keyword: str, args: tuple[str, ...], secret: bool) -> None: ...

class Report:
    @property
    def verdict(self) -> Literal["pass", "tempfail", "reject"]: ...
    @property
    def reason(self) -> str: ...
    @property
    def decided_by(self) -> str: ...
    @property
    def size_in(self) -> int: ...
    @property
    def size_out(self) -> int: ...
    @property
    def quarantine_id(self) -> str | None: ...
    def __init__(self, verdict: str, reason: str, decided_by: str, size_in: int,
                 size_out: int, quarantine_id: str | None) -> None: ...

__all__ = [
    "HEADERS", "WHOLE_MESSAGE", "Plugin", "Message", "Headers", "Session", "Command",
    "Report", "Verdict", "Decision", "tempfail", "reject", "deny", "rewrite",
]
