"""Checkpoint manifests: every file's size and SHA-256, checked before anything loads a
checkpoint (a damaged or truncated file is named, never loaded)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from skpo.errors import CheckpointError


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


_VERIFIED: dict[Path, tuple] = {}  # path → file stats when last verified (hash once per process)


def verify_checkpoint(path: Path) -> None:
    """Check every file against the manifest (size, then SHA-256); raise naming the first
    problem. Call before loading anything from ``path``."""
    path = Path(path)
    manifest_path = path / "manifest.json"
    if not manifest_path.is_file():
        raise CheckpointError(f"{path}: no manifest.json (incomplete or not a checkpoint)")
    try:
        manifest = json.loads(manifest_path.read_text())
        items = [(name, int(info["size"]), str(info["sha256"])) for name, info in manifest.items()]
    except (ValueError, TypeError, KeyError, AttributeError) as err:
        raise CheckpointError(f"{path}: manifest.json is damaged ({err})") from None
    stats = []
    for name, size, _ in items:
        p = path / name
        if not p.is_file():
            raise CheckpointError(f"{path}: missing {name}")
        st = p.stat()
        if st.st_size != size:
            raise CheckpointError(f"{path}: {name} is {st.st_size} bytes, its manifest says {size} (damaged or truncated)")
        stats.append((name, st.st_size, st.st_mtime_ns, st.st_ino))
    key = path.resolve()
    if _VERIFIED.get(key) == tuple(stats):
        return
    for name, _, digest in items:
        if sha256_file(path / name) != digest:
            raise CheckpointError(f"{path}: {name} does not match its manifest (damaged)")
    _VERIFIED[key] = tuple(stats)
