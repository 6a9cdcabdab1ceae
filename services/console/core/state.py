"""The console's whole picture of the fleet: fed parsed bus messages and the time, no I/O.

Per mobile router: its links (latest metrics and state, and a ring of recent samples for the
sparklines), its bindings (from binding events), per application class the BIDs the NSA chose
(its latest decision) beside the BIDs its HA's and its own PREM worker enforce (their statuses
and documents, `enforced`) and whether an operator's pin overrides it, the last few decisions
with their explanations as text, its active alerts, the NSA's audit of operator actions
on it (pins, releases, expiries: who, what, when, outcome; the last few), and the markers of
its packet-rate chart (decisions, handovers, fallbacks, link state changes: the last few).
Per node (routers, HAs, NSA replicas, gateways): each service's presence.

Every container per router and per node has a bound, and so has the number of routers and
nodes, so a flood of names or messages cannot grow the process without limit.

The fleet view is kept incrementally: each change re-renders the one row it touches, and a
row whose content changed takes a new revision, so `rows_since(revision)` hands a stream only
the rows it has not sent, in O(changed rows), whatever the fleet's size. Metrics that change
every second do not touch the row (it shows counts and states), only the router's own view.
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from services.console.core.enforced import Enforcement
from services.console.core.ring import Ring
from services.contracts.messages import (
    AuditRecord,
    BindingEvent,
    BindingEventKind,
    DeadLetter,
    LinkMetrics,
    LinkState,
    NodeMetrics,
    PolicyStatus,
    Presence,
)
from services.contracts.policy import Direction, PolicyMessage
from services.contracts.topics import TopicKind, TopicName
from services.nsa.core.documents import DecisionRecord
from services.nsa.core.explain import Reason, render

#: The sampled values of a link, in the order of its ring's columns.
SERIES = ("rtt_ms", "loss", "rx_bps", "tx_bps", "rx_pps", "tx_pps")
#: Binding events that are no handover marker (a refresh changes nothing on the chart).
_QUIET_BINDING = frozenset({BindingEventKind.REFRESHED})
_ENDED = frozenset({BindingEventKind.DEREGISTERED, BindingEventKind.EXPIRED})
_TEXT_LIMIT = 4000
_DETAIL_LIMIT = 300


@dataclass(frozen=True, slots=True)
class Limits:
    """The bounds of the picture (per router, per node, in all)."""

    routers: int = 5000
    nodes: int = 10000
    links: int = 16  # per router
    bindings: int = 16  # per router
    classes: int = 64  # per router
    history: int = 300  # samples per link (5 minutes at 1 Hz)
    decisions: int = 10  # per router
    audits: int = 20  # per router: the NSA's audit records of operator actions
    alerts: int = 32  # active, per router or node
    services: int = 16  # per node
    log: int = 200  # recent alert events, fleet-wide
    dead_letter_hold_s: float = 300.0  # how long a dead letter stays an active alert
    markers: int = 64  # per router: events marked on its packet-rate chart
    #: A budgeted link whose used volume reaches this share of its cap raises an alert.
    budget_alert_share: float = 0.8


@dataclass(frozen=True, slots=True)
class Alert:
    """Something an operator should look at, active until its cause goes."""

    kind: str  # node-offline, refused-document, dead-letter, link-down, budget-near-cap
    node: str
    subject: str
    detail: str
    at: float

    def as_json(self) -> dict[str, Any]:
        """The alert for the pages."""
        return {
            "kind": self.kind,
            "node": self.node,
            "subject": self.subject,
            "detail": self.detail,
            "at": self.at,
        }


@dataclass(slots=True)
class Link:
    """One access link of a router."""

    interface: str
    bid: int
    history: Ring
    technology: str | None = None
    up: bool | None = None
    carrier: bool | None = None
    reason: str = ""
    addresses: tuple[str, ...] = ()
    latest: dict[str, float | None] = field(default_factory=dict)
    metrics_at: float | None = None
    state_at: float | None = None


@dataclass(slots=True)
class Binding:
    """One binding (BID) of a router at its HA, as its last event left it."""

    bid: int
    event: str
    care_of_address: str | None
    lifetime_s: int | None
    status: str | None
    sender: str
    at: float
    #: The pipe kind (`BindingEvent.pipe`), None while no event of this binding named it.
    pipe: str | None = None

    @property
    def active(self) -> bool:
        """Registered and not since ended."""
        return self.event not in _ENDED and self.event != BindingEventKind.REJECTED


@dataclass(slots=True)
class Decision:
    """One NSA decision as the log shows it."""

    at: float
    sender: str
    trigger: str
    moves: int
    text: str


@dataclass(frozen=True, slots=True)
class Audit:
    """One audit record of an operator action as the router's page shows it."""

    at: float
    requested_at: float
    sender: str
    user: str
    action: str
    class_name: str
    bid: int | None
    until: float | None
    outcome: str
    detail: str
    reason: str

    def as_json(self) -> dict[str, Any]:
        return {
            "at": self.at,
            "requested_at": self.requested_at,
            "sender": self.sender,
            "user": self.user,
            "action": self.action,
            "class": self.class_name,
            "bid": self.bid,
            "until": self.until,
            "outcome": self.outcome,
            "detail": self.detail,
            "reason": self.reason,
        }


