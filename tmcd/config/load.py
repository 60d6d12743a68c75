"""Loading settings: defaults < TOML file < ``TMCD_*`` environment < flags, with one-line errors."""

from __future__ import annotations

import difflib
import functools
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

import msgspec
import msgspec.inspect as mi

from tmcd.config.otel import validate_otel
from tmcd.config.settings import AGENT_NAMES, LOG_LEVELS, Config, StreamsConfig
from tmcd.config.tls import TlsFileError, server_context
from tmcd.config.toml import TomlReadError, dump_toml, read_toml

SECRET_KEYS: tuple[str, ...] = ("nats.password", "nats.token")
STORAGE_TYPES: tuple[str, ...] = ("file", "memory")
NATS_URL_SCHEMES: tuple[str, ...] = ("nats://", "tls://", "ws://", "wss://")
ENV_PREFIX = "TMCD_"
_BOOL_WORDS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
SWITCHES: dict[str, str] = {
    "TMCD_CONFIG": "path of the TOML config file",
    "TMCD_NO_SPEEDUPS": "a boolean: true turns the metrics agent's C extension off",
    "TMCD_NO_EXTENSIONS": "a boolean, read when the wheel is built: true builds it without the C extension",
}
"""``TMCD_*`` environment variables that are not settings of the config tree."""
BOOLEAN_SWITCHES: tuple[str, ...] = ("TMCD_NO_SPEEDUPS", "TMCD_NO_EXTENSIONS")
"""Switches read as booleans: :func:`load_config` rejects any other value, as for settings."""
_ERROR_PATH = re.compile(r" - at `\$((?:\.\w+|\[\d+\]|\[\.\.\.\])*)`$")


class ConfigError(Exception):
    """A bad setting: ``key`` is the dotted path, ``value`` what was given, ``expected`` in words.

    ``str()`` is one line, e.g. ``config (TMCD_HTTP_LISTEN): http.listen = 'nope': expected HOST:PORT``;
    ``source`` (file path or env var) is shown in parentheses when known.
    """

    def __init__(
        self, key: str, value: object, expected: str, *, source: str | None = None, message: str | None = None
    ) -> None:
        if value not in (None, "") and _is_secret(key):
            value = "****"  # an error line ends up in logs: never repeat a password or token
        self.key, self.value, self.expected, self.source = key, value, expected, source
        body = message if message is not None else f"{key} = {value!r}: expected {expected}"
        super().__init__(f"config ({source}): {body}" if source else f"config: {body}")


def _is_secret(key: str) -> bool:
    """True for a setting whose value is a secret: :data:`SECRET_KEYS` and the API tokens."""
    return key in SECRET_KEYS or key == "api.tokens" or key.startswith("api.tokens[")


@dataclass(frozen=True)
class _Leaf:
    annotation: Any
    info: mi.Type


def _is_section(annotation: object) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, msgspec.Struct)


@functools.cache
def _leaves(cls: type[msgspec.Struct] = Config, prefix: str = "") -> dict[str, _Leaf]:
    """Every leaf setting of ``cls`` by dotted path, in field order."""
    out: dict[str, _Leaf] = {}
    for f in msgspec.structs.fields(cls):
        if _is_section(f.type):
            out.update(_leaves(f.type, f"{prefix}{f.name}."))
        else:
            out[prefix + f.name] = _Leaf(f.type, mi.type_info(f.type))
    return out


def parse_bool(text: str, key: str = "", source: str | None = None) -> bool:
    """A boolean as every setting reads it: true/false, 1/0, yes/no (any case); else ConfigError."""
    try:
        return _BOOL_WORDS[text.strip().lower()]
    except KeyError:
        raise ConfigError(key or "value", text, "a boolean (true/false)", source=source) from None


def env_name(key: str) -> str:
    """The environment variable for a dotted leaf path: ``nats.url`` -> ``TMCD_NATS_URL``."""
    return ENV_PREFIX + key.replace(".", "_").upper()


