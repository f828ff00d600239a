"""sha256 digests of artifact files and folders.

The digest of a folder is the sha256 of its *manifest*: one line ``<sha256 of file>  <relative path>\\n`` per
regular file (POSIX separators, two spaces, as ``sha256sum`` prints them), sorted by path. For a folder whose
paths contain no backslash or newline, the shell computes the same digest with::

    cd MODEL_DIR && find . -type f -printf '%P\\0' | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Mapping
from pathlib import Path

__all__ = ["PICKLE_SUFFIXES", "file_sha256", "folder_manifest", "is_pickle", "manifest_digest"]

#: Suffixes of files that ``pickle``/``joblib`` load - and loading a pickle can execute arbitrary code.
PICKLE_SUFFIXES = frozenset({".pkl", ".pickle", ".joblib"})


def is_pickle(relative_path: str) -> bool:
    """True for pickle-based files (``model.pkl``, ``model.joblib``, ``model.pkl.gz``...), case-insensitively."""
    return any(suffix.lower() in PICKLE_SUFFIXES for suffix in Path(relative_path).suffixes)


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of one file's bytes."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def folder_manifest(folder: str | os.PathLike[str]) -> dict[str, str]:
    """Relative POSIX path -> sha256 of every regular file under ``folder``.

    Symlinks are not followed and not listed (registries materialize plain copies before hashing);
    ``ValueError`` for anything that is neither a regular file, a folder nor a symlink.
    """
    root = Path(folder)
    files: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        base = Path(dirpath)
        for name in [*filenames, *dirnames]:
            path = base / name
            mode = path.lstat().st_mode
            if stat.S_ISREG(mode):
                files[path.relative_to(root).as_posix()] = file_sha256(path)
            elif not (stat.S_ISDIR(mode) or stat.S_ISLNK(mode)):
                raise ValueError(f"{path} is not a regular file")
    return files


def manifest_digest(files: Mapping[str, str]) -> str:
    """sha256 of a folder manifest (see the module docstring)."""
    h = hashlib.sha256()
    for path in sorted(files):
        h.update(f"{files[path]}  {path}\n".encode())
    return h.hexdigest()
