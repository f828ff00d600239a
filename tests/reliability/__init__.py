"""The fault oracle: every event accounted for under every fault and bad input, and recovery within a bound.

Run ``make test-reliability`` (all cases, a table, ``reliability: <held>/<total> cases held, <lost> events
lost``; non-zero exit when a case fails) or ``python -m tests.reliability CASE ... [--keep] [--seed S]
[--runs N] [--secure]``; ``make test`` runs a 3-case subset (``test_reliability.py``). ``--secure`` (CI: five
cases, after the plain suite) runs the cases on the secured broker: SASL_SSL, SCRAM, a private CA and ACLs, the job as
``vatic-job`` with exactly its case's grants (``test_secure_stack.py``). Everything runs on a private stack
(:mod:`.stack`: its own Kafka, Redis, schema registry, Feast repo, MLServer and latency proxies on free ports
under a temp folder); the job is ``vatic stream run`` (embedded mini-cluster, EXACTLY_ONCE, schemas from the
registry; ``--guarantee at_least_once``: the job under at-least-once, duplicates after a fault reported rather
than failed) as a subprocess. Modules: :mod:`.events` (seeded inputs), :mod:`.fault_runtime` (the model),
:mod:`.proxy` (latency injection), :mod:`.harness` (one case's timeline), :mod:`.cases` (the faults and their
recovery bounds), :mod:`.oracle` (the checks), :mod:`.forensics` (what a failed case leaves behind).
``VATIC_RELIABILITY_MODE=async|vectorized`` overrides the job's topology (default: the service default).
"""
