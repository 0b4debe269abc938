"""Acts on header fields that match regular expressions, rules read from a TOML file.

Each ``[[rule]]`` names a header field, a Python regular expression searched in it, and
one action: add a header field, prefix the Subject, reject (the original goes to the
quarantine, the client gets a notice) or tempfail (the client gets ``-ERR [SYS/TEMP]``,
the message stays on the server). Rules run in file order; every matching rule's edits
apply, and the first matching reject or tempfail ends the list.

    [[plugin]]
    use = "python:popgate.plugins.subject_rules"
    rules = "/etc/popgate/subject_rules.toml"

    # /etc/popgate/subject_rules.toml
    [[rule]]
    name = "lottery"                # optional: named in errors and logs
    header = "Subject"
    pattern = "lottery|winner"
    ignore_case = true              # default false
    action = "add_header"           # add_header | prefix_subject | reject | tempfail
    field = "X-Lottery"             # add_header: the field's name...
    value = "yes"                   # ...and value

    [[rule]]
    header = "From"
    pattern = '@bad\\.example>?$'   # a TOML literal string: backslashes as they are
    action = "reject"
    reason = "mail from bad.example is refused"     # reject and tempfail: the reason

    [[rule]]
    header = "Subject"
    pattern = '^\\[ext\\]'
    action = "prefix_subject"
    prefix = "[EXTERNAL] "

A field matches when the pattern is found (``re.search``) in any field of that name, as
it stands or with its RFC 2047 encoded words decoded. The file is read at start-up and
again on SIGHUP (popgate loads Python plugins again): new sessions get the new rules. A
file with a bad rule stops start-up (exit status 2) naming the rule and the key; on a
reload it leaves the old rules in place and popgate's log says why.
"""

from __future__ import annotations

import email.header
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import popgate
from popgate.plugins._options import check_known

ACTIONS = {  # action: the keys it needs
    "add_header": ("field", "value"),
    "prefix_subject": ("prefix",),
    "reject": ("reason",),
    "tempfail": ("reason",),
}
RULE_KEYS = ("name", "header", "pattern", "ignore_case", "action")
FIELD_NAME = re.compile(r"[!-9;-~]+")  # RFC 5322 3.6.8: printable ASCII but ':'


class RulesError(ValueError):
    """The rules file can't be used: the message names the file, the rule and the key."""


@dataclass(frozen=True)
class Rule:
    name: str
    header: str
    pattern: re.Pattern[str]
    action: str
    params: dict[str, str]

    def matches(self, headers: popgate.Headers) -> bool:
        return any(self.pattern.search(value) or self.pattern.search(decoded(value))
                   for value in headers.get_all(self.header))

    def apply(self, msg: popgate.Message) -> popgate.Verdict | None:
        if self.action == "add_header":
            msg.headers.add(self.params["field"], self.params["value"])
        elif self.action == "prefix_subject":
            prefix_subject(msg.headers, self.params["prefix"])
        elif self.action == "reject":
            return popgate.reject(self.params["reason"])
        else:
            return popgate.tempfail(self.params["reason"])
        return None


def decoded(value: str) -> str:
    if "=?" not in value:
        return value
    try:
        return str(email.header.make_header(email.header.decode_header(value)))
    except (ValueError, LookupError, UnicodeError):
        return value


def prefix_subject(headers: popgate.Headers, prefix: str) -> None:
    """Puts `prefix` before the Subject, once (two rules with one prefix add it once)."""
    subject = headers.get("Subject")
    if subject is None:
        headers.add("Subject", prefix.rstrip())
    elif not subject.startswith(prefix):
        headers.set("Subject", prefix + subject)


# -- reading the rules file -----------------------------------------------------------

def _text(table: dict[str, Any], key: str, where: str) -> str:
    if key not in table:
        raise RulesError(f"{where}: missing key {key!r}")
    value = table[key]
    if not isinstance(value, str) or not value:
        raise RulesError(f"{where}: key {key!r} must be a non-empty string")
    if any(c in value for c in "\r\n\0"):
        raise RulesError(f"{where}: key {key!r} must not contain CR, LF or NUL")
    return value


def _field_name(table: dict[str, Any], key: str, where: str) -> str:
    value = _text(table, key, where)
    if not FIELD_NAME.fullmatch(value):
        raise RulesError(f"{where}: key {key!r}: {value!r} is not a header field name")
    return value


def _pattern(table: dict[str, Any], where: str) -> re.Pattern[str]:
    ignore_case = table.get("ignore_case", False)
    if not isinstance(ignore_case, bool):
        raise RulesError(f"{where}: key 'ignore_case' must be true or false")
    text = _text(table, "pattern", where)
    try:
        return re.compile(text, re.IGNORECASE if ignore_case else 0)
    except re.error as error:
        raise RulesError(f"{where}: key 'pattern': bad regular expression {text!r}: "
                         f"{error}") from None


def parse_rule(table: object, number: int, source: str) -> Rule:
    where = f"{source}: rule {number}"
    if not isinstance(table, dict):
        raise RulesError(f"{where}: expected a table ([[rule]])")
    if "name" in table:
        where += f" ({_text(table, 'name', where)!r})"
    action = _text(table, "action", where)
    if action not in ACTIONS:
        raise RulesError(f"{where}: key 'action': unknown action {action!r} (expected "
                         f"{', '.join(ACTIONS)})")
    allowed = RULE_KEYS + ACTIONS[action]
    for key in table:
        if key not in allowed:
            raise RulesError(f"{where}: unknown key {key!r} for action {action!r} "
                             f"(expected {', '.join(allowed)})")
    params = {key: _text(table, key, where) for key in ACTIONS[action]}
    if action == "add_header":
        _field_name(table, "field", where)
    return Rule(name=str(table.get("name", f"rule {number}")),
                header=_field_name(table, "header", where), pattern=_pattern(table, where),
                action=action, params=params)


def load_rules(path: Path) -> list[Rule]:
    try:
        with open(path, "rb") as file:
            document = tomllib.load(file)
    except OSError as error:
        raise RulesError(f"{path}: can't read the rules file: {error.strerror}") from None
    except tomllib.TOMLDecodeError as error:
        raise RulesError(f"{path}: not TOML: {error}") from None
    unknown = sorted(set(document) - {"rule"})
    if unknown:
        raise RulesError(f"{path}: unknown key {unknown[0]!r} (rules are [[rule]] tables)")
    tables = document.get("rule", [])
    if not isinstance(tables, list):
        raise RulesError(f"{path}: 'rule' must be an array of tables ([[rule]])")
    return [parse_rule(table, number, str(path)) for number, table in enumerate(tables, 1)]


# -- the plugin -----------------------------------------------------------------------

class SubjectRules(popgate.Plugin):
    needs = popgate.HEADERS

    def configure(self, options: dict[str, Any]) -> None:
        check_known("subject_rules", options, ("rules",))
        path = options.get("rules")
        if not isinstance(path, str) or not path:
            raise ValueError("subject_rules: option rules (the rules file's path) is "
                             "required, a string")
        if not Path(path).is_absolute():
            raise ValueError(f"subject_rules: option rules must be an absolute path, not "
                             f"{path!r}")
        self.rules = load_rules(Path(path))

    def message(self, session: popgate.Session, msg: popgate.Message) -> popgate.Verdict | None:
        for rule in self.rules:
            if rule.matches(msg.headers):
                verdict = rule.apply(msg)
                if verdict is not None:
                    return verdict
        return None
