"""Assertion helpers that say where two byte strings part."""

from __future__ import annotations


def first_difference(a: bytes, b: bytes, context: int = 60) -> str:
    n = next((i for i in range(min(len(a), len(b))) if a[i] != b[i]), min(len(a), len(b)))
    return (f"lengths {len(a)} and {len(b)}, first difference at offset {n}: "
            f"{a[max(0, n - context):n + context]!r} vs {b[max(0, n - context):n + context]!r}")


def assert_same_messages(got: list[bytes], expected: list[bytes], names: list[str], what: str) -> None:
    assert len(got) == len(expected), f"{what}: {len(got)} messages, expected {len(expected)}"
    bad = [f"message {i + 1} ({names[i]}): {first_difference(g, e, 40)}"
           for i, (g, e) in enumerate(zip(got, expected)) if g != e]
    assert not bad, f"{what}:\n" + "\n".join(bad)


def assert_same_bytes(got: bytes, expected: bytes, what: str = "bytes differ") -> None:
    """Like `assert got == expected`, but reports only where they part (pytest
    would diff megabytes of both)."""
    if got != expected:
        raise AssertionError(f"{what}: {first_difference(got, expected)}")
