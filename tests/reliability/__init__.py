"""The fault oracle of issue 7: every event accounted for under 15 faults and bad inputs.

Run ``make test-reliability`` (all cases, a table, ``reliability: <held>/<total> cases held, <lost> events
lost``) or ``python -m tests.reliability CASE ... [--keep]``; ``make test`` runs a 3-case subset
(``test_reliability.py``). Everything runs on a private stack (:mod:`.stack`: its own Kafka, Redis, Feast
repo and MLServer on free ports under a temp folder); the job is ``vatic stream run`` (embedded mini-cluster,
EXACTLY_ONCE) as a subprocess. Modules: :mod:`.events` (seeded inputs), :mod:`.fault_runtime` (the model),
:mod:`.harness` (one case's timeline), :mod:`.cases` (the faults), :mod:`.oracle` (the checks).
``VATIC_RELIABILITY_MODE=async|vectorized`` overrides the job's topology (default: the service default).
"""
