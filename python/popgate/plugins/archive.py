"""Keeps a copy of every message a client downloads, because POP3 clients delete mail from
the server and the only copy then lives on the client's device.

Each whole ``RETR`` (not ``TOP``, nothing partial) is written, as the message stands when
this plugin's hook runs, into a per-user Maildir ``PATH/USER/{tmp,new,cur}`` and synced to
disk (file, then directory) before the hook returns, so before the client gets a byte of
it. A message is archived once: a second download of the same UIDL (or, while popgate
does not tell plugins the UIDL, of the same bytes) adds nothing. Copies older than
``days`` (by the file's modification time, which is when it was archived) are pruned at
start-up and then at most once an hour.

Plugins earlier in the chain may have edited the message: list archive first to keep the
original as the server sent it. If the copy can't be written (a full disk, permissions),
the hook raises and popgate's ``on_error`` applies: use ``on_error = "tempfail"`` so no
message reaches a client unarchived.

    [[plugin]]
    use = "python:popgate.plugins.archive"
    path = "/var/lib/popgate/archive"   # its parent must exist; path itself is created
    days = 30
    on_error = "tempfail"

Finding and restoring copies (exit status 0: done, 1: nothing matched, 2: usage error)::

    python3 -m popgate.plugins.archive list --path PATH [--user U] [--since DATE]
        [--until DATE] [--message-id ID]
    python3 -m popgate.plugins.archive restore --path PATH [filters] --to MAILDIR
    python3 -m popgate.plugins.archive restore --path PATH [filters] --eml > message.eml
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import email.header
import hashlib
import itertools
import logging
import os
import socket
import sqlite3
import sys
import threading
import time
import urllib.parse
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import popgate
from popgate.plugins._options import check_known

DEFAULT_DAYS = 30
PRUNE_INTERVAL = 3600.0  # seconds between prunes after the one at start-up
INDEX_NAME = ".index.sqlite"  # a user's folder name never starts with a dot
STALE_TMP = 36 * 3600  # Maildir's rule: a tmp/ file this old is left over from a crash
BUSY_TIMEOUT = 10.0  # seconds to wait for another session's write to the index
OPTIONS = ("path", "days")

log = logging.getLogger("popgate.plugins.archive")

SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    user TEXT NOT NULL,          -- the POP3 user name as the client logged in
    key TEXT NOT NULL,           -- "uidl:UIDL", or "sha256:HEX" of the bytes without one
    uidl TEXT,
    message_id TEXT NOT NULL,
    subject TEXT NOT NULL,
    size INTEGER NOT NULL,
    folder TEXT NOT NULL,        -- the user's Maildir, a directory name under path
    file TEXT NOT NULL,          -- the file's unique name (before ':'), in new/ or cur/
    PRIMARY KEY (user, key)
)
"""


# -- names on disk --------------------------------------------------------------------

def folder_name(user: str) -> str:
    """A user's directory name: reversible (percent-encoding), no '/', and never starting
    with '.', so no '..', no hidden name and no clash with the index."""
    if not user:
        return "%none"  # '%' alone is no percent-escape: no real name encodes to it
    name = urllib.parse.quote(user, safe="@+=,")
    return "%2E" + name[1:] if name.startswith(".") else name


_counter = itertools.count(1)


def _host() -> str:
    # Maildir: '/' and ':' in the host name are written as octal escapes.
    return socket.gethostname().replace("/", "\\057").replace(":", "\\072") or "localhost"


