"""A model version rolled out under load, on real processes: Kafka, PyFlink, MLServer and its rollout controller
following a local registry stage.

While 10,000 events stream through the job, the registry's ``production`` stage moves to a new version, then to
one that cannot load. The job is never restarted. The oracle of tests/streaming/test_job.py holds (every event
exactly once, in the output or the dead-letter topic, under read_committed), every prediction names version 1
or 2, each input partition switches from 1 to 2 exactly once (in offset order), the broken version answers
nothing and the controller says why it refused it.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import time
import uuid
from collections import defaultdict

import yaml

from tests.fixtures.model_server import model_server, server_python
from tests.fixtures.rollout import follow, register, stage
from tests.streaming.test_job import check_oracle, drain, make_run, produce, start_job
from vatic.connectors.kafka import Consumer, scan
from vatic.schemas import AvroCodec, load_schema, topic_subject
from vatic.serving.config import load_service
from vatic.serving.runtimes.repository import write_repository
from vatic.serving.runtimes.rollout import controller_argv


def test_a_new_version_rolls_out_under_load_and_a_broken_one_is_refused(
    kafka_bootstrap, registry_url, features, tmp_path
):
    run = make_run(tmp_path, features, kafka_bootstrap, registry_url, batch_size=32)
    config = follow(yaml.safe_load((run.folder / "service.yaml").read_text()), refresh_s=0.5)
    (run.folder / "service.yaml").write_text(yaml.safe_dump(config))
    root = tmp_path / "registry"
    register(root, "1")
    stage(root, "1")
    repository = tmp_path / "models"
    write_repository(load_service(run.folder), repository, service_dir=run.folder, registry_root=root)
    server = model_server(tmp_path / "home", repository, name="rollout-mlserver", parallel_workers=0)
    server.start()
    controller_log = tmp_path / "rollout.log"
    controller = subprocess.Popen(
        [*controller_argv(server_python(), run.folder, repository, server.url, registry_root=root), "--grace-s", "5"],
        stdout=subprocess.DEVNULL, stderr=controller_log.open("ab"), start_new_session=True,
    )  # fmt: skip
    log = tmp_path / "job.log"
    job = start_job(run, server, tmp_path / "checkpoints", bounded=False, log=log)
    rounds: list[set[str]] = []
    try:

        def produce_round() -> None:
            before = set(run.sent)
            produce(run, kafka_bootstrap, 1_000)
            rounds.append(set(run.sent) - before)

        produce_round()
        # the job answers most of the first round (every partition) with version 1 before anything moves
        watcher = Consumer([run.topics["output"]], f"watch-{uuid.uuid4().hex}", run.settings(kafka_bootstrap))
        try:
            deadline, seen = time.monotonic() + 300, 0
            while seen < 800:
                assert job.poll() is None, log.read_text()[-3000:]
                assert time.monotonic() < deadline, f"the job committed {seen} predictions"
                seen += len(watcher.poll_batch(1000, timeout=0.5))
        finally:
            watcher.close()
        for number in range(1, 10):
            if number == 3:
                register(root, "2")
                stage(root, "2")
            if number == 5:
                register(root, "3", fail_load="broken on purpose")
                stage(root, "3")
            time.sleep(1)
            produce_round()
        predictions, dead = drain(run, kafka_bootstrap, expected=10_000, timeout_s=300)
    finally:
        os.killpg(job.pid, signal.SIGKILL)
        job.wait()
        controller.terminate()
        controller.wait(timeout=30)
        server.stop()

    check_oracle(run, predictions, dead)
    answered = {p["event_id"]: p["model_version"] for p in predictions}
    assert set(answered.values()) == {"1", "2"}
    assert {answered[i] for i in rounds[-1] if i in answered} == {"2"}  # produced well after the switch

    codec = AvroCodec(run.store, topic_subject(run.topics["input"]), load_schema("transaction"))
    by_partition: dict[int, list[str]] = defaultdict(list)
    for record in scan(run.topics["input"], run.settings(kafka_bootstrap)):
        if record.value in run.garbage:
            continue
        event_id = codec.decode(record.value or b"")["event_id"]
        if event_id in answered:
            by_partition[record.partition].append(answered[event_id])
    assert len(by_partition) == 3
    for partition, versions in by_partition.items():
        changes = [(a, b) for a, b in itertools.pairwise(versions) if a != b]
        assert changes == [("1", "2")], f"partition {partition}: versions change {changes}"

    text = controller_log.read_text()
    assert "switched from version 1 to 2" in text
    assert "version 3 refused, still serving 2" in text
    assert "broken on purpose" in server.process.log_file.read_text()  # the traceback the refusal points at
