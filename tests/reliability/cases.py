"""The 15 cases of issue 7 (see ../shared/design/reliability.md, section 2): one fault each.

Every case runs the same seeded mix (about 5% bad inputs of every kind, see :mod:`tests.reliability.events`);
data cases add more of their kind, fault cases apply their fault once the job has answered ``trigger``
records. A fault function returns when the fault is healed (and sets ``run.healed_at`` when the healing
moment is not the return).
"""

from __future__ import annotations

import signal
import time

from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource

from tests.reliability.events import ROGUE_SCHEMA
from tests.reliability.harness import Case, CaseRun
from vatic.schemas import topic_subject
from vatic.schemas.errors import IncompatibleSchemaError


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
    """The schema store refuses the rogue writer schema under the input subject (BACKWARD_TRANSITIVE): a
    producer cannot register it; the events written with it under another subject are dead-lettered."""
    subject = topic_subject(run.topics["input"])
    run.store.set_compatibility(subject, "BACKWARD_TRANSITIVE")
    try:
        run.store.register(subject, ROGUE_SCHEMA)
    except IncompatibleSchemaError as exc:
        run.notes.append(f"registration refused: {exc.message[:100]}")
    else:
        run.problems.append(f"an incompatible schema was registered under {subject} (BACKWARD_TRANSITIVE)")


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


CASES: list[Case] = [
    Case("model-killed", "model server killed mid-stream, restarted after 5 s", model_killed),
    Case("model-paused", "model server paused 15 s (SIGSTOP/SIGCONT)", model_paused),
    Case("model-4xx-5xx", "model rejects some inputs (400) and answers 503 for 15 s", model_5xx),
    Case("malformed-avro", "malformed Avro: garbage, truncated, unknown schema id (+200)",
         extra={"garbage": 70, "truncated": 70, "unknown_schema_id": 60}),
    Case("schema-incompatible", "events written with an unresolvable writer schema (+200); registry refuses it",
         registry_refuses_incompatible, extra={"incompatible_schema": 200}, recovers=False),
    Case("feature-miss", "unknown entities: required feature missing (+200)", extra={"unknown_entity": 200}),
    Case("redis-down", "Redis (online store) killed for 20 s, restarted from its snapshot", redis_down),
    Case("kafka-clean", "Kafka broker restarted cleanly (SIGTERM, 5 s down)", kafka_clean),
    Case("kafka-hard", "Kafka broker killed (SIGKILL, 5 s down) and restarted", kafka_hard),
    Case("job-killed", "job (JobManager + TaskManager) killed, restored from its checkpoint", job_killed),
    Case("duplicates", "upstream resends: 300 more duplicate ids", extra={"duplicate": 300}),
    Case("oversized", "oversized inputs (1.5 MB, +8) and outputs (2 MB model answers, +20)",
         extra={"oversized_input": 8, "oversized_output": 20}),
    Case("poison", "poison records: the model answers 500 on every try (+20)", extra={"poison": 20}),
    Case("dlq-unavailable", "dead-letter topic refuses writes for 30 s", dead_letter_topic_unavailable),
    Case("rescale", "job stopped at a checkpoint, restarted with parallelism 2", rescaled),
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
