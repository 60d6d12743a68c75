"""The runtime every agent runs in: the daemon, the supervisor, the agent base and registry,
the embedded nats-server, component checks and probes, the event-loop watchdog, GC tuning
and logging."""
