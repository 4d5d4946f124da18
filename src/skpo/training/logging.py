"""Metrics sinks: JSONL (always), TensorBoard and wandb (when asked and installed)."""

from __future__ import annotations

import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any

from skpo.config import ConfigError
from skpo.jsonl import JsonlError

log = logging.getLogger("skpo")


def truncate_metrics(path: Path, step: int) -> int:
    """Keep the lines of ``metrics.jsonl`` up to ``step`` (a resumed run redoes the later ones);
    returns how many were dropped. A torn last line (a crash mid-write) is dropped with a
    warning; a damaged line elsewhere is an error naming the file and line."""
    path = Path(path)
    if not path.is_file():
        return 0
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    kept: list[str] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            row_step = row["step"]
        except (ValueError, TypeError, KeyError) as err:
            if number == len(lines):
                log.warning(f"{path}: line {number} is incomplete (a crash while it was written); dropped")
                continue
            raise JsonlError(f"{path}: line {number}: not a metrics record ({err}); fix or remove that line") from None
        if row_step <= step:
            kept.append(line)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(ln + "\n" for ln in kept), encoding="utf-8")
    os.replace(tmp, path)
    return len(lines) - len(kept)


class MetricsLogger:
    def __init__(self, run_dir: Path, tensorboard: bool = True, wandb: bool = False, wandb_project: str = "skpo",
                 config: dict | None = None, append: bool = False) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._jsonl = (self.run_dir / "metrics.jsonl").open("a" if append else "w")
        self._start = time.time()
        self._tb = None
        self._wandb = None
        if tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self._tb = SummaryWriter(str(self.run_dir / "tensorboard"))
        if wandb:
            try:
                import wandb as _wandb
            except ImportError as err:
                raise ConfigError("log.wandb is true but wandb is not installed (pip install wandb)") from err
            self._wandb = _wandb.init(project=wandb_project, config=config, dir=str(self.run_dir), resume="allow")

    def log(self, step: int, metrics: dict[str, Any]) -> None:
        clean = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and math.isfinite(float(v))}
        self._jsonl.write(json.dumps({"step": step, "time": time.time() - self._start, **clean}) + "\n")
        self._jsonl.flush()
        if self._tb is not None:
            for k, v in clean.items():
                self._tb.add_scalar(k, v, step)
            self._tb.flush()
        if self._wandb is not None:
            self._wandb.log(clean, step=step)

    def close(self) -> None:
        self._jsonl.close()
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()
