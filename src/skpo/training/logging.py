"""Metrics sinks: JSONL (always), TensorBoard and wandb (when asked and installed), and the
progress people watch: a rich bar on a terminal, one concise line per N steps otherwise."""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

from skpo.errors import ConfigError
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
        self._wandb = None
        if wandb:  # first: a missing wandb must fail before any file is written
            try:
                import wandb as _wandb  # optional: log.wandb only
            except ImportError as err:
                raise ConfigError("log.wandb is true but wandb is not installed: pip install wandb "
                                  "(or log.wandb=false)") from err
        if tensorboard:
            try:  # optional: log.tensorboard only (a bare GPU image has none: scripts/gpu_check.sh)
                from torch.utils.tensorboard import SummaryWriter
            except ImportError as err:
                raise ConfigError("log.tensorboard is true but tensorboard is not installed: pip install tensorboard "
                                  "(or log.tensorboard=false)") from err
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._jsonl = (self.run_dir / "metrics.jsonl").open("a" if append else "w")
        self._start = time.time()
        self._tb = None
        if tensorboard:
            self._tb = SummaryWriter(str(self.run_dir / "tensorboard"))
        if wandb:
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

    def log_samples(self, step: int, records: list[dict[str, Any]]) -> None:
        """Sample completions: one JSON line each in ``samples.jsonl``, a table in TensorBoard's
        text tab and in wandb."""
        if not records:
            return
        with (self.run_dir / "samples.jsonl").open("a", encoding="utf-8") as f:
            f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
        columns = ["role", "prompt", "completion", "reward", "correct", "verdict"]
        if self._tb is not None:
            def cell(v: Any) -> str:
                return str(v).replace("|", "\\|").replace("\n", "<br>")[:2000]

            table = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
            table += ["| " + " | ".join(cell(r.get(c)) for c in columns) + " |" for r in records]
            self._tb.add_text("samples", "\n".join(table), step)
            self._tb.flush()
        if self._wandb is not None:
            import wandb as _wandb  # optional: log.wandb only

            self._wandb.log({"samples": _wandb.Table(columns=columns, data=[[r.get(c) for c in columns] for r in records])},
                            step=step)

    def close(self) -> None:
        self._jsonl.close()
        if self._tb is not None:
            self._tb.close()
        if self._wandb is not None:
            self._wandb.finish()


def _count(n: float) -> str:
    return f"{n / 1e6:.2f}M" if n >= 1e6 else (f"{n / 1000:.0f}k" if n >= 10_000 else f"{int(n)}")


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


