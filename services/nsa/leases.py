"""The NSA's partition leases on etcd: a thread that keeps this replica's leases alive, reads
who is live and who holds what, and tells the decision thread what it gained and lost.

Keys under the configured prefix (`[nsa.coordination]`):

- `members/<name>`: this replica is alive (on its member lease);
- `partitions/<p>`: the replica holding partition p, on a lease of that partition alone, so
  that one partition can be handed over (its lease revoked) without touching the others;
  the revision that created the key is the ownership's epoch, the fencing token carried in
  every version sent for its routers (`services.contracts.fencing`);
- `ready/<p>`: the replica that should hold p (a returning one) has rebuilt its routers'
  state and is ready to take it over (on its member lease).

Every turn (`turn_s`) the thread renews what is due, ranges the three prefixes and acts on
the pure core's answer (`services.nsa.core.ownership.turn`). What the decision thread must
do is queued to it as items: `Warm` (rebuild from the bus, do not decide), `Gain` (decide,
under this epoch), `Lose` (stop deciding), `Cool` (forget a warmed partition).

Self-fencing: a partition whose lease was not renewed for its TTL (etcd unreachable, or this
process was stopped and resumed) is given up at once, before anything else, since etcd has
deleted it or is about to. Between its expiry and that moment, the decision thread may still
send a document under the old epoch: the workers refuse it once the new holder's first
document is applied (the fence). On close, the leases are revoked, so the partitions move
at once rather than after a TTL.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from services.nsa.core.ownership import turn
from services.nsa.core.settings import Coordination
from services.nsa.etcd import Etcd, EtcdError
from services.nsa.items import Cool, Gain, Item, Lose, Warm

log = logging.getLogger(__name__)


@dataclass
class _Held:
    lease: int
    epoch: int
    renewed_at: float


class Leases:
    """This replica's side of the partition leases (see the module docstring)."""

    def __init__(
        self,
        settings: Coordination,
        name: str,
        notify: Callable[[Item], None],
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.name = name
        self.notify = notify
        self.clock = clock
        self.turn_s = min(0.25, settings.lease_ttl_s / 4)
        self.etcd = Etcd(settings.etcd, timeout_s=max(0.2, settings.lease_ttl_s / 4))
        self.held: dict[int, _Held] = {}
        self.warming: dict[int, float] = {}
        self._member: int = 0
        self._member_renewed = 0.0
        self._ttl = settings.lease_ttl_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.errors = 0

    def _key(self, kind: str, item: str) -> str:
        return f"{self.settings.prefix}{kind}/{item}"

    # life cycle ---------------------------------------------------------------------------
    def start(self) -> None:
        """Start the thread (the first turn registers this replica)."""
        self._thread = threading.Thread(target=self._run, name=f"nsa-leases-{self.name}")
        self._thread.daemon = True
        self._thread.start()

    def close(self) -> None:
        """Stop the thread and revoke the leases: the others take the partitions at once."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        for p, held in sorted(self.held.items()):
            self.notify(Lose(p))
            self._revoke(held.lease)
        self.held.clear()
        if self._member:
            self._revoke(self._member)
        self.etcd.close()

    def _revoke(self, lease: int) -> None:
        try:
            self.etcd.revoke(lease)
        except EtcdError as exc:
            log.warning("replica %s: cannot revoke lease %x: %s", self.name, lease, exc)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.step()
            except EtcdError as exc:
                self.errors += 1
                log.warning("replica %s: etcd: %s", self.name, exc)
            except Exception:
                self.errors += 1
                log.exception("replica %s: lease turn failed", self.name)
            self._stop.wait(self.turn_s)

    # one turn -----------------------------------------------------------------------------
    def step(self) -> None:
        """Fence, renew, read, act (see the module docstring)."""
        self._fence(self.clock())
        self._renew()
        prefix = self.settings.prefix
        members = {e.value for e in self.etcd.range(f"{prefix}members/")}
        holders: dict[int, str] = {}
        for entry in self.etcd.range(f"{prefix}partitions/"):
            holders[int(entry.key.rsplit("/", 1)[1])] = entry.value
        ready = {int(e.key.rsplit("/", 1)[1]): e.value for e in self.etcd.range(f"{prefix}ready/")}
        for p in list(self.held):  # a partition etcd no longer shows us holding is lost
            if holders.get(p) != self.name:
                self._lose(p, "its key is gone")
        now = self.clock()
        warm_s = self.settings.warm_s
        moves = turn(
            self.name,
            self.settings.partitions,
            members=members,
            holders=holders,
            ready=ready,
            warming={p: now - since >= warm_s for p, since in self.warming.items()},
        )
        for p in moves.release:
            held = self.held.pop(p)
            self.notify(Lose(p))
            log.info("replica %s: hands partition %d over to %s", self.name, p, ready.get(p))
            self._revoke(held.lease)
        for p in moves.cool:
            self.warming.pop(p, None)
            self.notify(Cool(p))
        for p in moves.warm:
            self.warming[p] = now
            self.notify(Warm(p))
        for p in moves.mark_ready:
            self.etcd.put(self._key("ready", str(p)), self.name, self._member)
        for p in moves.take:
            self._take(p)

    def _take(self, p: int) -> None:
        lease, ttl = self.etcd.grant(self._ttl)
        epoch = self.etcd.create(self._key("partitions", str(p)), self.name, lease)
        if epoch is None:  # another replica was quicker
            self._revoke(lease)
            return
        self.held[p] = _Held(lease, epoch, self.clock())
        self.warming.pop(p, None)
        self.notify(Gain(p, epoch))
        log.info("replica %s: holds partition %d (epoch %d, TTL %d s)", self.name, p, epoch, ttl)
        self.etcd.delete(self._key("ready", str(p)))

    def _fence(self, now: float) -> None:
        """Give up every partition whose lease may have expired (not renewed for its TTL)."""
        for p, held in list(self.held.items()):
            if now - held.renewed_at >= self._ttl:
                self._lose(p, f"not renewed for {now - held.renewed_at:.1f} s")
        if self._member and now - self._member_renewed >= self._ttl:
            self._member = 0

    def _lose(self, p: int, why: str) -> None:
        self.held.pop(p, None)
        self.notify(Lose(p))
        log.warning("replica %s: lost partition %d: %s", self.name, p, why)

    def _renew(self) -> None:
        """Keep the member lease and the partitions' leases alive (a third of the TTL)."""
        now = self.clock()
        due = now - self._ttl / 3
        if self._member and self._member_renewed <= due:
            if self.etcd.keepalive(self._member) > 0:
                self._member_renewed = now
            else:
                self._member = 0
        if not self._member:
            self._member, _ = self.etcd.grant(self._ttl)
            self._member_renewed = now
            self.etcd.put(self._key("members", self.name), self.name, self._member)
        for p, held in list(self.held.items()):
            if held.renewed_at > due:
                continue
            if self.etcd.keepalive(held.lease) > 0:
                held.renewed_at = now
            else:
                self._lose(p, "its lease expired")
