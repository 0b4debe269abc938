"""The plugin API's pure-Python part: verdict helpers, Session/Command/Report, and the
conversions popgate's runtime and the testing kit share (_hooks)."""

from __future__ import annotations

import pytest

import popgate
from popgate import _hooks


def test_needs_constants_and_default():
    assert (popgate.HEADERS, popgate.WHOLE_MESSAGE) == ("headers", "whole")
    assert popgate.Plugin.needs == popgate.WHOLE_MESSAGE


def test_message_and_headers_are_the_extension_types():
    assert popgate.Message is popgate._popgate.Message
    assert popgate.Headers is popgate._popgate.Headers
    assert isinstance(popgate.Message(b"A: b\r\n\r\n").headers, popgate.Headers)


@pytest.mark.parametrize("helper,kind", [(popgate.tempfail, "tempfail"),
                                         (popgate.reject, "reject")])
def test_message_verdicts(helper, kind):
    verdict = helper("because")
    assert (verdict.kind, verdict.reason) == (kind, "because")
    assert _hooks.message_verdict(verdict) == (kind, "because")
    assert verdict == helper("because") and verdict != helper("other")
    with pytest.raises(AttributeError):
        verdict.reason = "changed"
    assert verdict.reason == "because"


@pytest.mark.parametrize("helper,kind", [(popgate.deny, "deny"), (popgate.rewrite, "rewrite")])
def test_command_decisions(helper, kind):
    decision = helper("text here")
    assert (decision.kind, decision.text) == (kind, "text here")
    assert _hooks.command_decision(decision) == (kind, "text here")
    with pytest.raises(AttributeError):
        decision.text = "x"


def test_helpers_want_str():
    for helper in (popgate.tempfail, popgate.reject, popgate.deny, popgate.rewrite):
        with pytest.raises(TypeError):
            helper(b"bytes")  # type: ignore[arg-type]


def test_none_passes_and_allows():
    assert _hooks.message_verdict(None) == ("pass", "")
    assert _hooks.command_decision(None) == ("allow", "")


@pytest.mark.parametrize("bad", [True, "reject", 0, ("reject", "x"), popgate.deny("no")])
def test_message_verdict_rejects_anything_else(bad):
    with pytest.raises(TypeError) as info:
        _hooks.message_verdict(bad)
    assert type(bad).__name__ in str(info.value)


@pytest.mark.parametrize("bad", [False, "deny", 1, popgate.reject("no")])
def test_command_decision_rejects_anything_else(bad):
    with pytest.raises(TypeError) as info:
        _hooks.command_decision(bad)
    assert type(bad).__name__ in str(info.value)


def test_make_session():
    s = _hooks.make_session(7, "203.0.113.5:51234", "", "pop.example.com:995", True, False)
    assert isinstance(s, popgate.Session)
    assert (s.id, s.client_address, s.user, s.upstream, s.client_tls, s.upstream_tls) == (
        7, "203.0.113.5:51234", "", "pop.example.com:995", True, False)
    assert s.data == {}
    s.data["seen"] = 1
    assert _hooks.make_session(8, "", "", "", False, False).data == {}  # not shared
    s.user = "alice"  # the runtime updates it after login
    assert s.user == "alice"
    with pytest.raises(AttributeError):
        s.other = 1  # type: ignore[attr-defined]


def test_make_command():
    c = _hooks.make_command("dele", ["1"], False)
    assert isinstance(c, popgate.Command)
    assert (c.keyword, c.args, c.secret) == ("DELE", ("1",), False)
    secret = _hooks.make_command("PASS", ("hunter2",), True)
    assert secret.args == () and secret.secret is True


def test_make_report():
    r = _hooks.make_report("reject", "virus", "av", 100, 80, "1700000000.abc")
    assert isinstance(r, popgate.Report)
    assert (r.verdict, r.reason, r.decided_by, r.size_in, r.size_out, r.quarantine_id) == (
        "reject", "virus", "av", 100, 80, "1700000000.abc")
    assert _hooks.make_report("pass", "", "", 1, 1, None).quarantine_id is None


def test_commit_email_writes_back_only_changes():
    raw = b"Subject: " + b"long " * 30 + b"\r\n\r\nbody\r\n"
    msg = popgate.Message(raw)
    _ = msg.email["Subject"]
    _hooks.commit_email(msg)
    assert msg.raw == raw
    msg.email["X-Added"] = "1"
    _hooks.commit_email(msg)
    assert msg.headers.get("X-Added") == "1"


def test_commit_email_uses_the_message_model():
    # The write-back logic lives once, in C++ (UnwrapMessage shares it).
    calls = []

    class Recorder:
        def _commit_email(self) -> None:
            calls.append("commit")

    _hooks.commit_email(Recorder())
    assert calls == ["commit"]
