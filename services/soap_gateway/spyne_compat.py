"""Lets spyne 2.14.0 import on Python 3.12 and 3.13; the package imports it before spyne.

spyne 2.14.0 (the last release, 2022) vendors six 1.14.0 as `spyne.util.six`. That six serves
`six.moves.*` through an import hook with only `find_module`, which Python 3.12 no longer
calls, so spyne's own `from spyne.util.six.moves.collections_abc import ...` fails there. The
vendored module itself loads fine: only these submodules are missing. Python looks a module up
in `sys.modules` before any hook (and without importing its parents), so registering the
standard library's modules under the names spyne asks for is enough. On Python 3.11 the hook
hands out the same classes and functions from these very modules, so this runs on every Python:
one path, tested everywhere. ruff refuses an import of spyne outside this package (TID251).

spyne also imports `cgi` (for `cgi.parse_header`), which Python 3.13 removed; the project then
depends on `legacy-cgi` (see pyproject.toml, a marker on the Python version), nothing here.

Nothing else of spyne is patched. When it can go: spyne's repository updated its vendored six
in December 2023 (arskom/spyne issue 700, pull request 704), but no release carries it yet
(2.14.0 is the newest on PyPI). Once one does, pin it, then delete this module, its import in
`__init__.py` and the `legacy-cgi` dependency if that release no longer imports `cgi`.
tests/soap_gateway/test_spyne_compat.py fails on 3.12+ the day spyne imports without it.
"""

from __future__ import annotations

import collections.abc
import http.cookies
import sys
import urllib.error
import urllib.parse
import urllib.request
from types import ModuleType

SPYNE_RELEASE = "2.14.0"
"""The spyne release these names come from (`grep -r six.moves` in its sources)."""

MOVED: dict[str, ModuleType] = {
    "spyne.util.six.moves.collections_abc": collections.abc,
    "spyne.util.six.moves.http_cookies": http.cookies,
    "spyne.util.six.moves.urllib.parse": urllib.parse,
    "spyne.util.six.moves.urllib.request": urllib.request,
    "spyne.util.six.moves.urllib.error": urllib.error,
}


def install() -> None:
    """Register the moved modules (idempotent; an entry already there is left alone)."""
    for name, module in MOVED.items():
        sys.modules.setdefault(name, module)


install()
