"""Leader leases, the pure part: what a replica does next with one agent's lease (time given).

One lease per leader-only agent lives in the ``tmc-leases`` KV bucket (see
:mod:`tmcd.contracts.lease`); every write is a compare-and-set on the revision last read, so
two replicas never both win a round.

- **Absent** (never taken, released, or expired out of the bucket): create it.
- **Held by this replica's identity** (now, or by its previous process after a restart):
  renew it — a restarted replica takes its own lease back at once instead of waiting a TTL.
  Once a process has held a lease, another process of the same identity that took it is
  treated as another holder (two processes must not share an identity; the newer one wins).
- **Held by another** and not renewed for ``ttl`` seconds (by its own ``renewTime``): take it
  over.  Otherwise look again when it would expire, at the latest after one renew interval.

The holder gives the lease up on its own, before anyone may take it: at once when a write
finds that someone else wrote the key (compare-and-set conflict) or a read shows another
holder, and when it could not renew for ``ttl - renew`` seconds (NATS unreachable).  A
follower takes over only ``ttl`` after the holder's last renewal, so the two never act at the
same time as long as their clocks agree within one renew interval.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from tmcd.contracts.lease import Lease

__all__ = ["LeaseState", "Step", "next_lease", "plan"]

Action = Literal["create", "update", "wait"]


@dataclass(frozen=True)
class Step:
    """What to do with a lease now, and when to look at it again."""

    action: Action
    revision: int = 0
    """The revision to compare against (``update``)."""
    wake: float = 0.0
    """Seconds until the next look (``wait``)."""
    takeover: bool = False
    """``update`` of a lease another replica held (it expired)."""


@dataclass(frozen=True)
class LeaseState:
    """One replica's view of one agent's lease."""

    leading: bool = False
    last_ok: float = 0.0
    """Unix time of this replica's last successful write of the lease."""
    revision: int = 0
    """The lease's revision after that write."""
    acquired: float = 0.0
    """Unix time this replica last acquired the lease."""

    def won(self, now: float, revision: int) -> LeaseState:
        """A create or update succeeded."""
        acquired = self.acquired if self.leading else now
        return replace(self, leading=True, last_ok=now, revision=revision, acquired=acquired)

    def conflict(self) -> LeaseState:
        """A create or update found the key changed: someone else holds the lease now."""
        return replace(self, leading=False)

    def failed(self, now: float, ttl: float, renew: float) -> LeaseState:
        """A read or write failed (NATS unreachable): give the lease up once it may be taken."""
        if self.leading and now - self.last_ok >= ttl - renew:
            return replace(self, leading=False)
        return self

    def observe(self, lease: Lease | None, me: str, instance: str = "") -> LeaseState:
        """A read showed the lease: held by another (or by another process of this identity)
        means this replica leads no more."""
        if self.leading and lease is not None and (lease.holder != me or (instance and lease.instance != instance)):
            return replace(self, leading=False)
        return self


def plan(
    current: tuple[Lease, int] | None, me: str, now: float, renew: float, *, instance: str = "", reclaim: bool = True
) -> Step:
    """The next step for ``me`` (process ``instance``) given the lease as read (value and
    revision) at ``now``.  ``reclaim``: a lease held by ``me`` from another process is this
    replica's from before a restart (true until this process first held it; after that, another
    process with the same identity took it, and it is treated like any other holder's)."""
    if current is None:
        return Step("create")
    lease, revision = current
    if lease.holder == me and (lease.instance == instance or reclaim or not instance):
        return Step("update", revision)
    expires = lease.renew_time + lease.ttl
    if now >= expires:
        return Step("update", revision, takeover=True)
    return Step("wait", wake=min(renew, expires - now))


def next_lease(current: Lease | None, me: str, instance: str, now: float, ttl: float) -> Lease:
    """The lease ``me`` writes: a renewal keeps the acquire time, a new holder counts a transition."""
    if current is not None and current.holder == me and current.instance == instance:
        return Lease(
            holder=me,
            instance=instance,
            acquire_time=current.acquire_time,
            renew_time=now,
            ttl=ttl,
            transitions=current.transitions,
        )
    changed = current is not None and current.holder != me
    transitions = (current.transitions if current is not None else 0) + (1 if changed else 0)
    return Lease(holder=me, instance=instance, acquire_time=now, renew_time=now, ttl=ttl, transitions=transitions)
