"""The reliability cases: one fault or one kind of bad input each.

Every case runs the same seeded mix (about 5% bad inputs of every kind, see :mod:`tests.reliability.events`);
data cases add more of their kind, fault cases apply their fault once the job has answered ``trigger``
records. A fault function returns when the fault is healed (and sets ``run.healed_at`` when the healing
moment is not the return). Each outage case states its recovery bound (``bound_s``): the case fails when
the first answer after the heal comes later than that. The bounds follow from the job's restart and retry
settings; docs/decisions/0001-recovery-bounds.md derives them.
"""

from __future__ import annotations

import signal
import time

from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource, NewPartitions

from tests.reliability.events import ROGUE_SCHEMA
from tests.reliability.harness import Case, CaseRun
from vatic.connectors.schema_registry import ConfluentSchemaRegistry
from vatic.schemas import schema_id_of, topic_subject
from vatic.schemas.canonical import canonical_json
from vatic.schemas.errors import DecodeError, IncompatibleSchemaError


def model_killed(run: CaseRun) -> None:
    run.stack.kill_model()
    time.sleep(5)
    run.stack.restart_model()


def model_paused(run: CaseRun) -> None:
    before = run.completed_checkpoints()
    run.stack.signal_model(signal.SIGSTOP)
    try:
        time.sleep(15)
    finally:
        run.stack.signal_model(signal.SIGCONT)
    run.notes.append(f"checkpoints completed during the 15 s pause: {run.completed_checkpoints() - before}")


def model_5xx(run: CaseRun) -> None:
    run.stack.fault_file.write_text("503", encoding="utf-8")
    try:
        time.sleep(15)
    finally:
        run.stack.fault_file.unlink(missing_ok=True)


def registry_refuses_incompatible(run: CaseRun) -> None:
    """The registry refuses the rogue writer schema under the input subject (BACKWARD_TRANSITIVE): a producer
    cannot register it; the events written with it under another subject are dead-lettered."""
    subject = topic_subject(run.topics["input"])
    run.registry.set_compatibility(subject, "BACKWARD_TRANSITIVE")
    try:
        run.registry.register(subject, ROGUE_SCHEMA)
    except IncompatibleSchemaError as exc:
        run.notes.append(f"registration refused: {exc.message[:100]}")
    else:
        run.problems.append(f"an incompatible schema was registered under {subject} (BACKWARD_TRANSITIVE)")


def _schemas_in_use(run: CaseRun) -> dict[int, str]:
    """The schema ids the run's records carry, each with its schema's canonical text, read afresh from the
    registry (a new client: no cache)."""
    ids = set()
    for record in run.events.records:
        try:
            ids.add(schema_id_of(record.value))
        except DecodeError:
            continue
    ids = {i for i in ids if i < 900_000}  # the unknown-id kind's ids were never registered
    with ConfluentSchemaRegistry(run.stack.registry_url) as fresh:
        return {i: canonical_json(fresh.get_schema(i)) for i in sorted(ids)}


def registry_down(run: CaseRun) -> None:
    """Kill the schema registry (SIGKILL) for 30 s, then start it again. Records of an older writer version
    first appear in the second half of the stream, so the job meets their schema id while the registry is
    down: it must wait for it (retry, then restart from its checkpoint), never dead-letter. Afterwards every
    schema id the run's records carry still names the same schema."""
    before = _schemas_in_use(run)
    run.stack.registry_down()
    try:
        time.sleep(30)
    finally:
        run.stack.registry_up()
    after = _schemas_in_use(run)
    if after != before:
        changed = sorted(i for i in before if after.get(i) != before[i])
        run.problems.append(f"the registry forgot or changed schema ids {changed} across its restart")
    run.notes.append(f"{len(before)} schema ids in use, all kept across the registry restart")


