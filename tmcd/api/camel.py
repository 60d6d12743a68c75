"""camelCase spelling for the HTTP API of data whose NATS wire names are snake_case (the health tree)."""

from __future__ import annotations

from typing import Any


def camel(key: str) -> str:
    """``last_heartbeat`` -> ``lastHeartbeat``."""
    head, *rest = key.split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


def camel_keys(data: Any) -> Any:
    """JSON data with every ``snake_case`` key as ``camelCase`` (values are left alone)."""
    if isinstance(data, dict):
        return {camel(k): camel_keys(v) for k, v in data.items()}
    if isinstance(data, list):
        return [camel_keys(v) for v in data]
    return data


def camel_schema(schema: dict[str, Any]) -> None:
    """Rename an object schema's properties (and its required list) to camelCase, in place."""
    if "properties" in schema:
        schema["properties"] = {camel(k): v for k, v in schema["properties"].items()}
    if "required" in schema:
        schema["required"] = [camel(k) for k in schema["required"]]
