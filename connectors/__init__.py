"""Clients of every outside system vatic talks to: Kafka, Feast, the model server, the registries.

A connector knows nothing of the pipeline: nothing here imports ``vatic.serving`` or ``vatic.streaming``.
"""
