"""Atomic checkpoints: weights (safetensors), optimizer, scheduler, trackers, RNG states and
the step, so ``--resume`` continues exactly.

Layout: ``RUN/checkpoints/step_000050/`` holding ``model/`` (an HF directory: config,
``model.safetensors``, tokenizer), ``optimizer.pt`` (a sharded run: ``optimizer/``, one
``torch.distributed.checkpoint`` file per rank, re-sharded on load), ``scheduler.pt``,
``state.json`` and ``manifest.json`` (size and SHA-256 of every file). A checkpoint is written into a temporary
sibling directory and renamed into place only when complete; ``latest`` is replaced
atomically after that. A crash mid-write therefore leaves a ``.tmp-*`` directory that loading
ignores (and the next start, resume or save removes), never a checkpoint that loads wrong; a
save that fails (disk full, an exception) removes its own. The manifest catches files damaged
afterwards: :func:`find_checkpoint` verifies it before anything is loaded and falls back to the
newest intact checkpoint of the run, with a warning naming both.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import random
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch
from safetensors.torch import load_file

if TYPE_CHECKING:
    from transformers import PreTrainedModel

from skpo.errors import DISK_FULL_ERRNOS, CheckpointError, DiskFullError, NoCheckpointError
from skpo.models.lora import is_lora, load_adapter, save_lora
from skpo.models.manifest import sha256_file, verify_checkpoint
from skpo.training.sharding import (
    full_state_dict,
    is_sharded,
    load_full_state_dict,
    load_sharded_optimizer,
    load_unsharded_optimizer,
    save_sharded_optimizer,
)

CHECKPOINT_DIR = "checkpoints"
LATEST = "latest"
STEP_RE = re.compile(r"step_(\d+)$")

log = logging.getLogger("skpo")


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
    model_state: dict[str, torch.Tensor] | None = None,
    optimizer_dir: Path | None = None,
    extra_states: dict[str, Any] | None = None,
) -> Path:
    """Write checkpoint ``step`` atomically and prune to the newest ``keep``. Saves into one run
    directory take turns (an ``flock`` on ``checkpoints/.save.lock``): two processes saving there
    directly — without the run directory's own lock, which ``skpo train`` holds — queue rather
    than remove each other's partial checkpoints.

    A sharded run passes the gathered weights as ``model_state`` and the optimizer state its
    ranks already wrote as ``optimizer_dir`` (:func:`sharded_stage`), which is moved in.
    ``extra_states``: further state by name, each saved as ``<name>.pt`` (a method's trained
    reward model: its weights and optimizer) and read back with :func:`load_extra_state`.

    Raises:
        DiskFullError: the disk (or quota) filled up; the partial checkpoint was removed.
    """
    root = Path(run_dir) / CHECKPOINT_DIR
    root.mkdir(parents=True, exist_ok=True)
    with _save_turn(root):
        return _save(root, run_dir, step, model, tokenizer, optimizer, scheduler, state, keep, model_state, optimizer_dir,
                     extra_states)


@contextlib.contextmanager
def _save_turn(root: Path):

    with open(root / ".save.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _save(root: Path, run_dir: Path, step: int, model, tokenizer, optimizer, scheduler, state: dict[str, Any], keep: int,
          model_state: dict[str, torch.Tensor] | None, optimizer_dir: Path | None,
          extra_states: dict[str, Any] | None) -> Path:
    remove_partial(run_dir, keep=optimizer_dir)
    final = root / f"step_{step:06d}"
    tmp = root / f".tmp-{final.name}-{os.getpid()}"
    try:
        tmp.mkdir()
        if is_lora(model):  # model/ merged (a plain HF directory), adapter/ for --resume
            save_lora(model, tmp)
        else:
            model.save_pretrained(tmp / "model", safe_serialization=True, state_dict=model_state)
        tokenizer.save_pretrained(tmp / "model")
        if optimizer_dir is not None:
            os.rename(optimizer_dir, tmp / "optimizer")
        else:
            torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        for name, extra in (extra_states or {}).items():
            torch.save(extra, tmp / f"{name}.pt")
        torch.save(rng_state(), tmp / "rng.pt")
        (tmp / "state.json").write_text(json.dumps({"step": step, **state}))
        files = sorted(p for p in tmp.rglob("*") if p.is_file())
        manifest = {str(p.relative_to(tmp)): {"size": p.stat().st_size, "sha256": sha256_file(p)} for p in files}
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
    except BaseException as err:
        # measured before the cleanup: a full disk shows (almost) nothing available
        free_at_failure = _free_bytes(root)
        shutil.rmtree(tmp, ignore_errors=True)  # a failed save must not keep the disk full
        if optimizer_dir is not None:
            shutil.rmtree(optimizer_dir, ignore_errors=True)
        (root / f".{LATEST}.tmp").unlink(missing_ok=True)
        need = _estimate_bytes(model, optimizer)
        if isinstance(err, Exception) and _is_disk_full(err, free_at_failure, need):
            raise DiskFullError(
                f"disk full while saving checkpoint {final.name} in {root}: it needs about {_mb(need)}, "
                f"{_mb(_free_bytes(root))} is free there now (the partial checkpoint was removed); free space "
                "or lower log.keep_checkpoints, then resume with --resume"
            ) from err
        raise
    _prune(root, final, step, keep)
    return final


def _prune(root: Path, final: Path, step: int, keep: int) -> None:
    """Keep ``final`` and the newest ``keep - 1`` earlier steps. Never the checkpoint just
    written, whatever else the folder holds; steps above it are a timeline the run went back
    past (a resume from an older checkpoint) and go too."""
    earlier = sorted((p for p in root.glob("step_*") if p.is_dir() and _step(p) < step), key=_step)
    kept = {final, *(earlier[len(earlier) - (keep - 1):] if keep > 1 else [])}
    for old in root.glob("step_*"):
        if old.is_dir() and old not in kept:
            shutil.rmtree(old, ignore_errors=True)


def sharded_stage(run_dir: Path, step: int) -> Path:
    """Where the ranks of a sharded run write their optimizer shards before rank 0 moves them
    into checkpoint ``step`` (a ``.tmp-*`` name: a crash leaves nothing that loads)."""
    return Path(run_dir) / CHECKPOINT_DIR / f".tmp-shards-step_{step:06d}"


def remove_partial(run_dir: Path, keep: Path | None = None) -> list[Path]:
    """Remove what a crashed save left (``.tmp-*`` folders, ``.latest.tmp``), except ``keep``;
    only safe under the run directory's lock. Returns what was removed."""
    root = Path(run_dir) / CHECKPOINT_DIR
    keep = None if keep is None else Path(keep).resolve()
    gone = [p for p in (*root.glob(".tmp-*"), root / f".{LATEST}.tmp") if p.exists() and p.resolve() != keep]
    for p in gone:
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
    return gone


