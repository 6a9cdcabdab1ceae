"""Skipping a test of an optional kernel feature on a kernel that lacks it, with the reason.

Kernels differ between machines (docs/kernel.md); what multinet needs is required and fails
loudly, what is optional is probed (`services.capabilities`) and skipped naming the kernel
option that is missing.
"""

from __future__ import annotations

import os

import pytest

from services import capabilities


def need_backend(backend: str) -> None:
    """Skip a test of the iptables back end on a kernel without legacy ip6tables MARK, naming
    the missing option (it is optional: nftables is the default back end, always required)."""
    if backend != "iptables" or os.geteuid() != 0:
        return
    check = capabilities.probe().check("xtables mark")
    if not check.present:
        pytest.skip(check.missing_text)
