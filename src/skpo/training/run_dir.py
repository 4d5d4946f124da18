"""The run directory (``log.out_dir``): one writer at a time, no run mixed into another, and a
resume that continues the run that was started.

- **Lock**: ``flock`` on ``OUT/.lock``, taken before anything is written and held until
  training ends; the kernel drops it when the process exits or crashes. A second writer fails
  at once, naming the directory and the holder's pid.
- **A used directory is refused** for a new run unless ``--resume`` (continue it) or
  ``--overwrite`` (remove the old run's files first — only files a run writes, and only in a
  directory that looks like a run: ``run.json`` or ``checkpoints/``).
- **Run id**: each new run gets one, recorded in ``run.json`` and in every checkpoint's
  ``state.json``, so a checkpoint can be tied to its run.
- **Resume checks the config**: keys that change what is computed must be equal
  (:data:`ALLOWED_ON_RESUME` lists the exceptions); the effective config is written back and
  each resume is recorded in ``run.json`` under ``resumes``.
- **Resume checks the data**: ``run.json`` holds a fingerprint of the training data (path,
  bytes, rows, a content hash: :func:`data_fingerprint`); a resume on data whose fingerprint
  differs is refused with the difference, or, with ``--allow-data-change``, goes on and records
  both fingerprints in its entry of ``resumes``.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import logging
import os
import secrets
import shutil
import socket
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from skpo.config import RunConfig, dump_config, move_old_spellings
from skpo.errors import UserError
from skpo.training.checkpoint import (
    CHECKPOINT_DIR,
    LATEST,
    NoCheckpointError,
    find_checkpoint,
    read_state,
    remove_partial,
)
from skpo.training.logging import MetricsLogger

log = logging.getLogger("skpo")

LOCK_FILE = ".lock"
# a directory holding any of these has (had) a run in it; a new run would mix with it
RUN_MARKERS = ("run.json", "config.yaml", "metrics.jsonl", CHECKPOINT_DIR, "tensorboard")
# what --overwrite removes: files and folders a run (skpo train / skpo main) writes, nothing else
RUN_FILES = ("run.json", "config.yaml", "method.yaml", "metrics.jsonl", "metrics.jsonl.tmp", "run.json.tmp", "config.yaml.tmp",
             "method.yaml.tmp",
             "main_summary.json", "main_before.json", "curves.png", "samples.jsonl")

# Keys that may differ on --resume: when to stop, how often to evaluate/log/save, and knobs
# that change memory or speed but not the update (micro-batching and packing give the same
# gradient to float rounding: tests/test_trainer.py; sharding, tests/test_distributed.py). Everything else — method, optimizer and
# schedule, batch shape, rollout and sampling, model and precision, data, reward, seed — is
# refused. ``log.out_dir`` is not compared: it names the directory being resumed (a run moved
# elsewhere resumes there). ``train.steps`` is refused under a cosine or linear schedule,
# whose learning rate is a function of it.
ALLOWED_ON_RESUME = (
    "train.steps", "train.token_budget", "train.micro_batch_tokens", "train.pack_max_tokens",
    "train.gradient_checkpointing", "train.threads", "train.fsdp.*", "rollout.engine_batch_size", "rollout.vllm.*", "model.device", "reward.workers", "reward.timeout_s", "reward.worker", "eval.*", "log.*",
    "plugins",  # code to import: what it changes in the method is compared as the resolved method
)
NOT_COMPARED = ("log.out_dir",)


class RunDirError(UserError, RuntimeError):
    """A run directory that cannot be used as asked; the message names it and what to pass."""


class RunDirLocked(RunDirError):
    """Another process writes to the run directory."""


class ResumeConfigError(RunDirError):
    """``--resume`` with a config that changes what the run computes."""


class ResumeDataError(RunDirError):
    """``--resume`` on training data that changed since the run started."""


# ---------------------------------------------------------------------------- lock
class RunLock:
    """An exclusive ``flock`` on ``OUT/.lock`` holding the owner's pid and host."""

    def __init__(self, out_dir: str | Path) -> None:
        self.out_dir = Path(out_dir)
        self.path = self.out_dir / LOCK_FILE
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> RunLock:
        if self._fd is not None:
            return self
        self.out_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            os.close(fd)
            if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            raise RunDirLocked(f"{self.out_dir} is in use by another skpo process ({_holder(self.path)}); "
                               "wait for it to finish, stop it, or choose another log.out_dir") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
        self._fd = fd
        _HELD.add(self)
        return self

    def release(self) -> None:
        # the file stays: removing it would let a third process lock a fresh inode while a
        # second one still waits on the old one
        if self._fd is not None:
            fd, self._fd = self._fd, None
            _HELD.discard(self)
            os.close(fd)  # closing drops the flock

    def __del__(self) -> None:
        self.release()


