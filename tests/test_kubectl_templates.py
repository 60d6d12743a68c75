"""``kubectl tmc get -o jsonpath=... | custom-columns=...`` end to end against a real tmcd: in
process (CliRunner), as the ``kubectl-tmc`` process, through the real ``kubectl tmc``, and
compared with kubectl's own jsonpath rendering of the same object."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import msgspec
import pytest

from tests import tools
from tests.helpers import kubectl_tmc, new_object
from tests.test_kubectl_jsonpath import kubectl_jsonpath
from tests.tmcd_thread import Tmcd, tmcd_in_thread
from tmcd.resources.examples import example

BIN = Path(sys.executable).parent
KUBECTL_TMC = str(BIN / "kubectl-tmc")


def _cluster(name: str, **labels: str) -> dict[str, Any]:
    obj = new_object("SyncTarget", name=name, labels=labels)
    obj["status"] = msgspec.to_builtins(example("SyncTarget")).get("status")
    return obj


@pytest.fixture(scope="module")
def tmcd(nats_server_bin: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tmcd]:
    """A tmcd (metrics agent only: stored statuses stay as seeded) with two clusters and a placement."""
    with tmcd_in_thread(nats_server_bin, tmp_path_factory.mktemp("templates"), agents="metrics") as t:
        t.create("synctargets", _cluster("sim-001", region="eu-west-1", zone="eu-west-1a"))
        sim2 = _cluster("sim-002", region="us-east-1")
        sim2["status"]["errorRatio"] = 0.0  # a whole float: kubectl's List makes it an int
        t.create("synctargets", sim2)
        t.create("placements", new_object("Placement", name="web", labels={"app": "web", "tier": "front"}))
        yield t


def ok(t: Tmcd, *args: str) -> str:
    r = kubectl_tmc(t.nats_url, *args)
    assert r.exit_code == 0, (r.stdout, r.stderr)
    return r.stdout


def fails(t: Tmcd, *args: str) -> tuple[int, str]:
    r = kubectl_tmc(t.nats_url, *args)
    assert r.stdout == "" and len(r.stderr.splitlines()) == 1, (r.stdout, r.stderr)
    return r.exit_code, r.stderr


def test_jsonpath_on_lists_and_single_objects(tmcd: Tmcd) -> None:
    assert ok(tmcd, "get", "clusters", "-o", "jsonpath={.items[*].metadata.name}") == "sim-001 sim-002"
    table = '{range .items[*]}{.metadata.name}{"\\t"}{.metadata.labels.region}{"\\n"}{end}'
    assert ok(tmcd, "get", "cl", "-o", f"jsonpath={table}") == "sim-001\teu-west-1\nsim-002\tus-east-1\n"
    assert ok(tmcd, "get", "cl", "-o", 'jsonpath={.items[?(@.metadata.labels.region=="us-east-1")].metadata.name}') == (
        "sim-002"
    )
    assert ok(tmcd, "get", "pl", "web", "-o", "jsonpath={.metadata.labels.app}") == "web"
    assert ok(tmcd, "get", "cl", "sim-001", "-o=jsonpath={.metadata.name}") == "sim-001"  # -o= as kubectl
    assert ok(tmcd, "get", "cl", "-o", "jsonpath={..zone}") == "eu-west-1a"
    assert ok(tmcd, "get", "cl", "-o", "jsonpath", "--template", "{.kind}") == "List"
    # an empty list prints what the template makes of it: nothing here, and no "No resources found"
    r = kubectl_tmc(tmcd.nats_url, "get", "cr", "-o", "jsonpath={.items[*].metadata.name}")
    assert (r.exit_code, r.stdout, r.stderr) == (0, "", "")


def test_jsonpath_missing_keys(tmcd: Tmcd) -> None:
    assert ok(tmcd, "get", "cl", "sim-002", "-o", "jsonpath={.metadata.labels.zone}") == ""
    code, err = fails(
        tmcd, "get", "cl", "sim-002", "-o", "jsonpath={.metadata.labels.zone}", "--allow-missing-template-keys=false"
    )
    assert (code, err) == (1, 'error: error executing jsonpath "{.metadata.labels.zone}": zone is not found\n')
    code, err = fails(tmcd, "get", "cl", "-o", "jsonpath={.items[5]}")
    assert code == 1 and "array index out of bounds: index 5, length 2" in err


@pytest.mark.parametrize(
    ("output", "error"),
    [
        ("jsonpath={.items[", "error: error parsing jsonpath {.items[, unterminated array"),
        ("jsonpath=", "error: template format specified but no template given"),
        ("custom-columns=NAME", "error: unexpected custom-columns spec: NAME, expected <header>:<json-path-expr>"),
        ("custom-columns=", "error: custom-columns format specified but no custom columns given"),
        ("jsonpath-file=/nonexistent/t.txt", "error: error reading --template '/nonexistent/t.txt'"),
        ("go-template={{.kind}}", "error: unable to match a printer suitable for the output format"),
    ],
)
def test_bad_templates_are_usage_errors(tmcd: Tmcd, output: str, error: str) -> None:
    code, err = fails(tmcd, "get", "cl", "-o", output)
    assert code == 2 and err.startswith(error), err


def test_custom_columns(tmcd: Tmcd, tmp_path: Path) -> None:
    out = ok(
        tmcd,
        "get",
        "cl",
        "-o",
        "custom-columns=NAME:.metadata.name,REGION:.metadata.labels.region,ZONE:{.metadata.labels.zone}",
    )
    assert out == ("NAME      REGION      ZONE\nsim-001   eu-west-1   eu-west-1a\nsim-002   us-east-1   <none>\n")
    # maps print as Go prints them; a column is at least 6 wide (kubectl's tabwriter)
    out = ok(tmcd, "get", "pl", "web", "-o", "custom-columns=N:metadata.name,L:.metadata.labels")
    assert out == "N     L\nweb   map[app:web tier:front]\n"
    spec = tmp_path / "cols.txt"
    spec.write_text("NAME    PAUSED\n.metadata.name   .status.syncPaused\n")
    assert ok(tmcd, "get", "cl", "-o", f"custom-columns-file={spec}").splitlines() == [
        "NAME      PAUSED",
        "sim-001   false",
        "sim-002   false",
    ]
    # no objects: the header alone, as kubectl prints it
    assert ok(tmcd, "get", "cr", "-A", "-o", "custom-columns=NAME:.metadata.name") == "NAME\n"


def test_jsonpath_file(tmcd: Tmcd, tmp_path: Path) -> None:
    template = tmp_path / "t.jsonpath"
    template.write_text('{range .items[*]}{.metadata.name}{"\\n"}{end}')
    assert ok(tmcd, "get", "cl", "-o", f"jsonpath-file={template}") == "sim-001\nsim-002\n"


@pytest.mark.parametrize(
    "template",
    [
        "{.metadata.name}",
        "{.metadata.labels}",
        "{.spec}",
        "{.spec.policy} {.kind} {.apiVersion}",
        "{.metadata.labels.app}{'\\n'}{.metadata.nope}",
        '{range .spec.clusterSelector.matchExpressions[*]}{.key}={.values}{"\\n"}{end}',
        "{.spec.clusterSelector.matchExpressions[?(@.operator=='In')].key}",
        "{..key}",
        "{.status}",
    ],
)
def test_same_as_kubectl_on_a_stored_placement(tmcd: Tmcd, tmp_path: Path, template: str) -> None:
    stored = tmp_path / "web.json"
    stored.write_text(ok(tmcd, "get", "pl", "web", "-o", "json"))
    p = kubectl_jsonpath(stored, template)
    assert p.returncode == 0, p.stderr
    assert ok(tmcd, "get", "pl", "web", "-o", f"jsonpath={template}") == p.stdout


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=60, env=env)


def test_subprocess_jsonpath_and_custom_columns(tmcd: Tmcd, tmp_path: Path) -> None:
    p = _run(KUBECTL_TMC, "get", "cl", "-o", "jsonpath={.items[*].metadata.name}", "--nats-url", tmcd.nats_url)
    assert (p.returncode, p.stdout, p.stderr) == (0, "sim-001 sim-002", "")
    p = _run(KUBECTL_TMC, "get", "cl", "-o", "custom-columns=NAME:.metadata.name", "--nats-url", tmcd.nats_url)
    assert (p.returncode, p.stdout) == (0, "NAME\nsim-001\nsim-002\n"), p.stderr
    p = _run(KUBECTL_TMC, "get", "cl", "-o", "jsonpath={.items[", "--nats-url", tmcd.nats_url)
    assert p.returncode == 2 and p.stdout == "" and len(p.stderr.splitlines()) == 1
    (tmp_path / "t").write_text("{.items[0].metadata.name}")
    p = _run(KUBECTL_TMC, "get", "cl", "-o", f"jsonpath-file={tmp_path / 't'}", "--nats-url", tmcd.nats_url)
    assert (p.returncode, p.stdout) == (0, "sim-001"), p.stderr
    (tmp_path / "c").write_text("NAME REGION\n.metadata.name .metadata.labels.region\n")
    p = _run(KUBECTL_TMC, "get", "cl", "-o", f"custom-columns-file={tmp_path / 'c'}", "--nats-url", tmcd.nats_url)
    assert (p.returncode, p.stdout) == (0, "NAME      REGION\nsim-001   eu-west-1\nsim-002   us-east-1\n"), p.stderr


def test_through_the_real_kubectl(tmcd: Tmcd, tmp_path: Path) -> None:
    kubectl = tools.require("kubectl")
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "HOME": str(tmp_path)}
    p = _run(
        kubectl, "tmc", "get", "pl", "web", "-o", "jsonpath={.metadata.name}", "--nats-url", tmcd.nats_url, env=env
    )
    assert (p.returncode, p.stdout) == (0, "web"), p.stderr
    cols = "custom-columns=NAME:.metadata.name,APP:.metadata.labels.app"
    p = _run(kubectl, "tmc", "get", "pl", "-o", cols, "--nats-url", tmcd.nats_url, env=env)
    assert (p.returncode, p.stdout) == (0, "NAME   APP\nweb    web\n"), p.stderr


def test_json_output_is_what_jsonpath_reads(tmcd: Tmcd) -> None:
    lst = json.loads(ok(tmcd, "get", "cl", "-o", "json"))
    assert ok(tmcd, "get", "cl", "-o", "jsonpath={.items[0].status.queueDepth}") == str(
        lst["items"][0]["status"]["queueDepth"]
    )


# --- the real `kubectl get` on the same objects -----------------------------------------------

GROUPS = {
    "synctargets": ("workload.kcp.io/v1alpha1", "SyncTarget"),
    "placements": ("scheduling.kcp.io/v1alpha1", "Placement"),
}


@contextlib.contextmanager
def fake_apiserver(objects: dict[str, list[dict[str, Any]]]) -> Iterator[str]:
    """Just enough of a Kubernetes API server (discovery, list, get) on loopback for the real
    ``kubectl get`` to print ``objects`` (plural -> items, as tmcd returned them)."""

    def resources(gv: str) -> list[dict[str, Any]]:
        return [
            {"name": p, "singularName": k.lower(), "namespaced": False, "kind": k, "verbs": ["get", "list"]}
            for p, (g, k) in GROUPS.items()
            if g == gv
        ]

    routes: dict[str, Any] = {
        "/api": {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []},
        "/api/v1": {"kind": "APIResourceList", "groupVersion": "v1", "resources": []},
        "/apis": {
            "kind": "APIGroupList",
            "apiVersion": "v1",
            "groups": [
                {
                    "name": gv.split("/")[0],
                    "versions": [{"groupVersion": gv, "version": gv.split("/")[1]}],
                    "preferredVersion": {"groupVersion": gv, "version": gv.split("/")[1]},
                }
                for gv, _ in GROUPS.values()
            ],
        },
    }
    for plural, (gv, kind) in GROUPS.items():
        routes[f"/apis/{gv}"] = {"kind": "APIResourceList", "groupVersion": gv, "resources": resources(gv)}
        items = objects.get(plural, [])
        routes[f"/apis/{gv}/{plural}"] = {
            "apiVersion": gv,
            "kind": f"{kind}List",
            "metadata": {"resourceVersion": "1"},
            "items": items,
        }
        for item in items:
            routes[f"/apis/{gv}/{plural}/{item['metadata']['name']}"] = item

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            body = routes.get(self.path.split("?")[0])
            data = json.dumps(body).encode()
            self.send_response(200 if body is not None else 404)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


LIST_OUTPUTS = [
    "jsonpath={.items[*].metadata.name}",
    'jsonpath={range .items[*]}{.metadata.name}{"\\t"}{.status.health}{"\\n"}{end}',
    "jsonpath={.items[?(@.status.errorRatio==0)].metadata.name}",
    "jsonpath={.items[*].status.errorRatio}",
    "jsonpath={.items[*].status.capacity}",
    "jsonpath={.items[0].metadata.labels}",
    "jsonpath={..zone}",
    "jsonpath={.kind} {.apiVersion} {.metadata}",
    "custom-columns=NAME:.metadata.name,REGION:.metadata.labels.region,ZONE:.metadata.labels.zone",
    "custom-columns=N:.metadata.name,ERR:.status.errorRatio,CAP:.status.capacity,RES:.status.syncedResources",
    "custom-columns=N:metadata.name,TYPES:.status.conditions[*].type,X:{.spec.nope}",
]


@pytest.mark.parametrize("output", LIST_OUTPUTS)
@pytest.mark.parametrize("names", [[], ["sim-002"]], ids=["list", "by-name"])
def test_same_as_kubectl_get(tmcd: Tmcd, tmp_path: Path, output: str, names: list[str]) -> None:
    kubectl = tools.require("kubectl")
    served = json.loads(ok(tmcd, "get", "cl", "-o", "json"))["items"]
    env = {**os.environ, "HOME": str(tmp_path), "KUBECONFIG": str(tmp_path / "none")}
    with fake_apiserver({"synctargets": served}) as url:
        p = _run(kubectl, "--server", url, "get", "synctargets", *names, "-o", output, env=env)
    r = kubectl_tmc(tmcd.nats_url, "get", "cl", *names, "-o", output)
    if p.returncode == 0:
        assert (r.exit_code, r.stdout) == (0, p.stdout), r.stderr
    else:  # both fail, with the same reason
        assert r.exit_code != 0 and r.stderr.split(":")[-1].strip() in p.stderr, (r.stderr, p.stderr)
