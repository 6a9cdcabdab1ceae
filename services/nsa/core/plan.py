"""From the assignment to policy messages: desired sets, pure diffs, versions per node.

Desired sets: every selector of an assigned class is one policy, id "<class>.<index>",
priority `profile.priority + index`, forwarding to its BID with the class's other BIDs the
operator allows as fallbacks (so a PREM can fall over on carrier loss before the NSA decides
again); a load-balancing class's policies balance over its shares instead, a redundant or
protected class's duplicate on its BID and its copies, and a priority-overflow class's fill
its tiers in order (`flow_action`). The MR
(uplink) gets the profile's selectors; the HA (downlink) gets them mirrored, the destination
being the mobile network side; actions are the same at both ends (BIDs name the same
bindings there). Scheme 1: one document per node. Scheme 2: only the HA's, marked
`symmetric`, and the HA's worker derives the MR's (`mirror_message`, which mirrors the
selectors and keeps every action). A message uses policy schema version 2 only when one of
its policies balances or duplicates (`PolicyMessage.schema_version`); the codec writes the
others as version 1.

Ledgers: what each node last acknowledged (version and set) and what is in flight. A plan is
the diff from the acknowledged set to the desired one, as an Update with the next version, or
nothing when they are equal. One message per node is in flight at a time: the next plan waits
for its acknowledgement, so a diff is always against a set the node really holds. A full
Install replaces the diff when the node's state is not known: a fresh ledger, a refusal, a
lost message, a status with an unexpected version, or a hello after a restart (`resync`).
Versions per (node, MR) only grow: each message takes one above any version sent or reported.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from services.contracts.errors import InvalidInput, Problem
from services.contracts.fencing import next_version
from services.contracts.messages import PolicyStatus, Presence
from services.contracts.policy import (
    MAX_ACTION_BIDS,
    Balance,
    Direction,
    Duplicate,
    Forward,
    Install,
    NodeId,
    Policy,
    PolicyMessage,
    Priority,
    Selector,
    Share,
    Tier,
    Update,
    mirror_selector,
)
from services.nsa.core.config import ApplicationProfile, NsaConfig
from services.nsa.core.frozen import Frozen
from services.nsa.core.state import ClassState, MrState


def desired_policies(config: NsaConfig, state: MrState, direction: Direction) -> tuple[Policy, ...]:
    """The policy set one node of `state.mobile_router` must hold, in precedence order."""
    policies = []
    for profile in config.profiles_for(state.mobile_router):
        assigned = state.classes.get(profile.name)
        if assigned is None or not assigned.flows:
            continue  # withdrawn: the class's traffic takes the default path
        allowed = assigned.fallbacks if config.settings.fallbacks else ()
        for index, selector in enumerate(profile.flow_selectors()[: len(assigned.flows)]):
            policies.append(
                _policy(
                    profile,
                    index,
                    selector,
                    direction=direction,
                    assigned=assigned,
                    allowed=allowed,
                )
            )
    return tuple(sorted(policies, key=Policy.sort_key))


#: Policies made before (`_policy`), by what they are made of; (selector, policy) each.
_MADE: dict[tuple[object, ...], tuple[Selector, Policy]] = {}
#: Entries kept at most (a few per class and BID combination in use; cleared when full).
MADE_LIMIT = 65_536


def _policy(
    profile: ApplicationProfile,
    index: int,
    selector: Selector,
    *,
    direction: Direction,
    assigned: ClassState,
    allowed: tuple[int, ...],
) -> Policy:
    """One flow's policy, built (and validated) once per combination of its inputs.

    Why: every decision plans both nodes of its router again, and most of its classes keep
    their assignment, so the same policies were built and validated again each time (measured:
    a quarter of a decision's CPU at 5,000 routers). A policy is frozen, so one object serves
    every plan that needs it. The selector is a key by identity and checked on each hit: a
    reloaded configuration brings new selector objects, whose ids may be those of old ones.
    """
    bid = assigned.flows[index]
    action = (bid, allowed, assigned.tiers, assigned.balance, assigned.copies)
    key = (id(selector), direction, profile.name, profile.priority, index, action)
    found = _MADE.get(key)
    if found is not None and found[0] is selector:
        return found[1]
    policy = Policy(
        id=profile.policy_id(index),
        priority=profile.priority + index,
        selector=mirror_selector(selector) if direction is Direction.DOWNLINK else selector,
        action=flow_action(assigned, bid, allowed),
    )
    if len(_MADE) >= MADE_LIMIT:
        _MADE.clear()
    _MADE[key] = (selector, policy)
    return policy


def flow_action(
    assigned: ClassState, bid: int, allowed: tuple[int, ...]
) -> Forward | Balance | Duplicate | Priority:
    """The action of one flow of a class: a balance over the class's shares (load
    balancing), a duplicate on its BID and the class's copies (redundant, protected), a
    priority over its tiers (priority-overflow), else a forward to its BID. The fallbacks are
    the other BIDs in `allowed`, as many as the action can carry (`MAX_ACTION_BIDS` in all
    for a balance, a duplicate or a priority)."""
    if len(assigned.tiers) > 1:
        tiers = tuple(Tier(bid=b, rate_bps=rate) for b, rate in assigned.tiers)
        used = {b for b, _ in assigned.tiers}
        room = MAX_ACTION_BIDS - len(tiers)
        return Priority(tiers=tiers, fallbacks=tuple(b for b in allowed if b not in used)[:room])
    if assigned.balance:
        shares = tuple(Share(bid=b, weight=w) for b, w in assigned.balance)
        used = {b for b, _ in assigned.balance}
        room = MAX_ACTION_BIDS - len(shares)
        return Balance(shares=shares, fallbacks=tuple(b for b in allowed if b not in used)[:room])
    paths = (bid, *(b for b in assigned.copies if b != bid))
    if len(paths) > 1:
        room = MAX_ACTION_BIDS - len(paths)
        return Duplicate(paths=paths, fallbacks=tuple(b for b in allowed if b not in paths)[:room])
    return Forward(bid=bid, fallbacks=tuple(b for b in allowed if b != bid))


def diff(current: Iterable[Policy], desired: Iterable[Policy]) -> Update | None:
    """The Update turning `current` into `desired` by id, or None when they are equal.

    Ids only in `current` are deleted, ids only in `desired` inserted, ids in both with a
    different policy replaced; each list is sorted, so equal inputs give equal messages.
    """
    have = {p.id: p for p in current}
    want = {p.id: p for p in desired}
    delete = tuple(sorted(have.keys() - want.keys()))
    insert = tuple(sorted((want[i] for i in want.keys() - have.keys()), key=Policy.sort_key))
    replace = tuple(
        sorted(
            (want[i] for i in want.keys() & have.keys() if want[i] != have[i]),
            key=Policy.sort_key,
        )
    )
    if not (delete or insert or replace):
        return None
    return Update(insert=insert, delete=delete, replace=replace)


class NodeLedger(Frozen):
    """What one node (HA or MR) holds for one mobile router, as far as the NSA knows."""

    node: NodeId
    mobile_router: NodeId
    direction: Direction
    symmetric: bool = False
    version: int = 0  # last acknowledged version
    policies: tuple[Policy, ...] = ()  # the set at `version`
    last_version: int = 0  # highest version sent or reported by the node
    in_flight: PolicyMessage | None = None
    in_flight_policies: tuple[Policy, ...] = ()  # the set once `in_flight` is applied
    needs_resync: bool = True  # a fresh ledger does not know what the node holds
    #: The fencing epoch of this replica's ownership of the router (0: embedded, unfenced);
    #: carried in the high bits of every version sent (`services.contracts.fencing`).
    epoch: int = 0

    def next_message(self, desired: tuple[Policy, ...]) -> tuple[NodeLedger, PolicyMessage | None]:
        """The message that brings the node to `desired`, and the ledger once it is sent.

        None while a message is in flight (ask again after its acknowledgement) or when the
        node already holds `desired`.
        """
        if self.in_flight is not None:
            return self, None
        wanted = tuple(sorted(desired, key=Policy.sort_key))
        operation: Install | Update | None = (
            Install(policies=wanted) if self.needs_resync else diff(self.policies, wanted)
        )
        if operation is None:
            return self, None
        message = PolicyMessage(
            node=self.node,
            mobile_router=self.mobile_router,
            direction=self.direction,
            version=next_version(self.last_version, self.epoch),
            operation=operation,
            symmetric=self.symmetric,
        )
        sent = self.model_copy(
            update={
                "in_flight": message,
                "in_flight_policies": wanted,
                "last_version": message.version,
                "needs_resync": False,
            }
        )
        return sent, message

    def resync_message(
        self, desired: tuple[Policy, ...], reported_version: int | None = None
    ) -> tuple[NodeLedger, PolicyMessage]:
        """A full Install of `desired` now, above `reported_version` and anything sent."""
        reset = self.model_copy(
            update={
                "needs_resync": True,
                "in_flight": None,
                "in_flight_policies": (),
                "last_version": max(self.last_version, reported_version or 0),
            }
        )
        sent, message = reset.next_message(desired)
        assert message is not None  # an Install is always produced after a reset
        return sent, message

    def acknowledged(self, status: PolicyStatus) -> NodeLedger:
        """The ledger after the node's status for a message (or an unsolicited one)."""
        if status.node != self.node:
            raise InvalidInput(
                [Problem(f"status of {status.node!r} given to {self.node!r}", field="node")]
            )
        seen = max(self.last_version, status.version, status.requested_version or 0)
        flight = self.in_flight
        answers = flight is not None and status.requested_version == flight.version
        if answers and status.result != "fallback":
            assert flight is not None
            if status.result == "applied" and status.version == flight.version:
                return self.model_copy(
                    update={
                        "version": flight.version,
                        "policies": self.in_flight_policies,
                        "in_flight": None,
                        "in_flight_policies": (),
                        "last_version": seen,
                    }
                )
            return self._unknown(seen)
        if flight is None and status.version != self.version:
            return self._unknown(seen)  # the node holds a version we did not give it
        return self.model_copy(update={"last_version": seen})

    def greeted(self, presence: Presence) -> NodeLedger:
        """A worker's presence: resynchronise unless it announces a version this ledger knows
        the node holds (or is about to acknowledge). A last will changes nothing.

        Workers announce their enforced version on start and after each document they apply
        (the retained presence is what a late reader sees first), so a presence is not by
        itself a restart: a worker that restarted with its state intact holds what it
        acknowledged; one that lost it, or was restored from an older copy, announces
        another version and gets a full Install.
        """
        if not presence.online or self.holds(presence.version):
            return self
        return self._unknown(max(self.last_version, presence.version or 0))

    def holds(self, version: int | None) -> bool:
        """Whether `version` is what the node is known to hold: the acknowledged version
        with nothing left to resynchronise, or the version in flight.

        While a message is in flight the acknowledged version still counts: the presence a
        worker announces after applying it can reach us after the next message left, and
        is then stale news, not a restart (a worker that lost its state announces 0).
        """
        if version is None:
            return False
        if self.in_flight is not None:
            return version in (self.in_flight.version, self.version)
        return not self.needs_resync and version == self.version

    def lost(self) -> NodeLedger:
        """The in-flight message timed out: whether it was applied is unknown."""
        return self._unknown(self.last_version)

    def must_resync(self, reported_version: int | None = None) -> NodeLedger:
        """The node's state is in doubt (e.g. its scheme 2 peer refused a mirrored set)."""
        return self._unknown(max(self.last_version, reported_version or 0))

    def _unknown(self, last_version: int) -> NodeLedger:
        return self.model_copy(
            update={
                "in_flight": None,
                "in_flight_policies": (),
                "needs_resync": True,
                "last_version": last_version,
            }
        )


