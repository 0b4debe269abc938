"""The subject_rules plugin without a server: `python3 -m popgate check` on .eml files
for each action, matching (every field of the name, RFC 2047 decoded, case), rule order,
and the errors a bad rules file gives."""

from __future__ import annotations

import os
import subprocess
import textwrap
from pathlib import Path

import pytest

from popgate.plugins import subject_rules
from popgate.testing import check

MESSAGE = (b"Received: from a.example\r\n"
           b"Received: from relay.bad.example\r\n"
           b"From: a@example.org\r\n"
           b"Subject: =?utf-8?q?Gro=C3=9Fer_Gewinn?= inside\r\n"
           b"\r\n"
           b"body\r\n")

PLUGIN = "python:popgate.plugins.subject_rules"


@pytest.fixture
def run(python_dir: Path):
    def run(*args: object) -> subprocess.CompletedProcess[bytes]:
        env = dict(os.environ, PYTHONPATH=str(python_dir))
        return subprocess.run(["/usr/bin/python3", "-m", "popgate", *map(str, args)],
                              capture_output=True, env=env, timeout=60)

    return run


@pytest.fixture
def eml(tmp_path: Path) -> Path:
    path = tmp_path / "message.eml"
    path.write_bytes(MESSAGE)
    return path


def rules_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "rules.toml"
    path.write_text(textwrap.dedent(text))
    return path


def toml(value: object) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    assert "'" not in str(value)
    return f"'{value}'"  # a TOML literal string: backslashes stay as they are


def rule(header: str, pattern: str, action: str, **params: object) -> str:
    fields = {"header": header, "pattern": pattern, "action": action, **params}
    return "[[rule]]\n" + "".join(f"{key} = {toml(value)}\n" for key, value in fields.items())


@pytest.mark.parametrize("text, first, lines", [
    (rule("Subject", "großer", "add_header", ignore_case=True, field="X-Win", value="yes"),
     "pass", ["+ X-Win: yes"]),
    (rule("Subject", "Gewinn", "prefix_subject", prefix="[WIN] "), "pass",
     ["- Subject: =?utf-8?q?Gro=C3=9Fer_Gewinn?= inside",
      "+ Subject: [WIN] =?utf-8?q?Gro=C3=9Fer_Gewinn?= inside"]),
    (rule("Received", r"\.bad\.example$", "reject", reason="came through bad.example"),
     "reject: came through bad.example", []),
    (rule("From", "@example.org", "tempfail", reason="later"), "tempfail: later", []),
    (rule("Subject", "GEWINN", "tempfail", reason="case matters by default"), "pass", []),
])
def test_each_action_with_check(run, eml, tmp_path, text, first, lines):
    path = rules_file(tmp_path, text)
    done = run("check", PLUGIN, eml, "--option", f"rules={path}")
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode().splitlines() == [first, *lines]


def test_edits_of_every_matching_rule_apply_until_a_verdict(tmp_path):
    path = rules_file(tmp_path, (
        rule("Subject", "inside", "add_header", field="X-One", value="1") +
        rule("Subject", "inside", "prefix_subject", prefix="[A] ") +
        rule("Subject", "inside", "prefix_subject", prefix="[A] ") +  # added once
        rule("Subject", "nothing", "reject", reason="no") +
        rule("Subject", "inside", "add_header", field="X-Two", value="2")))
    result = check(PLUGIN, MESSAGE, options={"rules": str(path)})
    assert result.verdict == "pass"
    assert result.added == [("X-One", "1"), ("X-Two", "2")]
    assert result.message.headers.get("Subject").startswith("[A] =?utf-8?")
    assert result.message.headers.get("Subject").count("[A]") == 1

    path = rules_file(tmp_path, (rule("From", "a@", "tempfail", reason="first") +
                                 rule("From", "a@", "reject", reason="second")))
    result = check(PLUGIN, MESSAGE, options={"rules": str(path)})
    assert (result.verdict, result.reason) == ("tempfail", "first")


def test_a_message_without_subject_gets_one_from_prefix_subject(tmp_path):
    path = rules_file(tmp_path, rule("From", ".", "prefix_subject", prefix="[TAG] "))
    result = check(PLUGIN, b"From: x@y\r\n\r\nhi\r\n", options={"rules": str(path)})
    assert result.added == [("Subject", "[TAG]")]


@pytest.mark.parametrize("text, expected", [
    ('[[rule]]\nname = "r"\nheader = "Subject"\npattern = "a"\naction = "bounce"\n',
     "rule 1 ('r'): key 'action': unknown action 'bounce'"),
    (rule("Subject", "a", "add_header", field="X"),
     "rule 1: missing key 'value'"),
    (rule("Subject", "a", "add_header", field="Bad Name", value="v"),
     "rule 1: key 'field': 'Bad Name' is not a header field name"),
    (rule("Subject", "a", "reject", reason="r", prefix="p"),
     "rule 1: unknown key 'prefix' for action 'reject'"),
    (rule("Subject", "*", "reject", reason="r"),
     "rule 1: key 'pattern': bad regular expression '*'"),
    ('header = "Subject"\n', "unknown key 'header' (rules are [[rule]] tables)"),
    ('rule = "x"\n', "'rule' must be an array of tables"),
])
def test_a_bad_rules_file_names_the_rule_and_key(tmp_path, text, expected):
    path = rules_file(tmp_path, text)
    with pytest.raises(subject_rules.RulesError) as failure:
        subject_rules.load_rules(path)
    assert str(failure.value).startswith(f"{path}: ")
    assert expected in str(failure.value)


def test_check_with_a_bad_rules_file_exits_2(run, eml, tmp_path):
    path = rules_file(tmp_path, rule("Subject", "(", "reject", reason="r"))
    done = run("check", PLUGIN, eml, "--option", f"rules={path}")
    assert done.returncode == 2
    assert b"rule 1: key 'pattern': bad regular expression" in done.stderr


def test_an_empty_rules_file_passes_everything(tmp_path):
    path = rules_file(tmp_path, "")
    result = check(PLUGIN, MESSAGE, options={"rules": str(path)})
    assert (result.verdict, result.added, result.changed) == ("pass", [], [])
