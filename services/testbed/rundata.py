"""The inputs and raw measurements of one run, shared by the runner and the analysis."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.contracts.settings import BrokerSettings
from services.testbed.counters import Sample
from services.testbed.recorder import Heard
from services.testbed.scenario import Decider, Scenario
from services.testbed.timeline import StepResult


@dataclass(frozen=True)
class RunOptions:
    """How to run: which scenario and decider, where to write, what to keep."""

    scenario: Scenario
    scenario_file: Path
    decider: Decider
    out: Path
    keep: bool = False
    prefix: str = "mtb"
    backend: str = "nftables"
    broker: BrokerSettings = field(default_factory=BrokerSettings)
    #: The pipe setting asked for (`auto` or a kind); the run resolves it once.
    pipe: str = "auto"
    #: Serve the operator console during the run (`--console`).
    console: bool = False
    #: Its HOST:PORT (`--console-listen`); None: 127.0.0.1 on a free port.
    console_listen: str | None = None
    #: Seconds the test bed stays up after the scenario for a look at the console.
    console_hold_s: float = 0.0


@dataclass(frozen=True)
class ConsoleAccess:
    """Where the run's console answers and its one-time login (the password is never
    written to the run directory: only its hash, in the console's settings)."""

    url: str
    user: str
    password: str = field(repr=False)


@dataclass
class RunData:
    """Everything measured in one run (analysed by `analysis`)."""

    options: RunOptions
    topic_root: str
    t0: float = 0.0
    ended: float = 0.0
    steps: list[StepResult] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    fine_samples: list[Sample] = field(default_factory=list)  # every 10 ms: when flows moved
    heard: list[Heard] = field(default_factory=list)
    stream: dict[str, Any] = field(default_factory=dict)
    #: The voice peers' records by node (cn, mnn), when the scenario has a voice stream.
    voice: dict[str, dict[str, Any]] = field(default_factory=dict)
    tcp_before: dict[str, int] = field(default_factory=dict)
    tcp_after: dict[str, int] = field(default_factory=dict)
    tcp_connection: str = ""
    failure: str | None = None
    #: The pipe kind every node of this run builds (probed once, the same at both ends).
    pipe_kind: str = ""
    #: The console of this run (`--console`), None without one.
    console: ConsoleAccess | None = None
