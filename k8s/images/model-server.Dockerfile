# Model-server image: MLServer 1.7.1 + vatic's runtimes (the `server` extra of pyproject.toml).
# Build from the repository root:  docker build -f k8s/images/model-server.Dockerfile -t vatic/model-server .
FROM python:3.11-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 UV_LINK_MODE=copy UV_PROJECT_ENVIRONMENT=/opt/venv
RUN pip install --no-cache-dir uv==0.13.8
WORKDIR /opt/vatic
COPY pyproject.toml uv.lock README.md LICENSE ./
COPY cli cli
COPY connectors connectors
COPY examples examples
COPY schemas schemas
COPY serving serving
COPY streaming streaming
RUN uv sync --locked --no-dev --no-editable --extra server && rm -rf /root/.cache
ENV PATH=/opt/venv/bin:$PATH
# non-root; the root filesystem can be mounted read-only (models come from a volume, state goes to /tmp)
USER 65532:65532
EXPOSE 8080 8081 8082
# `mlserver start` with a request body limit (VATIC_MODEL_MAX_BODY_BYTES; MLServer has none)
CMD ["python", "-m", "vatic.serving.runtimes.serve", "start", "/models"]
