"""Settings of a PREM worker (the `[prem]` table): the node as the core sees it
(`core.settings.NodeSettings`: node, role, BIDs, marks, tables, names) plus what only the
shell needs: the back end, where the desired state is stored, the metrics endpoint.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import ConfigDict, Field

from services.contracts.settings import ListenAddress
from services.prem.core.settings import NodeSettings


class PremSettings(NodeSettings):
    """Validated settings of one PREM worker (the `[prem]` table)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    backend: Literal["nftables", "iptables", "memory"] = "nftables"
    state_file: Path = Path("/var/lib/multinet/prem.json")
    remove_on_exit: bool = False
    metrics_listen: ListenAddress | None = Field(
        default=None, description="HOST:PORT of the Prometheus /metrics endpoint; None: off"
    )
