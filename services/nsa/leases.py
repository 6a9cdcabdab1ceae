"""The NSA's partition leases on etcd: a thread that keeps this replica's lease alive, reads
who is live and who holds what, and tells the decision thread what it gained and lost.

Keys under the configured prefix (`[nsa.coordination]`), all on this replica's lease:

- `members/<name>`: this replica is alive;
- `partitions/<p>`: the replica holding partition p, created only if absent (one holder at
  a time); the revision that created it is the ownership's epoch, the fencing token carried
  in every version sent for its routers (`services.contracts.fencing`). A handover deletes
  it (only while it still names this replica);
- `ready/<p>`: the replica that should hold p (a returning one) has rebuilt its routers'
  state and is ready to take it over.

One lease per replica, not one per partition: a replica's partitions live and die with it
anyway, and renewing one lease per partition costs a request per partition every third of
the TTL. Measured with 64 partitions (bench.nsa --leases) on the loaded 2-core machine, a
replica that held them all at start-up could not renew them in time and lost them. With one
lease the renewal is one request whatever the partition count, and every partition keeps an
epoch of its own (its key's creation revision).

Every turn (`turn_s`) the thread renews the lease when due, ranges the three prefixes and
acts on the pure core's answer (`services.nsa.core.ownership.turn`). What the decision
thread must do is queued to it as items: `Warm` (rebuild from the bus, do not decide),
`Gain` (decide, under this epoch), `Lose` (stop deciding), `Cool` (forget a warmed one).

Self-fencing: when the lease was not renewed for its TTL (etcd unreachable, or this process
was stopped and resumed), every partition is given up at once, before anything else, since
etcd has deleted them or is about to. Between their expiry and that moment the decision
thread may still send a document under the old epoch: the workers refuse it once the new
holder's first document is applied (the fence). On close the lease is revoked, so the
partitions move at once rather than after a TTL.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from services.nsa.core.ownership import turn
from services.nsa.core.settings import Coordination
from services.nsa.etcd import Etcd, EtcdError
from services.nsa.items import Cool, Gain, Item, Lose, Warm

log = logging.getLogger(__name__)


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
        self.etcd = Etcd(settings.etcd, timeout_s=max(0.25, settings.lease_ttl_s / 4))
        #: partition -> epoch, for the partitions this replica holds
        self.held: dict[int, int] = {}
        #: partition -> when this replica started warming it
        self.warming: dict[int, float] = {}
        self.lease = 0
        self._renewed = 0.0
        self._ttl = settings.lease_ttl_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.errors = 0

    def _key(self, kind: str, item: int | str) -> str:
        return f"{self.settings.prefix}{kind}/{item}"

    # life cycle ---------------------------------------------------------------------------
    def start(self) -> None:
        """Start the thread (the first turn registers this replica)."""
        self._thread = threading.Thread(target=self._run, name=f"nsa-leases-{self.name}")
        self._thread.daemon = True
        self._thread.start()

    def close(self) -> None:
        """Stop the thread and revoke the lease: the others take the partitions at once."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        self._lose_all("closing")
        if self.lease:
            self._revoke(self.lease)
            self.lease = 0
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
            self.held.pop(p, None)
            self.notify(Lose(p))
            log.info("replica %s: hands partition %d over to %s", self.name, p, ready.get(p))
            self.etcd.delete_if(self._key("partitions", p), self.name)
        for p in moves.cool:
            self.warming.pop(p, None)
            self.notify(Cool(p))
        for p in moves.warm:
            self.warming[p] = now
            self.notify(Warm(p))
        for p in moves.mark_ready:
            self.etcd.put(self._key("ready", p), self.name, self.lease)
        for p in moves.take:
            self._take(p)

    def _take(self, p: int) -> None:
        epoch = self.etcd.create(self._key("partitions", p), self.name, self.lease)
        if epoch is None:  # another replica was quicker
            return
        self.held[p] = epoch
        self.warming.pop(p, None)
        self.notify(Gain(p, epoch))
        log.info("replica %s: holds partition %d (epoch %d)", self.name, p, epoch)
        self.etcd.delete_if(self._key("ready", p), self.name)

    def _fence(self, now: float) -> None:
        """Give every partition up when the lease may have expired (not renewed for its TTL);
        a new lease is granted at the next renewal."""
        if self.lease and now - self._renewed >= self._ttl:
            self._lose_all(f"the lease was not renewed for {now - self._renewed:.1f} s")
            old, self.lease = self.lease, 0
            self._revoke(old)  # if etcd still has it, its keys go now rather than later

    def _lose(self, p: int, why: str) -> None:
        self.held.pop(p, None)
        self.notify(Lose(p))
        log.warning("replica %s: lost partition %d: %s", self.name, p, why)

    def _lose_all(self, why: str) -> None:
        for p in sorted(self.held):
            self._lose(p, why)

    def _renew(self) -> None:
        """Keep the lease alive (every third of the TTL); a lease gone is a new one, with
        every partition of the old one lost."""
        now = self.clock()
        if self.lease and now - self._renewed >= self._ttl / 3:
            if self.etcd.keepalive(self.lease) > 0:
                self._renewed = now
            else:
                self._lose_all("its lease expired")
                self.lease = 0
        if not self.lease:
            self.lease, _ = self.etcd.grant(self._ttl)
            self._renewed = now
            self.etcd.put(self._key("members", self.name), self.name, self.lease)