@dataclass(frozen=True, slots=True)
class Marker:
    """One event drawn on a router's packet-rate chart, in the style of the paper's
    Figure 7: a vertical line at the time the console saw it, with a short label."""

    at: float
    kind: str  # decision, handover, fallback, link
    label: str

    def as_json(self) -> dict[str, Any]:
        return {"at": self.at, "kind": self.kind, "label": self.label}


@dataclass(slots=True)
class Node:
    """One node's services (presence) and its alerts that belong to no router."""

    name: str
    services: dict[str, tuple[bool, float, int | None]] = field(default_factory=dict)
    alerts: dict[tuple[str, str], Alert] = field(default_factory=dict)

    def offline(self) -> list[str]:
        """The services whose last presence says offline."""
        return sorted(s for s, (online, _, _) in self.services.items() if not online)


@dataclass(slots=True)
class Router:
    """One mobile router's picture."""

    name: str
    ha: str | None = None
    links: dict[str, Link] = field(default_factory=dict)
    bindings: dict[int, Binding] = field(default_factory=dict)
    chosen: dict[str, tuple[int, ...]] = field(default_factory=dict)
    chosen_at: float | None = None
    enforcement: dict[Direction, Enforcement] = field(default_factory=dict)
    decisions: deque[Decision] = field(default_factory=deque)
    overrides: dict[str, str] = field(default_factory=dict)  # class -> operator override
    audits: deque[Audit] = field(default_factory=deque)
    markers: deque[Marker] = field(default_factory=deque)
    #: Per direction, whether the worker's last fallback status listed any fallback.
    falling_back: dict[Direction, bool] = field(default_factory=dict)
    alerts: dict[tuple[str, str], Alert] = field(default_factory=dict)
    revision: int = 0  # of the whole view
    row: dict[str, Any] = field(default_factory=dict)
    last_seen: float = 0.0


