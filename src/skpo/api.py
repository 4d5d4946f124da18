"""Training from Python: your model, data rows, reward function and method — the habit of TRL's
``GRPOTrainer(model=…, reward_funcs=…, train_dataset=…)`` on skpo's one harness.

    import skpo

    def reward(completion: str, example) -> float:           # example.gold, example.row, …
        return float(example.gold in completion)

    trainer = skpo.train(model="tiny-arith", data=[{"question": "2+3", "answer": "5"}, …],
                         reward=reward, method="grpo", out_dir="runs/mine", overrides=["train.steps=50"])
    trainer.policy                                             # the trained model

Everything the command line does is underneath: the config (defaults, a YAML file or a
:class:`~skpo.config.RunConfig`, then ``overrides``), the run directory with its checkpoints
and ``--resume`` (``resume=True``), the method as a document. Your own parts register in this
process with the registries' decorators — :data:`ADVANTAGE_ESTIMATORS`, :data:`POLICY_LOSSES`,
:data:`ROLLOUTS`, :data:`PROMPT_SAMPLERS` — and :func:`register_reward`; a method document (a
dict here) then names them. ``examples/python_api.py`` is a whole example (run by
``tests/test_api.py``); docs/python-api.md explains it.

What lives only in this process does not reach processes started later: ``skpo compare``'s
runs and ``torchrun`` ranks import your plug-ins from a module named in ``plugins`` instead.
"""

from __future__ import annotations

import importlib
import json
import re
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any, cast

import yaml

from skpo.algorithms import ADVANTAGE_ESTIMATORS, POLICY_LOSSES, PROMPT_SAMPLERS
from skpo.config import RunConfig, default_out_dir, load_config
from skpo.rewards.registry import REWARDS, calling_of, user_reward_entry
from skpo.rollout.base import ROLLOUTS
from skpo.training.setup import build_trainer

__all__ = ["ADVANTAGE_ESTIMATORS", "POLICY_LOSSES", "PROMPT_SAMPLERS", "ROLLOUTS", "build", "register_reward", "train"]

INPUTS_DIR = "inputs"  # where a run keeps the data rows and method document given as Python objects


def register_reward(name: str, fn: Callable[..., Any], *, batched: bool = False,
                    value_range: tuple[float, float] = (0.0, 1.0), timeout_s: float | None = 120.0,
                    style: str = "auto", worker: bool = True) -> str:
    """Register ``fn`` as the reward ``name`` (then ``data.reward=name`` or ``reward.function=name``).

    ``fn`` has one of the three accepted signatures (docs/rewards.md): skpo's
    ``fn(completion: str, example) -> bool | float | (reward, correct) | dict | Verdict`` per answer
    (``batched=True``: ``fn(completions, examples) -> list`` per batch), verl's ``compute_score`` or
    a TRL reward function — detected, or declared with ``style``. Rewards in ``value_range``; each
    batch within ``timeout_s`` seconds, in a worker process forked from this one at the first batch
    (``worker=False``: in this process). Returns ``name``.
    """
    if ":" in name:
        raise ValueError(f"reward name {name!r}: ':' marks a 'module:function' reference; choose a plain name")
    existing = REWARDS.get(name)
    if existing is not None and getattr(existing, "_skpo_fn", None) is not fn and not getattr(existing, "_skpo_user", False):
        raise ValueError(f"reward {name!r} is a built-in reward; choose another name")
    calling_of(fn, style, f"reward {name!r}", batched or None)  # a signature none of the three: refused now
    entry = user_reward_entry(name, lambda: fn, where=f"reward {name!r}", loading="starting", value_range=value_range,
                              timeout_s=timeout_s, style=style, worker=worker, batched=batched or None,
                              description=f"Python function {name}")
    object.__setattr__(entry, "_skpo_fn", fn)
    object.__setattr__(entry, "_skpo_user", True)
    if existing is not None and existing.worker is not None:
        existing.worker.close()
    REWARDS[name] = entry
    return name


def importable_reference(fn: Callable[..., Any]) -> str | None:
    """``module:qualified.name`` when importing it gives back ``fn`` itself (a function defined at
    the top level of a module, or in a class), else ``None`` (``__main__``, a lambda, a closure, a
    bound method, a callable object)."""
    module, qualname = getattr(fn, "__module__", None), getattr(fn, "__qualname__", None)
    if not module or not qualname or module == "__main__" or "<" in qualname:
        return None
    try:
        found: Any = importlib.import_module(module)
        for part in qualname.split("."):
            found = getattr(found, part)
    except Exception:  # noqa: BLE001 - not importable as it is named
        return None
    return f"{module}:{qualname}" if found is fn else None


