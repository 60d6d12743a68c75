"""A span per canary step and per analysis run, with the times recorded in status."""

from __future__ import annotations

import msgspec
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tests.test_canary_model import STEPS, Driver, rollout, template
from tmcd.canary.model import reconcile
from tmcd.canary.spans import emit_spans


def test_steps_and_analysis_runs_become_spans_with_their_real_duration() -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("test")
    d = Driver(rollout(STEPS), {"err": template()})
    d.tick()  # at the analysis step (3)
    for _ in range(3):
        d.now += 10
        d.feed()
        before = d.r
        out = reconcile(before, d.env())
        emit_spans(tracer, before, out.status, d.now)
        d.r = msgspec.structs.replace(d.r, status=out.status)
    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert "canary step 3" in spans and "canary analysis err" in spans
    step = spans["canary step 3"]
    assert step.end_time is not None and step.start_time is not None
    assert (step.end_time - step.start_time) / 1e9 == 20.0
    assert spans["canary analysis err"].attributes["tmc.canary.analysis.phase"] == "Successful"
