"""The scenario file: a validated timeline of "at T seconds do ACTION, then wait for CONDITIONS".

A scenario is YAML (or TOML) read into frozen pydantic models that refuse unknown keys, so a
misspelt action or condition is an error before anything is built. Errors name the step (its
index and label) and the field inside it, e.g.
`steps[4] (t1): do.policies[0].selector.dst_port.first: Input should be ...`.

Each step may: wait until its `at` time (seconds from the start of the stream), `do` one
action, then `wait` until every condition holds (within `timeout_s`). A step marked
`only: soap` or `only: nsa` runs only with that decider: `soap` means the policies come from
the scenario itself through the SOAP gateway (the paper's NSA stub), `nsa` means the NSA
service decides from what it hears (metrics, binding events, retained rules and preferences).
Policies are written as the MR sees outgoing traffic (as the NSA's profiles are); the HA's
downlink document carries them mirrored.
"""

from __future__ import annotations

import tomllib
from enum import StrEnum
from ipaddress import IPv6Address
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from services.contracts.errors import ConfigError, Problem
from services.contracts.messages import BindingEventKind
from services.contracts.policy import Bid, Policy, PolicyId
from services.nsa.core import NsaConfig, OperatorRules, Preferences
from services.nsa.core.config import Protect
from services.testbed.stream import DEFAULT_CHUNK_INTERVAL_S, DEFAULT_PORT, DEFAULT_RATE_BPS

SCENARIO_DIR = Path(__file__).resolve().parents[2] / "deploy" / "testbed" / "scenarios"
Interface = Literal["eth0", "eth1"]
Node = Literal["ha", "mr"]
Router = Literal["ar1", "ar2", "ar3"]


class Decider(StrEnum):
    """Who decides the policies: the scenario through SOAP (NSA stub) or the NSA service."""

    SOAP = "soap"
    NSA = "nsa"


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


# Actions ----------------------------------------------------------------------------------


class InstallPolicies(_Model):
    """Replace both nodes' sets through the SOAP gateway (Install)."""

    action: Literal["install-policies"]
    policies: tuple[Policy, ...] = Field(min_length=1)


class UpdatePolicies(_Model):
    """Change entries by id on both nodes through the SOAP gateway (Update)."""

    action: Literal["update-policies"]
    insert: tuple[Policy, ...] = ()
    replace: tuple[Policy, ...] = ()
    delete: tuple[PolicyId, ...] = ()

    @model_validator(mode="after")
    def _something(self) -> UpdatePolicies:
        if not (self.insert or self.replace or self.delete):
            raise ValueError("an update needs at least one of insert, replace, delete")
        return self


class FlushPolicies(_Model):
    """Remove every policy of both nodes through the SOAP gateway (Flush)."""

    action: Literal["flush-policies"]


class PublishRules(_Model):
    """Publish the operator rules (retained) for the NSA."""

    action: Literal["publish-rules"]
    rules: OperatorRules


class PublishPreferences(_Model):
    """Publish every preference entry of mr1 (retained; replaces the previous ones)."""

    action: Literal["publish-preferences"]
    entries: tuple[Preferences, ...] = ()


class Detach(_Model):
    """The link leaves its access network: carrier lost, its care-of address gone."""

    action: Literal["detach"]
    link: Interface


class Attach(_Model):
    """The link joins `router`'s access network and takes an address there."""

    action: Literal["attach"]
    link: Interface
    router: Router


class Carrier(_Model):
    """The link loses or regains carrier (the AR's end goes down or up); addresses stay."""

    action: Literal["carrier"]
    link: Interface
    up: bool


class CareOf(_Model):
    """The link gets a new care-of address on the same access network (make before break)."""

    action: Literal["care-of"]
    link: Interface
    address: IPv6Address


class Degrade(_Model):
    """The link's quality changes: `loss` of the packets crossing its access router's port
    dropped in both directions (nft `numgen random`, this kernel has no netem), and
    `delay_ms` added by the access router's probe responder to every probe answer (the
    monitor's UDP probes: what the NSA sees as the link's RTT; the traffic itself is not
    delayed). Zero for both restores the link."""

    action: Literal["degrade"]
    link: Interface
    loss: float = Field(default=0.0, ge=0, le=1)
    delay_ms: float = Field(default=0.0, ge=0, le=5000)


Action = Annotated[
    InstallPolicies
    | UpdatePolicies
    | FlushPolicies
    | PublishRules
    | PublishPreferences
    | Detach
    | Attach
    | Carrier
    | CareOf
    | Degrade,
    Field(discriminator="action"),
]
SOAP_ACTIONS = (InstallPolicies, UpdatePolicies, FlushPolicies)


# Conditions -------------------------------------------------------------------------------


