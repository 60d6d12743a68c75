"""Prometheus metrics: the catalog of every tmc_* metric, the metrics agent's state, and a
fast exposition renderer."""
