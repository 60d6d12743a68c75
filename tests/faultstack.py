"""The fault tests' stack: `tmcd run` replicas, `tmcd sim` and `tmcd sim mesh` as real processes
against a given NATS (one server or a cluster), with the ledgers the tests check against: what the
simulator says it published, what the stream holds, and what the shared durable consumer acked.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import aiohttp
from nats.js import api

from tests.helpers import free_port, nats_connect, wait_for, wait_ready
from tmcd.contracts.codec import decode, decode_as
from tmcd.contracts.messages import CanaryEvent, SyncEvent, SyncEventBatch

STREAMS = ("SYNCER", "PLACEMENT", "WORKLOAD", "EVENTS", "DEAD", "TRAFFIC")
CLUSTERS = 6
BASE = "/api/v1/namespaces/shop"
FAST = {
    "TMCD_CONSUMER_FETCH_TIMEOUT": "0.2",
    "TMCD_CONSUMER_ACK_WAIT": "5",  # a killed replica's unacknowledged messages go to another in 5 s
    "TMCD_HEALTH_INTERVAL": "0.2",
    "TMCD_HEALTH_STARTUP_GRACE": "0",
    "TMCD_HEALTH_SUCCESS_THRESHOLD": "0",
    "TMCD_LEADER_LEASE_TTL": "3",
    "TMCD_LEADER_RENEW_INTERVAL": "0.5",
}


def replicated(n: int) -> dict[str, str]:
    """Environment giving every stream and KV bucket ``n`` replicas."""
    env = {f"TMCD_STREAMS_{s}_REPLICAS": str(n) for s in STREAMS}
    env["TMCD_KV_REPLICAS"] = str(n)
    return env


def total(text: str, name: str, **labels: str) -> float:
    """The sum of every series of ``name`` (with these labels) in a Prometheus text exposition."""
    out = 0.0
    for line in text.splitlines():
        if not line.startswith(name) or line.startswith("#"):
            continue
        series, _, value = line.rpartition(" ")
        base = series.partition("{")[0]
        if base == name and all(f'{k}="{v}"' in series for k, v in labels.items()):
            out += float(value)
    return out


@dataclass
class Replica:
    """One `tmcd run` process."""

    identity: str
    port: int
    proc: asyncio.subprocess.Process
    log: Path
    scrapes: list[str] = field(default_factory=list)

    @property
    def base(self) -> str:
        """Its HTTP base URL."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        """Its process id."""
        return self.proc.pid

    async def get(self, path: str) -> tuple[int, Any]:
        """GET ``path``: (status, JSON body or text)."""
        async with aiohttp.ClientSession() as s, s.get(self.base + path) as r:
            text = await r.text()
            try:
                return r.status, await r.json(content_type=None)
            except ValueError:
                return r.status, text

    async def send(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """A request with a JSON body: (status, JSON body)."""
        async with aiohttp.ClientSession() as s, s.request(method, self.base + path, json=body) as r:
            return r.status, await r.json(content_type=None)

    async def apply(self, obj: dict[str, Any]) -> None:
        """Create a CanaryRollout or AnalysisTemplate in namespace shop."""
        plural = "canaryrollouts" if obj["kind"] == "CanaryRollout" else "analysistemplates"
        code, body = await self.send("POST", f"{BASE}/{plural}", obj)
        assert code == 201, body

    async def status(self, name: str) -> dict[str, Any]:
        """A CanaryRollout's status; ``{}`` while the API answers 503/504 (NATS failing over)."""
        code, body = await self.get(f"{BASE}/canaryrollouts/{name}")
        if code in (503, 504):
            return {}
        assert code == 200, body
        return dict(body.get("status") or {})

    async def healthy(self) -> int:
        """How many SyncTargets are Healthy."""
        code, body = await self.get("/api/v1/synctargets")
        items = body.get("items", []) if code == 200 else []
        return len([i for i in items if i.get("status", {}).get("health") == "Healthy"])

    async def leader(self, agent: str) -> float:
        """Its ``tmc_leader{agent}``."""
        return total(await self.metrics(), "tmc_leader", agent=agent)

    async def metrics(self) -> str:
        """One scrape of /metrics."""
        async with aiohttp.ClientSession() as s, s.get(self.base + "/metrics") as r:
            text = await r.text()
        self.scrapes.append(text)
        return text

    def rss_kb(self) -> int:
        """VmRSS of the process, in kB."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError("no VmRSS")


def template(name: str, interval: float = 1.0, count: int = 3, inconclusive: int = 2) -> dict[str, Any]:
    """An AnalysisTemplate comparing the canary's error ratio with stable's."""
    condition = {"comparison": {"test": "proportion", "maxIncrease": 1.0, "maxDifference": 0.005, "confidence": 0.95}}
    metric = {
        "name": "error-ratio",
        "interval": interval,
        "count": count,
        "inconclusiveLimit": inconclusive,
        "provider": {"nats": {"metric": "error_ratio"}},
        "condition": condition,
    }
    return {
        "apiVersion": "tmc.kcp.io/v1alpha1",
        "kind": "AnalysisTemplate",
        "metadata": {"name": name, "namespace": "shop"},
        "spec": {"metrics": [metric]},
    }


def rollout(name: str, steps: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    """A CanaryRollout of ``name`` on the nats traffic router."""
    return {
        "apiVersion": "tmc.kcp.io/v1alpha1",
        "kind": "CanaryRollout",
        "metadata": {"name": name, "namespace": "shop"},
        "spec": {
            "workloadRef": {"name": name},
            "stableVersion": "v1",
            "canaryVersion": "v2",
            "clusterSelector": {"matchLabels": {}},
            "trafficRouting": {"router": "nats", "route": name},
            "steps": steps,
            "progressDeadlineSeconds": 60,
            **spec,
        },
    }


class Stack:
    """Processes of one test, each logging to its own file under ``tmp``."""

    def __init__(self, tmp: Path, url: str, env: dict[str, str] | None = None) -> None:
        self.tmp = tmp
        self.url = url
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("TMCD_")}
        self.env.update({**FAST, "TMCD_NATS_URL": url, **(env or {})})
        self.procs: list[asyncio.subprocess.Process] = []
        self._n = 0

    async def spawn(self, name: str, *args: str, env: dict[str, str] | None = None) -> tuple[Any, Path]:
        """``python -m tmcd.cli.main ARGS``; stdout and stderr go to ``<name>-<n>.log``."""
        self._n += 1
        path = self.tmp / f"{name}-{self._n}.log"
        with _open(path) as log:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "tmcd.cli.main", *args, stdout=log, stderr=log, env={**self.env, **(env or {})}
            )
        self.procs.append(proc)
        return proc, path

    async def replica(self, identity: str, *extra: str, env: dict[str, str] | None = None) -> Replica:
        """A `tmcd run` with its own data dir and port, ready (``/readyz`` 200)."""
        port = free_port()
        args = ["run", "--data-dir", str(self.tmp / identity), "--http-listen", f"127.0.0.1:{port}", *extra]
        proc, log = await self.spawn(identity, *args, env={"TMCD_LEADER_IDENTITY": identity, **(env or {})})
        r = Replica(identity, port, proc, log)
        try:
            await wait_ready(r.base, proc, 90)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.tail(log)}") from None
        return r

    async def sim(self, *args: str) -> tuple[Any, Path]:
        """`tmcd sim ARGS` against the stack's NATS."""
        return await self.spawn("sim", "sim", *args)

    async def mesh(self, *args: str) -> tuple[Any, Path]:
        """`tmcd sim mesh ARGS` against the stack's NATS."""
        return await self.spawn("mesh", "sim", "mesh", *args)

    @staticmethod
    def tail(path: Path, lines: int = 20) -> str:
        """The last lines of a log."""
        return f"--- {path.name}\n" + "\n".join(path.read_text(errors="replace").splitlines()[-lines:])

    def tails(self, lines: int = 12) -> str:
        """The last lines of every log (for a failure message: a CI run keeps no files)."""
        return "\n".join(self.tail(p, lines) for p in sorted(self.tmp.glob("*.log")))

    @staticmethod
    async def stop(proc: Any, timeout: float = 20.0) -> None:
        """SIGTERM a process and wait for it."""
        if proc.returncode is None:
            proc.terminate()
        await asyncio.wait_for(proc.wait(), timeout)

    async def close(self) -> None:
        """Kill whatever still runs."""
        for p in self.procs:
            if p.returncode is None:
                p.kill()
                await p.wait()


