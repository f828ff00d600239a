"""The serving layer: the transport-free prediction core, model-server runtimes, the gateway and the CLI."""
