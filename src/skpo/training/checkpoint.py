"""Atomic checkpoints: weights (safetensors), optimizer, scheduler, trackers, RNG states and
the step, so ``--resume`` continues exactly.

Layout: ``RUN/checkpoints/step_000050/`` holding ``model/`` (an HF directory: config,
``model.safetensors``, tokenizer), ``optimizer.pt``, ``scheduler.pt``, ``state.json`` and
``manifest.json`` (size and SHA-256 of every file). A checkpoint is written into a temporary
sibling directory and renamed into place only when complete; ``latest`` is replaced
atomically after that. A crash mid-write therefore leaves a ``.tmp-*`` directory that loading
ignores (and the next save removes), never a checkpoint that loads wrong; the manifest also
catches files damaged afterwards.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

CHECKPOINT_DIR = "checkpoints"
LATEST = "latest"


class CheckpointError(RuntimeError):
    pass


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def rng_state() -> dict[str, Any]:
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(
    run_dir: Path,
    step: int,
    model,
    tokenizer,
    optimizer: torch.optim.Optimizer,
    scheduler,
    state: dict[str, Any],
    keep: int = 2,
) -> Path:
    """Write checkpoint ``step`` atomically and prune to the newest ``keep``."""
    root = Path(run_dir) / CHECKPOINT_DIR
    root.mkdir(parents=True, exist_ok=True)
    for stale in root.glob(".tmp-*"):
        shutil.rmtree(stale, ignore_errors=True)
    final = root / f"step_{step:06d}"
    tmp = root / f".tmp-{final.name}-{os.getpid()}"
    tmp.mkdir()
    model.save_pretrained(tmp / "model", safe_serialization=True)
    tokenizer.save_pretrained(tmp / "model")
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
    torch.save(rng_state(), tmp / "rng.pt")
    (tmp / "state.json").write_text(json.dumps({"step": step, **state}))
    files = sorted(p for p in tmp.rglob("*") if p.is_file())
    manifest = {str(p.relative_to(tmp)): {"size": p.stat().st_size, "sha256": _sha256(p)} for p in files}
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))
    for p in files + [tmp / "manifest.json"]:
        with p.open("rb") as f:
            os.fsync(f.fileno())
    if final.exists():
        shutil.rmtree(final)
    os.rename(tmp, final)
    _fsync_dir(root)
    pointer = root / f".{LATEST}.tmp"
    pointer.write_text(final.name)
    os.replace(pointer, root / LATEST)
    _fsync_dir(root)
    done = sorted(p for p in root.glob("step_*") if p.is_dir())
    for old in done[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def verify_checkpoint(path: Path) -> None:
    """Check every file against the manifest; raise naming the first problem."""
    manifest_path = path / "manifest.json"
    if not manifest_path.is_file():
        raise CheckpointError(f"{path}: no manifest.json (incomplete or not a checkpoint)")
    manifest = json.loads(manifest_path.read_text())
    for name, info in manifest.items():
        p = path / name
        if not p.is_file():
            raise CheckpointError(f"{path}: missing {name}")
        if p.stat().st_size != info["size"] or _sha256(p) != info["sha256"]:
            raise CheckpointError(f"{path}: {name} does not match its manifest (damaged)")


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete checkpoint of a run, or None."""
    root = Path(run_dir) / CHECKPOINT_DIR
    pointer = root / LATEST
    if pointer.is_file():
        path = root / pointer.read_text().strip()
        if path.is_dir():
            return path
    done = sorted(p for p in root.glob("step_*") if p.is_dir() and (p / "manifest.json").is_file())
    return done[-1] if done else None


def load_checkpoint(path: Path, optimizer: torch.optim.Optimizer, scheduler) -> dict[str, Any]:
    """Restore optimizer, scheduler and RNG state; return ``state.json``. Weights are loaded
    by the caller from ``path / 'model'`` (so a checkpoint is also a plain HF model dir)."""
    verify_checkpoint(path)
    optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=False))
    scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=False))
    set_rng_state(torch.load(path / "rng.pt", weights_only=False))
    return json.loads((path / "state.json").read_text())
