"""Pinned third-party artifacts of the local stack, fetched from Maven Central into the cache folder.

=====================================  ==============  ===================================================
artifact                               version         why this one
=====================================  ==============  ===================================================
Apache Kafka broker (kafka_2.13)       4.1.1           KRaft only (no ZooKeeper), Java 17; the cluster the
                                                       Flink connector's kafka-clients 4.x talks to
Flink Kafka SQL connector              5.0.0-2.2       newest release; built for Flink 2.2 (PyFlink 2.2.1)
Flink Prometheus metrics reporter      2.2.1           PyFlink's version; the local job's mini-cluster finds
                                                       reporters on its classpath only (not in plugins/)
Apicurio Registry (Quarkus app)        3.0.9           Confluent-compatible REST API (``/apis/ccompat/v7``);
                                                       3.1+ needs Java 21, this machine has Java 17
=====================================  ==============  ===================================================

Fetching is idempotent: a ``.complete`` marker is written after a successful fetch, and a second call returns
at once. The Kafka marker holds a fingerprint of the dependency list (``maven/kafka-broker.pom.xml``): a cache
fetched with another list is fetched again. Maven's own repository cache is kept under ``<cache>/m2`` so
nothing lands in ``~/.m2``.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tarfile
import tempfile
import urllib.request
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from vatic.schemas.errors import MissingArtifact

KAFKA_VERSION = "4.1.1"
FLINK_KAFKA_CONNECTOR_VERSION = "5.0.0-2.2"
FLINK_PROMETHEUS_REPORTER_VERSION = "2.2.1"
APICURIO_VERSION = "3.0.9"
MAVEN_CENTRAL = "https://repo1.maven.org/maven2"


_KAFKA_POM = resources.files("vatic.cli.stack") / "maven" / "kafka-broker.pom.xml"


def _kafka_fingerprint() -> str:
    """What the Kafka cache's marker holds: the version and a digest of the dependency list."""
    return f"{KAFKA_VERSION} {hashlib.sha256(_KAFKA_POM.read_bytes()).hexdigest()[:16]}"


