"""JSON messages on the bus. Every message carries the common envelope fields.

Policy documents are the exception: they travel as the same XML the SOAP path carries (see
`policy_xml`), so there is one parser for them.
"""

from __future__ import annotations

import time
from enum import StrEnum
from typing import Annotated, Literal, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from services.contracts.echo import FIELD_LIMIT, ID_LIMIT, REASON_LIMIT, echo
from services.contracts.policy import Bid, Direction, NodeId, PolicyId
from services.contracts.topics import is_segment

SCHEMA_VERSION = 1  # the value of Envelope.schema_version this code writes


class Envelope(BaseModel):
    """Fields every message carries: schema version, sender node, send time and sequence.

    Numbers are finite: JSON parsers accept `Infinity` and `NaN`, and one message with an
    infinite timestamp would make every later one of its link look stale forever.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    schema_version: Literal[1] = 1
    sender: NodeId
    timestamp: float = Field(default_factory=time.time, ge=0)
    sequence: int = Field(default=0, ge=0)


def _absent(value: object) -> bool:
    return value is None


class LinkMetrics(Envelope):
    """Measured state of one access link over the last period."""

    kind: Literal["link-metrics"] = "link-metrics"
    interface: str
    bid: Bid
    technology: Literal["wlan", "wimax", "umts", "lte", "nr", "ethernet"]
    rtt_ms: float | None = Field(default=None, ge=0)
    jitter_ms: float | None = Field(default=None, ge=0)
    loss: float | None = Field(default=None, ge=0, le=1)
    rx_bps: float | None = Field(default=None, ge=0)
    tx_bps: float | None = Field(default=None, ge=0)
    signal_dbm: float | None = None
    noise_dbm: float | None = None
    bitrate_bps: float | None = Field(default=None, ge=0)
    cost_per_mb: float | None = Field(default=None, ge=0)
    # Optional, written only when known (issue 19), so a report without them reads as before:
    # the probes' own traffic (both directions, IP and up), and the link's data budget in its
    # billing period (`period_end`: unix time).
    probe_bytes_per_hour: float | None = Field(default=None, ge=0, exclude_if=_absent)
    budget_bytes: int | None = Field(default=None, gt=0, exclude_if=_absent)
    budget_used_bytes: int | None = Field(default=None, ge=0, exclude_if=_absent)
    budget_period_end: float | None = Field(default=None, ge=0, exclude_if=_absent)
    # Optional, written only when known (issue 16): packets per second received and sent over
    # the last period, from the interface counters (the console's per-link packet-rate chart).
    rx_pps: float | None = Field(default=None, ge=0, exclude_if=_absent)
    tx_pps: float | None = Field(default=None, ge=0, exclude_if=_absent)


#: Links one `NodeMetrics` may carry: a mobile router has a handful of access links; a
#: message listing more is refused before any of its entries is used.
NODE_METRICS_LINKS = 16


class NodeMetrics(Envelope):
    """The periodic metrics of several links of one node in one message (the monitor's
    `batch_metrics`), on the node's metrics topic (`Topics.node_metrics`).

    Why: at fleet scale the broker and the NSA pay per message far more than per byte (measured:
    ~27 us of mosquitto's CPU per message, whatever its size), and a mobile router's monitor
    sends over metered links. One message per node and period instead of one per link cuts
    both by the number of links. Each entry is a whole `LinkMetrics` of this node (same
    sender), so a consumer hands each to the code that reads a link's own report; an entry
    keeps its own timestamp and sequence.
    """

    kind: Literal["node-metrics"] = "node-metrics"
    links: tuple[LinkMetrics, ...] = Field(min_length=1, max_length=NODE_METRICS_LINKS)

    @model_validator(mode="after")
    def _of_this_node(self) -> NodeMetrics:
        seen: set[str] = set()
        for index, entry in enumerate(self.links):
            if entry.sender != self.sender:
                raise ValueError(
                    f"links.{index}: sender {entry.sender!r} is not the message's {self.sender!r}"
                )
            if not is_segment(entry.interface):
                raise ValueError(
                    f"links.{index}: interface {entry.interface[:FIELD_LIMIT]!r} cannot be a link "
                    "name (letters, digits, _.:-, at most 64)"
                )
            if entry.interface in seen:
                raise ValueError(f"links.{index}: interface {entry.interface!r} appears twice")
            seen.add(entry.interface)
        return self


class LinkState(Envelope):
    """Whether an access link can carry traffic, and why it changed."""

    kind: Literal["link-state"] = "link-state"
    interface: str
    bid: Bid
    up: bool
    carrier: bool
    addresses: tuple[str, ...] = ()
    reason: str = ""


class BindingEventKind(StrEnum):
    """What happened to one binding (MR, BID)."""

    REGISTERED = "registered"
    REFRESHED = "refreshed"
    COA_CHANGED = "coa-changed"
    HANDOVER_STARTED = "handover-started"
    DEREGISTERED = "deregistered"
    EXPIRED = "expired"
    REJECTED = "rejected"


#: A pipe kind's name (`vxlan`, `ip6tnl`, `seg6`: services/mcoa/pipe_kinds.py).
PipeKindName = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,15}$")]


class BindingEvent(Envelope):
    """A change of one MCoA binding, from Binding Update / Acknowledgement signalling.

    `pipe` is the kind of bit pipe the binding uses (or, in a `rejected` event, asked for), when
    its producer knows it: the MCoA agent's home agent always does, mobility-events when the BU
    or BA carried the kind option (services/mobility_header/pipe_option.py). None means
    unknown; an event without it is written without the key, as before the field existed.
    """

    kind: Literal["binding-event"] = "binding-event"
    event: BindingEventKind
    mobile_router: NodeId
    bid: Bid
    care_of_address: str | None = None
    previous_care_of_address: str | None = None
    lifetime_s: int | None = Field(default=None, ge=0)
    status: int | None = Field(default=None, ge=0, le=255)
    status_name: str | None = None
    pipe: PipeKindName | None = Field(default=None, exclude_if=lambda value: value is None)


def _echoed(limit: int) -> BeforeValidator:
    """Any string becomes its echo before validation, so the field never refuses a string."""

    def to_echo(value: object) -> object:
        return echo(value, limit) if isinstance(value, str) else value

    return BeforeValidator(to_echo)


#: Texts that repeat untrusted input (`services.contracts.echo`): printable ASCII, bounded.
EchoedReason = Annotated[str, _echoed(REASON_LIMIT)]
EchoedId = Annotated[str, _echoed(ID_LIMIT)]
EchoedField = Annotated[str, _echoed(FIELD_LIMIT)]


class Refusal(BaseModel):
    """Why a message or one of its entries was refused.

    `policy_id` echoes the id as the document spelled it, which may be exactly what was
    refused (`a;b`, 65 characters, a newline): it is an echo, not a `PolicyId`, so building
    the refusal can never fail on it.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    reason: EchoedReason
    policy_id: EchoedId | None = None
    field: EchoedField | None = None
    line: int | None = None


class StatusWarning(BaseModel):
    """Something about an applied message the sender should know (a policy that can never
    match); the message was applied all the same."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    reason: EchoedReason
    policy_id: EchoedId | None = None
    field: EchoedField | None = None


class FallbackState(BaseModel):
    """A policy whose primary BID is unusable, and the BID its flows use instead.

    For a balance or duplicate policy (version-2 documents): listed when any of its shares or
    paths is unusable or cannot take a copy; `primary_bid` is its first share or path,
    `active_bid` where the first bucket or the original packet goes now, `active_bids` every
    BID it uses now and `skipped_bids` its shares or paths left out.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    policy_id: PolicyId
    primary_bid: Bid
    active_bid: Bid | None
    active_bids: tuple[Bid, ...] = ()
    skipped_bids: tuple[Bid, ...] = ()


class PolicyStatus(Envelope):
    """A PREM worker's acknowledgement of one policy message (or a fallback change)."""

    kind: Literal["policy-status"] = "policy-status"
    node: NodeId
    mobile_router: NodeId
    direction: Direction
    result: Literal["applied", "refused", "fallback"]
    version: int = Field(ge=0, description="the version now enforced")
    requested_version: int | None = Field(default=None, ge=0)
    inserted: int = Field(default=0, ge=0)
    deleted: int = Field(default=0, ge=0)
    replaced: int = Field(default=0, ge=0)
    refusals: tuple[Refusal, ...] = ()
    warnings: tuple[StatusWarning, ...] = ()
    fallbacks: tuple[FallbackState, ...] = ()
    elapsed_ms: float = Field(default=0.0, ge=0)
    backend: str = ""


class Presence(Envelope):
    """Hello on start (online, with the enforced version) or the last will (offline)."""

    kind: Literal["presence"] = "presence"
    node: NodeId
    service: str
    online: bool
    version: int | None = Field(default=None, ge=0)


class DeadLetter(Envelope):
    """An input whose handling raised where it should have answered: set aside, not retried.

    A service acknowledges such an input (so that the broker does not redeliver it for ever),
    publishes this on `Topics.dead_letter(node, service)` and goes on. The head of the payload
    travels with it (base64), enough to reproduce the failure from a small input.
    """

    kind: Literal["dead-letter"] = "dead-letter"
    node: NodeId
    service: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")]
    source: EchoedReason = Field(description="the topic, or where else the input came from")
    input: EchoedField = Field(description="what kind of input it was (policy, status, ...)")
    error: EchoedField = Field(description="the exception's type")
    reason: EchoedReason
    payload_bytes: int = Field(ge=0)
    payload_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    payload_head: str = Field(description="base64 of the payload's first bytes")


#: The longest a pin may last (a day); a longer override is an operator rule, not a pin.
PIN_MAX_S = 86_400
#: The longest reason an operator may give for a pin (printable text, no line breaks).
PIN_REASON_LIMIT = 200
#: An operator's user name (console users: services/console/auth.py).
OperatorUser = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.@-]{1,64}$")]
#: A class (application profile) name as it can appear in a pin.
ClassName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")]


