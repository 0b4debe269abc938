"""The bayes plugin without a server: trained on one generated corpus it tells the spam
and ham of another apart; the tokenizer reads decoded MIME text, not base64 or
attachments; `forget` undoes `train`; an untrained database leaves mail untouched and
says so once; the command line's output and exit codes on Maildir, mbox and .eml input;
`python3 -m popgate check`; option errors; concurrent scoring while training."""

from __future__ import annotations

import base64
import logging
import os
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "support"))

from pgtest import bayes_corpus as bc  # noqa: E402

from popgate.plugins import bayes  # noqa: E402
from popgate.plugins.bayes import _store, _tokens  # noqa: E402
from popgate.testing import check  # noqa: E402

TRAIN = bc.corpus(bc.TRAIN_SEED, spam=60, ham=60, name="train")
TEST = bc.corpus(bc.TEST_SEED, spam=40, ham=40, name="test")


@pytest.fixture
def run(python_dir: Path):
    def run(*args: object, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        env = dict(os.environ, PYTHONPATH=str(python_dir))
        return subprocess.run(["/usr/bin/python3", "-m", *map(str, args)], input=stdin,
                              capture_output=True, env=env, timeout=120)

    return run


def bayes_cli(run, *args: object) -> subprocess.CompletedProcess[bytes]:
    return run("popgate.plugins.bayes", *args)


def train_store(db: Path, spam: list[bytes], ham: list[bytes]) -> _store.Store:
    store = _store.Store(db)
    store.create()
    store.train(((raw, _tokens.tokens(raw)) for raw in spam), _store.SPAM)
    store.train(((raw, _tokens.tokens(raw)) for raw in ham), _store.HAM)
    return store


@pytest.fixture(scope="module")
def trained_db(tmp_path_factory) -> Path:
    db = tmp_path_factory.mktemp("bayes") / "bayes.sqlite"
    train_store(db, TRAIN.spam, TRAIN.ham)
    return db


def plugin(db: Path, **options: object) -> bayes.Bayes:
    instance = bayes.Bayes()
    instance.configure({"db": str(db), **options})
    return instance


def tag(result) -> str | None:
    values = [value for name, value in result.message.headers if name == bayes.HEADER]
    assert len(values) <= 1
    return values[0] if values else None


# -- what it learnt -------------------------------------------------------------------

def test_the_corpora_are_disjoint_and_deterministic():
    assert not set(TRAIN.spam + TRAIN.ham) & set(TEST.spam + TEST.ham)
    assert bc.corpus(bc.TEST_SEED, spam=40, ham=40, name="test") == TEST
    shapes = b"".join(TRAIN.spam + TRAIN.ham)
    for shape in (b"base64", b"quoted-printable", b"multipart/alternative",
                  b"multipart/mixed", b"text/html"):
        assert shape in shapes


def test_trained_on_one_corpus_it_tells_the_other_apart(trained_db):
    filter_ = plugin(trained_db)
    verdicts = {"spam": [], "ham": []}
    for kind, messages in (("spam", TEST.spam), ("ham", TEST.ham)):
        for raw in messages:
            result = check(filter_, raw)
            assert result.verdict == "pass"
            value = tag(result)
            assert value is not None
            verdicts[kind].append(value.split(";")[0])
    right = verdicts["spam"].count("spam") + verdicts["ham"].count("ham")
    assert right >= 0.95 * (len(TEST.spam) + len(TEST.ham)), verdicts
    assert "spam" not in verdicts["ham"]  # no ham lost to the spam folder


def test_the_tag_has_the_class_and_p_and_evidence_when_asked(trained_db):
    result = check(plugin(trained_db, evidence=True), TEST.spam[0])
    value = tag(result)
    assert value is not None
    kind, p = value.split("; p=")
    assert kind == "spam" and 0.9 <= float(p) <= 1.0 and len(p) == 5
    [evidence] = [v for n, v in result.added if n == bayes.EVIDENCE_HEADER]
    clues = evidence.split(", ")
    assert 1 <= len(clues) <= bayes.EVIDENCE_TOKENS
    probs = [float(clue.rsplit(" ", 1)[1]) for clue in clues]
    assert all(p > 0.5 for p in probs[:3])  # a spam's strongest clues say spam
    assert evidence.isascii() and "\n" not in evidence and len(evidence) < 900
    # Without the option there is none.
    assert [n for n, _ in check(plugin(trained_db), TEST.spam[0]).added] == [bayes.HEADER]


def test_a_forged_tag_from_the_sender_is_replaced(trained_db):
    forged = (b"X-Popgate-Bayes: ham; p=0.000\r\nX-Popgate-Bayes-Evidence: trust me\r\n" +
              TEST.spam[1])
    result = check(plugin(trained_db), forged)
    assert tag(result) is not None and tag(result).startswith("spam;")
    assert all(name != bayes.EVIDENCE_HEADER for name, _ in result.message.headers)


def test_a_top_preview_is_scored_on_what_it_has(trained_db):
    result = check(plugin(trained_db), TEST.ham[2], top=0)  # the header block only
    assert tag(result) is not None


# -- tokens ---------------------------------------------------------------------------

def test_base64_and_quoted_printable_text_is_tokenised_decoded():
    text = "Congratulations lottery winner, claim your jackpot prize today"
    raw = (b"From: Lucky <win@lucky-draw.xyz>\r\nSubject: =?utf-8?b?" +
           base64.b64encode("Grüße Gewinner".encode()) + b"?=\r\n"
           b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
           b"Content-Transfer-Encoding: base64\r\n\r\n" +
           base64.encodebytes(text.encode()).replace(b"\n", b"\r\n"))
    found = _tokens.tokens(raw)
    assert {"congratulations", "lottery", "winner", "jackpot", "prize", "today"} <= found
    assert {"subject:grüße", "subject:gewinner", "from:addr:lucky-draw.xyz",
            "from:addr:xyz", "from:lucky", "part:encoding:base64"} <= found
    encoded = base64.b64encode(text.encode()).decode().lower()
    assert not any(token in encoded for token in found if len(token) > 6)
    qp = (b"Subject: hi\r\nContent-Type: text/plain; charset=iso-8859-1\r\n"
          b"Content-Transfer-Encoding: quoted-printable\r\n\r\ncaf=E9 pharmacy disc=\r\nount\r\n")
    assert {"café", "pharmacy", "discount"} <= _tokens.tokens(qp)


def test_html_is_stripped_and_attachments_give_only_type_and_name():
    raw = (b"Subject: offer\r\nMIME-Version: 1.0\r\n"
           b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n'
           b"--b\r\nContent-Type: text/html\r\n\r\n"
           b"<html><style>.x { color: red }</style><p class=shiny>Cheap&nbsp;r&eacute;plica "
           b'<a href="http://shop.deals-online.biz/x">watches</a></p><!-- hidden --></html>\r\n'
           b"--b\r\nContent-Type: text/plain\r\nContent-Disposition: attachment; "
           b'filename="notes.txt"\r\n\r\nsecretword in the attachment\r\n'
           b'--b\r\nContent-Type: application/octet-stream; name="blob.bin"\r\n'
           b"Content-Transfer-Encoding: base64\r\n\r\n" +
           base64.encodebytes(b"hiddenword " * 50).replace(b"\n", b"\r\n") + b"--b--\r\n")
    found = _tokens.tokens(raw)
    assert {"cheap", "réplica", "watches", "part:html", "url:deals-online.biz",
            "url:shop.deals-online.biz"} <= found
    assert not {"style", "color", "red", "class", "shiny", "href", "hidden"} & found
    assert {"attachment:type:text/plain", "attachment:ext:txt", "attachment:name:notes",
            "attachment:type:application/octet-stream", "attachment:ext:bin"} <= found
    assert "secretword" not in found and "hiddenword" not in found
    assert "multipart:mixed" in found and "content-type:multipart/mixed" in found
    # A message that is one attachment and nothing else.
    whole = (b"Subject: scan\r\nContent-Type: application/pdf\r\n"
             b'Content-Disposition: attachment; filename="scan.pdf"\r\n'
             b"Content-Transfer-Encoding: base64\r\n\r\n" +
             base64.encodebytes(b"hiddenword " * 20).replace(b"\n", b"\r\n"))
    assert _tokens.tokens(whole) == {"subject:scan", "content-type:application/pdf",
                                     "attachment:type:application/pdf", "attachment:ext:pdf",
                                     "attachment:name:scan"}


def test_words_long_short_and_header_prefixes():
    raw = (b"From: \"Bob Baker\" <bob@mail.example.org>\r\nTo: dave@example.org\r\n"
           b"Received: from somewhere\r\nSubject: Free MONEY\r\n\r\n"
           b"ok an the " + b"x" * 45 + b" word.\r\n")
    found = _tokens.tokens(raw)
    assert {"subject:free", "subject:money", "from:bob", "from:baker", "from:addr:bob",
            "from:addr:mail.example.org", "from:addr:example.org", "to:addr:dave"} <= found
    assert "skip:x 40" in found and "word" in found and "the" in found
    assert not {"ok", "an"} & found
    assert not any(token.startswith("received:") for token in found)  # not a chosen field


def test_8bit_headers_and_mislabelled_charsets_are_read_as_text():
    raw = (b"From: J\xf6rg <j@example.org>\r\nSubject: sp\xe9cial\r\n"
           b" =?utf-8?q?gr=C3=BC?= =?utf-8?q?=C3=9Fe?=\r\n"
           b"Content-Type: text/plain; charset=utf-8\r\n\r\ncaf\xe9 \xe2\x82\xac\r\n")
    found = _tokens.tokens(raw)
    # latin-1 bytes in the header, and encoded words beside them, joined across the gap.
    assert {"from:jörg", "subject:spécial", "subject:grüße"} <= found
    assert "café" in found  # "utf-8" that isn't: read as latin-1, not dropped


def test_broken_mime_and_unknown_charsets_still_tokenise():
    raw = (b"Subject: x\r\nContent-Type: text/plain; charset=x-no-such-charset\r\n"
           b"Content-Transfer-Encoding: base64\r\n\r\n!!!not base64 at all===\r\n\xff\xfe\r\n")
    assert "content-type:charset:x-no-such-charset" in _tokens.tokens(raw)
    assert _tokens.tokens(b"") == frozenset()


# -- the store ------------------------------------------------------------------------

def table(db: Path) -> list[tuple[str, int, int]]:
    with sqlite3.connect(db) as conn:
        return sorted(conn.execute("SELECT token, spam, ham FROM tokens").fetchall())


def test_forget_undoes_train_and_training_twice_counts_once(tmp_path):
    db = tmp_path / "bayes.sqlite"
    store = train_store(db, TRAIN.spam[:20], TRAIN.ham[:20])
    before, totals = table(db), store.totals()
    pairs = [(raw, _tokens.tokens(raw)) for raw in TEST.spam[:5]]
    assert store.train(pairs, _store.SPAM).spam == 5
    assert store.train(pairs, _store.SPAM).unchanged == 5  # the same messages again
    assert store.totals().nspam == totals.nspam + 5
    assert table(db) != before
    assert store.train(pairs, _store.HAM, forget=True).unchanged == 5  # not trained as ham
    done = store.train(pairs, _store.SPAM, forget=True)
    assert (done.spam, done.unchanged) == (5, 0)
    assert table(db) == before
    after = store.totals()
    assert (after.nspam, after.nham) == (totals.nspam, totals.nham)
    assert after.generation > totals.generation


def test_training_a_message_as_the_other_class_moves_it(tmp_path):
    db = tmp_path / "bayes.sqlite"
    store = train_store(db, TRAIN.spam[:3], [])
    raw = TRAIN.spam[0]
    done = store.train([(raw, _tokens.tokens(raw))], _store.HAM)
    assert done.ham == 1
    totals = store.totals()
    assert (totals.nspam, totals.nham) == (2, 1)
    fresh = tmp_path / "fresh.sqlite"
    train_store(fresh, TRAIN.spam[1:3], [raw])
    assert table(db) == table(fresh)


def test_the_database_is_in_wal_mode(trained_db):
    with sqlite3.connect(trained_db) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_scoring_threads_and_a_training_thread_share_the_file(tmp_path):
    db = tmp_path / "bayes.sqlite"
    train_store(db, TRAIN.spam[:20], TRAIN.ham[:20])
    filter_ = plugin(db)
    errors: list[BaseException] = []
    tags: list[str | None] = []
    stop = threading.Event()

    def score() -> None:
        try:
            while not stop.is_set():
                for raw in TEST.spam[:3] + TEST.ham[:3]:
                    tags.append(tag(check(filter_, raw)))
        except BaseException as error:  # noqa: BLE001 - asserted below
            errors.append(error)

    threads = [threading.Thread(target=score) for _ in range(6)]
    for thread in threads:
        thread.start()
    try:
        # A second connection trains in small batches: many commits while scoring reads.
        trainer = _store.Store(db)
        trainer.train(((raw, _tokens.tokens(raw)) for raw in TRAIN.spam[20:]), _store.SPAM,
                      batch=2)
        trainer.train(((raw, _tokens.tokens(raw)) for raw in TRAIN.ham[20:]), _store.HAM,
                      batch=2)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert errors == []
    assert len(tags) >= 6 and None not in tags
    totals = trainer.totals()
    assert (totals.nspam, totals.nham) == (60, 60)
    # The cache followed the training: the counts now are those of the whole corpus.
    assert filter_.store.read(["casino"], filter_.cache)[1] == \
        _store.Store(db).read(["casino"])[1]


def test_a_database_made_anew_is_opened_anew_and_a_missing_one_raises(tmp_path):
    db = tmp_path / "bayes.sqlite"
    train_store(db, TRAIN.spam[:10], TRAIN.ham[:10])
    filter_ = plugin(db)
    assert tag(check(filter_, TEST.spam[0])) is not None
    # Started over while the plugin runs (removed with its -wal and -shm, then trained
    # anew with the classes swapped): the same totals and generation, another database.
    for suffix in ("", "-wal", "-shm"):
        Path(str(db) + suffix).unlink(missing_ok=True)
    train_store(db, TRAIN.ham[:10], TRAIN.spam[:10])
    value = tag(check(filter_, TEST.spam[0]))
    assert value is not None and value.startswith("ham;")
    db.unlink()
    with pytest.raises(_store.StoreError, match="no such database"):
        check(filter_, TEST.spam[0])  # the hook raises: on_error decides


# -- untrained -------------------------------------------------------------------------

def test_an_untrained_database_passes_mail_untouched_and_says_so_once(tmp_path, caplog):
    db = tmp_path / "bayes.sqlite"
    caplog.set_level(logging.INFO, logger="popgate.plugins.bayes")
    filter_ = plugin(db, min_messages=5)  # made empty: train can fill it later
    assert db.is_file()
    for raw in TEST.spam[:3] + TEST.ham[:3]:
        result = check(filter_, raw)
        assert (result.verdict, result.added, result.changed, result.removed) == \
            ("pass", [], [], [])
        assert result.message.raw == raw
    lines = [r.getMessage() for r in caplog.records if r.name == "popgate.plugins.bayes"]
    assert len(lines) == 1, lines
    assert "not trained enough (0 spam, 0 ham; it needs 5 of each)" in lines[0]
    assert str(db) in lines[0] and caplog.records[0].levelno == logging.WARNING

    # Trained meanwhile (no reload): one line says so, and mail is tagged from then on.
    train_store(db, TRAIN.spam[:5], TRAIN.ham[:4])
    assert check(filter_, TEST.spam[0]).added == []  # 4 ham: still not enough
    train_store(db, [], TRAIN.ham[4:5])
    assert tag(check(filter_, TEST.spam[0])) is not None
    assert tag(check(filter_, TEST.ham[0])) is not None
    lines = [r.getMessage() for r in caplog.records if r.name == "popgate.plugins.bayes"]
    assert len(lines) == 2, lines
    assert "5 spam and 5 ham trained: tagging mail" in lines[1]


# -- python3 -m popgate check -----------------------------------------------------------

def test_popgate_check_on_eml_files_prints_the_field(run, trained_db, tmp_path):
    spam, ham = bc.write_eml(tmp_path / "eml", [TEST.spam[3], TEST.ham[3]])
    for path, kind in ((spam, "spam"), (ham, "ham")):
        done = run("popgate", "check", "python:popgate.plugins.bayes", path,
                   "--option", f"db={trained_db}")
        assert done.returncode == 0, done.stderr
        lines = done.stdout.decode().splitlines()
        assert lines[0] == "pass" and len(lines) == 2
        assert lines[1].startswith(f"+ X-Popgate-Bayes: {kind}; p=")
    done = run("popgate", "check", "python:popgate.plugins.bayes", spam,
               "--option", f"db={trained_db}", "--option", "evidence=true",
               "--option", "spam_cutoff=1.0", "--option", "ham_cutoff=0.0")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.decode().splitlines()
    assert lines[1].startswith("+ X-Popgate-Bayes: ")
    assert "unsure" in lines[1] or "spam; p=1.000" in lines[1]
    assert lines[2].startswith("+ X-Popgate-Bayes-Evidence: '")


def test_popgate_check_with_an_untrained_database_prints_pass_alone(run, tmp_path):
    eml = bc.write_eml(tmp_path / "eml", TEST.spam[:1])[0]
    done = run("popgate", "check", "python:popgate.plugins.bayes", eml,
               "--option", f"db={tmp_path / 'new.sqlite'}")
    assert (done.returncode, done.stdout) == (0, b"pass\n"), done.stderr
    assert (tmp_path / "new.sqlite").is_file()


@pytest.mark.parametrize("options, expected", [
    ([], "option db is required"),
    (["db=relative.sqlite"], "option db must be an absolute path"),
    (["db=/nonexistent-dir/bayes.sqlite"], "its directory '/nonexistent-dir' does not exist"),
    (["db={tmp}"], "is not a file"),
    (["db={db}", "spam_cutoff=1.5"], "option spam_cutoff must be between 0 and 1"),
    (["db={db}", "ham_cutoff=\"low\""], "option ham_cutoff must be a number"),
    (["db={db}", "ham_cutoff=0.95"], "ham_cutoff (0.95) must not be above spam_cutoff"),
    (["db={db}", "evidence=1"], "option evidence must be true or false"),
    (["db={db}", "min_messages=0"], "option min_messages must be a positive integer"),
    (["db={db}", "cutoff=0.5"], "unknown option cutoff"),
    (["db={garbage}"], "bayes: option db:"),
])
def test_a_bad_option_exits_2_naming_it(run, tmp_path, options, expected):
    garbage = tmp_path / "garbage.sqlite"
    garbage.write_bytes(b"this is not an sqlite database, not at all" * 100)
    eml = bc.write_eml(tmp_path / "eml", TEST.ham[:1])[0]
    args = []
    for option in options:
        args += ["--option", option.format(tmp=tmp_path, db=tmp_path / "b.sqlite",
                                           garbage=garbage)]
    done = run("popgate", "check", "python:popgate.plugins.bayes", eml, *args)
    assert done.returncode == 2, done.stdout
    assert expected.encode() in done.stderr, done.stderr
    assert not Path("/nonexistent-dir").exists()


# -- the command line -------------------------------------------------------------------

def test_train_reads_maildir_mbox_and_eml_and_reports(run, tmp_path):
    spam_maildir = bc.write_maildir(tmp_path / "Spam", TRAIN.spam[:30])
    spam_mbox = bc.write_mbox(tmp_path / "spam.mbox", TRAIN.spam[30:])
    ham_eml = tmp_path / "ham"
    bc.write_eml(ham_eml / "a", TRAIN.ham[:30])
    one_eml = bc.write_eml(tmp_path / "one", TRAIN.ham[30:31])[0]
    ham_mbox = bc.write_mbox(tmp_path / "ham.mbox", TRAIN.ham[31:])
    db = tmp_path / "bayes.sqlite"
    done = bayes_cli(run, "train", "--db", db, "--spam", spam_maildir, spam_mbox,
                     "--ham", ham_eml, one_eml, "--ham", ham_mbox)
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode() == (f"trained 60 spam and 60 ham, 0 unchanged; {db} has "
                                    "60 spam and 60 ham\n")
    # The same messages from other files (mbox has LF line ends): nothing changes.
    again = bayes_cli(run, "train", "--db", db, "--spam", spam_mbox)
    assert again.returncode == 0, again.stderr
    assert again.stdout.decode().startswith("trained 0 spam and 0 ham, 30 unchanged;")
    stats = bayes_cli(run, "stats", "--db", db)
    assert stats.returncode == 0, stats.stderr
    lines = stats.stdout.decode().splitlines()
    assert lines[:2] == ["spam\t60", "ham\t60"] and int(lines[2].split("\t")[1]) > 200
    # What the CLI trained is what the Store would have.
    fresh = tmp_path / "fresh.sqlite"
    train_store(fresh, TRAIN.spam, TRAIN.ham)
    assert table(db) == table(fresh)


def test_score_prints_the_class_and_p_with_documented_exit_codes(run, trained_db, tmp_path):
    spam, ham = bc.write_eml(tmp_path / "eml", [TEST.spam[5], TEST.ham[5]])
    done = bayes_cli(run, "score", "--db", trained_db, spam)
    assert (done.returncode, done.stdout[:9]) == (1, b"spam; p=1"), done.stderr
    done = bayes_cli(run, "score", "--db", trained_db, ham)
    assert (done.returncode, done.stdout[:8]) == (0, b"ham; p=0"), done.stderr
    assert len(done.stdout.decode().strip()) == len("ham; p=0.000")
    # Standard input; evidence lines after the first.
    done = run("popgate.plugins.bayes", "score", "--db", trained_db, "--evidence", "-",
               stdin=TEST.spam[5])
    assert done.returncode == 1, done.stderr
    first, *clues = done.stdout.decode().splitlines()
    assert first.startswith("spam; p=") and clues
    prob, token = clues[0].split("\t")
    assert float(prob) > 0.9 and token
    # No known token: p = 0.5, unsure (3).
    unknown = tmp_path / "unknown.eml"
    unknown.write_bytes(b"Subject: zzqx\r\n\r\nqwertyuiop asdfghjkl zxcvbnm\r\n")
    done = bayes_cli(run, "score", "--db", trained_db, unknown)
    assert (done.returncode, done.stdout) == (3, b"unsure; p=0.500\n"), done.stderr
    # The cutoffs move the band.
    done = bayes_cli(run, "score", "--db", trained_db, "--spam-cutoff", "0.5", unknown)
    assert (done.returncode, done.stdout) == (1, b"spam; p=0.500\n")
    # Not trained enough (4).
    done = bayes_cli(run, "score", "--db", trained_db, "--min-messages", "61", ham)
    assert done.returncode == 4
    assert done.stdout.startswith(b"untrained: ") and b"60 spam, 60 ham" in done.stdout


def test_forget_through_the_command_line(run, tmp_path):
    db = tmp_path / "bayes.sqlite"
    spam = bc.write_maildir(tmp_path / "spam", TRAIN.spam[:12])
    ham = bc.write_mbox(tmp_path / "ham.mbox", TRAIN.ham[:12])
    assert bayes_cli(run, "train", "--db", db, "--spam", spam, "--ham", ham).returncode == 0
    before = table(db)
    extra = bc.write_eml(tmp_path / "extra", TRAIN.spam[12:15])
    assert bayes_cli(run, "train", "--db", db, "--spam", *extra).returncode == 0
    done = bayes_cli(run, "forget", "--db", db, "--spam", tmp_path / "extra",
                     "--ham", extra[0])
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode() == (f"forgot 3 spam and 0 ham, 1 unchanged; {db} has "
                                    "12 spam and 12 ham\n")
    assert table(db) == before


@pytest.mark.parametrize("args, expected", [
    ([], b"the following arguments are required: command"),
    (["train"], b"the following arguments are required: --db"),
    (["train", "--db", "{db}"], b"give --spam PATH... or --ham PATH..."),
    (["train", "--db", "{db}", "--spam", "{tmp}/missing"], b"missing: no such file"),
    (["train", "--db", "{tmp}/no-dir/b.sqlite", "--spam", "{eml}"],
     b"its directory does not exist"),
    (["forget", "--db", "{tmp}/none.sqlite", "--spam", "{eml}"], b"no such database"),
    (["score", "--db", "{tmp}/none.sqlite", "{eml}"], b"no such database"),
    (["score", "--db", "{db}", "{tmp}/missing.eml"], b"missing.eml: no such file"),
    (["score", "--db", "{db}", "--spam-cutoff", "2", "{eml}"], b"not a number from 0 to 1"),
    (["score", "--db", "{db}", "--ham-cutoff", "0.95", "{eml}"],
     b"--ham-cutoff must not be above --spam-cutoff"),
    (["score", "--db", "{db}"], b"the following arguments are required: file"),
    (["score", "--db", "{garbage}", "{eml}"], b"bayes: "),
    (["stats", "--db", "{tmp}/none.sqlite"], b"no such database"),
    (["classify", "--db", "{db}"], b"invalid choice"),
])
def test_usage_errors_exit_2(run, tmp_path, trained_db, args, expected):
    eml = bc.write_eml(tmp_path / "eml", TEST.ham[:1])[0]
    garbage = tmp_path / "garbage.sqlite"
    garbage.write_bytes(b"not a database " * 200)
    values = {"db": trained_db, "tmp": tmp_path, "eml": eml, "garbage": garbage}
    done = bayes_cli(run, *(arg.format(**values) for arg in args))
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert expected in done.stderr, done.stderr
    assert not (tmp_path / "no-dir").exists() and not (tmp_path / "none.sqlite").exists()


# -- typing ---------------------------------------------------------------------------
