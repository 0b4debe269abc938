"""A generated spam and ham corpus for the bayes plugin's tests: deterministic for a seed,
nothing downloaded.

    from pgtest import bayes_corpus as bc
    train = bc.corpus(bc.TRAIN_SEED, spam=60, ham=60, name="train")
    test = bc.corpus(bc.TEST_SEED, spam=40, ham=40, name="test")
    bc.write_maildir(tmp / "spam", train.spam); bc.write_mbox(tmp / "ham.mbox", train.ham)

Spam and ham each draw most of their words from a vocabulary of their own, mixed with
shared noise (words any mail has) and some words of the other class, so a filter must
weigh evidence rather than spot one word. Messages come in the shapes real mail has:
plain 7-bit, quoted-printable, base64 text (its words are only visible decoded),
multipart/alternative text and HTML, HTML only, and multipart/mixed with an attachment
(base64 bytes of no language). Two corpora of different seeds are different messages
(their Message-IDs carry the corpus's name), so training on one and scoring the other
measures what was learnt, not what was remembered. Line ends are CRLF, as on the wire.
"""

from __future__ import annotations

import base64
import quopri
import random
from dataclasses import dataclass
from pathlib import Path

TRAIN_SEED = 20240501
TEST_SEED = 20240917

SPAM_WORDS = """
viagra cialis pharmacy pills prescription discount cheap lowest price offer limited
exclusive winner lottery jackpot prize claim congratulations selected million dollars
cash bonus casino poker betting jackpots unsecured loan credit debt consolidation
mortgage refinance rates approved guaranteed risk-free investment bitcoin crypto profit
earnings income passive wealth rich millionaire secret formula weight loss diet burn
fat miracle enlargement replica watches rolex luxury designer handbags clearance
unsubscribe opt-out act now hurry expires urgent immediately bank account verify
password suspended confirm wire transfer beneficiary inheritance prince deposit fee
nigeria barrister unclaimed funds viagara meds rx online order shipping worldwide
satisfaction dating singles hot lonely adult webcam free trial click here
""".split()

HAM_WORDS = """
meeting agenda minutes schedule tuesday thursday quarterly review report draft
budget forecast spreadsheet project milestone deadline sprint backlog ticket
release deployment staging server database migration patch bugfix regression test
coverage pipeline build compiler kernel module repository branch merge commit
pull-request reviewer feedback design document architecture proposal roadmap team
lunch colleagues office conference room projector slides presentation workshop
seminar lecture thesis professor department faculty semester syllabus homework
invoice purchase contract vendor supplier warehouse inventory shipment logistics
customer support escalation incident postmortem outage monitoring latency
throughput benchmark profiling refactor library dependency documentation
onboarding holiday vacation dentist appointment birthday dinner weekend family
""".split()

NOISE_WORDS = """
the and for you with this that have from your will are not but all can our more
about what when there which their would been has one out time just also into some
than them only its over new other such after first well way even because any
these give day most here thanks hello regards best please let know see get make
like back good work people year could said each week message email today
information note update following attached below above again still need want
""".split()

SPAM_DOMAINS = ["deals-online.biz", "cheap-meds.ru", "win-big.top", "lucky-draw.xyz",
                "secure-verify.info", "rich-fast.club", "best-offer.work", "pharma24.cn"]
HAM_PEOPLE = [("Alice Archer", "alice@example.org"), ("Bob Baker", "bob@example.org"),
              ("Carol Chen", "carol@example.com"), ("Dan Doyle", "dan@lists.example.net"),
              ("Erin Evans", "erin@example.org"), ("Frank Fox", "frank@corp.example.com")]
MAILERS = {"spam": ["Microsoft Outlook Express 6.00.2600.0000", "The Bat! (v1.62r)"],
           "ham": ["Mozilla Thunderbird 115.4.1", "Mutt/2.2.9 (2022-11-12)",
                   "Evolution 3.46.4"]}

CRLF = "\r\n"


