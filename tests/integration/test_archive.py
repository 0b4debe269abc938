"""The archive plugin (python:popgate.plugins.archive) end to end: a real Dovecot, popgate,
poplib as the client, and the archive's own command line.

What must hold: a message a client downloads and deletes is still in the archive, byte for
byte, and on disk before the client got it; a second download adds nothing; TOP adds
nothing; old copies are pruned; `restore` puts a copy back where Dovecot serves it, byte
for byte; `list` filters by user, date and Message-ID; an archive that can't be written
withholds the message (on_error = "tempfail") and the server keeps it; a bad option stops
start-up with exit status 2.
"""

from __future__ import annotations

import calendar
import os
import poplib
import subprocess
import textwrap
import time
from pathlib import Path

import pytest

from pgtest import pop3
from pgtest.pop3 import retr
from pgtest.config import start_popgate
from pgtest.dovecot import Dovecot
from pgtest.popgate import REPO, Popgate, PopgateError

poplib._MAXLINE = 1 << 20

PYTHON_DIR = os.environ.get("POPGATE_PYTHONPATH") or str(REPO / "build" / "python")
USERS = {"dave": "pw", "erin": "pw2"}


def mail(subject: bytes, message_id: str, body: bytes) -> bytes:
    return (b"From: alice@example.org\r\nTo: dave@example.org\r\nSubject: " + subject +
            b"\r\nMessage-ID: <" + message_id.encode() + b">\r\n\r\n" + body)


MESSAGES = [
    mail(b"first", "first@example.org", b"One.\r\n.leading dot\r\n..two dots\r\nend\r\n"),
    mail("Grüße – 8 bit".encode(), "second@example.org",
         b"caf\xe9 latin-1 and \xe2\x82\xac utf-8\r\n\tindented\r\n"),
    mail(b"third", "third@example.org", b"Three.\r\n"),
]
ERIN_MESSAGES = [mail(b"for erin", "erin-1@example.org", b"Hello Erin.\r\n")]


@pytest.fixture(scope="module")
def dovecot():
    with Dovecot(users=USERS) as dc:
        yield dc


@pytest.fixture()
def mailstore(dovecot):
    dovecot.reset("dave", MESSAGES)
    dovecot.reset("erin", ERIN_MESSAGES)
    return dovecot


def start(tmp_path: Path, upstream: str, plugins: list[dict], extra: str = "") -> Popgate:
    return start_popgate(tmp_path, upstream, plugins, extra)


def archive_plugin(path: Path, **options) -> dict:
    return {"use": "python:popgate.plugins.archive", "path": str(path),
            "on_error": "tempfail", **options}


def login(port: int, user: str = "dave") -> poplib.POP3:
    return pop3.login(port, user, USERS[user])


def copies(archive: Path, user: str = "dave") -> list[Path]:
    folder = archive / user
    return sorted(f for sub in ("new", "cur") if (folder / sub).is_dir()
                  for f in (folder / sub).iterdir())


def contents(archive: Path, user: str = "dave") -> list[bytes]:
    return sorted(f.read_bytes() for f in copies(archive, user))


def cli(*args: object) -> subprocess.CompletedProcess[bytes]:
    env = dict(os.environ, PYTHONPATH=PYTHON_DIR)
    return subprocess.run(["/usr/bin/python3", "-m", "popgate.plugins.archive",
                           *map(str, args)], capture_output=True, env=env, timeout=60)


def fetch_and_quit(port: int, numbers, user: str = "dave", delete: bool = False) -> list[bytes]:
    p = login(port, user)
    got = [retr(p, n) for n in numbers]
    if delete:
        for n in numbers:
            p.dele(n)
    p.quit()
    return got


def test_retr_dele_quit_the_server_is_empty_and_the_archive_has_every_byte(
        tmp_path, mailstore):
    archive = tmp_path / "archive"
    with start(tmp_path, mailstore.address, [archive_plugin(archive)]) as pg:
        got = fetch_and_quit(pg.port, [1, 2, 3], delete=True)
    mailstore.wait_until_idle("dave")
    assert mailstore.message_count("dave") == 0
    assert got == MESSAGES  # the client got them unchanged...
    assert contents(archive) == sorted(MESSAGES)  # ...and the archive has them, exactly
    assert all(f.parent.name == "new" and f.stat().st_mode & 0o777 == 0o600
               for f in copies(archive))
    assert (archive / "dave" / "tmp").is_dir() and not list((archive / "dave" / "tmp").iterdir())


def test_a_second_download_of_the_same_message_adds_nothing(tmp_path, mailstore):
    archive = tmp_path / "archive"
    with start(tmp_path, mailstore.address, [archive_plugin(archive)]) as pg:
        fetch_and_quit(pg.port, [1])
        assert contents(archive) == [MESSAGES[0]]
        p = login(pg.port)  # another session, UIDL listed as clients do
        assert len(p.uidl()[1]) == 3
        assert retr(p, 1) == MESSAGES[0]
        assert retr(p, 1) == MESSAGES[0]
        assert retr(p, 3) == MESSAGES[2]
        p.quit()
    assert contents(archive) == sorted([MESSAGES[0], MESSAGES[2]])


