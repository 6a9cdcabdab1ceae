"""The PREM worker's core: turn one policy document into kernel state and a status, or refuse.

No MQTT here: the worker feeds documents and link events in and publishes what comes out, so
this logic is tested directly against a back end. Order of work for a document: parse and
validate everything, compute the new desired state, reconcile the kernel in one atomic batch,
then store the state durably and only then adopt it.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from services.contracts import policy_xml
from services.contracts.errors import InvalidInput, KernelError, PolicyRefused, Problem
from services.contracts.messages import PolicyStatus, Refusal, StatusWarning
from services.contracts.policy import Duplicate, Policy, PolicyMessage, mirror_message
from services.prem import collector, store
from services.prem.backends.base import Backend
from services.prem.config import PremSettings
from services.prem.core.flowtable import (
    FlowTable,
    by_family,
    compile_policies,
    copy_warnings,
    fallback_states,
)
from services.prem.core.policyset import DesiredState, Outcome, apply_message, is_redelivery
from services.prem.core.reconcile import plan

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Reply:
    """What handling one document produced: the status, and a document to forward (scheme 2)."""

    status: PolicyStatus
    forward: PolicyMessage | None = None


def refusals_of(problems: Iterable[Problem]) -> tuple[Refusal, ...]:
    """A status's refusals, one per problem (a one-router or a fleet worker's)."""
    return tuple(
        Refusal(reason=p.reason, policy_id=p.policy_id, field=p.field, line=p.line)
        for p in problems
    )


def warnings_of(problems: Iterable[Problem]) -> tuple[StatusWarning, ...]:
    """A status's warnings (a document applied all the same), one per problem."""
    return tuple(
        StatusWarning(reason=w.reason, policy_id=w.policy_id, field=w.field) for w in problems
    )


