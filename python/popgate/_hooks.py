"""What hooks are handed and what their answers mean: shared by popgate's runtime
(``_runtime``) and ``popgate.testing``, so a plugin meets the same rules in both."""

from __future__ import annotations

from typing import Any

from . import Command, Decision, Report, Session, Verdict


def _describe(result: object) -> str:
    text = repr(result)
    if len(text) > 80:
        text = text[:77] + "..."
    return f"{type(result).__name__} ({text})"


def message_verdict(result: object) -> tuple[str, str]:
    """A ``message`` hook's return value as (verdict, reason): "pass", "tempfail",
    "reject" or "quarantine". Raises TypeError for anything but None and a Verdict."""
    if result is None:
        return ("pass", "")
    if isinstance(result, Verdict):
        return (result.kind, result.reason)
    raise TypeError("message() must return None, popgate.tempfail(reason), "
                    "popgate.reject(reason) or popgate.quarantine(reason), not "
                    f"{_describe(result)}")


def command_decision(result: object) -> tuple[str, str]:
    """A ``command`` hook's return value as (kind, text): "allow", "deny" (text: the -ERR
    reply) or "rewrite" (text: the new line). Raises TypeError for anything else."""
    if result is None:
        return ("allow", "")
    if isinstance(result, Decision):
        return (result.kind, result.text)
    raise TypeError("command() must return None, popgate.deny(reply) or "
                    f"popgate.rewrite(line), not {_describe(result)}")


def make_session(id: int, client_address: str, user: str, upstream: str, client_tls: bool,
                 upstream_tls: bool) -> Session:
    return Session(id, client_address, user, upstream, client_tls, upstream_tls)


def make_command(keyword: str, args: tuple[str, ...] | list[str], secret: bool) -> Command:
    return Command(keyword, tuple(args), secret)


def make_report(verdict: str, reason: str, decided_by: str, size_in: int, size_out: int,
                quarantine_id: str | None) -> Report:
    return Report(verdict, reason, decided_by, size_in, size_out, quarantine_id)


def commit_email(msg: Any) -> None:
    """Writes ``msg.email`` back into ``msg`` if the hook changed it (its serialisation
    differs from the one taken when it was first read); an untouched email changes no
    byte. The C++ side does the same when a hook returns (UnwrapMessage)."""
    msg._commit_email()