def _open(path: Path) -> IO[bytes]:
    return open(path, "wb")


_SUMMARY = re.compile(r"sim: published heartbeats=(\d+) sync=(\d+) conn=(\d+)")


async def stop_sim(proc: Any, log: Path, timeout: float = 20.0, *, interrupt: bool = True) -> dict[str, int]:
    """SIGINT a simulator (if it still runs; else wait for it to end) and return its summary line's counts."""
    if interrupt and proc.returncode is None:
        proc.send_signal(signal.SIGINT)
    await asyncio.wait_for(proc.wait(), timeout)
    m = _SUMMARY.search(Stack.tail(log, 5))
    assert m is not None, Stack.tail(log)
    return {"heartbeats": int(m.group(1)), "sync": int(m.group(2)), "conn": int(m.group(3))}


async def sync_events_by_seq(urls: list[str], stream: str = "TMC_SYNCER") -> dict[int, int]:
    """Stream sequence -> sync events in that message, for every message the stream holds."""
    nc = await nats_connect(urls)
    out: dict[int, int] = {}
    try:
        js = nc.jetstream()
        info = (await js.stream_info(stream)).state
        if info.messages == 0:
            return out
        config = api.ConsumerConfig(ack_policy=api.AckPolicy.NONE, inactive_threshold=30.0)
        sub = await js.pull_subscribe("tmc.syncer.>", stream=stream, config=config)  # ephemeral, no acks
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 60
        try:
            while len(out) < info.messages:
                assert loop.time() < deadline, f"read {len(out)} of {info.messages} messages of {stream}"
                try:
                    msgs = await sub.fetch(200, timeout=5)
                except TimeoutError:
                    continue
                for msg in msgs:
                    decoded = decode(msg.subject, msg.data)
                    n = len(decoded.events) if isinstance(decoded, SyncEventBatch) else isinstance(decoded, SyncEvent)
                    out[msg.metadata.sequence.stream] = int(n)
            return out
        finally:
            await sub.unsubscribe()
    finally:
        await nc.close()


