#!/usr/bin/python3
"""The built-in demo: a private Dovecot with a sample mailbox, a private SpamAssassin
spamd, popgate in front of Dovecot with the spam_tag plugin and two Python plugins (the
example python/popgate/examples/tag_lottery.py and the shipped attachment_guard), and curl
fetching every message through popgate, showing each message's headers as the plugins
tagged them, the part attachment_guard put in place of a program, and where the original
went in the quarantine.

Everything runs on 127.0.0.1 on ports picked at run time and is stopped at the end.
"""

import base64
import email
import email.policy
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "support"))

from pgtest.dovecot import Dovecot  # noqa: E402
from pgtest.popgate import Popgate  # noqa: E402
from pgtest.spamd import Spamd  # noqa: E402

USER, PASSWORD = "demo", "demo-password"

SAMPLE = [
    b"From: Alice <alice@example.org>\r\nTo: demo@example.org\r\n"
    b"Subject: Lunch on Friday?\r\nMessage-ID: <lunch@example.org>\r\n\r\n"
    b"Shall we try the new place on the corner?\r\n",
    b"From: Lottery Office <winner@example.net>\r\nTo: demo@example.org\r\n"
    b"Subject: You have WON the lottery\r\nMessage-ID: <lottery@example.net>\r\n\r\n"
    b"Send us your bank details to claim your prize.\r\n"
    b"XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X\r\n",
    b"From: Build Bot <ci@example.com>\r\nTo: demo@example.org\r\n"
    b"Subject: Build 1234 passed\r\nMessage-ID: <build1234@example.com>\r\n\r\n"
    b"All 312 tests passed.\r\n..a line that begins with a dot\r\n",
    b"From: Accounts <billing@example.net>\r\nTo: demo@example.org\r\n"
    b"Subject: Your invoice\r\nMessage-ID: <invoice@example.net>\r\nMIME-Version: 1.0\r\n"
    b"Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n--b1\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n\r\nPlease find the invoice attached.\r\n"
    b"--b1\r\nContent-Type: application/pdf; name=\"invoice.pdf\"\r\n"
    b"Content-Disposition: attachment; filename=\"invoice.pdf\"\r\n"
    b"Content-Transfer-Encoding: base64\r\n\r\n" +
    base64.encodebytes(b"MZ\x90\x00\x03" + bytes(200)).replace(b"\n", b"\r\n") +
    b"--b1--\r\n",
]


def headers_of(message: bytes) -> str:
    head = message.split(b"\r\n\r\n", 1)[0]
    return head.decode("utf-8", "replace")


def parts_of(message: bytes) -> str:
    parsed = email.message_from_bytes(message, policy=email.policy.default)
    if not parsed.is_multipart():
        return ""
    lines = []
    for part in parsed.walk():
        if part.is_multipart():
            continue
        lines.append(f"  part {part.get_content_type()}"
                     + (f" ({part.get_filename()})" if part.get_filename() else "") + ":")
        if part.get_content_maintype() == "text":
            lines += ["    " + line for line in part.get_content().splitlines()]
    return "\n".join(lines)


def main() -> int:
    binary = Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "build" / "popgate"
    with Spamd() as spamd, Dovecot(users={USER: PASSWORD}) as dovecot:
        dovecot.populate(USER, SAMPLE)
        print(f"Dovecot: 127.0.0.1:{dovecot.port} (user {USER}, {len(SAMPLE)} messages)")
        print(f"spamd:   {spamd.address}")
        config = Path(dovecot.dir) / "popgate.toml"
        config.write_text(
            f'[upstream]\naddress = "127.0.0.1:{dovecot.port}"\n\n'
            f'[[listen]]\naddress = "127.0.0.1:0"\n\n'
            f'[[plugin]]\nuse = "spam_tag"\nspamd = "{spamd.address}"\n'
            f'subject_prefix = "[SPAM] "\non_error = "pass"\n\n'
            f'[[plugin]]\nuse = "{REPO / "python" / "popgate" / "examples" / "tag_lottery.py"}"\n'
            f'words = ["lottery", "prize"]\n\n'
            f'[[plugin]]\nuse = "python:popgate.plugins.attachment_guard"\n'
            f'on_error = "tempfail"\n\n'
            f'[quarantine]\npath = "{Path(dovecot.dir) / "quarantine"}"\n')
        print(f"popgate config ({config}):\n{config.read_text()}")
        with Popgate.start(["-c", str(config)], binary=binary) as proxy:
            print(f"popgate: 127.0.0.1:{proxy.port} -> 127.0.0.1:{dovecot.port}\n")
            for n in range(1, len(SAMPLE) + 1):
                url = f"pop3://127.0.0.1:{proxy.port}/{n}"
                print(f"$ curl -s {url} -u {USER}:***")
                fetched = subprocess.run(["curl", "-s", "--max-time", "60", url, "-u",
                                          f"{USER}:{PASSWORD}"],
                                         check=True, capture_output=True).stdout
                print(headers_of(fetched))
                if parts := parts_of(fetched):
                    print(parts)
                print()
        print("popgate's log:")
        print(proxy.log)
        for quarantined in re.findall(r"original quarantined as (\S+)", proxy.log):
            stored = Path(dovecot.dir) / "quarantine" / "new" / quarantined
            print(f"The original, as the server has it, is in {stored} "
                  f"({stored.stat().st_size} bytes).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
