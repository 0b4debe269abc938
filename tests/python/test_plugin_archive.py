"""The archive plugin without a server: `python3 -m popgate check` on .eml files, the
store's rules (one copy per message, also under concurrent sessions; safe folder names;
failures raise), pruning, and the command line's output and exit codes."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

from popgate.plugins import archive as arch
from popgate.testing import check

MESSAGE = (b"From: a@example.org\r\n"
           b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?= and\ttab\r\n"
           b"Message-ID: <one@example.org>\r\n"
           b"X-Old: caf\xe9\r\n"
           b"\r\n"
           b"body 1\r\n"
           b".leading dot\r\n")


@pytest.fixture
def run(python_dir: Path):
    def run(*args: object) -> subprocess.CompletedProcess[bytes]:
        env = dict(os.environ, PYTHONPATH=str(python_dir))
        return subprocess.run(["/usr/bin/python3", "-m", *map(str, args)],
                              capture_output=True, env=env, timeout=60)

    return run


@pytest.fixture
def eml(tmp_path: Path) -> Path:
    path = tmp_path / "message.eml"
    path.write_bytes(MESSAGE)
    return path


def copies(root: Path) -> list[Path]:
    return sorted(f for f in root.glob("*/*/*") if f.parent.name in ("new", "cur"))


def test_check_archives_a_retr_once_and_a_top_never(run, eml, tmp_path):
    root = tmp_path / "archive"
    check = ("popgate", "check", "python:popgate.plugins.archive", eml,
             "--option", f"path={root}")
    done = run(*check, "--top", "1")
    assert (done.returncode, done.stdout) == (0, b"pass\n"), done.stderr
    assert copies(root) == []
    for _ in range(2):
        done = run(*check)
        assert (done.returncode, done.stdout) == (0, b"pass\n"), done.stderr
    [copy] = copies(root)
    assert copy.read_bytes() == MESSAGE
    assert copy.parent == root / "user" / "new"  # popgate.testing's session user


def test_check_with_a_bad_option_exits_2_naming_it(run, eml, tmp_path):
    done = run("popgate", "check", "python:popgate.plugins.archive", eml,
               "--option", f"path={tmp_path}/archive", "--option", "days=-1")
    assert done.returncode == 2
    assert b"option days must be positive" in done.stderr


@pytest.mark.parametrize("user, expected", [
    ("dave", "dave"),
    ("dave@example.org", "dave@example.org"),
    ("../etc", "%2E.%2Fetc"),
    (".hidden", "%2Ehidden"),
    ("a/b c", "a%2Fb%20c"),
    ("", "%none"),
])
def test_folder_names_stay_inside_the_archive(user, expected):
    assert arch.folder_name(user) == expected


def test_a_hostile_user_name_writes_inside_the_archive(tmp_path):
    store = arch.MaildirArchive(tmp_path / "archive")
    store.create()
    path = store.store("../../escape", None, MESSAGE, "<x@y>", "s")
    assert path is not None and path.resolve().is_relative_to(tmp_path / "archive")
    [entry] = store.entries()
    assert entry.user == "../../escape"


def test_concurrent_sessions_store_one_copy(tmp_path):
    store = arch.MaildirArchive(tmp_path / "archive")
    store.create()
    results: list[Path | None] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(8)

    def one() -> None:
        barrier.wait()
        try:
            results.append(store.store("dave", "uidl-1", MESSAGE, "<one@example.org>", "s"))
        except BaseException as error:  # noqa: BLE001 - asserted below
            errors.append(error)

    threads = [threading.Thread(target=one) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(results) == 8 and len([r for r in results if r is not None]) == 1
    assert [f.read_bytes() for f in copies(tmp_path / "archive")] == [MESSAGE]
    assert list((tmp_path / "archive" / "dave" / "tmp").iterdir()) == []
    # The same bytes under another UIDL are another message.
    assert store.store("dave", "uidl-2", MESSAGE, "<one@example.org>", "s") is not None


def test_a_store_that_cannot_write_raises_and_leaves_no_entry(tmp_path):
    store = arch.MaildirArchive(tmp_path / "archive")
    store.create()
    (tmp_path / "archive" / "dave").write_bytes(b"in the way")
    with pytest.raises(OSError):
        store.store("dave", None, MESSAGE, None, None)
    assert store.entries() == []


def test_prune_goes_by_the_files_date_and_drops_stale_tmp_files(tmp_path):
    store = arch.MaildirArchive(tmp_path / "archive")
    store.create()
    old = store.store("dave", "1", MESSAGE, "<1@x>", "old")
    new = store.store("dave", "2", MESSAGE, "<2@x>", "new")
    assert old is not None and new is not None
    stale = tmp_path / "archive" / "dave" / "tmp" / "left-over"
    stale.write_bytes(b"half")
    week = time.time() - 7 * 86400
    os.utime(old, (week, week))
    os.utime(stale, (week, week))
    assert store.prune(days=8) == 0
    assert store.prune(days=6) == 1
    assert not old.exists() and new.exists() and not stale.exists()
    assert [e.message_id for e in store.entries()] == ["<2@x>"]
    # Its entry went too: the same message is archived again.
    assert store.store("dave", "1", MESSAGE, "<1@x>", "old") is not None


def test_a_copy_a_reader_moved_to_cur_is_still_listed(tmp_path):
    store = arch.MaildirArchive(tmp_path / "archive")
    store.create()
    path = store.store("dave", "1", MESSAGE, "<1@x>", "s")
    assert path is not None
    moved = path.parent.parent / "cur" / (path.name + ":2,S")
    os.rename(path, moved)  # as Dovecot does when it serves a Maildir
    assert [e.file for e in store.entries()] == [moved]
    assert store.prune(days=30) == 0 and len(store.entries()) == 1


def test_list_prints_one_tab_separated_line_per_entry(run, eml, tmp_path):
    root = tmp_path / "archive"
    done = run("popgate", "check", "python:popgate.plugins.archive", eml,
               "--option", f"path={root}")
    assert done.returncode == 0, done.stderr
    done = run("popgate.plugins.archive", "list", "--path", root)
    assert done.returncode == 0, done.stderr
    [line] = done.stdout.decode().splitlines()
    date, user, uidl, message_id, subject, size, file = line.split("\t")
    assert time.mktime(time.strptime(date, "%Y-%m-%dT%H:%M:%SZ")) - time.timezone == \
        pytest.approx(time.time(), abs=120)
    assert (user, uidl, message_id) == ("user", "-", "<one@example.org>")
    assert subject == "Grüße and tab"  # RFC 2047 decoded, the tab made a space
    assert (int(size), Path(file)) == (len(MESSAGE), copies(root)[0])


def test_restore_to_a_new_maildir_and_the_exit_codes(run, eml, tmp_path):
    root = tmp_path / "archive"
    assert run("popgate", "check", "python:popgate.plugins.archive", eml,
               "--option", f"path={root}").returncode == 0
    target = tmp_path / "restored"
    done = run("popgate.plugins.archive", "restore", "--path", root, "--message-id",
               "one@example.org", "--to", target)
    assert done.returncode == 0, done.stderr
    assert [f.read_bytes() for f in (target / "new").iterdir()] == [MESSAGE]
    assert (target / "cur").is_dir() and (target / "tmp").is_dir()
    assert run("popgate.plugins.archive", "restore", "--path", root, "--message-id",
               "other@example.org", "--to", target).returncode == 1
    assert run("popgate.plugins.archive", "list", "--path", root, "--until",
               "2001-02-30").returncode == 2  # no such day
    assert run("popgate.plugins.archive", "restore", "--path", root, "--to", target,
               "--eml").returncode == 2  # one or the other



def test_the_hook_prunes_again_when_the_interval_has_passed(tmp_path):
    plugin = arch.Archive()
    plugin.configure({"path": str(tmp_path / "archive"), "days": 1})
    old = plugin.archive.store("dave", "old", MESSAGE, "<old@x>", "old")
    assert old is not None
    two_days = time.time() - 2 * 86400
    os.utime(old, (two_days, two_days))
    assert check(plugin, MESSAGE).verdict == "pass"
    assert old.exists()  # within the hour since configure pruned: not yet
    plugin._next_prune = 0.0
    assert check(plugin, MESSAGE.replace(b"body 1", b"body 2")).verdict == "pass"
    deadline = time.monotonic() + 10
    while old.exists() and time.monotonic() < deadline:
        time.sleep(0.02)  # in a background thread
    assert not old.exists()
    assert len(plugin.archive.entries()) == 2