class MrLedgers(Frozen):
    """The ledgers of one mobile router's two nodes. Scheme 2 has no MR ledger: the HA's
    worker mirrors its symmetric documents to the MR under the same version."""

    mobile_router: NodeId
    scheme: Literal[1, 2]
    ha: NodeLedger
    mr_node: NodeId
    mr: NodeLedger | None = None


def new_ledgers(
    mobile_router: str, *, ha_node: str, mr_node: str, scheme: Literal[1, 2] = 1
) -> MrLedgers:
    """Ledgers that know nothing yet: the first plan installs the whole set on each node."""
    ha = NodeLedger(
        node=ha_node,
        mobile_router=mobile_router,
        direction=Direction.DOWNLINK,
        symmetric=scheme == 2,
    )
    mr = (
        NodeLedger(node=mr_node, mobile_router=mobile_router, direction=Direction.UPLINK)
        if scheme == 1
        else None
    )
    return MrLedgers(mobile_router=mobile_router, scheme=scheme, ha=ha, mr_node=mr_node, mr=mr)


def plan(
    ledgers: MrLedgers, config: NsaConfig, state: MrState
) -> tuple[MrLedgers, tuple[PolicyMessage, ...]]:
    """The messages that bring both nodes to the assignment in `state`, HA first.

    Each is an Update (deletes, replaces, inserts) or an Install when the node must be
    resynchronised; a node whose message is in flight or that already holds its set gets none.
    """
    ha, to_ha = ledgers.ha.next_message(desired_policies(config, state, Direction.DOWNLINK))
    mr, to_mr = ledgers.mr, None
    if mr is not None:
        mr, to_mr = mr.next_message(desired_policies(config, state, Direction.UPLINK))
    messages = tuple(m for m in (to_ha, to_mr) if m is not None)
    return ledgers.model_copy(update={"ha": ha, "mr": mr}), messages


