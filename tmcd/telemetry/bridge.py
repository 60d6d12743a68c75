"""The Prometheus -> OTLP metrics bridge: reads tmcd's registry at export time and pushes it.

The registry is read on the event loop (its metrics are updated there) in slices of
:data:`CHUNK` series with a yield to the loop in between, as ``/metrics`` is rendered
(:mod:`tmcd.metrics.exposition`): a push of 100k+ series then delays ingestion by one slice,
not by the whole read.  Counter, Gauge and Histogram children are read directly (no
prometheus-client ``Sample`` per line); other collectors go through their ``collect()``.
Encoding and sending run in a worker thread.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from prometheus_client import Counter, Gauge, Histogram

from tmcd import __version__

if TYPE_CHECKING:
    from opentelemetry.sdk.metrics.export import HistogramDataPoint, Metric, MetricExporter, MetricsData
    from opentelemetry.sdk.resources import Resource
    from prometheus_client import CollectorRegistry
    from prometheus_client.metrics_core import Metric as PromFamily

log = logging.getLogger("tmcd.telemetry")

SERVICE_NAME = "tmcd"
CHUNK = 1000
"""Counter/gauge series converted between two yields to the event loop (histograms: a quarter)."""
_HISTOGRAM_COST = 4
"""A histogram series costs about this many counter series (its buckets)."""
_DIRECT_TYPES = (Counter, Gauge, Histogram)


class PrometheusBridge:
    """Converts a Prometheus registry into OTel ``MetricsData`` when asked (at export time only).

    Counters become monotonic cumulative Sums (named as scraped, with ``_total``), gauges, info
    and stateset families Gauges, histograms cumulative explicit-bucket Histograms (no min/max:
    Prometheus does not keep them).  Summaries and gauge-histograms are skipped (tmcd has none).
    Values are read from the registry, so nothing is counted twice and the hot path is untouched.
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        resource: Resource | None = None,
        *,
        version: str = __version__,
        start_time_unix_nano: int | None = None,
    ) -> None:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.util.instrumentation import InstrumentationScope

        self.registry = registry
        self.resource = resource if resource is not None else Resource.create({"service.name": SERVICE_NAME})
        self.scope = InstrumentationScope("tmcd.prometheus", version)
        self.start_time_unix_nano = start_time_unix_nano if start_time_unix_nano is not None else time.time_ns()

    def produce(self) -> MetricsData:
        """Read the whole registry now, in one go, and return its families as one ``MetricsData``."""
        metrics: list[Metric] = []
        for _ in self._read(metrics):
            pass
        return self._wrap(metrics)

    async def produce_async(self) -> MetricsData:
        """Like :meth:`produce`, but yields to the event loop after every slice of the registry.

        Whatever is ready on the loop (a consumer's batch, a request) runs between two slices;
        each series is read whole, so a histogram's count always equals its buckets' sum.
        """
        metrics: list[Metric] = []
        for _ in self._read(metrics):
            await asyncio.sleep(0)
        return self._wrap(metrics)

    def _wrap(self, metrics: list[Metric]) -> MetricsData:
        from opentelemetry.sdk.metrics.export import MetricsData, ResourceMetrics, ScopeMetrics

        scope = ScopeMetrics(scope=self.scope, metrics=metrics, schema_url="")
        return MetricsData(
            resource_metrics=[ResourceMetrics(resource=self.resource, scope_metrics=[scope], schema_url="")]
        )

    def _read(self, out: list[Metric]) -> Iterator[None]:
        """Append every family's ``Metric`` to ``out``, yielding between slices."""
        now = time.time_ns()
        with self.registry._lock:
            collectors = list(self.registry._collector_to_names)
        for collector in collectors:
            if type(collector) in _DIRECT_TYPES:
                yield from self._read_direct(collector, now, out)
            else:  # process, platform, info, custom collectors: few samples each
                out.extend(m for family in collector.collect() if (m := self._convert(family, now)) is not None)
                yield

    def _read_direct(self, metric: Any, now: int, out: list[Metric]) -> Iterator[None]:
        """One Counter/Gauge/Histogram, read from its children in slices (what ``collect()`` would give)."""
        from opentelemetry.sdk.metrics.export import (
            AggregationTemporality,
            Gauge,
            Histogram,
            HistogramDataPoint,
            Metric,
            NumberDataPoint,
            Sum,
        )

        names: tuple[str, ...] = metric._labelnames
        if names:
            with metric._lock:
                snapshot = metric._metrics.copy()  # a dict copy: far cheaper than a list of 100k pairs
        else:
            snapshot = {(): metric}
        children = iter(snapshot.items())
        start = self.start_time_unix_nano
        kind: str = metric._type
        points: list[Any] = []
        if kind == "histogram":
            upper: list[float] = metric._upper_bounds
            bounds = upper[:-1]  # the last bound is always +Inf
            has_sum = upper[0] >= 0  # prometheus-client leaves out _sum then
            step = max(1, CHUNK // _HISTOGRAM_COST)
            for _ in range(0, len(snapshot), step):
                for values, child in itertools.islice(children, step):
                    counts = [round(b.get()) for b in child._buckets]
                    points.append(
                        HistogramDataPoint(
                            attributes=dict(zip(names, values, strict=True)),
                            start_time_unix_nano=start,
                            time_unix_nano=now,
                            count=sum(counts),
                            sum=child._sum.get() if has_sum else 0.0,
                            bucket_counts=counts,
                            explicit_bounds=bounds,
                            min=None,  # type: ignore[arg-type]  # unknown to Prometheus; see _histogram_points
                            max=None,  # type: ignore[arg-type]
                        )
                    )
                yield
            data: Sum | Gauge | Histogram = Histogram(points, AggregationTemporality.CUMULATIVE)
        else:
            for _ in range(0, len(snapshot), CHUNK):
                for values, child in itertools.islice(children, CHUNK):
                    points.append(NumberDataPoint(dict(zip(names, values, strict=True)), start, now, _value(child)))
                yield
            if kind == "counter":
                data = Sum(points, AggregationTemporality.CUMULATIVE, is_monotonic=True)
            else:
                data = Gauge(points)
        if points:
            name = metric._name + "_total" if kind == "counter" else metric._name
            out.append(Metric(name=name, description=metric._documentation, unit=metric._unit or "", data=data))

    def _convert(self, family: PromFamily, now: int) -> Metric | None:
        """One family as ``collect()`` returns it (the path for collectors not read directly)."""
        from opentelemetry.sdk.metrics.export import (
            AggregationTemporality,
            Gauge,
            Histogram,
            Metric,
            NumberDataPoint,
            Sum,
        )

        start = self.start_time_unix_nano
        kind = family.type
        data: Sum | Gauge | Histogram
        if kind == "counter":
            name = family.name + "_total"
            points = [
                NumberDataPoint(dict(s.labels), start, now, float(s.value))
                for s in family.samples
                if not s.name.endswith("_created")
            ]
            data = Sum(points, AggregationTemporality.CUMULATIVE, is_monotonic=True)
        elif kind in ("gauge", "unknown", "info", "stateset"):
            name = family.name + "_info" if kind == "info" else family.name
            points = [NumberDataPoint(dict(s.labels), start, now, float(s.value)) for s in family.samples]
            data = Gauge(points)
        elif kind == "histogram":
            name = family.name
            data = Histogram(_histogram_points(family, start, now), AggregationTemporality.CUMULATIVE)
        else:
            return None
        if not data.data_points:
            return None
        return Metric(name=name, description=family.documentation, unit=family.unit or "", data=data)


def _value(child: Any) -> float:
    """A counter's or gauge's current value; a gauge given ``set_function`` answers through its samples."""
    if "_child_samples" in vars(child):
        return float(child._child_samples()[0].value)
    return float(child._value.get())


@dataclass
class _HistSeries:
    labels: dict[str, str]
    buckets: list[tuple[float, float]] = field(default_factory=list)
    count: float | None = None
    sum: float = 0.0


def _histogram_points(family: PromFamily, start: int, now: int) -> list[HistogramDataPoint]:
    """Prometheus cumulative ``le`` buckets -> OTel per-bucket counts, one point per label set."""
    from opentelemetry.sdk.metrics.export import HistogramDataPoint

    series: dict[tuple[tuple[str, str], ...], _HistSeries] = {}
    for s in family.samples:
        labels = {k: v for k, v in s.labels.items() if k != "le"}
        entry = series.setdefault(tuple(sorted(labels.items())), _HistSeries(labels))
        if s.name.endswith("_bucket"):
            entry.buckets.append((float(s.labels["le"]), s.value))
        elif s.name.endswith("_count"):
            entry.count = s.value
        elif s.name.endswith("_sum"):
            entry.sum = s.value
    points = []
    for entry in series.values():
        if not entry.buckets:
            continue
        buckets = sorted(entry.buckets)
        bounds = [le for le, _ in buckets if not math.isinf(le)]
        cumulative = [round(v) for _, v in buckets]
        if not math.isinf(buckets[-1][0]):  # no +Inf bucket (custom collector): the rest is above the last bound
            cumulative.append(round(entry.count) if entry.count is not None else cumulative[-1])
        counts = [c - p for c, p in zip(cumulative, [0, *cumulative[:-1]], strict=True)]
        points.append(
            HistogramDataPoint(
                attributes=entry.labels,
                start_time_unix_nano=start,
                time_unix_nano=now,
                count=cumulative[-1],  # == the +Inf bucket, so sum(bucket_counts) == count as OTLP requires
                sum=entry.sum,
                bucket_counts=counts,
                explicit_bounds=bounds,
                min=None,  # type: ignore[arg-type]  # unknown to Prometheus; the OTLP encoder leaves it unset
                max=None,  # type: ignore[arg-type]
            )
        )
    return points


class MetricsPusher:
    """Every ``interval`` s: read the registry on the event loop (in slices), export in a worker thread."""

    def __init__(self, bridge: PrometheusBridge, exporter: MetricExporter, interval: float) -> None:
        self.bridge = bridge
        self.exporter = exporter
        self.interval = interval
        self.exports = 0
        self.failures = 0
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the periodic push task on the running loop."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="tmcd-otel-metrics")

    async def _run(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._stop.wait(), self.interval)
                return
            except TimeoutError:
                await self.push()

    async def push(self) -> bool:
        """Export the registry once now; True on success (failures are logged, not raised)."""
        try:
            data = await self.bridge.produce_async()
        except Exception:
            log.exception("reading the Prometheus registry for OTLP export failed")
            self.failures += 1
            return False
        return await asyncio.to_thread(self._export, data)

    def _export(self, data: MetricsData) -> bool:
        from opentelemetry.sdk.metrics.export import MetricExportResult

        try:
            ok = self.exporter.export(data, timeout_millis=10_000) == MetricExportResult.SUCCESS
        except Exception:
            log.exception("OTLP metrics export failed")
            ok = False
        if ok:
            self.exports += 1
        else:
            self.failures += 1
            if self.failures == 1 or self.failures % 10 == 0:
                log.warning("OTLP metrics export failed (%d failures so far)", self.failures)
        return ok

    async def stop(self, timeout: float = 10.0) -> None:
        """Stop the task, export one last time and shut the exporter down (within ``timeout`` s)."""
        self._stop.set()
        task, self._task = self._task, None
        if task is None:
            return

        async def finish() -> None:
            await task
            await self.push()
            await asyncio.to_thread(self.exporter.shutdown)

        try:
            await asyncio.wait_for(finish(), timeout)
        except TimeoutError:
            log.warning("OTLP metrics export did not finish within %ss", timeout)
