"""The ``vatic`` command line: one module per command."""
