"""The rollback engine: a pure plan of ordered stages (traffic, placement, cleanup) and the agent that applies it."""
