"""The whole mobility chain of issue 5: the agents' real signalling becomes events on the broker.

The MCoA agents register two BIDs; the mobility_events service on the HA captures the BUs and
BAs and publishes binding events; a care-of address change on one MR link must show up as a
coa-changed event within 200 ms of the address change.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from labs.mobility_events import EventListener, service_process
from services import netns
from services.contracts.messages import BindingEventKind
from services.contracts.settings import BrokerSettings
from tests.mcoa.lab import MNP, McoaLab

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

            netns.run(lab.mr, ["ip", "-6", "addr", "add", "2001:db8:1::3/64", "dev", "m1", "nodad"])
            moved_at = time.time()
            netns.run(lab.mr, ["ip", "-6", "addr", "del", "2001:db8:1::2/64", "dev", "m1"])
            moved = listener.wait_for(BindingEventKind.COA_CHANGED, 1, 5)
            took = moved.at - moved_at
            print(f"CoA change -> coa-changed event on the broker in {took * 1000:.1f} ms")
            assert moved.event.mobile_router == "mr1"
            assert moved.event.care_of_address == "2001:db8:1::3"
            assert moved.event.previous_care_of_address == "2001:db8:1::2"
            assert took < 0.2, (
                f"the event arrived {took * 1000:.0f} ms after the address change"
                f"\n{lab.log('mr')[-3000:]}\n{lab.log('ha')[-3000:]}"
                f"\n{(tmp_path / 'ev.log').read_text()[-3000:]}"
            )
    finally:
        listener.close()
