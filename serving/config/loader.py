"""Load a service folder (``service.yaml`` + ``<environment>.yaml``) into a validated :class:`ServiceConfig`.

Contract: :func:`load_service` returns a config or raises :class:`ConfigFileError`, whose ``lines`` hold one
entry per problem, each ``<file>:<line>: <key path>: <what is wrong>; <how to fix it>``. Values of an overlay
file replace those of ``service.yaml`` key by key (mappings merge recursively, lists are replaced whole), and
each problem is reported at the file and line where the offending value was written.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from vatic.schemas.errors import ConfigFileError
from vatic.serving.config.base import AT
from vatic.serving.config.model import ServiceConfig

BASE_FILE = "service.yaml"
Loc = tuple[str | int, ...]


@dataclass(frozen=True)
class Where:
    file: Path
    line: int  # 1-based


def load_yaml_with_lines(path: Path) -> tuple[Any, dict[Loc, Where]]:
    """Parse one YAML file; return the data and, for every key path, where its value starts."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigFileError([f"{path}: cannot read: {exc.strerror}"]) from exc
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line = mark.line + 1 if mark else 1
        raise ConfigFileError([f"{path}:{line}: invalid YAML: {exc.problem}; fix the syntax"]) from exc
    where: dict[Loc, Where] = {(): Where(path, 1)}
    if node is not None:
        _index(node, (), path, where)
    return data, where


def _index(node: yaml.Node, loc: Loc, path: Path, where: dict[Loc, Where]) -> None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value
            child = (*loc, key)
            # a problem with a key (unknown, duplicate) points at the key; with its value at the value
            where[child] = Where(path, key_node.start_mark.line + 1)
            where[(*child, "__value__")] = Where(path, value_node.start_mark.line + 1)
            _index(value_node, child, path, where)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            child = (*loc, index)
            where[child] = Where(path, item.start_mark.line + 1)
            _index(item, child, path, where)


def _merge(base: Any, overlay: Any, base_where: dict[Loc, Where], where: dict[Loc, Where], loc: Loc) -> Any:
    if isinstance(base, dict) and isinstance(overlay, dict):
        merged = dict(base)
        for key, value in overlay.items():
            merged[key] = _merge(base.get(key), value, base_where, where, (*loc, key))
        return merged
    # replaced: every location under loc now comes from the overlay
    for stale in [k for k in base_where if k[: len(loc)] == loc and len(k) > len(loc)]:
        base_where.pop(stale, None)
    return overlay


def _hint(model: type[BaseModel] | None, key: str) -> str:
    if model is None:
        return "remove it"
    allowed = list(model.model_fields)
    close = difflib.get_close_matches(key, allowed, n=1)
    suggestion = f"did you mean '{close[0]}'? " if close else ""
    return f"{suggestion}allowed keys here: {', '.join(allowed)}"


def _section_model(loc: Loc) -> type[BaseModel] | None:
    """The pydantic model that validates the mapping at ``loc`` (for unknown-key hints)."""
    model: Any = ServiceConfig
    for part in loc:
        if isinstance(part, int) or model is None:
            continue
        field = model.model_fields.get(part) if hasattr(model, "model_fields") else None
        if field is None:
            return None
        model = _unwrap(field.annotation)
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def _unwrap(annotation: Any) -> Any:
    args = getattr(annotation, "__args__", None)
    if args:
        for arg in args:
            inner = _unwrap(arg)
            if isinstance(inner, type) and issubclass(inner, BaseModel):
                return inner
        return None
    return annotation


def _locate(loc: Loc, where: dict[Loc, Where], *, key: bool) -> Where:
    probe = loc
    while probe:
        found = where.get(probe if key else (*probe, "__value__")) or where.get(probe)
        if found:
            return found
        probe = probe[:-1]
    return where[()]


