"""A small Kubernetes-API-compatible server for tests (aiohttp, loopback, port 0).

kubernetes-asyncio talks to it over a real socket.  It implements what tmcd's adapters use:
discovery (``/api``, ``/apis``, ``/apis/<group>/<version>``), namespaced objects of the kinds it is
given (custom and core): get, list (``resourceVersion``, ``limit``/``continue``), watch
(``?watch=true``: JSON lines, BOOKMARK events with ``allowWatchBookmarks``, an ERROR event carrying a
410 Expired Status for a resourceVersion older than its history), create, update (PUT, 409 on a
stale ``metadata.resourceVersion``), merge patch, JSON patch (add/remove/replace/test; a failed
``test`` answers 422, or 409 when ``test_failure_status`` says so), the ``/status`` subresource
(the main resource ignores status changes, the subresource ignores everything else), DELETE, list
and watch across all namespaces, and Status bodies for 403/404/409/410/415/422 as kube-apiserver
writes them (403 for what a test forbids).  Every request is logged in :attr:`FakeKube.requests`.
Faults on demand: :meth:`FakeKube.stop` and :meth:`FakeKube.start` again (connections refused
meanwhile, the same port after), :meth:`FakeKube.fail` (the next requests answer e.g. 500),
:meth:`FakeKube.drop_watches` (watch connections cut mid-stream).  Cluster-scoped kinds
(``namespaced=False``: Namespaces, CustomResourceDefinitions, which get an ``Established``
condition) can be created, read and deleted, enough for the real-cluster test fixture.

Not implemented: label/field selectors, server-side apply, authentication (any bearer token is
accepted and logged), protobuf, tables.
"""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from tests.kubepatch import PatchTestFailed, json_patch, merge_patch

Obj = dict[str, Any]


