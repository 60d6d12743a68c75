"""The kube agent's (watch mode's) part of the metric catalog; :mod:`tmcd.metrics.catalog` includes it.

Label values are fixed sets (two kinds, four event types, two relist reasons, five write results),
so the family sizes do not grow with the number of CRs.
"""

from __future__ import annotations

from tmcd.metrics.spec import MetricSpec

__all__ = ["EVENT_RESULTS", "EVENT_TYPES", "KINDS", "KUBE_SPECS", "RELIST_REASONS", "WRITE_RESULTS"]

KINDS = ("CanaryRollout", "AnalysisTemplate")
EVENT_TYPES = ("ADDED", "MODIFIED", "DELETED", "BOOKMARK")
RELIST_REASONS = ("start", "expired")
WRITE_RESULTS = ("written", "conflict", "not_found", "unavailable", "rejected")
EVENT_RESULTS = ("created", "failed")

KUBE_SPECS: tuple[MetricSpec, ...] = (
    MetricSpec(
        "tmc_kube_api_up",
        "gauge",
        "1 while the watch mode's Kubernetes API server answers, 0 while it cannot be reached (no connection, "
        "a timeout, or 502/503/504 from it or a proxy in front); exported only with kube.enabled.",
        example=(
            "max without (instance, pod) (min_over_time(tmc_kube_api_up[5m])"
            ' unless on (instance) tmc_leader{agent="kube"} == 0) == 0'
        ),
        group="kube",
    ),
    MetricSpec(
        "tmc_kube_watch_events_total",
        "counter",
        "Watch events received from the API server, by kind (CanaryRollout, AnalysisTemplate) and type "
        "(ADDED, MODIFIED, DELETED, BOOKMARK).",
        ("kind", "type"),
        example="sum by (kind, type) (rate(tmc_kube_watch_events_total[5m]))",
        group="kube",
    ),
    MetricSpec(
        "tmc_kube_relists_total",
        "counter",
        "Full lists of a kind completed, by kind and reason: start (the first list of a watch) or expired "
        "(410 Gone: the resourceVersion to resume from was too old).",
        ("kind", "reason"),
        example='sum without (instance, pod) (increase(tmc_kube_relists_total{reason="expired"}[1h]))',
        group="kube",
    ),
    MetricSpec(
        "tmc_kube_status_writes_total",
        "counter",
        "Status writes to CanaryRollout CRs, by result: written, conflict (409: read again and retried), "
        "not_found (the CR is gone: given up), unavailable (no answer, 429 or 5xx: retried with backoff), "
        "rejected (another error: given up until the status changes again).",
        ("result",),
        example='sum by (result) (increase(tmc_kube_status_writes_total{result!="written"}[15m]))',
        group="kube",
    ),
    MetricSpec(
        "tmc_kube_status_writes_pending",
        "gauge",
        "CanaryRollout CRs whose newest status is waiting to be written (at most one write per CR).",
        example=(
            "max without (instance, pod) (max_over_time(tmc_kube_status_writes_pending[10m])"
            ' unless on (instance) tmc_leader{agent="kube"} == 0) > 0'
        ),
        group="kube",
    ),
    MetricSpec(
        "tmc_kube_event_writes_total",
        "counter",
        "core/v1 Events created on the CRs (phase changes, NotMirrored), by result: created or failed "
        "(best effort: a failed Event is logged and dropped).",
        ("result",),
        example='sum without (instance, pod) (increase(tmc_kube_event_writes_total{result="failed"}[1h])) > 0',
        group="kube",
    ),
)
"""Every tmc_kube_* metric (exported only while the kube agent runs, i.e. with ``kube.enabled``)."""