class Progress:
    """What a person watching a run sees, as a context manager returning ``update(step, metrics)``.

    First a start line (``header``: method, model, data, processes, device, run directory). On a
    terminal: a rich bar with accuracy, reward, entropy and seconds per step. Otherwise (a log
    file, a pipe, a cluster job): a line after a step once ``every`` steps *and* ``seconds`` have
    passed since the last line (so a line per step when steps are slow, one every ``seconds``
    when they are fast), always for the last step and for steps with an evaluation; a step that
    took ``slow_s`` or more also shows where its time went::

        step 40/200  acc 0.412  reward 0.41  H 0.61  0.93 s/step  tokens 163k  elapsed 37s  eta 2m29s

    ``reward`` is the user's reward (``reward/user_mean``: in ``reward.range``), not the method's
    internal one.
    """

    KEYS = (("accuracy/mean", "acc"), ("reward/user_mean", "reward"), ("actor/entropy", "H"))

    def __init__(self, enabled: bool, total: int, start: int, every: int = 0, token_budget: int | None = None,
                 stream=None, seconds: float = 30.0, header: str | None = None, slow_s: float = 5.0) -> None:
        self.enabled, self.total, self.start = enabled, total, start
        self.stream = stream or sys.stdout
        self.every = max(1, every)
        self.seconds, self.header, self.slow_s = seconds, header, slow_s
        self.token_budget = token_budget
        self.tty = self.stream.isatty() if hasattr(self.stream, "isatty") else False
        self._bar: Any = None  # a rich Progress on a terminal (rich is imported only then)

    def _info(self, metrics: dict[str, float]) -> list[str]:
        parts = [f"{short} {metrics[k]:.3g}" for k, short in self.KEYS if k in metrics]
        if "time/step" in metrics:
            parts.append(f"{metrics['time/step']:.2f} s/step")
        return parts

    def __enter__(self):
        if not self.enabled:
            return lambda step, metrics: None
        if self.header:
            print(self.header, file=self.stream, flush=True)
        if self.tty:
            # optional off a terminal (a bare GPU image has no rich: scripts/gpu_check.sh runs without a tty)
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
            from rich.progress import Progress as RichProgress

            self._bar = RichProgress(TextColumn("train"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                                     TextColumn("{task.fields[info]}"))
            self._bar.__enter__()
            task = self._bar.add_task("train", total=self.total, completed=self.start, info="")
            return lambda step, metrics: self._bar.update(task, completed=step, info="  ".join(self._info(metrics)))
        self._t0 = self._last_t = time.perf_counter()
        self._last_step = self.start
        return self._line

    def _line(self, step: int, metrics: dict[str, float]) -> None:
        evals = {k: v for k, v in metrics.items() if k.startswith("eval/") and ("/avg@" in k or "/pass@" in k)}
        now = time.perf_counter()
        due = step - self._last_step >= self.every and now - self._last_t >= self.seconds
        if not (due or step == self.total or evals or step == self.start + 1):
            return
        self._last_step, self._last_t = step, now
        elapsed = now - self._t0
        parts = [f"step {step}/{self.total}", *self._info(metrics)]
        if "tokens/seen" in metrics:
            seen = metrics["tokens/seen"]
            parts.append(f"tokens {_count(seen)}" + (f"/{_count(self.token_budget)}" if self.token_budget else ""))
        parts.append(f"elapsed {_duration(elapsed)}")
        done = step - self.start
        if done > 0 and step < self.total:
            parts.append(f"eta {_duration(elapsed / done * (self.total - step))}")
        parts += [f"{k} {v:.3f}" for k, v in evals.items()]
        if metrics.get("time/step", 0.0) >= self.slow_s:  # where a slow step's time went
            phases = sorted(((k.removeprefix("time/"), v) for k, v in metrics.items()
                             if k.startswith("time/") and k not in ("time/step", "time/train_elapsed") and v >= 0.05),
                            key=lambda kv: -kv[1])
            parts.append("(" + " ".join(f"{name} {v:.1f}s" for name, v in phases) + ")")
        print("  ".join(parts), file=self.stream, flush=True)

    def samples(self, records: list[dict[str, Any]]) -> None:
        """A few sample completions of the step (TRL's ``log_completions``): on a terminal a rich
        table above the bar, otherwise plain lines; prompts keep their tail (the question and
        the template's turn markers), texts their special tokens, newlines shown as ``⏎``."""
        if not (self.enabled and records):
            return
        step = records[0]["step"]
        title = f"samples after step {step} (all of them in samples.jsonl; log.console_samples=0 hides these)"
        cells = [(r["role"], _clip(r["prompt"], 160, tail=True), _clip(r["completion"], 320), f"{r['reward']:.3g}",
                  "-" if r.get("correct") is None else ("yes" if r["correct"] else "no")) for r in records]
        if self._bar is not None:  # (a bar exists only where rich imported)
            from rich.table import Table
            from rich.text import Text

            table = Table(title=title, show_lines=True, title_justify="left")
            for name in ("role", "prompt (end)", "completion", "reward", "correct"):
                table.add_column(name, overflow="fold")
            for row in cells:
                table.add_row(*(Text(c) for c in row))  # Text: brackets in a completion are not rich markup
            self._bar.console.print(table)
            return
        lines = [title]
        for role, prompt, completion, reward, correct in cells:
            lines += [f"  [{role}] reward {reward}  correct {correct}", f"    prompt     {prompt}",
                      f"    completion {completion}"]
        print("\n".join(lines), file=self.stream, flush=True)

    def __exit__(self, *exc):
        if self._bar is not None:
            self._bar.__exit__(*exc)


def _clip(text: str, most: int, tail: bool = False) -> str:
    """``text`` on one line (newlines as ``⏎``), at most ``most`` characters: its start, or its end."""
    text = text.replace("\n", "⏎")
    if len(text) <= most:
        return text
    return "…" + text[-(most - 1):] if tail else text[:most - 1] + "…"


def sample_records(rows: Any, step: int, keys: int, tokenizer: Any, verdicts: dict | None,
                   to_user_range: Any) -> list[dict[str, Any]]:
    """The rows of the first ``keys`` prompts of a step (SKPO: the segment, then the answers
    from ``[s, q]``) as ``samples.jsonl`` records: prompt and completion as the model saw and
    wrote them (special tokens kept: the chat template, the end-of-turn token), the reward in
    the user's range (``to_user_range``), and what the reward said of the answer (``verdicts``,
    by ``(prompt key, response ids)``)."""
    chosen = list(dict.fromkeys(rows.prompt_keys))[:keys]
    records = []
    for i, (key, role) in enumerate(zip(rows.prompt_keys, rows.roles())):
        if key not in chosen:
            continue
        n = int(rows.response_mask[i].sum())
        response = [int(t) for t in rows.response_ids[i, :n]]
        verdict = verdicts.get((key, tuple(response))) if verdicts else None
        records.append({
            "step": step, "prompt_key": str(key), "role": role,
            "prompt": tokenizer.decode(list(rows.prompt_ids[i]), skip_special_tokens=False),
            "completion": tokenizer.decode(response, skip_special_tokens=False),
            "reward": to_user_range(float(rows.rewards[i])), "tokens": n,
            "correct": None if verdict is None else verdict.correct,
            "verdict": None if verdict is None else verdict.reason,
        })
    return records