@dataclass(frozen=True)
class Kind:
    """A resource type the server serves."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool = True

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version


HTTPROUTE = Kind("gateway.networking.k8s.io", "v1", "httproutes", "HTTPRoute")
TRAFFICSPLIT = Kind("split.smi-spec.io", "v1alpha4", "trafficsplits", "TrafficSplit")
SERVICE = Kind("", "v1", "services", "Service")
CANARYROLLOUT = Kind("tmc.kcp.io", "v1alpha1", "canaryrollouts", "CanaryRollout")
DEPLOYMENT = Kind("apps", "v1", "deployments", "Deployment")
KINDS = (HTTPROUTE, TRAFFICSPLIT, SERVICE, CANARYROLLOUT, DEPLOYMENT)
ANALYSISTEMPLATE = Kind("tmc.kcp.io", "v1alpha1", "analysistemplates", "AnalysisTemplate")
EVENT = Kind("", "v1", "events", "Event")
_VERBS = {"PATCH": "patch", "PUT": "update", "POST": "create", "DELETE": "delete"}
NAMESPACE = Kind("", "v1", "namespaces", "Namespace", namespaced=False)
CRD = Kind("apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition", namespaced=False)


@dataclass
class Fault:
    """Requests that answer an error instead (see :meth:`FakeKube.fail`)."""

    status: int
    method: str
    suffix: str
    times: int | None

    def hits(self, method: str, path: str) -> bool:
        """True (and one fewer left) when the request is one of those."""
        if (self.method and method != self.method) or not path.endswith(self.suffix) or self.times == 0:
            return False
        if self.times is not None:
            self.times -= 1
        return True


@dataclass(frozen=True)
class Request:
    """One request as the server saw it."""

    method: str
    path: str
    query: dict[str, str]
    content_type: str
    body: Any
    authorization: str


class StatusError(Exception):
    def __init__(self, code: int, reason: str, message: str, details: Obj | None = None) -> None:
        super().__init__(message)
        self.code, self.reason, self.message, self.details = code, reason, message, details or {}

    def body(self) -> Obj:
        return {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
            "details": self.details,
            "code": self.code,
        }


@dataclass
class FakeKube:
    """The server's state and handlers; :meth:`start` serves it on 127.0.0.1 (port 0)."""

    kinds: tuple[Kind, ...] = KINDS
    history_limit: int = 100
    """Watch events kept; a watch from before them gets 410 Gone."""
    test_failure_status: int = 422
    conflicts: int = 0
    """The next N JSON patches find their object changed by someone else first (its resourceVersion bumped)."""
    merge_conflicts: int = 0
    """The same for the next N merge patches."""
    before_patch: list[Callable[[Obj], Obj]] = field(default_factory=list)
    """Someone else's writes: each JSON patch first stores the next one's answer to (a copy of) the object."""
    forbidden: set[tuple[str, str]] = field(default_factory=set)
    """(verb, plural) pairs answered 403 Forbidden, e.g. ``("patch", "deployments")``."""
    requests: list[Request] = field(default_factory=list)
    objects: dict[tuple[Kind, str, str], Obj] = field(default_factory=dict)
    rv: int = 100
    history: list[tuple[int, str, Kind, str, Obj]] = field(default_factory=list)
    _watchers: list[tuple[Kind, str, asyncio.Queue[Obj | None]]] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    _runner: web.AppRunner | None = None
    port: int = 0
    """0 until started; a restart binds the same port again."""
    url: str = ""

    # -- lifecycle --------------------------------------------------------------------------------

    async def start(self) -> str:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        self.port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{self.port}"
        return self.url

    async def stop(self) -> None:
        self.end_watches()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- what tests do -------------------------------------------------------------------------------

    def put(self, kind: Kind, obj: Obj) -> Obj:
        """Create or replace an object directly (no request logged); returns it as stored."""
        meta = obj.setdefault("metadata", {})
        meta.setdefault("namespace", "default")
        key = (kind, meta["namespace"], meta["name"])
        return self._store(kind, key, obj, "MODIFIED" if key in self.objects else "ADDED")

    def obj(self, kind: Kind, namespace: str, name: str) -> Obj:
        return self.objects[(kind, namespace, name)]

    def delete(self, kind: Kind, namespace: str, name: str) -> None:
        """Delete an object directly (no request logged); watches see DELETED."""
        self._delete((kind, namespace, name))

    def bookmark(self) -> None:
        """Send a BOOKMARK at the current resourceVersion to every watch that asked for them."""
        for kind, _ns, q in self._watchers:
            q.put_nowait({"type": "BOOKMARK", "object": self._bookmark(kind)})

    def watches(self, kind: Kind) -> int:
        """The open watches of ``kind`` (registered: events and bookmarks reach them)."""
        return sum(1 for k, _, _ in self._watchers if k == kind)

    def end_watches(self) -> None:
        """End every open watch (as a server's timeout does)."""
        for _, _, q in self._watchers:
            q.put_nowait(None)

    def drop_watches(self) -> None:
        """Cut every open watch's connection mid-stream (as a crashed server or a proxy does)."""
        for _, _, q in self._watchers:
            q.put_nowait({"type": "DROP"})

    def fail(self, status: int, *, method: str = "", suffix: str = "", times: int | None = 1) -> None:
        """Answer the next ``times`` requests (None: every one, until :meth:`heal`) with ``method`` whose
        path ends with ``suffix`` with a ``status`` Status body (e.g. 500, 503)."""
        self.faults.append(Fault(status, method, suffix, times))

    def heal(self) -> None:
        """Forget every fault."""
        self.faults.clear()

    def compact(self) -> None:
        """Forget the event history (a watch from any older resourceVersion gets 410)."""
        self.history.clear()

    def of(self, method: str = "", suffix: str = "") -> list[Request]:
        """The logged requests with this method whose path ends with ``suffix``."""
        return [r for r in self.requests if (not method or r.method == method) and r.path.endswith(suffix)]

    # -- storage ---------------------------------------------------------------------------------------

    def _store(self, kind: Kind, key: tuple[Kind, str, str], obj: Obj, event: str) -> Obj:
        self.rv += 1
        obj["apiVersion"], obj["kind"] = kind.api_version, kind.kind
        meta = obj["metadata"]
        meta["resourceVersion"] = str(self.rv)
        meta.setdefault("uid", f"uid-{self.rv}")
        meta.setdefault("generation", 1)
        self.objects[key] = obj
        self.history.append((self.rv, event, kind, key[1], copy.deepcopy(obj)))
        del self.history[: -self.history_limit]
        for k, ns, q in self._watchers:
            if k == kind and ns in (key[1], ""):
                q.put_nowait({"type": event, "object": copy.deepcopy(obj)})
        return obj

    def _delete(self, key: tuple[Kind, str, str]) -> Obj:
        obj = self._get(key)
        self._store(key[0], key, copy.deepcopy(obj), "DELETED")
        return self.objects.pop(key)

    def _bookmark(self, kind: Kind) -> Obj:
        return {"kind": kind.kind, "apiVersion": kind.api_version, "metadata": {"resourceVersion": str(self.rv)}}

    # -- HTTP ---------------------------------------------------------------------------------------

    async def _handle(self, req: web.Request) -> web.StreamResponse:
        raw = await req.read()
        body: Any = None
        if raw:
            try:
                body = json.loads(raw)
            except ValueError:
                body = raw.decode(errors="replace")
        self.requests.append(
            Request(req.method, req.path, dict(req.query), req.content_type, body, req.headers.get("Authorization", ""))
        )
        try:
            fault = next((f for f in self.faults if f.hits(req.method, req.path)), None)
            if fault is not None:
                raise StatusError(fault.status, "InternalError", f"injected fault: HTTP {fault.status}")
            return await self._route(req, body)
        except StatusError as exc:
            return web.json_response(exc.body(), status=exc.code)

    async def _route(self, req: web.Request, body: Any) -> web.StreamResponse:
        parts = [p for p in req.path.split("/") if p]
        if parts == ["api"]:
            return web.json_response({"kind": "APIVersions", "versions": ["v1"]})
        if parts == ["apis"]:
            return web.json_response(self._groups())
        if (parts[:1] == ["api"] and len(parts) == 2) or (parts[:1] == ["apis"] and len(parts) == 3):
            group, version = ("", parts[1]) if parts[0] == "api" else (parts[1], parts[2])
            return web.json_response(self._resources(group, version))
        group, rest = ("", parts[1:]) if parts[:1] == ["api"] else (parts[1] if len(parts) > 1 else "", parts[2:])
        version = rest[0] if rest else ""
        rest = rest[1:]
        scoped = next((k for k in self.kinds if not k.namespaced and rest[:1] == [k.plural]), None)
        if scoped is not None and (len(rest) == 1 or (len(rest) == 2 and req.method != "POST")):
            rest = ["namespaces", "", *rest]  # a cluster-scoped kind: stored in namespace ""
        elif len(rest) == 1 and req.method == "GET":  # a collection across all namespaces
            rest = ["namespaces", "", *rest]
        if len(rest) < 3 or rest[0] != "namespaces":
            raise StatusError(404, "NotFound", "the server could not find the requested resource")
        ns, plural, tail = rest[1], rest[2], rest[3:]
        kind = next((k for k in self.kinds if (k.group, k.version, k.plural) == (group, version, plural)), None)
        if kind is None:
            raise StatusError(404, "NotFound", "the server could not find the requested resource")
        self._authorize(req, kind, ns, tail)
        if not tail:
            if req.method == "GET":
                if req.query.get("watch") in ("true", "1"):
                    return await self._watch(req, kind, ns)
                return web.json_response(self._list(kind, ns, req.query))
            if req.method == "POST":
                return web.json_response(self._create(kind, ns, body), status=201)
        elif len(tail) <= 2 and tail[1:] in ([], ["status"]):
            status = tail[1:] == ["status"]
            key = (kind, ns, tail[0])
            if req.method == "GET":
                return web.json_response(self._get(key))
            if req.method == "PUT":
                return web.json_response(self._update(key, body, status))
            if req.method == "PATCH":
                return web.json_response(self._patch(key, req.content_type, body, status))
            if req.method == "DELETE" and not status:
                return web.json_response(self._delete(key))
        raise StatusError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")

    def _groups(self) -> Obj:
        groups: dict[str, list[str]] = {}
        for k in self.kinds:
            if k.group:
                groups.setdefault(k.group, []).append(k.version)
        return {
            "kind": "APIGroupList",
            "apiVersion": "v1",
            "groups": [
                {
                    "name": g,
                    "versions": [{"groupVersion": f"{g}/{v}", "version": v} for v in vs],
                    "preferredVersion": {"groupVersion": f"{g}/{vs[0]}", "version": vs[0]},
                }
                for g, vs in groups.items()
            ],
        }

    def _resources(self, group: str, version: str) -> Obj:
        kinds = [k for k in self.kinds if (k.group, k.version) == (group, version)]
        if not kinds:
            raise StatusError(404, "NotFound", "the server could not find the requested resource")
        verbs = ["get", "list", "watch", "create", "update", "patch", "delete"]
        resources = []
        for k in kinds:
            resources.append({"name": k.plural, "namespaced": True, "kind": k.kind, "verbs": verbs})
            resources.append({"name": f"{k.plural}/status", "namespaced": True, "kind": k.kind, "verbs": verbs[3:6]})
        gv = f"{group}/{version}" if group else version
        return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}

    def _authorize(self, req: web.Request, kind: Kind, ns: str, tail: list[str]) -> None:
        """403 Forbidden, worded as kube-apiserver's RBAC refusal, for a verb the test forbids."""
        verb = "list" if req.method == "GET" and not tail else _VERBS.get(req.method, "get")
        if (verb, kind.plural) in self.forbidden:
            user = req.headers.get("Authorization", "").removeprefix("Bearer ")
            qual, name = (f"{kind.plural}.{kind.group}" if kind.group else kind.plural), tail[0] if tail else ""
            msg = f'{qual} "{name}" is forbidden: User "{user}" cannot {verb} resource "{kind.plural}" in API group '
            details = {"name": name, "group": kind.group, "kind": kind.plural}
            raise StatusError(403, "Forbidden", msg + f'"{kind.group}" in the namespace "{ns}"', details)

    def _not_found(self, key: tuple[Kind, str, str]) -> StatusError:
        kind, _, name = key
        qual = f"{kind.plural}.{kind.group}" if kind.group else kind.plural
        details = {"name": name, "group": kind.group, "kind": kind.plural}
        return StatusError(404, "NotFound", f'{qual} "{name}" not found', details)

    def _conflict(self, key: tuple[Kind, str, str]) -> StatusError:
        kind, _, name = key
        qual = f"{kind.plural}.{kind.group}" if kind.group else kind.plural
        return StatusError(
            409,
            "Conflict",
            f'Operation cannot be fulfilled on {qual} "{name}": the object has been modified; '
            "please apply your changes to the latest version and try again",
            {"name": name, "group": kind.group, "kind": kind.plural},
        )

    def _get(self, key: tuple[Kind, str, str]) -> Obj:
        obj = self.objects.get(key)
        if obj is None:
            raise self._not_found(key)
        return obj

    def _list(self, kind: Kind, ns: str, query: Any) -> Obj:
        objs = sorted(self.objects.items(), key=lambda kv: kv[0][1:])
        items = [o for (k, n, _), o in objs if k == kind and ns in (n, "")]
        start = int(query.get("continue") or 0)
        limit = int(query.get("limit") or 0)
        page = items[start : start + limit] if limit else items[start:]
        more = bool(limit) and start + limit < len(items)
        meta = {"resourceVersion": str(self.rv), **({"continue": str(start + limit)} if more else {})}
        return {"kind": f"{kind.kind}List", "apiVersion": kind.api_version, "metadata": meta, "items": page}

    def _create(self, kind: Kind, ns: str, body: Any) -> Obj:
        obj = copy.deepcopy(body)
        meta = obj.setdefault("metadata", {})
        if kind.namespaced:
            meta["namespace"] = ns
        if kind == CRD:  # established at once
            obj["status"] = {"conditions": [{"type": "Established", "status": "True"}]}
        key = (kind, ns, meta.get("name", ""))
        if key in self.objects:
            qual = f"{kind.plural}.{kind.group}" if kind.group else kind.plural
            raise StatusError(409, "AlreadyExists", f'{qual} "{key[2]}" already exists')
        meta.pop("resourceVersion", None)
        return self._store(kind, key, obj, "ADDED")

    def _write(self, key: tuple[Kind, str, str], new: Obj, status: bool) -> Obj:
        """Store ``new`` as the object, keeping what the endpoint may not change (spec or status)."""
        old = self._get(key)
        if (
            new.get("metadata", {}).get("resourceVersion", old["metadata"]["resourceVersion"])
            != old["metadata"]["resourceVersion"]
        ):
            raise self._conflict(key)
        out = copy.deepcopy(old)
        if status:
            out["status"] = new.get("status", {})
        else:
            out = {k: v for k, v in new.items() if k != "status"}
            if "status" in old:
                out["status"] = old["status"]
            out["metadata"] = {**new.get("metadata", {}), "name": key[2], "namespace": key[1]}
            out["metadata"]["uid"] = old["metadata"]["uid"]
            if out.get("spec") != old.get("spec"):
                out["metadata"]["generation"] = old["metadata"].get("generation", 1) + 1
            else:
                out["metadata"]["generation"] = old["metadata"].get("generation", 1)
        return self._store(key[0], key, out, "MODIFIED")

    def _update(self, key: tuple[Kind, str, str], body: Any, status: bool) -> Obj:
        if not isinstance(body, dict):
            raise StatusError(400, "BadRequest", "the body is not an object")
        return self._write(key, body, status)

    def _patch(self, key: tuple[Kind, str, str], content_type: str, body: Any, status: bool) -> Obj:
        old = self._get(key)
        if content_type == "application/merge-patch+json":
            if not isinstance(body, dict):
                raise StatusError(400, "BadRequest", "a merge patch is an object")
            if self.merge_conflicts > 0:  # someone else writes first
                self.merge_conflicts -= 1
                old = self._store(key[0], key, copy.deepcopy(old), "MODIFIED")
            new = merge_patch(copy.deepcopy(old), body)
        elif content_type == "application/json-patch+json":
            if self.conflicts > 0:  # someone else writes first
                self.conflicts -= 1
                old = self._store(key[0], key, copy.deepcopy(old), "MODIFIED")
            if self.before_patch:  # someone else changes the object first
                old = self._store(key[0], key, self.before_patch.pop(0)(copy.deepcopy(old)), "MODIFIED")
            if not isinstance(body, list):
                raise StatusError(400, "BadRequest", "a JSON patch is a list of operations")
            try:
                new = json_patch(copy.deepcopy(old), body)
            except PatchTestFailed as exc:
                if self.test_failure_status == 409:
                    raise self._conflict(key) from exc
                raise StatusError(422, "Invalid", f"the server rejected our request due to an error: {exc}") from exc
            except (KeyError, IndexError, ValueError, TypeError) as exc:
                raise StatusError(422, "Invalid", f"the server rejected our request due to an error: {exc!r}") from exc
        else:
            raise StatusError(
                415, "UnsupportedMediaType", f"the body of the request was in an unknown format: {content_type}"
            )
        if not isinstance(new, dict):
            raise StatusError(422, "Invalid", "the patched object is not an object")
        new.setdefault("metadata", {}).setdefault("resourceVersion", old["metadata"]["resourceVersion"])
        return self._write(key, new, status)

    async def _watch(self, req: web.Request, kind: Kind, ns: str) -> web.StreamResponse:
        since = int(req.query.get("resourceVersion") or self.rv)
        bookmarks = req.query.get("allowWatchBookmarks") == "true"
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        await resp.prepare(req)
        oldest = self.history[0][0] if self.history else self.rv + 1
        if since < self.rv and since < oldest - 1:
            gone = StatusError(410, "Expired", f"too old resource version: {since} ({oldest - 1})")
            await resp.write(json.dumps({"type": "ERROR", "object": gone.body()}).encode() + b"\n")
            return resp
        q: asyncio.Queue[Obj | None] = asyncio.Queue()
        for rv, event, k, n, obj in self.history:
            if rv > since and k == kind and ns in (n, ""):
                q.put_nowait({"type": event, "object": obj})
        entry = (kind, ns, q)
        self._watchers.append(entry)
        try:
            while (ev := await q.get()) is not None:
                if ev["type"] == "DROP":
                    if req.transport is not None:
                        req.transport.abort()  # no terminating chunk: the client sees a broken stream
                    break
                if ev["type"] == "BOOKMARK" and not bookmarks:
                    continue
                await resp.write(json.dumps(ev).encode() + b"\n")
        finally:
            self._watchers.remove(entry)
        return resp


def write_kubeconfig(path: Path, servers: dict[str, str], current: str = "") -> Path:
    """A kubeconfig with one context (and cluster and user) per ``name -> server URL``."""
    names = list(servers)
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": n, "cluster": {"server": u}} for n, u in servers.items()],
        "users": [{"name": n, "user": {"token": f"token-{n}"}} for n in names],
        "contexts": [{"name": n, "context": {"cluster": n, "user": n, "namespace": "default"}} for n in names],
        "current-context": current or names[0],
    }
    path.write_text(json.dumps(doc))  # JSON is YAML
    return path


async def serve(count: int = 1, **kw: Any) -> AsyncIterator[list[FakeKube]]:
    """Start ``count`` servers; stop them after."""
    servers = [FakeKube(**kw) for _ in range(count)]
    try:
        for s in servers:
            await s.start()
        yield servers
    finally:
        for s in servers:
            await s.stop()
