"""The prometheus provider: an instant PromQL query with ``{{args.NAME}}`` substitution."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

import aiohttp

from tmcd.canary.analysis import Observation, ProviderError, ScalarValue
from tmcd.resources.canary import PrometheusProvider

__all__ = ["TIMEOUT", "query_prometheus", "render"]

TIMEOUT = 10.0
"""Seconds a query may take before the measurement is an Error."""
_ARG = re.compile(r"\{\{\s*args\.([A-Za-z0-9_-]+)\s*\}\}")


def render(query: str, args: Mapping[str, str]) -> str:
    """Substitute ``{{args.NAME}}``; KeyError names an argument the analysis does not pass."""

    def sub(m: re.Match[str]) -> str:
        name = m.group(1)
        if name not in args:
            raise KeyError(name)
        return args[name]

    return _ARG.sub(sub, query)


async def query_prometheus(p: PrometheusProvider, args: Mapping[str, str], timeout: float = TIMEOUT) -> Observation:
    """One number from Prometheus' HTTP API (``/api/v1/query``); empty result -> no data."""
    try:
        query = render(p.query, args)
    except KeyError as exc:
        return ProviderError(f"the query uses {{{{args.{exc.args[0]}}}}}, which the analysis does not pass")
    url = p.address.rstrip("/") + "/api/v1/query"
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout)) as session,
            session.get(url, params={"query": query}) as resp,
        ):
            body = await resp.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        return ProviderError(f"prometheus at {p.address}: {type(exc).__name__}: {exc}")
    if not isinstance(body, dict) or body.get("status") != "success":
        err = body.get("error") if isinstance(body, dict) else body
        return ProviderError(f"prometheus at {p.address}: {err}")
    data = body.get("data") or {}
    kind, result = data.get("resultType"), data.get("result")
    try:
        if kind == "scalar" and isinstance(result, list):
            value = float(result[1])
        elif kind == "vector" and isinstance(result, list):
            if not result:
                return ScalarValue(None)
            if len(result) > 1:
                return ProviderError(f"the query returned {len(result)} series; it must return one")
            value = float(result[0]["value"][1])
        else:
            return ProviderError(f"the query returned a {kind}; it must return a scalar or one series")
    except (TypeError, ValueError, KeyError, IndexError) as exc:
        return ProviderError(f"unexpected answer from prometheus: {exc}")
    return ScalarValue(None if math.isnan(value) else value)
