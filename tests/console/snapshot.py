"""Everything the pages, the streams and the counters can see of a picture, for comparing two."""

from __future__ import annotations

from typing import Any

from services.console.core import ConsoleState


def snapshot(state: ConsoleState) -> dict[str, Any]:
    """The picture as the console shows it: two states fed differently but equal here look the
    same to every page, stream and counter (revisions included: a stream resumes by them)."""
    return {
        "revision": state.revision,
        "rows": state.rows_since(0),
        "row_revisions": {name: state.row_revision(name) for name in sorted(state.routers)},
        "totals": dict(state.totals),
        "alerts": state.alerts_since(0),
        "nodes": state.other_nodes(),
        "node_revision": state.node_revision,
        "views": {name: state.router_view(name) for name in sorted(state.routers)},
        "dropped": state.dropped,
        "footprint": sorted(state.footprint()),
    }
