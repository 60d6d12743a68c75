"""Kubernetes adapters: the only package that imports kubernetes-asyncio.

:mod:`.client` talks to API servers (typed get, patch, list, watch; one client per context);
:mod:`.routers` holds the ``gateway-api`` and ``smi`` traffic routers; :mod:`.workloads` sets a
container's image on a cluster's Deployment (a rollout's canary image); watch mode is :mod:`.agent`
(list and watch), :mod:`.mirror` (its pure decisions), :mod:`.status` (status and Events back to
the CRs), :mod:`.health` (the API server's reachability, backoff, checks) and :mod:`.metrics`.
"""
