"""The embedded local stack: real Kafka (KRaft), Redis and Schema Registry processes started on this machine.

No Docker engine is assumed. Artifacts are fetched pinned from Maven Central / Debian into an ignored cache
folder; processes are supervised by PID files so that only our own processes are ever stopped.
"""
