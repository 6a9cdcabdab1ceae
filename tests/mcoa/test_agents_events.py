"""The whole mobility chain of issue 5: the agents' real signalling becomes events on the broker.

The MCoA agents register two BIDs; the mobility_events service on the HA captures the BUs and
BAs and publishes binding events; a care-of address change on one MR link must show up as a
coa-changed event within 200 ms of the address change.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from labs.mobility_events import EventListener, service_process
from services.contracts.messages import BindingEventKind
from services.contracts.settings import BrokerSettings
from tests.mcoa.lab import MNP, McoaLab, move_link1_care_of

pytestmark = [pytest.mark.kernel, pytest.mark.broker]


@pytest.fixture
def lab(mcoa_lab: McoaLab) -> McoaLab:
    """The MCoA lab (pipes of this kernel's auto kind)."""
    return mcoa_lab


def _events_config(path: Path, topic_root: str) -> Path:
    config = path / "mobility.toml"
    config.write_text(
        '[mobility_events]\nnode = "ha1"\ntick_interval_s = 0.2\n'
        f'mobile_routers = [{{ id = "mr1", prefixes = ["{MNP}"] }}]\n'
        f'[broker]\ntopic_root = "{topic_root}"\nsession_expiry_s = 60\n',
        encoding="utf-8",
    )
    return config


def test_agent_signalling_becomes_binding_events(
    lab: McoaLab, broker: tuple[str, int], topic_root: str, tmp_path: Path
) -> None:
    listener = EventListener(BrokerSettings(host=broker[0], port=broker[1], topic_root=topic_root))
    try:
        with service_process(_events_config(tmp_path, topic_root), lab.ha, tmp_path / "ev.log"):
            listener.wait_online("ha1")
            lab.start("ha")
            lab.wait("HA listening", lambda: "serving on" in lab.log("ha"), 10)
            lab.start("mr")
            registered = {
                listener.wait_for(BindingEventKind.REGISTERED, bid, 10).event.care_of_address
                for bid in (1, 2)
            }
            assert registered == {"2001:db8:1::2", "2001:db8:2::2"}

            move_link1_care_of(lab, listener, "on the broker", tmp_path / "ev.log")
    finally:
        listener.close()
