"""Testing plugins without a server, with the C++ message model the proxy uses
(mitmproxy's ``taddons``)::

    from popgate.testing import check

    result = check("filters/tag_lottery.py", b"Subject: lottery\\r\\n\\r\\nhi\\r\\n",
                   options={"words": ["lottery"]})
    assert result.verdict == "pass"
    assert ("X-Lottery", "yes") in result.added

The message goes through what the proxy would do to it: line ends made CRLF (as the
multi-line decoder writes them), cut as ``TOP n`` would when `top` is given, cut to the
header block and its blank line for a headers-only plugin. Then configure (for a class or a
path), session_start, message, message_done and session_end run in order, async hooks on
one event loop, then, for a plugin check made itself (from a class or a path), done().
"""

from __future__ import annotations

import asyncio
import os
from typing import Any, Union

from . import HEADERS, Message, Plugin, Session, _hooks, _loader, _popgate

PluginSpec = Union[Plugin, type[Plugin], str, "os.PathLike[str]"]
Field = tuple[str, str]


class CheckResult:
    """What a plugin made of one message."""

    __slots__ = ("verdict", "reason", "message", "session", "before", "added", "changed",
                 "removed", "lines")

    def __init__(self, verdict: str, reason: str, message: Message, session: Session,
                 before: list[Field]) -> None:
        self.verdict = verdict  # "pass" | "tempfail" | "reject" | "quarantine"
        self.reason = reason
        self.message = message  # as it stands after the hook (msg.email edits written back)
        self.session = session
        self.before = before  # the header fields as the plugin got them
        diff = header_diff(before, list(message.headers))
        self.added: list[Field] = diff.added
        self.changed: list[Field] = [(name, new) for name, _, new in diff.changed]
        self.removed: list[Field] = diff.removed
        # What `python3 -m popgate check` prints after the verdict.
        self.lines: list[str] = diff.lines()

    def __repr__(self) -> str:
        return (f"CheckResult(verdict={self.verdict!r}, reason={self.reason!r}, "
                f"added={self.added!r}, changed={self.changed!r}, removed={self.removed!r})")


class HeaderDiff:
    __slots__ = ("added", "changed", "removed")

    def __init__(self) -> None:
        self.added: list[Field] = []
        self.changed: list[tuple[str, str, str]] = []  # (name, old value, new value)
        self.removed: list[Field] = []

    def lines(self) -> list[str]:
        out = [f"+ {name}: {value}" for name, value in self.added]
        for name, old, new in self.changed:
            out += [f"- {name}: {old}", f"+ {name}: {new}"]
        out += [f"- {name}: {value}" for name, value in self.removed]
        return out


def header_diff(before: list[Field], after: list[Field]) -> HeaderDiff:
    """Fields of each name (case-insensitive) paired in order: a pair whose values differ
    is changed, fields beyond the other side's count are added or removed."""
    diff = HeaderDiff()
    names: list[str] = []
    for name, _ in before + after:
        if name.lower() not in names:
            names.append(name.lower())
    for key in names:
        old = [field for field in before if field[0].lower() == key]
        new = [field for field in after if field[0].lower() == key]
        for (old_name, old_value), (new_name, new_value) in zip(old, new):
            if old_value != new_value:
                diff.changed.append((new_name, old_value, new_value))
        diff.removed += old[len(new):]
        diff.added += new[len(old):]
    return diff


def _plugin_instance(plugin: PluginSpec, options: dict[str, Any] | None,
                     class_name: str | None) -> Plugin:
    if isinstance(plugin, Plugin):
        return plugin
    if isinstance(plugin, type) and issubclass(plugin, Plugin):
        instance = plugin()
        _loader.configure(instance, dict(options or {}))
        return instance
    if isinstance(plugin, (str, os.PathLike)):
        return _loader.make_plugin(os.fspath(plugin), class_name, dict(options or {}))
    raise TypeError(f"plugin must be a popgate.Plugin, a subclass, or a plugin's path, not "
                    f"{type(plugin).__name__}")


