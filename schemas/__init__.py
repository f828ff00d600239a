"""Avro schemas (``avro/*.avsc``), the codec (fastavro + Confluent wire format) and compatibility checks.

This package imports nothing else of vatic: it is the bottom layer every other package may use.
"""