class Enforcer:
    """Holds the node's desired state and keeps the back end equal to it."""

    def __init__(
        self,
        settings: PremSettings,
        backend: Backend,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.backend = backend
        self.clock = clock
        store.remove_leftovers(settings.state_file)
        self.state = store.load(settings.state_file, settings.node)
        self.unusable: frozenset[int] = frozenset()
        #: (family, BID) -> why the back end could not copy there, at the last reconciliation.
        self.copy_reasons: dict[tuple[int, int], str] = {}
        self.sequence = 0
        #: Flow rules the back end holds for us since the last successful reconciliation.
        self.rules_enforced = 0

    def reconcile(self) -> int:
        """Make the back end enforce the current desired state; return the rules changed."""
        with collector.paused():
            desired = self._compile(self.state.policies)
            changes = plan(desired, self.backend.read())
            if changes:
                self.backend.apply(desired, changes)
        self.rules_enforced = len(desired)
        return len(changes.add) + len(changes.remove)

    def handle_document(self, payload: bytes) -> PolicyStatus:
        """Apply one policy document whole, or refuse it and change nothing."""
        return self.handle(payload).status

    def handle(self, payload: bytes) -> Reply:
        """Like `handle_document`, plus the mirrored uplink message of a symmetric document."""
        started = self.clock()
        limits = self.settings.limits
        requested: int | None = None
        try:
            message = policy_xml.parse(
                payload, max_bytes=limits.max_document_bytes, max_policies=limits.max_policies
            )
            # A version counts in its own node's sequence only: a document for another node
            # is refused without naming its version as ours, so the refusal cannot answer a
            # caller waiting for our acknowledgement of that same number.
            requested = message.version if message.node == self.settings.node else None
            digest = hashlib.sha256(payload).hexdigest()
            if is_redelivery(self.state, message, digest):
                log.info(
                    "node %s: version %d redelivered, acknowledged again",
                    self.settings.node,
                    message.version,
                )
                return Reply(
                    self._status("applied", started, requested=requested), self._mirror(message)
                )
            outcome = apply_message(self.state, message, self.settings, digest)
            self._check_actions(outcome.state.policies)
            self._enforce(outcome)
        except InvalidInput as exc:
            return Reply(self._refused(exc.problems, started, requested))
        except KernelError as exc:
            log.error("node %s: kernel refused version %s: %s", self.settings.node, requested, exc)
            return Reply(self._refused((Problem(f"kernel: {exc}"),), started, requested))
        log.info(
            "node %s: version %d applied (%d inserted, %d deleted, %d replaced) in %.1f ms",
            self.settings.node,
            outcome.state.version,
            outcome.inserted,
            outcome.deleted,
            outcome.replaced,
            (self.clock() - started) * 1000,
        )
        warnings = (*outcome.warnings, *copy_warnings(outcome.state.policies, self.copy_reasons))
        for warning in warnings:
            log.warning(
                "node %s: version %d applied with a warning: %s",
                self.settings.node,
                outcome.state.version,
                warning,
            )
        status = self._status(
            "applied",
            started,
            requested=requested,
            inserted=outcome.inserted,
            deleted=outcome.deleted,
            replaced=outcome.replaced,
            warnings=warnings_of(warnings),
        )
        return Reply(status, self._mirror(message))

    def refuse(self, problem: Problem) -> PolicyStatus:
        """Refuse a document for a reason only the transport knows (a retained delivery)."""
        return self._refused((problem,), self.clock(), None)

    def _mirror(self, message: PolicyMessage) -> PolicyMessage | None:
        """The uplink message for the MR when `message` is symmetric (scheme 2)."""
        if not message.symmetric or self.settings.peer_node is None:
            return None
        return mirror_message(message, self.settings.peer_node)

    def handle_unusable(self, unusable: frozenset[int]) -> PolicyStatus | None:
        """Move flows to fallbacks (or back) after a BID's usability changed."""
        if unusable == self.unusable:
            return None
        started = self.clock()
        previous, self.unusable = self.unusable, unusable
        try:
            changed = self.reconcile()
        except KernelError as exc:
            self.unusable = previous
            log.error(
                "node %s: fallback for unusable BIDs %s failed: %s",
                self.settings.node,
                sorted(unusable),
                exc,
            )
            return self._refused((Problem(f"fallback failed: {exc}"),), started, None)
        log.info(
            "node %s: unusable BIDs now %s, %d rule changes",
            self.settings.node,
            sorted(unusable),
            changed,
        )
        return self._status("fallback", started)

    def handle_routes(self) -> PolicyStatus | None:
        """After a BID table or device changed: where duplicates' copies go may have changed
        (a duplicate gateway came or went). Reconcile when a duplicate policy is enforced; a
        status only when a copy was added, moved or dropped."""
        if not any(isinstance(p.action, Duplicate) for p in self.state.policies):
            return None
        started = self.clock()
        before = self.copy_reasons
        try:
            changed = self.reconcile()
        except KernelError as exc:
            log.error("node %s: copies after a route change failed: %s", self.settings.node, exc)
            return self._refused((Problem(f"fallback failed: {exc}"),), started, None)
        if not changed and self.copy_reasons == before:
            return None
        log.info(
            "node %s: copies follow a route change (%d rule changes; no copy: %s)",
            self.settings.node,
            changed,
            sorted(self.copy_reasons),
        )
        return self._status("fallback", started)

    def _enforce(self, outcome: Outcome) -> None:
        with collector.paused():
            desired = self._compile(outcome.state.policies)
            changes = plan(desired, self.backend.read())
            if changes:
                self.backend.apply(desired, changes)
        self.rules_enforced = len(desired)
        store.save(self.settings.state_file, outcome.state)
        self.state = outcome.state

    def _check_actions(self, policies: tuple[Policy, ...]) -> None:
        """Refuse, before the kernel is touched, policies whose action the back end lacks."""
        problems = [
            Problem(
                f"the {self.backend.name} back end cannot enforce {p.action.kind} policies; "
                f"it enforces {', '.join(sorted(self.backend.actions))} (use the nftables "
                "back end)",
                p.id,
                p.action.kind,
            )
            for p in policies
            if p.action.kind not in self.backend.actions
        ]
        if problems:
            raise PolicyRefused(problems)

    def _compile(self, policies: tuple[Policy, ...]) -> FlowTable:
        """The flow table for `policies` with the BIDs usable now; where a duplicate policy
        is present, the back end says first which BIDs can take a copy (from the routes)."""
        copying = any(isinstance(p.action, Duplicate) for p in policies)
        self.copy_reasons = self.backend.uncopyable() if copying else {}
        return compile_policies(policies, self.unusable, by_family(self.copy_reasons))

    def _refused(
        self, problems: tuple[Problem, ...], started: float, requested: int | None
    ) -> PolicyStatus:
        for problem in problems:
            log.warning("node %s: refused version %s: %s", self.settings.node, requested, problem)
        return self._status("refused", started, requested=requested, refusals=refusals_of(problems))

    def _status(
        self,
        result: str,
        started: float,
        *,
        requested: int | None = None,
        inserted: int = 0,
        deleted: int = 0,
        replaced: int = 0,
        refusals: tuple[Refusal, ...] = (),
        warnings: tuple[StatusWarning, ...] = (),
    ) -> PolicyStatus:
        self.sequence += 1
        return PolicyStatus(
            sender=self.settings.node,
            sequence=self.sequence,
            node=self.settings.node,
            mobile_router=self.settings.mobile_router,
            direction=self.settings.direction,
            result=result,
            version=self.state.version,
            requested_version=requested,
            inserted=inserted,
            deleted=deleted,
            replaced=replaced,
            refusals=refusals,
            warnings=warnings,
            fallbacks=fallback_states(
                self.state.policies, self.unusable, by_family(self.copy_reasons)
            ),
            elapsed_ms=(self.clock() - started) * 1000,
            backend=self.backend.name,
        )

    def current_state(self) -> DesiredState:
        """The desired state in force."""
        return self.state
