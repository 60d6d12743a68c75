"""The syncer simulator: realistic syncer streams for a fleet of simulated clusters.

:mod:`tmcd.sim.model` is the pure, seeded model (:class:`FleetModel`); :mod:`tmcd.sim.runner`
publishes it through the Bus in real time (``run_sim``); :mod:`tmcd.sim.cli` is `tmcd sim`.
This package imports only the model, so registering the command stays cheap.
"""

from tmcd.sim.model import FleetModel, SimOptionError, SimOptions, cluster_names, validate_options

__all__ = ["FleetModel", "SimOptionError", "SimOptions", "cluster_names", "validate_options"]
