"""Blocks ``seconds`` (an int or float option, default 1) in a plain message hook with
time.sleep, then passes the message with ``X-Popgate-Slept: SECONDS``: for testing that a
blocking hook holds up only the message it has, and the hook timeout.
"""

from __future__ import annotations

import time
from typing import Any

import popgate


class SyncSleep(popgate.Plugin):

    def configure(self, options: dict[str, Any]) -> None:
        seconds = options.get("seconds", 1)
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or seconds < 0:
            raise ValueError("seconds: expected a number >= 0")
        self.seconds = float(seconds)

    def message(self, session: popgate.Session, msg: popgate.Message) -> None:
        time.sleep(self.seconds)
        msg.headers.add("X-Popgate-Slept", f"{self.seconds:g}")
