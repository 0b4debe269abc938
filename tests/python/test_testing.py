"""popgate.testing.check: one message through a plugin as the proxy would run it, and the
shipped examples (every example has a test)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

import popgate
from popgate import testing

# The examples as built, next to the package under test.
EXAMPLES = Path(popgate.__file__).parent / "examples"

MESSAGE = (b"From: a@example.org\r\n"
           b"Subject: You are a lottery winner\r\n"
           b"\r\n"
           b"line 1\r\n"
           b"line 2\r\n"
           b"line 3\r\n")


class Tagger(popgate.Plugin):
    def message(self, session, msg):
        msg.headers.add("X-Tagged", "yes")


def test_pass_with_an_added_header():
    result = testing.check(Tagger, MESSAGE)
    assert (result.verdict, result.reason) == ("pass", "")
    assert result.added == [("X-Tagged", "yes")]
    assert result.changed == [] and result.removed == []
    assert result.message.raw == MESSAGE.replace(b"\r\n\r\n", b"\r\nX-Tagged: yes\r\n\r\n")
    assert (result.message.command, result.message.partial) == ("RETR", False)


@pytest.mark.parametrize("helper,verdict", [(popgate.tempfail, "tempfail"),
                                            (popgate.reject, "reject")])
def test_tempfail_and_reject(helper, verdict):
    class Stop(popgate.Plugin):
        def message(self, session, msg):
            return helper("not today")

    result = testing.check(Stop(), MESSAGE)
    assert (result.verdict, result.reason) == (verdict, "not today")


def test_a_bad_return_value_raises_type_error():
    class Wrong(popgate.Plugin):
        def message(self, session, msg):
            return "reject"

    with pytest.raises(TypeError, match="str"):
        testing.check(Wrong, MESSAGE)


def test_changed_and_removed_headers():
    class Edit(popgate.Plugin):
        def message(self, session, msg):
            msg.headers.set("Subject", "[SPAM] " + msg.headers.get("Subject", ""))
            msg.headers.remove("From")

    result = testing.check(Edit, MESSAGE)
    assert result.changed == [("Subject", "[SPAM] You are a lottery winner")]
    assert result.removed == [("From", "a@example.org")]
    assert result.added == []
    assert result.lines == ["- Subject: You are a lottery winner",
                            "+ Subject: [SPAM] You are a lottery winner",
                            "- From: a@example.org"]


def test_email_edits_are_written_back():
    class ViaEmail(popgate.Plugin):
        def message(self, session, msg):
            msg.email["X-Via-Email"] = "1"

    result = testing.check(ViaEmail, MESSAGE)
    assert result.added == [("X-Via-Email", "1")]
    assert b"X-Via-Email: 1\r\n" in result.message.raw


def test_untouched_email_changes_nothing():
    class Reader(popgate.Plugin):
        def message(self, session, msg):
            assert "lottery" in msg.email["Subject"]

    result = testing.check(Reader, MESSAGE)
    assert result.message.raw == MESSAGE
    assert result.message.modified is False


def test_top_cuts_the_message_like_pop3_top():
    seen = []

    class Look(popgate.Plugin):
        def message(self, session, msg):
            seen.append((msg.command, msg.partial, msg.raw))

    testing.check(Look, MESSAGE, top=1)
    head = MESSAGE.split(b"\r\n\r\n")[0] + b"\r\n\r\n"
    assert seen == [("TOP", True, head + b"line 1\r\n")]
    testing.check(Look, MESSAGE, top=0)
    assert seen[-1] == ("TOP", True, head)  # the blank line stays
    testing.check(Look, MESSAGE, top=100)
    assert seen[-1] == ("TOP", True, MESSAGE)


def test_headers_plugins_get_the_header_block_partial():
    seen = []

    class Heads(popgate.Plugin):
        needs = popgate.HEADERS

        def message(self, session, msg):
            seen.append((msg.command, msg.partial, msg.raw, msg.body))

    testing.check(Heads, MESSAGE)
    assert seen == [("RETR", True, MESSAGE.split(b"\r\n\r\n")[0] + b"\r\n\r\n", b"")]


def test_line_ends_become_crlf_as_the_proxy_delivers_them():
    seen = []

    class Look(popgate.Plugin):
        def message(self, session, msg):
            seen.append(msg.raw)

    testing.check(Look, b"Subject: lf\n\nbody\nlast")
    assert seen == [b"Subject: lf\r\n\r\nbody\r\nlast\r\n"]


def test_every_hook_runs_in_order_with_a_report():
    events = []

    class All(popgate.Plugin):
        def configure(self, options):
            events.append(("configure", options))

        async def session_start(self, session):
            session.data["n"] = 1
            events.append(("session_start", session.user))

        def message(self, session, msg):
            session.data["n"] += 1
            msg.headers.add("X-A", "1")
            return popgate.reject("bad")

        async def message_done(self, session, msg, report):
            events.append(("message_done", report.verdict, report.reason, report.decided_by,
                           report.size_in, report.size_out, report.quarantine_id))

        def session_end(self, session):
            events.append(("session_end", session.data["n"]))

    testing.check(All, MESSAGE, options={"k": 1})
    assert events == [
        ("configure", {"k": 1}),
        ("session_start", "user"),
        ("message_done", "reject", "bad", "All", len(MESSAGE), len(MESSAGE) + len(b"X-A: 1\r\n"),
         None),
        ("session_end", 2),
    ]


def test_a_plugin_check_made_is_retired_with_done_on_the_same_loop():
    import asyncio
    events = []

    class Keeps(popgate.Plugin):
        async def message(self, session, msg):
            self.loop = asyncio.get_running_loop()  # where its connections would live

        def session_end(self, session):
            events.append("session_end")

        async def done(self):
            events.append(("done", asyncio.get_running_loop() is self.loop))

    testing.check(Keeps, MESSAGE)
    assert events == ["session_end", ("done", True)]
    events.clear()
    instance = Keeps()
    testing.check(instance, MESSAGE)
    assert events == ["session_end"]  # an instance handed in stays the caller's


def test_async_message_hook():
    class Async(popgate.Plugin):
        async def message(self, session, msg):
            import asyncio
            await asyncio.sleep(0)
            return popgate.tempfail("later")

    assert testing.check(Async, MESSAGE).verdict == "tempfail"


def test_an_instance_is_used_as_it_is():
    class Counting(popgate.Plugin):
        def __init__(self):
            self.count = 0

        def configure(self, options):
            raise AssertionError("an instance is not configured again")

        def message(self, session, msg):
            self.count += 1

    plugin = Counting()
    testing.check(plugin, MESSAGE)
    testing.check(plugin, MESSAGE)
    assert plugin.count == 2


def test_a_plugin_path_and_a_message_path(write_plugin, tmp_path):
    path = write_plugin("""
        import popgate

        class FromFile(popgate.Plugin):
            def configure(self, options):
                self.name = options["name"]

            def message(self, session, msg):
                msg.headers.add("X-Name", self.name)
    """)
    eml = tmp_path / "m.eml"
    eml.write_bytes(MESSAGE)
    for plugin in (path, str(path)):
        for data in (eml, str(eml)):
            result = testing.check(plugin, data, options={"name": "n"})
            assert result.added == [("X-Name", "n")]


@pytest.mark.parametrize("value", ["text", 3, 2.5, True, ["a", "b"], {"k": {"n": 1}}])
def test_option_types_reach_configure(value):
    got = []

    class Opt(popgate.Plugin):
        def configure(self, options):
            got.append(options["v"])

    testing.check(Opt, MESSAGE, options={"v": value})
    assert got == [value] and type(got[0]) is type(value)


def test_class_name_picks_one(write_plugin):
    path = write_plugin("""
        import popgate

        class A(popgate.Plugin):
            def message(self, session, msg):
                return popgate.reject("A")

        class B(popgate.Plugin):
            def message(self, session, msg):
                return popgate.reject("B")
    """)
    assert testing.check(path, MESSAGE, class_name="B").reason == "B"


def test_header_diff_pairs_fields_of_a_name_in_order():
    diff = testing.header_diff(
        [("Received", "1"), ("received", "2"), ("To", "x")],
        [("Received", "1"), ("Received", "changed"), ("Received", "3"), ("X", "y")])
    assert diff.changed == [("Received", "2", "changed")]
    assert diff.added == [("Received", "3"), ("X", "y")]
    assert diff.removed == [("To", "x")]


# -- the shipped examples --------------------------------------------------------------


def test_example_tag_lottery():
    path = EXAMPLES / "tag_lottery.py"
    assert testing.check(path, MESSAGE).added == [("X-Lottery", "yes")]
    assert testing.check(path, MESSAGE, options={"words": ["prize"]}).added == []
    virus = testing.check(path, b"Subject: a virus\r\n\r\nx\r\n")
    assert (virus.verdict, virus.reason) == ("reject", "looks like a virus")
    plugin = popgate._loader.make_plugin(str(path), None, {})
    archive = popgate._hooks.make_session(1, "", "archive", "", False, False)
    decision = plugin.command(archive, popgate._hooks.make_command("DELE", ("1",), False))
    assert decision == popgate.deny("[SYS/PERM] this mailbox is kept on the server")
    other = popgate._hooks.make_session(1, "", "bob", "", False, False)
    assert plugin.command(other, popgate._hooks.make_command("DELE", ("1",), False)) is None


def test_example_add_header_matches_the_cpp_plugin_shape():
    result = testing.check(EXAMPLES / "add_header.py", MESSAGE)
    assert result.added == [("X-Popgate-Python", "yes")]
    assert result.message.partial  # headers only, like tests/so_plugin's
    assert result.message.raw.endswith(b"X-Popgate-Python: yes\r\n\r\n")


@pytest.mark.parametrize("name", ["async_sleep.py", "sync_sleep.py"])
def test_example_sleeps(name):
    start = time.monotonic()
    result = testing.check(EXAMPLES / name, MESSAGE, options={"seconds": 0.2})
    assert time.monotonic() - start >= 0.2
    assert result.verdict == "pass"
    assert result.added == [("X-Popgate-Slept", "0.2")]
    assert popgate._loader.is_async(
        popgate._loader.make_plugin(str(EXAMPLES / name), None, {"seconds": 0}),
        "message") is (name == "async_sleep.py")


def test_examples_have_docstrings():
    import ast
    for path in Path(EXAMPLES).glob("*.py"):
        assert ast.get_docstring(ast.parse(path.read_text())), path
