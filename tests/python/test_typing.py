"""The shipped examples pass mypy --strict against the package's stubs."""

from __future__ import annotations

import importlib.util
import os
import subprocess
from pathlib import Path

import pytest

import popgate


def test_examples_pass_mypy_strict(python_dir: Path, tmp_path: Path):
    if importlib.util.find_spec("mypy") is None:
        pytest.skip("mypy is not installed (python3-mypy)")
    examples = sorted((Path(popgate.__file__).parent / "examples").glob("*.py"))
    assert len(examples) >= 4
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
