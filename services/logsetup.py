"""Logging for the command line: the node id on every line, text or JSON.

Library modules only create named loggers; this is the one place that configures handlers.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
from types import TracebackType


class _NodeFilter(logging.Filter):
    def __init__(self, node: str) -> None:
        super().__init__()
        self.node = node

    def filter(self, record: logging.LogRecord) -> bool:
        record.node = self.node
        return True


class _JsonFormatter(logging.Formatter):
    """One JSON object per record; a traceback (`log.exception`, a crash) goes in `exception`,
    so a log collector keeps it with its record instead of losing it or splitting it."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record),
            "level": record.levelname,
            "node": getattr(record, "node", "-"),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def configure(node: str, *, level: str = "INFO", json_lines: bool = False) -> None:
    """Send log records to stderr, each carrying `node`."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_NodeFilter(node))
    if json_lines:
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s [%(node)s] %(levelname)s %(name)s: %(message)s")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    sys.excepthook = _log_uncaught
    threading.excepthook = _log_thread_uncaught


def _log_uncaught(
    kind: type[BaseException], error: BaseException, trace: TracebackType | None
) -> None:
    """A crash of the main thread goes through the handler too (node id, JSON), not raw to
    stderr, so the last words of a dying service are in the same format as the rest."""
    if issubclass(kind, KeyboardInterrupt):
        sys.__excepthook__(kind, error, trace)
        return
    logging.getLogger("services").critical("uncaught exception", exc_info=(kind, error, trace))


def _log_thread_uncaught(args: threading.ExceptHookArgs) -> None:
    if args.exc_value is None:
        return
    logging.getLogger("services").critical(
        "uncaught exception in thread %s",
        args.thread.name if args.thread is not None else "?",
        exc_info=(args.exc_type, args.exc_value, args.exc_traceback),
    )
