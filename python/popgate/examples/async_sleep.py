"""Waits ``seconds`` (an int or float option, default 1) in an ``async def`` message hook,
then passes the message with ``X-Popgate-Slept: SECONDS``: for testing timeouts and that
async hooks share one event loop without holding each other up.
"""

from __future__ import annotations

import asyncio
from typing import Any

import popgate


class AsyncSleep(popgate.Plugin):

    def configure(self, options: dict[str, Any]) -> None:
        seconds = options.get("seconds", 1)
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or seconds < 0:
            raise ValueError("seconds: expected a number >= 0")
        self.seconds = float(seconds)

    async def message(self, session: popgate.Session, msg: popgate.Message) -> None:
        await asyncio.sleep(self.seconds)
        msg.headers.add("X-Popgate-Slept", f"{self.seconds:g}")
