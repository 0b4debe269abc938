"""``python3 -m popgate check PLUGIN MESSAGE.eml [--option key=value]... [--class NAME]
[--top N]``: runs one message through a plugin without a server.

Prints the verdict on its first line (``pass``, or ``tempfail``, ``reject``, ``quarantine``: REASON),
then the header fields added, changed and removed (``+ Name: value``, ``- Name: value``; a
changed field is its old line then its new one), and exits 0. A plugin that fails to
import, has no Plugin subclass, or raises in configure or a hook: the traceback on stderr,
exit status 2.
"""

from __future__ import annotations

import argparse
import sys
import tomllib
import traceback
from typing import Any

from . import testing


def option_value(text: str) -> Any:
    """An option's value as TOML (``3``, ``true``, ``["a", "b"]``, ``"text"``), or the plain
    string when it isn't TOML (``--option subject_prefix=[SPAM]``)."""
    try:
        return tomllib.loads("v = " + text)["v"]
    except tomllib.TOMLDecodeError:
        return text


def _option(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected key=value, got {text!r}")
    return key.strip(), option_value(value)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python3 -m popgate",
                                     description="popgate's Python plugin tools")
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser("check", help="run one message through a plugin")
    check.add_argument("plugin", help="a plugin file (.py) or python:package.module")
    check.add_argument("message", help="the message, an .eml file")
    check.add_argument("--option", action="append", type=_option, default=[],
                       metavar="KEY=VALUE", help="a plugin option (a TOML value); repeatable")
    check.add_argument("--class", dest="class_name", metavar="NAME",
                       help="the Plugin subclass, when the module defines several")
    check.add_argument("--top", type=int, metavar="N",
                       help="as POP3 TOP N would: the header block and N body lines")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    options = dict(args.option)
    try:
        result = testing.check(args.plugin, args.message, options=options, top=args.top,
                               class_name=args.class_name)
    except Exception:  # noqa: BLE001 - whatever the plugin did, reported whole
        traceback.print_exc()
        return 2
    # 8-bit header bytes (kept as surrogates) go out as they came.
    if hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(errors="surrogateescape")
    first = result.verdict if result.verdict == "pass" else f"{result.verdict}: {result.reason}"
    print(first)
    for line in result.lines:
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
