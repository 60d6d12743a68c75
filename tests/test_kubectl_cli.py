"""kubectl tmc end to end: every command and output format against a real tmcd, plus real subprocesses
and the real kubectl binary (plugin discovery)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
import yaml
from click.testing import CliRunner

from tests import tools
from tests.helpers import free_port, kubectl_tmc, new_object
from tests.tmcd_thread import Tmcd, tmcd_in_thread
from tmcd import __version__
from tmcd.kubectl.main import main
from tmcd.kubectl.root import cli
from tmcd.resources.examples import example

BIN = Path(sys.executable).parent
KUBECTL_TMC = str(BIN / "kubectl-tmc")


def _with_status(kind: str, **meta: Any) -> dict[str, Any]:
    obj = new_object(kind, **meta)
    status = msgspec.to_builtins(example(kind)).get("status")
    if status:
        obj["status"] = status
    return obj


@pytest.fixture(scope="module")
def tmcd(nats_server_bin: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tmcd]:
    """A NATS server and a tmcd (metrics and placement agents, so seeded statuses of other kinds stay) in a
    background thread."""
    with tmcd_in_thread(nats_server_bin, tmp_path_factory.mktemp("kubectl")) as t:
        t.create("synctargets", _with_status("SyncTarget", name="sim-001"))
        t.create(
            "synctargets",
            _with_status("SyncTarget", name="sim-002", labels={"region": "us-east-1", "environment": "prod"}),
        )
        t.create("placements", new_object("Placement", name="web"))
        t.create("canaryrollouts", _with_status("CanaryRollout", name="co", namespace="shop"), "shop")
        t.create("rolloutrevisions", _with_status("RolloutRevision", name="co-1", namespace="shop"), "shop")
        yield t


def ok(t: Tmcd | None, *args: str, input: str | None = None) -> str:
    r = kubectl_tmc(t.nats_url if t is not None else None, *args, input=input)
    assert r.exit_code == 0, (r.output, r.stderr)
    return r.stdout


def rows(out: str) -> list[list[str]]:
    return [line.split() for line in out.splitlines()]


# --- get ------------------------------------------------------------------------------------


def test_get_clusters_table_and_wide(tmcd: Tmcd) -> None:
    for kind in ("clusters", "cl", "cluster", "synctargets", "SyncTarget"):
        out = ok(tmcd, "get", kind)
        assert out.splitlines()[0].split() == [
            "NAME",
            "STATUS",
            "REGION",
            "PAUSED",
            "QUEUE",
            "LAST",
            "HEARTBEAT",
            "AGE",
        ]
        assert [r[:5] for r in rows(out)[1:]] == [
            ["sim-001", "Healthy", "eu-west-1", "false", "3"],
            ["sim-002", "Healthy", "us-east-1", "false", "3"],
        ]
    wide = rows(ok(tmcd, "get", "clusters", "-o", "wide"))
    assert wide[0][-5:] == ["ZONE", "PROVIDER", "CPU", "MEMORY", "VERSION"]
    assert wide[1][-5:] == ["eu-west-1a", "aws", "128", "512Gi", "v0.11.0"]


def test_get_selector_name_and_formats(tmcd: Tmcd) -> None:
    assert [r[0] for r in rows(ok(tmcd, "get", "cl", "-l", "region=us-east-1"))[1:]] == ["sim-002"]
    one = json.loads(ok(tmcd, "get", "cl", "sim-001", "-o", "json"))
    assert one["kind"] == "SyncTarget" and one["metadata"]["name"] == "sim-001" and one["status"]["health"] == "Healthy"
    lst = json.loads(ok(tmcd, "get", "clusters", "-o", "json"))
    assert lst["kind"] == "List" and lst["apiVersion"] == "v1" and len(lst["items"]) == 2
    y = yaml.safe_load(ok(tmcd, "get", "pl", "-o", "yaml"))
    assert y["kind"] == "List" and y["items"][0]["spec"]["policy"] == "LeastLoaded"
    assert ok(tmcd, "get", "cl", "-o", "name").split() == [
        "synctarget.workload.kcp.io/sim-001",
        "synctarget.workload.kcp.io/sim-002",
    ]


def test_get_placements_canaries_revisions(tmcd: Tmcd) -> None:
    pl = rows(ok(tmcd, "get", "placements", "-o", "wide"))
    assert pl[0] == ["NAME", "PHASE", "POLICY", "SELECTED", "AGE", "CLUSTERS"]
    assert pl[1][0] == "web" and pl[1][2] == "LeastLoaded"
    assert pl[1][3] == str(len(pl[1][5].split(","))) or (pl[1][3] == "0" and pl[1][5] == "<none>")
    cr = rows(ok(tmcd, "get", "canaries", "-A"))
    assert cr[0] == ["NAMESPACE", "NAME", "PHASE", "STEP", "WEIGHT", "AGE"] and cr[1][:2] == ["shop", "co"]
    assert rows(ok(tmcd, "get", "cr", "-n", "shop"))[0] == ["NAME", "PHASE", "STEP", "WEIGHT", "AGE"]
    rev = rows(ok(tmcd, "get", "rev", "-A"))
    assert rev[0] == ["NAMESPACE", "NAME", "ROLLOUT", "REVISION", "PHASE", "AGE"] and rev[1][:2] == ["shop", "co-1"]
    r = kubectl_tmc(tmcd.nats_url, "get", "cr")
    assert r.exit_code == 0 and r.stdout == "" and "No resources found in default namespace." in r.stderr


def test_get_not_found(tmcd: Tmcd) -> None:
    r = kubectl_tmc(tmcd.nats_url, "get", "pl", "missing")
    assert r.exit_code == 1 and r.stderr.startswith("Error from server (NotFound):")
    assert len(r.stderr.strip().splitlines()) == 1


def test_get_over_http(tmcd: Tmcd) -> None:
    r = CliRunner().invoke(cli, ["get", "cl", "-o", "name", "--server", tmcd.http_url], env={"TMC_NATS_URL": ""})
    assert r.exit_code == 0, r.output
    assert "synctarget.workload.kcp.io/sim-001" in r.stdout


def test_kubeconfig_extension(tmcd: Tmcd, tmp_path: Path) -> None:
    kc = tmp_path / "config"
    kc.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "fleet",
                "contexts": [
                    {
                        "name": "fleet",
                        "context": {
                            "cluster": "x",
                            "namespace": "shop",
                            "extensions": [{"name": "tmc", "extension": {"natsURL": tmcd.nats_url}}],
                        },
                    }
                ],
            }
        )
    )
    r = CliRunner().invoke(cli, ["get", "cr", "--kubeconfig", str(kc)])
    assert r.exit_code == 0, r.output
    assert rows(r.stdout)[1][0] == "co"
    r = CliRunner().invoke(cli, ["get", "cr", "--kubeconfig", str(kc), "--context", "nope"])
    assert r.exit_code == 1 and r.stderr == 'error: context "nope" does not exist in kubeconfig\n'


# --- describe, apply, delete, version, completion -----------------------------------------------


def test_describe_cluster_and_placement(tmcd: Tmcd) -> None:
    out = ok(tmcd, "describe", "cluster", "sim-001")
    assert "Health:" in out and "Capacity:" in out and "Allocatable:" in out
    assert "TYPE" in out and "HeartbeatHealthy" in out
    out = ok(tmcd, "describe", "placement", "web")
    assert "Policy:" in out and "LeastLoaded" in out
    assert "CLUSTER" in out and "SCORE" in out
    assert "sim-001" in out and "sim-002" in out


def test_apply_create_then_configure_and_delete(tmcd: Tmcd, tmp_path: Path) -> None:
    docs = [new_object("Placement", name="applied"), new_object("CanaryRollout", name="ap", namespace="shop")]
    f = tmp_path / "objs.yaml"
    f.write_text(yaml.safe_dump_all(docs))
    assert ok(tmcd, "apply", "-f", str(f)).splitlines() == [
        "placement.scheduling.kcp.io/applied created",
        "canaryrollout.tmc.kcp.io/ap created",
    ]
    docs[0]["spec"]["policy"] = "Binpack"
    assert ok(tmcd, "apply", "-f", "-", input=json.dumps(docs[0])) == "placement.scheduling.kcp.io/applied configured\n"
    assert json.loads(ok(tmcd, "get", "pl", "applied", "-o", "json"))["spec"]["policy"] == "Binpack"
    assert ok(tmcd, "delete", "placement", "applied") == 'placement.scheduling.kcp.io "applied" deleted\n'
    assert ok(tmcd, "delete", "canary", "ap", "-n", "shop", "--yes") == 'canaryrollout.tmc.kcp.io "ap" deleted\n'
    r = kubectl_tmc(tmcd.nats_url, "delete", "placement", "applied")
    assert r.exit_code == 1 and "NotFound" in r.stderr
    r = kubectl_tmc(tmcd.nats_url, "delete", "nope", "x")
    assert r.exit_code == 2 and r.stderr.startswith('error: the server doesn\'t have a resource type "nope"')


def test_apply_bad_input(tmcd: Tmcd, tmp_path: Path) -> None:
    r = kubectl_tmc(tmcd.nats_url, "apply", "-f", "-", input="kind: Nope\napiVersion: v1\nmetadata: {name: x}\n")
    assert r.exit_code == 1 and r.stderr.startswith("error: <stdin>: no tmcd resource kind")
    r = kubectl_tmc(tmcd.nats_url, "apply", "-f", str(tmp_path / "missing.yaml"))
    assert r.exit_code == 2 and len(r.stderr.splitlines()) == 1


def test_version_and_completion(tmcd: Tmcd) -> None:
    assert ok(None, "version", "--client") == f"Client Version: v{__version__}\n"
    lines = ok(tmcd, "version").splitlines()
    assert lines[:3] == [f"Client Version: v{__version__}", f"Server Version: v{__version__}", ""]
    assert lines[3].split() == ["REPLICA", "VERSION", "AGE", "LEADS"] and len(lines) == 5
    assert lines[4].split()[1] == f"v{__version__}"  # one replica, leading what this fixture runs
    for shell, marker in (("bash", "complete "), ("zsh", "compdef"), ("fish", "complete ")):
        out = ok(None, "completion", shell)
        assert marker in out and "_KUBECTL_TMC_COMPLETE" in out


@pytest.mark.parametrize("command", ["get", "describe", "delete", "apply", "version", "completion"])
def test_help_has_examples(command: str) -> None:
    out = ok(None, command, "-h")
    assert out.startswith(f"Usage: kubectl tmc {command}") and "Examples:" in out


def test_root_help_lists_commands() -> None:
    out = ok(None, "-h")
    for command in ("get", "describe", "delete", "apply", "version", "completion"):
        assert f"  {command}" in out


# --- errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [["get"], ["get", "nope"], ["get", "cl", "-o", "bad"], ["get", "cl", "--bogus"], ["nope"], ["describe", "canary"]],
)
def test_usage_errors_exit_2_with_one_line(tmcd: Tmcd, args: list[str]) -> None:
    r = kubectl_tmc(tmcd.nats_url, *args)
    assert r.exit_code == 2, r.output
    assert r.stdout == "" and len(r.stderr.splitlines()) == 1 and r.stderr.startswith("error: ")


def test_unreachable_nats_one_line() -> None:
    url = f"nats://127.0.0.1:{free_port()}"
    r = CliRunner().invoke(cli, ["get", "clusters", "--nats-url", url])
    assert r.exit_code == 1
    assert r.stderr == (
        f"error: cannot reach tmcd at {url}: connection refused — is `tmcd run` running? set --nats-url\n"
    )
    r = CliRunner().invoke(cli, ["get", "clusters", "--nats-url", url, "-v=6"])
    assert r.exit_code == 1 and r.stderr.startswith("error: cannot reach")


def _seconds_masked(text: str) -> str:
    """Ages under a minute (``0s``, ``59s``) as ``Ns``: two listings a moment apart may differ by one."""
    return re.sub(r"(?<!\S)\d{1,2}s(?!\S)", "Ns", text)


def test_fast_path_matches_click(tmcd: Tmcd, capsys: pytest.CaptureFixture[str]) -> None:
    for args in (["get", "cl", "-o", "wide"], ["get", "cr", "-A", "-o", "json"], ["get", "pl", "web", "-o", "name"]):
        with pytest.raises(SystemExit) as exc:
            main([*args, "--nats-url", tmcd.nats_url])
        assert exc.value.code == 0
        fast = capsys.readouterr().out
        assert _seconds_masked(fast) == _seconds_masked(ok(tmcd, *args))  # a second may tick between the two
    with pytest.raises(SystemExit) as exc:
        main(["get", "pl", "missing", "--nats-url", tmcd.nats_url])
    assert exc.value.code == 1 and capsys.readouterr().err.startswith("Error from server (NotFound)")


# --- real processes -------------------------------------------------------------------------


def test_subprocess_get_and_version(tmcd: Tmcd) -> None:
    p = subprocess.run(
        [KUBECTL_TMC, "get", "clusters", "-o", "json", "--nats-url", tmcd.nats_url], capture_output=True, text=True
    )
    assert p.returncode == 0, p.stderr
    assert [i["metadata"]["name"] for i in json.loads(p.stdout)["items"]] == ["sim-001", "sim-002"]
    p = subprocess.run([KUBECTL_TMC, "version", "--client"], capture_output=True, text=True)
    assert p.returncode == 0 and p.stdout == f"Client Version: v{__version__}\n"
    p = subprocess.run([KUBECTL_TMC, "get", "nope"], capture_output=True, text=True)
    assert p.returncode == 2 and len(p.stderr.splitlines()) == 1


HEAVY_MODULES = (
    "click",
    "msgspec",
    "nats",
    "yaml",
    "typing",
    "socket",
    "urllib.parse",
    "encodings.idna",
    "tmcd.bus",
    "textual",
    "tmcd.tui",
)


def test_fast_path_imports_only_what_it_uses(tmcd: Tmcd) -> None:
    """`get clusters` and `version --client` start fast: none of the heavy modules load."""
    probe = (
        "import sys, atexit\n"
        "from tmcd.kubectl.main import main\n"
        f"heavy = {HEAVY_MODULES!r}\n"
        "atexit.register(lambda: sys.stderr.write('LOADED ' + ' '.join(m for m in heavy if m in sys.modules)))\n"
        "main(sys.argv[1:])\n"
    )
    # without coverage's subprocess measurement, which itself imports typing, socket, ...
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COVERAGE_", "COV_CORE_"))}
    for args in (["get", "clusters", "--nats-url", tmcd.nats_url], ["version", "--client"]):
        p = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True, text=True, timeout=30, env=env)
        assert p.returncode == 0, p.stderr
        assert p.stderr.strip().splitlines()[-1] == "LOADED", (args, p.stderr)


def _kubectl() -> str:
    return tools.require("kubectl")


def test_real_kubectl_runs_the_plugin(tmp_path: Path) -> None:
    kubectl = _kubectl()
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "HOME": str(tmp_path)}
    p = subprocess.run([kubectl, "tmc", "version", "--client"], capture_output=True, text=True, env=env)
    assert p.returncode == 0, p.stderr
    assert p.stdout == f"Client Version: v{__version__}\n"
    p = subprocess.run([kubectl, "plugin", "list"], capture_output=True, text=True, env=env)
    assert str(BIN / "kubectl-tmc") in p.stdout, (p.stdout, p.stderr)
