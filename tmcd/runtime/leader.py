"""Leader election among tmcd replicas, through JetStream KV leases (the rules are in
:mod:`tmcd.runtime.lease`), and the gate that runs a leader-only agent only while its replica
holds the agent's lease.

The :class:`Elector` runs one loop for every lease of the replica: it reads each lease, writes
what :func:`~tmcd.runtime.lease.plan` says (compare-and-set), renews the replica's presence
record and sleeps until the earliest next look.  Agents that act on the fleet (health,
placement, canary, rollback, kube) are wrapped in :class:`LeaderOnly`; the metrics agent and
the read API run on every replica.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import logging
import os
import secrets
import socket
import time
from collections.abc import Callable, Coroutine
from typing import Any

from prometheus_client import Gauge

from tmcd import __version__
from tmcd.bus import Bus, BusError, CasConflictError, KvStore
from tmcd.config import Config
from tmcd.contracts.lease import Lease, ReplicaInfo, lease_key, replica_key
from tmcd.runtime.agent import Agent, AgentCheck, AgentContext, agent_checks
from tmcd.runtime.lease import LeaseState, next_lease, plan
from tmcd.runtime.probes import CheckFn
from tmcd.runtime.selfmetrics import SelfMetrics

log = logging.getLogger("tmcd.leader")

LEADER_AGENTS: frozenset[str] = frozenset({"health", "placement", "canary", "rollback", "kube"})
"""Agents that act only on the replica that holds their lease; the others run everywhere."""


def default_identity(cfg: Config) -> str:
    """``leader.identity``, else ``<hostname>-<6 hex digits>`` from the data dir and HTTP listen
    address: the same after a restart, different for two replicas on one host."""
    if cfg.leader.identity:
        return cfg.leader.identity.strip()
    seed = f"{os.path.abspath(cfg.data_dir)}|{cfg.http.listen}".encode()
    return f"{socket.gethostname()}-{hashlib.sha256(seed).hexdigest()[:6]}"


async def start_elector(
    bus: Bus, cfg: Config, metrics: SelfMetrics, stop: asyncio.Event
) -> tuple[Elector, asyncio.Task[None]]:
    """An elector for the configured leader-only agents, after its first round (so an agent
    whose lease is free starts leading at once), and the task that keeps it electing."""
    agents = [a for a in [*cfg.agents, *(["kube"] if cfg.kube.enabled else [])] if a in LEADER_AGENTS]
    elector = Elector(
        await bus.kv("leases", Lease),
        await bus.kv("leases", ReplicaInfo),
        identity=default_identity(cfg),
        prefix=cfg.consumer.durable_prefix,
        agents=agents,
        all_agents=[*cfg.agents, *(["kube"] if cfg.kube.enabled else [])],
        ttl=cfg.leader.lease_ttl,
        renew=cfg.leader.renew_interval,
        gauge=metrics.leader,
    )
    log.info("replica %s: electing leaders for %s", elector.identity, ", ".join(agents) or "no agent")
    wake = await elector.round()
    return elector, asyncio.create_task(_keep_electing(elector, stop, wake), name="leader-election")


async def _keep_electing(elector: Elector, stop: asyncio.Event, first: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), first)
    await elector.run(stop)


class Elector:
    """Holds or follows one lease per leader-only agent, and the replica's presence record."""

    def __init__(
        self,
        leases: KvStore[Lease],
        replicas: KvStore[ReplicaInfo],
        *,
        identity: str,
        prefix: str,
        agents: list[str],
        all_agents: list[str],
        ttl: float,
        renew: float,
        gauge: Gauge | None = None,
        clock: Callable[[], float] = time.time,
        op_timeout: float | None = None,
    ) -> None:
        self.identity = identity
        self.instance = secrets.token_hex(6)
        self._leases = leases
        self._replicas = replicas
        self._prefix = prefix
        self._agents = list(agents)
        self._all_agents = list(all_agents)
        self.ttl = ttl
        self.renew = renew
        self._gauge = gauge
        self._clock = clock
        self.op_timeout = op_timeout if op_timeout is not None else min(2.0, renew / 2)
        """Seconds one KV call may take: a hung call must not delay a step-down past its time."""
        self.started = clock()
        self.states: dict[str, LeaseState] = {a: LeaseState() for a in agents}
        self.holders: dict[str, str] = {}
        """The holder of each lease as last read or written (empty: nobody)."""
        self._leading = {a: asyncio.Event() for a in agents}
        self._following = {a: asyncio.Event() for a in agents}
        self._wakes: dict[str, float] = dict.fromkeys(agents, 0.0)
        for a in agents:
            self._following[a].set()
            if gauge is not None:
                gauge.labels(a).set(0)

    # -- what the gates and the API ask ------------------------------------------------------------

    def leading(self, agent: str) -> bool:
        """True while this replica holds ``agent``'s lease."""
        return self.states[agent].leading

    def leads(self) -> list[str]:
        """The agents this replica leads now, sorted."""
        return sorted(a for a, s in self.states.items() if s.leading)

    async def wait_leading(self, agent: str) -> None:
        """Return once this replica holds ``agent``'s lease."""
        await self._leading[agent].wait()

    async def wait_following(self, agent: str) -> None:
        """Return once this replica does not hold ``agent``'s lease."""
        await self._following[agent].wait()

    # -- the loop ------------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Elect until ``stop`` is set (the caller then :meth:`release`\\ s the leases)."""
        while not stop.is_set():
            wake = await self.round()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), wake)

    async def round(self) -> float:
        """One look at every lease and a presence renewal; returns the seconds until the next."""
        now = self._clock()
        for agent in self._agents:
            if self.states[agent].leading or now >= self._wakes[agent]:
                self._wakes[agent] = now + await self._step(agent)
        await self._present()
        now = self._clock()
        return max(0.0, min([self.renew, *(w - now for w in self._wakes.values())]))

    async def _step(self, agent: str) -> float:
        """Read, decide and write one lease; returns the seconds until its next look."""
        key = lease_key(self._prefix, agent)
        state = self.states[agent]
        try:
            entry = await asyncio.wait_for(self._leases.get(key), self.op_timeout)
        except (BusError, TimeoutError) as exc:
            self._set(
                agent,
                state.failed(self._clock(), self.ttl, self.renew),
                reason=f"cannot read the lease: {str(exc) or 'timed out'}",
            )
            return self.renew
        current = (entry.value, entry.revision) if entry is not None else None
        now = self._clock()
        state = state.observe(entry.value if entry else None, self.identity, self.instance)
        self.holders[agent] = entry.value.holder if entry else ""
        step = plan(current, self.identity, now, self.renew, instance=self.instance, reclaim=state.acquired == 0.0)
        if step.action == "wait":
            self._set(agent, state, reason=f"held by {self.holders[agent]}")
            return step.wake
        lease = next_lease(entry.value if entry else None, self.identity, self.instance, now, self.ttl)
        try:
            if step.action == "create":
                write = self._leases.create(key, lease)
            else:
                write = self._leases.update(key, lease, step.revision)
            rev = await asyncio.wait_for(write, self.op_timeout)
        except CasConflictError:
            self._set(agent, state.conflict(), reason="another replica wrote the lease first")
            return 0.0  # read it again at once: who holds it now
        except (BusError, TimeoutError) as exc:
            failed = state.failed(self._clock(), self.ttl, self.renew)
            self._set(agent, failed, reason=f"cannot renew: {str(exc) or 'timed out'}")
            return self.renew
        self.holders[agent] = self.identity
        if step.takeover and not state.leading:
            log.info(
                "%s: lease of %s expired (not renewed for %.0fs); taking over",
                agent,
                current and current[0].holder,
                self.ttl,
            )
        self._set(agent, state.won(now, rev))
        return self.renew

    def _set(self, agent: str, state: LeaseState, *, reason: str = "") -> None:
        was = self.states[agent].leading
        self.states[agent] = state
        if state.leading == was:
            return
        if state.leading:
            log.info("leading %s (lease %s, identity %s)", agent, lease_key(self._prefix, agent), self.identity)
            self._following[agent].clear()
            self._leading[agent].set()
        else:
            log.warning("no longer leading %s: %s", agent, reason)
            self._leading[agent].clear()
            self._following[agent].set()
        if self._gauge is not None:
            self._gauge.labels(agent).set(1 if state.leading else 0)

    async def _present(self) -> None:
        now = self._clock()
        info = ReplicaInfo(
            identity=self.identity,
            version=__version__,
            start_time=self.started,
            renew_time=now,
            leads=self.leads(),
            agents=self._all_agents,
            ttl=self.ttl,
        )
        with contextlib.suppress(BusError, TimeoutError):
            await asyncio.wait_for(self._replicas.put(replica_key(self._prefix, self.identity), info), self.op_timeout)

    async def release(self) -> None:
        """Give every held lease up (compare-and-set delete) and remove the presence record, so
        another replica takes over at once rather than after a TTL."""
        for agent, state in self.states.items():
            if not state.leading:
                continue
            self._set(agent, dataclasses.replace(state, leading=False), reason="shutting down")
            try:
                await asyncio.wait_for(
                    self._leases.delete(lease_key(self._prefix, agent), state.revision), self.op_timeout
                )
            except CasConflictError:
                pass  # someone took it already
            except (BusError, TimeoutError) as exc:
                log.warning("could not release the lease of %s: %s (it expires in %.0fs)", agent, exc, self.ttl)
        with contextlib.suppress(BusError, TimeoutError):
            await asyncio.wait_for(self._replicas.delete(replica_key(self._prefix, self.identity)), self.op_timeout)