def resync(
    ledgers: MrLedgers,
    node: str,
    config: NsaConfig,
    state: MrState,
    reported_version: int | None = None,
) -> tuple[MrLedgers, PolicyMessage]:
    """A full Install for `node` now (it reported an unexpected version or restarted).

    In scheme 2 the MR is reached through the HA, so resynchronising the MR re-installs the
    HA's symmetric set (the HA mirrors it to the MR).
    """
    if ledgers.mr is not None and node == ledgers.mr.node:
        desired = desired_policies(config, state, Direction.UPLINK)
        mr, message = ledgers.mr.resync_message(desired, reported_version)
        return ledgers.model_copy(update={"mr": mr}), message
    _check_node(ledgers, node)
    desired = desired_policies(config, state, Direction.DOWNLINK)
    ha, message = ledgers.ha.resync_message(desired, reported_version)
    return ledgers.model_copy(update={"ha": ha}), message


def acknowledge(ledgers: MrLedgers, status: PolicyStatus) -> MrLedgers:
    """Record a node's status. Scheme 2: a refusal by the MR resynchronises the HA."""
    if ledgers.mr is not None and status.node == ledgers.mr.node:
        return ledgers.model_copy(update={"mr": ledgers.mr.acknowledged(status)})
    _check_node(ledgers, status.node)
    if status.node == ledgers.ha.node:
        return ledgers.model_copy(update={"ha": ledgers.ha.acknowledged(status)})
    if status.result == "refused":  # the MR refused the HA's mirror: its version counts too
        return ledgers.model_copy(update={"ha": ledgers.ha.must_resync(status.version)})
    return ledgers


