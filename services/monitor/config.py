"""Settings of the link monitor (the `[monitor]` table): the node's links and how to watch them.

Everything that can be checked without the kernel is checked here (duplicate interfaces or BIDs,
addresses, probe kinds, trace files); that the interfaces exist is checked by the service at
start, in the node's namespace, with an error that names the missing ones.
"""

from __future__ import annotations

from enum import StrEnum
from ipaddress import IPv4Address, IPv6Address
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from services.contracts.policy import Bid, NodeId
from services.contracts.settings import ListenAddress
from services.monitor.brownout import BrownoutSettings
from services.monitor.budget import BudgetPeriod
from services.monitor.change import ChangeSettings
from services.monitor.probe import DEFAULT_PROBE_PORT, ProbeKind, ProbeTarget
from services.monitor.state import LinkStateSettings
from services.monitor.stats import ProbeSettings
from services.monitor.trace import TRACES_DIR, TraceError, TraceSample, load_trace

Technology = Literal["wlan", "wimax", "umts", "lte", "nr", "ethernet"]
#: A Linux interface name (IFNAMSIZ - 1) that is also a topic segment.
INTERFACE_PATTERN = r"^[A-Za-z0-9_.:-]{1,15}$"


class RadioSource(StrEnum):
    """Where a link's radio values come from."""

    NONE = "none"
    NL80211 = "nl80211"  # a wireless interface this kernel can read
    TRACE = "trace"  # a replayed CSV/JSON-lines series, for radios that cannot be attached here


class ProbeConfig(BaseModel):
    """The active probe of one link: what to send, to whom, from where."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: ProbeKind = ProbeKind.ICMP
    target: IPv6Address | IPv4Address = Field(
        description="the access router or the HA, reachable over this link"
    )
    port: int = Field(default=DEFAULT_PROBE_PORT, ge=1, le=65535, description="UDP probes only")
    source: IPv6Address | IPv4Address | None = Field(
        default=None, description="source address; default: the kernel's choice on the link"
    )

    @model_validator(mode="after")
    def _families(self) -> ProbeConfig:
        if self.source is not None and self.source.version != self.target.version:
            raise ValueError(
                f"source {self.source} and target {self.target} are of different families"
            )
        return self


class TraceConfig(BaseModel):
    """A radio trace: a file, or the name of one shipped with the monitor, and its pace."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    file: str = Field(description="path, or a bundled trace name such as walk_out_of_wlan.csv")
    speed: float = Field(default=1.0, gt=0, le=1000, description="trace seconds per second")
    loop: bool = Field(default=False, description="start again after the last sample")

    def path(self) -> Path:
        """The file to read: a bundled trace by bare name, else the path as given."""
        bundled = TRACES_DIR / self.file
        if "/" not in self.file and bundled.is_file():
            return bundled
        return Path(self.file)

    def load(self) -> tuple[TraceSample, ...]:
        """Read and validate the samples (raises TraceError naming the line and column)."""
        return load_trace(self.path())