@dataclass(frozen=True)
class Corpus:
    spam: list[bytes]
    ham: list[bytes]


class _Writer:
    def __init__(self, rng: random.Random, kind: str) -> None:
        self.rng = rng
        self.kind = kind
        own, other = (SPAM_WORDS, HAM_WORDS) if kind == "spam" else (HAM_WORDS, SPAM_WORDS)
        self.own, self.other = own, other

    def word(self) -> str:
        roll = self.rng.random()
        if roll < 0.35:
            return self.rng.choice(self.own)
        if roll < 0.40:  # cross-talk: ham mentions a prize, spam a meeting
            return self.rng.choice(self.other)
        return self.rng.choice(NOISE_WORDS)

    def sentence(self) -> str:
        words = [self.word() for _ in range(self.rng.randint(6, 14))]
        return " ".join(words).capitalize() + self.rng.choice([".", ".", "!", "?"])

    def paragraphs(self, count: int) -> list[str]:
        return [" ".join(self.sentence() for _ in range(self.rng.randint(2, 5)))
                for _ in range(count)]

    def subject(self) -> str:
        words = [self.rng.choice(self.own)] + [self.word() for _ in range(self.rng.randint(2, 5))]
        self.rng.shuffle(words)
        text = " ".join(words)
        return text.upper() + "!!!" if self.kind == "spam" and self.rng.random() < 0.3 else \
            text.capitalize()

    def sender(self) -> tuple[str, str]:
        if self.kind == "ham":
            return self.rng.choice(HAM_PEOPLE)
        name = self.rng.choice(["Best Deals", "Customer Service", "Lottery Board",
                                "Dr. Pharma", "Account Team", "Lucky Winner"])
        local = self.rng.choice(["info", "promo", "noreply", "winner", "support"])
        return name, f"{local}{self.rng.randint(1, 999)}@{self.rng.choice(SPAM_DOMAINS)}"

    def link(self) -> str:
        host = (self.rng.choice(SPAM_DOMAINS) if self.kind == "spam"
                else self.rng.choice(["wiki.example.org", "git.example.com", "example.net"]))
        return f"https://{host}/{self.rng.choice(self.own)}?id={self.rng.randint(1, 99999)}"


def _wrap(text: str, width: int = 72) -> list[str]:
    lines, line = [], ""
    for word in text.split():
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    return lines + ([line] if line else [])


def _plain(paragraphs: list[str]) -> str:
    return CRLF.join(CRLF.join(_wrap(p)) + CRLF for p in paragraphs)


def _html(paragraphs: list[str], link: str) -> str:
    body = "".join(f"<p style=\"font-family:Arial\">{p}</p>\r\n" for p in paragraphs)
    return (f"<html><head><style>p {{ color: #333333; }}</style></head><body>\r\n{body}"
            f"<a href=\"{link}\">{link}</a></body></html>\r\n")


def _b64(data: bytes) -> str:
    encoded = base64.b64encode(data).decode()
    return CRLF.join(encoded[i:i + 76] for i in range(0, len(encoded), 76)) + CRLF


def _qp(text: str) -> str:
    return quopri.encodestring(text.encode()).decode().replace("\r\n", "\n").replace(
        "\n", CRLF)


def _text_part(content_type: str, text: str, encoding: str) -> list[str]:
    head = [f"Content-Type: {content_type}; charset=utf-8",
            f"Content-Transfer-Encoding: {encoding}", ""]
    if encoding == "base64":
        return head + [_b64(text.encode())]
    if encoding == "quoted-printable":
        return head + [_qp(text)]
    return head + [text]


