"""config/kubernetes/: every manifest parses (and kubectl accepts it in a client dry run), and
tmcd's Deployment and sidecar agree with the image and with tmcd: the image tag is tmcd's
version, the container port is the Dockerfile's EXPOSE and the port tmcd listens on with that
environment and config file, the probes hit /livez and /readyz on it, every TMCD_* variable is
one tmcd reads and the whole configuration loads, the containers run as the image's user on a
read-only root with the data dir on a volume, and the Service and PodDisruptionBudget select
the Deployment's Pods."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from tests import tools
from tests.dockerfile import image
from tests.kubediscovery import discovery_kubeconfig
from tmcd import __version__
from tmcd.cli.main import cli as tmcd_cli
from tmcd.config import env_warnings, load_config, parse_listen

ROOT = Path(__file__).resolve().parent.parent
DIR = ROOT / "config" / "kubernetes"
IMAGE = f"ghcr.io/tmc-dev/tmcd:{__version__}"


def docs(name: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all((DIR / name).read_text()) if d is not None]


def one(name: str, kind: str) -> dict[str, Any]:
    found = [d for d in docs(name) if d["kind"] == kind]
    assert len(found) == 1, (name, kind)
    return found[0]


def pod_spec(name: str) -> dict[str, Any]:
    spec: dict[str, Any] = one(name, "Deployment")["spec"]["template"]["spec"]
    return spec


def tmcd_containers(name: str) -> list[dict[str, Any]]:
    """Every container of the Pod that runs the tmcd image, init containers (native sidecars) too."""
    spec = pod_spec(name)
    return [c for c in spec.get("initContainers", []) + spec["containers"] if c["image"].startswith("ghcr.io/")]


def running_tmcd(name: str) -> dict[str, Any]:
    """The container that runs `tmcd run`."""
    (c,) = [c for c in tmcd_containers(name) if c.get("args", [])[:1] == ["run"]]
    return c


MANIFESTS = sorted(p.name for p in DIR.glob("*.yaml"))
TMCD_MANIFESTS = ["tmcd-deployment.yaml", "tmcd-sidecar.yaml"]


@pytest.mark.parametrize("name", MANIFESTS)
def test_every_manifest_parses(name: str) -> None:
    for doc in docs(name):
        assert {"apiVersion", "kind", "metadata"} <= set(doc), doc
        assert doc["metadata"]["name"]


def _container_env(container: dict[str, Any], config_file: Path | None) -> dict[str, str]:
    """The container's environment as tmcd sees it: the image's ENV, then the container's (a
    Secret's value stands in as a placeholder), with the mounted config file at TMCD_CONFIG."""
    env = {k: v for k, v in image().env.items() if k.startswith("TMCD_")}
    for var in container.get("env", []):
        env[var["name"]] = var.get("value", "placeholder-from-a-secret")
    if "TMCD_CONFIG" in env:
        assert config_file is not None
        env["TMCD_CONFIG"] = str(config_file)
    return env


def _mounted_config(name: str, container: dict[str, Any], tmp_path: Path) -> Path | None:
    """The file TMCD_CONFIG names, written from the ConfigMap mounted at its directory."""
    path = next((v["value"] for v in container.get("env", []) if v["name"] == "TMCD_CONFIG"), None)
    if path is None:
        return None
    directory, _, filename = path.rpartition("/")
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == directory]
    (volume,) = [v for v in pod_spec(name)["volumes"] if v["name"] == mount["name"]]
    config_map = one(name, "ConfigMap")
    assert volume["configMap"]["name"] == config_map["metadata"]["name"]
    out = tmp_path / filename
    out.write_text(config_map["data"][filename])
    return out


@pytest.mark.parametrize("name", TMCD_MANIFESTS)
def test_tmcd_reads_every_variable_and_listens_on_the_container_port(name: str, tmp_path: Path) -> None:
    img = image()
    for container in tmcd_containers(name):
        config_file = _mounted_config(name, container, tmp_path)
        env = _container_env(container, config_file)
        assert env_warnings(env) == [], container["name"]
        cfg = load_config(None, env=env)  # the whole configuration, file included, is valid
        assert cfg.data_dir == img.env["TMCD_DATA_DIR"]
        assert container["image"] == IMAGE
    c = running_tmcd(name)
    cfg = load_config(None, env=_container_env(c, _mounted_config(name, c, tmp_path)))
    _, port = parse_listen(cfg.http.listen)
    (declared,) = c["ports"]
    assert declared == {"name": "http", "containerPort": port, "protocol": "TCP"}
    assert img.expose == [port]
    for probe, path in (("livenessProbe", "/livez"), ("readinessProbe", "/readyz")):
        assert c[probe]["httpGet"] == {"path": path, "port": "http"}, probe
    assert c["startupProbe"]["httpGet"]["path"] in ("/livez", "/readyz")
    assert "/livez" in img.healthcheck[-1]


def test_the_deployment_joins_the_nats_helm_charts_service(tmp_path: Path) -> None:
    c = running_tmcd("tmcd-deployment.yaml")
    cfg = load_config(None, env=_container_env(c, _mounted_config("tmcd-deployment.yaml", c, tmp_path)))
    assert cfg.nats.url == "nats://nats:4222" and cfg.nats.user == "tmcd"
    assert {v["name"]: v.get("valueFrom") for v in c["env"]}["TMCD_NATS_PASSWORD"] == {
        "secretKeyRef": {"name": "tmcd-nats", "key": "password"}
    }
    assert cfg.kv.replicas == 3
    streams = ("syncer", "placement", "workload", "events", "dead", "traffic")
    assert {s: getattr(cfg.streams, s).replicas for s in streams} == dict.fromkeys(streams, 3)
    assert cfg.api.tokens == []  # a ConfigMap holds no secrets