def env_warnings(env: Mapping[str, str] | None = None) -> list[str]:
    """One line per ``TMCD_*`` variable in ``env`` (default ``os.environ``) that tmcd does not read.

    Known names are every setting's :func:`env_name` and :data:`SWITCHES`; a close known name is
    suggested (``unknown environment variable TMCD_NATS_ULR (did you mean TMCD_NATS_URL?)``).
    :func:`load_config` ignores unknown variables; the CLI prints these lines once per command.
    """
    env = os.environ if env is None else env
    known = _known_env_names()
    lines = []
    for var in sorted(v for v in env if v.startswith(ENV_PREFIX) and v not in known):
        # compare without the shared prefix, which would make every name look alike
        close = difflib.get_close_matches(var.upper().removeprefix(ENV_PREFIX), known.values(), n=1)
        hint = f"did you mean {ENV_PREFIX}{close[0]}?" if close else "not a tmcd setting; see config/tmcd.toml"
        lines.append(f"unknown environment variable {var} ({hint})")
    return lines


@functools.cache
def _known_env_names() -> dict[str, str]:
    """Every ``TMCD_*`` name tmcd reads, mapped to its part after the prefix."""
    names = [env_name(key) for key in _leaves()] + list(SWITCHES)
    return {name: name.removeprefix(ENV_PREFIX) for name in names}


def secret_keys() -> tuple[str, ...]:
    """Dotted paths of settings that :func:`render_config` masks."""
    return SECRET_KEYS


def _num(x: float | int) -> str:
    return str(int(x)) if isinstance(x, float) and x.is_integer() else str(x)


def _expected(info: mi.Type) -> str:
    """What a value of this type must be, in words: ``a number > 0``, ``an integer between 1 and 5``."""
    if isinstance(info, mi.Metadata):
        return _expected(info.type)
    if isinstance(info, mi.BoolType):
        return "a boolean (true/false)"
    if isinstance(info, mi.IntType | mi.FloatType):
        noun = "an integer" if isinstance(info, mi.IntType) else "a number"
        if info.ge is not None and info.le is not None:
            return f"{noun} between {_num(info.ge)} and {_num(info.le)}"
        limits = ((">", info.gt), (">=", info.ge), ("<", info.lt), ("<=", info.le))
        bounds = [f"{op} {_num(b)}" for op, b in limits if b is not None]
        return " and ".join([f"{noun} {bounds[0]}", *bounds[1:]]) if bounds else noun
    if isinstance(info, mi.StrType):
        return f"a string matching {info.pattern}" if info.pattern else "a string"
    if isinstance(info, mi.ListType):
        item = _expected(info.item_type).split(" ", 1)[-1]
        return f"a list of {item}s"
    if isinstance(info, mi.StructType):
        return "a table"
    if isinstance(info, mi.DictType):
        return "a table of name = string (set it in the file)"
    return "a valid value"


REMOVED: dict[str, str] = {
    "runtime.gc_freeze_interval": "tmcd freezes its heap once, after start-up",
}
"""Settings that no longer exist -> why; a file that still sets one is told to delete the line."""


def _check_keys(data: Mapping[str, Any], cls: type[msgspec.Struct], prefix: str, source: str | None) -> None:
    """Reject unknown keys (with a did-you-mean) and non-tables where a section belongs."""
    fields = {f.name: f.type for f in msgspec.structs.fields(cls)}
    for key, value in data.items():
        path = prefix + key
        if path in REMOVED:
            message = f"{path}: this setting was removed ({REMOVED[path]}); delete the line"
            raise ConfigError(path, value, "no such setting", source=source, message=message)
        if key not in fields:
            close = difflib.get_close_matches(key, list(fields), n=1)
            hint = f"did you mean {prefix}{close[0]}?" if close else "valid keys: " + ", ".join(fields)
            raise ConfigError(path, value, "a known key", source=source, message=f"{path}: unknown key ({hint})")
        if _is_section(fields[key]):
            if not isinstance(value, Mapping):
                raise ConfigError(path, value, f"a table [{path}]", source=source)
            _check_keys(value, fields[key], path + ".", source)


def _flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if prefix + key in _leaves():
            out[prefix + key] = value
        else:  # a section (already checked by _check_keys)
            out.update(_flatten(value, f"{prefix}{key}."))
    return out


def _from_string(leaf: _Leaf, key: str, text: str, source: str | None) -> Any:
    """Convert an env/flag string to the type of ``leaf`` (lists are comma-separated)."""
    info = leaf.info.type if isinstance(leaf.info, mi.Metadata) else leaf.info
    try:
        if isinstance(info, mi.ListType):
            return msgspec.convert([p.strip() for p in text.split(",") if p.strip()], leaf.annotation, strict=False)
        if isinstance(info, mi.BoolType):
            return parse_bool(text, key, source)
        if isinstance(info, mi.StrType):
            return msgspec.convert(text, leaf.annotation)
        return msgspec.convert(text.strip(), leaf.annotation, strict=False)
    except (msgspec.ValidationError, KeyError):
        raise ConfigError(key, text, _expected(info), source=source) from None


