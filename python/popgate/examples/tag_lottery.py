"""Tags lottery mail, rejects what looks like a virus, and keeps an archive mailbox's mail
on the server (the example of DESIGN.md, "Python plugins: the contract").

Options: ``words`` (list of str, default ``["lottery"]``): a Subject containing any of them
(case-insensitively) gets ``X-Lottery: yes``.

    [[plugin]]
    use = "tag_lottery.py"
    words = ["lottery", "winner"]
"""

from __future__ import annotations

from typing import Any

import popgate


class TagLottery(popgate.Plugin):
    needs = popgate.HEADERS

    def configure(self, options: dict[str, Any]) -> None:
        words = options.get("words", ["lottery"])
        if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
            raise ValueError("words: expected a list of strings")
        self.words = [w.lower() for w in words]

    def command(self, session: popgate.Session,
                command: popgate.Command) -> popgate.Decision | None:
        if command.keyword == "DELE" and session.user == "archive":
            return popgate.deny("[SYS/PERM] this mailbox is kept on the server")
        return None

    def message(self, session: popgate.Session, msg: popgate.Message) -> popgate.Verdict | None:
        subject = (msg.headers.get("Subject") or "").lower()
        if any(w in subject for w in self.words):
            msg.headers.add("X-Lottery", "yes")
        if "virus" in subject:
            return popgate.reject("looks like a virus")
        return None
