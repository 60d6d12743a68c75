"""Kubernetes-shaped resources tmcd stores in JetStream KV (SyncTarget, ...)."""
