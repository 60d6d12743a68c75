"""Read load on the resource API, served by the watch cache: lists and gets over HTTP and NATS.

Starts a nats-server and a ``tmcd run`` subprocess (metrics agent only), saves a fleet of
SyncTargets and Placements through the API, then for a fixed time runs concurrent clients:
HTTP and NATS listers walking ``limit=100`` pages of SyncTargets (and the Placements) in this
process, and HTTP and NATS getters reading random objects in a process of their own (so a
get's latency is tmcd's, not this process's queueing behind the list replies it parses;
``--same-process`` puts them here).  It counts the JetStream
consumers on the KV streams before and after (they must not depend on the requests).
The last line is::

    api list_rps=<x> get_p99_ms=<y> errors=<n> consumers_before=<a> consumers_after=<b>

(targets on the 2-core development machine: errors 0, consumers unchanged, get p99 under
5 ms, at least 1,000 lists/s)

    python bench/api.py [--seconds 10] [--clusters 1000] [--placements 100] [--http-clients 2]
                        [--nats-clients 1] [--getters 1]

Every client waits for its answer before it sends the next request, so the figures are
those of a server kept busy by five clients at once; tmcd, nats-server and the clients
share the machine's cores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import msgspec
import nats

from tmcd.resources.examples import example
from tmcd.runtime.embedded import EmbeddedNats, find_binary

PAGE = 100


class _Meta(msgspec.Struct):
    continue_: str = msgspec.field(default="", name="continue")


class _Page(msgspec.Struct):
    metadata: _Meta


_page = msgspec.json.Decoder(_Page)


@dataclass
class Tally:
    """What the clients did."""

    lists: int = 0
    errors: int = 0
    http_get_ms: list[float] = field(default_factory=list)
    nats_get_ms: list[float] = field(default_factory=list)
    first_errors: list[str] = field(default_factory=list)

    def error(self, what: str) -> None:
        self.errors += 1
        if len(self.first_errors) < 5:
            self.first_errors.append(what)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def fleet(clusters: int, placements: int) -> list[tuple[str, dict[str, object]]]:
    """(plural, object) for every object to save."""
    out: list[tuple[str, dict[str, object]]] = []
    for i in range(clusters):
        obj = msgspec.to_builtins(example("SyncTarget"))
        obj["metadata"] = {"name": f"bench-{i:04d}", "labels": {"region": f"region-{i % 7}", "zone": f"z-{i % 3}"}}
        out.append(("synctargets", obj))  # its status is written after the create (see seed)
    for i in range(placements):
        obj = msgspec.to_builtins(example("Placement"))
        obj["metadata"] = {"name": f"place-{i:03d}"}
        obj.pop("status", None)
        out.append(("placements", obj))
    return out


async def consumers(js: object) -> int:
    """JetStream consumers on the KV streams as the JetStream API lists them (one per kind for the
    API cache, plus the agents')."""
    total = 0
    for stream in await js.streams_info():  # type: ignore[attr-defined]
        if stream.config.name.startswith("KV_"):
            total += len(await js.consumers_info(stream.config.name))  # type: ignore[attr-defined]
    return total


async def wait_ready(base: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as s:
        while time.monotonic() < deadline:
            try:
                async with s.get(f"{base}/readyz") as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
    raise SystemExit(f"tmcd at {base} was not ready within {timeout:.0f}s")


async def seed(nc: nats.NATS, objects: list[tuple[str, dict[str, object]]]) -> None:
    sem = asyncio.Semaphore(64)

    async def create(plural: str, obj: dict[str, object]) -> None:
        async with sem:
            rep = await nc.request(f"tmc.api.create.{plural}", json.dumps({"object": obj}).encode(), timeout=10)
            if (rep.headers or {}).get("Nats-Service-Error-Code"):
                raise SystemExit(f"cannot create {plural}: {rep.data[:200]!r}")
            if plural == "synctargets":  # a create stores no status: written as the health agent writes it
                req = {"name": obj["metadata"]["name"], "object": {**json.loads(rep.data), "status": obj["status"]}}  # type: ignore[index]
                rep = await nc.request(f"tmc.api.replacestatus.{plural}", json.dumps(req).encode(), timeout=10)
                if (rep.headers or {}).get("Nats-Service-Error-Code"):
                    raise SystemExit(f"cannot write the status of {plural}: {rep.data[:200]!r}")

    await asyncio.gather(*(create(p, o) for p, o in objects))


async def http_lister(s: aiohttp.ClientSession, base: str, tally: Tally, until: float) -> None:
    while time.monotonic() < until:
        for plural in ("synctargets", "placements"):
            token = ""
            while True:
                params = {"limit": str(PAGE), **({"continue": token} if token else {})}
                try:
                    async with s.get(f"{base}/api/v1/{plural}", params=params) as r:
                        body = await r.read()
                        if r.status != 200:
                            tally.error(f"HTTP list {r.status}: {body[:200]!r}")
                            break
                except aiohttp.ClientError as exc:
                    tally.error(f"HTTP list: {exc!r}")
                    break
                tally.lists += 1
                token = _page.decode(body).metadata.continue_
                if not token:
                    break


async def nats_lister(nc: nats.NATS, tally: Tally, until: float) -> None:
    while time.monotonic() < until:
        for plural in ("synctargets", "placements"):
            token = ""
            while True:
                req = json.dumps({"limit": PAGE, "continue": token}).encode()
                try:
                    rep = await nc.request(f"tmc.api.list.{plural}", req, timeout=10)
                except Exception as exc:  # counted
                    tally.error(f"NATS list: {exc!r}")
                    break
                if (rep.headers or {}).get("Nats-Service-Error-Code"):
                    tally.error(f"NATS list: {rep.data[:200]!r}")
                    break
                tally.lists += 1
                token = _page.decode(rep.data).metadata.continue_
                if not token:
                    break


async def http_getter(s: aiohttp.ClientSession, base: str, names: list[str], tally: Tally, until: float) -> None:
    rnd = random.Random(1)
    while time.monotonic() < until:
        t0 = time.perf_counter()
        try:
            async with s.get(f"{base}/api/v1/synctargets/{rnd.choice(names)}") as r:
                await r.read()
                ok = r.status == 200
        except aiohttp.ClientError as exc:
            tally.error(f"HTTP get: {exc!r}")
            continue
        tally.http_get_ms.append((time.perf_counter() - t0) * 1000)
        if not ok:
            tally.error(f"HTTP get {r.status}")


async def nats_getter(nc: nats.NATS, names: list[str], tally: Tally, until: float) -> None:
    rnd = random.Random(2)
    while time.monotonic() < until:
        t0 = time.perf_counter()
        try:
            req = json.dumps({"name": rnd.choice(names)}).encode()
            rep = await nc.request("tmc.api.get.synctargets", req, timeout=10)
        except Exception as exc:  # counted
            tally.error(f"NATS get: {exc!r}")
            continue
        tally.nats_get_ms.append((time.perf_counter() - t0) * 1000)
        if (rep.headers or {}).get("Nats-Service-Error-Code"):
            tally.error(f"NATS get: {rep.data[:200]!r}")


def quantile(values: list[float], q: float) -> float:
    """The ``q`` quantile of ``values`` (nan for none)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


async def load(url: str, base: str, args: argparse.Namespace) -> None:
    await wait_ready(base)
    nc = await nats.connect(url)
    try:
        objects = fleet(args.clusters, args.placements)
        t0 = time.perf_counter()
        await seed(nc, objects)
        print(f"saved {len(objects)} objects in {time.perf_counter() - t0:.1f}s")
        js = nc.jetstream()
        before = await consumers(js)
        names = [str(o["metadata"]["name"]) for p, o in objects if p == "synctargets"]  # type: ignore[index]
        tally = Tally()
        conns = [await nats.connect(url) for _ in range(args.nats_clients + 1)]  # the last for the getters
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as s:
            until = time.monotonic() + args.seconds
            tasks = [http_lister(s, base, tally, until) for _ in range(args.http_clients)]
            tasks += [nats_lister(c, tally, until) for c in conns[:-1]]
            child = None
            if args.same_process:
                tasks += [http_getter(s, base, names, tally, until) for _ in range(args.getters)]
                tasks += [nats_getter(conns[-1], names, tally, until) for _ in range(args.getters)]
            else:  # getters in a process of their own, as a kubectl next to a dashboard would be
                child = await asyncio.create_subprocess_exec(
                    sys.executable, __file__, "--getters-child", url, base, str(args.seconds), str(args.getters),
                    str(len(names)), stdout=asyncio.subprocess.PIPE,
                )  # fmt: skip
            t0 = time.perf_counter()
            await asyncio.gather(*tasks)
            if child is not None:
                out, _ = await child.communicate()
                got = json.loads(out)
                tally.http_get_ms += got["http"]
                tally.nats_get_ms += got["nats"]
                for line in got["first"]:
                    tally.error(line)
                tally.errors += got["errors"] - len(got["first"])
            elapsed = time.perf_counter() - t0
        for c in conns:
            await c.close()
        after = await consumers(js)
    finally:
        await nc.close()
    for line in tally.first_errors:
        print("error:", line)
    gets = tally.http_get_ms + tally.nats_get_ms
    print(
        f"{tally.lists} lists and {len(gets)} gets in {elapsed:.1f}s; get p50 {quantile(gets, 0.5):.2f} ms, "
        f"p99 over HTTP {quantile(tally.http_get_ms, 0.99):.2f} ms, "
        f"over NATS {quantile(tally.nats_get_ms, 0.99):.2f} ms"
    )
    print(
        f"api list_rps={tally.lists / elapsed:.0f} get_p99_ms={quantile(gets, 0.99):.2f} errors={tally.errors} "
        f"consumers_before={before} consumers_after={after}"
    )


async def getters_child(url: str, base: str, seconds: float, getters: int, clusters: int) -> None:
    """The getters, run in a process of their own; prints their latencies as JSON."""
    names = [f"bench-{i:04d}" for i in range(clusters)]
    tally = Tally()
    nc = await nats.connect(url)
    async with aiohttp.ClientSession() as s:
        until = time.monotonic() + seconds
        tasks = [http_getter(s, base, names, tally, until) for _ in range(getters)]
        tasks += [nats_getter(nc, names, tally, until) for _ in range(getters)]
        await asyncio.gather(*tasks)
    await nc.close()
    got = {"http": tally.http_get_ms, "nats": tally.nats_get_ms, "errors": tally.errors, "first": tally.first_errors}
    print(json.dumps(got))


def main() -> None:
    if len(sys.argv) == 7 and sys.argv[1] == "--getters-child":
        _, _, url, base, seconds, getters, clusters = sys.argv
        asyncio.run(getters_child(url, base, float(seconds), int(getters), int(clusters)))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="How long the clients run.")
    parser.add_argument("--clusters", type=int, default=1000)
    parser.add_argument("--placements", type=int, default=100)
    parser.add_argument("--http-clients", type=int, default=2, help="Concurrent HTTP listers.")
    parser.add_argument("--nats-clients", type=int, default=1, help="Concurrent NATS listers (a connection each).")
    parser.add_argument("--getters", type=int, default=1, help="Concurrent getters, over HTTP and over NATS each.")
    parser.add_argument(
        "--same-process",
        action="store_true",
        help="Run the getters in this process, beside the listers (their latency then includes this "
        "process's own queueing behind the list replies it parses).",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tmc-bench-api-") as tmp:
        nats_server = EmbeddedNats(find_binary(), Path(tmp) / "nats")
        url = nats_server.start()
        port = free_port()
        run = ["run", "--nats-url", url, "--http-listen", f"127.0.0.1:{port}", "--agents", "metrics"]
        daemon = subprocess.Popen(
            [sys.executable, "-m", "tmcd.cli.main", *run, "--data-dir", str(Path(tmp) / "data")],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            asyncio.run(load(url, f"http://127.0.0.1:{port}", args))
        finally:
            daemon.terminate()
            daemon.wait(timeout=30)
            nats_server.stop()


if __name__ == "__main__":
    main()
