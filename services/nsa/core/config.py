"""What the NSA is told to want: user preferences, application profiles and operator rules.

All of it is configuration (retained MQTT topics or a file), validated whole before use, so a
bad update is refused and the last good configuration keeps deciding. Cross-references (a rule
or preference naming a class that no profile defines) are errors too: a typo must not silently
turn a rule off.

Profile selectors are written as the MR sees outgoing traffic (source = the mobile network
side); the HA's downlink documents carry them mirrored (see `plan`).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal, get_args

from pydantic import AfterValidator, Field, ValidationInfo, field_validator, model_validator

from services.contracts.messages import LinkMetrics
from services.contracts.policy import (
    MAX_TIER_RATE_BPS,
    MIN_TIER_RATE_BPS,
    Bid,
    NodeId,
    Selector,
)
from services.nsa.core.frozen import Frozen

ClassName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,48}$")]
UserId = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.@-]{1,64}$")]

#: The access technologies a monitor can report, taken from the contract (not repeated here).
TECHNOLOGIES: frozenset[str] = frozenset(
    get_args(LinkMetrics.model_fields["technology"].annotation)
)


def _known_technology(value: str) -> str:
    if value not in TECHNOLOGIES:
        known = ", ".join(sorted(TECHNOLOGIES))
        raise ValueError(f"unknown access technology {value!r} (known: {known})")
    return value


Technology = Annotated[str, AfterValidator(_known_technology)]
#: A link named by its BID or by its access technology (in priority orders and shares).
LinkRef = Bid | Technology


def ref_matches(ref: int | str, bid: int, technology: str | None) -> bool:
    """Whether a BID-or-technology reference names the link (bid, technology)."""
    return ref == bid if isinstance(ref, int) else ref == technology


class SteeringMode(StrEnum):
    """How a class picks among its eligible links.

    The 3GPP ATSSS names are accepted as other spellings: "smallest-delay" of
    "lowest-delay" and "active-standby" of "priority"; the names written back (explanations,
    the console) stay ours.
    """

    BEST = "best"  # highest multi-attribute score
    PRIORITY = "priority"  # active-standby: first eligible in `order`
    LOWEST_DELAY = "lowest-delay"  # also accepted as "smallest-delay"
    CHEAPEST = "cheapest"
    LOAD_SHARING = "load-sharing"  # flows (selectors) spread over links by `shares`
    LOAD_BALANCING = "load-balancing"  # every flow's policy a weighted balance (`shares`)
    REDUNDANT = "redundant"  # every packet on the best `paths` eligible links (duplicate)
    #: Fill the first eligible link of `order` up to its capacity; new flows overflow to the
    #: next (a `priority` policy action, metered per flow by the PREM).
    PRIORITY_OVERFLOW = "priority-overflow"

    @classmethod
    def _missing_(cls, value: object) -> SteeringMode | None:
        return _SPELLINGS.get(value) if isinstance(value, str) else None


#: Other accepted spellings of steering modes (the 3GPP ATSSS names).
_SPELLINGS = {"smallest-delay": SteeringMode.LOWEST_DELAY, "active-standby": SteeringMode.PRIORITY}


class Protect(StrEnum):
    """Whether a single-link class is duplicated onto a second link when its link is at risk."""

    NEVER = "never"
    #: Duplicate over the class's link and the best other eligible link as soon as its link's
    #: delay, jitter or loss reaches `risk_fraction` of the class's bound; back to one link
    #: once the link has stayed below that for `protect_hold_s`.
    WHEN_AT_RISK = "when-at-risk"


#: The modes that rank links by the configured `order` (ties: the score).
ORDERED_MODES = frozenset({SteeringMode.PRIORITY, SteeringMode.PRIORITY_OVERFLOW})

#: The steering modes that keep each flow on one link (the stability rule of `stability`).
SINGLE_LINK_MODES = frozenset(
    {SteeringMode.BEST, SteeringMode.PRIORITY, SteeringMode.LOWEST_DELAY, SteeringMode.CHEAPEST}
)


class ScoringMethod(StrEnum):
    """How the attributes of a link combine into one score in [0, 1]."""

    UTILITY = "utility"  # normalised weighted sum (simple additive weighting)
    TOPSIS = "topsis"  # closeness to the ideal link


class Weights(Frozen):
    """How much the user cares about each attribute; only the ratios matter."""

    cost: float = Field(default=1.0, ge=0)
    delay: float = Field(default=1.0, ge=0)
    bandwidth: float = Field(default=1.0, ge=0)
    security: float = Field(default=1.0, ge=0)

    @model_validator(mode="after")
    def _some_weight(self) -> Weights:
        if self.cost + self.delay + self.bandwidth + self.security <= 0:
            raise ValueError("at least one of cost, delay, bandwidth, security must be > 0")
        return self


class Requirements(Frozen):
    """Hard needs of a class; a link that misses one (or does not report it) is not eligible.

    `max_delay_ms` is compared with the measured round-trip time, the delay the monitor
    measures. `dscp`, when set, is the marking of the class's packets: it is added to every
    selector that has none.
    """

    min_bandwidth_bps: float | None = Field(default=None, gt=0)
    max_delay_ms: float | None = Field(default=None, gt=0)
    max_jitter_ms: float | None = Field(default=None, ge=0)
    max_loss: float | None = Field(default=None, ge=0, le=1)
    dscp: int | None = Field(default=None, ge=0, le=63)


class Share(Frozen):
    """The weight of a link (by BID or technology) in a load-sharing or load-balancing class."""

    link: LinkRef
    weight: float = Field(gt=0)


_SHARED = frozenset({SteeringMode.LOAD_SHARING, SteeringMode.LOAD_BALANCING})


class Capacity(Frozen):
    """What a link (by BID or technology) can carry of a priority-overflow class, bits per
    second: above it new flows of the class overflow to the next link. An achievable rate,
    not the nominal one (a WLAN saturates well below its PHY rate)."""

    link: LinkRef
    bps: float = Field(ge=MIN_TIER_RATE_BPS, le=MAX_TIER_RATE_BPS)


class ApplicationProfile(Frozen):
    """One application class: which flows it holds, what they need, and how to steer them.

    Each selector is one flow unit with policy id "<name>.<index>" and priority
    `priority + index`, so the profile's order is the precedence order and ids stay stable
    across decisions.
    """

    name: ClassName
    selectors: tuple[Selector, ...] = Field(min_length=1)
    requirements: Requirements = Requirements()
    steering: SteeringMode = SteeringMode.BEST
    order: tuple[LinkRef, ...] = Field(
        default=(), description="priority and priority-overflow modes: best first"
    )
    capacities: tuple[Capacity, ...] = Field(
        default=(), description="priority-overflow: what each link takes before overflowing"
    )
    shares: tuple[Share, ...] = Field(
        default=(), description="load sharing and load balancing; unlisted: 1.0"
    )
    paths: int | None = Field(
        default=None, ge=2, le=4, description="redundant: links per packet (None: 2)"
    )
    bulk: bool = Field(
        default=False,
        description="leaves a link whose data budget is used beyond the NSA's bulk_budget_share",
    )
    protect: Protect = Protect.NEVER
    risk_fraction: float = Field(
        default=0.8, gt=0, le=1, description="at risk from this fraction of a bound"
    )
    protect_hold_s: float = Field(
        default=10.0, ge=0, description="protection ends after this long healthy"
    )
    method: ScoringMethod | None = Field(default=None, description="None: the NSA's default")
    priority: int = Field(default=1000, ge=0, le=65535)
    user: UserId | None = Field(default=None, description="whose preferences apply")
    mobile_routers: frozenset[NodeId] | None = Field(default=None, description="None: all")

    # Field validators (not the model's) so that a refusal names the field itself; they see
    # the fields declared before them in `info.data` (absent when those failed).
    @field_validator("paths")
    @classmethod
    def _paths_for_redundant(cls, value: int | None, info: ValidationInfo) -> int | None:
        if value is not None and info.data.get("steering") is not SteeringMode.REDUNDANT:
            raise ValueError("`paths` is only for redundant steering")
        return value

    @field_validator("protect")
    @classmethod
    def _protect_needs(cls, value: Protect, info: ValidationInfo) -> Protect:
        if value is Protect.NEVER or "steering" not in info.data:
            return value
        steering = info.data["steering"]
        if steering not in SINGLE_LINK_MODES:
            raise ValueError(
                "protect when-at-risk is for single-link steering (best, priority, "
                f"lowest-delay, cheapest), not {steering.value}"
            )
        need = info.data.get("requirements")
        if isinstance(need, Requirements) and (
            need.max_delay_ms is None and need.max_jitter_ms is None and need.max_loss is None
        ):
            raise ValueError(
                "protect when-at-risk needs a bound to watch: requirements.max_delay_ms, "
                "max_jitter_ms or max_loss"
            )
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ApplicationProfile:
        if self.steering in ORDERED_MODES and not self.order:
            raise ValueError(
                f"{self.steering.value} steering needs an `order` of BIDs or technologies"
            )
        if self.order and self.steering not in ORDERED_MODES:
            raise ValueError("`order` is only for priority and priority-overflow steering")
        if self.steering is SteeringMode.PRIORITY_OVERFLOW and not self.capacities:
            raise ValueError(
                "priority-overflow steering needs `capacities`: what a link carries of the "
                "class before new flows overflow to the next"
            )
        if self.capacities and self.steering is not SteeringMode.PRIORITY_OVERFLOW:
            raise ValueError("`capacities` are only for priority-overflow steering")
        if len({c.link for c in self.capacities}) != len(self.capacities):
            raise ValueError("a link appears twice in `capacities`")
        if self.shares and self.steering not in _SHARED:
            raise ValueError("`shares` are only for load-sharing and load-balancing steering")
        if len(set(self.order)) != len(self.order):
            raise ValueError("a link appears twice in `order`")
        if len({s.link for s in self.shares}) != len(self.shares):
            raise ValueError("a link appears twice in `shares`")
        if self.priority + len(self.selectors) - 1 > 65535:
            raise ValueError("priority + number of selectors - 1 exceeds 65535")
        dscp = self.requirements.dscp
        for index, selector in enumerate(self.selectors):
            if dscp is not None and selector.dscp not in (None, dscp):
                raise ValueError(f"selector {index} has DSCP {selector.dscp}, the class {dscp}")
        return self

    def path_count(self) -> int:
        """Redundant steering: how many links carry each packet."""
        return 2 if self.paths is None else self.paths

    def flow_selectors(self) -> tuple[Selector, ...]:
        """The selectors as enforced: the class DSCP filled in where a selector has none."""
        dscp = self.requirements.dscp
        if dscp is None:
            return self.selectors
        return tuple(
            s if s.dscp is not None else s.model_copy(update={"dscp": dscp}) for s in self.selectors
        )

    def policy_id(self, index: int) -> str:
        """The deterministic policy id of selector `index`, so diffs are stable."""
        return f"{self.name}.{index}"

    def applies_to(self, mobile_router: str) -> bool:
        """Whether this class is steered on `mobile_router`."""
        return self.mobile_routers is None or mobile_router in self.mobile_routers


class Preferences(Frozen):
    """A user's weights, per class with a default, for one scope.

    Scopes, most specific first: (mobile router, user), (mobile router), everything (both
    None). A user is named within one mobile router (a personal router carries its users).
    """

    mobile_router: NodeId | None = None
    user: UserId | None = None
    default: Weights | None = None
    classes: dict[ClassName, Weights] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _scoped(self) -> Preferences:
        if self.user is not None and self.mobile_router is None:
            raise ValueError("a user's preferences must name their mobile_router")
        return self

    def scope(self) -> tuple[str | None, str | None]:
        """The (mobile router, user) these preferences apply to."""
        return (self.mobile_router, self.user)


class ClassRule(Frozen):
    """The operator's constraints on one class (or the default for all classes)."""

    technologies: frozenset[Technology] | None = Field(default=None, description="None: any")
    max_cost_per_mb: float | None = Field(default=None, ge=0)
    min_security: int | None = Field(default=None, ge=0)


