"""spyne 2.14 on Python 3.12+: the compatibility module covers what spyne imports, no more.

Every SOAP test of the suite runs on the highest supported Python too (.ci/run); these say why
the module exists, that it is complete for the pinned spyne, and tell when it can go.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

from services.soap_gateway import spyne_compat

MOVED_IMPORT = re.compile(r"^\s*(?:from|import)\s+(spyne\.util\.six\.moves\.[\w.]+)", re.MULTILINE)


def _spyne_sources() -> list[Path]:
    spec = importlib.util.find_spec("spyne")
    assert spec is not None
    assert spec.submodule_search_locations is not None
    root = Path(next(iter(spec.submodule_search_locations)))
    return [path for path in root.rglob("*.py") if "test" not in path.relative_to(root).parts]


def _fresh_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )


def test_every_moved_module_spyne_imports_is_registered() -> None:
    imported = {
        name
        for path in _spyne_sources()
        for name in MOVED_IMPORT.findall(path.read_text(encoding="utf-8"))
    }
    assert imported == set(spyne_compat.MOVED), (
        f"spyne {spyne_compat.SPYNE_RELEASE}'s imports of six.moves changed: update MOVED"
    )


def test_spyne_still_needs_the_module_on_python_3_12_and_later() -> None:
    """When this fails on 3.12+, spyne imports by itself: remove spyne_compat (its docstring)."""
    alone = _fresh_python("import spyne")
    if sys.version_info < (3, 12):
        assert alone.returncode == 0, alone.stderr
    else:
        assert alone.returncode != 0
        assert "No module named 'spyne.util.six.moves'" in alone.stderr


def test_the_gateway_imports_in_a_fresh_interpreter() -> None:
    """Either module that imports spyne first: the package's __init__ installs the module."""
    for module in ("service", "wsgi"):
        fresh = _fresh_python(f"import services.soap_gateway.{module}")
        assert fresh.returncode == 0, f"{module}: {fresh.stderr}"


def test_cgi_is_there_for_spyne() -> None:
    """spyne parses Content-Type with cgi.parse_header; Python 3.13 has it from legacy-cgi."""
    answer = _fresh_python(
        "import cgi; print(cgi.parse_header('text/xml; charset=utf-8'), cgi.__file__)"
    )
    assert answer.returncode == 0, answer.stderr
    assert answer.stdout.startswith("('text/xml', {'charset': 'utf-8'})")
    from_site_packages = "site-packages" in answer.stdout
    assert from_site_packages == (sys.version_info >= (3, 13))
