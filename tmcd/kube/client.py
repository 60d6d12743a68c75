"""Typed access to Kubernetes API servers through kubernetes-asyncio.

kubernetes-asyncio's generated clients are partly typed and decode into models; tmcd works on
plain JSON objects of any kind (HTTPRoute, TrafficSplit, its own CRs), so every request goes
through ``ApiClient.call_api`` with the body unread (``_preload_content=False``) and is decoded
here.  :class:`Kube` is one cluster (one kubeconfig context, or the in-cluster service account);
:class:`Clients` keeps one per context, bounded, and closes them on shutdown.  Errors come out as
:class:`KubeError` subclasses named for what the caller does about them: :class:`NotFound`,
:class:`Conflict` (re-read and retry), :class:`Gone` (relist), :class:`Unreachable`.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import aiohttp
from kubernetes_asyncio import client as k8s
from kubernetes_asyncio import config as k8s_config

from tmcd.config import KubeConfig

__all__ = [
    "Clients",
    "Conflict",
    "Dropped",
    "Gone",
    "Invalid",
    "Kube",
    "KubeError",
    "NotFound",
    "ObjectList",
    "Resource",
    "Unreachable",
    "WatchEvent",
    "connect",
]

log = logging.getLogger("tmcd.kube")

Obj = dict[str, Any]
"""A Kubernetes object as JSON."""

MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"
REQUEST_TIMEOUT = 10.0
"""Seconds a request (not a watch) may take, connecting included."""
MAX_CLIENTS = 64
"""Contexts whose client :class:`Clients` keeps open (least recently used beyond it are closed)."""


class KubeError(Exception):
    """An API server answered with an error Status, or could not be reached (``status`` 0)."""

    def __init__(self, message: str, status: int = 0, reason: str = "") -> None:
        super().__init__(message)
        self.status, self.reason = status, reason


class NotFound(KubeError):
    """404: the object (or its kind) does not exist."""


class Conflict(KubeError):
    """409: the object changed since it was read (a stale resourceVersion)."""


class Invalid(KubeError):
    """422: the request was refused as invalid (a failed JSON patch ``test`` op among them)."""


class Gone(KubeError):
    """410: the resourceVersion is older than the server keeps; list again."""


class Unreachable(KubeError):
    """No answer: no such context, a connection refused, a timeout."""


class Dropped(Unreachable):
    """A watch's connection broke after the server had started streaming (resume it)."""


_BY_STATUS: dict[int, type[KubeError]] = {404: NotFound, 409: Conflict, 410: Gone, 422: Invalid}


@dataclass(frozen=True)
class Resource:
    """A resource type: its API group (empty for core), version and plural name; ``namespaced``
    False for cluster-scoped kinds (Namespaces, CustomResourceDefinitions), whose ``namespace`` is ''."""

    group: str
    version: str
    plural: str
    namespaced: bool = True

    def path(self, namespace: str, name: str = "", subresource: str = "") -> str:
        """The namespaced URL path of the collection, an object, or its subresource; an empty
        ``namespace`` (no name): the collection across all namespaces (to list and watch)."""
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        scoped = self.namespaced and (namespace or name)
        out = f"{base}/namespaces/{namespace}/{self.plural}" if scoped else f"{base}/{self.plural}"
        if name:
            out += f"/{name}"
            if subresource:
                out += f"/{subresource}"
        return out

    def __str__(self) -> str:
        return f"{self.plural}.{self.group}" if self.group else self.plural


@dataclass(frozen=True)
class ObjectList:
    """One page of a list: the objects, the list's resourceVersion (to watch from), the continue token."""

    items: list[Obj]
    resource_version: str
    continue_token: str = ""


@dataclass(frozen=True)
class WatchEvent:
    """One watch event: ADDED, MODIFIED, DELETED or BOOKMARK (the object has only its resourceVersion)."""

    type: str
    object: Obj

    @property
    def resource_version(self) -> str:
        """The object's (or the bookmark's) resourceVersion."""
        return str(self.object.get("metadata", {}).get("resourceVersion", ""))


