"""Properties of the probe window under any sequence of sends, answers and timeouts."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from services.monitor.stats import ProbeSettings, ProbeWindow

# (kind, seq, delay): kind 0 sends seq, 1 answers seq, 2 runs the timeout; delay advances now.
OPS = st.lists(
    st.tuples(
        st.integers(0, 2),
        st.integers(0, 15),
        st.floats(0, 3, allow_nan=False, allow_infinity=False),
    ),
    max_size=120,
)


@settings(max_examples=300, deadline=None)
@given(ops=OPS, size=st.integers(1, 12), timeout=st.floats(0.1, 4))
def test_loss_is_lost_over_probes_in_window(
    ops: list[tuple[int, int, float]], size: int, timeout: float
) -> None:
    window = ProbeWindow(ProbeSettings(window=size))
    outstanding: list[int] = []  # in send order
    outcomes: list[bool] = []  # our own model: True answered, False lost, in settling order
    now = 0.0
    for kind, seq, delay in ops:
        now += delay
        if kind == 0:
            if seq in outstanding:
                continue
            if len(outstanding) >= size:
                outcomes.append(False)  # the oldest outstanding probe is pushed out as lost
                outstanding.pop(0)
            window.sent(seq, now)
            outstanding.append(seq)
        elif kind == 1:
            if window.answered(seq, now) is not None:
                outstanding.remove(seq)
                outcomes.append(True)
        else:
            for lost in window.timed_out(now, timeout):
                outstanding.remove(lost)
                outcomes.append(False)
        stats = window.snapshot()
        in_window = outcomes[-size:]
        assert stats.settled == len(in_window) <= size
        assert stats.lost == in_window.count(False)
        assert stats.pending == len(outstanding)
        if stats.settled == 0:
            assert stats.loss is None
        else:
            assert stats.loss is not None
            assert 0.0 <= stats.loss <= 1.0
            assert stats.loss == stats.lost / stats.settled