class ConsoleState:
    """The picture, fed by `feed` (and `tick` for what expires); read by the views below."""

    def __init__(self, limits: Limits | None = None) -> None:
        self.limits = limits or Limits()
        self.routers: dict[str, Router] = {}
        self.nodes: dict[str, Node] = {}
        self.revision = 0
        #: router -> the revision of its row, the most recently changed last.
        self._row_revisions: OrderedDict[str, int] = OrderedDict()
        self._routers_of_ha: dict[str, set[str]] = {}
        self.node_revision = 0
        #: (sequence, event, alert): raised or cleared, fleet-wide, newest last.
        self.log: deque[tuple[int, str, Alert]] = deque(maxlen=self.limits.log)
        self._log_sequence = 0
        self._expiring: deque[tuple[float, str, tuple[str, str]]] = deque()
        self.totals = {"routers": 0, "with_alerts": 0, "mismatches": 0, "links": 0, "links_up": 0}
        self.dropped = 0  # messages refused (over a bound, or inconsistent)

    # --- input ---------------------------------------------------------------------------

    def feed(self, topic: TopicName, message: object, now: float) -> bool:
        """Take one parsed message from `topic`; False when it was dropped (over a bound, or
        not consistent with its topic). Never raises for any well-typed message."""
        kind, owner = topic.kind, topic.owner
        handled = False
        if kind is TopicKind.LINK_METRICS and isinstance(message, LinkMetrics):
            handled = self._link_metrics(owner, topic.item, message, now)
        elif kind is TopicKind.NODE_METRICS and isinstance(message, NodeMetrics):
            return self._node_metrics(owner, message, now)  # counts its own refusals
        elif kind is TopicKind.LINK_STATE and isinstance(message, LinkState):
            handled = self._link_state(owner, topic.item, message, now)
        elif kind is TopicKind.BINDING_EVENT and isinstance(message, BindingEvent):
            handled = self._binding(owner, message, now)
        elif kind is TopicKind.DECISION and isinstance(message, DecisionRecord):
            handled = self._decision(owner, message, now)
        elif kind is TopicKind.STATUS and isinstance(message, PolicyStatus):
            handled = self._status(owner, message, now)
        elif kind is TopicKind.POLICY and isinstance(message, PolicyMessage):
            handled = self._document(owner, message)
        elif kind is TopicKind.PRESENCE and isinstance(message, Presence):
            handled = self._presence(owner, topic.item, message, now)
        elif kind is TopicKind.DEAD_LETTER and isinstance(message, DeadLetter):
            handled = self._dead_letter(owner, topic.item, message, now)
        elif kind is TopicKind.AUDIT and isinstance(message, AuditRecord):
            handled = self._audit(owner, message, now)
        if not handled:
            self.dropped += 1
        return handled

    def tick(self, now: float) -> None:
        """Let dead-letter alerts older than the hold time go."""
        hold = self.limits.dead_letter_hold_s
        while self._expiring and self._expiring[0][0] + hold <= now:
            at, owner, key = self._expiring.popleft()
            router = self.routers.get(owner)
            alerts = router.alerts if router is not None else self._node_alerts(owner)
            alert = alerts.get(key) if alerts is not None else None
            if alerts is not None and alert is not None and alert.at == at:
                self._clear(alerts, key)
                self._touch_owner(owner)

    # --- handlers ------------------------------------------------------------------------

    def _link_metrics(self, node: str, interface: str, m: LinkMetrics, now: float) -> bool:
        if m.interface != interface:
            return False
        router = self._router(node, now)
        known = router is not None and interface in router.links
        link = None if router is None else self._link(router, interface, m.bid)
        if router is None or link is None:
            return False
        link.technology = m.technology
        link.latest = {
            "rtt_ms": m.rtt_ms,
            "jitter_ms": m.jitter_ms,
            "loss": m.loss,
            "rx_bps": m.rx_bps,
            "tx_bps": m.tx_bps,
            "signal_dbm": m.signal_dbm,
            "bitrate_bps": m.bitrate_bps,
            "cost_per_mb": m.cost_per_mb,
        }
        link.metrics_at = now
        link.history.append(now, (m.rtt_ms, m.loss, m.rx_bps, m.tx_bps, m.rx_pps, m.tx_pps))
        alerted = self._budget(router, node, m, now)
        self._changed(router, row=not known or alerted)  # metrics alone do not change the row
        return True

    def _node_metrics(self, node: str, batch: NodeMetrics, now: float) -> bool:
        """Each entry exactly as the same report on its own link's topic would be taken
        (`_link_metrics` for (`node`, the entry's interface)), in the message's order.

        Why: a monitor with `batch_metrics` sends one message per node and period instead of
        one per link (the broker and the NSA pay per message), and the picture must not depend
        on which of the two it chose. The message was validated whole before it came here (a
        bad entry refuses all of them); an entry refused here (over the bound of links) counts
        in `dropped` as its own report would have, and the others are still taken. True only
        when every entry was taken: a message partly refused is not taken whole.
        """
        refused = 0
        for entry in batch.links:
            if not self._link_metrics(node, entry.interface, entry, now):
                refused += 1
        self.dropped += refused
        return refused == 0

    def _budget(self, router: Router, node: str, m: LinkMetrics, now: float) -> bool:
        """Raise or clear the link's budget alert; True when it changed. A report without a
        budget clears it (the budget was removed from the monitor's configuration)."""
        key = ("budget-near-cap", m.interface)
        cap, used = m.budget_bytes, m.budget_used_bytes
        share = self.limits.budget_alert_share
        if cap is None or used is None or used < share * cap:
            if key not in router.alerts:
                return False
            self._clear(router.alerts, key)
            return True
        if key in router.alerts:
            return False
        detail = f"{used / cap:.0%} of {_volume(cap)} used (alert at {share:.0%})"
        self._raise(router.alerts, key, Alert("budget-near-cap", node, m.interface, detail, now))
        return True

    def _link_state(self, node: str, interface: str, s: LinkState, now: float) -> bool:
        if s.interface != interface:
            return False
        router = self._router(node, now)
        link = None if router is None else self._link(router, interface, s.bid)
        if router is None or link is None:
            return False
        if link.up is not None and link.up != s.up:
            label = f"{interface} {'up' if s.up else 'down'}"
            self._mark(router, Marker(now, "link", label))
        link.up, link.carrier, link.reason = s.up, s.carrier, s.reason[:200]
        link.addresses = s.addresses[:8]
        link.state_at = now
        key = ("link-down", interface)
        if s.up:
            self._clear(router.alerts, key)
        elif key not in router.alerts:
            detail = s.reason[:200] or ("no carrier" if not s.carrier else "down")
            self._raise(router.alerts, key, Alert("link-down", node, interface, detail, now))
        self._changed(router)
        return True

    def _binding(self, owner: str, e: BindingEvent, now: float) -> bool:
        if e.mobile_router != owner:
            return False
        router = self._router(owner, now)
        if router is None:
            return False
        if e.bid not in router.bindings and len(router.bindings) >= self.limits.bindings:
            ended = [b.bid for b in router.bindings.values() if not b.active]
            if not ended:
                return False
            del router.bindings[min(ended, key=lambda bid: router.bindings[bid].at)]
        old = router.bindings.get(e.bid)
        router.bindings[e.bid] = Binding(
            bid=e.bid,
            event=e.event.value,
            care_of_address=e.care_of_address or (old.care_of_address if old is not None else None),
            lifetime_s=e.lifetime_s,
            status=e.status_name,
            sender=e.sender,
            at=now,
            pipe=e.pipe if e.pipe is not None or old is None or not old.active else old.pipe,
        )
        if e.event not in _QUIET_BINDING:
            where = f" to {e.care_of_address}" if e.care_of_address else ""
            self._mark(router, Marker(now, "handover", f"BID {e.bid} {e.event.value}{where}"))
        self._changed(router)
        return True

    def _decision(self, owner: str, record: DecisionRecord, now: float) -> bool:
        explanation = record.explanation
        if explanation.mobile_router != owner:
            return False
        router = self._router(owner, now)
        if router is None:
            return False
        classes = explanation.classes[: self.limits.classes]
        router.chosen = {c.class_name: c.chosen_flows for c in classes}
        router.overrides = {
            c.class_name: c.detail[:_DETAIL_LIMIT]
            for c in classes
            if c.reason is Reason.OPERATOR_OVERRIDE
        }
        router.chosen_at = explanation.at
        router.decisions.append(
            Decision(
                at=explanation.at,
                sender=record.sender,
                trigger=explanation.trigger.kind.value,
                moves=explanation.moves(),
                text=render(explanation)[:_TEXT_LIMIT],
            )
        )
        while len(router.decisions) > self.limits.decisions:
            router.decisions.popleft()
        moved = explanation.moves()
        if moved:
            trigger = explanation.trigger.kind.value
            self._mark(router, Marker(now, "decision", f"NSA: {moved} moved ({trigger})"))
        self._changed(router)
        return True

    def _audit(self, owner: str, record: AuditRecord, now: float) -> bool:
        if record.mobile_router != owner:
            return False
        router = self._router(owner, now)
        if router is None:
            return False
        router.audits.append(
            Audit(
                at=record.timestamp,
                requested_at=record.requested_at,
                sender=record.sender,
                user=record.user,
                action=record.action,
                class_name=record.class_name,
                bid=record.bid,
                until=record.until,
                outcome=record.outcome,
                detail=(f"{record.field}: " if record.field else "") + record.detail,
                reason=record.reason,
            )
        )
        while len(router.audits) > self.limits.audits:
            router.audits.popleft()
        self._changed(router, row=False)
        return True

    def _document(self, node: str, message: PolicyMessage) -> bool:
        if message.node != node:
            return False
        router = self._router(message.mobile_router, None)
        if router is None:
            return False
        self._enforcement(router, message.direction, node).document(message)
        return True

    def _status(self, node: str, status: PolicyStatus, now: float) -> bool:
        if status.node != node:
            return False
        router = self._router(status.mobile_router, now)
        if router is None:
            return False
        if status.direction is Direction.DOWNLINK and router.ha != node:
            self._set_ha(router, node)
        enforcement = self._enforcement(router, status.direction, node)
        enforcement.status(status, now)
        if status.result == "fallback":
            # A return to the primaries is marked only after a fallback it ends.
            if status.fallbacks or router.falling_back.get(status.direction, False):
                self._mark(router, Marker(now, "fallback", _fallback_label(status)))
            router.falling_back[status.direction] = bool(status.fallbacks)
        key = ("refused-document", node)
        if status.result == "refused":
            detail = f"{status.direction.value} version {status.requested_version}: "
            self._raise(
                router.alerts,
                key,
                Alert(
                    "refused-document",
                    node,
                    status.direction.value,
                    detail + enforcement.refusal[:200],
                    now,
                ),
            )
        elif status.result == "applied":
            self._clear(router.alerts, key)
        self._changed(router)
        return True

    def _presence(self, node_name: str, service: str, p: Presence, now: float) -> bool:
        if p.node != node_name or p.service != service:
            return False
        node = self._node(node_name)
        if node is None:
            return False
        if service not in node.services and len(node.services) >= self.limits.services:
            return False
        node.services[service] = (p.online, now, p.version)
        alerts = self._alerts_of(node_name, node)
        key = ("node-offline", service)
        if p.online:
            self._clear(alerts, key)
        elif key not in alerts:
            self._raise(alerts, key, Alert("node-offline", node_name, service, "offline", now))
        self._touch_owner(node_name)
        return True

    def _dead_letter(self, node_name: str, service: str, d: DeadLetter, now: float) -> bool:
        if d.node != node_name or d.service != service:
            return False
        node = self._node(node_name)
        if node is None:
            return False
        alerts = self._alerts_of(node_name, node)
        key = ("dead-letter", service)
        detail = f"{d.input} from {d.source}: {d.error}: {d.reason}"[:300]
        self._clear(alerts, key)
        self._raise(alerts, key, Alert("dead-letter", node_name, service, detail, now))
        self._expiring.append((now, node_name, key))
        while len(self._expiring) > self.limits.log * 10:
            self._expiring.popleft()  # the alert then stays until the next one replaces it
        self._touch_owner(node_name)
        return True

    # --- bookkeeping ---------------------------------------------------------------------

    def _router(self, name: str, now: float | None) -> Router | None:
        router = self.routers.get(name)
        if router is None:
            if len(self.routers) >= self.limits.routers:
                return None
            router = self.routers[name] = Router(name)
            node = self._node(name)
            if node is not None:  # what was raised while it was only a node is the router's
                router.alerts.update(node.alerts)
                node.alerts.clear()
            self.totals["routers"] += 1
            self._changed(router)
        if now is not None:
            router.last_seen = now
        return router

    def _node(self, name: str) -> Node | None:
        node = self.nodes.get(name)
        if node is None:
            if len(self.nodes) >= self.limits.nodes:
                return None
            node = self.nodes[name] = Node(name)
        return node

    def _node_alerts(self, name: str) -> dict[tuple[str, str], Alert] | None:
        node = self.nodes.get(name)
        return None if node is None else node.alerts

    def _alerts_of(self, name: str, node: Node) -> dict[tuple[str, str], Alert]:
        """A router's alerts live with the router (they count in its row), a node's with it."""
        router = self.routers.get(name)
        return router.alerts if router is not None else node.alerts

    def _link(self, router: Router, interface: str, bid: int) -> Link | None:
        link = router.links.get(interface)
        if link is None:
            if len(router.links) >= self.limits.links:
                return None
            link = router.links[interface] = Link(interface, bid, Ring(self.limits.history, SERIES))
        link.bid = bid
        return link

    def _mark(self, router: Router, marker: Marker) -> None:
        router.markers.append(marker)
        while len(router.markers) > self.limits.markers:
            router.markers.popleft()

    def _enforcement(self, router: Router, direction: Direction, node: str) -> Enforcement:
        current = router.enforcement.get(direction)
        if current is None or current.node != node:
            current = router.enforcement[direction] = Enforcement(node)
        return current

    def _set_ha(self, router: Router, ha: str) -> None:
        if self._node(ha) is None:
            return
        if router.ha is not None:
            self._routers_of_ha.get(router.ha, set()).discard(router.name)
        router.ha = ha
        self._routers_of_ha.setdefault(ha, set()).add(router.name)

    def _raise(self, alerts: dict[tuple[str, str], Alert], key: tuple[str, str], a: Alert) -> None:
        if key not in alerts and len(alerts) >= self.limits.alerts:
            oldest = min(alerts, key=lambda k: alerts[k].at)
            self._clear(alerts, oldest)
        alerts[key] = a
        self._logged("raised", a)

    def _clear(self, alerts: dict[tuple[str, str], Alert], key: tuple[str, str]) -> None:
        alert = alerts.pop(key, None)
        if alert is not None:
            self._logged("cleared", alert)

    def _logged(self, event: str, alert: Alert) -> None:
        self._log_sequence += 1
        self.log.append((self._log_sequence, event, alert))

    def _touch_owner(self, name: str) -> None:
        """A node's presence or alerts changed: its router's row, its HA's routers' rows."""
        self.node_revision += 1
        self.revision += 1
        router = self.routers.get(name)
        if router is not None:
            self._changed(router)
        for mr in self._routers_of_ha.get(name, ()):
            self._changed(self.routers[mr])

    def _changed(self, router: Router, *, row: bool = True) -> None:
        self.revision += 1
        router.revision = self.revision
        if not row:
            return
        new = self._row(router)
        if new == router.row:
            return
        old, router.row = router.row, new
        totals = self.totals
        for key, count in (
            ("links", "links"),
            ("links_up", "links_up"),
            ("mismatches", "mismatches"),
        ):
            totals[key] += new[count] - old.get(count, 0)
        totals["with_alerts"] += (new["alerts"] > 0) - (old.get("alerts", 0) > 0)
        self._row_revisions[router.name] = self.revision
        self._row_revisions.move_to_end(router.name)

    def _row(self, router: Router) -> dict[str, Any]:
        node = self.nodes.get(router.name)
        ha = self.nodes.get(router.ha) if router.ha is not None else None
        services = dict(sorted((s, v[0]) for s, v in node.services.items())) if node else {}
        return {
            "mr": router.name,
            "ha": router.ha,
            "ha_offline": ha.offline() if ha is not None else [],
            "services": services,
            "links": len(router.links),
            "links_up": sum(1 for link in router.links.values() if link.up),
            "bindings": sum(1 for b in router.bindings.values() if b.active),
            "alerts": len(router.alerts),
            "alert_kinds": sorted({a.kind for a in router.alerts.values()}),
            "mismatches": sum(1 for c in self._classes(router) if c["mismatch"]),
        }

    # --- views ---------------------------------------------------------------------------

    def rows_since(self, revision: int) -> tuple[int, list[dict[str, Any]]]:
        """The current revision and the fleet rows changed after `revision` (all for 0)."""
        if revision <= 0:
            return self.revision, [self.routers[mr].row for mr in sorted(self._row_revisions)]
        changed: list[dict[str, Any]] = []
        for mr in reversed(self._row_revisions):
            if self._row_revisions[mr] <= revision:
                break
            changed.append(self.routers[mr].row)
        changed.reverse()
        return self.revision, changed

    def row_revision(self, name: str) -> int:
        """The revision of a router's fleet row (0: unknown router): it moves when a state,
        an alert, a binding, a service or a mismatch changes, not with metrics."""
        return self._row_revisions.get(name, 0)

    def alerts_since(self, sequence: int) -> tuple[int, list[dict[str, Any]]]:
        """The alert log after `sequence` (raised and cleared), oldest first."""
        out = [{"sequence": s, "event": e, **a.as_json()} for s, e, a in self.log if s > sequence]
        return self._log_sequence, out

    def other_nodes(self) -> list[dict[str, Any]]:
        """Every node that is not a mobile router (HAs, NSA replicas, gateways)."""
        return [
            {
                "node": n.name,
                "services": {s: v[0] for s, v in sorted(n.services.items())},
                "alerts": [a.as_json() for a in n.alerts.values()],
                "routers": len(self._routers_of_ha.get(n.name, ())),
            }
            for name, n in sorted(self.nodes.items())
            if name not in self.routers
        ]

    def router_view(self, name: str, after: float | None = None) -> dict[str, Any] | None:
        """Everything the router's page shows; history only newer than `after`."""
        router = self.routers.get(name)
        if router is None:
            return None
        node = self.nodes.get(name)
        ha = self.nodes.get(router.ha) if router.ha is not None else None
        return {
            "mr": name,
            "revision": router.revision,
            "row_revision": self._row_revisions.get(name, 0),
            "ha": router.ha,
            "services": _services(node),
            "ha_services": _services(ha),
            "links": [_link_json(link, after) for _, link in sorted(router.links.items())],
            "bindings": [_binding_json(b) for _, b in sorted(router.bindings.items())],
            "classes": self._classes(router),
            "decisions": [
                {
                    "at": d.at,
                    "sender": d.sender,
                    "trigger": d.trigger,
                    "moves": d.moves,
                    "text": d.text,
                }
                for d in reversed(router.decisions)
            ],
            "audits": [a.as_json() for a in reversed(router.audits)],
            "markers": [m.as_json() for m in router.markers],
            "alerts": [a.as_json() for a in router.alerts.values()]
            + ([a.as_json() for a in ha.alerts.values()] if ha is not None else []),
            "enforcement": {
                d.value: {
                    "node": e.node,
                    "version": e.version,
                    "result": e.result,
                    "known": e.policies is not None,
                    "refusal": e.refusal,
                }
                for d, e in sorted(router.enforcement.items())
            },
        }

    def _classes(self, router: Router) -> list[dict[str, Any]]:
        ha = router.enforcement.get(Direction.DOWNLINK)
        mr = router.enforcement.get(Direction.UPLINK)
        ha_flows = ha.class_flows() if ha is not None else None
        mr_flows = mr.class_flows() if mr is not None else None
        names = set(router.chosen)
        for flows in (ha_flows, mr_flows):
            if flows is not None and len(names) < self.limits.classes:
                names.update(list(flows)[: self.limits.classes - len(names)])
        out = []
        for name in sorted(names):
            chosen = router.chosen.get(name, ())
            at_ha = None if ha_flows is None else ha_flows.get(name, ())
            at_mr = None if mr_flows is None else mr_flows.get(name, ())
            mismatch = any(e is not None and e != chosen for e in (at_ha, at_mr))
            out.append(
                {
                    "class": name,
                    "chosen": list(chosen),
                    "ha": None if at_ha is None else list(at_ha),
                    "mr": None if at_mr is None else list(at_mr),
                    "mismatch": mismatch,
                    "override": router.overrides.get(name),
                }
            )
        return out

    # --- bounds, for tests and the metrics -------------------------------------------------

    def footprint(self) -> Iterator[tuple[str, int, int]]:
        """(what, largest size, its bound) of every bounded container."""
        lim = self.limits
        yield "routers", len(self.routers), lim.routers
        yield "nodes", len(self.nodes), lim.nodes
        yield "log", len(self.log), lim.log
        yield "expiring", len(self._expiring), lim.log * 10
        for router in self.routers.values():
            yield "links", len(router.links), lim.links
            yield "bindings", len(router.bindings), lim.bindings
            yield "classes", len(router.chosen), lim.classes
            yield "decisions", len(router.decisions), lim.decisions
            yield "audits", len(router.audits), lim.audits
            yield "markers", len(router.markers), lim.markers
            yield "alerts", len(router.alerts), lim.alerts
            for link in router.links.values():
                yield "history", len(link.history), lim.history
            for enforcement in router.enforcement.values():
                yield "documents", len(enforcement.documents), 8
                yield "policies", len(enforcement.policies or ()), 1024
        for node in self.nodes.values():
            yield "services", len(node.services), lim.services
            yield "node alerts", len(node.alerts), lim.alerts