async def consumer_state(urls: list[str], stream: str, durable: str) -> Any:
    """The durable consumer's info (pending, ack pending, ack floor)."""
    nc = await nats_connect(urls)
    try:
        return await nc.jetstream().consumer_info(stream, durable)
    finally:
        await nc.close()


async def jetstream_report(urls: list[str]) -> str:
    """Every stream and consumer: leader, replicas, state (for a failure message)."""
    try:
        nc = await nats_connect(urls)
    except Exception as exc:
        return f"(no JetStream report: {exc!r})"
    out = []
    try:
        js = nc.jetstream()
        for st in await js.streams_info():
            c = st.cluster
            peers = (
                " ".join(f"{p.name}:{'current' if p.current else f'lag={p.lag}'}" for p in (c.replicas or []))
                if c
                else ""
            )
            state = f"msgs={st.state.messages} last={st.state.last_seq}"
            out.append(f"{st.config.name} leader={c.leader if c else None} [{peers}] {state}")
            for ci in await js.consumers_info(st.config.name):
                out.append(
                    f"  {ci.name} leader={ci.cluster.leader if ci.cluster else None} pending={ci.num_pending} "
                    f"ack_pending={ci.num_ack_pending} floor={ci.ack_floor.stream_seq} waiting={ci.num_waiting}"
                )
    except Exception as exc:
        out.append(f"(report cut short: {exc!r})")
    finally:
        await nc.close()
    return "\n".join(out)


