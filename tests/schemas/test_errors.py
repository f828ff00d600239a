"""The one error tree: its public members are pinned, and every error vatic raises on purpose lives in it."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

from vatic.schemas import errors

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("cli", "connectors", "examples", "schemas", "serving", "streaming")
ROOTS = (errors.Retryable, errors.DataError, errors.ConfigError)


def test_exported_members_are_pinned() -> None:
    """Adding, removing or renaming an error changes the public API (and the names dead letters carry): do it
    here on purpose."""
    assert sorted(errors.__all__) == [
        "AccessDenied",
        "ArtifactRejected",
        "ArtifactsMissing",
        "BinaryFormatError",
        "ConfigError",
        "ConfigFileError",
        "CredentialsRejected",
        "DataError",
        "DeadlineExceeded",
        "DecodeError",
        "DeliveryFailed",
        "EncodeError",
        "FeatureStoreUnavailable",
        "IncompatibleSchemaError",
        "InputProblem",
        "InvalidEntityKey",
        "InvalidRecord",
        "InvalidSchemaError",
        "ManifestInvalid",
        "MissingArtifact",
        "MissingDependency",
        "MissingEntityKey",
        "MissingFeatures",
        "ModelFailedOnInput",
        "ModelNotFound",
        "ModelNotReady",
        "ModelRejected",
        "ModelServerUnavailable",
        "ModelServerUntrusted",
        "OutputProblem",
        "PortInUse",
        "RecordTooLarge",
        "Retryable",
        "SchemaError",
        "SchemaNotFound",
        "SchemaSourceUnavailable",
        "ServiceNotFound",
        "ServiceUnavailable",
        "StartFailed",
        "TopicNotFound",
        "UnexpectedModelResponse",
        "UnknownSchemaError",
        "UntrustedCertificate",
        "VaticError",
    ]
    defined = {name for name, obj in vars(errors).items() if inspect.isclass(obj) and obj.__module__ == errors.__name__}
    assert defined == set(errors.__all__)


def test_every_error_has_exactly_one_root_that_says_what_to_do() -> None:
    for name in errors.__all__:
        cls = getattr(errors, name)
        if cls in (errors.VaticError, *ROOTS):
            continue
        assert sum(issubclass(cls, root) for root in ROOTS) == 1, name


def test_the_drawn_tree_is_the_class_tree() -> None:
    """The module docstring draws the tree; a class moved to another root without redrawing it fails here."""
    doc = errors.__doc__ or ""
    drawn = doc[doc.index("    VaticError\n") :]
    for name in errors.__all__:
        assert f" {name}" in drawn or f"-- {name}" in drawn, f"{name} is not in the drawing"
    sections = {root.__name__: drawn.index(f"+-- {root.__name__}") for root in ROOTS}
    order = sorted(sections, key=sections.__getitem__)
    for name in errors.__all__:
        cls = getattr(errors, name)
        if cls in (errors.VaticError, *ROOTS):
            continue
        at = drawn.index(f"-- {name}")
        root = next(r.__name__ for r in ROOTS if issubclass(cls, r))
        after = [sections[r] for r in order if sections[r] < at]
        assert after, f"{name} is drawn above every root"
        assert max(after) == sections[root], f"{name} is drawn under the wrong root"


def test_no_vatic_error_is_defined_outside_the_tree() -> None:
    """One module for the tree: an error class deriving from a vatic error anywhere else is a second home."""
    names = set(errors.__all__)
    offenders = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if path == ROOT / "schemas" / "errors.py":
                continue
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.ClassDef):
                    bases = {b.id if isinstance(b, ast.Name) else getattr(b, "attr", "") for b in node.bases}
                    if bases & names:
                        offenders.append(f"{path.relative_to(ROOT)}: {node.name}")
    assert offenders == []