def load_config(
    path: str | None = None, env: Mapping[str, str] | None = None, overrides: Mapping[str, object] | None = None
) -> Config:
    """Load settings: defaults < TOML file (``path`` or ``$TMCD_CONFIG``) < ``TMCD_*`` env < ``overrides``.

    ``overrides`` maps dotted paths (``"http.listen"``) to values; ``None`` values are skipped.
    Raises :class:`ConfigError` for anything invalid.  Unknown ``TMCD_*`` variables are ignored
    here; :func:`env_warnings` lists them.
    """
    env = os.environ if env is None else env
    path = path if path is not None else (env.get("TMCD_CONFIG") or None)
    flat: dict[str, Any] = {}
    raw: dict[str, object] = {}  # what the user wrote, for error messages
    origin: dict[str, str | None] = {}
    if path is not None:
        try:
            data = read_toml(path)
        except TomlReadError as exc:
            raise ConfigError("config", path, "a readable TOML file", source=path, message=str(exc)) from None
        _check_keys(data, Config, "", path)
        for key, value in _flatten(data).items():
            flat[key] = raw[key] = value
            origin[key] = path
    for var in BOOLEAN_SWITCHES:
        if env.get(var, "").strip():
            parse_bool(env[var], var)
    for key in _leaves():
        var = env_name(key)
        if var in env:
            flat[key], raw[key], origin[key] = _from_string(_leaves()[key], key, env[var], var), env[var], var
    for dotted, value in (overrides or {}).items():
        if value is None:
            continue
        nested = _nest({dotted: value})
        _check_keys(nested, Config, "", None)
        for key, v in _flatten(nested).items():
            flat[key] = _from_string(_leaves()[key], key, v, None) if isinstance(v, str) else v
            raw[key], origin[key] = v, None
    cfg = _convert(flat, raw, origin)
    _check_semantics(cfg, raw, origin)
    return cfg


def _nest(flat: Mapping[str, Any]) -> dict[str, Any]:
    """``{"nats.url": v}`` -> ``{"nats": {"url": v}}``."""
    nested: dict[str, Any] = {}
    for key, value in flat.items():
        *parents, last = key.split(".")
        node = nested
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    return nested


def _convert(flat: dict[str, Any], raw: dict[str, object], origin: dict[str, str | None]) -> Config:
    try:
        return msgspec.convert(_nest(flat), Config)
    except msgspec.ValidationError as exc:
        m = _ERROR_PATH.search(str(exc))
        key = ".".join(re.findall(r"\.(\w+)", m.group(1))) if m else ""
        if key not in _leaves():
            raise ConfigError(key or "config", None, "", message=str(exc)) from None
        expected = _expected(_leaves()[key].info)
        raise ConfigError(key, raw.get(key), expected, source=origin.get(key)) from None


def parse_listen(listen: str) -> tuple[str, int]:
    """Split ``HOST:PORT`` (IPv6 as ``[::1]:8080``; empty host = all interfaces) into host and port."""
    host, sep, port = listen.rpartition(":")
    if host.startswith("[") and host.endswith("]") and ":" in host:
        host = host[1:-1]
    elif ":" in host or "[" in host or "]" in host:
        host = ""
        sep = ""
    if not sep or not port.isascii() or not port.isdigit() or any(c.isspace() for c in host):
        raise ConfigError("http.listen", listen, "HOST:PORT")
    if int(port) > 65535:
        raise ConfigError("http.listen", listen, "HOST:PORT with a port between 0 and 65535")
    return host, int(port)


def _get(cfg: Config, key: str) -> Any:
    node: Any = cfg
    for part in key.split("."):
        node = getattr(node, part)
    return node


_CLUSTER_NAME = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


