"""scripts/setup.sh refuses a Python the project does not support, clearly, building nothing.

The unsupported interpreter is a stand-in script answering setup.sh's one question (which
implementation and version): no unsupported CPython is installed on every machine.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def _setup(python: str, venv: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SETUP_PYTHON": python, "SETUP_VENV": str(venv)}
    return subprocess.run(
        ["bash", str(REPO / "scripts" / "setup.sh")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )


@pytest.mark.parametrize(
    ("answer", "shown"),
    [
        ("cpython 3.10", "is cpython 3.10"),
        ("cpython 3.14", "is cpython 3.14"),
        ("pypy 3.11", "is pypy 3.11"),
    ],
)
def test_an_unsupported_python_stand_in_is_refused(tmp_path: Path, answer: str, shown: str) -> None:
    stand_in = tmp_path / "python"
    stand_in.write_text(f"#!/bin/sh\necho '{answer}'\n")
    stand_in.chmod(0o755)
    venv = tmp_path / "venv"
    result = _setup(str(stand_in), venv)
    assert result.returncode == 1
    assert "multinet runs on CPython 3.11, 3.12 and 3.13" in result.stderr
    assert shown in result.stderr
    assert "SETUP_PYTHON=" in result.stderr
    assert not venv.exists()


def test_a_missing_python_is_refused(tmp_path: Path) -> None:
    result = _setup(str(tmp_path / "python3.99"), tmp_path / "venv")
    assert result.returncode == 1
    assert "is not a working Python" in result.stderr
