"""The token counts, in one sqlite3 file shared by every popgate session, every popgate
process and the ``train``/``forget`` command.

- WAL mode (set once, when the file is made; it stays with the file): readers never wait
  for a writer, and a writer never waits for readers. Writers (training) take turns,
  each waiting up to BUSY_TIMEOUT for the write lock.
- A connection per thread (threading.local), never shared: hooks run on several
  threads. Kept open rather than opened per call, because the first query on a new
  connection reads the schema and maps the WAL index, and the last connection to close
  checkpoints and removes the WAL: together about a millisecond, as much as tokenising a
  message. A connection is opened anew when the file was replaced (another inode), and
  after any error. A reload makes a new plugin, so a new Store: the old one's
  connections close with it.
- Scoring reads the two message totals and every token's counts in one read
  transaction (one snapshot), the counts with a single ``SELECT`` that joins the
  message's token list (``json_each``, built into sqlite since 3.38; Debian 12 has
  3.40) to the table: no per-token round trips and no limit on the number of bound
  parameters.
- ``meta.generation`` goes up with every training commit (and ``meta.id`` is random for
  each database made). The plugin keeps the counts it read, valid for that id and
  generation only (CountCache): while nobody trains, a message reads only the tokens not
  seen before.
- Training remembers what it trained (``trained``: a SHA-256 of the message with LF line
  ends, and its class), so training a message twice counts it once, training it as the
  other class moves it, and ``forget`` takes away only what was trained.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ._classifier import Counts

BUSY_TIMEOUT = 30.0  # seconds: a training batch holds the write lock well under a second
SPAM, HAM = "spam", "ham"

SCHEMA = """
CREATE TABLE IF NOT EXISTS tokens (
    token TEXT PRIMARY KEY,
    spam INTEGER NOT NULL,       -- spam messages trained with this token
    ham INTEGER NOT NULL         -- ham messages trained with this token
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,        -- nspam, nham, generation
    value INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS trained (
    digest TEXT PRIMARY KEY,     -- sha256 of the message, LF line ends
    class TEXT NOT NULL          -- spam | ham
) WITHOUT ROWID;
INSERT OR IGNORE INTO meta VALUES ('nspam', 0), ('nham', 0), ('generation', 0),
    ('id', abs(random()));     -- this database, made anew, is another one to a cache
"""

_ADD = ("INSERT INTO tokens (token, spam, ham) VALUES (?, ?, ?) ON CONFLICT (token) "
        "DO UPDATE SET spam = spam + excluded.spam, ham = ham + excluded.ham")
_SUBTRACT = "UPDATE tokens SET spam = max(spam - ?, 0), ham = max(ham - ?, 0) WHERE token = ?"


class StoreError(Exception):
    """The database can't be used: the message says why."""


def digest(raw: bytes) -> str:
    return hashlib.sha256(raw.replace(b"\r\n", b"\n")).hexdigest()


@dataclass(frozen=True)
class Totals:
    nspam: int
    nham: int
    generation: tuple[int, int]  # (the database's id, its training commits)


@dataclass
class Trained:
    """What one train or forget call did."""

    spam: int = 0  # messages added to (or taken from) spam
    ham: int = 0
    unchanged: int = 0  # already trained so (train) or not trained so (forget)


class Store:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()

    @contextlib.contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        """This thread's connection (see the module's docstring), opened anew when the
        file was replaced since, dropped after an error."""
        try:
            info = os.stat(self.path)
        except FileNotFoundError:
            raise StoreError(f"{self.path}: no such database (make it with "
                             "python3 -m popgate.plugins.bayes train)") from None
        identity = (info.st_dev, info.st_ino)
        state = self._local
        db: sqlite3.Connection | None = getattr(state, "db", None)
        if db is None or state.identity != identity:
            if db is not None:
                db.close()
            db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT, isolation_level=None)
            state.db, state.identity = db, identity
        try:
            yield db
        except BaseException:
            # Whatever went wrong, the next call starts from a fresh connection.
            self.close()
            raise

    def close(self) -> None:
        """Closes this thread's connection (others close when their thread ends or this
        Store goes)."""
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None

    def create(self) -> None:
        """Makes the file (its directory must exist) and the tables if missing."""
        db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT, isolation_level=None)
        try:
            mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if mode != "wal":
                raise StoreError(f"{self.path}: can't use WAL mode (journal mode {mode})")
            db.executescript(SCHEMA)
        except sqlite3.DatabaseError as error:
            raise StoreError(f"{self.path}: {error}") from None
        finally:
            db.close()

    # -- reading --------------------------------------------------------------------

    @staticmethod
    def _totals(db: sqlite3.Connection) -> Totals:
        values = dict(db.execute("SELECT key, value FROM meta").fetchall())
        return Totals(values.get("nspam", 0), values.get("nham", 0),
                      (values.get("id", 0), values.get("generation", 0)))

    def totals(self) -> Totals:
        with self.connect() as db:
            return self._totals(db)

    def read(self, tokens: Iterable[str], cache: CountCache | None = None
             ) -> tuple[Totals, dict[str, Counts]]:
        """The totals and the counts of those of `tokens` that were ever trained, from one
        snapshot; with a cache, only tokens it doesn't hold for the current generation
        are read."""
        wanted = list(tokens)
        with self.connect() as db:
            db.execute("BEGIN")  # one read snapshot for totals and counts
            try:
                totals = self._totals(db)
                known: dict[str, Counts] = {}
                missing = wanted
                if cache is not None:
                    known, missing = cache.lookup(totals.generation, wanted)
                found: dict[str, Counts] = {}
                if missing:
                    rows = db.execute(
                        "SELECT t.token, t.spam, t.ham FROM json_each(?) AS j "
                        "JOIN tokens AS t ON t.token = j.value", (json.dumps(missing),))
                    found = {token: (spam, ham) for token, spam, ham in rows}
            finally:
                db.execute("COMMIT")
        if cache is not None and missing:
            cache.store(totals.generation, missing, found)
        known.update(found)
        return totals, known

    # -- training -------------------------------------------------------------------

    def train(self, messages: Iterable[tuple[bytes, frozenset[str]]], kind: str,
              forget: bool = False, batch: int = 100) -> Trained:
        """Adds (or, with forget, takes away) messages as `kind`, given as (raw, tokens),
        committing every `batch` messages so no write lock is held long."""
        if kind not in (SPAM, HAM):
            raise ValueError(f"kind must be spam or ham, not {kind!r}")
        done = Trained()
        with self.connect() as db:
            pending = 0
            db.execute("BEGIN IMMEDIATE")
            try:
                for raw, tokens in messages:
                    if forget:
                        self._forget_one(db, digest(raw), tokens, kind, done)
                    else:
                        self._train_one(db, digest(raw), tokens, kind, done)
                    pending += 1
                    if pending >= batch:
                        self._commit(db)
                        db.execute("BEGIN IMMEDIATE")
                        pending = 0
                self._commit(db)
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
        return done

    @staticmethod
    def _commit(db: sqlite3.Connection) -> None:
        db.execute("UPDATE meta SET value = value + 1 WHERE key = 'generation'")
        db.execute("COMMIT")

    @staticmethod
    def _count(db: sqlite3.Connection, kind: str, delta: int) -> None:
        db.execute("UPDATE meta SET value = max(value + ?, 0) WHERE key = ?",
                   (delta, "nspam" if kind == SPAM else "nham"))

    def _train_one(self, db: sqlite3.Connection, key: str, tokens: frozenset[str], kind: str,
                   done: Trained) -> None:
        row = db.execute("SELECT class FROM trained WHERE digest = ?", (key,)).fetchone()
        if row is not None and row[0] == kind:
            done.unchanged += 1
            return
        if row is not None:  # trained as the other class: move it
            self._untrain(db, tokens, row[0])
        spam, ham = (1, 0) if kind == SPAM else (0, 1)
        db.executemany(_ADD, ((token, spam, ham) for token in tokens))
        self._count(db, kind, +1)
        db.execute("INSERT OR REPLACE INTO trained VALUES (?, ?)", (key, kind))
        if kind == SPAM:
            done.spam += 1
        else:
            done.ham += 1

    def _forget_one(self, db: sqlite3.Connection, key: str, tokens: frozenset[str],
                    kind: str, done: Trained) -> None:
        row = db.execute("SELECT class FROM trained WHERE digest = ?", (key,)).fetchone()
        if row is None or row[0] != kind:
            done.unchanged += 1
            return
        self._untrain(db, tokens, kind)
        db.execute("DELETE FROM trained WHERE digest = ?", (key,))
        if kind == SPAM:
            done.spam += 1
        else:
            done.ham += 1

    def _untrain(self, db: sqlite3.Connection, tokens: frozenset[str], kind: str) -> None:
        spam, ham = (1, 0) if kind == SPAM else (0, 1)
        db.executemany(_SUBTRACT, ((spam, ham, token) for token in tokens))
        db.execute("DELETE FROM tokens WHERE spam = 0 AND ham = 0 AND token IN "
                   "(SELECT value FROM json_each(?))", (json.dumps(sorted(tokens)),))
        self._count(db, kind, -1)

    def token_count(self) -> int:
        with self.connect() as db:
            return int(db.execute("SELECT count(*) FROM tokens").fetchone()[0])