# A process forked while holding a lock (a reward function's worker) must not keep the directory
# locked after this process has released it: the child closes its copies (the lock stays with
# this process's descriptor).
_HELD: weakref.WeakSet[RunLock] = weakref.WeakSet()


def _drop_inherited_locks() -> None:
    for lock in list(_HELD):
        fd, lock._fd = lock._fd, None
        if fd is not None:
            os.close(fd)
    _HELD.clear()


os.register_at_fork(after_in_child=_drop_inherited_locks)


def _holder(path: Path) -> str:
    try:
        pid, _, host = path.read_text().strip().partition(" ")
    except OSError:
        return "pid unknown"
    return f"pid {pid}" + (f" on {host}" if host and host != socket.gethostname() else "") if pid else "pid unknown"


# ---------------------------------------------------------------------------- refuse / overwrite
def used_markers(out_dir: Path) -> list[str]:
    """The run files in ``out_dir`` (empty: a new or unrelated directory)."""
    return [name for name in RUN_MARKERS if (Path(out_dir) / name).exists()]


def looks_like_run(out_dir: Path) -> bool:
    out = Path(out_dir)
    ckpts = out / CHECKPOINT_DIR
    return (out / "run.json").is_file() or (ckpts.is_dir() and (any(ckpts.glob("step_*")) or (ckpts / LATEST).exists()))


def check_out_dir(out_dir: str | Path, *, resume: bool, overwrite: bool) -> None:
    """Refuse what must be refused before anything is loaded or written.

    Raises:
        RunDirError: both flags; a used directory without either; ``--overwrite`` on a
            directory that is not a run's.
        NoCheckpointError: ``--resume`` where there is no checkpoint.
    """
    out = Path(out_dir)
    if resume and overwrite:
        raise RunDirError("--resume and --overwrite contradict each other: pass one")
    markers = used_markers(out)
    if resume:
        ckpts = out / CHECKPOINT_DIR
        if not ckpts.is_dir() or not any(p.is_dir() for p in ckpts.glob("step_*")):
            fix = ("start it over with --overwrite instead of --resume (it has no checkpoint to continue from)"
                   if markers else "leave out --resume to start a new run there")
            raise NoCheckpointError(f"--resume: no checkpoint under {ckpts} (nothing to resume); {fix}")
        return
    if not markers:
        return
    if not looks_like_run(out):
        raise RunDirError(f"{out} holds {', '.join(markers)} but is not a skpo run directory (no run.json or "
                          "checkpoints/step_*), so neither a new run nor --overwrite may write there: "
                          "choose another log.out_dir")
    if not overwrite:
        has_checkpoint = any((out / CHECKPOINT_DIR).glob("step_*"))
        hint = ("pass --resume to continue it or --overwrite to replace it" if has_checkpoint
                else "it has no checkpoint to resume: pass --overwrite to replace it")
        raise RunDirError(f"{out} holds another run ({', '.join(markers)}); {hint}, or choose another log.out_dir")