class Enforced(_Model):
    """Each node's PREM reported `applied` since the scenario's last action."""

    until: Literal["enforced"]
    nodes: tuple[Node, ...] = Field(default=("ha", "mr"), min_length=1)


class Flows(_Model):
    """The stream's packets use `interface` (MR counters): downlink `rx`, uplink `tx`."""

    until: Literal["flows"]
    interface: Interface
    direction: Literal["rx", "tx", "both"] = "both"
    share: float = Field(default=0.8, gt=0, le=1)
    window_s: float = Field(default=0.5, ge=0.1, le=10)
    min_packets: int = Field(default=10, ge=1)


class BindingSeen(_Model):
    """A binding event for (mr1, `bid`) of kind `event` since the last action."""

    until: Literal["binding"]
    bid: Bid
    event: BindingEventKind


class LinkStateSeen(_Model):
    """The monitor reported `interface` up or down since the last action."""

    until: Literal["link-state"]
    interface: Interface
    up: bool


class MetricsSeen(_Model):
    """The monitor's metrics for `interface` crossed a bound since the last action."""

    until: Literal["metrics"]
    interface: Interface
    metric: Literal["rtt_ms", "loss", "bitrate_bps", "signal_dbm", "jitter_ms"]
    below: float | None = None
    above: float | None = None

    @model_validator(mode="after")
    def _one_bound(self) -> MetricsSeen:
        if (self.below is None) == (self.above is None):
            raise ValueError("give exactly one of below, above")
        return self


class FallbackSeen(_Model):
    """A PREM reported a local fallback since the last action."""

    until: Literal["fallback"]
    node: Node


Condition = Annotated[
    Enforced | Flows | BindingSeen | LinkStateSeen | MetricsSeen | FallbackSeen,
    Field(discriminator="until"),
]


# Scenario ---------------------------------------------------------------------------------


class Step(_Model):
    """One point of the timeline."""

    at: float | None = Field(default=None, ge=0, description="seconds from the stream's start")
    label: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.-]{1,16}$")
    note: str = ""
    only: Decider | None = None
    do: Action | None = None
    wait: tuple[Condition, ...] = ()
    timeout_s: float = Field(default=15.0, gt=0, le=600)

    @model_validator(mode="after")
    def _does_something(self) -> Step:
        if self.at is None and self.do is None and not self.wait:
            raise ValueError("a step needs at least one of at, do, wait")
        if self.only is Decider.NSA and isinstance(self.do, SOAP_ACTIONS):
            raise ValueError("policies through SOAP are the soap decider's way, not the NSA's")
        return self

    def title(self) -> str:
        """How progress lines and the report name this step."""
        what = self.note or (self.do.action if self.do is not None else "wait")
        return f"{self.label}: {what}" if self.label else what


class StreamSpec(_Model):
    """The HTTP stream from the CN to the MNN."""

    rate_bps: int = Field(default=DEFAULT_RATE_BPS, ge=10_000, le=200_000_000)
    interval_s: float = Field(default=DEFAULT_CHUNK_INTERVAL_S, ge=0.001, le=1)
    port: int = Field(default=DEFAULT_PORT, ge=1, le=65535)


class VoiceSpec(_Model):
    """A voice-like UDP stream both ways between the CN and the MNN (`services.testbed.voice`)."""

    rate: int = Field(default=50, ge=1, le=1000, description="datagrams a second each way")
    size: int = Field(default=160, ge=8, le=1400, description="bytes of UDP payload")
    port: int = Field(default=5004, ge=1, le=65535)


class MonitorLink(_Model):
    """How the MR's monitor watches one link in this scenario."""

    protected: bool = False
    probe: Literal["icmp", "udp"] = Field(
        default="icmp", description="udp: to the access router's probe responder (delay steps)"
    )
    brownout_delay_ms: float | None = Field(default=None, gt=0)
    brownout_loss: float | None = Field(default=None, gt=0, lt=1)


