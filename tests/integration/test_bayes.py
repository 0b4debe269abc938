"""The bayes plugin (python:popgate.plugins.bayes) end to end: a real Dovecot, popgate,
poplib as the client, and the plugin's own `train` command on a generated corpus
(pgtest.bayes_corpus).

What must hold: with a database trained on one corpus, the spam of another is tagged
spam and its ham ham, in RETR and TOP, and nothing else of the message changes; two
sessions scoring while two `train` processes write the same database all succeed (no
"database is locked", every message tagged); SIGHUP (a new plugin instance) goes on
scoring; an untrained database passes mail byte for byte with one log line; a bad
option stops start-up with exit status 2.
"""

from __future__ import annotations

import os
import poplib
import re
import signal
import subprocess
import threading
from pathlib import Path

import pytest

from pgtest import bayes_corpus as bc
from pgtest import pop3
from pgtest.config import start_popgate
from pgtest.dovecot import Dovecot
from pgtest.popgate import REPO, Popgate, PopgateError

poplib._MAXLINE = 1 << 20

PYTHON_DIR = os.environ.get("POPGATE_PYTHONPATH") or str(REPO / "build" / "python")
USERS = {"dave": "pw", "erin": "pw2"}
TRAIN = bc.corpus(bc.TRAIN_SEED, spam=60, ham=60, name="train")
TEST = bc.corpus(bc.TEST_SEED, spam=10, ham=10, name="test")
# dave's mailbox: spam and ham taking turns, so message n is spam when n is odd.
MAILBOX = [m for pair in zip(TEST.spam, TEST.ham) for m in pair]
TAG = re.compile(rb"^X-Popgate-Bayes: (spam|ham|unsure); p=(\d\.\d{3})$")


def cli(*args: object, wait: bool = True):
    env = dict(os.environ, PYTHONPATH=PYTHON_DIR)
    argv = ["/usr/bin/python3", "-m", "popgate.plugins.bayes", *map(str, args)]
    if not wait:
        return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    return subprocess.run(argv, capture_output=True, env=env, timeout=120)


@pytest.fixture(scope="module")
def dovecot():
    with Dovecot(users=USERS) as dc:
        yield dc


@pytest.fixture()
def mailstore(dovecot):
    dovecot.reset("dave", MAILBOX)
    dovecot.reset("erin", MAILBOX[:6])
    return dovecot


@pytest.fixture(scope="module")
def trained_db(tmp_path_factory) -> Path:
    where = tmp_path_factory.mktemp("bayes")
    spam = bc.write_maildir(where / "Spam", TRAIN.spam)
    ham = bc.write_mbox(where / "ham.mbox", TRAIN.ham)
    db = where / "bayes.sqlite"
    done = cli("train", "--db", db, "--spam", spam, "--ham", ham)
    assert done.returncode == 0, done.stderr
    return db


def start(tmp_path: Path, upstream: str, options: dict) -> Popgate:
    plugin = {"use": "python:popgate.plugins.bayes", **options}
    return start_popgate(tmp_path, upstream, [plugin], args=["--log-level", "debug"])


def login(port: int, user: str = "dave") -> poplib.POP3:
    return pop3.login(port, user, USERS[user])


def retr(p: poplib.POP3, number: int) -> list[bytes]:
    return p.retr(number)[1]


def tags(lines: list[bytes]) -> list[tuple[str, float]]:
    header = lines[:lines.index(b"")]
    return [(m.group(1).decode(), float(m.group(2))) for m in map(TAG.match, header) if m]


def field(lines: list[bytes], name: bytes) -> bytes:
    """One field's value, unfolded (RFC 5322 2.2.3)."""
    header = lines[:lines.index(b"")]
    for i, line in enumerate(header):
        if line.lower().startswith(name.lower() + b":"):
            value = line[len(name) + 1:]
            for more in header[i + 1:]:
                if not more[:1].isspace():
                    break
                value += more
            return value.strip()
    raise AssertionError(f"no {name!r} field")


