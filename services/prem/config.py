"""Settings of a PREM worker (the `[prem]` table): the node as the core sees it
(`core.settings.NodeSettings`: node, role, BIDs, marks, tables, names) plus what only the
shell needs: the back end, where the desired state is stored, the metrics endpoint.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import ConfigDict, Field, model_validator

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
    serves: Path | None = Field(
        default=None,
        description="an HA serving many mobile routers: a file of one served router per line, "
        "`<node> <mobile router> <prefix>` (each router a node of its own on the bus, its "
        "policies scoped to its prefix); None: this worker serves `mobile_router` alone",
    )
    fleet_store: Path = Field(
        default=Path("/var/lib/multinet/prem-fleet.db"),
        description="with `serves`: the SQLite database of every served router's state",
    )

    @model_validator(mode="after")
    def _fleet_on_an_ha(self) -> PremSettings:
        if self.serves is not None and self.role.value != "ha":
            raise ValueError("`serves` (many mobile routers) is for an HA's worker only")
        return self