class Scenario(_Model):
    """A whole scenario file."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,48}$")
    description: str = ""
    deciders: tuple[Decider, ...] = Field(default=(Decider.SOAP, Decider.NSA), min_length=1)
    stream: StreamSpec = StreamSpec()
    traces: dict[Interface, str] = Field(
        default_factory=dict, description="monitor radio trace per MR link (file or bundled)"
    )
    nsa: NsaConfig = NsaConfig()
    voice: VoiceSpec | None = Field(default=None, description="a voice stream beside the HTTP one")
    monitor: dict[Interface, MonitorLink] = Field(default_factory=dict)
    compare_protection: bool = Field(
        default=False,
        description="run twice: every protected NSA class unprotected, then as written",
    )
    end_at: float | None = Field(default=None, gt=0, description="stop the stream at this time")
    steps: tuple[Step, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> Scenario:
        for decider in Decider:
            last = 0.0
            for index, step in enumerate(self.steps):
                if step.only not in (None, decider) or step.at is None:
                    continue
                if step.at < last:
                    raise ValueError(
                        f"steps[{index}] at {step.at:g} s comes before an earlier step's {last:g} s"
                    )
                last = step.at
            if self.end_at is not None and self.end_at < last:
                raise ValueError(f"end_at {self.end_at:g} s is before the last step ({last:g} s)")
        for index, step in enumerate(self.steps):
            if step.only is not None and step.only not in self.deciders:
                raise ValueError(f"steps[{index}] is only for {step.only}, not a decider here")
        return self

    def variants(self) -> list[tuple[str, Scenario]]:
        """The runs of this scenario: itself, or with `compare_protection` first every NSA
        class with `protect` set turned to `never` ("unprotected"), then as written
        ("protected")."""
        if not self.compare_protection:
            return [("", self)]
        never = [p.model_copy(update={"protect": Protect.NEVER}) for p in self.nsa.profiles]
        bare = self.nsa.model_copy(update={"profiles": tuple(never)})
        return [
            ("unprotected", self.model_copy(update={"nsa": bare})),
            ("protected", self),
        ]

    def steps_for(self, decider: Decider) -> tuple[Step, ...]:
        """The timeline as run with `decider`."""
        return tuple(s for s in self.steps if s.only in (None, decider))


def _where(loc: tuple[int | str, ...], data: Any) -> str:
    """`steps[3] (t1): do.policies[0]...`: the step by index and label, then the field path."""
    parts: list[str] = []
    rest = list(loc)
    if len(rest) >= 2 and rest[0] == "steps" and isinstance(rest[1], int):
        index = rest[1]
        label = None
        steps = data.get("steps") if isinstance(data, dict) else None
        if isinstance(steps, list) and index < len(steps) and isinstance(steps[index], dict):
            label = steps[index].get("label")
        parts.append(f"steps[{index}]" + (f" ({label})" if label else "") + ":")
        rest = rest[2:]
        if len(rest) >= 2 and rest[0] in ("do", "wait") and isinstance(rest[1], str):
            rest = [rest[0], *rest[2:]]  # drop the discriminator tag pydantic inserts
        if len(rest) >= 3 and rest[0] == "wait" and isinstance(rest[2], str):
            rest = [rest[0], rest[1], *rest[3:]]
    path = ""
    for item in rest:
        path += f"[{item}]" if isinstance(item, int) else (f".{item}" if path else str(item))
    return " ".join(p for p in (*parts, path) if p)


def validate(data: Any, *, source: str = "scenario") -> Scenario:
    """Validate a parsed scenario; ConfigError's problems name the step and the field."""
    try:
        return Scenario.model_validate(data)
    except ValidationError as exc:
        errors = exc.errors()
        # A list whose item failed also reports "too short" (its valid items were too few):
        # noise next to the item's own error, so it is left out.
        locs = [tuple(err["loc"]) for err in errors]
        problems = [
            Problem(f"{err['msg']}", field=_where(tuple(err["loc"]), data) or None)
            for err in errors
            if not (
                err["type"] == "too_short"
                and any(
                    len(o) > len(err["loc"]) and o[: len(err["loc"])] == tuple(err["loc"])
                    for o in locs
                )
            )
        ]
        raise ConfigError([Problem(f"{source}: {len(problems)} problem(s)"), *problems]) from exc


def resolve(name_or_path: str) -> Path:
    """A shipped scenario by name (deploy/testbed/scenarios/NAME.yaml) or a file path."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml", ".toml") or "/" in name_or_path:
        return path
    for suffix in (".yaml", ".yml", ".toml"):
        candidate = SCENARIO_DIR / f"{name_or_path}{suffix}"
        if candidate.is_file():
            return candidate
    known = sorted(p.stem for p in SCENARIO_DIR.glob("*.y*ml"))
    raise ConfigError(
        [Problem(f"no scenario named {name_or_path!r} (shipped: {', '.join(known) or 'none'})")]
    )


def load(name_or_path: str) -> tuple[Scenario, Path]:
    """Read and validate a scenario; return it with the file it came from."""
    path = resolve(name_or_path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([Problem(f"cannot read {path}: {exc.strerror}")]) from exc
    try:
        data = tomllib.loads(text) if path.suffix == ".toml" else yaml.safe_load(text)
    except (tomllib.TOMLDecodeError, yaml.YAMLError) as exc:
        raise ConfigError([Problem(f"{path} does not parse: {exc}")]) from exc
    return validate(data, source=str(path)), path


def trace_path(scenario_file: Path, trace: str) -> Path:
    """A trace named in a scenario: relative to the scenario's folder when it exists there,
    else a path or a trace bundled with the monitor (left for the monitor to resolve)."""
    beside = scenario_file.parent / trace
    return beside.resolve() if beside.is_file() else Path(trace)
