"""Generates ``docs/metrics.md`` from the metric catalog (the catalog is the source)."""

from __future__ import annotations

from pathlib import Path

from tmcd.metrics import replicas
from tmcd.metrics.catalog import SPECS, MetricSpec

GROUPS = (
    ("syncer", "Syncer", "From the syncers' sync events and heartbeats (stream TMC_SYNCER)."),
    ("placement", "Placement", "From placement decisions (stream TMC_PLACEMENT)."),
    ("cluster", "Cluster", "From syncer heartbeats: what each cluster has and uses."),
    ("connection", "Connection", "From the syncers' connection events (and the first heartbeat)."),
    (
        "workload",
        "Workload",
        "From the service mesh's request statistics per workload, track and window (stream TMC_WORKLOAD, "
        "`tmcd sim mesh`): what the canary dashboard's stable vs canary panels show.",
    ),
    ("health", "Health", "From the health agent's evaluation of every cluster (see docs/health.md)."),
    ("canary", "Canary", "From the canary agent: each rollout's phase, step, weights, analysis (docs/canary.md)."),
    (
        "kube",
        "Kubernetes watch mode",
        "From the kube agent, with `[kube] enabled` (docs/kubernetes.md#watch-mode): the API server's "
        "reachability, the watches, the status and Event writes to the CRs.",
    ),
    ("tmcd", "tmcd itself", "The daemon's own health and throughput."),
)

HEADER = """# Metrics

Every metric tmcd exports on `/metrics`, generated from `tmcd/metrics/catalog.py` by
`tmcd docs generate` (a test fails when this file is out of date).

Conventions: the `tmc_` prefix, base units (seconds, bytes, ratios 0-1), counters end in
`_total`, no `_created` series. `/metrics` answers in the Prometheus text format, or
OpenMetrics with `Accept: application/openmetrics-text`, gzip-compressed when the
scraper accepts it. The process and platform collectors (`process_*`, `python_*`) are
exported too.

Cardinality is bounded by design: label values come only from validated names (cluster
and placement names are DNS-1123 labels checked before they reach a subject); at most
`metrics.max_resources_per_cluster` (20) resource kinds per cluster get their own series
and the rest are counted as `resource="other"`; error reasons outside the Kubernetes set
are `reason="Other"`; region, zone and provider that are not plain tokens are
`unknown`; and a cluster not heard from for `metrics.forget_after` seconds (one day) has
all its series removed. With 1,000 clusters x 20 resource kinds a scrape has about
136,000 lines and renders in about 0.3 s (`python bench/scrape.py`).

Workload series (`tmc_workload_*`, from the service mesh's WorkloadStats) exist for at most
`metrics.max_workloads_per_cluster` (100) workloads per cluster, 22 series per workload and
track (the latency histogram has 17 buckets, 4 per decade from 1 ms to 10 s, rather than
the mesh's 129); windows of further workloads are counted in
`tmc_workload_stats_dropped_total`. A workload with no stats for `metrics.forget_after`
seconds loses its series (and its place under the cap); a cluster the health agent forgets
loses all of them.

With several tmcd replicas, each metric adds up over them as its "across replicas" column
says (see [Several replicas](#several-replicas) at the end).
"""


def _row(spec: MetricSpec) -> str:
    labels = ", ".join(f"`{label}`" for label in spec.labels) or "—"
    buckets = ""
    if spec.buckets:
        buckets = "<br>buckets: " + ", ".join(f"{b:g}" for b in spec.buckets)
    return f"| `{spec.name}` | {spec.kind} | {labels} | {replicas.describe(spec)} | {spec.help}{buckets} |"


def render() -> str:
    """The Markdown text of docs/metrics.md."""
    out = [HEADER]
    for key, title, blurb in GROUPS:
        specs = [s for s in SPECS if s.group == key]
        out.append(f"\n## {title}\n\n{blurb}\n")
        out.append("| metric | type | labels | across replicas | meaning |")
        out.append("|---|---|---|---|---|")
        out.extend(_row(s) for s in specs)
        out.append("\nExample queries:\n")
        out.append("```promql")
        for s in specs:
            out.append(f"# {s.name}")
            out.append(s.example)
        out.append("```")
    out.append(replicas.DOC)
    return "\n".join(out)


def write(path: Path) -> bool:
    """Write the file if it changed; True when it was written."""
    text = render()
    if path.exists() and path.read_text() == text:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return True
