"""config/nats-server.conf, the example accounts and permissions, on a real nats-server: every
rule of each role, allowed and denied, and then the real programs under it: `tmcd run` as the
tmcd user becomes ready without a permissions violation, `tmcd sim` as a syncer publishes its
cluster's stream and answers its control requests, and the read-only operator lists, describes
and watches with `kubectl tmc` but cannot pause a syncer."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from nats.aio.msg import Msg

from tests.helpers import (
    NatsWithConfig,
    free_port,
    kill,
    kubectl_tmc_async,
    sample,
    scrape,
    start_tmcd,
    wait_for,
    wait_ready,
)
from tmcd.bus.natserrors import ReportingClient
from tmcd.runtime.embedded import EmbeddedNats

ROOT = Path(__file__).resolve().parent.parent
CONF = ROOT / "config" / "nats-server.conf"
STORE_LINE = '  store_dir: "/data/jetstream"\n'
"""The example's store; the test's comes from nats-server's -sd flag (both at once is an error)."""


def password(user: str) -> str:
    return f"{user}-Secr3t"


def env_var(user: str) -> str:
    """The variable the example reads a user's password from: syncer-edge-1 -> NATS_SYNCER_EDGE_1_PASSWORD."""
    return "NATS_" + user.upper().replace("-", "_") + "_PASSWORD"


def example(cluster: str = "edge-1") -> str:
    """The example configuration, with the syncer user of ``cluster`` made as its comments say:
    edge-1 replaced by the cluster's name."""
    text = CONF.read_text()
    assert STORE_LINE in text
    text = text.replace(STORE_LINE, "")
    return text.replace("edge-1", cluster).replace("EDGE_1", cluster.upper().replace("-", "_"))


@pytest.fixture
def secured(serve: NatsWithConfig, monkeypatch: pytest.MonkeyPatch) -> Callable[[str], EmbeddedNats]:
    """Start a nats-server with the example for a syncer of the given cluster (passwords from its
    environment, as in a deployment)."""

    def start(cluster: str) -> EmbeddedNats:
        for user in ("tmcd", "operator", f"syncer-{cluster}"):
            monkeypatch.setenv(env_var(user), password(user))
        return serve(example(cluster))

    return start


class Login:
    """One user's connection, with the errors the server reported to it."""

    def __init__(self, nc: ReportingClient, errors: list[str]) -> None:
        self.nc = nc
        self.errors = errors

    async def denied(self, verb: str, subject: str) -> bool:
        """True when the server refused ``verb`` (publish or subscription) on ``subject``: it says so
        before it answers the flush's PING."""
        await self.nc.flush()
        said = f'permissions violation for {verb} to "{subject.lower()}"'
        return any(said in error for error in self.errors)


@pytest.fixture
async def login(secured: Callable[[str], EmbeddedNats]) -> AsyncIterator[Callable[[str, str], Any]]:
    """Connect as one of the example's users; the connections close before the server stops."""
    opened: list[ReportingClient] = []

    async def connect(url: str, user: str) -> Login:
        errors: list[str] = []

        async def on_error(exc: Exception) -> None:
            errors.append(str(exc).lower())

        nc = ReportingClient()
        await nc.connect(servers=[url], user=user, password=password(user), error_cb=on_error, allow_reconnect=False)
        opened.append(nc)
        return Login(nc, errors)

    yield connect
    for nc in opened:
        await nc.close()


async def _received(inbox: list[Msg], subject: str) -> bool:
    return any(m.subject == subject for m in inbox)


async def test_the_passwords_come_from_the_environment(serve: NatsWithConfig) -> None:
    # no password variable set: the server refuses to start rather than run without passwords
    with pytest.raises(Exception, match="NATS_TMCD_PASSWORD"):
        serve(example())


