"""popgate.Message and popgate.Headers: the C++ message model as plugins see it."""

from __future__ import annotations

from email import policy as email_policy
from email.message import EmailMessage

import pytest

import popgate

SIMPLE = (b"From: a@example.org\r\n"
          b"Subject: Hello\r\n"
          b"Received: from one\r\n"
          b"Received: from two\r\n"
          b"\r\n"
          b"line 1\r\n"
          b".dot line\r\n")


def test_constructor_defaults_and_context():
    msg = popgate.Message(SIMPLE)
    assert (msg.command, msg.number, msg.uidl, msg.partial) == ("RETR", 1, None, False)
    top = popgate.Message(SIMPLE, command="TOP", number=7, uidl="abc-1", partial=True)
    assert (top.command, top.number, top.uidl, top.partial) == ("TOP", 7, "abc-1", True)


def test_context_is_keyword_only_and_read_only():
    with pytest.raises(TypeError):
        popgate.Message(SIMPLE, "TOP")  # type: ignore[misc]
    msg = popgate.Message(SIMPLE)
    for name in ("command", "number", "uidl", "partial"):
        with pytest.raises(AttributeError):
            setattr(msg, name, None)


def test_data_must_be_bytes():
    with pytest.raises(TypeError):
        popgate.Message("Subject: x\r\n\r\n")  # type: ignore[arg-type]


def test_raw_body_and_unmodified():
    msg = popgate.Message(SIMPLE)
    assert msg.raw == SIMPLE  # no dot-stuffing: ".dot line" stays single
    assert msg.body == b"line 1\r\n.dot line\r\n"
    assert msg.modified is False
    assert isinstance(msg.raw, bytes) and isinstance(msg.body, bytes)


def test_message_without_blank_line_is_all_headers():
    msg = popgate.Message(b"Subject: x\r\n")
    assert msg.body == b""
    assert msg.headers.get("Subject") == "x"


def test_replace():
    msg = popgate.Message(SIMPLE)
    msg.replace(b"Subject: new\r\n\r\nnew body\r\n")
    assert msg.raw == b"Subject: new\r\n\r\nnew body\r\n"
    assert msg.body == b"new body\r\n"
    assert msg.headers.get("Subject") == "new"
    assert msg.headers.get("From") is None
    assert msg.modified is True
    with pytest.raises(TypeError):
        msg.replace("text")  # type: ignore[arg-type]


def test_headers_lookup_is_case_insensitive():
    h = popgate.Message(SIMPLE).headers
    assert h.get("subject") == "Hello"
    assert h.get("SUBJECT") == "Hello"
    assert h.get("X-Missing") is None
    assert h.get("X-Missing", "fallback") == "fallback"
    assert h.get_all("received") == ["from one", "from two"]
    assert h.get_all("X-Missing") == []
    assert "received" in h and "RECEIVED" in h
    assert "X-Missing" not in h
    assert 42 not in h


def test_headers_len_and_iteration_in_order():
    h = popgate.Message(SIMPLE).headers
    assert len(h) == 4
    assert list(h) == [("From", "a@example.org"), ("Subject", "Hello"),
                       ("Received", "from one"), ("Received", "from two")]


def test_add_appends_to_the_header_block():
    msg = popgate.Message(SIMPLE)
    msg.headers.add("X-Tag", "yes")
    assert msg.raw == SIMPLE.replace(b"\r\n\r\n", b"\r\nX-Tag: yes\r\n\r\n", 1)
    assert list(msg.headers)[-1] == ("X-Tag", "yes")
    assert len(msg.headers) == 5
    assert msg.modified is True


def test_set_replaces_every_field_of_the_name_or_appends():
    msg = popgate.Message(SIMPLE)
    msg.headers.set("received", "from three")
    assert msg.headers.get_all("Received") == ["from three"]
    # In place of the first one, the others gone.
    assert [name for name, _ in msg.headers] == ["From", "Subject", "received"]
    msg.headers.set("X-New", "1")
    assert list(msg.headers)[-1] == ("X-New", "1")
    assert b"received: from three\r\n\r\nline 1" not in msg.raw  # X-New came after it
    assert msg.raw.endswith(b"X-New: 1\r\n\r\nline 1\r\n.dot line\r\n")


def test_remove_returns_how_many():
    msg = popgate.Message(SIMPLE)
    assert msg.headers.remove("RECEIVED") == 2
    assert msg.headers.remove("Received") == 0
    assert msg.raw == b"From: a@example.org\r\nSubject: Hello\r\n\r\nline 1\r\n.dot line\r\n"


def test_headers_view_keeps_the_message_alive():
    h = popgate.Message(SIMPLE).headers  # the message has no other reference
    import gc
    gc.collect()
    h.add("X-After", "1")
    assert h.get("X-After") == "1"
    assert h.get("Subject") == "Hello"


def test_untouched_fields_keep_bytes_order_and_folding():
    raw = (b"Subject: a folded\r\n\t subject line  \r\n"
           b"X-Weird:no-space\r\n"
           b"To: someone@example.org\r\n"
           b"\r\nbody\r\n")
    msg = popgate.Message(raw)
    assert msg.headers.get("Subject") == "a folded\t subject line"
    msg.headers.add("X-New", "v")
    msg.headers.remove("To")
    assert msg.raw == (b"Subject: a folded\r\n\t subject line  \r\n"
                       b"X-Weird:no-space\r\n"
                       b"X-New: v\r\n\r\nbody\r\n")


