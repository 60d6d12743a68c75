"""Where ``kubectl tmc`` finds tmcd: flags, environment, the kubeconfig context's ``tmc``
extension and the data dir (see :mod:`tmcd.kubectl.client` for the order)."""

from __future__ import annotations

import os

from tmcd.kubectl.errors import CliError, UsageError

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

DEFAULT_NATS = "nats://127.0.0.1:4222"
DEFAULT_SERVER = "http://127.0.0.1:8080"


class Settings:
    """The global flags, as given (empty = not given)."""

    def __init__(
        self,
        nats_url: str = "",
        server: str = "",
        token: str = "",
        kubeconfig: str = "",
        context: str = "",
        namespace: str = "",
        all_namespaces: bool = False,
        verbosity: int = 0,
        timeout: float = 10.0,
        env: dict[str, str] | None = None,
        ca_file: str = "",
        insecure: bool = False,
    ) -> None:
        self.nats_url = nats_url
        self.server = server
        self.token = token
        self.kubeconfig = kubeconfig
        self.context = context
        self.namespace = namespace
        self.all_namespaces = all_namespaces
        self.verbosity = verbosity
        self.timeout = timeout
        self.env = dict(os.environ) if env is None else env
        self.ca_file = ca_file
        """--certificate-authority: the CA bundle that verifies an https:// server."""
        self.insecure = insecure
        """--insecure-skip-tls-verify: do not verify an https:// server's certificate."""


class Endpoint:
    """Where to send requests: ``transport`` is ``nats`` or ``http``; ``namespace`` is the
    kubeconfig context's (the default for namespaced kinds); ``ca_file`` and ``insecure`` say
    how an https:// server's certificate is verified."""

    def __init__(
        self,
        transport: str,
        url: str,
        token: str = "",
        namespace: str = "",
        timeout: float = 10.0,
        ca_file: str = "",
        insecure: bool = False,
    ) -> None:
        self.transport = transport
        self.url = url
        self.token = token
        self.namespace = namespace
        self.timeout = timeout
        self.ca_file = ca_file
        self.insecure = insecure


def kubeconfig_context(settings: Settings) -> dict[str, Any]:
    """The selected kubeconfig context (``{}`` when there is no kubeconfig to read)."""
    paths = settings.kubeconfig or settings.env.get("KUBECONFIG", "")
    if not paths and not settings.context:
        return {}
    if not paths:
        paths = os.path.join(os.path.expanduser("~"), ".kube", "config")
    from pathlib import Path

    import yaml

    contexts: dict[str, dict[str, Any]] = {}
    current = ""
    for p in paths.split(os.pathsep):
        if not p:
            continue
        try:
            doc = yaml.safe_load(Path(p).read_text()) or {}
        except FileNotFoundError:
            if settings.kubeconfig:
                raise CliError(f"kubeconfig {p} not found") from None
            continue
        except (OSError, yaml.YAMLError) as exc:
            raise CliError(f"cannot read kubeconfig {p}: {exc}") from None
        if not isinstance(doc, dict):
            continue
        current = current or str(doc.get("current-context") or "")
        for entry in doc.get("contexts") or []:
            if isinstance(entry, dict) and entry.get("name") and entry["name"] not in contexts:
                ctx = entry.get("context")
                contexts[str(entry["name"])] = ctx if isinstance(ctx, dict) else {}
    name = settings.context or current
    if not name:
        return {}
    if name not in contexts:
        raise CliError(f'context "{name}" does not exist in kubeconfig')
    return contexts[name]


def tmc_extension(context: dict[str, Any]) -> dict[str, Any]:
    """The context's ``extensions`` entry named ``tmc`` (``{natsURL, server}``)."""
    for ext in context.get("extensions") or []:
        if isinstance(ext, dict) and ext.get("name") == "tmc" and isinstance(ext.get("extension"), dict):
            return dict(ext["extension"])
    return {}


def resolve(settings: Settings) -> Endpoint:
    """Pick NATS or HTTP and the URL from flags, environment, kubeconfig and the data dir."""
    env = settings.env
    if settings.ca_file and settings.insecure:
        # as kubectl: "specifying a root certificates file with the insecure flag is not allowed"
        raise UsageError("--certificate-authority and --insecure-skip-tls-verify cannot be used together")
    ctx = kubeconfig_context(settings)
    ext = tmc_extension(ctx)
    token = settings.token or env.get("TMC_TOKEN", "") or str(ext.get("token") or "")
    if any(c in token for c in "\r\n\0"):
        raise UsageError("--token/TMC_TOKEN: a token cannot contain line breaks or NUL")
    ns = str(ctx.get("namespace") or "")
    nats_url = settings.nats_url or env.get("TMC_NATS_URL", "") or str(ext.get("natsURL") or "")
    server = settings.server or env.get("TMC_SERVER", "") or str(ext.get("server") or "")
    if not nats_url and server:
        if not server.startswith(("http://", "https://")):
            raise UsageError(f"--server {server!r}: want an http:// or https:// URL")
        return Endpoint("http", server.rstrip("/"), token, ns, settings.timeout, settings.ca_file, settings.insecure)
    if not nats_url:
        url_file = os.path.join(env.get("TMCD_DATA_DIR") or ".tmcd", "nats.url")
        try:
            with open(url_file) as fh:
                nats_url = fh.read().strip().split(",")[0]
        except OSError:
            nats_url = ""
        nats_url = nats_url or DEFAULT_NATS
    return Endpoint("nats", nats_url, token, ns, settings.timeout)