def _step(path: Path) -> int:
    m = STEP_RE.match(path.name)
    return int(m.group(1)) if m else -1


def _free_bytes(path: Path) -> int:
    try:
        return shutil.disk_usage(path).free
    except OSError:
        return -1


def _mb(n: int) -> str:
    return "unknown space" if n < 0 else f"{n / 2**20:.1f} MiB" if n < 2**30 else f"{n / 2**30:.2f} GiB"


def _estimate_bytes(model, optimizer) -> int:
    """About how much a checkpoint takes: weights, optimizer state, and a little for the rest."""
    total = 1 << 20  # tokenizer, config, scheduler, RNG, manifest
    try:
        total += sum(t.numel() * t.element_size() for t in model.state_dict().values())
        for st in optimizer.state_dict()["state"].values():
            total += sum(v.numel() * v.element_size() for v in st.values() if torch.is_tensor(v))
    except Exception:  # an estimate only: never hide the real error behind a failed estimate
        pass
    return total


_DISK_FULL_TEXT = re.compile(r"No space left on device|Disk quota exceeded|os error (28|122)\b")


def _is_disk_full(err: BaseException, free_at_failure: int, need: int) -> bool:
    """ENOSPC/EDQUOT anywhere in the exception chain, or the text of one (safetensors' Rust
    errors), or nothing left on the file system when the write failed (``torch.save`` to a
    path reports a full disk only as ``unexpected pos``)."""
    seen: BaseException | None = err
    for _ in range(10):
        if seen is None:
            break
        if isinstance(seen, OSError) and seen.errno in DISK_FULL_ERRNOS:
            return True
        if _DISK_FULL_TEXT.search(str(seen)):
            return True
        seen = seen.__cause__ or seen.__context__
    return 0 <= free_at_failure < min(1 << 20, need // 100 + 1)


def read_state(path: Path) -> dict[str, Any]:
    """``state.json`` of a verified checkpoint."""
    return json.loads((Path(path) / "state.json").read_text())


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete checkpoint of a run, or None (cheap: nothing is verified; use
    :func:`find_checkpoint` before loading)."""
    root = Path(run_dir) / CHECKPOINT_DIR
    pointer = root / LATEST
    if pointer.is_file():
        path = root / pointer.read_text().strip()
        if path.is_dir():
            return path
    done = sorted((p for p in root.glob("step_*") if p.is_dir() and (p / "manifest.json").is_file()), key=_step)
    return done[-1] if done else None


def find_checkpoint(run_dir: Path, run_id: str | None = None) -> tuple[Path, list[tuple[Path, str]]]:
    """The newest intact checkpoint of the run: ``latest`` first, then every ``step_*`` from
    the highest, each verified against its manifest and, when ``run_id`` is given, tied to that
    run. Returns it and the ``(checkpoint, reason)`` pairs passed over, each also logged as a
    warning naming both.

    Raises:
        NoCheckpointError: there is no checkpoint at all.
        CheckpointError: none is intact; the message names each and what is wrong with it.
    """
    root = Path(run_dir) / CHECKPOINT_DIR
    candidates = sorted((p for p in root.glob("step_*") if p.is_dir() and _step(p) >= 0), key=_step, reverse=True)
    skipped: list[tuple[Path, str]] = []
    pointer = root / LATEST
    if pointer.is_file() or pointer.is_symlink():  # the file saves write, or a link laid by hand
        try:
            named = os.readlink(pointer) if pointer.is_symlink() else pointer.read_text().strip()
        except (OSError, UnicodeDecodeError) as err:
            named, why = "", f"unreadable ({err})"
        else:
            why = f"names {named!r}, which is not a checkpoint folder here" if named else "is empty"
        target = next((c for c in candidates if named and c.resolve() == (root / named).resolve()), None)
        if target is not None:
            candidates.remove(target)
            candidates.insert(0, target)
        else:  # dangling: passed over with the warning any damaged checkpoint gets
            skipped.append((pointer, why))
    if not candidates:
        raise NoCheckpointError(f"no checkpoint under {root}" + "".join(f" ({p.name} {why})" for p, why in skipped))
    for path in candidates:
        try:
            verify_checkpoint(path)
            owner = read_state(path).get("run_id")
        except (CheckpointError, OSError, ValueError) as err:
            skipped.append((path, str(err).removeprefix(f"{path}: ")))
            continue
        if run_id is not None and owner is not None and owner != run_id:
            skipped.append((path, f"belongs to run {owner}, not to this directory's run {run_id}"))
            continue
        for bad, why in skipped:
            log.warning(f"checkpoint {bad} is not usable ({why}); using {path} instead")
        return path, skipped
    raise CheckpointError(f"no intact checkpoint under {root}: " + "; ".join(f"{p.name}: {why}" for p, why in skipped))


def load_checkpoint(path: Path, optimizer: torch.optim.Optimizer, scheduler, model=None) -> dict[str, Any]:
    """Restore optimizer, scheduler and RNG state; return ``state.json``. Weights are loaded
    by the caller from ``path / 'model'`` (so a checkpoint is also a plain HF model dir) after
    :func:`verify_checkpoint` (or :func:`find_checkpoint`).

    Optimizer state crosses sharding (``model``, the trainer's model, is needed for that): a
    sharded checkpoint's ``optimizer/`` is re-sharded for any world size or read whole by an
    unsharded run; an unsharded ``optimizer.pt`` is split into a sharded run's shards.
    """
    verify_checkpoint(path)  # hashes only if the files changed since the caller verified
    if (path / "optimizer").is_dir():
        if model is None:
            raise CheckpointError(f"{path}: sharded optimizer state (optimizer/) needs the model to load into")
        load_sharded_optimizer(model, optimizer, path / "optimizer")
    elif model is not None and is_sharded(model):
        load_unsharded_optimizer(model, optimizer, torch.load(path / "optimizer.pt", weights_only=False))
    else:
        optimizer.load_state_dict(torch.load(path / "optimizer.pt", weights_only=False))
    scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=False))
    set_rng_state(torch.load(path / "rng.pt", weights_only=False))
    return json.loads((path / "state.json").read_text())


def load_extra_state(path: Path, name: str) -> Any:
    """``<name>.pt`` of a verified checkpoint (``save_checkpoint``'s ``extra_states``), on the CPU.

    Raises:
        CheckpointError: the checkpoint has no such state (written by a run without it).
    """
    file = Path(path) / f"{name}.pt"
    if not file.is_file():
        raise CheckpointError(f"{path}: no {file.name} (the run that wrote it kept no {name!r} state)")
    return torch.load(file, map_location="cpu", weights_only=False)


def load_weights(path: Path, policy: torch.nn.Module, model: torch.nn.Module) -> None:
    """A verified checkpoint's weights into the run's policy: LoRA adapters onto the base of
    ``model.path``; a sharded ``model`` keeps its shards of the whole file; else a strict load
    (a tied LM head may be absent)."""
    if is_lora(policy):
        load_adapter(policy, path)
        return
    state_dict = load_file(str(path / "model" / "model.safetensors"))
    if is_sharded(model):  # every rank reads the whole file and keeps its shards
        load_full_state_dict(model, state_dict)
        return
    missing, unexpected = policy.load_state_dict(state_dict, strict=False)
    real_missing = [m for m in missing if not m.endswith("lm_head.weight")]  # tied embeddings
    if real_missing or unexpected:
        raise CheckpointError(f"{path}: checkpoint weights do not match the model (missing {real_missing[:3]}, "
                              f"unexpected {unexpected[:3]})")
    if getattr(policy.config, "tie_word_embeddings", False):
        cast("PreTrainedModel", policy).tie_weights()  # (not LoRA: a transformers model)


def save_actor(actor: Any, run_dir: Path, step: int, tokenizer, state: dict[str, Any], keep: int, lock,
               extra_states: dict[str, Any] | None = None) -> Path | None:
    """Every rank's part of a save of the actor (sharded: the weights gathered to rank 0 and
    the optimizer shards written by each rank); the main process writes the checkpoint under
    the run directory's ``lock`` (taken back for a save after training ended)."""
    accelerator = actor.accelerator
    accelerator.wait_for_everyone()
    main = accelerator.is_main_process
    model_state, stage = None, None
    if actor.sharding is not None:
        model_state = full_state_dict(actor.model)
        stage = sharded_stage(run_dir, step)
        if main:
            shutil.rmtree(stage, ignore_errors=True)
        accelerator.wait_for_everyone()
        save_sharded_optimizer(actor.model, actor.optimizer, stage)
        accelerator.wait_for_everyone()
    if not main:
        return None
    relock = not lock.held
    if relock:
        lock.acquire()
    try:
        return save_checkpoint(run_dir, step, actor.policy, tokenizer, actor.optimizer, actor.scheduler, state, keep=keep,
                               model_state=model_state, optimizer_dir=stage, extra_states=extra_states)
    finally:
        if relock:
            lock.release()
