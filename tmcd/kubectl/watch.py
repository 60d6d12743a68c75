"""``get -w``: follow a kind's KV bucket and print a row per change, as ``kubectl get -w`` does."""

from __future__ import annotations

import json
from collections.abc import Iterator

from tmcd.kubectl import columns
from tmcd.kubectl.client import Client
from tmcd.kubectl.errors import CliError
from tmcd.kubectl.kinds import BUCKETS, CliKind
from tmcd.kubectl.output import render


def watch_rows(
    client: Client, kind: CliKind, names: set[str], namespace: str, output: str, events: bool, all_namespaces: bool
) -> Iterator[str]:
    """Rows (no header) for every change, forever; over NATS only."""
    if client.endpoint.transport != "nats":
        raise CliError("--watch needs NATS: set --nats-url")
    bucket = BUCKETS[kind.kind]
    conn = client.nats()
    sid = conn.subscribe(f"$KV.{bucket}.>")
    prefix = f"$KV.{bucket}."
    cols, wide = columns.BY_KIND.get(kind.kind, columns.DEFAULT)
    seen: set[str] = set()
    while True:
        subject, headers, data = conn.next_message(sid)
        key = subject[len(prefix) :]
        ns, _, name = key.rpartition(".") if kind.namespaced else ("", "", key)
        if (namespace and ns != namespace) or (names and name not in names):
            continue
        deleted = headers.get("KV-Operation") in ("DEL", "PURGE") or not data
        if deleted:
            obj = {"apiVersion": kind.api_version, "kind": kind.kind, "metadata": {"name": name, "namespace": ns}}
            event = "DELETED"
            seen.discard(key)
        else:
            obj = json.loads(data)
            event = "MODIFIED" if key in seen else "ADDED"
            seen.add(key)
        text = render(kind, [obj], output, cols, wide, single=True, with_namespace=all_namespaces and kind.namespaced)
        lines = text.rstrip("\n").splitlines()
        if output in ("table", "wide"):
            lines = lines[1:]  # the header was printed with the listing
        for line in lines:
            yield f"{event:<9}{line}" if events else line
