"""The jsonpath engine against the real kubectl: the same template on the same object prints the
same bytes (or both fail).  kubectl renders jsonpath offline with ``kubectl label --local -f FILE
zz- -o jsonpath=...`` (removing a label the object does not have leaves it as it is).

kubectl turns any object with an ``items`` list into its items, so lists are tested on a key
named ``entries``: the engine treats every key alike.  Go iterates maps in random order, so
templates that walk several keys of one map (``.*``, ``..`` over maps) are compared as sets.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests import tools
from tmcd.kubectl.gofmt import go_float, go_json, go_sprint
from tmcd.kubectl.jsonpath import JsonPath, JsonPathError

DOC: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "Thing",
    "metadata": {"name": "web", "labels": {"region": "eu", "app.kubernetes.io/name": "shop"}},
    "entries": [
        {
            "metadata": {"name": "a"},
            "status": {
                "phase": "Bound",
                "n": 3,
                "f": 1.5,
                "ok": True,
                "nil": None,
                "list": [1, 2],
                "m": {"x": "<y> & z"},
            },
        },
        {"metadata": {"name": "b"}, "status": {"phase": "Pending", "n": 5}},
        {"metadata": {"name": "c"}},
    ],
    "spec": {
        "big": 1e21,
        "f2": 2.0,
        "small": 0.00001,
        "e16": 1e16,
        "m6": 1234567.0,
        "d": 123456.5,
        "e": 1e-7,
        "neg": -0.5,
        "i": 12345678901234,
        "s": "ü & <b>",
        "arr": [1.0, "x", None, True, {"k": 2.50}],
    },
}

TEMPLATES = [
    "{.entries[*].metadata.name}",
    '{range .entries[*]}{.metadata.name}{"\\t"}{.status.phase}{"\\n"}{end}',
    "{.metadata.labels.region}",
    "{.metadata.labels['region']}",
    "{.metadata.labels['app.kubernetes.io/name']}",  # client-go splits the key at its dots
    "{.metadata.labels.app\\.kubernetes\\.io/name}",
    '{.entries[?(@.status.phase=="Bound")].metadata.name}',
    "{.entries[?(@.metadata.name=='b')].status.n}",
    "{.entries[?(@.status.n>4)].metadata.name}",
    "{.entries[?(@.status.n < 4)].metadata.name}",
    "{.entries[?(@.status.n>=5)].metadata.name}",
    '{.entries[?(@.status.phase!="Bound")].metadata.name}',
    "{.entries[?(@.status.ok==true)].metadata.name}",
    "{.entries[?(@.status.f==1.5)].metadata.name}",
    "{.entries[?(@.status.n==1.5)].metadata.name}",  # int vs float: an error in Go's templates
    '{.entries[?(@.status.n<"x")]}',
    "{.entries[?(@.status.phase)].metadata.name}",
    "{.entries[?(@..n==5)].metadata.name}",
    "{range .entries[?(@.status.n)]}{.metadata.name}={.status.n}{'\\n'}{end}",
    "{.entries[0].status}",
    "{.entries[0].status.nil}",
    "{.entries[0].status.f} {.entries[0].status.ok} {.entries[0].status.list}",
    "{.entries[0].status.m}",
    "{.entries[0].status.list[*]}",
    "{.entries[0].status.list[-1]}",
    "{.entries[-1:].metadata.name}",
    "{.entries[-2].metadata.name}",
    "{.entries[:2].metadata.name}",
    "{.entries[::2].metadata.name}",
    "{.entries[1:1]}",
    "{.entries[0,2].metadata.name}",
    "{.entries[*].status['phase','n']}",
    "{.entries[5].metadata}",
    "{.entries[0:10]}",
    "{.entries[2:1]}",
    "{.entries[0].status.list[0:2:0]}",
    "{.metadata.name[0]}",
    "{.entries[*].status.phase}",
    "{.entries[*].status.nil}",
    "{..phase}",
    "{.metadata..name}",
    "{.entries[0]..n}",
    "{..nope}",
    "{.}",
    "{.nope}",
    "{.kind.x}",
    "{.entries.x}",
    "{$.kind} {@.kind}",
    "{ .kind }",
    "x{.metadata.name}y",
    "plain text",
    '{"a\\"b"}',
    "{'x'}",
    '{"\\u00e9\\x41"}',
    '{"{"}',
    "{1} {true}",
    "{1.5} {-3} {+4}",
    "{True}",
    "{foo}",
    "{foo-bar}",
    "{1.2.3}",
    '{.entries[?( @.status.phase == "Bound" )].metadata.name}',
    "{.entries[?(@.status.n>=@.status.n)].metadata.name}",
    '{.entries[?(@.status.phase=~"B")]}',
    "{.entries[*]..name}",
    "{end}",
    "{range .entries[*]}{.metadata.name}{end}{end}",
    "{range .entries[*]}{range .status.list[*]}{@}-{end};{end}",
    "{range .entries[*]}{.metadata.name}",
    "{.entries[",
    "{.kind",
    '{.entries[*]["metadata"]}',
    "{.entries[ 0 ]}",
    "{.spec.big} {.spec.f2} {.spec.small} {.spec.e16} {.spec.m6} {.spec.d} {.spec.e} {.spec.neg} {.spec.i}",
    "{.spec.s} {.spec.arr[*]}",
    "{.spec}",
]

UNORDERED = ["{.metadata.*}", "{.spec.*}", "{..name}"]
"""Templates whose order follows Go's map iteration (random): compared as sets of words."""