class LeaderOnly:
    """Runs ``inner`` only while this replica leads it; stops it within ``grace`` seconds of
    losing the lease (cancelled if it has not finished by then).

    While following, the agent counts as started (a follower is ready: ``/readyz`` stays 200).
    """

    def __init__(self, inner: Agent, elector: Elector, *, grace: float | None = None) -> None:
        self.name = inner.name
        self.inner = inner
        self._elector = elector
        self._grace = grace if grace is not None else elector.renew / 2
        self.terms = 0
        """How many times this replica started leading the agent."""

    def checks(self) -> list[AgentCheck]:
        """The agent's own checks (the kube agent's), passing while this replica follows: a
        follower's agent does not run, and the replica is ready to serve."""
        return [(name, self._while_leading(check), probes) for name, check, probes in agent_checks(self.inner)]

    def _while_leading(self, check: CheckFn) -> CheckFn:
        def gated() -> str | None:
            return check() if self._elector.leading(self.name) else None

        return gated

    async def run(self, ctx: AgentContext) -> None:
        """Follow, lead, follow ... until ``ctx.stop``."""
        while not ctx.stop.is_set():
            ctx.started.set()  # following
            if not await _first(ctx.stop.wait(), self._elector.wait_leading(self.name)):
                return
            ctx.started.clear()
            self.terms += 1
            await self._lead(ctx)

    async def _lead(self, ctx: AgentContext) -> None:
        term_stop = asyncio.Event()
        inner_ctx = dataclasses.replace(ctx, stop=term_stop, started=asyncio.Event())

        async def mirror_started() -> None:
            await inner_ctx.started.wait()
            ctx.started.set()

        async def end_term() -> None:
            await _first(ctx.stop.wait(), self._elector.wait_following(self.name))
            term_stop.set()

        helpers = [asyncio.create_task(mirror_started()), asyncio.create_task(end_term())]
        task = asyncio.create_task(self.inner.run(inner_ctx), name=f"lead-{self.name}")
        try:
            await asyncio.wait([task, helpers[1]], return_when=asyncio.FIRST_COMPLETED)
            if not task.done():  # the term ended: give the agent its grace, then cut it short
                done, _ = await asyncio.wait([task], timeout=self._grace)
                if not done:
                    log.warning("%s: still running %.1fs after losing the lease; cancelling", self.name, self._grace)
                    task.cancel()
            await asyncio.wait([task])
            if not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
            if not term_stop.is_set():
                raise RuntimeError("agent returned before stop was requested")
            if not ctx.stop.is_set():
                standby = getattr(self.inner, "standby", None)
                if callable(standby):  # drop what only the leader exports (its gauges, its caches)
                    standby()
        finally:
            for t in (*helpers, task):
                t.cancel()
            await asyncio.gather(*helpers, task, return_exceptions=True)


async def _first(*aws: Coroutine[Any, Any, object]) -> bool:
    """Wait for the first of two waits; True when it was the second (the first is the stop)."""
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        return tasks[0] not in done
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
