"""Agents: independent asyncio tasks that talk to each other only through NATS and KV."""
