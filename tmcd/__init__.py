"""tmcd: observability and progressive delivery for TMC multi-cluster Kubernetes."""

__version__ = "0.1.0"