def _slow(run: CaseRun, proxy: str, **latency: object) -> None:
    """Latency on the job's model or feature traffic for 30 s (injected by the stack's proxy, not a pause).
    A slow server slows checkpoints down (a checkpoint waits for the micro-batches in flight) but must not make
    one fail; the first checkpoint after the latency ends must complete within the case's bound."""
    target = run.stack.model_proxy if proxy == "model" else run.stack.redis_proxy
    since = time.time_ns() // 1_000_000
    target.set(seed=run.seed, **latency)
    try:
        time.sleep(30)
    finally:
        target.set()
    healed = run.healed_at = time.monotonic()
    bound = run.case.bound_s or 30.0
    while time.monotonic() - healed < bound and not _completed_after(run, time.time_ns() // 1_000_000 - 1000):
        time.sleep(0.5)
    checkpoints = run.checkpoints_since(since)
    failed = [c for c in checkpoints if c.get("status") == "FAILED"]
    longest = max((int(c.get("end_to_end_duration") or 0) for c in checkpoints), default=0) / 1000
    run.notes.append(f"checkpoints triggered during and after the latency: {len(checkpoints)}, "
                     f"{len(failed)} failed, longest {longest:.1f}s")  # fmt: skip
    if failed:
        run.problems.append(f"{len(failed)} checkpoints failed under latency: {failed[0].get('failure_message')}")
    if not any(c.get("status") == "COMPLETED" for c in checkpoints):
        run.problems.append("no checkpoint completed during the latency or within the bound after it")


def _completed_after(run: CaseRun, wall_ms: int) -> bool:
    return any(c.get("status") == "COMPLETED" for c in run.checkpoints_since(wall_ms))


def model_slow(run: CaseRun) -> None:
    """Model answers delayed 0.3-1.5 s, and 5% of them 4.5 s (past the 3 s deadline), for 30 s."""
    _slow(run, "model", base_ms=[300, 1500], slow_fraction=0.05, slow_ms=4500)


def feature_slow(run: CaseRun) -> None:
    """Feature store replies delayed 20-80 ms, and 5% of them 500 ms (past the 200 ms deadline), for 30 s."""
    _slow(run, "redis", base_ms=[20, 80], slow_fraction=0.05, slow_ms=500)


def partitions_raised(run: CaseRun) -> None:
    """The input topic grows from 3 to 6 partitions while the job runs. Recovery: from the change to the first
    answer of a record written to a new partition (the source discovers them every 5 s)."""
    before = run.input_partitions()
    admin = run.admin()  # kept referenced until the futures resolve
    futures = admin.create_partitions([NewPartitions(run.topics["input"], before * 2)])
    for future in futures.values():
        future.result(timeout=30)
    run.new_partitions_from = before
    run.notes.append(f"input partitions {before} -> {run.input_partitions()}")


def redis_down(run: CaseRun) -> None:
    run.stack.redis_down()
    time.sleep(20)
    run.stack.redis_up()


def kafka_clean(run: CaseRun) -> None:
    run.stack.kafka_bounce(hard=False)


def kafka_hard(run: CaseRun) -> None:
    run.stack.kafka_bounce(hard=True)


def job_killed(run: CaseRun) -> None:
    """Kill the job right after a checkpoint completed (state to restore), then start it again."""
    run.wait_new_checkpoint()
    time.sleep(1.0)  # mid-way to the next checkpoint: open transactions to abort, records to replay
    run.kill_job()
    run.notes.append(f"killed after {run.completed_checkpoints()} completed checkpoint(s)")
    run.start_job()


def rescaled(run: CaseRun) -> None:
    """Stop at a retained checkpoint and restart with parallelism 2 (state redistributed by key group)."""
    run.wait_new_checkpoint()
    run.kill_job()
    run.start_job(parallelism=2)


def dead_letter_topic_unavailable(run: CaseRun) -> None:
    """The dead-letter topic refuses every write (max.message.bytes below any dead letter) for 30 s."""
    admin = run.admin()

    def set_limit(value: str) -> None:
        resource = ConfigResource(
            ConfigResource.Type.TOPIC,
            run.topics["dead"],
            incremental_configs=[ConfigEntry("max.message.bytes", value, incremental_operation=AlterConfigOpType.SET)],
        )
        for future in admin.incremental_alter_configs([resource]).values():
            future.result(timeout=30)

    set_limit("200")
    try:
        time.sleep(30)
    finally:
        set_limit("1048588")


#: recovery bounds (seconds from the heal to the first answer after it); derived in
#: docs/decisions/0001-recovery-bounds.md from the job's retry and restart settings
RETRIED = 30  # an outage the core rides out by retrying (no job restart)
RESTARTED = 60  # an outage that fails the job: restart back-off (at most 10 s), job (or process) restart, a checkpoint
FRESH_JOB = 75  # the harness starts a new job process (JVM, mini-cluster, Python workers) after the fault

CASES: list[Case] = [
    Case("model-killed", "model server killed mid-stream, restarted after 5 s", model_killed, bound_s=RETRIED),
    Case("model-paused", "model server paused 15 s (SIGSTOP/SIGCONT)", model_paused, bound_s=RETRIED),
    Case("model-4xx-5xx", "model rejects some inputs (400) and answers 503 for 15 s", model_5xx, bound_s=RETRIED),
    Case("malformed-avro", "malformed Avro: garbage, truncated, unknown schema id (+200)",
         extra={"garbage": 70, "truncated": 70, "unknown_schema_id": 60}),
    Case("schema-incompatible", "events written with an unresolvable writer schema (+200); registry refuses it",
         registry_refuses_incompatible, extra={"incompatible_schema": 200}),
    Case("feature-miss", "unknown entities: required feature missing (+200)", extra={"unknown_entity": 200}),
    Case("redis-down", "Redis (online store) killed for 20 s, restarted from its snapshot", redis_down,
         bound_s=RETRIED),
    Case("kafka-clean", "Kafka broker restarted cleanly (SIGTERM, 5 s down)", kafka_clean, bound_s=RESTARTED),
    Case("kafka-hard", "Kafka broker killed (SIGKILL, 5 s down) and restarted", kafka_hard, bound_s=RESTARTED),
    Case("job-killed", "job (JobManager + TaskManager) killed, restored from its checkpoint", job_killed,
         bound_s=FRESH_JOB),
    Case("duplicates", "upstream resends: 300 more duplicate ids", extra={"duplicate": 300}),
    Case("oversized", "oversized inputs (1.5 MB, +8) and outputs (2 MB model answers, +20)",
         extra={"oversized_input": 8, "oversized_output": 20}),
    Case("poison", "poison records: the model answers 500 on every try (+20)", extra={"poison": 20}),
    Case("dlq-unavailable", "dead-letter topic refuses writes for 30 s", dead_letter_topic_unavailable,
         bound_s=RESTARTED),
    Case("rescale", "job stopped at a checkpoint, restarted with parallelism 2", rescaled, bound_s=FRESH_JOB),
    Case("registry-down", "schema registry killed for 30 s while new schema ids arrive (+300 older-writer events)",
         registry_down, late={"old_writer": 300}, bound_s=RESTARTED),
    Case("feature-slow", "feature store slow for 30 s: 20-80 ms, 5% at 500 ms (deadline 200 ms)", feature_slow,
         proxy="redis", bound_s=RETRIED),
    Case("model-slow", "model server slow for 30 s: 0.3-1.5 s, 5% at 4.5 s (deadline 3 s)", model_slow,
         proxy="model", bound_s=RETRIED),
    Case("partitions-raised", "input topic raised from 3 to 6 partitions while the job runs", partitions_raised,
         bound_s=RETRIED),
]  # fmt: skip


def job_killed_fresh_start(run: CaseRun) -> None:
    """Kill the job while it is backpressured (model paused), then start it WITHOUT its checkpoint: the source
    starts from the group offsets committed at the last checkpoint (what a redeploy that lost its checkpoint
    folder does)."""
    run.stack.signal_model(signal.SIGSTOP)
    try:
        run.wait_new_checkpoint()
        run.wait_new_checkpoint()
        run.kill_job()
    finally:
        run.stack.signal_model(signal.SIGCONT)
    run.start_job(resume=False)


#: not among the 15: demonstrations of a finding (run by name: python -m tests.reliability job-killed-fresh)
DEMOS: list[Case] = [
    Case("job-killed-fresh", "job killed under backpressure, restarted from the group offsets (no checkpoint)",
         job_killed_fresh_start),
]  # fmt: skip

BY_NAME = {case.name: case for case in [*CASES, *DEMOS]}

#: the cheapest meaningful cases: run by `make test` (tests/reliability/test_reliability.py)
SUBSET = ["model-killed", "poison", "job-killed"]
