"""A fast renderer for the Prometheus text and OpenMetrics formats.

prometheus-client's ``generate_latest`` spends ~10 µs per output line (a Sample tuple,
a labels dict, sorting and escaping for every line, every scrape), and holds the
interpreter meanwhile.  For the label-heavy families tmcd owns (Counter, Gauge and
Histogram children) this renderer reads the values straight from the children and
reuses label strings built once per series, producing byte-for-byte the same output.
Every other collector (process, platform, info) is rendered by prometheus-client.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client import exposition as text_exposition
from prometheus_client.openmetrics import exposition as om_exposition
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString as _float_to_go

_FAST_TYPES = (Counter, Gauge, Histogram)
floatToGoString: Callable[[float], str] = _float_to_go
_om_generate: Callable[[Any], bytes] = om_exposition.generate_latest


def _escape_text(value: str) -> str:
    if "\\" in value or "\n" in value or '"' in value:
        return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")
    return value


def _help_text(doc: str) -> str:
    return doc.replace("\\", r"\\").replace("\n", r"\n")


class _OneCollector:
    """A registry-like wrapper so prometheus-client can render a single collector."""

    def __init__(self, collector: Collector) -> None:
        self._collector = collector

    def collect(self) -> Any:
        return self._collector.collect()


class _Family:
    """Label strings of one metric family's series, built once per series."""

    def __init__(self, metric: Any) -> None:
        self.metric = metric
        names: tuple[str, ...] = metric._labelnames
        self.order = sorted(range(len(names)), key=lambda i: names[i])
        self.sorted_names = [names[i] for i in self.order]
        self.names = names
        self.series: dict[tuple[str, ...], Any] = {}
        if isinstance(metric, Histogram):
            # where le="..." goes among the sorted label names
            self.le_at = sum(1 for n in self.sorted_names if n < "le")
            self.les = [f'le="{floatToGoString(b)}"' for b in metric._upper_bounds]

    def labels(self, values: tuple[str, ...]) -> Any:
        cached = self.series.get(values)
        if cached is None:
            cached = self.series[values] = self._build(values)
        return cached

    def _build(self, values: tuple[str, ...]) -> Any:
        parts = [f'{k}="{_escape_text(values[i])}"' for k, i in zip(self.sorted_names, self.order, strict=True)]
        plain = "{" + ",".join(parts) + "}" if parts else ""
        name = self.metric._name
        if not isinstance(self.metric, Histogram):
            suffix = "_total" if self.metric._type == "counter" else ""
            return f"{name}{suffix}{plain} "
        head = ",".join(parts[: self.le_at])
        tail = ",".join(parts[self.le_at :])
        head = head + "," if head else ""
        tail = "," + tail if tail else ""
        buckets = [f"{name}_bucket{{{head}{le}{tail}}} " for le in self.les]
        return buckets, f"{name}_count{plain} ", f"{name}_sum{plain} "

    def prune(self, live: int) -> None:
        if len(self.series) > 2 * live + 64:
            keep = set(self.metric._metrics) if self.names else {()}
            self.series = {k: v for k, v in self.series.items() if k in keep}


class FastExposition:
    """Renders a CollectorRegistry; keep one instance per registry (it caches label strings)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self._families: dict[int, _Family] = {}
        self._lock = threading.Lock()

    def render(self, openmetrics: bool = False) -> bytes:
        """The whole registry in the text format (0.0.4), or OpenMetrics 1.0, in one go."""
        with self._lock:
            out: list[str] = []
            for _ in self._render_all(out, openmetrics):
                pass
            return "".join(out).encode()

    async def render_async(self, openmetrics: bool = False) -> bytes:
        """Like :meth:`render`, but yields to the event loop every few thousand series.

        Consumers keep ingesting while a large scrape is produced (a pending batch is
        handled before rendering resumes), so a scrape adds milliseconds, not the whole
        render time, to event lag.
        """
        out: list[str] = []
        for _ in self._render_all(out, openmetrics):
            await asyncio.sleep(0)
        return "".join(out).encode()

    def _render_all(self, out: list[str], openmetrics: bool) -> Iterator[None]:
        with self.registry._lock:
            collectors = list(self.registry._collector_to_names)
        for collector in collectors:
            if type(collector) in _FAST_TYPES:
                yield from self._render(collector, out, openmetrics)
            elif openmetrics:
                out.append(_om_generate(_OneCollector(collector)).decode()[: -len("# EOF\n")])
            else:
                out.append(text_exposition.generate_latest(_OneCollector(collector)).decode())
        if openmetrics:
            out.append("# EOF\n")

    def _family(self, metric: Any) -> _Family:
        fam = self._families.get(id(metric))
        if fam is None or fam.metric is not metric:
            fam = self._families[id(metric)] = _Family(metric)
        return fam

    def _render(self, metric: Any, out: list[str], om: bool) -> Iterator[None]:
        fam = self._family(metric)
        name: str = metric._name
        kind: str = metric._type
        doc: str = metric._documentation
        head = name if kind != "counter" or om else f"{name}_total"
        out.append(f"# HELP {head} {_escape_text(doc) if om else _help_text(doc)}\n")
        out.append(f"# TYPE {head} {kind}\n")
        if fam.names:
            with metric._lock:
                children = list(metric._metrics.items())
        else:
            children = [((), metric)]
        labels = fam.labels
        for start in range(0, len(children), CHUNK):
            chunk = children[start : start + CHUNK]
            if kind == "histogram":
                for values, child in chunk:
                    buckets, count, total = labels(values)
                    acc = 0.0
                    for prefix, b in zip(buckets, child._buckets, strict=True):
                        acc += b.get()
                        out.append(f"{prefix}{_fmt(acc)}\n")
                    out.append(f"{count}{_fmt(acc)}\n")
                    out.append(f"{total}{_fmt(child._sum.get())}\n")
            else:
                for values, child in chunk:
                    out.append(f"{labels(values)}{_fmt(child._value.get())}\n")
            yield
        fam.prune(len(children))


CHUNK = 1000
"""Series rendered between two yields to the event loop."""

_FMT: dict[float, str] = {}


def _fmt(value: float) -> str:
    """floatToGoString, memoised: most sample values repeat from scrape to scrape."""
    s = _FMT.get(value)
    if s is None:
        s = floatToGoString(value)
        if len(_FMT) >= 200_000:
            _FMT.clear()
        _FMT[value] = s
    return s