class LinkConfig(BaseModel):
    """One access link of the node: its device, its binding and how it is measured."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    interface: str = Field(pattern=INTERFACE_PATTERN)
    bid: Bid
    technology: Technology
    cost_per_mb: float = Field(default=0.0, ge=0)
    probe: ProbeConfig | None = Field(
        default=None, description="no probe: the link is up exactly when it has carrier"
    )
    radio: RadioSource = RadioSource.NONE
    trace: TraceConfig | None = None
    protected: bool = Field(
        default=False, description="carries a protected class: probe every fast_interval_s"
    )
    metered: bool = Field(
        default=False, description="paid by volume: probe every relaxed_interval_s"
    )
    interval_s: float | None = Field(
        default=None, ge=0.01, le=600, description="this link's probe interval, overriding all"
    )
    brownout_delay_ms: float | None = Field(
        default=None, gt=0, description="report at once when a probe's RTT exceeds this"
    )
    brownout_loss: float | None = Field(
        default=None, gt=0, lt=1, description="report at once when the short window's loss does"
    )
    budget_bytes: int | None = Field(default=None, gt=0, description="data budget per period")
    budget_period: BudgetPeriod | None = Field(
        default=None, description="the billing period (default: monthly from day 1)"
    )

    @model_validator(mode="after")
    def _trace_given(self) -> LinkConfig:
        if (self.radio is RadioSource.TRACE) != (self.trace is not None):
            raise ValueError("radio = 'trace' and a [trace] table go together")
        if self.probe is None and (
            self.brownout_delay_ms is not None or self.brownout_loss is not None
        ):
            raise ValueError("brownout thresholds need a probe")
        if self.budget_period is not None and self.budget_bytes is None:
            raise ValueError("budget_period without budget_bytes")
        return self

    @property
    def watches_brownout(self) -> bool:
        """Whether this link has a brownout threshold."""
        return self.brownout_delay_ms is not None or self.brownout_loss is not None

    @property
    def period(self) -> BudgetPeriod:
        """The billing period in force (monthly from day 1 unless configured)."""
        return self.budget_period or BudgetPeriod()

    def probe_target(self) -> ProbeTarget | None:
        """The prober's view of this link's probe."""
        if self.probe is None:
            return None
        return ProbeTarget(
            kind=self.probe.kind,
            address=self.probe.target,
            port=self.probe.port,
            interface=self.interface,
            source=self.probe.source,
        )


class MonitorSettings(BaseModel):
    """Validated settings of one monitor (one per node)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    node: NodeId
    links: tuple[LinkConfig, ...] = Field(min_length=1)
    interval_s: float = Field(default=1.0, ge=0.01, le=60, description="probe interval")
    fast_interval_s: float = Field(default=0.1, ge=0.01, le=60)
    fast: bool = Field(default=False, description="probe every fast_interval_s instead")
    relaxed_interval_s: float = Field(
        default=10.0, ge=0.01, le=600, description="probe interval of metered links"
    )
    probe_timeout_s: float = Field(
        default=1.0, gt=0, le=60, description="an unanswered probe is lost after this long"
    )
    window: ProbeSettings = ProbeSettings()
    state: LinkStateSettings = LinkStateSettings()
    publish: ChangeSettings = ChangeSettings(period_s=1.0)
    brownout: BrownoutSettings = BrownoutSettings()
    budget_state: Path | None = Field(
        default=None, description="where budgeted links' used volume is kept across restarts"
    )
    budget_save_s: float = Field(
        default=60.0, gt=0, le=3600, description="save the used volume at most this often"
    )
    metrics_listen: ListenAddress | None = Field(
        default=None, description="HOST:PORT of the Prometheus /metrics endpoint; None: off"
    )
    batch_metrics: bool = Field(
        default=False,
        description="publish the links' periodic metrics as one NodeMetrics per node and "
        "period on <root>/node/<node>/metrics instead of one LinkMetrics per link (fewer "
        "messages for the broker, the NSA and a metered uplink); a material change still goes "
        "out at once",
    )

    @model_validator(mode="after")
    def _links_distinct(self) -> MonitorSettings:
        interfaces: set[str] = set()
        bids: dict[int, str] = {}
        for link in self.links:
            if link.interface in interfaces:
                raise ValueError(f"interface {link.interface} is listed twice")
            interfaces.add(link.interface)
            if link.bid in bids:
                raise ValueError(
                    f"BID {link.bid} is given to both {bids[link.bid]} and {link.interface}"
                )
            bids[link.bid] = link.interface
        budgeted = [link.interface for link in self.links if link.budget_bytes is not None]
        if budgeted and self.budget_state is None:
            raise ValueError(
                f"{', '.join(budgeted)} have a budget_bytes: budget_state must name the file "
                "that keeps the used volume across restarts"
            )
        return self

    def interval_for(self, link: LinkConfig) -> float:
        """A link's probe interval: its own; else fast for a protected link (or everywhere with
        --fast); else relaxed for a metered one; else `interval_s`. Protected beats metered:
        a protected class needs the detection more than the volume matters."""
        if link.interval_s is not None:
            return link.interval_s
        if link.protected or self.fast:
            return self.fast_interval_s
        if link.metered:
            return self.relaxed_interval_s
        return self.interval_s

    def report_period_for(self, link: LinkConfig) -> float:
        """How often a link's periodic metrics come: the publish period, or the link's probe
        interval when longer (a report is made only in a probe round). `batch_metrics` holds
        a link's report for at most this long."""
        return max(self.publish.period_s, self.interval_for(link))

    @property
    def probe_interval_s(self) -> float:
        """The interval in force (fast mode or normal)."""
        return self.fast_interval_s if self.fast else self.interval_s

    def load_traces(self) -> dict[str, tuple[TraceSample, ...]]:
        """Every link's trace, read now so that a bad file stops the start, not the run."""
        traces: dict[str, tuple[TraceSample, ...]] = {}
        for link in self.links:
            if link.trace is None:
                continue
            try:
                traces[link.interface] = link.trace.load()
            except OSError as exc:
                raise TraceError(str(link.trace.path()), 0, None, exc.strerror or str(exc)) from exc
        return traces
