"""Rollback: a rollout's revision history, and the engine that returns a rollout to a revision.

So far the revision history: :mod:`~tmcd.rollback.revisions` (pure: which RolloutRevision
records must exist and how each reads) and :mod:`~tmcd.rollback.history` (the
:class:`~tmcd.rollback.history.RevisionKeeper` that writes them, and the reads the engine
uses).  See docs/canary.md, "Revision history".
"""
