"""No cyclic garbage collection while a large table is built, listed or compared.

Work on a large flow table allocates a few containers per rule (layers, keys, the JSON
listing's dicts, parsed rules, sets), which sets off collections of every generation, and a
full one walks every long-lived object of the worker (the policies' models): so the time
grows faster than the table. Measured: an apply of 1000 policies spent 1-2.5 ms of 11-13 ms
in collections; reading back 40,000 elements, decoding the listing took 1958 ms with the
collector and 71 ms without, parsing it 3148 and 1126 ms (`bench.ha_fleet`). That work makes
no reference cycles of its own; what it leaves is collected at the next collection after it.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator


@contextlib.contextmanager
def paused() -> Iterator[None]:
    """The collector off for the block (left as it was: nesting and a caller that turned it
    off stay correct)."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
