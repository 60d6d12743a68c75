"""The NATS contract: message types, subject builders and parsers, schema export."""