def _error(status: int, body: bytes | str, what: str) -> KubeError:
    """The exception for an error answer, with the Status message when the body is one."""
    message, reason = "", ""
    try:
        st = json.loads(body)
        if isinstance(st, dict):
            message, reason = str(st.get("message", "")), str(st.get("reason", ""))
    except ValueError:
        message = body[:200].decode(errors="replace") if isinstance(body, bytes) else body[:200]
    cls = _BY_STATUS.get(status, KubeError)
    return cls(f"{what}: {message or reason or f'HTTP {status}'}", status, reason)


@dataclass
class Kube:
    """One API server, through one kubernetes-asyncio ApiClient."""

    api: Any
    """The kubernetes_asyncio ApiClient (untyped upstream)."""
    context: str
    """The kubeconfig context (empty: the in-cluster service account or the current context)."""
    timeout: float = REQUEST_TIMEOUT

    @property
    def where(self) -> str:
        """The context in words, for messages."""
        return f"context {self.context}" if self.context else "the default context"

    async def _call(
        self,
        method: str,
        path: str,
        *,
        query: Sequence[tuple[str, str]] = (),
        body: object = None,
        content_type: str = "",
        timeout: float | aiohttp.ClientTimeout | None = None,
    ) -> aiohttp.ClientResponse:
        headers = {"Accept": "application/json"}
        if content_type:
            headers["Content-Type"] = content_type
        try:
            resp = await self.api.call_api(
                path,
                method,
                query_params=list(query),
                header_params=headers,
                body=body,
                auth_settings=["BearerToken"],
                _preload_content=False,
                _request_timeout=timeout or self.timeout,
            )
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise Unreachable(f"{method} {path} ({self.where}): {exc or type(exc).__name__}") from exc
        return cast(aiohttp.ClientResponse, resp)

    async def _json(self, method: str, path: str, what: str, **kw: Any) -> Obj:
        resp = await self._call(method, path, **kw)
        try:
            data = await resp.read()
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise Unreachable(f"{what} ({self.where}): {exc or type(exc).__name__}") from exc
        finally:
            resp.release()
        if not 200 <= resp.status < 300:
            raise _error(resp.status, data, what)
        out = json.loads(data)
        if not isinstance(out, dict):
            raise KubeError(f"{what}: the answer is not an object", resp.status)
        return out

    async def get(self, res: Resource, namespace: str, name: str) -> Obj:
        """The object; raises NotFound."""
        return await self._json("GET", res.path(namespace, name), f"get {res} {namespace}/{name}")

    async def create(self, res: Resource, namespace: str, obj: Obj) -> Obj:
        """Create ``obj``; raises Conflict when it exists."""
        name = obj.get("metadata", {}).get("name", "")
        return await self._json("POST", res.path(namespace), f"create {res} {namespace}/{name}", body=obj)

    async def delete(self, res: Resource, namespace: str, name: str) -> Obj:
        """Delete the object (the answer: the object or a Status); raises NotFound."""
        return await self._json("DELETE", res.path(namespace, name), f"delete {res} {namespace}/{name}")

    async def merge_patch(self, res: Resource, namespace: str, name: str, patch: Obj, *, status: bool = False) -> Obj:
        """RFC 7386 merge patch of the object (or of its status subresource); a ``metadata.resourceVersion``
        in the patch makes it conditional (Conflict when stale)."""
        sub = "status" if status else ""
        what = f"patch {res} {namespace}/{name}{'/status' if status else ''}"
        return await self._json("PATCH", res.path(namespace, name, sub), what, body=patch, content_type=MERGE_PATCH)

    async def json_patch(
        self, res: Resource, namespace: str, name: str, ops: Sequence[Obj], *, status: bool = False
    ) -> Obj:
        """RFC 6902 JSON patch of the object (or of its status subresource); a failed ``test`` op
        raises Invalid (422) or Conflict (409), as API servers differ."""
        sub = "status" if status else ""
        what = f"patch {res} {namespace}/{name}{'/status' if status else ''}"
        return await self._json("PATCH", res.path(namespace, name, sub), what, body=list(ops), content_type=JSON_PATCH)

    async def list(
        self, res: Resource, namespace: str, *, resource_version: str = "", limit: int = 0, continue_token: str = ""
    ) -> ObjectList:
        """One page of the collection (``limit`` 0: all); raises Gone for an expired continue token."""
        query = [("resourceVersion", resource_version)] if resource_version else []
        query += [("limit", str(limit))] if limit else []
        query += [("continue", continue_token)] if continue_token else []
        out = await self._json("GET", res.path(namespace), f"list {res} in {namespace}", query=query)
        meta = out.get("metadata") or {}
        return ObjectList(
            list(out.get("items") or []), str(meta.get("resourceVersion", "")), str(meta.get("continue", ""))
        )

    async def watch(
        self, res: Resource, namespace: str, resource_version: str, *, bookmarks: bool = True, timeout: int = 300
    ) -> AsyncIterator[WatchEvent]:
        """The changes after ``resource_version`` until the server ends the watch (``timeout`` seconds);
        raises Gone when that version is too old (a 410 answer or an ERROR event), KubeError for
        other ERROR events."""
        query = [("watch", "true"), ("resourceVersion", resource_version), ("timeoutSeconds", str(timeout))]
        if bookmarks:
            query.append(("allowWatchBookmarks", "true"))
        what = f"watch {res} in {namespace} from {resource_version}"
        client_timeout = aiohttp.ClientTimeout(total=None, sock_connect=self.timeout, sock_read=timeout + self.timeout)
        resp = await self._call("GET", res.path(namespace), query=query, timeout=client_timeout)
        try:
            if not 200 <= resp.status < 300:
                raise _error(resp.status, await resp.read(), what)
            async for line in resp.content:
                if not line.strip():
                    continue
                ev = json.loads(line)
                obj = ev.get("object") or {}
                if ev.get("type") == "ERROR":
                    code = int(obj.get("code", 0) or 0)
                    raise _error(code or 500, json.dumps(obj), what)
                yield WatchEvent(str(ev.get("type", "")), obj)
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise Dropped(f"{what} ({self.where}): {exc or type(exc).__name__}") from exc
        finally:
            resp.release()

    async def close(self) -> None:
        """Close the connection pool."""
        await self.api.close()