def test_top_archives_nothing(tmp_path, mailstore):
    archive = tmp_path / "archive"
    with start(tmp_path, mailstore.address, [archive_plugin(archive)]) as pg:
        p = login(pg.port)
        p.top(1, 0)
        p.top(2, 99999999)  # fetchmail's whole-message TOP: still a preview here
        assert copies(archive) == []
        retr(p, 2)
        p.quit()
    assert contents(archive) == [MESSAGES[1]]


CHECKER = """
    import os
    import popgate

    ARCHIVE = {archive!r}

    class Checker(popgate.Plugin):
        # Runs after the archive in the chain: the copy must be there already.
        def message(self, session, msg):
            new = os.path.join(ARCHIVE, session.user, "new")
            names = os.listdir(new) if os.path.isdir(new) else []
            found = any(open(os.path.join(new, n), "rb").read() == msg.raw for n in names)
            msg.headers.add("X-Archived-Before", "yes" if found else "no")
"""


def test_the_copy_is_on_disk_before_the_client_gets_the_message(tmp_path, mailstore):
    archive = tmp_path / "archive"
    checker = tmp_path / "checker.py"
    checker.write_text(textwrap.dedent(CHECKER.format(archive=str(archive))))
    with start(tmp_path, mailstore.address,
               [archive_plugin(archive), {"use": str(checker)}]) as pg:
        p = login(pg.port)
        assert b"X-Archived-Before: yes" in p.retr(1)[1]
        assert b"X-Archived-Before: yes" in p.retr(2)[1]
        p.quit()


def test_an_archive_that_cannot_be_written_withholds_the_message(tmp_path, mailstore):
    archive = tmp_path / "archive"
    with start(tmp_path, mailstore.address, [archive_plugin(archive)]) as pg:
        # Root ignores permissions: a file where dave's Maildir would go stops the write.
        (archive / "dave").write_bytes(b"in the way")
        p = login(pg.port)
        with pytest.raises(poplib.error_proto, match=r"\[SYS/TEMP\]"):
            p.retr(1)
        with pytest.raises(poplib.error_proto, match=r"\[SYS/TEMP\]"):
            p.retr(2)
        p.quit()  # the client never had them: nothing to delete
        pg.wait_for_log(r"python plugin python:popgate.plugins.archive raised in message")
    mailstore.wait_until_idle("dave")
    assert mailstore.message_count("dave") == 3


def set_age(path: Path, seconds: float) -> None:
    moment = time.time() - seconds
    os.utime(path, (moment, moment))


def test_copies_older_than_days_are_pruned_at_start_up(tmp_path, mailstore):
    archive = tmp_path / "archive"
    plugin = archive_plugin(archive, days=30)
    with start(tmp_path, mailstore.address, [plugin]) as pg:
        fetch_and_quit(pg.port, [1, 2, 3])
    by_content = {f.read_bytes(): f for f in copies(archive)}
    set_age(by_content[MESSAGES[0]], 31 * 86400)  # past 30 days
    set_age(by_content[MESSAGES[1]], 29 * 86400)  # not yet
    with start(tmp_path, mailstore.address, [plugin]) as pg:
        assert contents(archive) == sorted([MESSAGES[1], MESSAGES[2]])
        listed = cli("list", "--path", archive)
        assert listed.returncode == 0, listed.stderr
        assert len(listed.stdout.splitlines()) == 2
        # Its index entry went with it: downloaded again, it is archived again.
        fetch_and_quit(pg.port, [1])
        assert contents(archive) == sorted(MESSAGES)


def test_restore_puts_a_message_back_where_dovecot_serves_it_byte_for_byte(
        tmp_path, mailstore):
    archive = tmp_path / "archive"
    with start(tmp_path, mailstore.address, [archive_plugin(archive)]) as pg:
        fetch_and_quit(pg.port, [1, 2, 3], delete=True)
    mailstore.wait_until_idle("dave")
    assert mailstore.message_count("dave") == 0

    done = cli("restore", "--path", archive, "--message-id", "second@example.org",
               "--to", mailstore.maildir("dave"))
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.splitlines()) == 1
    restored = Path(done.stdout.decode().split("\t")[1].strip())
    assert restored.parent == mailstore.maildir("dave") / "new"
    assert (restored.stat().st_uid, restored.stat().st_gid) == (mailstore.uid, mailstore.gid)

    # Dovecot serves it, straight and through popgate, as it was.
    host, port = mailstore.address.rsplit(":", 1)
    direct = poplib.POP3(host, int(port), timeout=30)
    direct.user("dave")
    direct.pass_("pw")
    assert direct.stat()[0] == 1
    assert retr(direct, 1) == MESSAGES[1]
    direct.quit()
    mailstore.wait_until_idle("dave")
    with start(tmp_path, mailstore.address, [archive_plugin(archive)]) as pg:
        assert fetch_and_quit(pg.port, [1]) == [MESSAGES[1]]
    assert len(copies(archive)) == 3  # the same bytes again: not archived twice


