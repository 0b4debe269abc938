"""The few poplib steps every integration test takes."""

from __future__ import annotations

import poplib


def login(port: int, user: str = "dave", password: str = "pw",
          timeout: float = 30.0) -> poplib.POP3:
    """A poplib session on 127.0.0.1:port, logged in with USER/PASS."""
    p = poplib.POP3("127.0.0.1", port, timeout=timeout)
    p.user(user)
    p.pass_(password)
    return p


def retr(p: poplib.POP3, number: int) -> bytes:
    """Message `number` as the server has it: poplib's lines (un-stuffed) with CRLF."""
    return b"\r\n".join(p.retr(number)[1]) + b"\r\n"
