"""Messages to train on, from the paths the command line names.

- A directory with ``cur/`` or ``new/`` is a Maildir: the files in ``new/`` and ``cur/``.
- Any other directory: every file in it and below (names starting with '.' skipped),
  sorted, each read as a file is.
- A file that starts with ``From `` is an mbox (Python's ``mailbox.mbox``); any other
  file is one message (``.eml``).
"""

from __future__ import annotations

import mailbox
import os
from collections.abc import Iterator
from pathlib import Path


class SourceError(Exception):
    """A path names no messages: the message says why."""


def is_maildir(path: Path) -> bool:
    return (path / "cur").is_dir() or (path / "new").is_dir()


def _maildir(path: Path) -> Iterator[bytes]:
    for sub in ("new", "cur"):
        directory = path / sub
        if directory.is_dir():
            for entry in sorted(directory.iterdir()):
                if entry.is_file() and not entry.name.startswith("."):
                    yield entry.read_bytes()


def _is_mbox(path: Path) -> bool:
    with path.open("rb") as file:
        return file.read(5) == b"From "


def _mbox(path: Path) -> Iterator[bytes]:
    box = mailbox.mbox(path, create=False)
    try:
        for key in box.iterkeys():
            yield box.get_bytes(key)  # without the "From " line
    finally:
        box.close()


def _file(path: Path) -> Iterator[bytes]:
    if _is_mbox(path):
        yield from _mbox(path)
    else:
        yield path.read_bytes()


def _tree(path: Path) -> Iterator[bytes]:
    for root, directories, files in os.walk(path):
        directories[:] = sorted(d for d in directories if not d.startswith("."))
        here = Path(root)
        if here != path and is_maildir(here):
            directories[:] = []
            yield from _maildir(here)
            continue
        for name in sorted(files):
            if not name.startswith("."):
                yield from _file(here / name)


def check(path: Path) -> None:
    """Raises SourceError unless `path` is a file or directory that can be read."""
    if not path.exists():
        raise SourceError(f"{path}: no such file or directory")
    if not (path.is_file() or path.is_dir()):
        raise SourceError(f"{path}: not a file or a directory")
    if not os.access(path, os.R_OK | (os.X_OK if path.is_dir() else 0)):
        raise SourceError(f"{path}: can't be read")


def messages(path: Path) -> Iterator[bytes]:
    """Every message `path` holds (see the module's docstring)."""
    check(path)
    if path.is_dir():
        yield from (_maildir(path) if is_maildir(path) else _tree(path))
    else:
        yield from _file(path)