class CountCache:
    """Token counts read for one generation of the database, shared by the sessions of
    one plugin instance. A new generation (someone trained) empties it. Bounded: past
    MAX_ENTRIES it starts over rather than grow without end."""

    MAX_ENTRIES = 200_000  # some 30 MB

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._generation = (-1, -1)
        self._counts: dict[str, Counts] = {}

    def lookup(self, generation: tuple[int, int], tokens: list[str]) -> tuple[dict[str, Counts], list[str]]:
        """(counts known for this generation, tokens it doesn't know)."""
        with self._lock:
            if generation != self._generation:
                return {}, tokens
            counts = self._counts
            known = {token: counts[token] for token in tokens if token in counts}
        missing = [token for token in tokens if token not in known]
        # Tokens known never to have been trained are in the cache as (0, 0): drop them
        # from the result, as the database's answer would.
        return {t: c for t, c in known.items() if c != (0, 0)}, missing

    def store(self, generation: tuple[int, int], asked: list[str], found: dict[str, Counts]) -> None:
        with self._lock:
            # Another generation (newer, or a database made anew): start over. While
            # someone trains, sessions with older and newer snapshots may take turns
            # at this; the cache is then of little use, never wrong.
            if generation != self._generation or len(self._counts) > self.MAX_ENTRIES:
                self._generation = generation
                self._counts = {}
            for token in asked:
                self._counts[token] = found.get(token, (0, 0))
