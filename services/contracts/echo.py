"""Safe echoes of untrusted text: what a refusal, a log line or a dead letter may repeat.

A refusal names the offending value so the sender can fix it, but that value is exactly what
failed validation: it may be megabytes long, carry newlines that forge log lines, control
characters an XML answer cannot hold, or anything else. `echo` turns any string into printable
ASCII of bounded length, so whatever carries the echo can never itself be refused for it: a
refusal that fails validation while being built is a crash, and with redelivery a crash loop.

The result is a diagnostic, not a value to act on: characters outside printable ASCII become
Python-style escapes (`\\x0a`, `\\u00e9`), and a long value keeps its head and says how long it
was. `echo` is idempotent (an echo is echoed unchanged), so a message carrying echoes survives
any number of encode/decode round trips equal to itself.
"""

from __future__ import annotations

#: Default bounds, in characters, of the echoes a refusal carries.
REASON_LIMIT = 500
ID_LIMIT = 80
FIELD_LIMIT = 120

_MIN_LIMIT = 32  # room for the length marker and a useful head


def _escape(char: str) -> str:
    if " " <= char <= "~":
        return char
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def echo(value: str, limit: int = REASON_LIMIT) -> str:
    """`value` as printable ASCII of at most `limit` characters (see the module docstring)."""
    if limit < _MIN_LIMIT:
        raise ValueError(f"an echo needs a limit of at least {_MIN_LIMIT}, not {limit}")
    if len(value) <= limit and value.isascii() and value.isprintable():
        return value
    marker = f"... ({len(value)} characters)"
    budget = limit - len(marker)
    pieces: list[str] = []
    size = 0
    head = 0  # pieces that fit before the marker, should the whole not fit
    for char in value:
        piece = _escape(char)
        size += len(piece)
        if size > limit:
            return "".join(pieces[:head]) + marker
        pieces.append(piece)
        if size <= budget:
            head = len(pieces)
    return "".join(pieces)
