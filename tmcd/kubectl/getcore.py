"""``get`` without click: shared by the click command and main's fast path."""

from __future__ import annotations

from tmcd.kubectl import columns
from tmcd.kubectl.client import Client, Endpoint
from tmcd.kubectl.errors import UsageError
from tmcd.kubectl.kinds import CliKind
from tmcd.kubectl.output import FORMATS, TEMPLATE_FORMATS, is_template, newline_after, parse_time, render, rfc3339

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


class GetResult:
    """What ``get`` prints: ``out`` on stdout, ``note`` (e.g. "No resources found") on stderr."""

    def __init__(self, out: str, note: str = "", newline: bool = True, resource_version: str = "") -> None:
        self.out = out
        self.note = note
        self.newline = newline
        """Whether a newline follows ``out`` (jsonpath prints exactly its template)."""
        self.resource_version = resource_version
        """What was printed is as of this resourceVersion (``get -w`` watches from it, without a gap)."""


def check_format(output: str, allow_missing_keys: bool = True) -> str:
    """``-o`` value, or a usage error (a template that does not parse is one too)."""
    if is_template(output):
        from tmcd.kubectl.templates import TemplatePrinter, split_format

        name, arg = split_format(output) or (output, "")
        TemplatePrinter(name, arg, allow_missing_keys=allow_missing_keys)
        return output
    if output not in FORMATS:
        raise UsageError(
            f"unable to match a printer suitable for the output format {output!r}, allowed formats are: "
            + ",".join(sorted((*FORMATS, *TEMPLATE_FORMATS)))
        )
    return output


def fresh_heartbeats(client: Client, items: list[dict[str, Any]], pending: str | None = None) -> list[dict[str, Any]]:
    """SyncTargets with ``status.lastSyncerHeartbeatTime`` from the health agent's latest received
    heartbeat where that is newer: the stored status is written only every ~30 s.  Unchanged
    when the health agent does not answer.  ``pending``: :meth:`Client.ask_heartbeats`' result."""
    beats = client.heartbeats(pending) if items else {}  # no rows: the reply is not waited for
    if not beats:
        return items
    out = []
    for obj in items:
        st = obj.get("status")
        status: dict[str, Any] = st if isinstance(st, dict) else {}
        beat = beats.get(str((obj.get("metadata") or {}).get("name") or ""))
        stored = parse_time(str(status.get("lastSyncerHeartbeatTime") or ""))
        if beat is not None and (stored is None or beat > stored):
            obj = {**obj, "status": {**status, "lastSyncerHeartbeatTime": rfc3339(beat)}}
        out.append(obj)
    return out


def get(
    client: Client,
    kind: CliKind,
    names: list[str],
    *,
    namespace: str,
    all_namespaces: bool,
    selector: str = "",
    output: str = "table",
    allow_missing_keys: bool = True,
) -> GetResult:
    """List (no names) or read objects of one kind and render them."""
    check_format(output, allow_missing_keys)
    if all_namespaces and kind.namespaced and names:
        raise UsageError("a resource cannot be retrieved by name across all namespaces")
    ns = "" if (all_namespaces or not kind.namespaced) else namespace
    heartbeats = kind.kind == "SyncTarget" and output in ("table", "wide")
    pending = client.ask_heartbeats() if heartbeats else None  # answered while the list is served
    items: list[dict[str, Any]]
    rv = ""
    if names:
        items = [client.call("get", kind, namespace=ns, name=n) for n in names]
    else:
        items = []
        cont = ""
        while True:
            page = client.call("list", kind, namespace=ns, labelSelector=selector, limit=500, **{"continue": cont})
            if not cont:  # later pages continue the first one's snapshot
                rv = str((page.get("metadata") or {}).get("resourceVersion") or "")
            items.extend(page.get("items") or [])
            cont = str((page.get("metadata") or {}).get("continue") or "")
            if not cont:
                break
    if heartbeats:
        items = fresh_heartbeats(client, items, pending)
    cols, wide = columns.BY_KIND.get(kind.kind, columns.DEFAULT)
    with_ns = all_namespaces and kind.namespaced
    out = render(
        kind,
        items,
        output,
        cols,
        wide,
        single=len(names) == 1,
        with_namespace=with_ns,
        allow_missing_keys=allow_missing_keys,
    )
    note = ""
    if not items and output in ("table", "wide"):
        out = ""
        note = f"No resources found in {ns} namespace." if ns else "No resources found"
    return GetResult(out, note, newline_after(output), rv)


def parse_fast(argv: list[str]) -> dict[str, Any] | None:
    """The simple forms of ``get`` (kind, names, -o, -l, -n, -A, --nats-url, --server, --token),
    or None to let click parse (help, watch, kubeconfig, anything unusual)."""
    from tmcd.kubectl.kinds import resolve

    args: dict[str, Any] = {"names": [], "output": "table", "selector": "", "namespace": "", "all": False}
    conn: dict[str, str] = {}
    kind: CliKind | None = None
    i = 0
    valued = {
        "-o": "output",
        "--output": "output",
        "-l": "selector",
        "--selector": "selector",
        "-n": "namespace",
        "--namespace": "namespace",
        "--nats-url": "nats_url",
        "--server": "server",
        "--token": "token",
    }
    while i < len(argv):
        a = argv[i]
        if a in ("-A", "--all-namespaces"):
            args["all"] = True
        elif a in valued or (a.startswith("--") and "=" in a and a.split("=", 1)[0] in valued):
            key, sep, value = a.partition("=")
            if not sep:
                i += 1
                if i >= len(argv):
                    return None
                value = argv[i]
            dest = valued[key]
            (conn if dest in ("nats_url", "server", "token") else args)[dest] = value
        elif a.startswith("-"):
            return None
        elif kind is None:
            kind = resolve(a)
            if kind is None:
                return None
        else:
            args["names"].append(a)
        i += 1
    if kind is None or args["output"] not in FORMATS:
        return None
    args["kind"] = kind
    args["conn"] = conn
    return args


def run_fast(parsed: dict[str, Any], env: dict[str, str]) -> GetResult:
    """Run a :func:`parse_fast` result."""
    from tmcd.kubectl.client import Settings, resolve

    conn = parsed["conn"]
    s = Settings(nats_url=conn.get("nats_url", ""), server=conn.get("server", ""), token=conn.get("token", ""), env=env)
    ep: Endpoint = resolve(s)
    c = Client(ep)
    try:
        kind: CliKind = parsed["kind"]
        ns = parsed["namespace"] or ep.namespace or "default"
        return get(
            c,
            kind,
            parsed["names"],
            namespace=ns,
            all_namespaces=parsed["all"],
            selector=parsed["selector"],
            output=parsed["output"],
        )
    finally:
        c.close()
