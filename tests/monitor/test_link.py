"""LinkTracker against a fake clock: which messages one link owes the bus, and when."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from services.contracts.messages import Envelope, LinkMetrics, LinkState
from services.monitor.change import ChangeSettings
from services.monitor.config import LinkConfig
from services.monitor.counters import Counters
from services.monitor.link import LinkTracker, Radio
from services.monitor.netlink import InterfaceState
from services.monitor.state import LinkStateSettings
from services.monitor.stats import ProbeSettings

UP = InterfaceState("eth0", True, 7, True, True, ("2001:db8:1::10",))


def _tracker(probe: bool = True, **link: Any) -> LinkTracker:
    config: dict[str, Any] = {"interface": "eth0", "bid": 1, "technology": "wlan", **link}
    if probe:
        config["probe"] = {"target": "2001:db8:1::1"}
    return LinkTracker(
        "mr1",
        LinkConfig.model_validate(config),
        window=ProbeSettings(window=10),
        state=LinkStateSettings(down_after=3, up_after=2),
        publish=ChangeSettings(period_s=1.0),
        initial=UP,
        now=0.0,
    )


def _states(messages: list[Envelope]) -> list[LinkState]:
    return [m for m in messages if isinstance(m, LinkState)]


def _metrics(messages: list[Envelope]) -> list[LinkMetrics]:
    return [m for m in messages if isinstance(m, LinkMetrics)]


def _probe(tracker: LinkTracker, seq: int, at: float, rtt: float | None) -> list[Envelope]:
    tracker.probe_sent(seq, at)
    if rtt is None:
        return tracker.expire(at + 1.01, 1.0)
    return tracker.answered([seq], at + rtt)


def test_it_starts_up_with_carrier_and_says_so_retained() -> None:
    tracker = _tracker()
    (state,) = _states(tracker.start(0.0))
    assert state.up
    assert state.carrier
    assert state.addresses == ("2001:db8:1::10",)
    assert (state.sender, state.interface, state.bid) == ("mr1", "eth0", 1)


def test_carrier_loss_is_a_down_state_at_once_and_probes_bring_it_back() -> None:
    tracker = _tracker()
    (down,) = _states(tracker.interface_changed(replace(UP, carrier=False), 1.0))
    assert (down.up, down.carrier, down.reason) == (False, False, "carrier lost")
    (waiting,) = _states(tracker.interface_changed(UP, 2.0))
    assert not waiting.up
    assert waiting.carrier
    assert "waiting for probes" in waiting.reason
    assert _states(_probe(tracker, 1, 3.0, 0.01)) == []
    (up,) = _states(_probe(tracker, 2, 4.0, 0.01))
    assert up.up
    assert up.reason == "2 consecutive probes answered"


def test_a_vanished_interface_is_down_with_its_reason() -> None:
    tracker = _tracker()
    gone = InterfaceState("eth0", False, None, False, False, ())
    (down,) = _states(tracker.interface_changed(gone, 1.0))
    assert not down.up
    assert down.reason == "interface vanished"


def test_n_lost_probes_take_the_link_down_and_loss_is_published() -> None:
    tracker = _tracker()
    out: list[Envelope] = []
    for seq in range(1, 4):
        out += _probe(tracker, seq, float(seq), None)
    (down,) = _states(out)
    assert not down.up
    assert down.carrier
    assert down.reason == "3 consecutive probes failed"
    assert _metrics(out)[-1].loss == 1.0


def test_a_new_care_of_address_is_a_state_event() -> None:
    tracker = _tracker()
    moved = InterfaceState("eth0", True, 7, True, True, ("2001:db8:1::10", "2001:db8:9::10"))
    (state,) = _states(tracker.interface_changed(moved, 1.0))
    assert state.up
    assert state.reason == "address 2001:db8:9::10 added"
    assert state.addresses == moved.addresses


def test_metrics_every_period_and_at_once_on_a_material_change() -> None:
    tracker = _tracker()
    first = _metrics(_probe(tracker, 1, 0.0, 0.010))
    assert len(first) == 1  # first publication
    assert first[0].rtt_ms == pytest.approx(10.0)
    assert _metrics(_probe(tracker, 2, 0.2, 0.011)) == []  # 1 ms: not material
    assert len(_metrics(tracker.tick(1.5))) == 1  # the period
    jump = _metrics(_probe(tracker, 3, 1.6, 0.400))  # EWMA moves by ~49 ms > 30 ms
    assert len(jump) == 1
    assert jump[0].rtt_ms is not None
    assert jump[0].rtt_ms > 40


def test_a_trace_adds_its_rtt_and_combines_its_loss() -> None:
    tracker = _tracker()
    _probe(tracker, 1, 0.0, 0.010)
    (metrics,) = _metrics(tracker.radio_changed(Radio(signal_dbm=-80, rtt_ms=90, loss=0.5), 0.5))
    assert metrics.rtt_ms == pytest.approx(100.0)
    assert metrics.loss == pytest.approx(0.5)
    assert metrics.signal_dbm == -80


def test_bit_rates_come_from_counter_differences() -> None:
    tracker = _tracker()
    tracker.counters(Counters(1000, 0, 1, 0, 10.0))
    tracker.counters(Counters(126_000, 12_500, 100, 10, 11.0))
    assert tracker.rx_bps == pytest.approx(1_000_000)
    assert tracker.tx_bps == pytest.approx(100_000)
    assert tracker.rx_pps == pytest.approx(99)
    assert tracker.tx_pps == pytest.approx(10)
    (metrics,) = _metrics(tracker.tick(100.0))
    assert metrics.rx_pps == pytest.approx(99)
    assert metrics.tx_pps == pytest.approx(10)
    tracker.counters(None)
    assert tracker.rx_bps is None
    assert tracker.rx_pps is None


def test_without_a_probe_the_link_follows_its_carrier() -> None:
    tracker = _tracker(probe=False)
    assert tracker.up
    (down,) = _states(tracker.interface_changed(replace(UP, carrier=False), 1.0))
    assert not down.up
    (up,) = _states(tracker.interface_changed(UP, 2.0))
    assert up.up
    assert up.reason == "carrier back"