class Exclusion(Frozen):
    """A BID the operator forbids: on one or every mobile router, for one or every class."""

    bid: Bid
    mobile_router: NodeId | None = None
    class_name: ClassName | None = None

    def covers(self, mobile_router: str, bid: int, class_name: str) -> bool:
        """Whether this exclusion forbids `bid` for `class_name` on `mobile_router`."""
        return (
            self.bid == bid
            and self.mobile_router in (None, mobile_router)
            and self.class_name in (None, class_name)
        )


class LinkSecurity(Frozen):
    """A security level for one link, overriding its technology's level."""

    mobile_router: NodeId
    bid: Bid
    level: int = Field(ge=0)


#: Assumed levels: cellular links are operator-authenticated and encrypted on the radio,
#: a WLAN is often open. Override them in `OperatorRules.security_levels`.
DEFAULT_SECURITY_LEVELS: dict[str, int] = {
    "ethernet": 3,
    "lte": 3,
    "nr": 3,
    "umts": 2,
    "wimax": 2,
    "wlan": 1,
}


class OperatorRules(Frozen):
    """Constraints that bind every user: per-class rules, excluded BIDs, security levels."""

    default: ClassRule = ClassRule()
    classes: dict[ClassName, ClassRule] = Field(default_factory=dict)
    excluded: tuple[Exclusion, ...] = ()
    security_levels: dict[Technology, int] = Field(
        default_factory=lambda: dict(DEFAULT_SECURITY_LEVELS)
    )
    link_security: tuple[LinkSecurity, ...] = ()

    def rule_for(self, class_name: str) -> ClassRule:
        """The class's own rule, else the default rule."""
        return self.classes.get(class_name, self.default)

    def excludes(self, mobile_router: str, bid: int, class_name: str) -> bool:
        """Whether the operator forbids `bid` for this class on this mobile router."""
        return any(e.covers(mobile_router, bid, class_name) for e in self.excluded)

    def security_of(self, mobile_router: str, bid: int, technology: str) -> int:
        """The link's own level if configured, else its technology's level (unknown: 0)."""
        for entry in self.link_security:
            if entry.mobile_router == mobile_router and entry.bid == bid:
                return entry.level
        return self.security_levels.get(technology, 0)


