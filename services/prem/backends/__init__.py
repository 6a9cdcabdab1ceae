"""Enforcement back ends: nftables, iptables (libiptc) and an in-memory data plane."""

from __future__ import annotations

from services.prem.backends.base import Backend
from services.prem.config import PremSettings


def make_backend(settings: PremSettings) -> Backend:
    """The back end named in the settings, created in the current network namespace."""
    if settings.backend == "nftables":
        from services.prem.backends.nftables import NftablesBackend

        return NftablesBackend(settings)
    if settings.backend == "iptables":
        from services.prem.backends.iptables import IptablesBackend

        return IptablesBackend(settings)
    from services.prem.backends.memory import MemoryBackend

    return MemoryBackend(settings)