def _check_semantics(cfg: Config, raw: Mapping[str, object], origin: Mapping[str, str | None]) -> None:
    def fail(key: str, expected: str, source_key: str | None = None) -> NoReturn:
        source = origin.get(key) or origin.get(source_key or key)
        raise ConfigError(key, raw.get(key, _get(cfg, key)), expected, source=source)

    try:
        parse_listen(cfg.http.listen)
    except ConfigError as exc:
        fail("http.listen", exc.expected)
    agents = cfg.agents
    if not agents or len(set(agents)) != len(agents) or not set(agents) <= set(AGENT_NAMES):
        fail("agents", "a comma-separated subset of " + ",".join(AGENT_NAMES))
    if cfg.log_level.lower() not in LOG_LEVELS:
        fail("log_level", "one of " + ", ".join(LOG_LEVELS))
    cfg.log_level = cfg.log_level.lower()
    for f in msgspec.structs.fields(StreamsConfig):
        if getattr(cfg.streams, f.name).storage not in STORAGE_TYPES:
            fail(f"streams.{f.name}.storage", "one of " + ", ".join(STORAGE_TYPES))
    nats = cfg.nats
    urls = [u.strip() for u in nats.url.split(",")] if nats.url else []
    if any(not u.startswith(NATS_URL_SCHEMES) or not u.partition("://")[2] for u in urls):
        fail("nats.url", "a comma-separated list of nats://, tls://, ws:// or wss:// URLs")
    if bool(nats.tls_cert) != bool(nats.tls_key):
        missing, given = ("nats.tls_key", "nats.tls_cert") if nats.tls_cert else ("nats.tls_cert", "nats.tls_key")
        fail(missing, f"a file path when {given} is set (set both or neither)", given)
    http = cfg.http
    if bool(http.tls_cert) != bool(http.tls_key):
        missing, given = ("http.tls_key", "http.tls_cert") if http.tls_cert else ("http.tls_cert", "http.tls_key")
        fail(missing, f"a file path when {given} is set (set both or neither)", given)
    if http.tls_cert:
        try:
            server_context(http.tls_cert, http.tls_key)
        except TlsFileError as exc:
            fail(exc.key, exc.expected)
    for lo, hi in (
        ("nats.reconnect_wait_min", "nats.reconnect_wait_max"),
        ("runtime.restart_backoff_min", "runtime.restart_backoff_max"),
    ):
        if _get(cfg, lo) > _get(cfg, hi):
            fail(lo, f"a number <= {hi} ({_num(_get(cfg, hi))})", hi)
    if cfg.leader.renew_interval * 2 > cfg.leader.lease_ttl:
        fail(
            "leader.renew_interval",
            f"a number <= leader.lease_ttl / 2 ({_num(cfg.leader.lease_ttl / 2)})",
            "leader.lease_ttl",
        )
    if cfg.leader.identity and not cfg.leader.identity.strip():
        fail("leader.identity", "a name for this replica, or empty for <hostname>-<hash>")
    for key, _value, expected in validate_otel(cfg.otel):
        fail(key, expected)
    for cluster, context in cfg.kube.contexts.items():
        if not _CLUSTER_NAME.fullmatch(cluster):
            raise ConfigError(
                f"kube.contexts.{cluster}",
                context,
                "a cluster name (a DNS-1123 label)",
                source=origin.get("kube.contexts"),
            )
        if not isinstance(context, str) or not context.strip():
            raise ConfigError(
                f"kube.contexts.{cluster}", context, "a kubeconfig context name", source=origin.get("kube.contexts")
            )
    namespaces = cfg.kube.namespaces
    if any(not _CLUSTER_NAME.fullmatch(n) for n in namespaces) or len(set(namespaces)) != len(namespaces):
        fail("kube.namespaces", "a list of distinct namespace names (DNS-1123 labels); empty: all namespaces")
    if cfg.kube.in_cluster and cfg.kube.context:
        fail(
            "kube.context", "empty when kube.in_cluster is true (the service account has no context)", "kube.in_cluster"
        )
    for i, tok in enumerate(cfg.api.tokens):
        if tok.access not in ("read-only", "read-write"):
            raise ConfigError(
                f"api.tokens[{i}].access", tok.access, "read-only or read-write", source=origin.get("api.tokens")
            )
        if len(tok.token) < 16:
            raise ConfigError(
                f"api.tokens[{i}].token", "****", "a secret of at least 16 characters", source=origin.get("api.tokens")
            )


def render_config(cfg: Config, *, show_secrets: bool = False) -> str:
    """The effective config as TOML; :func:`secret_keys` are shown as ``"****"`` unless ``show_secrets``."""
    data = msgspec.to_builtins(cfg)
    if not show_secrets:
        for key in SECRET_KEYS:
            *parents, last = key.split(".")
            node = data
            for part in parents:
                node = node[part]
            if node[last]:
                node[last] = "****"
        for tok in data["api"]["tokens"]:
            tok["token"] = "****"
    return dump_toml(data)