@dataclass(frozen=True)
class Artifacts:
    """Paths of the cached artifacts under one cache folder."""

    cache: Path

    @property
    def kafka_libs(self) -> Path:
        return self.cache / "kafka" / KAFKA_VERSION / "libs"

    @property
    def flink_kafka_connector(self) -> Path:
        return self.cache / "flink" / f"flink-sql-connector-kafka-{FLINK_KAFKA_CONNECTOR_VERSION}.jar"

    @property
    def prometheus_reporter(self) -> Path:
        return self.cache / "flink" / f"flink-metrics-prometheus-{FLINK_PROMETHEUS_REPORTER_VERSION}.jar"

    @property
    def apicurio_home(self) -> Path:
        return self.cache / "apicurio" / APICURIO_VERSION

    @property
    def apicurio_jar(self) -> Path:
        return self.apicurio_home / f"apicurio-registry-app-{APICURIO_VERSION}-runner.jar"

    @property
    def maven_repo(self) -> Path:
        return self.cache / "m2"

    # -- presence checks with one clear line each -----------------------------------------------------------

    def require_kafka(self) -> Path:
        marker = self.kafka_libs / ".complete"
        if not marker.is_file() or marker.read_text(encoding="utf-8") != _kafka_fingerprint():
            raise MissingArtifact(
                f"Kafka broker {KAFKA_VERSION} jars are not in {self.kafka_libs}: run `make setup` "
                "(or `vatic stack fetch`) to download them from Maven Central"
            )
        return self.kafka_libs

    def require_flink_kafka_connector(self) -> Path:
        if not self.flink_kafka_connector.is_file():
            raise MissingArtifact(
                f"Flink Kafka connector {FLINK_KAFKA_CONNECTOR_VERSION} is not at {self.flink_kafka_connector}: "
                "run `make setup` (or `vatic stack fetch`)"
            )
        return self.flink_kafka_connector

    def require_prometheus_reporter(self) -> Path:
        """The pinned reporter jar: the fetched copy, else the identical one PyFlink ships as a plugin (so that a
        checkout fetched before the pin still runs)."""
        if self.prometheus_reporter.is_file():
            return self.prometheus_reporter
        shipped = _pyflink_plugin(f"metrics-prometheus/{self.prometheus_reporter.name}")
        if shipped is not None:
            return shipped
        raise MissingArtifact(
            f"Flink Prometheus reporter {FLINK_PROMETHEUS_REPORTER_VERSION} is not at {self.prometheus_reporter}: "
            "run `make setup` (or `vatic stack fetch`), or run the job with --metrics-port 0"
        )

    def require_apicurio(self) -> Path:
        if not (self.apicurio_home / ".complete").is_file():
            raise MissingArtifact(
                f"Apicurio Registry {APICURIO_VERSION} is not in {self.apicurio_home}: run `make setup` "
                "(or `vatic stack fetch`)"
            )
        return self.apicurio_jar

    # -- fetching ------------------------------------------------------------------------------------------

    def fetch_all(self) -> list[str]:
        """Fetch whatever is missing; return one line per artifact saying what was done."""
        return [
            self.fetch_kafka(),
            self.fetch_flink_kafka_connector(),
            self.fetch_prometheus_reporter(),
            self.fetch_apicurio(),
        ]

    def fetch_kafka(self) -> str:
        marker = self.kafka_libs / ".complete"
        fingerprint = _kafka_fingerprint()
        if marker.is_file() and marker.read_text(encoding="utf-8") == fingerprint:
            return f"kafka {KAFKA_VERSION}: cached in {self.kafka_libs}"
        with resources.as_file(_KAFKA_POM) as pom_path:
            self._mvn(
                "-f", str(pom_path), "dependency:copy-dependencies",
                f"-DoutputDirectory={self.kafka_libs}", "-DincludeScope=runtime",
                f"-Dkafka.version={KAFKA_VERSION}",
            )  # fmt: skip
        marker.write_text(fingerprint, encoding="utf-8")
        return f"kafka {KAFKA_VERSION}: fetched into {self.kafka_libs}"

    def fetch_flink_kafka_connector(self) -> str:
        jar = self.flink_kafka_connector
        if jar.is_file():
            return f"flink-sql-connector-kafka {FLINK_KAFKA_CONNECTOR_VERSION}: cached at {jar}"
        self._mvn(
            "dependency:copy",
            f"-Dartifact=org.apache.flink:flink-sql-connector-kafka:{FLINK_KAFKA_CONNECTOR_VERSION}",
            f"-DoutputDirectory={jar.parent}",
        )
        return f"flink-sql-connector-kafka {FLINK_KAFKA_CONNECTOR_VERSION}: fetched to {jar}"

    def fetch_prometheus_reporter(self) -> str:
        jar = self.prometheus_reporter
        name = f"flink-metrics-prometheus {FLINK_PROMETHEUS_REPORTER_VERSION}"
        if jar.is_file():
            return f"{name}: cached at {jar}"
        self._mvn(
            "dependency:copy",
            f"-Dartifact=org.apache.flink:flink-metrics-prometheus:{FLINK_PROMETHEUS_REPORTER_VERSION}",
            f"-DoutputDirectory={jar.parent}",
        )
        return f"{name}: fetched to {jar}"

    def fetch_apicurio(self) -> str:
        marker = self.apicurio_home / ".complete"
        if marker.is_file():
            return f"apicurio-registry {APICURIO_VERSION}: cached in {self.apicurio_home}"
        name = f"apicurio-registry-app-{APICURIO_VERSION}-all.tar.gz"
        url = f"{MAVEN_CENTRAL}/io/apicurio/apicurio-registry-app/{APICURIO_VERSION}/{name}"
        self.apicurio_home.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=self.apicurio_home.parent) as tmp:
            archive = Path(tmp) / name
            try:
                with urllib.request.urlopen(url, timeout=120) as response, archive.open("wb") as out:  # noqa: S310
                    shutil.copyfileobj(response, out)
            except OSError as exc:
                raise MissingArtifact(f"could not download {url}: {exc}") from exc
            with tarfile.open(archive) as tar:
                # filter="data" refuses absolute paths, links out of the tree and device files (CWE-22)
                tar.extractall(self.apicurio_home, filter="data")
        if not self.apicurio_jar.is_file():
            raise MissingArtifact(f"{name} did not contain {self.apicurio_jar.name}")
        marker.write_text(APICURIO_VERSION, encoding="utf-8")
        return f"apicurio-registry {APICURIO_VERSION}: fetched into {self.apicurio_home}"

    def _mvn(self, *args: str) -> None:
        mvn = shutil.which("mvn")
        if mvn is None:
            raise MissingArtifact("mvn (Apache Maven) not found: install it with `apt-get install -y maven`")
        self.maven_repo.mkdir(parents=True, exist_ok=True)
        cmd = [mvn, "-q", "-B", f"-Dmaven.repo.local={self.maven_repo}", *args]
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            tail = (done.stdout + done.stderr).strip().splitlines()[-5:]
            raise MissingArtifact(f"`mvn {' '.join(args[:2])}` failed: {' | '.join(tail)}")


def _pyflink_plugin(relative: str) -> Path | None:
    """A file under the installed PyFlink's ``plugins/`` folder, if it is there."""
    import importlib.util

    spec = importlib.util.find_spec("pyflink")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "plugins" / relative
    return path if path.is_file() else None