class NsaSettings(Frozen):
    """How the NSA decides and delivers.

    `margin` is in score units (scores lie in [0, 1]): a challenger must beat the current
    link by more than this, continuously for `dwell_s` seconds, before a class moves.
    `scheme` 1 sends downlink documents to the HA and uplink ones to the MR; scheme 2 sends
    one symmetric downlink document to the HA, whose worker mirrors it to the MR.
    """

    method: ScoringMethod = ScoringMethod.UTILITY
    margin: float = Field(default=0.1, ge=0, le=1)
    dwell_s: float = Field(default=10.0, ge=0)
    fallbacks: bool = Field(default=True, description="list the other eligible BIDs")
    max_metrics_age_s: float | None = Field(default=None, gt=0, description="None: no limit")
    scheme: Literal[1, 2] = 1
    bulk_budget_share: float = Field(
        default=0.8,
        gt=0,
        le=1,
        description="bulk classes leave a link with more of its budget used",
    )


class NsaConfig(Frozen):
    """Everything the NSA is told: settings, profiles, preferences, operator rules."""

    settings: NsaSettings = NsaSettings()
    profiles: tuple[ApplicationProfile, ...] = ()
    preferences: tuple[Preferences, ...] = ()
    rules: OperatorRules = OperatorRules()

    @model_validator(mode="after")
    def _references(self) -> NsaConfig:
        names = [p.name for p in self.profiles]
        if len(set(names)) != len(names):
            raise ValueError("two profiles have the same name")
        scopes = [p.scope() for p in self.preferences]
        if len(set(scopes)) != len(scopes):
            raise ValueError("two preference entries have the same (mobile_router, user)")
        known = set(names)
        referenced = [
            *(f"rules.classes.{n}" for n in self.rules.classes if n not in known),
            *(
                f"rules.excluded[{i}].class_name"
                for i, e in enumerate(self.rules.excluded)
                if e.class_name is not None and e.class_name not in known
            ),
            *(
                f"preferences[{i}].classes.{n}"
                for i, p in enumerate(self.preferences)
                for n in p.classes
                if n not in known
            ),
        ]
        if referenced:
            raise ValueError(f"unknown class named at {', '.join(referenced)}")
        return self

    def profiles_for(self, mobile_router: str) -> tuple[ApplicationProfile, ...]:
        """The classes steered on `mobile_router`, in configuration order."""
        return tuple(p for p in self.profiles if p.applies_to(mobile_router))

    def method_for(self, profile: ApplicationProfile) -> ScoringMethod:
        """The profile's own scoring method, else the NSA's default."""
        return profile.method or self.settings.method

    def weights_for(self, mobile_router: str, profile: ApplicationProfile) -> Weights:
        """The weights for a class on a router: the most specific scope that has any.

        Within a scope the class's own weights beat the scope's default; a more specific
        scope's default beats a wider scope's class weights (the user's word counts most).
        Nothing configured: equal weights.
        """
        by_scope = {p.scope(): p for p in self.preferences}
        for scope in ((mobile_router, profile.user), (mobile_router, None), (None, None)):
            prefs = by_scope.get(scope)
            if prefs is None:
                continue
            found = prefs.classes.get(profile.name, prefs.default)
            if found is not None:
                return found
        return Weights()