def clear_run(out_dir: Path) -> list[str]:
    """Remove the files a run writes (:data:`RUN_FILES`, ``checkpoints/``, ``tensorboard/``,
    ``wandb/``) and nothing else; returns what was removed. The caller checked
    :func:`looks_like_run` and holds the lock."""
    out = Path(out_dir)
    removed = []
    for name in RUN_FILES:
        if (out / name).is_file():
            (out / name).unlink()
            removed.append(name)
    ckpts = out / CHECKPOINT_DIR
    if ckpts.is_dir():
        for p in [*ckpts.glob("step_*"), *ckpts.glob(".tmp-*")]:
            shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
        for name in (LATEST, f".{LATEST}.tmp", ".save.lock"):
            (ckpts / name).unlink(missing_ok=True)
        removed.append(CHECKPOINT_DIR)
        _rmdir_if_empty(ckpts)
    tb = out / "tensorboard"
    if tb.is_dir():
        for p in tb.glob("events.out.tfevents.*"):
            p.unlink()
        removed.append("tensorboard")
        _rmdir_if_empty(tb)
    if (out / "wandb").is_dir():  # wandb's own folder for this run (wandb.init(dir=OUT))
        shutil.rmtree(out / "wandb")
        removed.append("wandb")
    return removed


def _rmdir_if_empty(path: Path) -> None:
    try:
        path.rmdir()
    except OSError:
        pass  # something that is not the run's: left in place


def open_run_dir(out_dir: Path, *, resume: bool, overwrite: bool) -> RunLock:
    """Lock ``out_dir``, refuse or clear as :func:`check_out_dir` says, and remove what a
    crashed save left. Returns the held lock; on an error nothing is held."""
    lock = RunLock(out_dir).acquire()
    try:
        check_out_dir(out_dir, resume=resume, overwrite=overwrite)
        if overwrite and used_markers(out_dir):
            clear_run(out_dir)
        remove_partial(out_dir)
    except BaseException:
        lock.release()
        raise
    return lock


def preflight(out_dir: str | Path, *, resume: bool, overwrite: bool) -> None:
    """The checks of :func:`open_run_dir` without writing anything (the lock is probed and
    released), so a command fails before it spends minutes loading a model."""
    if (Path(out_dir) / LOCK_FILE).is_file():  # first: a live writer explains everything else there
        RunLock(out_dir).acquire().release()
    check_out_dir(out_dir, resume=resume, overwrite=overwrite)


# ---------------------------------------------------------------------------- run record
def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(3)


