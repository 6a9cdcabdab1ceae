"""The PREM uses the SOAP gateway only as a library, through `services.soap_gateway.api`, and the
gateway imports nothing of the PREM: each can change its insides without the other noticing."""

from __future__ import annotations

import ast
from pathlib import Path

import services

SERVICES = Path(services.__file__).parent


def _imports(package: str) -> dict[str, set[str]]:
    """Every module imported by each module of `package` (`services/<package>`)."""
    found: dict[str, set[str]] = {}
    for path in sorted((SERVICES / package).rglob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module is not None:
                names.add(node.module)
        found[str(path.relative_to(SERVICES))] = names
    return found


def test_the_prem_reaches_the_gateway_only_through_its_api() -> None:
    used = {
        (module, name)
        for module, names in _imports("prem").items()
        for name in names
        if name.startswith("services.soap_gateway")
    }
    assert {name for _, name in used} == {"services.soap_gateway.api"}, sorted(used)


def test_the_gateway_imports_nothing_of_the_prem() -> None:
    used = {
        (module, name)
        for module, names in _imports("soap_gateway").items()
        for name in names
        if name.startswith("services.prem")
    }
    assert not used, sorted(used)
