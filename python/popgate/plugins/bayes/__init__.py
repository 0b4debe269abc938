"""A naive-Bayes spam filter in the spirit of SpamBayes and bogofilter: it learns from
mail you sort (``train``) and tags every message a client downloads with

    X-Popgate-Bayes: spam; p=0.998        (or ham, or unsure)

where ``p`` is the chance it is spam, from Robinson's token probabilities combined with
Fisher's chi-square method as SpamBayes does. At ``p >= spam_cutoff`` it is spam, below
``ham_cutoff`` ham, and in between unsure. With ``evidence = true`` it also adds
``X-Popgate-Bayes-Evidence:`` with the strongest tokens and their probabilities. Any such
fields already in the message (a sender's forgery) are replaced.

    [[plugin]]
    use = "python:popgate.plugins.bayes"
    db = "/var/lib/popgate/bayes.sqlite"   # absolute; its directory must exist
    ham_cutoff = 0.20
    spam_cutoff = 0.90
    evidence = false
    min_messages = 10

Training and asking (exit status 0 done, 2 usage error; ``score``: 0 ham, 1 spam,
3 unsure, 4 not trained enough, 2 usage error)::

    python3 -m popgate.plugins.bayes train --db PATH --spam PATH... --ham PATH...
    python3 -m popgate.plugins.bayes forget --db PATH --spam PATH... --ham PATH...
    python3 -m popgate.plugins.bayes score --db PATH FILE

Each PATH is a Maildir, an mbox, an .eml file, or a directory of them. Training runs
while popgate scores: the database is one sqlite3 file in WAL mode, where readers never
wait for the writer. Until it holds at least ``min_messages`` spam and as many ham, the
plugin passes mail untouched and says so once in the log (and once more when that
changes); it notices training without a reload.

Why ``message`` is a plain (sync) function: the work is CPU (tokenising) and blocking
sqlite3 calls, which would stall every other ``async def`` hook on popgate's one asyncio
loop. popgate runs sync hooks on its own bounded pool of threads, off the I/O threads
(DESIGN.md, "Running"), and sqlite3 lets go of the GIL while it reads; each thread has
its own connection (_store), so threads never share one.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import popgate
from popgate.plugins._options import check_known

from . import _classifier, _store, _tokens

HEADER = "X-Popgate-Bayes"
EVIDENCE_HEADER = "X-Popgate-Bayes-Evidence"
DEFAULT_HAM_CUTOFF = 0.20
DEFAULT_SPAM_CUTOFF = 0.90
DEFAULT_MIN_MESSAGES = 10
EVIDENCE_TOKENS = 10  # in the evidence field, strongest first
EVIDENCE_TOKEN_CHARS = 40
OPTIONS = ("db", "ham_cutoff", "spam_cutoff", "evidence", "min_messages")

log = logging.getLogger("popgate.plugins.bayes")


@dataclass(frozen=True)
class Settings:
    db: Path
    ham_cutoff: float = DEFAULT_HAM_CUTOFF
    spam_cutoff: float = DEFAULT_SPAM_CUTOFF
    evidence: bool = False
    min_messages: int = DEFAULT_MIN_MESSAGES


@dataclass(frozen=True)
class Result:
    kind: str  # spam | ham | unsure
    p: float
    clues: tuple[tuple[str, float], ...]

    @property
    def header(self) -> str:
        return f"{self.kind}; p={self.p:.3f}"

    def evidence(self) -> str:
        shown = []
        for token, prob in self.clues[:EVIDENCE_TOKENS]:
            # Header-safe: ASCII (other characters as \\u escapes), no quotes inside.
            text = token[:EVIDENCE_TOKEN_CHARS].encode("ascii", "backslashreplace").decode()
            shown.append(f"'{text.replace(chr(39), '?')}' {prob:.3f}")
        return ", ".join(shown) or "none"


def classify(p: float, ham_cutoff: float, spam_cutoff: float) -> str:
    if p >= spam_cutoff:
        return "spam"
    return "ham" if p < ham_cutoff else "unsure"


def untrained(totals: _store.Totals, min_messages: int) -> bool:
    return totals.nspam < min_messages or totals.nham < min_messages


def untrained_reason(db: Path, totals: _store.Totals, min_messages: int) -> str:
    return (f"{db} is not trained enough ({totals.nspam} spam, {totals.nham} ham; it needs "
            f"{min_messages} of each): mail passes untagged until it is")


def score_tokens(store: _store.Store, tokens: frozenset[str], settings: Settings,
                 cache: _store.CountCache | None = None
                 ) -> tuple[_store.Totals, Result | None]:
    """The totals and the result, or None for a database not trained enough."""
    totals, counts = store.read(tokens, cache)
    if untrained(totals, settings.min_messages):
        return totals, None
    found = _classifier.score(tokens, counts, totals.nspam, totals.nham)
    return totals, Result(classify(found.p, settings.ham_cutoff, settings.spam_cutoff),
                          found.p, found.clues)


# -- options ------------------------------------------------------------------------

def db_path(value: object) -> Path:
    if value is None:
        raise ValueError("bayes: option db is required (the sqlite file, made with "
                         "python3 -m popgate.plugins.bayes train --db PATH)")
    if not isinstance(value, str) or not value:
        raise TypeError("bayes: option db must be a non-empty string")
    path = Path(value)
    if not path.is_absolute():
        raise ValueError(f"bayes: option db must be an absolute path, not {value!r}")
    if not path.parent.is_dir():
        raise ValueError(f"bayes: option db {value!r}: its directory "
                         f"{str(path.parent)!r} does not exist")
    if path.exists() and not path.is_file():
        raise ValueError(f"bayes: option db {value!r} is not a file")
    return path


def cutoff(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"bayes: option {name} must be a number, not {value!r}")
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"bayes: option {name} must be between 0 and 1, not {value}")
    return float(value)


def settings_from(options: dict[str, Any]) -> Settings:
    check_known("bayes", options, OPTIONS)
    ham = cutoff("ham_cutoff", options.get("ham_cutoff", DEFAULT_HAM_CUTOFF))
    spam = cutoff("spam_cutoff", options.get("spam_cutoff", DEFAULT_SPAM_CUTOFF))
    if ham > spam:
        raise ValueError(f"bayes: option ham_cutoff ({ham}) must not be above "
                         f"spam_cutoff ({spam})")
    evidence = options.get("evidence", False)
    if not isinstance(evidence, bool):
        raise TypeError(f"bayes: option evidence must be true or false, not {evidence!r}")
    minimum = options.get("min_messages", DEFAULT_MIN_MESSAGES)
    if isinstance(minimum, bool) or not isinstance(minimum, int) or minimum < 1:
        raise ValueError(f"bayes: option min_messages must be a positive integer, "
                         f"not {minimum!r}")
    return Settings(db_path(options.get("db")), ham, spam, evidence, minimum)


# -- the plugin ---------------------------------------------------------------------

class Bayes(popgate.Plugin):
    needs = popgate.WHOLE_MESSAGE  # the body is most of the evidence

    def configure(self, options: dict[str, Any]) -> None:
        self.settings = settings_from(options)
        self.store = _store.Store(self.settings.db)
        try:
            self.store.create()  # so train can fill it later; fails early if unwritable
            self.store.totals()
        except (_store.StoreError, OSError) as error:
            raise ValueError(f"bayes: option db: {error}") from None
        self.cache = _store.CountCache()
        self._lock = threading.Lock()
        # Said at the first message, not here: that is when it matters, and popgate's
        # log may not be set up yet while plugins are configured.
        self._logged_untrained: bool | None = None

    def _note(self, totals: _store.Totals) -> None:
        """One log line when the database's state (trained enough or not) is first seen
        by a message and one each time it changes: never one per message."""
        now = untrained(totals, self.settings.min_messages)
        with self._lock:
            if now == self._logged_untrained:
                return
            self._logged_untrained = now
        if now:
            log.warning("bayes: %s", untrained_reason(self.settings.db, totals,
                                                      self.settings.min_messages))
        else:
            log.info("bayes: %s: %d spam and %d ham trained: tagging mail",
                     self.settings.db, totals.nspam, totals.nham)

    def done(self) -> None:
        self.store.close()

    def message(self, session: popgate.Session, msg: popgate.Message) -> None:
        # msg.raw, not msg.email: reading msg.email costs a serialisation to notice edits.
        tokens = _tokens.tokens(msg.raw)
        totals, result = score_tokens(self.store, tokens, self.settings, self.cache)
        self._note(totals)
        if result is None:
            return  # untouched: an untrained database says nothing
        msg.headers.set(HEADER, result.header)
        if self.settings.evidence:
            msg.headers.set(EVIDENCE_HEADER, result.evidence())
        else:
            msg.headers.remove(EVIDENCE_HEADER)  # not ours: a sender's
