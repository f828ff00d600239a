"""``vatic predict``: one REST request to a service through the gateway; prints the prediction event."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from vatic.cli.deploy.workspace import default_home, load_state
from vatic.schemas.errors import ConfigError

DEFAULT_URL = "http://127.0.0.1:8000"


def _service_name(service: str) -> str:
    folder = Path(service)
    if (folder / "service.yaml").is_file():
        from vatic.serving.config.loader import load_yaml_with_lines

        data, _ = load_yaml_with_lines(folder / "service.yaml")
        return str((data or {}).get("service", service))
    return service


def _body(data: str) -> dict[str, Any]:
    text = Path(data[1:]).read_text(encoding="utf-8") if data.startswith("@") else data
    try:
        body = json.loads(text)
    except ValueError as exc:
        raise ConfigError(f"--data is not JSON: {exc}; pass a JSON object of event fields (or @file.json)") from None
    if not isinstance(body, dict):
        raise ConfigError("--data must be a JSON object of event fields, e.g. '{\"amount\": 12.5}'")
    return body


def predict(
    service: Annotated[str, typer.Argument(help="service name (or its folder)")],
    data: Annotated[
        str,
        typer.Option("--data", "-d", help="JSON object of event fields, or @file.json", envvar="VATIC_PREDICT_DATA"),
    ],
    url: Annotated[
        str | None,
        typer.Option(
            help="gateway base URL; default: the service's running workspace, else " + DEFAULT_URL,
            envvar="VATIC_GATEWAY_URL",
            show_default=False,
        ),
    ] = None,
    token: Annotated[
        str | None, typer.Option(help="bearer token", envvar="VATIC_GATEWAY_AUTH_TOKEN", show_default=False)
    ] = None,
    timeout_s: Annotated[
        float, typer.Option(help="request timeout in seconds", envvar="VATIC_PREDICT_TIMEOUT_S")
    ] = 30.0,
) -> None:
    """POST the event to /v1/services/SERVICE/predict and print the answer; exit code 1 unless it is a 2xx."""
    import httpx

    name = _service_name(service)
    body = _body(data)
    if url is None:
        state = load_state(default_home(), name)
        url = state.gateway_url if state is not None else DEFAULT_URL
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    endpoint = f"{url.rstrip('/')}/v1/services/{name}/predict"
    try:
        response = httpx.post(endpoint, json=body, headers=headers, timeout=timeout_s, trust_env=False)
    except httpx.HTTPError as exc:
        raise ConfigError(
            f"cannot reach the gateway at {url} ({type(exc).__name__}: {exc}); start one with `vatic workspace up "
            "<service folder>` or pass --url"
        ) from None
    try:
        typer.echo(json.dumps(response.json(), indent=2, ensure_ascii=False))
    except ValueError:
        typer.echo(response.text)
    if not response.is_success:
        typer.echo(f"predict: HTTP {response.status_code} from {endpoint}", err=True)
        raise typer.Exit(1)