class PinRequest(Envelope):
    """An operator asks to pin one class of one mobile router to a BID for a time, or to
    release it (`Topics.pin(mr)`, QoS 1, not retained).

    `bid` None with `release` true removes the class's pin; a pin needs a `bid` and a
    `duration_s` (1 s to a day). `user` is who asked, as the console's session knows it (never
    a form field). The NSA owning the router answers with an `AuditRecord` either way.
    """

    kind: Literal["pin-request"] = "pin-request"
    mobile_router: NodeId
    class_name: ClassName
    bid: Bid | None = None
    release: bool = False
    duration_s: int | None = Field(default=None, ge=1, le=PIN_MAX_S)
    user: OperatorUser
    reason: str = Field(default="", max_length=PIN_REASON_LIMIT, pattern=r"^[ -~]*$")

    @model_validator(mode="after")
    def _pin_or_release(self) -> PinRequest:
        if self.release:
            if self.bid is not None or self.duration_s is not None:
                raise ValueError("a release names neither a bid nor a duration_s")
        elif self.bid is None or self.duration_s is None:
            raise ValueError("a pin needs a bid and a duration_s (or release: true)")
        return self


class AuditRecord(Envelope):
    """What the NSA did with an operator action (`Topics.audit(mr)`, QoS 1, not retained):
    who asked, when, what, and the outcome (`applied`, `released`, `refused` with the field
    and why, `expired` when a pin ran out)."""

    kind: Literal["audit"] = "audit"
    mobile_router: NodeId
    user: EchoedId
    action: Literal["pin", "release", "expire"]
    class_name: EchoedId
    bid: Bid | None = None
    until: float | None = Field(default=None, ge=0)
    requested_at: float = Field(ge=0, description="the request's timestamp")
    outcome: Literal["applied", "released", "refused", "expired"]
    field: EchoedField | None = None
    detail: EchoedReason = ""
    reason: EchoedReason = ""


MessageT = TypeVar("MessageT", bound=Envelope)


def decode(model: type[MessageT], payload: bytes) -> MessageT:
    """Parse one JSON payload into `model` (raises pydantic.ValidationError)."""
    return model.model_validate_json(payload)


def encode(message: Envelope) -> bytes:
    """Serialise a message for the bus."""
    return message.model_dump_json().encode()