def _message_bytes(data_or_path: bytes | bytearray | str | os.PathLike[str]) -> bytes:
    if isinstance(data_or_path, (bytes, bytearray)):
        return bytes(data_or_path)
    with open(data_or_path, "rb") as file:
        return file.read()


def session(user: str = "user") -> Session:
    """A session like the proxy's for a logged-in plaintext client."""
    return _hooks.make_session(1, "127.0.0.1:49152", user, "127.0.0.1:110", False, False)


def message(data: bytes, *, top: int | None = None, headers_only: bool = False,
            number: int = 1, uidl: str | None = None) -> Message:
    """The Message a plugin would be handed for `data`, as the proxy would cut it."""
    content: bytes = _popgate._canonical(data)
    partial = False
    command = "RETR"
    if top is not None:
        if top < 0:
            raise ValueError("top must be >= 0")
        content = _popgate._top(content, top)
        command = "TOP"
        partial = True
    if headers_only:
        content = _popgate._header_block(content)
        partial = True
    return Message(content, command=command, number=number, uidl=uidl, partial=partial)


async def _call(plugin: Plugin, hook: str, *args: Any) -> Any:
    result = getattr(plugin, hook)(*args)
    if _loader.is_async(plugin, hook):
        result = await result
    return result


async def _run(plugin: Plugin, msg: Message, sess: Session, decided_by: str) -> CheckResult:
    hooks = _loader.hooks_of(plugin)
    before = list(msg.headers)
    size_in = len(msg.raw)
    if "session_start" in hooks:
        await _call(plugin, "session_start", sess)
    verdict, reason = "pass", ""
    if "message" in hooks:
        verdict, reason = _hooks.message_verdict(await _call(plugin, "message", sess, msg))
        _hooks.commit_email(msg)
        if verdict == "quarantine" and getattr(plugin, "needs", None) == HEADERS:
            # As the proxy does: a headers-only chain cannot keep the whole original.
            verdict = "tempfail"
            reason = "quarantine needs the whole message (the chain holds headers only): " + reason
    if "message_done" in hooks:
        report = _hooks.make_report(verdict, reason, decided_by if verdict != "pass" else "",
                                    size_in, len(msg.raw), None)
        await _call(plugin, "message_done", sess, msg, report)
        _hooks.commit_email(msg)
    if "session_end" in hooks:
        await _call(plugin, "session_end", sess)
    return CheckResult(verdict, reason, msg, sess, before)


def check(plugin: PluginSpec, data_or_path: bytes | bytearray | str | os.PathLike[str],
          options: dict[str, Any] | None = None, top: int | None = None, *,
          class_name: str | None = None) -> CheckResult:
    """Runs one message through `plugin` (an instance, a Plugin subclass, or a plugin's
    path: a ``.py`` file or ``python:package.module``), as the proxy would for RETR, or
    for ``TOP n`` with `top`. `options` reach configure (not for an instance, which is
    taken as it is); `class_name` picks the class in a module that defines several."""
    instance = _plugin_instance(plugin, options, class_name)
    headers_only = _loader.needs_of(instance) == HEADERS
    msg = message(_message_bytes(data_or_path), top=top, headers_only=headers_only)
    name = (os.fspath(plugin) if isinstance(plugin, (str, os.PathLike))
            else type(instance).__name__)
    # A plugin check made is retired after its message, as popgate retires one at
    # shutdown: done() closes what it kept open (a service's connections), on the same
    # loop. An instance handed in stays the caller's.
    retire = instance is not plugin
    return asyncio.run(_run_and_retire(instance, msg, session(), name, retire))


async def _run_and_retire(plugin: Plugin, msg: Message, sess: Session, decided_by: str,
                          retire: bool) -> CheckResult:
    try:
        return await _run(plugin, msg, sess, decided_by)
    finally:
        if retire and "done" in _loader.hooks_of(plugin):
            await _call(plugin, "done")
