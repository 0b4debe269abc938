"""popgate config files for the tests: TOML values and [[plugin]] tables written from
Python values, and popgate started on such a file."""

from __future__ import annotations

import json
import os
import textwrap
from collections.abc import Iterable, Mapping
from pathlib import Path

from pgtest.popgate import Popgate


def toml_value(value: object) -> str:
    """A Python value as TOML: bool, int, float, str (escaped as TOML basic strings are,
    which JSON's escapes are a subset of), lists and tables of those."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{k} = {toml_value(v)}" for k, v in value.items()) + " }"
    return json.dumps(os.fspath(value) if isinstance(value, os.PathLike) else str(value))


def plugin_table(plugin: Mapping[str, object] | str) -> str:
    """A [[plugin]] table: from its keys, or its body as TOML text (dedented)."""
    if isinstance(plugin, str):
        body = textwrap.dedent(plugin)
        return "[[plugin]]\n" + body + ("" if body.endswith("\n") else "\n")
    return "[[plugin]]\n" + "".join(f"{k} = {toml_value(v)}\n" for k, v in plugin.items())


def write_config(tmp_path: Path, upstream: str,
                 plugins: Iterable[Mapping[str, object] | str] = (), extra: str = "") -> Path:
    """tmp_path/popgate.toml: `upstream`, a listener on a free loopback port, the plugins
    in order, then `extra` (more tables: [quarantine], [timeouts], ...)."""
    text = f'[upstream]\naddress = "{upstream}"\n[[listen]]\naddress = "127.0.0.1:0"\n'
    text += "".join(plugin_table(p) for p in plugins) + extra
    path = tmp_path / "popgate.toml"
    path.write_text(text)
    return path


def start_popgate(tmp_path: Path, upstream: str,
                  plugins: Iterable[Mapping[str, object] | str] = (), extra: str = "",
                  args: Iterable[str] = (), env: dict[str, str] | None = None) -> Popgate:
    """popgate on write_config(...)'s file, once it listens."""
    config = write_config(tmp_path, upstream, plugins, extra)
    return Popgate.start(["-c", str(config), *args], env=env)