def _services(node: Node | None) -> dict[str, dict[str, Any]]:
    if node is None:
        return {}
    return {
        s: {"online": online, "at": at, "version": version}
        for s, (online, at, version) in sorted(node.services.items())
    }


def _volume(size: int) -> str:
    """A byte count as people read a data plan (decimal units)."""
    for unit, scale in (("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} B"


def _fallback_label(status: PolicyStatus) -> str:
    """`fallback at the HA: web BID 2 -> 1`, or `... back on primary` when none is left."""
    where = "HA" if status.direction is Direction.DOWNLINK else "MR"
    moves = [
        f"{f.policy_id} BID {f.primary_bid} -> {f.active_bid if f.active_bid is not None else '-'}"
        for f in status.fallbacks[:3]
    ]
    return f"fallback at the {where}: " + (", ".join(moves) if moves else "back on primary")


def _finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else value


def _link_json(link: Link, after: float | None) -> dict[str, Any]:
    return {
        "interface": link.interface,
        "bid": link.bid,
        "technology": link.technology,
        "up": link.up,
        "carrier": link.carrier,
        "reason": link.reason,
        "addresses": list(link.addresses),
        "latest": {k: _finite(v) for k, v in link.latest.items()},
        "metrics_at": link.metrics_at,
        "state_at": link.state_at,
        "history": link.history.since(after),
    }


def _binding_json(b: Binding) -> dict[str, Any]:
    return {
        "bid": b.bid,
        "event": b.event,
        "active": b.active,
        "care_of_address": b.care_of_address,
        "lifetime_s": b.lifetime_s,
        "status": b.status,
        "sender": b.sender,
        "at": b.at,
        "pipe": b.pipe,
    }
