"""JSON messages on the bus. Every message carries the common envelope fields.

Policy documents are the exception: they travel as the same XML the SOAP path carries (see
`policy_xml`), so there is one parser for them.
"""

from __future__ import annotations

import time
from enum import StrEnum
from typing import Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from services.contracts.policy import Bid, Direction, NodeId, PolicyId

SCHEMA_VERSION = 1  # the value of Envelope.schema_version this code writes


class Envelope(BaseModel):
    """Fields every message carries: schema version, sender node, send time and sequence."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    schema_version: Literal[1] = 1
    sender: NodeId
    timestamp: float = Field(default_factory=time.time, ge=0)
    sequence: int = Field(default=0, ge=0)


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


class BindingEvent(Envelope):
    """A change of one MCoA binding, from Binding Update / Acknowledgement signalling."""

    kind: Literal["binding-event"] = "binding-event"
    event: BindingEventKind
    mobile_router: NodeId
    bid: Bid
    care_of_address: str | None = None
    previous_care_of_address: str | None = None
    lifetime_s: int | None = Field(default=None, ge=0)
    status: int | None = Field(default=None, ge=0, le=255)
    status_name: str | None = None


class Refusal(BaseModel):
    """Why a message or one of its entries was refused."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    reason: str
    policy_id: PolicyId | None = None
    field: str | None = None
    line: int | None = None


class FallbackState(BaseModel):
    """A policy whose primary BID is unusable, and the BID its flows use instead."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    policy_id: PolicyId
    primary_bid: Bid
    active_bid: Bid | None


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


MessageT = TypeVar("MessageT", bound=Envelope)


def decode(model: type[MessageT], payload: bytes) -> MessageT:
    """Parse one JSON payload into `model` (raises pydantic.ValidationError)."""
    return model.model_validate_json(payload)


def encode(message: Envelope) -> bytes:
    """Serialise a message for the bus."""
    return message.model_dump_json().encode()