def test_eight_bit_values_round_trip_through_surrogateescape():
    raw = b"Subject: caf\xe9 \xff\r\nX-Utf8: caf\xc3\xa9\r\n\r\nbody\r\n"
    msg = popgate.Message(raw)
    subject = msg.headers.get("Subject")
    assert subject == "caf\udce9 \udcff"  # not UTF-8: surrogates
    assert msg.headers.get("X-Utf8") == "café"  # UTF-8: real text
    msg.headers.set("Subject", subject + " [tag]")
    msg.headers.add("X-Copy", subject)
    assert msg.raw == (b"Subject: caf\xe9 \xff [tag]\r\nX-Utf8: caf\xc3\xa9\r\n"
                       b"X-Copy: caf\xe9 \xff\r\n\r\nbody\r\n")


def test_non_ascii_values_are_written_as_utf8():
    msg = popgate.Message(SIMPLE)
    msg.headers.add("X-Name", "Grüße")
    assert b"X-Name: Gr\xc3\xbc\xc3\x9fe\r\n" in msg.raw
    assert msg.headers.get("x-name") == "Grüße"


@pytest.mark.parametrize("name,value", [
    ("X-Evil", "a\r\nBcc: victim@example.org"),
    ("X-Evil", "a\nb"),
    ("X-Evil", "a\rb"),
    ("X-Evil", "a\0b"),
    ("X-Evil\r\nBcc", "x"),
    ("X Evil", "x"),  # not a field name
    ("", "x"),
])
def test_header_injection_is_refused(name, value):
    msg = popgate.Message(SIMPLE)
    for edit in (msg.headers.add, msg.headers.set):
        with pytest.raises(ValueError):
            edit(name, value)
    assert msg.raw == SIMPLE
    assert msg.modified is False


def test_names_and_values_must_be_str():
    h = popgate.Message(SIMPLE).headers
    with pytest.raises(TypeError):
        h.add(b"X-A", "v")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        h.add("X-A", 1)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        h.get(b"Subject")  # type: ignore[call-overload]


def test_long_values_are_folded():
    msg = popgate.Message(SIMPLE)
    value = " ".join(["word"] * 40)
    msg.headers.add("X-Long", value)
    block = msg.raw.split(b"\r\n\r\n", 1)[0]
    assert all(len(line) <= 78 for line in block.split(b"\r\n"))
    assert msg.headers.get("X-Long") == value  # unfolded again on reading


def test_email_is_parsed_with_the_default_policy():
    msg = popgate.Message(SIMPLE)
    email = msg.email
    assert isinstance(email, EmailMessage)
    assert email.policy == email_policy.default
    assert email["Subject"] == "Hello"
    assert msg.email is email  # parsed once


def test_untouched_email_changes_no_byte():
    # Folding the email package would redo if it rewrote the message.
    raw = (b"Subject: " + b"word " * 30 + b"\r\n"
           b"X-Old:   spaced\r\n\r\nbody\r\n")
    msg = popgate.Message(raw)
    assert msg.email["X-Old"] == "spaced"
    _ = msg.email.get_content()
    msg._commit_email()
    assert msg.raw == raw
    assert msg.modified is False


def test_email_edits_are_written_back():
    msg = popgate.Message(SIMPLE)
    email = msg.email
    email["X-From-Email"] = "yes"
    email.replace_header("Subject", "Changed")
    # Visible through the other views at once...
    assert msg.headers.get("X-From-Email") == "yes"
    assert msg.headers.get("Subject") == "Changed"
    assert msg.modified is True
    assert b"X-From-Email: yes\r\n" in msg.raw
    # ...and the email stays the one the hook holds.
    assert msg.email is email
    email["X-Second"] = "2"
    assert msg.headers.get("X-Second") == "2"


def test_email_body_edit_is_written_back():
    msg = popgate.Message(b"Subject: s\r\nContent-Type: text/plain\r\n\r\nold\r\n")
    msg.email.set_content("new text\n")
    assert b"new text" in msg.body
    assert b"old" not in msg.raw


def test_header_edit_invalidates_the_email():
    msg = popgate.Message(SIMPLE)
    first = msg.email
    first["X-Pending"] = "kept"  # written back before the header edit
    msg.headers.add("X-Header", "1")
    second = msg.email
    assert second is not first
    assert second["X-Header"] == "1"
    assert second["X-Pending"] == "kept"
    first["X-Stale"] = "lost"  # the old email no longer writes back
    assert "X-Stale" not in msg.headers


def test_replace_invalidates_the_email():
    msg = popgate.Message(SIMPLE)
    old = msg.email
    old["X-Dropped"] = "1"
    msg.replace(b"Subject: replaced\r\n\r\nx\r\n")
    assert msg.email is not old
    assert msg.email["Subject"] == "replaced"
    assert msg.raw == b"Subject: replaced\r\n\r\nx\r\n"


def test_unserialisable_email_raises_when_committed():
    msg = popgate.Message(SIMPLE)
    msg.email["X-Bad"] = "x"
    msg.email._headers.append(("X-Broken", object()))  # type: ignore[attr-defined]
    with pytest.raises(Exception):
        msg._commit_email()