def lost(ledgers: MrLedgers, node: str) -> MrLedgers:
    """The message in flight to `node` got no acknowledgement in time: resync it next plan.

    Scheme 2: the MR's set is the HA's mirror, so the HA is resynchronised.
    """
    if ledgers.mr is not None and node == ledgers.mr.node:
        return ledgers.model_copy(update={"mr": ledgers.mr.lost()})
    _check_node(ledgers, node)
    return ledgers.model_copy(update={"ha": ledgers.ha.lost()})


def greet(ledgers: MrLedgers, presence: Presence) -> MrLedgers:
    """Record a worker's presence; a hello makes its node (scheme 2: the HA) resynchronise."""
    if ledgers.mr is not None and presence.node == ledgers.mr.node:
        return ledgers.model_copy(update={"mr": ledgers.mr.greeted(presence)})
    _check_node(ledgers, presence.node)
    if presence.node == ledgers.ha.node:
        return ledgers.model_copy(update={"ha": ledgers.ha.greeted(presence)})
    if not presence.online or ledgers.ha.holds(presence.version):
        return ledgers
    # Scheme 2: the mirror carries the HA's version, so the next one must pass the MR's too.
    return ledgers.model_copy(update={"ha": ledgers.ha.must_resync(presence.version)})


def _check_node(ledgers: MrLedgers, node: str) -> None:
    if node not in (ledgers.ha.node, ledgers.mr_node):
        raise InvalidInput(
            [
                Problem(
                    f"node {node!r} serves no policy set of mobile router "
                    f"{ledgers.mobile_router!r}",
                    field="node",
                )
            ]
        )