async def test_a_syncer_publishes_only_its_own_stream(secured: Any, login: Any) -> None:
    url = secured("edge-1").url
    tmcd, syncer = await login(url, "tmcd"), await login(url, "syncer-edge-1")
    seen: list[Msg] = []

    async def keep(msg: Msg) -> None:
        seen.append(msg)

    for witness in ("tmc.>", "_INBOX.>"):  # what the syncer gets through, on tmcd's subjects
        await tmcd.nc.subscribe(witness, cb=keep)
        assert not await tmcd.denied("subscription", witness)
    for subject in ("tmc.syncer.edge-1.heartbeat", "tmc.syncer.edge-1.sync", "tmc.syncer.edge-1.batch"):
        await syncer.nc.publish(subject, b"{}")
        assert not await syncer.denied("publish", subject)
        await wait_for(lambda s=subject: _received(seen, s), what=f"{subject} delivered")
    for subject in (
        "tmc.syncer.edge-2.heartbeat",  # another cluster's
        "tmc.health.cluster.edge-1",  # tmcd's events
        "tmc.placement.web.decision",
        "tmc.workload.edge-1.shop.web.canary",  # the mesh's
        "tmc.traffic.shop.web",
        "tmc.ctl.sync.edge-2.pause",  # control requests
        "tmc.ctl.canary.shop.web.promote",
        "tmc.api.list.synctargets",  # the API
        "tmc.api.delete.synctargets",
        "$KV.tmc-clusters.edge-1",  # KV behind the API's back
        "$JS.API.STREAM.PURGE.TMC_SYNCER",
        "_INBOX.someone-else",  # a reply nobody asked it for
    ):
        await syncer.nc.publish(subject, b"{}")
        assert await syncer.denied("publish", subject), subject
    await tmcd.nc.flush()
    assert [m.subject for m in seen if not m.subject.startswith("tmc.syncer.edge-1.")] == []


async def test_a_syncer_answers_only_its_own_control_requests(secured: Any, login: Any) -> None:
    url = secured("edge-1").url
    tmcd, syncer = await login(url, "tmcd"), await login(url, "syncer-edge-1")

    async def answer(msg: Msg) -> None:
        await msg.respond(b'{"ok": true}')

    await syncer.nc.subscribe("tmc.ctl.sync.edge-1.>", cb=answer)
    assert not await syncer.denied("subscription", "tmc.ctl.sync.edge-1.>")
    reply = await tmcd.nc.request("tmc.ctl.sync.edge-1.pause", b"{}", timeout=5)
    assert json.loads(reply.data) == {"ok": True}  # the reply went out on the requester's inbox
    for subject in ("tmc.ctl.sync.edge-2.>", "tmc.ctl.sync.*.*", "tmc.ctl.>", "tmc.syncer.>", "tmc.api.>", "_INBOX.>"):
        await syncer.nc.subscribe(subject)
        assert await syncer.denied("subscription", subject), subject


