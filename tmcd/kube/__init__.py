"""Kubernetes adapters: the only package that imports kubernetes-asyncio.

:mod:`.client` talks to API servers (typed get, patch, list, watch; one client per context);
:mod:`.routers` holds the ``gateway-api`` and ``smi`` traffic routers.
"""
