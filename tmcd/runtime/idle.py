"""Agents whose behaviour later issues fill in: they start, report ready and wait."""

from __future__ import annotations

from tmcd.runtime.agent import AgentContext


class IdleAgent:
    """An agent that holds its slot in the runtime until its issue gives it work."""

    def __init__(self, name: str) -> None:
        self.name = name

    async def run(self, ctx: AgentContext) -> None:
        """Report ready and wait for stop."""
        ctx.started.set()
        await ctx.stop.wait()
