"""Canary rollouts across clusters.

So far the pure analysis (no I/O, time passed in): :mod:`~tmcd.canary.analysis` (measurements,
noData, limits, run verdicts), :mod:`~tmcd.canary.judges` and :mod:`~tmcd.canary.effects`
(thresholds and comparisons), :mod:`~tmcd.canary.measures` and :mod:`~tmcd.canary.samples`
(pooled windows, PromQL histogram quantiles), :mod:`~tmcd.canary.sequential` (anytime-valid
tests), :mod:`~tmcd.canary.ranks` and :mod:`~tmcd.canary.stats` (the statistics).  See
docs/canary.md.
"""
