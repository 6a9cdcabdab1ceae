"""Issue 5, second input: the HA agent publishes its own binding events, same model and topics.

No mobility-events service runs: the events on the broker come from the home agent's binding
cache decisions. The steps are those of test_agents_events.py: two BIDs register, then a
care-of address change on one MR link shows up as coa-changed with the previous address;
then the MR deregisters both, and the HA says offline as it stops.
"""

from __future__ import annotations

import signal

import pytest

from labs.mobility_events import EventListener
from services.contracts.messages import BindingEventKind
from services.contracts.settings import BrokerSettings
from tests.mcoa.lab import McoaLab, move_link1_care_of

pytestmark = [pytest.mark.kernel, pytest.mark.broker]


@pytest.fixture
def lab(mcoa_lab: McoaLab) -> McoaLab:
    """The MCoA lab (pipes of this kernel's auto kind)."""
    return mcoa_lab


def test_ha_agent_publishes_its_binding_events(
    lab: McoaLab, broker: tuple[str, int], topic_root: str
) -> None:
    listener = EventListener(BrokerSettings(host=broker[0], port=broker[1], topic_root=topic_root))
    try:
        lab.start_publishing_ha(topic_root)
        listener.wait_online("ha1")
        lab.wait("HA listening", lambda: "serving on" in lab.log("ha"), 10)
        lab.start("mr")
        arrivals = [listener.wait_for(BindingEventKind.REGISTERED, bid, 10) for bid in (1, 2)]
        assert {a.event.care_of_address for a in arrivals} == {"2001:db8:1::2", "2001:db8:2::2"}
        for arrival in arrivals:
            assert arrival.event.sender == "ha1"
            assert arrival.event.mobile_router == "mr1"
            assert arrival.event.status == 0
            assert arrival.topic == f"{topic_root}/mr/mr1/binding/{arrival.event.bid}"

        move_link1_care_of(lab, listener, "from the HA agent")

        # The MR deregisters on SIGTERM: each binding leaves the HA's cache, with its CoA.
        assert lab.signal("mr", signal.SIGTERM) == 0
        gone = {
            listener.wait_for(BindingEventKind.DEREGISTERED, bid, 5).event.care_of_address
            for bid in (1, 2)
        }
        assert gone == {"2001:db8:1::3", "2001:db8:2::2"}

        # The HA says goodbye on the bus as it stops.
        assert lab.signal("ha", signal.SIGTERM) == 0
        offline = listener.presences.get(timeout=5)
        assert (offline.node, offline.service, offline.online) == ("ha1", "mcoa-ha", False)
    finally:
        listener.close()
