"""Tests of the popgate Python package as built: `$POPGATE_PYTHON_DIR` (default
`<repo>/build/python`) goes first on sys.path. A missing build fails the run, never skips."""

from __future__ import annotations

import glob
import os
import sys
import textwrap
from pathlib import Path
from typing import Callable

import pytest

REPO = Path(__file__).resolve().parents[2]
PYTHON_DIR = Path(os.environ.get("POPGATE_PYTHON_DIR", REPO / "build" / "python")).resolve()

if not glob.glob(str(PYTHON_DIR / "popgate" / "_popgate*.so")):
    pytest.exit(f"no built popgate package in {PYTHON_DIR} (build the _popgate and "
                f"popgate_python_package targets, or set POPGATE_PYTHON_DIR)", returncode=1)
sys.path.insert(0, str(PYTHON_DIR))

import popgate  # noqa: E402

if not str(Path(popgate.__file__).resolve()).startswith(str(PYTHON_DIR)):
    pytest.exit(f"imported popgate from {popgate.__file__}, not {PYTHON_DIR}", returncode=1)

EXAMPLES = PYTHON_DIR / "popgate" / "examples"


@pytest.fixture
def python_dir() -> Path:
    return PYTHON_DIR


@pytest.fixture
def write_plugin(tmp_path: Path) -> Callable[..., Path]:
    """Writes a plugin file (dedented source) and returns its path."""

    def write(source: str, name: str = "plugin.py") -> Path:
        path = tmp_path / name
        path.write_text(textwrap.dedent(source))
        return path

    return write
