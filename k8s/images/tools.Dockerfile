# Tools image: one-shot jobs that need both environments side by side, as a checkout has them (.venv/pipeline and
# .venv/server) - `vatic usecases prepare` runs Feast in the pipeline environment and trains in the model-server
# environment. Build from the repository root:  docker build -f k8s/images/tools.Dockerfile -t vatic/tools .
FROM python:3.11-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 UV_LINK_MODE=copy
RUN pip install --no-cache-dir uv==0.13.8
WORKDIR /opt/vatic
COPY pyproject.toml uv.lock README.md LICENSE ./
COPY cli cli
COPY connectors connectors
COPY examples examples
COPY schemas schemas
COPY serving serving
COPY streaming streaming
RUN UV_PROJECT_ENVIRONMENT=/opt/venv uv sync --locked --no-dev --no-editable --extra pipeline \
    && UV_PROJECT_ENVIRONMENT=/opt/server uv sync --locked --no-dev --no-editable --extra server \
    && rm -rf /root/.cache
# the pipeline environment first; training finds the model-server environment next to its mlserver
ENV PATH=/opt/venv/bin:$PATH VATIC_STACK_MLSERVER=/opt/server/bin/mlserver
CMD ["vatic", "--help"]
