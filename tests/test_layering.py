"""The layering docs/architecture.md states, checked on the source (no imports are executed).

The import graph is read from every module's ``import`` statements, including those inside
functions (lazy imports still couple modules) and excluding ``if TYPE_CHECKING:`` blocks
(annotations only).
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "tmcd"

ALLOWED: dict[str, set[str]] = {
    # foundations: wire types and settings
    "contracts": set(),
    "resources": {"contracts"},
    "config": set(),
    # plumbing
    "bus": {"config", "contracts"},
    "telemetry": {"bus", "config"},
    "kube": {"config", "contracts", "resources", "bus", "runtime", "api", "canary", "metrics"},
    # capabilities: a pure model and an agent each
    "metrics": {"bus", "config", "contracts", "resources", "runtime", "telemetry"},
    "health": {"bus", "config", "contracts", "resources", "runtime", "telemetry", "metrics"},
    "placement": {"bus", "config", "contracts", "resources", "runtime", "telemetry", "metrics"},
    "canary": {"bus", "config", "contracts", "resources", "runtime", "telemetry", "metrics", "placement"},
    "rollback": {"bus", "config", "contracts", "resources", "runtime", "telemetry", "metrics", "canary"},
    # serving and running
    "api": {"bus", "config", "contracts", "resources", "runtime", "metrics", "placement"},
    "runtime": {"bus", "config", "contracts", "resources", "telemetry", "api", "metrics", "kube"}
    | {"health", "placement", "canary", "rollback"},
    "sim": {"bus", "config", "contracts", "resources", "runtime"},
    "tui": {"bus", "config", "contracts", "resources"},
    "cli": {"*"},
    "kubectl": {"tui"},  # and `from tmcd import __version__`; tui only from the lazily loaded dashboard command
}
"""tmcd package -> the tmcd packages its modules may import."""

CAPABILITIES = ("metrics", "health", "placement", "canary", "rollback")
ONLY_IMPORTER = {"nats": "bus", "nkeys": "bus", "kubernetes_asyncio": "kube", "textual": "tui"}
"""Third-party package -> the one tmcd package allowed to import it."""

IO_MODULES = (
    "asyncio",
    "aiohttp",
    "socket",
    "ssl",
    "subprocess",
    "threading",
    "selectors",
    "http",
    "urllib",
    "nats",
    "nkeys",
    "kubernetes_asyncio",
    "tmcd.bus",
    "tmcd.api",
    "tmcd.runtime",
    "tmcd.kube",
)
"""What a pure model must not import."""

CLOCK_CALLS = {("time", "time"), ("time", "monotonic"), ("time", "perf_counter"), ("datetime", "now")}
"""Calls a pure model must not make: time comes in as an argument."""

MAX_LINES = 500


@dataclass
class Module:
    """One module of tmcd and what it imports."""

    name: str
    path: Path
    package: str
    imports: set[str] = field(default_factory=set)
    """Every imported module name (tmcd and third-party), as written."""
    clock_calls: set[tuple[str, str]] = field(default_factory=set)


def _type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _nodes(tree: ast.AST) -> Iterator[ast.AST]:
    """Every node, skipping ``if TYPE_CHECKING:`` bodies."""
    for child in ast.iter_child_nodes(tree):
        if isinstance(child, ast.If) and _type_checking(child):
            yield from (n for stmt in child.orelse for n in [stmt, *_nodes(stmt)])
            continue
        yield child
        yield from _nodes(child)


@cache
def modules() -> dict[str, Module]:
    """Every module under tmcd/ with its imports."""
    out: dict[str, Module] = {}
    for path in sorted(PKG.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        is_pkg = parts[-1] == "__init__"
        if is_pkg:
            parts.pop()
        name = ".".join(parts)
        mod = Module(name, path, parts[1] if len(parts) > 1 else "")
        for node in _nodes(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                mod.imports.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = parts if is_pkg else parts[:-1]
                    base = base[: len(base) - (node.level - 1)]
                    target = ".".join([*base, *([node.module] if node.module else [])])
                else:
                    target = node.module or ""
                mod.imports.add(target)
                mod.imports.update(f"{target}.{a.name}" for a in node.names)
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                owner = node.func.value
                if isinstance(owner, ast.Name):
                    mod.clock_calls.add((owner.id, node.func.attr))
                elif isinstance(owner, ast.Attribute):
                    mod.clock_calls.add((owner.attr, node.func.attr))
        out[name] = mod
    return out


def _resolve(name: str) -> str | None:
    """The tmcd module an import of ``name`` loads (``tmcd.bus.Bus`` -> ``tmcd.bus``)."""
    mods = modules()
    while name and name not in mods:
        name = name.rpartition(".")[0]
    return name or None


def tmcd_edges() -> dict[str, set[str]]:
    """Module -> the tmcd modules it imports."""
    edges: dict[str, set[str]] = defaultdict(set)
    for mod in modules().values():
        for imp in mod.imports:
            if imp == "tmcd" or imp.startswith("tmcd."):
                target = _resolve(imp)
                if target and target != mod.name:
                    edges[mod.name].add(target)
    return edges


def _sccs(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, 10_000))
    try:
        for v in sorted({*edges, *(w for ws in edges.values() for w in ws)}):
            if v not in index:
                visit(v)
    finally:
        sys.setrecursionlimit(limit)
    return found


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


CANARY_IO = {"agent", "reversal", "traffic", "prometheus", "metrics", "imageplane", "observe"}


def _is_pure(mod: Module) -> bool:
    """Pure models: every ``model.py``, the wire types, and the modules named here."""
    return (
        mod.path.name == "model.py"
        or mod.package in ("contracts", "resources")
        or mod.name
        in {
            "tmcd.health.aggregate",
            "tmcd.kube.mirror",
            "tmcd.health.conditions",
            "tmcd.health.window",
            "tmcd.metrics.catalog",
            "tmcd.metrics.catalog_kube",
            "tmcd.metrics.spec",
            "tmcd.metrics.labels",
            "tmcd.metrics.workload",
            "tmcd.sim.fleet",
            "tmcd.sim.draws",
            "tmcd.sim.mesh",
            "tmcd.runtime.probes",
            "tmcd.rollback.revisions",
            "tmcd.rollback.control",
            "tmcd.tui.models",
            "tmcd.tui.eventlog",
            "tmcd.tui.canaries",
            "tmcd.tui.kinds",
            "tmcd.tui.state",
        }
        # the canary: statistics, pooled data, judges, verdicts, the state machine and its helpers;
        # the agent, the data plane, the router, the prometheus provider and the series do I/O
        or (mod.package == "canary" and mod.path.stem not in CANARY_IO)
    )


# --- the rules ------------------------------------------------------------------------------------------------


def test_no_import_cycle_crosses_a_package() -> None:
    crossing = [c for c in _sccs(tmcd_edges()) if len({_package(m) for m in c}) > 1]
    assert crossing == [], f"import cycles between packages: {crossing}"


def test_packages_import_only_what_their_layer_allows() -> None:
    wrong = []
    for mod in modules().values():
        allowed = ALLOWED.get(mod.package)
        if not mod.package or allowed is None or "*" in allowed:
            continue
        for target in tmcd_edges().get(mod.name, ()):
            pkg = _package(target)
            if pkg and pkg != mod.package and pkg not in allowed:
                wrong.append(f"{mod.name} imports {target}")
    assert wrong == [], "imports across layers that docs/architecture.md does not allow:\n" + "\n".join(wrong)


def test_every_package_has_a_layer() -> None:
    packages = {p.name for p in PKG.iterdir() if (p / "__init__.py").is_file()}
    assert packages <= set(ALLOWED), f"add {sorted(packages - set(ALLOWED))} to ALLOWED and docs/architecture.md"


@pytest.mark.parametrize("third_party", sorted(ONLY_IMPORTER))
def test_one_package_imports_each_io_library(third_party: str) -> None:
    owner = ONLY_IMPORTER[third_party]
    wrong = sorted(
        mod.name
        for mod in modules().values()
        if mod.package != owner and any(i == third_party or i.startswith(third_party + ".") for i in mod.imports)
    )
    assert wrong == [], f"only tmcd/{owner}/ may import {third_party}: {wrong}"


KUBECTL_DASHBOARD = "tmcd.kubectl.dashboard"
"""The one kubectl module that may import tmcd.tui (lazily, when ``kubectl tmc dashboard`` runs)."""


def test_kubectl_imports_nothing_of_tmcd_but_the_version() -> None:
    wrong = []
    for mod in modules().values():
        if mod.package != "kubectl":
            continue
        for imp in mod.imports:
            if imp in ("tmcd", "tmcd.__version__") or imp.startswith("tmcd.kubectl"):
                continue
            if mod.name == KUBECTL_DASHBOARD and (imp == "tmcd.tui" or imp.startswith("tmcd.tui.")):
                continue  # the dashboard command, loaded only when it runs, starts the TUI
            if imp.startswith("tmcd."):
                wrong.append(f"{mod.name} imports {imp}")
    assert wrong == [], wrong
    assert not modules()["tmcd"].imports - {"__future__"}, "tmcd/__init__.py must stay import-free (kubectl loads it)"


def test_models_import_no_io_and_read_no_clock() -> None:
    wrong = []
    for mod in modules().values():
        if not _is_pure(mod):
            continue
        for imp in sorted(mod.imports):
            if any(imp == io or imp.startswith(io + ".") for io in IO_MODULES):
                wrong.append(f"{mod.name} imports {imp}")
        for owner, attr in sorted(mod.clock_calls & CLOCK_CALLS):
            wrong.append(f"{mod.name} calls {owner}.{attr}() (take the time as an argument)")
    assert wrong == [], wrong


def test_agents_never_import_each_other() -> None:
    agents = {f"tmcd.{c}.agent" for c in CAPABILITIES} & set(modules())
    wrong = [
        f"{src} imports {dst}"
        for src, targets in tmcd_edges().items()
        for dst in targets
        if dst in agents and src != "tmcd.runtime.registry" and _package(src) != _package(dst)
    ]
    assert wrong == [], f"agents talk over NATS and KV only: {wrong}"


def test_each_capability_has_a_model_and_an_agent() -> None:
    for cap in CAPABILITIES:
        if not (PKG / cap).is_dir():
            continue  # canary and rollback arrive with their issues
        assert (PKG / cap / "model.py").is_file(), f"tmcd/{cap}/model.py"
        assert (PKG / cap / "agent.py").is_file(), f"tmcd/{cap}/agent.py"


def test_no_module_over_500_lines() -> None:
    long = {
        str(p.relative_to(ROOT)): n
        for p in sorted(PKG.rglob("*"))
        if p.suffix in (".py", ".c", ".h") and (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}, f"split these modules (at most {MAX_LINES} lines): {long}"


def test_the_checker_sees_imports() -> None:
    """Guard against a checker that passes because it reads nothing."""
    mods = modules()
    assert "tmcd.bus.core" in mods and any(i.startswith("nats") for i in mods["tmcd.bus.core"].imports)
    assert "tmcd.runtime.agent" in tmcd_edges()["tmcd.metrics.agent"]
    assert _sccs({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]
