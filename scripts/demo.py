#!/usr/bin/python3
"""The built-in demo: a private Dovecot with a sample mailbox, a private SpamAssassin
spamd, popgate in front of Dovecot with the spam_tag plugin and a Python plugin
(python/popgate/examples/tag_lottery.py), and curl fetching every message through popgate,
showing each message's headers as both plugins tagged them.

Everything runs on 127.0.0.1 on ports picked at run time and is stopped at the end.
"""

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
]


def headers_of(message: bytes) -> str:
    head = message.split(b"\r\n\r\n", 1)[0]
    return head.decode("utf-8", "replace")


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
            f'words = ["lottery", "prize"]\n')
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
                print()
        print("popgate's log:")
        print(proxy.log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
