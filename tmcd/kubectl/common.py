"""Global flags (accepted before or after the subcommand, as kubectl does) and helpers for commands."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, TypeVar

import click

from tmcd.kubectl.client import Client, Endpoint, Settings, resolve
from tmcd.kubectl.errors import UsageError
from tmcd.kubectl.kinds import CliKind, known_names
from tmcd.kubectl.kinds import resolve as resolve_kind

F = TypeVar("F", bound=Callable[..., Any])
CONTEXT_SETTINGS: dict[str, Any] = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def settings(ctx: click.Context) -> Settings:
    """The root context's settings (created on first use)."""
    root = ctx.find_root()
    if not isinstance(root.obj, Settings):
        root.obj = Settings()
    return root.obj


def _store(
    attr: str, convert: Callable[[Any], Any] | None = None
) -> Callable[[click.Context, click.Parameter, Any], None]:
    def callback(ctx: click.Context, _param: click.Parameter, value: Any) -> None:
        if value is None or value is False or value == "":
            return
        setattr(settings(ctx), attr, convert(value) if convert else value)

    return callback


def _verbosity(value: str) -> int:
    text = value.lstrip("=")
    if not text.isdigit():
        raise click.BadParameter(f"{value!r}: want a number, e.g. -v=6")
    return int(text)


def _timeout(value: str) -> float:
    text = value.rstrip("s")
    try:
        return float(text) if float(text) > 0 else 10.0
    except ValueError:
        raise click.BadParameter(f"{value!r}: want seconds, e.g. 5s") from None


def global_options(f: F) -> F:
    """kubectl's global flags and tmcd's connection flags."""
    opts = [
        click.option("--nats-url", metavar="URL", expose_value=False, callback=_store("nats_url"), help="tmcd's NATS."),
        click.option(
            "--server", "-s", metavar="URL", expose_value=False, callback=_store("server"), help="tmcd's HTTP API."
        ),
        click.option("--token", metavar="TOKEN", expose_value=False, callback=_store("token"), help="API token."),
        click.option(
            "--certificate-authority",
            metavar="FILE",
            expose_value=False,
            callback=_store("ca_file"),
            help="CA bundle that verifies an https:// --server.",
        ),
        click.option(
            "--insecure-skip-tls-verify",
            is_flag=True,
            expose_value=False,
            callback=_store("insecure"),
            help="Do not verify an https:// --server's certificate (insecure).",
        ),
        click.option(
            "--kubeconfig", metavar="FILE", expose_value=False, callback=_store("kubeconfig"), help="kubeconfig file."
        ),
        click.option("--context", metavar="NAME", expose_value=False, callback=_store("context"), help="Context."),
        click.option(
            "-n", "--namespace", metavar="NS", expose_value=False, callback=_store("namespace"), help="Namespace."
        ),
        click.option(
            "-A",
            "--all-namespaces",
            is_flag=True,
            expose_value=False,
            callback=_store("all_namespaces"),
            help="All namespaces.",
        ),
        click.option(
            "-v",
            "--v",
            metavar="LEVEL",
            expose_value=False,
            callback=_store("verbosity", _verbosity),
            help="Log level.",
        ),
        click.option(
            "--request-timeout",
            metavar="SECONDS",
            expose_value=False,
            callback=_store("timeout", _timeout),
            help="Request timeout.",
        ),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


def endpoint(ctx: click.Context) -> Endpoint:
    """Where tmcd is, from flags, environment and kubeconfig."""
    s = settings(ctx)
    ep = resolve(s)
    return ep


def client(ctx: click.Context) -> Client:
    """A client for the resolved endpoint, closed when the command ends."""
    c = Client(endpoint(ctx))
    ctx.call_on_close(c.close)
    return c


def kind_arg(name: str, allowed: tuple[str, ...] | None = None) -> CliKind:
    """Resolve a kind argument, or a usage error naming what is accepted."""
    kind = resolve_kind(name)
    if kind is None or (allowed is not None and kind.kind not in allowed):
        want = known_names() if allowed is None else ", ".join(allowed)
        raise UsageError(f'the server doesn\'t have a resource type "{name}" (want {want})')
    return kind


def namespace_for(ctx: click.Context, kind: CliKind, ep: Endpoint) -> str:
    """The namespace of a request: ``-n``, the context's, else ``default`` (``""`` for cluster-scoped)."""
    if not kind.namespaced:
        return ""
    s = settings(ctx)
    return s.namespace or ep.namespace or "default"


_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?\Z")


def dns_label(name: str, what: str) -> str:
    """``name`` if it is a DNS-1123 label (it becomes a NATS subject token), else a usage error."""
    if len(name) <= 63 and _DNS_LABEL.match(name):
        return name
    hint = "; wildcards are not supported, use --all or -l SELECTOR" if any(c in name for c in "*>?") else ""
    raise UsageError(
        f"{what} {name!r} is not a valid name: want a DNS-1123 label (lowercase letters, digits, '-', "
        f"at most 63 characters){hint}"
    )