def test_the_sidecar_serves_the_syncer_on_the_embedded_nats() -> None:
    spec = pod_spec("tmcd-sidecar.yaml")
    (tmcd,) = spec["initContainers"]
    assert tmcd["restartPolicy"] == "Always" and tmcd["startupProbe"]["httpGet"]["path"] == "/readyz"
    assert "TMCD_NATS_URL" not in {v["name"] for v in tmcd["env"]}  # embedded
    (syncer,) = spec["containers"]
    data = image().env["TMCD_DATA_DIR"]
    assert {m["mountPath"] for m in syncer["volumeMounts"]} == {data}  # where tmcd writes nats.url
    # the syncer's arguments are valid `tmcd sim` options
    with tmcd_cli.make_context("tmcd", list(syncer["args"]), resilient_parsing=False) as ctx:
        sim = tmcd_cli.get_command(ctx, "sim")
        assert isinstance(sim, click.Command)
        sim.make_context("sim", list(syncer["args"][1:]), parent=ctx)


@pytest.mark.parametrize("name", TMCD_MANIFESTS)
def test_hardened_pods(name: str) -> None:
    img = image()
    spec = pod_spec(name)
    pod = spec["securityContext"]
    assert pod["runAsNonRoot"] is True and pod["runAsUser"] == pod["runAsGroup"] == pod["fsGroup"] == img.uid
    assert spec["automountServiceAccountToken"] is False
    volumes = {v["name"]: v for v in spec["volumes"]}
    for c in spec.get("initContainers", []) + spec["containers"]:
        sc = c["securityContext"]
        assert sc["runAsNonRoot"] is True and sc["readOnlyRootFilesystem"] is True, c["name"]
        assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"] == {"drop": ["ALL"]}, c["name"]
        assert set(c["resources"]["requests"]) == set(c["resources"]["limits"]) == {"cpu", "memory"}, c["name"]
        # the only writable place: the data dir, on a volume
        (data,) = [m for m in c["volumeMounts"] if m["mountPath"] == img.env["TMCD_DATA_DIR"]]
        assert "emptyDir" in volumes[data["name"]] or "persistentVolumeClaim" in volumes[data["name"]]
    assert spec["terminationGracePeriodSeconds"] > load_config(None, env={}).runtime.shutdown_timeout


def test_service_and_disruption_budget_select_the_deployments_pods() -> None:
    name = "tmcd-deployment.yaml"
    deployment = one(name, "Deployment")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert deployment["spec"]["replicas"] == 3 and selector.items() <= labels.items()
    pdb = one(name, "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"] == selector
    assert pdb["spec"].get("maxUnavailable") == 1 or pdb["spec"].get("minAvailable") == 2
    service = one(name, "Service")
    assert service["spec"]["selector"].items() <= labels.items()
    (port,) = service["spec"]["ports"]
    assert port["targetPort"] == running_tmcd(name)["ports"][0]["name"]
    assert port["port"] == image().http_port
    account = one(name, "ServiceAccount")
    assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == account["metadata"]["name"]


# --- kubectl -----------------------------------------------------------------------------------

# kubectl apply maps every manifest to a resource through discovery, even in a client dry run:
# this loopback server answers discovery for the kinds in config/kubernetes/ and 404 for the rest
# (so each object is "created (dry run)").
_RESOURCES = {
    "v1": [("serviceaccounts", "ServiceAccount"), ("configmaps", "ConfigMap"), ("services", "Service")],
    "apps/v1": [("deployments", "Deployment")],
    "policy/v1": [("poddisruptionbudgets", "PodDisruptionBudget")],
    "rbac.authorization.k8s.io/v1": [("roles", "Role"), ("clusterroles", "ClusterRole")],
}


def _resource_list(group_version: str) -> dict[str, Any]:
    resources = [
        {"name": plural, "singularName": kind.lower(), "namespaced": kind != "ClusterRole", "kind": kind,
         "verbs": ["create", "delete", "get", "list", "patch", "update", "watch"]}
        for plural, kind in _RESOURCES[group_version]
    ]  # fmt: skip
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": group_version, "resources": resources}


def _discovery() -> dict[str, Any]:
    groups = [
        {"name": gv.split("/")[0], "versions": [{"groupVersion": gv, "version": "v1"}],
         "preferredVersion": {"groupVersion": gv, "version": "v1"}}
        for gv in _RESOURCES if gv != "v1"
    ]  # fmt: skip
    out: dict[str, Any] = {
        "/version": {"major": "1", "minor": "32", "gitVersion": "v1.32.0"},
        "/api": {"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": []},
        "/api/v1": _resource_list("v1"),
        "/apis": {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups},
    }
    out.update({f"/apis/{gv}": _resource_list(gv) for gv in _RESOURCES if gv != "v1"})
    return out


@pytest.fixture
def kubeconfig(tmp_path: Path) -> Iterator[Path]:
    with discovery_kubeconfig(tmp_path / "kubeconfig", _discovery, namespace="tmc-system") as path:
        yield path


def test_kubectl_accepts_every_manifest_in_a_dry_run(kubeconfig: Path, tmp_path: Path) -> None:
    kubectl = tools.require("kubectl")
    cmd = [kubectl, "--kubeconfig", str(kubeconfig), "--cache-dir", str(tmp_path / "cache"),
           "apply", "--dry-run=client", "--validate=false", "-f", str(DIR)]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    created = set(proc.stdout.splitlines())
    for name in MANIFESTS:
        for doc in docs(name):
            group = doc["apiVersion"].rpartition("/")[0]  # "" for the core group
            kind = doc["kind"].lower() + (f".{group}" if group else "")
            assert f"{kind}/{doc['metadata']['name']} created (dry run)" in created, proc.stdout
