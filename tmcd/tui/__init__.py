"""The terminal dashboard (``tmcd tui``, ``kubectl tmc dashboard``).

Pure view models (``models``, ``eventlog``, ``canaries``, ``state``), the NATS feed (``feed``)
and the Textual app (``app``, ``screens/``); only ``app`` and ``screens`` import Textual.
"""