def without_tag(lines: list[bytes]) -> bytes:
    return b"\r\n".join(line for line in lines
                        if not line.startswith(b"X-Popgate-Bayes")) + b"\r\n"


def no_lock_trouble(log: str) -> None:
    assert "database is locked" not in log and "raised in message" not in log, log[-4000:]


def test_trained_spam_is_tagged_spam_and_ham_ham(tmp_path, mailstore, trained_db):
    with start(tmp_path, mailstore.address, {"db": trained_db}) as pg:
        p = login(pg.port)
        for number, original in enumerate(MAILBOX, 1):
            lines = retr(p, number)
            [(kind, prob)] = tags(lines)
            assert kind == ("spam" if number % 2 else "ham"), (number, kind, prob)
            assert (prob >= 0.9) if kind == "spam" else (prob < 0.2)
            assert without_tag(lines) == original  # nothing else changed
        # TOP: scored on what it has, tagged the same way here.
        assert tags(p.top(1, 0)[1])[0][0] == "spam"
        assert tags(p.top(2, 3)[1])[0][0] == "ham"
        p.quit()
        no_lock_trouble(pg.log)
        assert re.search(r"60 spam and 60 ham trained: tagging mail", pg.log)


def test_evidence_and_the_unsure_band(tmp_path, mailstore, trained_db):
    # Every p is unsure between cutoffs 0 and 1 but 1.000 itself.
    options = {"db": trained_db, "evidence": True, "ham_cutoff": 0.0, "spam_cutoff": 1.0}
    with start(tmp_path, mailstore.address, options) as pg:
        p = login(pg.port)
        lines = retr(p, 2)
        p.quit()
    [(kind, prob)] = tags(lines)
    assert kind == "unsure" and prob < 0.2
    evidence = field(lines, b"X-Popgate-Bayes-Evidence")  # long: popgate folds it
    assert evidence.startswith(b"'") and len(evidence.split(b", ")) == 10


def test_two_sessions_score_while_train_runs_on_the_same_db(tmp_path, mailstore):
    where = tmp_path / "corpus"
    db = tmp_path / "bayes.sqlite"
    start_spam = bc.write_maildir(where / "s0", TRAIN.spam[:15])
    start_ham = bc.write_maildir(where / "h0", TRAIN.ham[:15])
    assert cli("train", "--db", db, "--spam", start_spam, "--ham", start_ham).returncode == 0
    more = bc.corpus(7, spam=250, ham=250, name="more")
    spam_more = bc.write_mbox(where / "spam.mbox", more.spam + TRAIN.spam[15:])
    ham_more = bc.write_maildir(where / "Ham", more.ham + TRAIN.ham[15:])
    results: dict[str, list] = {"dave": [], "erin": []}
    during = {"dave": 0, "erin": 0}  # rounds done while the trainers still ran
    errors: list[BaseException] = []
    stop = threading.Event()

    def session(user: str) -> None:
        count = len(MAILBOX) if user == "dave" else 6
        try:
            while not stop.is_set() or not results[user]:
                p = login(pg.port, user)
                results[user].append([tags(retr(p, n)) for n in range(1, count + 1)])
                p.quit()
                during[user] += not stop.is_set()
        except BaseException as error:  # noqa: BLE001 - asserted below
            errors.append(error)

    with start(tmp_path, mailstore.address, {"db": db}) as pg:
        clients = [threading.Thread(target=session, args=(user,)) for user in USERS]
        for client in clients:
            client.start()
        # Two writers too: they take turns at the write lock, each within its timeout.
        trainers = [cli("train", "--db", db, "--spam", spam_more, wait=False),
                    cli("train", "--db", db, "--ham", ham_more, wait=False)]
        outcomes = [trainer.communicate(timeout=90) for trainer in trainers]
        stop.set()
        for client in clients:
            client.join(60)
        # After the training (a round above may have begun before its last commit).
        p = login(pg.port)
        last = [tags(retr(p, n)) for n in range(1, len(MAILBOX) + 1)]
        p.quit()
        log = pg.log
    assert errors == []
    assert all(n >= 2 for n in during.values()), during  # they did overlap the training
    assert [t.returncode for t in trainers] == [0, 0], outcomes
    assert cli("stats", "--db", db).stdout.startswith(b"spam\t310\nham\t310\n")
    for user, rounds in results.items():
        assert rounds, user
        for round_ in rounds:
            assert all(len(found) == 1 for found in round_), (user, round_)  # every one tagged
    no_lock_trouble(log)
    # After the training, spam is still spam and ham ham.
    assert [found[0][0] for found in last] == ["spam", "ham"] * 10