def unique_name() -> str:
    """A Maildir file name: time, microseconds, process and a counter (threads share one)
    make it unique on this host."""
    now = time.time_ns()
    seconds, micros = divmod(now // 1000, 1_000_000)
    return f"{seconds}.M{micros}P{os.getpid()}Q{next(_counter)}.{_host()}"


def base_name(file_name: str) -> str:
    """The unique part of a Maildir file name: a reader may have added ':2,FLAGS'."""
    return file_name.split(":", 1)[0]


# -- durable Maildir writes -----------------------------------------------------------

def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_dirs(path: Path, mode: int, owner: tuple[int, int] | None = None) -> None:
    """mkdir -p, each new directory synced into its parent (a crash can't lose it)."""
    if path.is_dir():
        return
    make_dirs(path.parent, mode, owner)
    try:
        path.mkdir(mode)
    except FileExistsError:
        if not path.is_dir():
            raise
        return  # another session made it meanwhile
    if owner is not None:
        os.chown(path, *owner)
    fsync_dir(path.parent)


def ensure_maildir(root: Path, mode: int = 0o700, owner: tuple[int, int] | None = None) -> None:
    for sub in ("tmp", "new", "cur"):
        make_dirs(root / sub, mode, owner)


def write_tmp(maildir: Path, data: bytes, owner: tuple[int, int] | None = None) -> Path:
    """Writes `data` into maildir/tmp/ under a new unique name and syncs it."""
    path = maildir / "tmp" / unique_name()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        if owner is not None:
            os.fchown(fd, *owner)
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        path.unlink(missing_ok=True)
        raise
    os.close(fd)
    return path


def move_to_new(tmp: Path) -> Path:
    """Maildir delivery's last step: tmp/NAME to new/NAME, the directory synced."""
    new_dir = tmp.parent.parent / "new"
    final = new_dir / tmp.name
    os.rename(tmp, final)
    fsync_dir(new_dir)
    return final


def deliver(maildir: Path, data: bytes, owner: tuple[int, int] | None = None) -> Path:
    """Writes one message into a Maildir as an MDA does (tmp/, fsync, rename into new/,
    fsync the directory): Dovecot serves it from there."""
    ensure_maildir(maildir, 0o700, owner)
    tmp = write_tmp(maildir, data, owner)
    try:
        return move_to_new(tmp)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


# -- what the index keeps about a message ---------------------------------------------

def entry_key(uidl: str | None, raw: bytes) -> str:
    if uidl:
        return "uidl:" + uidl
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def storable(text: str | None) -> str:
    """Header text as sqlite can store it: 8-bit bytes that aren't UTF-8 (kept as
    surrogates) become U+FFFD, control characters spaces."""
    if not text:
        return ""
    clean = text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return "".join(" " if ord(c) < 32 or ord(c) == 127 else c for c in clean).strip()


def decoded(text: str) -> str:
    """RFC 2047 encoded words decoded, for people reading `list`; as it was if it can't be."""
    if "=?" not in text:
        return text
    try:
        return str(email.header.make_header(email.header.decode_header(text)))
    except (ValueError, LookupError, UnicodeError):
        return text


def bare_message_id(text: str) -> str:
    return text.strip().strip("<>").strip()


@dataclass(frozen=True)
class Entry:
    """One archived message, as `list` shows it."""

    date: float  # the file's modification time: when it was archived
    user: str
    uidl: str | None
    message_id: str
    subject: str
    size: int
    file: Path

    def line(self) -> str:
        fields = [iso_date(self.date), self.user, self.uidl or "-", self.message_id or "-",
                  self.subject or "-", str(self.size), str(self.file)]
        return "\t".join(field.replace("\t", " ") for field in fields)


def iso_date(timestamp: float) -> str:
    moment = datetime.datetime.fromtimestamp(int(timestamp), datetime.timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Selection:
    """The filters of `list` and `restore`; None matches everything."""

    user: str | None = None
    since: float | None = None
    until: float | None = None  # exclusive
    message_id: str | None = None

    def matches(self, entry: Entry) -> bool:
        if self.user is not None and entry.user != self.user:
            return False
        if self.since is not None and entry.date < self.since:
            return False
        if self.until is not None and entry.date >= self.until:
            return False
        if (self.message_id is not None and
                bare_message_id(entry.message_id) != bare_message_id(self.message_id)):
            return False
        return True


# -- the archive ----------------------------------------------------------------------

class MaildirArchive:
    """PATH/USER/{tmp,new,cur} Maildirs and PATH/.index.sqlite, which says what is there
    (and so what is already archived). Safe for concurrent sessions and processes: a copy
    moves into new/ and gets its index row under the index's write lock."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.index = path / INDEX_NAME

    @contextlib.contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        # A connection per call: hooks run on several threads.
        db = sqlite3.connect(self.index, timeout=BUSY_TIMEOUT, isolation_level=None)
        try:
            yield db
        finally:
            db.close()

    def create(self) -> None:
        """Makes path (its parent must exist) and the index; fails if they can't be
        written."""
        if not self.path.is_dir():
            self.path.mkdir(0o700)
            fsync_dir(self.path.parent)
        with self._db() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(SCHEMA)

    def exists(self) -> bool:
        return self.index.is_file()

    def _known(self, db: sqlite3.Connection, user: str, key: str) -> bool:
        row = db.execute("SELECT 1 FROM entries WHERE user = ? AND key = ?",
                         (user, key)).fetchone()
        return row is not None

    def store(self, user: str, uidl: str | None, raw: bytes, message_id: str | None,
              subject: str | None) -> Path | None:
        """Archives one message unless it is already there; the new file's path, synced
        to disk, or None when it was archived before. Raises when it can't be written."""
        key = entry_key(uidl, raw)
        with self._db() as db:
            if self._known(db, user, key):
                return None
            maildir = self.path / folder_name(user)
            ensure_maildir(maildir)
            tmp = write_tmp(maildir, raw)  # the slow part, outside the lock
            final: Path | None = None
            try:
                db.execute("BEGIN IMMEDIATE")
                if self._known(db, user, key):  # another session was quicker
                    db.execute("ROLLBACK")
                    tmp.unlink()
                    return None
                final = move_to_new(tmp)
                db.execute("INSERT INTO entries VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                           (user, key, uidl, storable(message_id), storable(subject),
                            len(raw), maildir.name, final.name))
                db.execute("COMMIT")
                return final
            except BaseException:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                # No copy without its row: a later download tries again from scratch.
                tmp.unlink(missing_ok=True)
                if final is not None:
                    final.unlink(missing_ok=True)
                raise

    def _folders(self) -> list[Path]:
        return sorted(entry for entry in self.path.iterdir()
                      if entry.is_dir() and not entry.name.startswith("."))

    @staticmethod
    def _files(folder: Path) -> dict[str, Path]:
        """The messages of one Maildir by unique name (new/ and cur/)."""
        found: dict[str, Path] = {}
        for sub in ("new", "cur"):
            directory = folder / sub
            if directory.is_dir():
                for entry in directory.iterdir():
                    found[base_name(entry.name)] = entry
        return found

    def prune(self, days: int, now: float | None = None) -> int:
        """Removes copies archived more than `days` ago (file modification time), tmp/
        files left by a crash, and the index rows of files that are gone; how many copies
        went."""
        now = time.time() if now is None else now
        cutoff = now - days * 86400
        removed = 0
        for folder in self._folders():
            removed += self._prune_folder(folder, cutoff, now - STALE_TMP)
        with self._db() as db:
            # Under the write lock, so no copy moves into new/ between the listing and
            # the deletion of rows without a file.
            db.execute("BEGIN IMMEDIATE")
            try:
                present = {(folder.name, name) for folder in self._folders()
                           for name in self._files(folder)}
                rows = db.execute("SELECT rowid, folder, file FROM entries").fetchall()
                gone = [(rowid,) for rowid, folder, file in rows if (folder, file) not in present]
                db.executemany("DELETE FROM entries WHERE rowid = ?", gone)
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        return removed

    def _prune_folder(self, folder: Path, cutoff: float, stale_tmp: float) -> int:
        removed = 0
        for sub, limit in (("new", cutoff), ("cur", cutoff), ("tmp", stale_tmp)):
            directory = folder / sub
            if not directory.is_dir():
                continue
            changed = False
            for entry in directory.iterdir():
                try:
                    if entry.is_file() and entry.stat().st_mtime < limit:
                        entry.unlink()
                        changed = True
                        if sub != "tmp":
                            removed += 1
                except FileNotFoundError:
                    pass  # Dovecot (or another prune) moved it meanwhile
            if changed:
                fsync_dir(directory)
        return removed

    def entries(self, selection: Selection = Selection()) -> list[Entry]:
        """What `list` shows: entries whose file is there, oldest first."""
        files = {folder.name: self._files(folder) for folder in self._folders()}
        with self._db() as db:
            rows = db.execute("SELECT user, uidl, message_id, subject, size, folder, file "
                              "FROM entries").fetchall()
        found: list[Entry] = []
        for user, uidl, message_id, subject, size, folder, file in rows:
            path = files.get(folder, {}).get(file)
            if path is None:
                continue  # pruned or removed by hand: the next prune drops the row
            try:
                date = path.stat().st_mtime
            except FileNotFoundError:
                continue
            entry = Entry(date, user, uidl, message_id, decoded(subject), size, path)
            if selection.matches(entry):
                found.append(entry)
        found.sort(key=lambda entry: (entry.date, str(entry.file)))
        return found


# -- the plugin -----------------------------------------------------------------------

def archive_path(value: object) -> Path:
    if value is None:
        raise ValueError("archive: option path is required (the archive's directory)")
    if not isinstance(value, str) or not value:
        raise TypeError("archive: option path must be a non-empty string")
    path = Path(value)
    if not path.is_absolute():
        raise ValueError(f"archive: option path must be absolute, not {value!r}")
    if not path.parent.is_dir():
        # As for [quarantine]: a typo in the parent must not create a tree somewhere.
        raise ValueError(f"archive: option path {value!r}: its parent directory "
                         f"{str(path.parent)!r} does not exist")
    if path.exists() and not path.is_dir():
        raise ValueError(f"archive: option path {value!r} is not a directory")
    return path


def archive_days(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"archive: option days must be an integer, not {value!r}")
    if value < 1:
        raise ValueError(f"archive: option days must be positive, not {value}")
    return value


class Archive(popgate.Plugin):
    needs = popgate.WHOLE_MESSAGE  # the copy is the whole message

    def configure(self, options: dict[str, Any]) -> None:
        check_known("archive", options, OPTIONS)
        self.archive = MaildirArchive(archive_path(options.get("path")))
        self.days = archive_days(options.get("days", DEFAULT_DAYS))
        self.archive.create()
        pruned = self.archive.prune(self.days)
        log.info("archive %s: %d copies older than %d days pruned", self.archive.path,
                 pruned, self.days)
        self._lock = threading.Lock()
        self._next_prune = time.monotonic() + PRUNE_INTERVAL

    def message(self, session: popgate.Session, msg: popgate.Message) -> None:
        if msg.command.upper() != "RETR" or msg.partial:
            return  # a preview: the client doesn't keep it
        self.archive.store(session.user, msg.uidl, msg.raw, msg.headers.get("Message-ID"),
                           msg.headers.get("Subject"))
        self._prune_now_and_then()

    def _prune_now_and_then(self) -> None:
        with self._lock:
            if time.monotonic() < self._next_prune:
                return
            self._next_prune = time.monotonic() + PRUNE_INTERVAL
        # In the background: a large archive must not hold up this message.
        threading.Thread(target=self._prune_logged, name="archive-prune", daemon=True).start()

    def _prune_logged(self) -> None:
        try:
            pruned = self.archive.prune(self.days)
            log.info("archive %s: %d copies pruned", self.archive.path, pruned)
        except Exception:  # noqa: BLE001 - retried in an hour; sessions go on
            log.exception("archive %s: pruning failed", self.archive.path)


# -- the command line -----------------------------------------------------------------

EXIT_OK, EXIT_NO_MATCH, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
    """Exit status 2 with this message."""


def parse_date(text: str, end_of_day: bool = False) -> float:
    """YYYY-MM-DD or an ISO 8601 date and time (UTC unless it names an offset). A bare
    date as --until means the end of that day."""
    try:
        moment = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a date: {text!r} (expected YYYY-MM-DD "
                                          "or YYYY-MM-DDTHH:MM:SS)") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    if end_of_day and len(text) == 10:
        moment += datetime.timedelta(days=1)
    return moment.timestamp()


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--path", required=True, type=Path, help="the archive's directory")
    common.add_argument("--user", help="only this POP3 user's messages")
    common.add_argument("--since", type=parse_date, metavar="DATE",
                        help="archived on or after DATE (YYYY-MM-DD[THH:MM:SS], UTC)")
    common.add_argument("--until", type=lambda text: parse_date(text, end_of_day=True),
                        metavar="DATE", help="archived before DATE (a bare date: up to "
                                             "the end of that day)")
    common.add_argument("--message-id", metavar="ID", help="this Message-ID (<> optional)")
    parser = argparse.ArgumentParser(
        prog="python3 -m popgate.plugins.archive",
        description="Find and restore messages kept by popgate's archive plugin. Exit "
                    "status: 0 done, 1 nothing matched, 2 usage error.")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", parents=[common], help="one line per archived message: "
                        "date, user, UIDL, Message-ID, Subject, size, file (tab-separated)")
    restore = commands.add_parser("restore", parents=[common],
                                  help="put the selected messages back")
    target = restore.add_mutually_exclusive_group(required=True)
    target.add_argument("--to", type=Path, metavar="MAILDIR",
                        help="deliver into this Maildir's new/ (made if missing; its "
                             "parent must exist)")
    target.add_argument("--eml", action="store_true",
                        help="write the one selected message to stdout")
    return parser


