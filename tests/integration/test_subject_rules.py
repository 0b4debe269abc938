"""The subject_rules plugin (python:popgate.plugins.subject_rules) end to end: a real
Dovecot, popgate, poplib, and rules files written by each test.

What must hold: each action does what it says through popgate (a header added, the Subject
prefixed, a reject quarantined with a notice, a tempfail leaving the message on the
server), in RETR and TOP alike; SIGHUP after an edit gives new sessions the new rules; a
broken edit keeps the old rules and the log names the rule and the key; a bad rules file
at start-up stops popgate with exit status 2 naming the rule and the key.
"""

from __future__ import annotations

import os
import poplib
import re
import signal
import textwrap
from pathlib import Path

import pytest

from pgtest.config import start_popgate
from pgtest.dovecot import Dovecot
from pgtest.pop3 import login
from pgtest.popgate import Popgate, PopgateError

poplib._MAXLINE = 1 << 20


def mail(sender: str, subject: str, body: bytes = b"Hello.\r\n") -> bytes:
    return (f"From: {sender}\r\nTo: dave@example.org\r\nSubject: {subject}\r\n"
            f"Message-ID: <{subject.replace(' ', '.')}@example.org>\r\n\r\n").encode() + body


MESSAGES = [
    mail("alice@example.org", "You are a LOTTERY winner"),
    mail("bob@partner.example", "[ext] quarterly figures"),
    mail("mallory@bad.example", "invoice", b"MZ pretend executable\r\n"),
    mail("carol@example.org", "please hold this one"),
    mail("dan@example.org", "plain note", b"Nothing.\r\n.dot line\r\n"),
]

RULES = """
    [[rule]]
    name = "lottery"
    header = "Subject"
    pattern = "lottery"
    ignore_case = true
    action = "add_header"
    field = "X-Lottery"
    value = "{label}"

    [[rule]]
    name = "external"
    header = "Subject"
    pattern = "^\\\\[ext\\\\]"
    action = "prefix_subject"
    prefix = "[EXTERNAL] "

    [[rule]]
    name = "bad sender"
    header = "From"
    pattern = "@bad\\\\.example$"
    action = "reject"
    reason = "mail from bad.example is refused"

    [[rule]]
    name = "hold"
    header = "Subject"
    pattern = "hold"
    action = "tempfail"
    reason = "held for review"
"""


@pytest.fixture(scope="module")
def dovecot():
    with Dovecot(users={"dave": "pw"}) as dc:
        yield dc


@pytest.fixture()
def mailstore(dovecot):
    dovecot.reset("dave", MESSAGES)
    return dovecot


