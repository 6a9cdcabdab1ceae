"""The routers an HA's worker serves: read from the file its settings name (`serves`).

One router per line, `<node> <mobile router> <prefix>` separated by spaces or tabs; blank
lines and `#` comments are skipped. A file of 10,000 routers is about 400 KB; the size is
checked before it is read. Every problem is reported with its line, all at once.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path

from services.contracts.errors import ConfigError, Problem
from services.prem.core.fleetscope import MAX_NODE_LENGTH, ServedRouter

#: Larger than any fleet this worker is meant for (10,000 routers take ~400 KB).
MAX_FILE_BYTES = 16 * 1024 * 1024
_NAME = re.compile(rf"[A-Za-z0-9_.-]{{1,{MAX_NODE_LENGTH}}}")
_ROUTER = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def load_served(path: Path) -> tuple[ServedRouter, ...]:
    """The served routers, in file order; ConfigError naming every bad line."""
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise ConfigError([Problem(f"served routers file {path}: {size} bytes, over 16 MiB")])
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([Problem(f"served routers file {path}: {exc}")]) from exc
    routers: list[ServedRouter] = []
    problems: list[Problem] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        fields = line.split()
        if len(fields) != 3:
            problems.append(_bad(path, number, "want `<node> <mobile router> <prefix>`"))
            continue
        node, router, prefix = fields
        if not _NAME.fullmatch(node):
            problems.append(
                _bad(path, number, f"node: letters, digits, '_', '.', '-', 1-{MAX_NODE_LENGTH}")
            )
            continue
        if not _ROUTER.fullmatch(router):
            problems.append(_bad(path, number, "mobile router: letters, digits, '_', '.', '-'"))
            continue
        try:
            network = ipaddress.ip_network(prefix)
        except ValueError as exc:
            problems.append(_bad(path, number, f"prefix: {exc}"))
            continue
        routers.append(ServedRouter(node, router, network))
    if problems:
        raise ConfigError(problems)
    if not routers:
        raise ConfigError([Problem(f"served routers file {path} names no router")])
    return tuple(routers)


def _bad(path: Path, line: int, what: str) -> Problem:
    return Problem(f"served routers file {path}, line {line}: {what}", line=line)