def utc(text: str) -> float:
    return calendar.timegm(time.strptime(text, "%Y-%m-%d %H:%M:%S"))


def test_list_filters_by_user_date_and_message_id(tmp_path, mailstore):
    archive = tmp_path / "archive"
    with start(tmp_path, mailstore.address, [archive_plugin(archive)]) as pg:
        fetch_and_quit(pg.port, [1, 2])
        fetch_and_quit(pg.port, [1], user="erin")
    by_content = {f.read_bytes(): f for f in copies(archive)}
    old = utc("2020-01-05 12:00:00")
    os.utime(by_content[MESSAGES[0]], (old, old))

    everything = cli("list", "--path", archive)
    assert everything.returncode == 0, everything.stderr
    lines = [line.split("\t") for line in everything.stdout.decode().splitlines()]
    assert len(lines) == 3
    first = lines[0]  # oldest first
    assert first[:2] == ["2020-01-05T12:00:00Z", "dave"]
    assert first[3:6] == ["<first@example.org>", "first", str(len(MESSAGES[0]))]
    assert Path(first[6]).read_bytes() == MESSAGES[0]
    assert ["Grüße – 8 bit", str(len(MESSAGES[1]))] == lines[1][4:6] or \
        ["Grüße – 8 bit", str(len(MESSAGES[1]))] == lines[2][4:6]

    def listed(*filters: str) -> list[str]:
        done = cli("list", "--path", archive, *filters)
        assert done.returncode in (0, 1), done.stderr
        return [line.split("\t")[3] for line in done.stdout.decode().splitlines()]

    assert listed("--user", "erin") == ["<erin-1@example.org>"]
    assert sorted(listed("--user", "dave")) == ["<first@example.org>", "<second@example.org>"]
    assert listed("--until", "2020-01-05") == ["<first@example.org>"]
    assert listed("--since", "2020-01-05", "--until", "2020-01-05T11:59:59") == []
    assert "<first@example.org>" not in listed("--since", "2020-01-06")
    assert len(listed("--since", "2020-01-06")) == 2
    assert listed("--message-id", "<second@example.org>") == ["<second@example.org>"]
    assert listed("--message-id", "second@example.org", "--user", "erin") == []


def test_restore_eml_and_the_exit_codes(tmp_path, mailstore):
    archive = tmp_path / "archive"
    with start(tmp_path, mailstore.address, [archive_plugin(archive)]) as pg:
        fetch_and_quit(pg.port, [1, 3])

    one = cli("restore", "--path", archive, "--message-id", "third@example.org", "--eml")
    assert (one.returncode, one.stdout) == (0, MESSAGES[2]), one.stderr

    several = cli("restore", "--path", archive, "--eml")
    assert several.returncode == 2 and b"2 messages match" in several.stderr
    nothing = cli("list", "--path", archive, "--user", "nobody-here")
    assert (nothing.returncode, nothing.stdout) == (1, b"")
    assert b"nothing matched" in nothing.stderr
    assert cli("restore", "--path", archive, "--user", "nobody-here", "--eml").returncode == 1
    assert cli("list", "--path", tmp_path / "no-archive").returncode == 2
    assert cli("list", "--path", archive, "--since", "yesterday").returncode == 2
    assert cli("restore", "--path", archive).returncode == 2  # neither --to nor --eml
    assert cli("list").returncode == 2  # no --path
    assert cli("restore", "--path", archive, "--to",
               tmp_path / "missing" / "Maildir").returncode == 2


@pytest.mark.parametrize("options, expected", [
    ({"path": None}, "option path is required"),
    ({"path": "/nonexistent-parent/archive"}, "its parent directory '/nonexistent-parent'"),
    ({"path": "relative/archive"}, "must be absolute"),
    ({"days": 0}, "option days must be positive"),
    ({"days": "30"}, "option days must be an integer"),
    ({"keep": 3}, "unknown option keep"),
])
def test_a_bad_option_stops_start_up_with_exit_2(tmp_path, mailstore, options, expected):
    plugin = archive_plugin(tmp_path / "archive")
    plugin.update(options)
    plugin = {k: v for k, v in plugin.items() if v is not None}
    with pytest.raises(PopgateError) as failure:
        start(tmp_path, mailstore.address, [plugin])
    text = str(failure.value)
    assert "exited with 2 before listening" in text, text
    assert expected in text, text
    assert not (Path("/nonexistent-parent")).exists()
