"""The rollback engine: a pure plan of ordered stages (traffic, placement, cleanup) in ``model.py``, the
request rules in ``control.py``, the revision history (``revisions.py`` pure, ``history.py`` its keeper), and
the agent that applies them (``agent.py``).  See docs/canary.md, Rollback and Revision history.
"""
