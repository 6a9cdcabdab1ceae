"""Hard constraints: which links a class may use at all, and which rule excludes the others.

Every violated rule is reported (the first is the main reason), so an explanation can say
"down, and over the cost cap" rather than just "excluded". A requirement on a metric the link
does not report excludes it: an unknown delay cannot be shown to meet a delay bound.
"""

from __future__ import annotations

from enum import StrEnum

from services.nsa.core.config import ApplicationProfile, NsaConfig
from services.nsa.core.frozen import Frozen
from services.nsa.core.inputs import BindingStatus, Link, MrView


class Rule(StrEnum):
    """The rule that excluded a link."""

    NO_METRICS = "no-metrics"
    STALE_METRICS = "stale-metrics"
    LINK_DOWN = "link-down"
    NO_BINDING = "no-binding"
    HANDOVER = "handover"
    EXCLUDED_BID = "excluded-bid"
    TECHNOLOGY = "technology-forbidden"
    COST_CAP = "cost-cap"
    SECURITY = "security-below-minimum"
    MIN_BANDWIDTH = "min-bandwidth"
    MAX_DELAY = "max-delay"
    MAX_JITTER = "max-jitter"
    MAX_LOSS = "max-loss"
    BUDGET = "budget"  # a bulk class, and the link's data budget used beyond the share


#: Rules that forbid a link outright, even as a fallback the PREM would use on carrier loss:
#: the operator's rules, and a link whose technology is not even known yet. The others (down,
#: unbound, a metric requirement) describe the moment and the PREM copes with them itself.
FORBIDDING = frozenset(
    {Rule.NO_METRICS, Rule.EXCLUDED_BID, Rule.TECHNOLOGY, Rule.COST_CAP, Rule.SECURITY}
)


class Violation(Frozen):
    """One rule a link breaks for a class, with the values involved."""

    rule: Rule
    detail: str


def violations(
    view: MrView, bid: int, profile: ApplicationProfile, config: NsaConfig, now: float
) -> tuple[Violation, ...]:
    """Every rule `bid` breaks for `profile` on this router now; empty means eligible."""
    link = view.links.get(bid)
    found = _binding_violations(view, bid)
    if config.rules.excludes(view.mobile_router, bid, profile.name):
        found.append(Violation(rule=Rule.EXCLUDED_BID, detail=f"BID {bid} excluded by operator"))
    if link is None or link.technology is None:
        found.insert(0, Violation(rule=Rule.NO_METRICS, detail="no metrics received"))
        return tuple(found)
    found[:0] = _link_violations(link, config, now)
    found += _operator_violations(view.mobile_router, link, profile, config)
    found += _requirement_violations(link, profile)
    found += _budget_violations(link, profile, config)
    return tuple(found)


def _budget_violations(
    link: Link, profile: ApplicationProfile, config: NsaConfig
) -> list[Violation]:
    share = link.budget_share
    limit = config.settings.bulk_budget_share
    if not profile.bulk or share is None or share <= limit:
        return []
    return [Violation(rule=Rule.BUDGET, detail=budget_state(link) + f" > {limit:.0%}")]


def budget_state(link: Link) -> str:
    """`eth1 at 85% of 10 GB` (a link without a budget: empty)."""
    share = link.budget_share
    if share is None or link.budget_bytes is None:
        return ""
    name = link.interface or f"BID {link.bid}"
    return f"{name} at {share:.0%} of {_bytes(link.budget_bytes)}"


def _bytes(value: float) -> str:
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if value >= size:
            return f"{value / size:.3g} {unit}"
    return f"{value:.0f} B"


def _binding_violations(view: MrView, bid: int) -> list[Violation]:
    status = view.binding_status(bid)
    if status is BindingStatus.LIVE:
        return []
    if status is BindingStatus.HANDOVER:
        return [Violation(rule=Rule.HANDOVER, detail="handover in progress")]
    detail = "no binding registered" if status is None else "binding gone"
    binding = view.bindings.get(bid)
    if binding is not None:
        detail += f" ({binding.event.value})"
    return [Violation(rule=Rule.NO_BINDING, detail=detail)]


def _link_violations(link: Link, config: NsaConfig, now: float) -> list[Violation]:
    found = []
    if not link.up:
        found.append(Violation(rule=Rule.LINK_DOWN, detail="link down"))
    max_age = config.settings.max_metrics_age_s
    if max_age is not None and (link.updated_at is None or now - link.updated_at > max_age):
        age = "never" if link.updated_at is None else f"{now - link.updated_at:g} s ago"
        found.append(Violation(rule=Rule.STALE_METRICS, detail=f"metrics {age}"))
    return found


def _operator_violations(
    mobile_router: str, link: Link, profile: ApplicationProfile, config: NsaConfig
) -> list[Violation]:
    rule = config.rules.rule_for(profile.name)
    technology = link.technology or ""
    found = []
    if rule.technologies is not None and technology not in rule.technologies:
        found.append(
            Violation(rule=Rule.TECHNOLOGY, detail=f"{technology} not allowed for {profile.name}")
        )
    cap = rule.max_cost_per_mb
    if cap is not None and (link.cost_per_mb is None or link.cost_per_mb > cap):
        found.append(
            Violation(
                rule=Rule.COST_CAP, detail=f"cost {_show(link.cost_per_mb)}/MB > cap {cap:g}/MB"
            )
        )
    minimum = rule.min_security
    level = config.rules.security_of(mobile_router, link.bid, technology)
    if minimum is not None and level < minimum:
        found.append(Violation(rule=Rule.SECURITY, detail=f"security {level} < minimum {minimum}"))
    return found


def _requirement_violations(link: Link, profile: ApplicationProfile) -> list[Violation]:
    need = profile.requirements
    checks = (
        (Rule.MIN_BANDWIDTH, link.bitrate_bps, need.min_bandwidth_bps, False, "bit rate", " bps"),
        (Rule.MAX_DELAY, link.rtt_ms, need.max_delay_ms, True, "rtt", " ms"),
        (Rule.MAX_JITTER, link.jitter_ms, need.max_jitter_ms, True, "jitter", " ms"),
        (Rule.MAX_LOSS, link.loss, need.max_loss, True, "loss", ""),
    )
    found = []
    for rule, value, bound, is_max, name, unit in checks:
        if bound is None:
            continue
        if value is None:
            detail = f"{name} unknown (bound {bound:g}{unit})"
        elif value > bound if is_max else value < bound:
            detail = f"{name} {value:g}{unit} {'>' if is_max else '<'} {bound:g}{unit}"
        else:
            continue
        found.append(Violation(rule=rule, detail=detail))
    return found


def _show(value: float | None) -> str:
    return "unknown" if value is None else f"{value:g}"
