"""Cluster health: a pure model of each cluster's health from its syncer's heartbeats,
connection events and sync outcomes (:mod:`tmcd.health.model`), the agent that feeds it
and writes what it concludes, and aggregation to locations and the fleet."""
