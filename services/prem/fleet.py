"""The core of an HA worker serving many mobile routers: each router's documents change that
router's desired state only, and every router's policies are enforced in one table.

A served router is a node of its own on the bus (its documents, statuses, versions and
fencing epochs as for a one-router worker: `apply_message` with that node's settings), so a
gateway or an NSA addresses it as today. What is shared is the kernel table and the store:

- a document is parsed, checked against its router's state and scoped to the router's
  prefix (`core.fleetscope`); its rules replace that router's rules only, as an element delta
  on the table (`NftablesBackend.apply_delta`: work in proportion to the router's change,
  whatever the number of routers), or the whole table when the delta does not fit;
- the router's new state is one SQLite row (`FleetStore`), written after the kernel took the
  change and before the state is adopted; if it cannot be written, the router's previous rules
  are put back and the error propagates (the worker sets the document aside);
- at start, every stored router's rules are reconciled against the kernel in one go.

This worker enforces `forward` and `drop` policies; `balance`, `duplicate` and `priority`
need per-router chains or copy targets and stay with a worker per router. It moves no flow
to a fallback BID on its own (the BID usability of each router's pipes is the NSA's to act
on). No MQTT here: the worker's transport feeds documents in by node.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import logging
import time
from collections.abc import Callable, Iterable

from services.contracts import policy_xml
from services.contracts.errors import ConfigError, InvalidInput, KernelError, PolicyRefused, Problem
from services.contracts.messages import PolicyStatus, Refusal, StatusWarning
from services.contracts.policy import Policy
from services.prem.backends.base import Backend
from services.prem.config import PremSettings
from services.prem.core.fleetscope import MAX_NODE_LENGTH, ServedRouter, kernel_id, scope
from services.prem.core.flowtable import FlowRule, FlowTable, compile_policies
from services.prem.core.policyset import DesiredState, apply_message, is_redelivery
from services.prem.core.reconcile import plan
from services.prem.core.settings import NodeSettings
from services.prem.enforcer import refusals_of, warnings_of
from services.prem.fleetstore import FleetStore

log = logging.getLogger(__name__)

#: The action kinds one table of many routers enforces (see the module's docstring).
FLEET_ACTIONS = frozenset({"forward", "drop"})


class FleetEnforcer:
    """Every served router's desired state, and one back end enforcing all of them."""

    def __init__(
        self,
        settings: PremSettings,
        routers: Iterable[ServedRouter],
        backend: Backend,
        store: FleetStore,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.routers = _checked(routers)
        self.backend = backend
        self.store = store
        self.clock = clock
        stored = store.load()
        for node in sorted(stored.keys() - self.routers.keys()):
            log.warning("fleet store holds router node %r, which is no longer served", node)
        self.states: dict[str, DesiredState] = {}
        self.rules: dict[str, FlowTable] = {}
        for node, router in self.routers.items():
            state = stored.get(node) or DesiredState(node=node)
            try:
                self.rules[node] = self._compile(node, scope(state.policies, router))
            except PolicyRefused as exc:
                # The router's prefix changed in the configuration since: its stored policies
                # are not enforced, and at version 0 its NSA sends a whole set again.
                log.error(
                    "router node %s: stored version %d lies outside its prefix %s now (%s); "
                    "starting it empty at version 0",
                    node,
                    state.version,
                    router.prefix,
                    exc.problems[0],
                )
                state = DesiredState(node=node)
                self.rules[node] = ()
            self.states[node] = state
        #: Rules and policies of every router, kept as documents change them (the worker's
        #: gauges read them per document: summing 10,000 routers each time would not be).
        self.rule_count = sum(len(rules) for rules in self.rules.values())
        self.policy_count = sum(len(state.policies) for state in self.states.values())
        self._node_settings: dict[str, NodeSettings] = {}
        self._sequence: dict[str, int] = {}

    def table(self) -> FlowTable:
        """Every router's rules, in precedence order: what the kernel must hold."""
        return tuple(
            sorted((r for rules in self.rules.values() for r in rules), key=FlowRule.precedence)
        )

    def reconcile(self) -> int:
        """Make the kernel hold every router's rules (at start); the rules changed."""
        desired = self.table()
        changes = plan(desired, self.backend.read())
        if changes:
            self.backend.apply(desired, changes)
        return len(changes.add) + len(changes.remove)

    def handle(self, node: str, payload: bytes) -> PolicyStatus:
        """Apply one document of the router served as `node`, or refuse it and change
        nothing (the transport passes only served nodes' documents)."""
        router = self.routers[node]
        started = self.clock()
        state = self.states[node]
        limits = self.settings.limits
        requested: int | None = None
        try:
            message = policy_xml.parse(
                payload, max_bytes=limits.max_document_bytes, max_policies=limits.max_policies
            )
            requested = message.version if message.node == node else None
            digest = hashlib.sha256(payload).hexdigest()
            if is_redelivery(state, message, digest):
                return self._status(node, "applied", started, requested=requested)
            outcome = apply_message(state, message, self._settings_of(router), digest)
            _check_actions(outcome.state.policies)
            rules = self._compile(node, scope(outcome.state.policies, router))
            self._replace(node, self.rules[node], rules)
        except InvalidInput as exc:
            return self._refused(node, exc.problems, started, requested)
        except KernelError as exc:
            log.error("router node %s: kernel refused version %s: %s", node, requested, exc)
            return self._refused(node, (Problem(f"kernel: {exc}"),), started, requested)
        try:
            self.store.save(outcome.state)
        except Exception:
            self._replace(node, rules, self.rules[node])  # the kernel back to the state in force
            raise
        self.rule_count += len(rules) - len(self.rules[node])
        self.policy_count += len(outcome.state.policies) - len(state.policies)
        self.states[node] = outcome.state
        self.rules[node] = rules
        log.info(
            "router node %s: version %d applied (%d inserted, %d deleted, %d replaced) in %.1f ms",
            node,
            outcome.state.version,
            outcome.inserted,
            outcome.deleted,
            outcome.replaced,
            (self.clock() - started) * 1000,
        )
        return self._status(
            node,
            "applied",
            started,
            requested=requested,
            counts=(outcome.inserted, outcome.deleted, outcome.replaced),
            warnings=warnings_of(outcome.warnings),
        )

    def refuse(self, node: str, problem: Problem) -> PolicyStatus:
        """Refuse a document of `node` for a reason only the transport knows (a retained
        delivery, a document whose handling raised)."""
        return self._refused(node, (problem,), self.clock(), None)

    def _replace(self, node: str, held: FlowTable, rules: FlowTable) -> None:
        """Make the kernel hold `rules` for the router instead of `held`: an element delta
        when it fits, else the whole table (read back first, so a foreign change is repaired
        too)."""
        changes = plan(rules, held)
        if not changes or self.backend.apply_delta(changes):
            return
        desired = self.table_with(node, rules)
        self.backend.apply(desired, plan(desired, self.backend.read()))

    def table_with(self, node: str, rules: FlowTable) -> FlowTable:
        """The whole table with `node`'s rules replaced by `rules`."""
        others = (r for n, found in self.rules.items() if n != node for r in found)
        return tuple(sorted((*others, *rules), key=FlowRule.precedence))

    def _compile(self, node: str, policies: tuple[Policy, ...]) -> FlowTable:
        """The router's flow rules, each named `<node>:<policy id>` in the shared table."""
        return tuple(
            dataclasses.replace(rule, policy_id=kernel_id(node, rule.policy_id))
            for rule in compile_policies(policies)
        )

    def _settings_of(self, router: ServedRouter) -> NodeSettings:
        """The node settings `apply_message` checks a router's documents against (the HA's,
        with the router's node and id), made once per router."""
        found = self._node_settings.get(router.node)
        if found is None:
            found = NodeSettings.model_validate(
                {
                    **self.settings.model_dump(include=set(NodeSettings.model_fields)),
                    "node": router.node,
                    "mobile_router": router.mobile_router,
                    "peer_node": None,
                }
            )
            self._node_settings[router.node] = found
        return found

    def _refused(
        self, node: str, problems: tuple[Problem, ...], started: float, requested: int | None
    ) -> PolicyStatus:
        for problem in problems:
            log.warning("router node %s: refused version %s: %s", node, requested, problem)
        return self._status(
            node, "refused", started, requested=requested, refusals=refusals_of(problems)
        )

    def _status(
        self,
        node: str,
        result: str,
        started: float,
        *,
        requested: int | None = None,
        counts: tuple[int, int, int] = (0, 0, 0),
        refusals: tuple[Refusal, ...] = (),
        warnings: tuple[StatusWarning, ...] = (),
    ) -> PolicyStatus:
        sequence = self._sequence[node] = self._sequence.get(node, 0) + 1
        inserted, deleted, replaced = counts
        return PolicyStatus(
            sender=node,
            sequence=sequence,
            node=node,
            mobile_router=self.routers[node].mobile_router,
            direction=self.settings.direction,
            result=result,
            version=self.states[node].version,
            requested_version=requested,
            inserted=inserted,
            deleted=deleted,
            replaced=replaced,
            refusals=refusals,
            warnings=warnings,
            elapsed_ms=(self.clock() - started) * 1000,
            backend=self.backend.name,
        )


def _check_actions(policies: tuple[Policy, ...]) -> None:
    """Refuse, before the kernel is touched, actions one shared table does not enforce."""
    problems = [
        Problem(
            f"an HA serving many mobile routers enforces {', '.join(sorted(FLEET_ACTIONS))} "
            f"policies, not {p.action.kind} (serve this router with a worker of its own)",
            p.id,
            "action",
        )
        for p in policies
        if p.action.kind not in FLEET_ACTIONS
    ]
    if problems:
        raise PolicyRefused(problems)


def _checked(routers: Iterable[ServedRouter]) -> dict[str, ServedRouter]:
    """The served routers by node; refused when two share a node, a router id or overlapping
    prefixes, or a node name is too long for the shared table's rule ids."""
    by_node: dict[str, ServedRouter] = {}
    problems: list[Problem] = []
    for router in routers:
        if router.node in by_node:
            problems.append(Problem(f"router node {router.node!r} is served twice"))
        if len(router.node) > MAX_NODE_LENGTH:
            problems.append(
                Problem(f"router node {router.node!r} is longer than {MAX_NODE_LENGTH} characters")
            )
        by_node[router.node] = router
    ids = [r.mobile_router for r in by_node.values()]
    if len(set(ids)) != len(ids):
        problems.append(Problem("a mobile router is served under two nodes"))
    ordered = sorted(
        by_node.values(), key=lambda r: (r.prefix.version, int(r.prefix.network_address))
    )
    for a, b in itertools.pairwise(ordered):
        if a.prefix.version == b.prefix.version and a.prefix.overlaps(b.prefix):
            problems.append(
                Problem(
                    f"the prefixes of {a.node!r} ({a.prefix}) and {b.node!r} ({b.prefix}) overlap"
                )
            )
    if problems:
        raise ConfigError(problems)
    return by_node