async def stream_info(urls: list[str], stream: str) -> Any:
    """The stream's info (config and state), read on a connection of its own."""
    nc = await nats_connect(urls)
    try:
        return await nc.jetstream().stream_info(stream)
    finally:
        await nc.close()


async def last_seq(urls: list[str], stream: str) -> int:
    """The stream's last sequence number."""
    return int((await stream_info(urls, stream)).state.last_seq)


async def drained(urls: list[str], stream: str, durable: str, timeout: float = 60.0) -> Any:
    """Wait until the consumer has acknowledged everything the stream holds; returns its info."""

    async def done() -> Any:
        nc = await nats_connect(urls)
        try:
            js = nc.jetstream()
            last = (await js.stream_info(stream)).state.last_seq
            info = await js.consumer_info(stream, durable)
        except Exception:
            return None
        finally:
            await nc.close()
        ok = info.num_pending == 0 and info.num_ack_pending == 0 and info.ack_floor.stream_seq == last
        return info if ok else None

    return await wait_for(done, timeout=timeout, step=0.2, what=f"{durable} to acknowledge all of {stream}")


class AckTap:
    """Watches a shared durable consumer's acknowledgements from outside: (stream sequence,
    delivery count, time) of every ack, whichever replica sent it."""

    def __init__(self, urls: list[str], stream: str, durable: str) -> None:
        self.urls = urls
        self.prefix = f"$JS.ACK.{stream}.{durable}."
        self.acks: list[tuple[int, int, float]] = []
        self._nc: Any = None

    async def start(self) -> None:
        """Subscribe to the ack subjects; returns once every node routes them to the tap."""
        loop = asyncio.get_running_loop()
        self._nc = await nats_connect(self.urls)

        async def acked(msg: Any) -> None:
            # $JS.ACK.<stream>.<durable>.<delivered>.<stream seq>.<consumer seq>.<time>.<pending>
            tokens = msg.subject[len(self.prefix) :].split(".")
            self.acks.append((int(tokens[1]), int(tokens[0]), loop.time()))

        await self._nc.subscribe(self.prefix + ">", cb=acked, pending_msgs_limit=-1, pending_bytes_limit=-1)
        await self._nc.flush()
        # the interest reaches the other nodes through the routes a little later: wait until an
        # ack-shaped probe published on each node arrives (sequence 0: no stream has it)
        for i, url in enumerate(self.urls):
            nc = await nats_connect(url)
            try:

                async def arrived(nc: Any = nc, i: int = i) -> bool:
                    await nc.publish(f"{self.prefix}{i + 1}.0.0.0.0", b"")
                    await nc.flush()
                    await asyncio.sleep(0.05)
                    return any(seq == 0 and dc == i + 1 for seq, dc, _ in self.acks)

                await wait_for(arrived, timeout=10, what=f"the tap's interest on {url}")
            finally:
                await nc.close()
        self.acks = [a for a in self.acks if a[0] != 0]

    async def close(self) -> None:
        """Unsubscribe."""
        if self._nc is not None:
            await self._nc.close()


async def canary_events(urls: list[str], name: str) -> list[CanaryEvent]:
    """The event log of rollout ``shop/name``."""
    nc = await nats_connect(urls)
    try:
        sub = await nc.jetstream().pull_subscribe(f"tmc.canary.shop.{name}", stream="TMC_EVENTS")  # ephemeral
        out: list[CanaryEvent] = []
        try:
            while True:
                try:
                    msgs = await sub.fetch(100, timeout=1.0)
                except TimeoutError:
                    return out
                out.extend(decode_as(CanaryEvent, m.data) for m in msgs)
        finally:
            await sub.unsubscribe()
    finally:
        await nc.close()


def applied(events: list[CanaryEvent]) -> list[dict[str, Any]]:
    """The steps the controller applied (each recorded with the generation it applied it at)."""
    return [e.evidence for e in events if e.type == "step" and "generation" in e.evidence]
