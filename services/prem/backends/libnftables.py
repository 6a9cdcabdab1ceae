"""A minimal typed ctypes binding to libnftables, the eight calls we use.

One `NftContext` per process: the library's netlink socket belongs to the network namespace the
context was created in, so workers create it lazily, after entering their namespace.

Kept rather than the binding nftables ships (Debian's python3-nftables, issue 15): that is not
on PyPI, installs into the system Python's dist-packages, which our venv (any Python 3.11-3.13,
not necessarily Debian's) does not see; it is untyped (`from ctypes import *`) and is itself a
ctypes wrapper of the same calls, so no faster (same load and list times for 1 to 10,000 rules).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
from typing import Any

from services.contracts.errors import KernelError

#: Output flags from <nftables/libnftables.h>.
OUTPUT_HANDLE = 1 << 3
OUTPUT_JSON = 1 << 4
OUTPUT_NUMERIC_PROTO = 1 << 7
OUTPUT_NUMERIC_PRIO = 1 << 8
OUTPUT_NUMERIC_SYMBOL = 1 << 9
#: Flags used for reads: JSON, with protocols, priorities and symbols as numbers (no names to map).
READ_FLAGS = OUTPUT_JSON | OUTPUT_NUMERIC_PROTO | OUTPUT_NUMERIC_PRIO | OUTPUT_NUMERIC_SYMBOL

_lib: ctypes.CDLL | None = None


def _library() -> ctypes.CDLL:
    """Load libnftables once and declare the signatures we call."""
    global _lib  # noqa: PLW0603 - one library handle per process
    if _lib is None:
        path = ctypes.util.find_library("nftables")
        if path is None:
            raise KernelError("load libnftables", "libnftables.so not found")
        lib = ctypes.CDLL(path)
        lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
        lib.nft_ctx_new.restype = ctypes.c_void_p
        lib.nft_ctx_free.argtypes = [ctypes.c_void_p]
        lib.nft_ctx_free.restype = None
        for name in ("nft_ctx_buffer_output", "nft_ctx_buffer_error"):
            getattr(lib, name).argtypes = [ctypes.c_void_p]
            getattr(lib, name).restype = ctypes.c_int
        for name in ("nft_ctx_get_output_buffer", "nft_ctx_get_error_buffer"):
            getattr(lib, name).argtypes = [ctypes.c_void_p]
            getattr(lib, name).restype = ctypes.c_char_p
        lib.nft_ctx_output_set_flags.argtypes = [ctypes.c_void_p, ctypes.c_uint]
        lib.nft_ctx_output_set_flags.restype = None
        lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        lib.nft_run_cmd_from_buffer.restype = ctypes.c_int
        _lib = lib
    return _lib


class NftContext:
    """One libnftables context with buffered output and errors."""

    def __init__(self) -> None:
        self._lib = _library()
        ctx = self._lib.nft_ctx_new(0)
        if not ctx:
            raise KernelError("nft_ctx_new", "could not create an nftables context")
        self._ctx: int | None = ctx
        self._lib.nft_ctx_buffer_output(ctx)
        self._lib.nft_ctx_buffer_error(ctx)

    def run(self, commands: str, *, flags: int = 0) -> str:
        """Run `commands` as one nft batch (atomic); return the output, raise on failure."""
        if self._ctx is None:
            raise KernelError("nft", "context already closed")
        self._lib.nft_ctx_output_set_flags(self._ctx, flags)
        rc = self._lib.nft_run_cmd_from_buffer(self._ctx, commands.encode())
        output = (self._lib.nft_ctx_get_output_buffer(self._ctx) or b"").decode()
        error = (self._lib.nft_ctx_get_error_buffer(self._ctx) or b"").decode()
        if rc != 0:
            raise KernelError("nft", error.strip() or f"nft returned {rc}")
        return output

    def run_json(self, command: str) -> dict[str, Any]:
        """Run a list command with JSON output and return the decoded document."""
        output = self.run(command, flags=READ_FLAGS)
        if not output.strip():
            return {"nftables": []}
        decoded: dict[str, Any] = json.loads(output)
        return decoded

    def close(self) -> None:
        """Free the context (also done when it is garbage collected)."""
        if self._ctx is not None:
            self._lib.nft_ctx_free(self._ctx)
            self._ctx = None

    def __del__(self) -> None:
        self.close()