async def test_the_operator_reads_but_neither_controls_nor_writes(secured: Any, login: Any) -> None:
    url = secured("edge-1").url
    tmcd, operator = await login(url, "tmcd"), await login(url, "operator")

    async def fake_api(msg: Msg) -> None:  # stands in for tmcd's service: answers whatever reaches it
        await msg.respond(json.dumps({"subject": msg.subject}).encode())

    await tmcd.nc.subscribe("tmc.api.>", cb=fake_api)
    await tmcd.nc.subscribe("$SRV.>", cb=fake_api)
    await tmcd.nc.flush()
    for subject in (
        "tmc.api.list.synctargets",
        "tmc.api.get.placements",
        "tmc.api.get.health",
        "tmc.api.watch.canaryrollouts",
        "tmc.api.simulate.placements",
        "$SRV.INFO.tmc",
        "$SRV.PING",
    ):
        reply = await operator.nc.request(subject, b"{}", timeout=5)
        assert json.loads(reply.data) == {"subject": subject}
    # JetStream's stateless reads: answered by JetStream itself
    await tmcd.nc.jetstream().add_stream(name="TMC_EVENTS", subjects=["tmc.health.>"])
    await tmcd.nc.jetstream().publish("tmc.health.cluster.edge-1", b"{}")
    for subject, body in (
        ("$JS.API.INFO", b""),
        ("$JS.API.STREAM.NAMES", b""),
        ("$JS.API.STREAM.INFO.TMC_EVENTS", b""),
        ("$JS.API.STREAM.MSG.GET.TMC_EVENTS", b'{"last_by_subj": "tmc.health.cluster.edge-1"}'),
    ):
        reply = await operator.nc.request(subject, body, timeout=5)
        assert "error" not in json.loads(reply.data), (subject, reply.data)

    events: list[Msg] = []

    async def keep(msg: Msg) -> None:
        events.append(msg)

    await operator.nc.subscribe("tmc.health.>", cb=keep)
    await operator.nc.subscribe("tmc.syncer.>", cb=keep)
    assert not await operator.denied("subscription", "tmc.health.>")
    await tmcd.nc.publish("tmc.health.cluster.edge-2", b"{}")
    await wait_for(lambda: _received(events, "tmc.health.cluster.edge-2"), what="a health event")

    for subject in (
        "tmc.ctl.sync.edge-1.pause",
        "tmc.ctl.canary.shop.web.promote",
        "tmc.ctl.canary.shop.web.abort",
        "tmc.ctl.rollback.shop.web",
        "tmc.api.create.placements",
        "tmc.api.replace.placements",
        "tmc.api.patch.canaryrollouts",
        "tmc.api.delete.synctargets",
        "tmc.api.replacestatus.placements",
        "tmc.api.patchstatus.canaryrollouts",
        "tmc.syncer.edge-1.heartbeat",  # no impersonating a syncer
        "tmc.health.cluster.edge-1",
        "$KV.tmc-canaries.shop.web",
        "$JS.API.STREAM.PURGE.TMC_EVENTS",
        "$JS.API.STREAM.DELETE.TMC_EVENTS",
        "$JS.API.STREAM.MSG.DELETE.TMC_EVENTS",
        "$JS.API.CONSUMER.DELETE.TMC_SYNCER.tmcd-metrics-syncer",
        "$JS.API.CONSUMER.CREATE.TMC_SYNCER",
    ):
        await operator.nc.publish(subject, b"{}", reply="_INBOX.op")
        assert await operator.denied("publish", subject), subject
    # subscriptions that would see other users' requests (with their bearer tokens) or answer them
    for subject in ("tmc.api.>", "tmc.api.create.placements", "tmc.ctl.>", "tmc.ctl.sync.edge-1.pause", "$KV.>"):
        await operator.nc.subscribe(subject)
        assert await operator.denied("subscription", subject), subject


