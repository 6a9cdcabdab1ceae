"""What a netlink link message's IFF flags say about a device: set up, and has carrier.

Shared by every reader of RTM_NEWLINK (the PREM's link watcher, the link monitor), so that
"carrier" means the same thing everywhere: IFF_LOWER_UP, the physical carrier, which the kernel
clears on admin down too. IFF_RUNNING is not used: it follows the RFC 2863 operational state, which
a supplicant may hold "dormant" after the carrier is there (Wi-Fi until the key exchange is done).
"""

from __future__ import annotations

IFF_UP = 0x1
IFF_LOWER_UP = 0x10000


def admin_and_carrier(flags: int) -> tuple[bool, bool]:
    """(admin_up, carrier) from an interface's flags word."""
    return bool(flags & IFF_UP), bool(flags & IFF_LOWER_UP)
