# Pipeline image: Flink 2.2.1 (JobManager/TaskManager) + PyFlink + the vatic job and gateway (`pipeline` extra).
# Build from the repository root:  docker build -f k8s/images/pipeline.Dockerfile -t vatic/pipeline .
FROM flink:2.2.1-java17 AS flink

FROM python:3.11-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 UV_LINK_MODE=copy UV_PROJECT_ENVIRONMENT=/opt/venv \
    FLINK_HOME=/opt/flink JAVA_HOME=/usr/lib/jvm/java-17-openjdk-amd64
RUN apt-get update && apt-get install -y --no-install-recommends openjdk-17-jre-headless gettext-base procps curl \
    && rm -rf /var/lib/apt/lists/* && pip install --no-cache-dir uv==0.13.8 \
    && groupadd --system --gid 9999 flink && useradd --system --uid 9999 --gid flink --home /opt/flink flink
COPY --from=flink --chown=flink:flink /opt/flink /opt/flink
COPY --from=flink /docker-entrypoint.sh /docker-entrypoint.sh
# Python jobs need the flink-python jar on the cluster's classpath (the distribution keeps it in opt/)
RUN cp /opt/flink/opt/flink-python-*.jar /opt/flink/lib/
# the same pinned connector as vatic.cli.stack.artifacts.FLINK_KAFKA_CONNECTOR_VERSION
RUN curl -fsSL -o /opt/flink/lib/flink-sql-connector-kafka-5.0.0-2.2.jar \
    https://repo1.maven.org/maven2/org/apache/flink/flink-sql-connector-kafka/5.0.0-2.2/flink-sql-connector-kafka-5.0.0-2.2.jar
WORKDIR /opt/vatic
COPY pyproject.toml uv.lock README.md LICENSE ./
COPY cli cli
COPY connectors connectors
COPY examples examples
COPY schemas schemas
COPY serving serving
COPY streaming streaming
RUN uv sync --locked --no-dev --no-editable --extra pipeline && rm -rf /root/.cache
ENV PATH=/opt/venv/bin:/opt/flink/bin:$PATH
USER flink
ENTRYPOINT ["/docker-entrypoint.sh"]
CMD ["help"]
