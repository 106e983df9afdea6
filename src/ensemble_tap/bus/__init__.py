"""Everything that knows NATS: connection, streams, publisher, dead letters, embedded server."""