async def connect(settings: KubeConfig, context: str = "") -> Kube:
    """A client for ``context`` of ``settings.kubeconfig`` (empty path: $KUBECONFIG or ~/.kube/config;
    empty context: ``settings.context``, else the file's current context), or for the in-cluster
    service account when ``settings.in_cluster`` and no context is given.  Raises Unreachable when
    the configuration cannot be loaded."""
    try:
        if settings.in_cluster and not context:
            conf = k8s.Configuration()
            cast(Any, k8s_config).load_incluster_config(client_configuration=conf)  # untyped upstream
            return Kube(k8s.ApiClient(configuration=conf), "")
        ctx = context or settings.context or None
        api = await k8s_config.new_client_from_config(
            config_file=settings.kubeconfig or None, context=ctx, persist_config=False
        )
    except (k8s_config.ConfigException, OSError, ValueError, TypeError) as exc:
        where = f"context {context}" if context else "the default context"
        raise Unreachable(f"kubeconfig {settings.kubeconfig or '(default)'}, {where}: {exc}") from exc
    return Kube(api, context)


@dataclass
class Clients:
    """One :class:`Kube` per context, created on first use; at most ``limit`` open (least recently
    used beyond it are closed); :meth:`close` closes them all."""

    settings: KubeConfig
    limit: int = MAX_CLIENTS
    _open: OrderedDict[str, Kube] = field(default_factory=OrderedDict)
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def get(self, context: str = "") -> Kube:
        """The client for ``context`` (empty: the default one); raises Unreachable."""
        async with self._lock:  # one connect per context, even when many clusters ask at once
            kube = self._open.get(context)
            if kube is not None:
                self._open.move_to_end(context)
                return kube
            kube = self._open[context] = await connect(self.settings, context)
            while len(self._open) > self.limit:
                _, old = self._open.popitem(last=False)
                await old.close()
            return kube

    def contexts(self) -> list[str]:
        """The contexts with an open client."""
        return list(self._open)

    async def close(self) -> None:
        """Close every client."""
        kubes = list(self._open.values())
        self._open.clear()
        for kube in kubes:
            await kube.close()


def annotation_patch(obj: Mapping[str, Any], key: str, value: str) -> Obj:
    """The JSON patch op that sets one annotation (creating ``metadata.annotations`` when absent)."""
    if (obj.get("metadata") or {}).get("annotations") is None:
        return {"op": "add", "path": "/metadata/annotations", "value": {key: value}}
    return {"op": "add", "path": "/metadata/annotations/" + key.replace("~", "~0").replace("/", "~1"), "value": value}
