"""The MCoA agents (their own processes, real BUs and BAs between namespaces) export what they do.

The MR starts alone: its links are `registering` and their BUs are retransmitted. Once the HA
runs, both links are `registered`, both sides hold a pipe per BID and the BAs are counted by
status on both sides, with the MR's registration round trips timed. The MR refreshes before
its 4 s lifetime runs out; killed (no deregistration), its bindings expire at the HA, whose
pipes go with them.
"""

from __future__ import annotations

import signal

import pytest

from services.ports import free_port
from tests.mcoa.lab import McoaLab
from tests.observability.scrape import Samples, wait_scrape

pytestmark = pytest.mark.kernel
BINDINGS = "multinet_mcoa_bindings"
PIPES = "multinet_mcoa_pipes"
SENT = "multinet_mcoa_binding_updates_sent_total"
ACKS_IN = "multinet_mcoa_binding_acks_received_total"
ACKS_OUT = "multinet_mcoa_binding_acks_sent_total"
RECEIVED = "multinet_mcoa_binding_updates_received_total"
EXPIRED = "multinet_mcoa_binding_expiries_total"
ACCEPTED = "0"
#: Seconds (the shortest lifetime a BU can carry): refreshed at 80 %, expired soon after a kill.
LIFETIME = 4


@pytest.fixture
def lab(mcoa_lab: McoaLab) -> McoaLab:
    """The MCoA lab (pipes of this kernel's auto kind)."""
    return mcoa_lab


def _value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get(name, **labels) or 0.0


def test_registration_pipes_acks_and_expiry_are_counted(lab: McoaLab) -> None:
    ha_port, mr_port = free_port(), free_port()
    lab.start_metered("mr", mr_port, lifetime=LIFETIME)
    # No HA yet: both links wait for a BA, and their BUs go out again.
    alone = wait_scrape(
        mr_port,
        lambda s: (
            s.get(BINDINGS, state="registering") == 2 and _value(s, SENT, kind="retransmit") >= 2
        ),
        watch=lab.watched(),
    )
    assert alone.labelled(SENT, kind="register") == 2
    assert alone.labelled(BINDINGS, state="registered") == 0
    assert alone.labelled(ACKS_IN, status=ACCEPTED) == 0
    assert alone[PIPES] == 2, "the uplink pipes exist as soon as the links have addresses"
    assert alone.labelled("multinet_service_info", service="mcoa-mr", node="mr1") == 1

    lab.start_metered("ha", ha_port)
    registered = wait_scrape(
        mr_port,
        lambda s: (
            s.get(BINDINGS, state="registered") == 2
            and _value(s, "multinet_mcoa_registration_seconds_count") >= 2
        ),
        watch=lab.watched(),
    )
    assert registered.labelled(BINDINGS, state="registering") == 0
    assert registered.labelled(ACKS_IN, status=ACCEPTED) >= 2
    assert registered.labelled(ACKS_IN, status="135") == 0
    ha = wait_scrape(
        ha_port,
        lambda s: s.get(BINDINGS, state="registered") == 2 and s.get(PIPES) == 2,
        watch=lab.watched(),
    )
    assert ha.labelled(ACKS_OUT, status=ACCEPTED) >= 2
    assert ha[RECEIVED] >= 2
    assert ha["multinet_mcoa_bu_handling_seconds_count"] >= 2
    assert ha[EXPIRED] == 0
    assert ha.labelled("multinet_service_info", service="mcoa-ha", node="ha1") == 1
    assert ha.get("multinet_broker_connected") is None, "this HA publishes no events"

    # Refreshed before the lifetime runs out: the HA answers each one.
    refreshed = wait_scrape(
        mr_port, lambda s: _value(s, SENT, kind="refresh") >= 2, watch=lab.watched()
    )
    assert refreshed.labelled(BINDINGS, state="registered") == 2
    wait_scrape(ha_port, lambda s: _value(s, ACKS_OUT, status=ACCEPTED) >= 4)

    # A mobile router that dies sends no deregistration: its bindings run out at the HA.
    assert lab.signal("mr", signal.SIGKILL) == -signal.SIGKILL
    gone = wait_scrape(ha_port, lambda s: s.get(EXPIRED) == 2)
    assert gone.labelled(BINDINGS, state="registered") == 0
    assert gone[PIPES] == 0
    assert lab.signal("ha", signal.SIGTERM) == 0, lab.log("ha")[-3000:]