def test_a_reload_goes_on_scoring(tmp_path, mailstore, trained_db):
    with start(tmp_path, mailstore.address, {"db": trained_db}) as pg:
        before = login(pg.port)
        assert tags(retr(before, 1))[0][0] == "spam"
        mark = len(pg.log)
        os.kill(pg.pid, signal.SIGHUP)
        pg.wait_for_log(r"python plugins reloaded: 1 of 1", start=mark)
        after = login(pg.port, "erin")
        assert tags(retr(after, 2))[0][0] == "ham"
        assert tags(retr(before, 3))[0][0] == "spam"  # the running session, old instance
        after.quit()
        before.quit()
        no_lock_trouble(pg.log)


def test_an_untrained_db_passes_mail_untouched_with_one_log_line(tmp_path, mailstore):
    db = tmp_path / "new.sqlite"  # missing: made empty, for train to fill
    with start(tmp_path, mailstore.address, {"db": db}) as pg:
        for user in ("dave", "erin"):
            p = login(pg.port, user)
            for number in range(1, 5):
                assert b"\r\n".join(retr(p, number)) + b"\r\n" == MAILBOX[number - 1]
            p.quit()
        log = pg.log
    said = re.findall(r".*not trained enough.*", log)
    assert len(said) == 1, said
    assert f"{db} is not trained enough (0 spam, 0 ham; it needs 10 of each)" in said[0]
    assert db.is_file()


def test_a_database_gone_meanwhile_follows_on_error(tmp_path, mailstore, trained_db):
    db = tmp_path / "bayes.sqlite"
    db.write_bytes(trained_db.read_bytes())  # a copy: this test removes it
    with start(tmp_path, mailstore.address, {"db": db, "on_error": "tempfail"}) as pg:
        p = login(pg.port)
        assert tags(retr(p, 1))[0][0] == "spam"
        db.unlink()
        with pytest.raises(poplib.error_proto, match=r"\[SYS/TEMP\]"):
            retr(p, 2)
        p.quit()
        pg.wait_for_log(r"python plugin python:popgate.plugins.bayes raised in message")
        assert "no such database" in pg.log
    mailstore.wait_until_idle("dave")
    assert mailstore.message_count("dave") == len(MAILBOX)


@pytest.mark.parametrize("options, expected", [
    ({}, "option db is required"),
    ({"db": "bayes.sqlite"}, "option db must be an absolute path"),
    ({"db": "/nonexistent-dir/bayes.sqlite"}, "its directory '/nonexistent-dir' does not exist"),
    ({"spam_cutoff": 2}, "option spam_cutoff must be between 0 and 1"),
    ({"ham_cutoff": 0.5, "spam_cutoff": 0.4}, "must not be above spam_cutoff"),
    ({"evidence": "yes"}, "option evidence must be true or false"),
    ({"threshold": 0.5}, "unknown option threshold"),
])
def test_a_bad_option_stops_start_up_with_exit_2(tmp_path, mailstore, options, expected):
    full = dict(options)
    if options and "db" not in options:  # a good db beside the bad option
        full["db"] = str(tmp_path / "bayes.sqlite")
    with pytest.raises(PopgateError) as failure:
        start(tmp_path, mailstore.address, full)
    text = str(failure.value)
    assert "exited with 2 before listening" in text, text
    assert expected in text, text
    assert not Path("/nonexistent-dir").exists()
