"""What every shipped plugin's configure does first."""

from __future__ import annotations

from collections.abc import Mapping, Sequence


def check_known(plugin: str, options: Mapping[str, object], known: Sequence[str]) -> None:
    """Refuses an option `plugin` does not have: a misspelt key would otherwise be
    ignored and its default used without a word (popgate then exits 2 naming it)."""
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ValueError(f"{plugin}: unknown option {', '.join(unknown)} "
                         f"(expected {', '.join(known)})")
