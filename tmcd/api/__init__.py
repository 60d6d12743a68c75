"""The resource API: store (KV), HTTP routes, NATS service, errors, auth."""
