"""Netlink pieces every kernel reader shares (the PREM's link watcher and routing, the link
monitor, the MCoA pipes): what a link message's flags say, and dumps that survive races.

`admin_and_carrier` makes "carrier" mean the same thing everywhere: IFF_LOWER_UP, the physical
carrier, which the kernel clears on admin down too. IFF_RUNNING is not used: it follows the
RFC 2863 operational state, which a supplicant may hold "dormant" after the carrier is there
(Wi-Fi until the key exchange is done).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from pyroute2.netlink.exceptions import NetlinkDumpInterrupted, NetlinkError

from services.contracts.errors import KernelError

DUMP_ATTEMPTS = 5
IFF_UP = 0x1
IFF_LOWER_UP = 0x10000


def admin_and_carrier(flags: int) -> tuple[bool, bool]:
    """(admin_up, carrier) from an interface's flags word."""
    return bool(flags & IFF_UP), bool(flags & IFF_LOWER_UP)


def dump(what: str, fetch: Callable[[], Iterable[Any]]) -> list[Any]:
    """Run a netlink dump; one that races with changes is interrupted by the kernel (NLM_F_DUMP_
    INTR), so retry it a few times. Other netlink errors become a KernelError naming `what`."""
    for _ in range(DUMP_ATTEMPTS):
        try:
            return list(fetch())
        except NetlinkDumpInterrupted:
            continue
        except NetlinkError as exc:
            raise KernelError(f"dump {what}", str(exc), exc.code) from exc
    raise KernelError(f"dump {what}", f"interrupted {DUMP_ATTEMPTS} times")