def build(config: str | Path | Any | None = None, *, overrides: Iterable[str] = (), model: str | Path | None = None,
          data: str | Path | Iterable[Mapping[str, Any]] | None = None, reward: str | Callable[..., Any] | None = None,
          reward_range: tuple[float, float] | None = None, method: str | Path | Mapping[str, Any] | None = None,
          out_dir: str | Path | None = None, resume: bool = False, overwrite: bool = False,
          allow_data_change: bool = False):
    """A :class:`~skpo.training.trainer.Trainer`, ready to ``train()``.

    Args:
        config: a YAML config path, a :class:`~skpo.config.RunConfig`, or ``None`` (the defaults).
        overrides: ``key.sub=value`` strings, as on the command line (applied after the others).
        model: ``model.path`` (a local Hugging Face directory, a checkpoint, ``tiny-arith``).
        data: a data file (JSONL, JSONL.gz, Parquet, a ``datasets`` folder), or rows — dicts, a
            Hugging Face ``Dataset`` — written to ``OUT/inputs/rows.jsonl`` (columns are found by
            name as for files: ``question``/``problem``/``prompt``, ``answer``/``solution``, …).
        reward: a reward name (``math``, ``module:function``) or a function: recorded as
            ``module:function`` when it can be imported so (the run then resumes from the command
            line too), else registered in this process as ``python.<its qualified name>``
            (:func:`register_reward`; resume from Python with the same function).
        reward_range: the values your reward returns (``reward.range``), default ``[0, 1]``.
        method: a shipped method's name, a method file, or a method document as a dict (written to
            ``OUT/inputs/method.yaml``).
        out_dir: ``log.out_dir``.
        resume, overwrite, allow_data_change: as ``--resume`` / ``--overwrite`` / ``--allow-data-change``.
    """
    items: list[str] = []
    if out_dir is not None:
        items.append(f"log.out_dir={out_dir}")
    if model is not None:
        items.append(f"model.path={model}")
    if reward_range is not None:
        items.append(f"reward.range=[{float(reward_range[0])}, {float(reward_range[1])}]")
    if isinstance(config, RunConfig):  # the keys it sets (the defaults that follow the data follow this run's)
        base_tree = config.model_dump(mode="json", exclude_unset=True)
    else:
        base_tree = None
    cfg0 = load_config(None if base_tree is not None else config, [*_tree_overrides(base_tree), *items, *overrides])
    data0 = None if cfg0.data.task == "arith" else cfg0.data.path
    if out_dir is None and cfg0.log.out_dir == default_out_dir(cfg0.train.method, cfg0.model.path, data0):
        # no run directory given: named from the method and the data this run will have (rows: "rows")
        method_name = (str(method) if isinstance(method, (str, Path)) else str(method.get("name", "custom"))
                       if isinstance(method, Mapping) else cfg0.train.method)
        data_name = str(data) if isinstance(data, (str, Path)) else "rows.jsonl" if data is not None else data0
        items.insert(0, f"log.out_dir={default_out_dir(method_name, cfg0.model.path, data_name)}")
        cfg0 = load_config(None if base_tree is not None else config, [*_tree_overrides(base_tree), *items, *overrides])
    assert cfg0.log.out_dir is not None  # (filled in when the config is validated)
    inputs = Path(cfg0.log.out_dir) / INPUTS_DIR
    if data is not None:
        if isinstance(data, (str, Path)):
            items.append(f"data.path={data}")
        else:
            rows = [dict(r) for r in data]
            if not rows:
                raise ValueError("data: no rows")
            inputs.mkdir(parents=True, exist_ok=True)
            path = inputs / "rows.jsonl"
            path.write_text("".join(json.dumps(r, default=str) + "\n" for r in rows))
            items.append(f"data.path={path}")
    if callable(reward):
        name = importable_reference(reward)  # recorded in the saved config: resumable from the command line
        if name is None:  # registered in this process only: resumed from Python (the error on the command line says so)
            name = "python." + re.sub(r"[^A-Za-z0-9_.]", "_", f"{getattr(reward, '__module__', 'fn')}.{getattr(reward, '__qualname__', 'reward')}")
            register_reward(name, reward, batched=bool(getattr(reward, "batched", False)),
                            value_range=cast("tuple[float, float]", tuple(reward_range)) if reward_range is not None else (0.0, 1.0))
        items.append(f"reward.function={name}")
    elif reward is not None:
        items.append(f"reward.function={reward}")
    if isinstance(method, Mapping):
        inputs.mkdir(parents=True, exist_ok=True)
        path = inputs / "method.yaml"
        path.write_text(yaml.safe_dump(dict(method), sort_keys=False))
        items.append(f"train.method={path}")
    elif method is not None:
        items.append(f"train.method={method}")
    cfg = load_config(None if base_tree is not None else config, [*_tree_overrides(base_tree), *items, *overrides])
    return build_trainer(cfg, resume=resume, overwrite=overwrite, allow_data_change=allow_data_change)


def train(config: str | Path | Any | None = None, **kwargs: Any):
    """:func:`build`, then train to ``train.steps`` (or the token budget); returns the trainer
    (``trainer.policy`` is the trained model, its run directory ``trainer.run_dir``)."""
    trainer = build(config, **kwargs)
    trainer.train()
    return trainer


def _tree_overrides(tree: Mapping[str, Any] | None, prefix: str = "") -> list[str]:
    """A config tree as ``key=value`` overrides (a :class:`RunConfig` given as ``config``)."""
    if not tree:
        return []
    out: list[str] = []
    for key, value in tree.items():
        if isinstance(value, Mapping) and key != "method":
            out += _tree_overrides(value, f"{prefix}{key}.")
        else:
            out.append(f"{prefix}{key}={json.dumps(value)}")
    return out
