"""Logging for the command line: the node id on every line, text or JSON.

Library modules only create named loggers; this is the one place that configures handlers.
"""

from __future__ import annotations

import json
import logging
import sys


class _NodeFilter(logging.Filter):
    def __init__(self, node: str) -> None:
        super().__init__()
        self.node = node

    def filter(self, record: logging.LogRecord) -> bool:
        record.node = self.node
        return True


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(
            {
                "time": self.formatTime(record),
                "level": record.levelname,
                "node": getattr(record, "node", "-"),
                "logger": record.name,
                "message": record.getMessage(),
            }
        )


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
