"""Apply a `pipe_kinds.KernelState` to this namespace: the one place the agents change it.

Order matters: devices first (routes name them), then their neighbours, the rules (adds
before deletes, so a rule is never missing in between) and the routes. Removing a device
takes its routes and neighbours with it; the later steps then find less to delete. Each step
reads back what it did, so a returned state is the kernel's, not a hope.
"""

from __future__ import annotations

from typing import Any

from services.mcoa import devices, pipes
from services.mcoa.pipe_kinds import KernelState


def apply_state(
    ipr: Any, state: KernelState, priorities: set[int], known: KernelState | None = None
) -> bool:
    """Make our devices, neighbours, rules at `priorities` and routes exactly `state`;
    True if anything changed.

    `known` is the state this node was last brought to and verified in: a part of `state`
    equal to its part of `known` is taken as it is, so a handover (routes only) costs the
    route step alone. Pass None (the periodic resync does) to check every part again.
    """
    links = devices.read_links(ipr)
    changed = False
    if known is None or state.devices != known.devices:
        changed, links = devices.ensure_devices(ipr, state.devices, links)
    if known is None or changed or state.neighbours != known.neighbours:
        changed |= devices.ensure_neighbours(ipr, set(state.neighbours), links)
    if known is None or state.rules != known.rules:
        changed |= pipes.ensure_rules(ipr, priorities, set(state.rules))
    changed |= pipes.ensure_routes(ipr, set(state.routes), links.names)
    return changed


def remove_all(ipr: Any, priorities: set[int]) -> None:
    """Remove every route, rule (at `priorities`), neighbour and device this agent owns."""
    pipes.ensure_routes(ipr, set())
    pipes.ensure_rules(ipr, priorities, set())
    devices.ensure_devices(ipr, ())