def read_run_json(out_dir: Path) -> dict[str, Any]:
    """``run.json``, or {} when absent or unreadable (it is a record, not a source of truth)."""
    try:
        data = json.loads((Path(out_dir) / "run.json").read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_run_json(out_dir: Path, info: dict[str, Any], run_id: str, resume: dict[str, Any] | None) -> None:
    """``run.json``: ``info`` (this start's facts), the run id, when the run was created, and
    the list of resumes (each with its step, checkpoint and allowed config changes)."""
    old = read_run_json(out_dir) if resume is not None else {}
    record = {**info, "run_id": run_id, "created": old.get("created", time.strftime("%Y-%m-%dT%H:%M:%S%z")),
              "resumes": [*old.get("resumes", []), *([resume] if resume is not None else [])]}
    write_atomic(Path(out_dir) / "run.json", json.dumps(record, indent=1))


# ---------------------------------------------------------------------------- data on resume
FULL_HASH_BYTES = 64 * 2**20  # files up to this size are hashed whole
EDGE_BYTES = 2**20  # a larger file: its size, its first and last MiB, and ...
SAMPLES, SAMPLE_BYTES = 16, 64 * 2**10  # ... 16 blocks of 64 KiB spread evenly between them


def _file_digest(path: Path, size: int) -> tuple[bytes, bool]:
    """SHA-256 of a data file, and whether it read all of it (else the sampled parts)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        if size <= FULL_HASH_BYTES:
            for chunk in iter(lambda: handle.read(2**20), b""):
                digest.update(chunk)
            return digest.digest(), True
        digest.update(str(size).encode())
        step = (size - 2 * EDGE_BYTES) // (SAMPLES + 1)
        for offset, length in ([(0, EDGE_BYTES)] + [(EDGE_BYTES + step * (i + 1), SAMPLE_BYTES) for i in range(SAMPLES)]
                               + [(size - EDGE_BYTES, EDGE_BYTES)]):
            handle.seek(offset)
            digest.update(handle.read(length))
    return digest.digest(), False


def data_fingerprint(path: Path, rows: int) -> dict[str, Any]:
    """What identifies a run's training data: ``{"path", "bytes", "rows", "sha256", "hashed"}``.

    ``path`` is the file or folder, absolute; ``bytes`` the size (of every file of a folder);
    ``rows`` how many rows were read from it (before the length filter). ``sha256`` covers each
    file, with its relative name and size in a folder: whole (``hashed: "full"``) up to
    :data:`FULL_HASH_BYTES`, else its size, its first and last MiB and 16 blocks of 64 KiB spread
    evenly in between (``hashed: "sampled"``): a change that keeps the size, the row count and
    every sampled block of a file that large goes unseen.
    """
    path = Path(path).expanduser().resolve()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    digest, total, whole = hashlib.sha256(), 0, True
    for file in files:
        size = file.stat().st_size
        part, read_all = _file_digest(file, size)
        name = file.relative_to(path) if path.is_dir() else ""  # a file's own name is not its content
        digest.update(f"{name}\0{size}\0".encode() + part)
        total, whole = total + size, whole and read_all
    return {"path": str(path), "bytes": total, "rows": rows, "sha256": digest.hexdigest(),
            "hashed": "full" if whole else "sampled"}


def source_fingerprint(source: Any) -> dict[str, Any] | None:
    """:func:`data_fingerprint` of a prompt source read from a file or folder; None for one
    made up by the run (the synthetic task, whose settings are part of the config)."""
    spec = getattr(source, "spec", None)
    if spec is None or getattr(spec, "path", None) is None or not hasattr(source, "rows"):
        return None
    return data_fingerprint(spec.resolved_path(), source.rows)


def data_changes(before: dict[str, Any] | None, now: dict[str, Any] | None) -> dict[str, list]:
    """What differs between two fingerprints (:func:`data_fingerprint`): ``{key: [old, new]}`` of
    ``bytes``, ``rows`` and ``sha256``, with ``path`` when the content differs. Empty when the
    content is the same (a moved file is the same data) or either is missing (a run from before
    fingerprints, synthetic data)."""
    if not before or not now:
        return {}
    changed = {k: [before.get(k), now.get(k)] for k in ("bytes", "rows", "sha256") if before.get(k) != now.get(k)}
    if changed and before.get("path") != now.get("path"):
        changed = {"path": [before.get("path"), now.get("path")], **changed}
    return changed


def check_resume_data(before: dict[str, Any] | None, now: dict[str, Any] | None, where: Path,
                      allow_change: bool) -> dict[str, list]:
    """The data's changes since the run started; raises :class:`ResumeDataError` naming them
    unless ``allow_change`` (``--allow-data-change``)."""
    changed = data_changes(before, now)
    if changed and not allow_change:
        shown = {"sha256": lambda v: f"{str(v)[:12]}…"}
        listed = ", ".join(f"{k} {shown.get(k, _show)(a)} → {shown.get(k, _show)(b)}" for k, (a, b) in changed.items())
        raise ResumeDataError(f"--resume: the training data of {where} changed since the run started ({listed}); "
                              "restore it, pass --allow-data-change to continue on the new data (recorded in "
                              "run.json), or start a new run (--overwrite or another log.out_dir)")
    return changed


# ---------------------------------------------------------------------------- config on resume
def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for k, v in tree.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: list(tree) if isinstance(tree, tuple) else tree}


def _allowed(key: str) -> bool:
    return any(key == a or (a.endswith(".*") and key.startswith(a[:-1])) for a in ALLOWED_ON_RESUME)


def config_changes(saved: dict[str, Any], current: dict[str, Any]) -> tuple[dict[str, list], dict[str, list]]:
    """``(allowed, refused)``: each changed key (dotted) → ``[old, new]``, between the config a
    checkpoint was trained with and the one given now (both as ``model_dump(mode="json")``)."""
    try:  # keys in their earlier spelling moved, and keys added to the schema since the run started at their defaults
        saved, _ = move_old_spellings(saved)
        saved = RunConfig.model_validate(saved).model_dump(mode="json")
    except ValueError:
        pass  # compare what is there; keys the schema no longer has show as changes
    old, new = _flatten(saved), _flatten(current)
    allowed: dict[str, list] = {}
    refused: dict[str, list] = {}
    for key in sorted(old.keys() | new.keys()):
        a, b = old.get(key, "(absent)"), new.get(key, "(absent)")
        if a == b or key in NOT_COMPARED:
            continue
        if key == "method" or key.startswith("method."):
            continue  # what they set is compared as the resolved method (check_resolved_method): a no-op passes
        refuse = not _allowed(key)
        if key == "reward.function" and isinstance(a, str) and a.startswith("python.") and b is not None:
            refuse = False  # a function given from Python, now named where the command line can import it
        if key == "train.steps" and new.get("train.lr_schedule") in ("cosine", "linear"):
            refuse = True  # the schedule is a function of train.steps
        (refused if refuse else allowed)[key] = [a, b]
    return allowed, refused


def check_resume_config(saved: dict[str, Any], current: dict[str, Any], where: Path) -> dict[str, list]:
    """The allowed changes; raises :class:`ResumeConfigError` naming every refused key."""
    allowed, refused = config_changes(saved, current)
    if refused:
        listed = ", ".join(f"{k}: {_show(a)} → {_show(b)}" for k, (a, b) in refused.items())
        why = " (the learning-rate schedule is a function of train.steps)" if "train.steps" in refused else ""
        raise ResumeConfigError(
            f"--resume: the config changes what {where} computes: {listed}{why}; allowed on resume: "
            f"{', '.join(ALLOWED_ON_RESUME)}; to train with the new values start a new run "
            "(--overwrite or another log.out_dir)"
        )
    return allowed


def check_resolved_method(saved: dict[str, Any], current: dict[str, Any], where: Path) -> None:
    """Refuse a resume whose method resolves differently from the one the run started with
    (an edited method file, a changed shipped default); the error lists every changed key."""
    before, after = _flatten(saved), _flatten(current)
    changed = {k: (before.get(k, "(absent)"), after.get(k, "(absent)")) for k in sorted(set(before) | set(after))
               if before.get(k, "(absent)") != after.get(k, "(absent)")}
    if changed:
        listed = ", ".join(f"method.{k}: {_show(a)} → {_show(b)}" for k, (a, b) in changed.items())
        raise ResumeConfigError(f"--resume: the method {where} ran with resolves differently now: {listed}; "
                                "restore it or start a new run (--overwrite or another log.out_dir)")


@dataclass(frozen=True)
class ResumePoint:
    """Where a resume continues, once every check passed (:func:`check_resume`).

    Attributes:
        checkpoint: the newest intact checkpoint of the run; ``skipped``: newer ones that were
            not, each with the reason.
        run_id: the run id ``run.json`` records (``None``: a run from before run ids).
        config_changes: the allowed config changes, ``{key: [old, new]}``.
        data: the training data's fingerprint recorded at the start; ``data_changes`` its
            changes (allowed by ``--allow-data-change``).
    """

    checkpoint: Path
    skipped: list[tuple[Path, str]]
    run_id: str | None
    config_changes: dict[str, list]
    data: dict[str, Any] | None
    data_changes: dict[str, list]


def check_resume(out_dir: Path, config: dict[str, Any], method_doc: dict[str, Any], data: dict[str, Any] | None,
                 allow_data_change: bool) -> ResumePoint:
    """Every check ``--resume`` makes, in one place (a run's start and ``--check`` call it): the
    newest intact checkpoint of the run in ``out_dir`` (verified before anything is read from
    it), the config it was trained with against ``config`` (``model_dump(mode="json")``), the
    method as it resolves now (``method_doc``) against the one the run started with, and the
    training data's fingerprint (``data``). Raises the error naming what differs."""
    out_dir = Path(out_dir)
    recorded = read_run_json(out_dir)
    path, skipped = find_checkpoint(out_dir, run_id=recorded.get("run_id"))
    saved = read_state(path).get("config")
    if saved is None and (out_dir / "config.yaml").is_file():  # checkpoints older than run ids
        saved = yaml.safe_load((out_dir / "config.yaml").read_text())
    changed = check_resume_config(saved, config, out_dir) if saved else {}
    if recorded.get("method_resolved") is not None:  # the same config can resolve differently: an edited method file
        check_resolved_method(recorded["method_resolved"], json.loads(json.dumps(method_doc)), out_dir)
    data_changed = check_resume_data(recorded.get("data"), data, out_dir, allow_data_change)
    return ResumePoint(path, skipped, recorded.get("run_id"), changed, recorded.get("data"), data_changed)


def _show(value: Any) -> str:
    return json.dumps(value) if isinstance(value, str) else str(value)


class RunFiles:
    """A run directory while a trainer holds it: the lock and the metrics logger (main process
    only), and the files written at start (``config.yaml``, ``method.yaml``, ``run.json``). A
    new run that fails before its first step removes what it wrote (its own files only), so the
    same command can run again; a resumed run or one that trained keeps everything."""

    def __init__(self, out_dir: Path, main: bool) -> None:
        self.out_dir, self.main = Path(out_dir), main
        self.lock: RunLock | None = None
        self.logger: MetricsLogger | None = None
        self.new_run = False

    def open(self, cfg: RunConfig, *, resume: bool, overwrite: bool, resume_run, info: dict[str, Any],
             method_doc: dict[str, Any]) -> str:
        """Lock, refuse or clear, ``resume_run() -> (run id, resume record)`` when resuming,
        then open the metrics and write the start files; returns the run id. A failure
        releases the lock."""
        self.lock = open_run_dir(self.out_dir, resume=resume, overwrite=overwrite) if self.main else None
        self.new_run = not resume
        try:
            run_id, resumed = resume_run() if resume else (new_run_id(), None)
            if self.main:
                self.logger = MetricsLogger(self.out_dir, tensorboard=cfg.log.tensorboard, wandb=cfg.log.wandb,
                                            wandb_project=cfg.log.wandb_project, config=cfg.model_dump(mode="json"),
                                            append=resume)
                write_atomic(self.out_dir / "config.yaml", dump_config(cfg))  # the effective config
                write_atomic(self.out_dir / "method.yaml", yaml.safe_dump(method_doc, sort_keys=False, allow_unicode=True))
                write_run_json(self.out_dir, {**info, "method_resolved": method_doc, "pid": os.getpid()}, run_id, resumed)
            return run_id
        except BaseException:
            self.discard_failed_start(step=0)
            self.close()
            raise

    def discard_failed_start(self, step: int) -> None:
        if not (self.main and self.new_run and step == 0 and self.lock is not None):
            return
        if self.logger is not None:
            self.logger.close()
            self.logger = None
        removed = clear_run(self.out_dir)
        if removed:
            log.info(f"the run failed before its first step: removed what it wrote in {self.out_dir} "
                     f"({', '.join(removed)}), so the command can run again")

    def close(self) -> None:
        """Close the metrics and release the directory (also on exit or crash: the kernel drops the lock)."""
        if self.logger is not None:
            self.logger.close()
            self.logger = None
        if self.lock is not None:
            self.lock.release()
