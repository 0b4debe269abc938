"""The shipped examples pass mypy --strict against the package's stubs."""

from __future__ import annotations

import importlib.util
import os
import subprocess
from pathlib import Path

import pytest

import popgate


def test_examples_and_shipped_plugins_pass_mypy_strict(python_dir: Path, tmp_path: Path):
    if importlib.util.find_spec("mypy") is None:
        pytest.skip("mypy is not installed (python3-mypy)")
    package = Path(popgate.__file__).parent
    examples = sorted((package / "examples").glob("*.py"))
    assert len(examples) >= 4
    # Shipped plugins are what admins copy and adapt: a plugin package
    # (plugins/NAME/) is checked file by file like a one-file plugin.
    plugins = sorted((package / "plugins").rglob("*.py"))
    assert any(p.stem == "archive" for p in plugins)
    examples += plugins
    env = dict(os.environ, MYPYPATH=str(python_dir))
    done = subprocess.run(["/usr/bin/python3", "-m", "mypy", "--strict", "--no-incremental",
                           "--cache-dir", str(tmp_path / "cache"), *map(str, examples)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr


def test_mypy_catches_a_wrong_verdict(python_dir: Path, tmp_path: Path):
    # The stubs are precise: a hook returning the wrong kind of answer is a type error.
    if importlib.util.find_spec("mypy") is None:
        pytest.skip("mypy is not installed (python3-mypy)")
    bad = tmp_path / "bad_plugin.py"
    bad.write_text("import popgate\n\n"
                   "def answer() -> popgate.Verdict:\n"
                   "    return popgate.deny('no')\n\n"
                   "x: int = popgate.Message(b'').headers.get('A')\n")
    env = dict(os.environ, MYPYPATH=str(python_dir))
    done = subprocess.run(["/usr/bin/python3", "-m", "mypy", "--strict", "--no-incremental",
                           "--cache-dir", str(tmp_path / "cache"), str(bad)],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 1
    assert "bad_plugin.py:4" in done.stdout and "bad_plugin.py:6" in done.stdout
