"""Adds one header, ``X-Popgate-Python: yes``, to every message: the Python twin of
tests/so_plugin's C++ plugin (``X-Popgate-Example``), for comparing their costs.

Headers only (the body streams past it). Option: ``value`` (str, default ``"yes"``).
"""

from __future__ import annotations

from typing import Any

import popgate


class AddHeader(popgate.Plugin):
    needs = popgate.HEADERS

    def configure(self, options: dict[str, Any]) -> None:
        value = options.get("value", "yes")
        if not isinstance(value, str):
            raise ValueError("value: expected a string")
        self.value = value

    def message(self, session: popgate.Session, msg: popgate.Message) -> None:
        msg.headers.add("X-Popgate-Python", getattr(self, "value", "yes"))
