"""The node's desired policy set and how one policy message changes it (pure, all-or-nothing).

Every check that could refuse a message runs before a new state is returned, and the old state
object is never modified, so a refused message leaves nothing behind.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field

from services.contracts.errors import PolicyRefused, Problem
from services.contracts.fencing import epoch_of, stale_epoch
from services.contracts.policy import (
    Balance,
    Duplicate,
    Flush,
    Forward,
    Install,
    NodeId,
    Policy,
    PolicyMessage,
    Priority,
    Selector,
    Update,
)
from services.prem.core.settings import NodeSettings


class DesiredState(BaseModel):
    """What this node must enforce: the policies and the version of the last message applied."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    node: NodeId
    version: int = Field(default=0, ge=0)
    digest: str = Field(default="", description="SHA-256 of the document that set `version`")
    policies: tuple[Policy, ...] = ()

    def by_id(self) -> dict[str, Policy]:
        """Policies keyed by id."""
        return {p.id: p for p in self.policies}


@dataclass(frozen=True)
class Outcome:
    """The state after a message, and what the message did."""

    state: DesiredState
    inserted: int = 0
    deleted: int = 0
    replaced: int = 0
    #: Applied all the same, but the sender should know (`shadowed`).
    warnings: tuple[Problem, ...] = ()


def apply_message(
    state: DesiredState, message: PolicyMessage, settings: NodeSettings, digest: str = ""
) -> Outcome:
    """Return the state after `message`, or raise PolicyRefused listing every problem.

    `digest` identifies the document; it is stored so that a redelivery of the very document
    that set the current version can be recognised (see `is_redelivery`).
    """
    problems = _addressing_problems(state, message, settings)
    op = message.operation
    current = state.by_id()
    inserted = deleted = replaced = 0
    if isinstance(op, Install):
        new = {p.id: p for p in op.policies}
        # Counted against the current set, so re-installing the same set reports no change.
        inserted = len(new.keys() - current.keys())
        deleted = len(current.keys() - new.keys())
        replaced = sum(1 for pid in new.keys() & current.keys() if new[pid] != current[pid])
        incoming: tuple[Policy, ...] = op.policies
    elif isinstance(op, Update):
        new = dict(current)
        for policy_id in op.delete:
            if new.pop(policy_id, None) is None:
                problems.append(Problem("delete of a policy that is not installed", policy_id))
        for policy in op.replace:
            if policy.id not in new:
                problems.append(Problem("replace of a policy that is not installed", policy.id))
            new[policy.id] = policy
        for policy in op.insert:
            if policy.id in new:
                problems.append(
                    Problem("insert of a policy id that is already installed", policy.id)
                )
            new[policy.id] = policy
        inserted, deleted, replaced = len(op.insert), len(op.delete), len(op.replace)
        incoming = (*op.insert, *op.replace)
    else:
        assert isinstance(op, Flush)
        new = {}
        deleted = len(current)
        incoming = ()
    problems += _bid_problems(incoming, settings)
    if len(new) > settings.limits.max_policies:
        problems.append(
            Problem(
                f"the node would hold {len(new)} policies, over the limit of "
                f"{settings.limits.max_policies}"
            )
        )
    if problems:
        raise PolicyRefused(problems)
    policies = tuple(sorted(new.values(), key=Policy.sort_key))
    return Outcome(
        DesiredState(node=state.node, version=message.version, digest=digest, policies=policies),
        inserted=inserted,
        deleted=deleted,
        replaced=replaced,
        warnings=shadowed(policies),
    )


#: More shadowed policies than this are summarised in one last warning.
MAX_WARNINGS = 20