def write_rules(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


def start(tmp_path: Path, upstream: str, rules: Path, extra: str = "") -> Popgate:
    plugin = {"use": "python:popgate.plugins.subject_rules", "rules": rules}
    return start_popgate(tmp_path, upstream, [plugin], extra)


def head(lines: list[bytes]) -> list[bytes]:
    return lines[:lines.index(b"")]


def lottery_tag(p: poplib.POP3) -> list[bytes]:
    return [line for line in head(p.retr(1)[1]) if line.startswith(b"X-Lottery:")]


def test_each_action_through_popgate(tmp_path, mailstore):
    rules = write_rules(tmp_path / "rules.toml", RULES.replace("{label}", "yes"))
    quarantine = tmp_path / "quarantine"
    with start(tmp_path, mailstore.address, rules,
               extra=f'[quarantine]\npath = "{quarantine}"\n') as pg:
        p = login(pg.port)
        # add_header, case-insensitively; the rest of the message unchanged.
        lines = p.retr(1)[1]
        assert b"\r\n".join(lines) + b"\r\n" == MESSAGES[0].replace(
            b"\r\n\r\n", b"\r\nX-Lottery: yes\r\n\r\n", 1)
        # TOP carries the same tag.
        assert head(p.top(1, 0)[1])[-1] == b"X-Lottery: yes"
        # prefix_subject.
        assert b"Subject: [EXTERNAL] [ext] quarterly figures" in head(p.retr(2)[1])
        # reject: the original in the quarantine, a notice for the client.
        notice = b"\r\n".join(p.retr(3)[1])
        assert re.search(rb"X-Popgate-Quarantine-Id: \S+", notice), notice
        assert b"mail from bad.example is refused" in notice
        assert [f.read_bytes() for f in (quarantine / "new").iterdir()] == [MESSAGES[2]]
        # tempfail: -ERR [SYS/TEMP], the reason in the log, the message stays.
        with pytest.raises(poplib.error_proto, match=r"\[SYS/TEMP\]"):
            p.retr(4)
        pg.wait_for_log(r"held for review")
        # No rule matches: byte for byte as Dovecot has it.
        assert b"\r\n".join(p.retr(5)[1]) + b"\r\n" == MESSAGES[4]
        assert p.stat()[0] == 5
        p.quit()


def test_sighup_gives_new_sessions_the_edited_rules_and_a_broken_edit_keeps_them(
        tmp_path, mailstore):
    rules = write_rules(tmp_path / "rules.toml", RULES.replace("{label}", "one"))
    with start(tmp_path, mailstore.address, rules) as pg:
        before = login(pg.port)
        assert lottery_tag(before) == [b"X-Lottery: one"]

        write_rules(rules, RULES.replace("{label}", "two"))
        mark = len(pg.log)
        os.kill(pg.pid, signal.SIGHUP)
        pg.wait_for_log(r"python plugins reloaded: 1 of 1", start=mark)
        after = login(pg.port)
        assert lottery_tag(after) == [b"X-Lottery: two"]
        assert lottery_tag(before) == [b"X-Lottery: one"]  # running sessions keep theirs
        before.quit()
        after.quit()

        # A broken edit: a bad pattern in the second rule.
        write_rules(rules, RULES.replace("{label}", "three").replace(
            'pattern = "^\\\\[ext\\\\]"', 'pattern = "[unclosed"'))
        mark = len(pg.log)
        os.kill(pg.pid, signal.SIGHUP)
        pg.wait_for_log(r"python plugins reloaded: 0 of 1", start=mark)
        said = pg.log[mark:]
        assert "reload failed" in said
        assert "rule 2 ('external'): key 'pattern': bad regular expression" in said, said
        third = login(pg.port)
        assert lottery_tag(third) == [b"X-Lottery: two"]
        third.quit()

        # Fixed again: the next SIGHUP takes it.
        write_rules(rules, RULES.replace("{label}", "four"))
        mark = len(pg.log)
        os.kill(pg.pid, signal.SIGHUP)
        pg.wait_for_log(r"python plugins reloaded: 1 of 1", start=mark)
        fourth = login(pg.port)
        assert lottery_tag(fourth) == [b"X-Lottery: four"]
        fourth.quit()


BAD_FILES = {
    "bad regex": ('pattern = "^\\\\[ext\\\\]"', 'pattern = "(open"',
                  "rule 2 ('external'): key 'pattern': bad regular expression '(open'"),
    "unknown action": ('action = "tempfail"', 'action = "discard"',
                       "rule 4 ('hold'): key 'action': unknown action 'discard'"),
    "missing key": ('prefix = "[EXTERNAL] "', "",
                    "rule 2 ('external'): missing key 'prefix'"),
    "unknown key": ('reason = "held for review"', 'reasons = "held for review"',
                    "rule 4 ('hold'): unknown key 'reasons'"),
    "bad ignore_case": ("ignore_case = true", 'ignore_case = "yes"',
                        "rule 1 ('lottery'): key 'ignore_case' must be true or false"),
    "header injection": ('value = "yes"', 'value = "a\\r\\nBcc: x@example.org"',
                         "rule 1 ('lottery'): key 'value' must not contain CR, LF or NUL"),
    "not TOML": ("[[rule]]", "[[rule]", "not TOML"),
}


@pytest.mark.parametrize("case", sorted(BAD_FILES))
def test_a_bad_rules_file_stops_start_up_with_exit_2_naming_rule_and_key(
        tmp_path, mailstore, case):
    old, new, expected = BAD_FILES[case]
    text = textwrap.dedent(RULES).replace("{label}", "yes")
    assert old in text
    rules = tmp_path / "rules.toml"
    rules.write_text(text.replace(old, new, 1))
    with pytest.raises(PopgateError) as failure:
        start(tmp_path, mailstore.address, rules)
    message = str(failure.value)
    assert "exited with 2 before listening" in message, message
    assert f"{rules}: " in message and expected in message, message


@pytest.mark.parametrize("option, expected", [
    ("", "option rules (the rules file's path) is required"),
    ('rules = "rules.toml"', "option rules must be an absolute path"),
    ('rules = "/nonexistent/rules.toml"', "can't read the rules file"),
    ('rules = "/dev/null"\nlimit = 3', "unknown option limit"),
])
def test_a_bad_option_stops_start_up_with_exit_2(tmp_path, mailstore, option, expected):
    config = tmp_path / "popgate.toml"
    config.write_text(f'[upstream]\naddress = "{mailstore.address}"\n'
                      f'[[listen]]\naddress = "127.0.0.1:0"\n'
                      f'[[plugin]]\nuse = "python:popgate.plugins.subject_rules"\n{option}\n')
    with pytest.raises(PopgateError) as failure:
        Popgate.start(["-c", str(config)])
    message = str(failure.value)
    assert "exited with 2 before listening" in message, message
    assert expected in message, message
