"""The streaming path: the PyFlink job that turns Kafka events into prediction events."""
