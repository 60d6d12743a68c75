"""Canary rollouts across clusters.

The pure state machine (:mod:`~tmcd.canary.model`, with :mod:`~tmcd.canary.control`,
:mod:`~tmcd.canary.actions`, :mod:`~tmcd.canary.schedule`, :mod:`~tmcd.canary.clusters`,
:mod:`~tmcd.canary.images`), the
pure analysis (:mod:`~tmcd.canary.analysis`, :mod:`~tmcd.canary.judges`,
:mod:`~tmcd.canary.effects`, :mod:`~tmcd.canary.measures`, :mod:`~tmcd.canary.samples`,
:mod:`~tmcd.canary.sequential`, :mod:`~tmcd.canary.ranks`, :mod:`~tmcd.canary.stats`), and the
I/O: :mod:`~tmcd.canary.agent`, the data plane (:mod:`~tmcd.canary.reversal`,
:mod:`~tmcd.canary.imageplane`), the traffic routers (:mod:`~tmcd.canary.traffic`), the
observations (:mod:`~tmcd.canary.observe`) and the prometheus provider.  See docs/canary.md.
"""