def _describe(error: Mapping[str, Any], where: dict[Loc, Where]) -> str:
    loc: Loc = tuple(p for p in error["loc"] if not (isinstance(p, str) and p.startswith("function-after")))
    dotted = ".".join(str(p) for p in loc) or "(top level)"
    kind = error["type"]
    if kind == "extra_forbidden":
        spot = _locate(loc, where, key=True)
        hint = _hint(_section_model(loc[:-1]), str(loc[-1]))
        return f"{spot.file}:{spot.line}: {dotted}: unknown key '{loc[-1]}'; {hint}"
    if kind == "missing":
        spot = _locate(loc[:-1], where, key=True)
        model = _section_model(loc[:-1])
        field = model.model_fields.get(str(loc[-1])) if model else None
        about = f" ({field.description})" if field and field.description else ""
        return f"{spot.file}:{spot.line}: {dotted}: missing required key '{loc[-1]}'{about}; add it"
    message = str(error["msg"]).removeprefix("Value error, ")
    if kind == "value_error" and message.startswith(AT) and ": " in message:
        path, message = message[len(AT) :].split(": ", 1)  # a validator naming the value below its section
        loc = (*loc, *(int(p) if p.isdigit() else p for p in path.split(".")))
        dotted = ".".join(str(p) for p in loc)
        spot = _locate(loc, where, key=False)
        return f"{spot.file}:{spot.line}: {dotted}: {message}"
    spot = _locate(loc, where, key=False)
    got = error.get("input")
    shown = "" if isinstance(got, dict | list) or got is None else f" (got {got!r})"
    model = _section_model(loc[:-1]) if loc else None
    field = model.model_fields.get(str(loc[-1])) if model and loc else None
    if kind == "value_error":  # our own validators say what to do in their message
        return f"{spot.file}:{spot.line}: {dotted}: {message}{shown}"
    fix = _fix(kind, error.get("ctx") or {}, str(loc[-1]) if loc else dotted)
    about = f" - {loc[-1]}: {field.description}" if field and field.description else ""
    return f"{spot.file}:{spot.line}: {dotted}: {message}{shown}; {fix}{about}"


#: pydantic error types of numeric bounds -> the comparison a fix asks for
_BOUNDS = {"greater_than_equal": ("ge", ">="), "greater_than": ("gt", ">"), "less_than_equal": ("le", "<="),
           "less_than": ("lt", "<")}  # fmt: skip


def _fix(kind: str, ctx: Mapping[str, Any], key: str) -> str:
    """How to fix one validation error of a value (the 'fix' half of a ``file:line: problem; fix`` line)."""
    if kind in _BOUNDS:
        name, sign = _BOUNDS[kind]
        return f"fix: set {key} to a value {sign} {ctx.get(name)}"
    if kind == "literal_error":
        return f"fix: use one of {ctx.get('expected')}"
    if kind == "string_pattern_mismatch":
        return f"fix: write {key} to match {ctx.get('pattern')}"
    if kind in ("too_short", "too_long"):
        return (
            "fix: "
            + ("add at least " if kind == "too_short" else "keep at most ")
            + (f"{ctx.get('min_length') if kind == 'too_short' else ctx.get('max_length')} entries/characters in {key}")
        )
    if kind.startswith(("int_", "float_")):
        return f"fix: write {key} as a number"
    if kind.startswith("bool"):
        return f"fix: write {key} as true or false"
    if kind.startswith(("string_", "str_")):
        return f"fix: write {key} as a string (quote it)"
    if kind in ("dict_type", "model_type", "model_attributes_type"):
        return f"fix: write {key} as a mapping of keys to values"
    if kind == "list_type":
        return f"fix: write {key} as a list"
    return f"fix: correct {key}"


def load_service(path: Path | str, environment: str | None = None) -> ServiceConfig:
    """Load ``<folder>/service.yaml`` merged with ``<folder>/<environment>.yaml`` (if given).

    ``path`` may be the folder or its ``service.yaml``. An environment whose file does not exist is an error
    (a typo must not deploy the defaults).
    """
    folder = Path(path)
    if folder.is_file():
        folder = folder.parent
    base_file = folder / BASE_FILE
    data, where = load_yaml_with_lines(base_file)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigFileError([f"{base_file}:1: the service config must be a mapping of keys to values"])
    if environment and environment != "local":
        overlay_file = folder / f"{environment}.yaml"
        if not overlay_file.is_file():
            known = sorted(p.stem for p in folder.glob("*.yaml") if p.name != BASE_FILE)
            raise ConfigFileError(
                [f"{overlay_file}: no such environment file; environments of this service: {', '.join(known)}"]
            )
        overlay, overlay_where = load_yaml_with_lines(overlay_file)
        if overlay is not None:
            if not isinstance(overlay, dict):
                raise ConfigFileError([f"{overlay_file}:1: an environment file must be a mapping of keys to values"])
            data = _merge(data, overlay, where, overlay_where, ())
            where = {**where, **{k: v for k, v in overlay_where.items() if k != ()}}
        data["environment"] = environment
    try:
        return ServiceConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigFileError([_describe(e, where) for e in exc.errors()]) from exc
