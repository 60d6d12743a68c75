"""``kubectl tmc apply`` of many documents (created, configured, unchanged, errors in between) and
``delete`` of every kind, against a real tmcd whose placement agent writes status meanwhile."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.helpers import kubectl_tmc, new_object
from tests.tmcd_thread import Tmcd, tmcd_in_thread
from tmcd.kubectl.apply import LAST_APPLIED, subset
from tmcd.kubectl.kinds import CLI_KINDS

KUBECTL_TMC = str(Path(sys.executable).parent / "kubectl-tmc")


@pytest.fixture(scope="module")
def tmcd(nats_server_bin: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tmcd]:
    with tmcd_in_thread(nats_server_bin, tmp_path_factory.mktemp("apply")) as t:
        t.create("synctargets", new_object("SyncTarget", name="sim-001"))
        yield t


def _write(path: Path, docs: list[dict[str, Any]]) -> Path:
    path.write_text(yaml.safe_dump_all(docs))
    return path


def _rv(t: Tmcd, plural: str, name: str, ns: str = "") -> str:
    obj = t.request(f"tmc.api.get.{plural}", json.dumps({"name": name, "namespace": ns}).encode())
    return str(obj["metadata"]["resourceVersion"])


def test_each_document_reported_and_unchanged_not_written(tmcd: Tmcd, tmp_path: Path) -> None:
    docs = [
        new_object("Placement", name="multi-a"),
        new_object("AnalysisTemplate", name="multi-at", namespace="shop"),
        new_object("CanaryRollout", name="multi-cr", namespace="shop"),
    ]
    f = _write(tmp_path / "all.yaml", docs)
    r = kubectl_tmc(tmcd.nats_url, "apply", "-f", str(f))
    assert r.exit_code == 0, r.stderr
    assert r.stdout.splitlines() == [
        "placement.scheduling.kcp.io/multi-a created",
        "analysistemplate.tmc.kcp.io/multi-at created",
        "canaryrollout.tmc.kcp.io/multi-cr created",
    ]
    before = [_rv(tmcd, "placements", "multi-a"), _rv(tmcd, "canaryrollouts", "multi-cr", "shop")]
    r = kubectl_tmc(tmcd.nats_url, "apply", "-f", str(f))
    assert r.exit_code == 0 and r.stdout.splitlines() == [
        "placement.scheduling.kcp.io/multi-a unchanged",
        "analysistemplate.tmc.kcp.io/multi-at unchanged",
        "canaryrollout.tmc.kcp.io/multi-cr unchanged",
    ], r.stderr
    assert [_rv(tmcd, "placements", "multi-a"), _rv(tmcd, "canaryrollouts", "multi-cr", "shop")] == before
    # a label, then dropping a field the previous apply set: both are changes
    docs[0]["metadata"]["labels"] = {"team": "web"}
    assert kubectl_tmc(tmcd.nats_url, "apply", "-f", "-", input=json.dumps(docs[0])).stdout == (
        "placement.scheduling.kcp.io/multi-a configured\n"
    )
    del docs[0]["metadata"]["labels"]
    assert kubectl_tmc(tmcd.nats_url, "apply", "-f", "-", input=json.dumps(docs[0])).stdout == (
        "placement.scheduling.kcp.io/multi-a configured\n"
    )
    stored = json.loads(kubectl_tmc(tmcd.nats_url, "get", "pl", "multi-a", "-o", "json").stdout)
    assert "labels" not in stored["metadata"] or not stored["metadata"]["labels"]
    assert json.loads(stored["metadata"]["annotations"][LAST_APPLIED])["metadata"] == {"name": "multi-a"}


def test_changed_elsewhere_is_configured_again(tmcd: Tmcd) -> None:
    doc = new_object("Placement", name="drift")
    assert kubectl_tmc(tmcd.nats_url, "apply", "-f", "-", input=json.dumps(doc)).stdout.endswith(" created\n")
    patch = {"spec": {"policy": "Binpack" if doc["spec"]["policy"] != "Binpack" else "Spread"}}
    tmcd.request("tmc.api.patch.placements", json.dumps({"name": "drift", "patch": patch}).encode())
    r = kubectl_tmc(tmcd.nats_url, "apply", "-f", "-", input=json.dumps(doc))
    assert r.stdout == "placement.scheduling.kcp.io/drift configured\n", r.stderr
    assert json.loads(kubectl_tmc(tmcd.nats_url, "get", "pl", "drift", "-o", "json").stdout)["spec"] == doc["spec"]


def test_object_written_by_others_is_unchanged_when_equal(tmcd: Tmcd) -> None:
    doc = new_object("Placement", name="by-api", labels={"team": "web"})
    tmcd.create("placements", doc)
    rv = _rv(tmcd, "placements", "by-api")
    r = kubectl_tmc(tmcd.nats_url, "apply", "-f", "-", input=json.dumps(doc))
    assert r.stdout == "placement.scheduling.kcp.io/by-api unchanged\n", r.stderr
    assert _rv(tmcd, "placements", "by-api") == rv
    doc["metadata"]["labels"] = {"team": "api"}
    r = kubectl_tmc(tmcd.nats_url, "apply", "-f", "-", input=json.dumps(doc))
    assert r.stdout == "placement.scheduling.kcp.io/by-api configured\n", r.stderr


def test_goes_on_past_an_invalid_document(tmcd: Tmcd, tmp_path: Path) -> None:
    bad_spec = new_object("Placement", name="bad-one")
    bad_spec["spec"]["policy"] = "Nonsense"
    docs = [
        new_object("Placement", name="ok-1"),
        {"apiVersion": "v1", "kind": "Nope", "metadata": {"name": "x"}},
        bad_spec,
        {"apiVersion": "scheduling.kcp.io/v1alpha1", "kind": "Placement", "metadata": {}},
        new_object("Placement", name="ok-2"),
    ]
    p = subprocess.run(
        [KUBECTL_TMC, "apply", "-f", str(_write(tmp_path / "mixed.yaml", docs)), "--nats-url", tmcd.nats_url],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert p.returncode == 1
    assert p.stdout.splitlines() == [
        "placement.scheduling.kcp.io/ok-1 created",
        "placement.scheduling.kcp.io/ok-2 created",
    ]
    errors = p.stderr.splitlines()
    assert len(errors) == 3, errors
    assert errors[0].startswith("error: ") and "no tmcd resource kind 'Nope'" in errors[0]
    assert errors[1].startswith("Error from server (Invalid):") and "Nonsense" in errors[1]
    assert errors[2] == f"error: {tmp_path / 'mixed.yaml'}: a Placement needs metadata.name"


@pytest.mark.parametrize("kind", [k.aliases[0] if k.aliases else k.plural for k in CLI_KINDS])
def test_delete_every_kind_get_knows(tmcd: Tmcd, kind: str) -> None:
    k = next(c for c in CLI_KINDS if kind in (c.plural, *c.aliases))
    ns = "shop" if k.namespaced else ""
    obj = new_object(k.kind, name=f"del-{k.singular}", **({"namespace": ns} if ns else {}))
    assert kubectl_tmc(tmcd.nats_url, "apply", "-f", "-", input=json.dumps(obj)).exit_code == 0
    args = ["delete", kind, f"del-{k.singular}", *(["-n", ns] if ns else [])]
    r = kubectl_tmc(tmcd.nats_url, *args)
    assert (r.exit_code, r.stdout) == (0, f'{k.singular}.{k.group} "del-{k.singular}" deleted\n'), r.stderr
    r = kubectl_tmc(tmcd.nats_url, "get", kind, f"del-{k.singular}", *(["-n", ns] if ns else []))
    assert r.exit_code == 1 and "NotFound" in r.stderr


@pytest.mark.parametrize(
    ("want", "have", "result"),
    [
        ({"a": 1}, {"a": 1, "b": 2}, True),
        ({"a": 1}, {"a": 1.0}, True),
        ({"a": None}, {}, True),
        ({"a": True}, {"a": 1}, False),
        ({"a": [1, 2]}, {"a": [1]}, False),
        ({"a": {"b": "x"}}, {"a": {"b": "y"}}, False),
        ({"a": 1}, {}, False),
    ],
)
def test_subset(want: Any, have: Any, result: bool) -> None:
    assert subset(want, have) is result