def shadowed(policies: tuple[Policy, ...]) -> tuple[Problem, ...]:
    """Policies that can never match: same priority and same selector as one whose id sorts
    first, which takes every packet (ties go by id, `Policy.sort_key`).

    Such a set is applied (a sender may mean it, e.g. while moving a flow between ids), but
    the status says which policy is dead and why, instead of one of them silently never
    matching. `policies` is in precedence order.
    """
    # Hashing a selector costs microseconds (its addresses); a priority only one policy has
    # cannot tie, so most policies of a large set are skipped for the price of an int.
    shared = {p for p, n in Counter(p.priority for p in policies).items() if n > 1}
    first: dict[tuple[int, Selector], str] = {}
    found: list[Problem] = []
    for policy in policies:
        if policy.priority not in shared:
            continue
        key = (policy.priority, policy.selector)
        winner = first.setdefault(key, policy.id)
        if winner != policy.id:
            found.append(
                Problem(
                    f"never matches: policy {winner!r} has the same priority ({policy.priority}) "
                    "and the same selector, and takes precedence (ties go to the lower id)",
                    policy.id,
                    "selector",
                )
            )
    if len(found) > MAX_WARNINGS:
        hidden = len(found) - MAX_WARNINGS
        found = [*found[:MAX_WARNINGS], Problem(f"{hidden} more shadowed policies not shown")]
    return tuple(found)


def is_redelivery(state: DesiredState, message: PolicyMessage, digest: str) -> bool:
    """The same document as the one already enforced (a QoS 1 duplicate): acknowledge again."""
    return bool(digest) and message.version == state.version and digest == state.digest


def _addressing_problems(
    state: DesiredState, message: PolicyMessage, settings: NodeSettings
) -> list[Problem]:
    problems = []
    if message.node != settings.node:
        problems.append(
            Problem(
                f"message is for node {message.node!r}, this is {settings.node!r}", field="node"
            )
        )
    if message.mobile_router != settings.mobile_router:
        problems.append(
            Problem(
                f"message concerns mobile router {message.mobile_router!r}, this node serves "
                f"{settings.mobile_router!r}",
                field="mobile-router",
            )
        )
    if message.direction != settings.direction:
        problems.append(
            Problem(
                f"{message.direction.value} policies cannot be enforced on a "
                f"{settings.role.value.upper()} ({settings.direction.value} only)",
                field="direction",
            )
        )
    if message.symmetric and settings.peer_node is None:
        problems.append(
            Problem(
                f"symmetric (scheme 2) document, but node {settings.node!r} has no peer_node "
                "to forward the mirrored uplink set to",
                field="symmetric",
            )
        )
    if stale_epoch(message.version, state.version):
        problems.append(
            Problem(
                f"fenced: version {message.version} is of epoch {epoch_of(message.version)}, "
                f"below epoch {epoch_of(state.version)} of the enforced version "
                f"{state.version} (a replica that lost its partition)",
                field="version.epoch",
            )
        )
    elif message.version <= state.version:
        problems.append(
            Problem(
                f"stale or replayed version {message.version}: version {state.version} is "
                "already enforced",
                field="version",
            )
        )
    return problems


def _bid_problems(policies: tuple[Policy, ...], settings: NodeSettings) -> list[Problem]:
    known = set(settings.bid_numbers())
    problems = []
    for policy in policies:
        action = policy.action
        if isinstance(action, Forward | Balance | Duplicate | Priority):
            for bid in action.bids():
                if bid not in known:
                    problems.append(
                        Problem(
                            f"BID {bid} is not declared on node {settings.node!r} "
                            f"(declared: {sorted(known)})",
                            policy.id,
                            _bid_field(action, bid),
                        )
                    )
    return problems


def _bid_field(action: Forward | Balance | Duplicate | Priority, bid: int) -> str:
    """Where a BID sits in its action, as the document names it."""
    if isinstance(action, Forward):
        return "action.bid"
    if bid in action.fallbacks:
        return f"{action.kind}.fallback"
    part = {"balance": "share", "duplicate": "path", "priority": "tier"}[action.kind]
    return f"{action.kind}.{part}"
