"""The console's pure core: the fleet's picture built from parsed bus messages and the time.

No I/O (import-linter's "pure cores" contract): the shell decodes each message, takes the
lock, and calls `ConsoleState.feed(topic, message, now)`; the web side reads the views.
"""

from services.console.core.state import ConsoleState, Limits

__all__ = ["ConsoleState", "Limits"]