@pytest.fixture(scope="module")
def doc_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("jsonpath") / "doc.json"
    path.write_text(json.dumps(DOC))
    return path


def kubectl_jsonpath(path: Path, template: str) -> subprocess.CompletedProcess[str]:
    """kubectl's own rendering of ``template`` for the object in ``path`` (no server needed)."""
    kubectl = tools.require("kubectl")
    env = {**os.environ, "HOME": str(path.parent), "KUBECONFIG": str(path.parent / "none")}
    return subprocess.run(
        [kubectl, "label", "--local", "-f", str(path), "zz-", "-o", f"jsonpath={template}"],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
    )


def mine(template: str, data: Any, allow_missing_keys: bool = True) -> tuple[str | None, str]:
    try:
        return JsonPath(template, allow_missing_keys=allow_missing_keys).execute(data), ""
    except JsonPathError as exc:
        return None, str(exc)


@pytest.mark.parametrize("template", TEMPLATES)
def test_same_output_as_kubectl(doc_file: Path, template: str) -> None:
    p = kubectl_jsonpath(doc_file, template)
    out, err = mine(template, DOC)
    if p.returncode == 0:
        assert out == p.stdout, (template, err)
    else:
        assert out is None and err and err in p.stderr, (template, out, p.stderr)


@pytest.mark.parametrize("template", UNORDERED)
def test_same_values_as_kubectl_in_any_order(doc_file: Path, template: str) -> None:
    p = kubectl_jsonpath(doc_file, template)
    out, err = mine(template, DOC)
    assert p.returncode == 0 and out is not None, err
    assert sorted(out.split(" ")) == sorted(p.stdout.split(" "))


@pytest.mark.parametrize(
    ("template", "error"),
    [
        ("{.nope}", "nope is not found"),
        ("{.metadata.nope}", "nope is not found"),
        ("{.entries[*].status.phase}", ""),  # found for some entries: no error
        ("{.entries[?(@.status.phase=='Bound')].metadata.name}", "status is not found"),
    ],
)
def test_missing_keys_fail_unless_allowed(template: str, error: str) -> None:
    assert mine(template, DOC)[0] is not None
    out, err = mine(template, DOC, allow_missing_keys=False)
    assert err == error and (out is None) == bool(error)


def test_list_and_single_object_templates() -> None:
    items = [{"metadata": {"name": n, "labels": {"region": r}}, "status": {"phase": p}} for n, r, p in DOC_ROWS]
    lst = {"apiVersion": "v1", "kind": "List", "items": items}
    assert mine("{.items[*].metadata.name}", lst)[0] == "a b c"
    text = '{range .items[*]}{.metadata.name}{"\\t"}{.status.phase}{"\\n"}{end}'
    assert mine(text, lst)[0] == "a\tBound\nb\tPending\nc\tBound\n"
    assert mine('{.items[?(@.status.phase=="Bound")].metadata.name}', lst)[0] == "a c"
    assert mine("{..name}", lst)[0] == "a b c"
    assert mine("{.metadata.labels.region}", items[1])[0] == "us"


DOC_ROWS = [("a", "eu", "Bound"), ("b", "us", "Pending"), ("c", "eu", "Bound")]


@pytest.mark.parametrize(
    ("value", "text", "json_text", "sprint"),
    [
        (2.0, "2", "2", "2"),
        (1e21, "1e+21", "1e+21", "1e+21"),
        (1e16, "1e+16", "10000000000000000", "1e+16"),
        (1234567.0, "1.234567e+06", "1234567", "1.234567e+06"),
        (123456.5, "123456.5", "123456.5", "123456.5"),
        (0.0001, "0.0001", "0.0001", "0.0001"),
        (1e-7, "1e-07", "1e-7", "1e-07"),
        (-0.0, "-0", "-0", "-0"),
        ({"b": [1, None], "a": "x"}, None, '{"a":"x","b":[1,null]}', "map[a:x b:[1 <nil>]]"),
        ("<&>", None, '"\\u003c\\u0026\\u003e"', "<&>"),
    ],
)
def test_values_print_as_go_prints_them(value: Any, text: str | None, json_text: str, sprint: str) -> None:
    if text is not None:
        assert go_float(value) == text
    assert go_json(value) == json_text
    assert go_sprint(value) == sprint
