"""``python3 -m popgate.plugins.bayes``: train, untrain and ask the bayes plugin's
database.

    train  --db PATH [--spam PATH...] [--ham PATH...]   exit 0, or 2
    forget --db PATH [--spam PATH...] [--ham PATH...]   exit 0, or 2
    score  --db PATH [--evidence] FILE|-                exit 0 ham, 1 spam, 3 unsure,
                                                        4 not trained enough, 2 usage
    stats  --db PATH                                    exit 0, or 2

Each PATH is a Maildir, an mbox, an .eml file or a directory of them (see _sources).
``train`` makes the database if it is missing (its directory must exist); training a
message again changes nothing, training it as the other class moves it. ``forget`` takes
away messages trained so; others are counted as unchanged. Exit status 2: a usage error
(a bad flag, a path that isn't there, no --spam or --ham, a database that can't be used).
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
from collections.abc import Iterator
from pathlib import Path

from . import (DEFAULT_HAM_CUTOFF, DEFAULT_MIN_MESSAGES, DEFAULT_SPAM_CUTOFF, Settings,
               score_tokens, untrained_reason)
from . import _sources, _store, _tokens

EXIT_HAM, EXIT_SPAM, EXIT_USAGE, EXIT_UNSURE, EXIT_UNTRAINED = 0, 1, 2, 3, 4
EXIT_OK = 0
EXIT_BY_KIND = {"ham": EXIT_HAM, "spam": EXIT_SPAM, "unsure": EXIT_UNSURE}


class UsageError(Exception):
    """Exit status 2 with this message."""


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"not a number from 0 to 1: {text!r}")
    return value


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"not a positive integer: {text!r}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python3 -m popgate.plugins.bayes",
        description="Train and query popgate's bayes spam filter database.")
    commands = parser.add_subparsers(dest="command", required=True)
    for name, text in (("train", "learn messages as spam or ham"),
                       ("forget", "unlearn messages trained as spam or ham")):
        sub = commands.add_parser(name, help=text, description=f"{text}; exit status 0, "
                                  "or 2 on a usage error")
        sub.add_argument("--db", required=True, type=Path, help="the sqlite database")
        sub.add_argument("--spam", nargs="+", action="extend", type=Path, default=[],
                         metavar="PATH", help="Maildirs, mboxes, .eml files or directories")
        sub.add_argument("--ham", nargs="+", action="extend", type=Path, default=[],
                         metavar="PATH", help="Maildirs, mboxes, .eml files or directories")
    score = commands.add_parser(
        "score", help="classify one message",
        description="Prints 'spam|ham|unsure; p=P' (as the X-Popgate-Bayes field). Exit "
                    "status: 0 ham, 1 spam, 3 unsure, 4 database not trained enough, "
                    "2 usage error.")
    score.add_argument("--db", required=True, type=Path, help="the sqlite database")
    score.add_argument("--ham-cutoff", type=_fraction, default=DEFAULT_HAM_CUTOFF)
    score.add_argument("--spam-cutoff", type=_fraction, default=DEFAULT_SPAM_CUTOFF)
    score.add_argument("--min-messages", type=_positive, default=DEFAULT_MIN_MESSAGES)
    score.add_argument("--evidence", action="store_true",
                       help="also print the strongest tokens, one per line")
    score.add_argument("file", help="the message (.eml), or - for standard input")
    stats = commands.add_parser("stats", help="messages and tokens trained")
    stats.add_argument("--db", required=True, type=Path, help="the sqlite database")
    return parser


def _existing_store(path: Path) -> _store.Store:
    if not path.is_file():
        raise UsageError(f"{path}: no such database")
    return _store.Store(path)


def _tokenised(paths: list[Path]) -> Iterator[tuple[bytes, frozenset[str]]]:
    for path in paths:
        for raw in _sources.messages(path):
            yield raw, _tokens.tokens(raw)


def _train(args: argparse.Namespace) -> int:
    if not args.spam and not args.ham:
        raise UsageError("give --spam PATH... or --ham PATH... (or both)")
    for path in args.spam + args.ham:
        _sources.check(path)  # every path before any training: all or nothing
    forget = args.command == "forget"
    if forget:
        store = _existing_store(args.db)
    else:
        if not args.db.parent.is_dir():
            raise UsageError(f"{args.db}: its directory does not exist")
        store = _store.Store(args.db)
        store.create()
    spam = store.train(_tokenised(args.spam), _store.SPAM, forget=forget)
    ham = store.train(_tokenised(args.ham), _store.HAM, forget=forget)
    totals = store.totals()
    verb = "forgot" if forget else "trained"
    print(f"{verb} {spam.spam} spam and {ham.ham} ham, "
          f"{spam.unchanged + ham.unchanged} unchanged; "
          f"{args.db} has {totals.nspam} spam and {totals.nham} ham")
    return EXIT_OK


def _read_message(name: str) -> bytes:
    if name == "-":
        return sys.stdin.buffer.read()
    path = Path(name)
    if not path.is_file():
        raise UsageError(f"{name}: no such file")
    return path.read_bytes()


def _score(args: argparse.Namespace) -> int:
    if args.ham_cutoff > args.spam_cutoff:
        raise UsageError("--ham-cutoff must not be above --spam-cutoff")
    store = _existing_store(args.db)
    raw = _read_message(args.file)
    settings = Settings(args.db, args.ham_cutoff, args.spam_cutoff, False, args.min_messages)
    totals, result = score_tokens(store, _tokens.tokens(raw), settings)
    if result is None:
        print(f"untrained: {untrained_reason(args.db, totals, args.min_messages)}")
        return EXIT_UNTRAINED
    print(result.header)
    if args.evidence:
        for token, prob in result.clues:
            print(f"{prob:.3f}\t{token}")
    return EXIT_BY_KIND[result.kind]


def _stats(args: argparse.Namespace) -> int:
    store = _existing_store(args.db)
    totals = store.totals()
    print(f"spam\t{totals.nspam}\nham\t{totals.nham}\ntokens\t{store.token_count()}")
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)  # exits 2 on a usage error
    try:
        if args.command in ("train", "forget"):
            return _train(args)
        if args.command == "score":
            return _score(args)
        return _stats(args)
    except (UsageError, _sources.SourceError, _store.StoreError) as error:
        print(f"bayes: {error}", file=sys.stderr)
        return EXIT_USAGE
    except (OSError, sqlite3.Error) as error:  # unreadable files, a database that isn't one
        print(f"bayes: {error}", file=sys.stderr)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