async def test_tmcd_syncer_and_operator_under_the_example(secured: Any, login: Any, tmp_path: Path) -> None:
    """The real programs: tmcd as the tmcd user, `tmcd sim` as the syncer of sim-001 (the example's
    edge-1, renamed as its comments say), kubectl tmc as the operator."""
    server = secured("sim-001")
    url, port = server.url, free_port()
    base = f"http://127.0.0.1:{port}"
    tmcd = await start_tmcd(
        *("run", "--nats-url", url, "--http-listen", f"127.0.0.1:{port}", "--data-dir", str(tmp_path / "data")),
        env={"TMCD_NATS_USER": "tmcd", "TMCD_NATS_PASSWORD": password("tmcd"), "TMCD_CONSUMER_FETCH_TIMEOUT": "0.2"},
    )
    sim = None
    try:
        await wait_ready(base, tmcd)
        # the syncer's credentials in a config file (tmcd's came from the environment)
        sim_config = tmp_path / "syncer.toml"
        sim_config.write_text(f'[nats]\nuser = "syncer-sim-001"\npassword = "{password("syncer-sim-001")}"\n')
        sim = await start_tmcd(
            *("sim", "--nats-url", url, "--config", str(sim_config), "--clusters", "1", "--rate", "50"),
            "--per-cluster-control",
            stdout=asyncio.subprocess.PIPE,
        )
        operator = f"nats://operator:{password('operator')}@{url.removeprefix('nats://')}"

        async def listed() -> bool:
            code, out = await kubectl_tmc_async("get", "clusters", "--nats-url", operator)
            assert code == 0, out
            return "sim-001" in out

        await wait_for(listed, timeout=30, what="sim-001 listed to the operator")
        code, out = await kubectl_tmc_async("describe", "cluster", "sim-001", "--nats-url", operator)
        assert code == 0 and "Name:" in out and "sim-001" in out, out
        code, out = await kubectl_tmc_async("version", "--nats-url", operator)
        assert code == 0 and "Server Version:" in out, out
        code, out = await kubectl_tmc_async("sync", "pause", "sim-001", "--nats-url", operator, "--timeout", "5")
        assert code == 1 and 'Permissions Violation for Publish to "tmc.ctl.sync.sim-001.pause"' in out, out

        # a watch streams to the operator's inbox: its first message is a BOOKMARK
        reader = await login(url, "operator")
        inbox = reader.nc.new_inbox()
        first: asyncio.Future[Msg] = asyncio.get_running_loop().create_future()

        async def on_event(msg: Msg) -> None:
            if not first.done():
                first.set_result(msg)

        sub = await reader.nc.subscribe(inbox, cb=on_event)
        await reader.nc.publish("tmc.api.watch.synctargets", b"{}", reply=inbox)
        assert json.loads((await asyncio.wait_for(first, 10)).data)["type"] == "BOOKMARK"
        await sub.unsubscribe()

        # tmcd's side of the control channel reaches the simulated syncer, which may answer it
        ctl = await login(url, "tmcd")
        reply = await ctl.nc.request("tmc.ctl.sync.sim-001.pause", json.dumps(
            {"cluster": "sim-001", "action": "pause", "timestamp": 1.0}).encode(), timeout=5)  # fmt: skip
        assert json.loads(reply.data)["state"] == "paused"

        text = await scrape(base)
        assert sample(text, "tmc_nats_errors_total", kind="permissions_violation") == 0
        assert sample(text, "tmc_nats_connected") == 1
    finally:
        output: dict[str, tuple[int | None, str, str]] = {}
        for name, proc in (("sim", sim), ("tmcd", tmcd)):
            if proc is None:
                continue
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
            try:
                out, err = await asyncio.wait_for(proc.communicate(), 30)
            finally:
                await kill(proc)
            output[name] = (proc.returncode, (out or b"").decode(), err.decode())
    for name, (code, _out, err) in output.items():
        assert code == 0, f"{name} exited {code}: {err}"
        assert "permissions violation" not in err.lower(), f"{name}: {err}"
        assert "Traceback" not in err, f"{name}: {err}"
    summary = output["sim"][1]
    assert summary.startswith("sim: published heartbeats=") and "heartbeats=0 " not in summary, summary


def test_sim_takes_its_nats_settings_from_the_config_file(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from tmcd.sim.cli import sim

    url = f"nats://127.0.0.1:{free_port()}"
    config = tmp_path / "syncer.toml"
    config.write_text(f'[nats]\nurl = "{url}"\nuser = "syncer-edge-1"\npassword = "x"\n')
    for command in (["--config", str(config)], ["mesh", "--config", str(config), "--clusters", "1", "--rps", "1",
                                                "--seed", "1"]):  # fmt: skip
        result = CliRunner().invoke(sim, [*command, "--duration", "1"], env={"TMCD_NATS_URL": None})
        assert (result.exit_code, result.stderr) == (1, f"error: cannot reach NATS at {url}: Connection refused\n")


async def test_sim_with_a_bad_config_file_exits_2(tmp_path: Path) -> None:
    config = tmp_path / "syncer.toml"
    config.write_text('[nats]\ntls_cert = "/x.pem"\n')
    proc = await start_tmcd("sim", "--config", str(config), "--nats-url", "nats://127.0.0.1:1", "--duration", "1")
    assert proc.stderr is not None
    err = (await asyncio.wait_for(proc.stderr.read(), 30)).decode()
    assert await asyncio.wait_for(proc.wait(), 30) == 2
    assert err == (
        f"tmcd: config ({config}): nats.tls_key = '': expected a file path when nats.tls_cert is set "
        "(set both or neither)\n"
    )
