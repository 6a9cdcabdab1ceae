"""The NSA's partition leases on etcd: a thread that keeps this replica's lease alive, reads
who is live and who holds what, and tells the decision thread what it gained and lost.

Keys under the configured prefix (`[nsa.coordination]`), all on this replica's lease:

- `members/<name>`: this replica is alive;
- `partitions/<p>`: the replica holding partition p, created only if absent (one holder at
  a time); the revision that created it is the ownership's epoch, the fencing token carried
  in every version sent for its routers (`services.contracts.fencing`). A handover deletes
  it (only while it still names this replica);
- `ready/<p>`: the replica that should hold p (a returning one) has rebuilt its routers'
  state and is ready to take it over;
- `partition-count` (no lease): the partition count the replicas agree on; a replica
  configured with another one takes nothing (`_agreed`).

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

#: How often a replica repeats that etcd cannot be used.
WARN_EVERY_S = 10.0


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
        self._count_ok = False
        self._count_warned = -WARN_EVERY_S
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
        failing_since: float | None = None
        warned = 0.0
        while not self._stop.is_set():
            try:
                self.step()
            except EtcdError as exc:
                self.errors += 1
                now = self.clock()
                if failing_since is None:
                    failing_since = now
                if now - warned >= WARN_EVERY_S:  # not 4 lines a second while etcd is away
                    warned = now
                    log.warning(
                        "replica %s: etcd unusable for %.1f s (%d partitions held): %s",
                        self.name,
                        now - failing_since,
                        len(self.held),
                        exc,
                    )
            except Exception:
                self.errors += 1
                log.exception("replica %s: lease turn failed", self.name)
            else:
                if failing_since is not None:
                    log.info("replica %s: etcd usable again", self.name)
                    failing_since, warned = None, 0.0
            self._stop.wait(self.turn_s)

    # one turn -----------------------------------------------------------------------------
    def step(self) -> None:
        """Fence, renew, read, act (see the module docstring)."""
        self._fence(self.clock())
        if not self._agreed():
            return
        self._renew()
        prefix = self.settings.prefix
        members = {e.value for e in self.etcd.range(f"{prefix}members/")}
        holders = self._by_partition(f"{prefix}partitions/")
        ready = self._by_partition(f"{prefix}ready/")
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

    def _agreed(self) -> bool:
        """Whether every replica splits the routers alike: the first one records its
        partition count in etcd (`partition-count`, no lease); a replica configured with
        another count would put routers in other partitions, and two replicas would decide
        for one router, so it takes nothing (and says so) until its settings are fixed."""
        if self._count_ok:
            return True
        key = f"{self.settings.prefix}partition-count"
        mine = str(self.settings.partitions)
        if self.etcd.create(key, mine, 0) is not None:
            self._count_ok = True
            return True
        found = [e.value for e in self.etcd.range(key)]
        if found == [mine]:
            self._count_ok = True
            return True
        now = self.clock()
        if now - self._count_warned >= WARN_EVERY_S:
            self._count_warned = now
            log.error(
                "replica %s: etcd says the replicas split the routers into %s partitions, "
                "[nsa.coordination] partitions says %s: taking nothing until they agree (to "
                "change the count, stop every replica and delete the key %s)",
                self.name,
                found[0] if found else "?",
                mine,
                key,
            )
        return False

    def _by_partition(self, prefix: str) -> dict[int, str]:
        """partition -> value of the keys under `prefix`; a key that names no partition of
        ours (another deployment's, a typo by hand) is skipped, not a failed turn."""
        found = {}
        for entry in self.etcd.range(prefix):
            item = entry.key[len(prefix) :]
            if item.isdecimal() and int(item) < self.settings.partitions:
                found[int(item)] = entry.value
        return found

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
