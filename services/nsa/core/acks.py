"""The PREM workers' side: their statuses (acknowledgements) and presences (hellos).

A status settles what its node holds in the router's ledgers, and plans again. A presence
announcing a version the node was not known to hold (a restarted worker, a lost message) puts
the node in doubt: its next document is a full Install, and its back-off is reset so that it
is resynchronised at once. A presence that brings nothing new is only logged.
"""

from __future__ import annotations

import logging

from services.contracts.messages import PolicyStatus, Presence
from services.nsa.core.agenda import Agenda
from services.nsa.core.plan import acknowledge, greet
from services.nsa.core.slot import Slot, owing

log = logging.getLogger(__name__)


class NodeReports:
    """Applies statuses and presences of the workers to the routers' ledgers."""

    def __init__(self, agenda: Agenda) -> None:
        self.agenda = agenda

    def status(self, node: str, status: PolicyStatus) -> None:
        """A worker's answer to a document; ignored unless `node` serves that router."""
        slot = self.agenda.slots.get(status.mobile_router)
        if slot is None or status.node != node or node not in _nodes(slot):
            log.debug("node %s: status for %s not ours, ignored", node, status.mobile_router)
            return
        if status.result == "fallback":
            active = ", ".join(f"{f.policy_id}->{f.active_bid}" for f in status.fallbacks)
            log.info("%s: node %s fell back on its own: %s", slot.router.id, node, active or "none")
        self.agenda.set_ledgers(slot, acknowledge(slot.ledgers, status))
        self.agenda.replan(slot)

    def presence(self, node: str, presence: Presence, now: float) -> None:
        """A PREM worker's presence, for every router whose HA or MR node it is."""
        if presence.node != node or presence.service != "prem":
            return
        for slot in self.agenda.by_node.get(node, ()):
            if not presence.online:
                log.info("%s: node %s went offline", slot.router.id, node)
                continue
            greeted = greet(slot.ledgers, presence)
            if greeted == slot.ledgers and not owing(greeted, node):
                log.debug("%s: node %s at version %s", slot.router.id, node, presence.version)
                continue
            self.agenda.set_ledgers(slot, greeted)
            log.info(
                "%s: node %s says hello at version %s, not the one it was known to hold: "
                "full Install next",
                slot.router.id,
                node,
                presence.version,
            )
            slot.failures, slot.retry_at = 0, 0.0
            self.agenda.replan(slot)


def _nodes(slot: Slot) -> tuple[str, str]:
    return slot.router.ha_node, slot.router.mr_node