def _selected(args: argparse.Namespace) -> list[Entry]:
    archive = MaildirArchive(args.path)
    if not archive.exists():
        raise UsageError(f"{args.path}: no archive here (no {INDEX_NAME})")
    return archive.entries(Selection(args.user, args.since, args.until, args.message_id))


def _owner_of(directory: Path) -> tuple[int, int] | None:
    """Restored files take the Maildir's owner when run as root, so the mail server (which
    won't serve mail as root) can read them."""
    if os.geteuid() != 0:
        return None
    info = directory.stat()
    return (info.st_uid, info.st_gid)


def _restore_to(entries: Sequence[Entry], maildir: Path) -> None:
    if not maildir.is_dir() and not maildir.parent.is_dir():
        raise UsageError(f"{maildir}: its parent directory does not exist")
    owner = _owner_of(maildir if maildir.is_dir() else maildir.parent)
    for entry in entries:
        restored = deliver(maildir, entry.file.read_bytes(), owner)
        print(f"{entry.file}\t{restored}")


def _restore_eml(entries: Sequence[Entry]) -> None:
    if len(entries) > 1:
        raise UsageError(f"{len(entries)} messages match; --eml writes one (narrow it "
                         "with --user, --message-id, --since or --until)")
    sys.stdout.buffer.write(entries[0].file.read_bytes())
    sys.stdout.buffer.flush()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)  # exits 2 on a usage error
    try:
        entries = _selected(args)
        if not entries:
            print("nothing matched", file=sys.stderr)
            return EXIT_NO_MATCH
        if args.command == "list":
            for entry in entries:
                print(entry.line())
        elif args.eml:
            _restore_eml(entries)
        else:
            _restore_to(entries, args.to)
    except UsageError as error:
        print(f"archive: {error}", file=sys.stderr)
        return EXIT_USAGE
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
