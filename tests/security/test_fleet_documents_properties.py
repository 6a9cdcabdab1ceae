"""Thousands of generated policy documents through the core of an HA serving many routers.

`FleetEnforcer` (parse, checks, scoping to the router's prefix, one shared table, one SQLite
row per router) on the in-memory data plane. For every document addressed to one router: an
answer comes back (never an exception), it survives the bus, a refusal leaves the data plane
and every stored row as they were, an applied document leaves the data plane equal to every
router's rules, and the other router's rules never change.
"""

from __future__ import annotations

import ipaddress
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, event, given, settings

from services.contracts import policy_xml
from services.contracts.messages import PolicyStatus, decode, encode
from services.contracts.policy import Install, PolicyMessage
from services.prem.backends.memory import MemoryBackend
from services.prem.core.fleetscope import ServedRouter
from services.prem.fleet import FleetEnforcer
from services.prem.fleetstore import FleetStore
from tests.prem.factories import settings as prem_settings
from tests.prem.factories import udp_to
from tests.security.strategies import documents, with_version

#: The generated documents are addressed to node ha1 for mr1; a second router sits beside it.
SERVED = (
    ServedRouter("ha1", "mr1", ipaddress.IPv6Network("2001:db8::/32")),
    ServedRouter("ha2", "mr2", ipaddress.IPv6Network("2001:db9::/32")),
)
ENFORCED = Install(policies=(udp_to("video", 5001, 2), udp_to("voice", 5002, 1)))


def _first(router: ServedRouter) -> bytes:
    return policy_xml.render(
        PolicyMessage(
            node=router.node,
            mobile_router=router.mobile_router,
            direction="downlink",
            version=1,
            operation=ENFORCED,
        )
    )


def _answer(document: bytes) -> None:
    with tempfile.TemporaryDirectory() as directory:
        plane = MemoryBackend()
        store = FleetStore(Path(directory) / "fleet.db")
        fleet = FleetEnforcer(prem_settings(Path(directory)), SERVED, plane, store)
        for router in SERVED:
            assert fleet.handle(router.node, _first(router)).result == "applied"
        table, rows = plane.read(), store.load()
        neighbour = fleet.rules["ha2"]

        status = fleet.handle("ha1", with_version(document, 2))
        event(status.result)

        assert decode(PolicyStatus, encode(status)) == status
        assert fleet.rules["ha2"] == neighbour
        if status.result == "refused":
            assert status.refusals
            assert status.version == 1
            assert plane.read() == table
            assert store.load() == rows
        else:
            assert status.result == "applied"
            assert plane.read() == fleet.table()
            assert store.load()["ha1"] == fleet.states["ha1"]
        store.close()


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(documents())
def test_every_generated_document_is_answered_by_the_fleet_core(document: bytes) -> None:
    _answer(document)