def message(rng: random.Random, kind: str, number: int, name: str) -> bytes:
    """One spam or ham message: CRLF line ends."""
    w = _Writer(rng, kind)
    real_name, address = w.sender()
    paragraphs = w.paragraphs(rng.randint(2, 6))
    link = w.link()
    paragraphs[-1] += " " + link
    day = rng.randint(1, 28)
    headers = [f"From: {real_name} <{address}>",
               f"To: {rng.choice(['dave', 'erin', 'team'])}@example.org",
               f"Subject: {w.subject()}",
               f"Date: Tue, {day:02d} Nov 2023 {rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}"
               ":00 +0000",
               f"Message-ID: <{name}-{kind}-{number}@{address.split('@')[1]}>",
               f"X-Mailer: {rng.choice(MAILERS[kind])}",
               "MIME-Version: 1.0"]
    boundary = f"=_{name}_{kind}_{number}_{rng.randint(10**8, 10**9)}"
    shapes = ["plain", "qp", "base64", "alternative", "mixed"]
    shape = rng.choice(shapes + (["html"] if kind == "spam" else []))
    text = _plain(paragraphs)
    if shape in ("plain", "qp", "base64"):
        encoding = {"plain": "7bit", "qp": "quoted-printable", "base64": "base64"}[shape]
        body = _text_part("text/plain", text, encoding)
    elif shape == "html":
        body = _text_part("text/html", _html(paragraphs, link), "quoted-printable")
    elif shape == "alternative":
        headers.append(f'Content-Type: multipart/alternative; boundary="{boundary}"')
        body = ["This is a multi-part message in MIME format.", "", f"--{boundary}",
                *_text_part("text/plain", text, "quoted-printable"), f"--{boundary}",
                *_text_part("text/html", _html(paragraphs, link), "base64"),
                f"--{boundary}--", ""]
        return (CRLF.join(headers + [""] + body)).encode()
    else:
        filename, content_type = (("invoice_2023.zip", "application/zip") if kind == "spam"
                                  else ("quarterly-report.pdf", "application/pdf"))
        blob = bytes(rng.getrandbits(8) for _ in range(rng.randint(600, 3000)))
        headers.append(f'Content-Type: multipart/mixed; boundary="{boundary}"')
        body = ["", f"--{boundary}", *_text_part("text/plain", text, "7bit"),
                f"--{boundary}", f'Content-Type: {content_type}; name="{filename}"',
                "Content-Transfer-Encoding: base64",
                f'Content-Disposition: attachment; filename="{filename}"', "", _b64(blob),
                f"--{boundary}--", ""]
        return (CRLF.join(headers + body)).encode()
    headers.append(body[0])
    headers.append(body[1])
    return CRLF.join(headers + body[2:]).encode()


def corpus(seed: int, spam: int = 60, ham: int = 60, name: str = "train") -> Corpus:
    rng = random.Random(seed)
    return Corpus(spam=[message(rng, "spam", i, name) for i in range(spam)],
                  ham=[message(rng, "ham", i, name) for i in range(ham)])


# -- on disk, in the three forms `train` reads ------------------------------------------

def write_maildir(path: Path, messages: list[bytes]) -> Path:
    """A Maildir: messages in new/ (cur/ and tmp/ made, empty)."""
    for sub in ("tmp", "new", "cur"):
        (path / sub).mkdir(parents=True, exist_ok=True)
    for i, data in enumerate(messages):
        (path / "new" / f"{1_700_000_000 + i}.M{i}P1.corpus").write_bytes(data)
    return path


def write_mbox(path: Path, messages: list[bytes]) -> Path:
    """An mboxo file: LF line ends, a From_ line before each message, body lines that
    start with "From " quoted with '>'."""
    out = []
    for data in messages:
        out.append(b"From corpus@example.org Tue Nov 14 10:00:00 2023\n")
        for line in data.replace(b"\r\n", b"\n").split(b"\n"):
            out.append((b">" + line if line.startswith(b"From ") else line) + b"\n")
    path.write_bytes(b"".join(out))
    return path


def write_eml(directory: Path, messages: list[bytes]) -> list[Path]:
    """One NNN.eml file per message."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, data in enumerate(messages):
        paths.append(directory / f"{i:04d}.eml")
        paths[-1].write_bytes(data)
    return paths
