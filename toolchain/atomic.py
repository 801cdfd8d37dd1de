"""Atomic directory writes and sha256 manifests: an artifact is complete or absent."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from toolchain.errors import ToolchainError

MANIFEST = "manifest.json"


@contextlib.contextmanager
def atomic_dir(target: Path, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temp dir beside ``target``; rename it onto ``target`` only if the block succeeds.

    Raises:
        ToolchainError: ``target`` exists and ``overwrite`` is False.
    """
    target = Path(target)
    if target.exists() and not overwrite:
        raise ToolchainError(f"{target}: already exists")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        yield tmp
        if target.exists():
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to a temp file beside ``path``, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, data) -> None:
    """JSON (indent 2, trailing newline) written atomically: readers never see half a file."""
    write_text_atomic(path, json.dumps(data, indent=2) + "\n")


def read_json(path: Path, what: str = "JSON file"):
    """Parse a JSON file; a missing, unreadable or malformed file is one clear error.

    Raises:
        ToolchainError: ``path: cannot read <what>: ...`` or ``path:line: invalid JSON: ...``.
    """
    try:
        text = Path(path).read_text()
    except OSError as err:
        raise ToolchainError(f"{path}: cannot read {what}: {err.strerror or err}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise ToolchainError(f"{path}:{err.lineno}: invalid JSON: {err.msg}") from None


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_hashes(root: Path) -> dict[str, str]:
    """sha256 of every file below ``root`` except the manifest, keyed by relative posix path."""
    root = Path(root)
    return {
        p.relative_to(root).as_posix(): sha256_file(p)
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != MANIFEST
    }


def write_manifest(root: Path, fields: dict) -> dict:
    """Write manifest.json with ``fields`` plus a ``files`` map of sha256s; returns it."""
    manifest = {**fields, "files": file_hashes(root)}
    (Path(root) / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return manifest


def read_manifest(root: Path, verify: bool = True) -> dict:
    """Read manifest.json and (by default) check every listed file's sha256.

    Raises:
        ToolchainError: missing manifest, missing file, or a file whose hash changed.
    """
    root = Path(root)
    path = root / MANIFEST
    if not path.is_file():
        raise ToolchainError(f"{path}: no manifest (is {root} an artifact directory?)")
    manifest = read_json(path, "manifest")
    if verify:
        for rel, expected in manifest.get("files", {}).items():
            file = root / rel
            if not file.is_file():
                raise ToolchainError(f"{file}: listed in {path} but missing")
            if sha256_file(file) != expected:
                raise ToolchainError(f"{file}: sha256 differs from {path} (file was changed)")
    return manifest
