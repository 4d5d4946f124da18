"""The run's rollout engine and its context: the longest training prompt, the rollout kind's
``prompt_growth`` and the answer budget, held against the model's positions (``docs/rollout.md``)."""

from __future__ import annotations

import logging
from typing import Any

from skpo.config import RolloutSection, RunConfig
from skpo.engines import HFEngine
from skpo.engines.context import ContextLimit, ContextWindow, fit_context_window, model_positions
from skpo.engines.engine import Engine
from skpo.engines.vllm_engine import VLLMEngine  # optional: the [vllm] extra imports vllm
from skpo.methods import Method, rollout_params
from skpo.models.loading import resolve_model_path
from skpo.rollout import ROLLOUTS
from skpo.tasks.sources import PromptSource
from skpo.training.actor import Actor
from skpo.training.distributed import Dist

log = logging.getLogger("skpo")


def run_context_window(rollout: RolloutSection, method: Method, source: PromptSource, model_config: Any) -> ContextWindow:
    """The engine's context for a run (:func:`skpo.engines.context.fit_context_window`): the longest
    training prompt, the rollout kind's ``prompt_growth`` and ``rollout.max_new_tokens``,
    against the model's positions, or ``rollout.max_context_tokens`` when set.

    Raises:
        ContextError: the run does not fit the model; the message names the settings to change.
    """
    entry = ROLLOUTS.get(method.rollout)
    growth_fn = entry.meta.get("prompt_growth")
    budget = rollout.max_new_tokens
    growth = None if growth_fn is None else int(growth_fn(rollout_params(method), budget, rollout.initial_length))
    longest = max((len(item.prompt_ids) for item in source.items), default=1)
    return fit_context_window(longest, growth, budget, model_positions(model_config), rollout.context_setting,
                        growth_note=entry.meta.get("growth_note", f"rollout {method.rollout!r} growth"))


def build_engine(cfg: RunConfig, window: ContextWindow, actor: Actor, tokenizer: Any, stop_ids: list[int],
                 dist: Dist) -> ContextLimit:
    """The rollout engine: the Hugging Face decoder on the policy itself (no weight copy), or
    vLLM colocated on the same GPUs (its weights synced after every update); either way held to
    the run's context ``window``: a completion that reaches it is cut, counted and logged."""
    r = cfg.rollout
    if window.may_cut and actor.accelerator.is_main_process:
        log.warning(f"rollout: the engine's context is {window.tokens} tokens"
                    + ("" if window.need is None else f", the rollout may need {window.need}")
                    + ": answers that reach it are cut there, counted as rollout/cut_by_context and scored as unfinished")
    engine: Engine
    if r.engine == "vllm":
        engine = VLLMEngine(str(resolve_model_path(cfg.model.path)), dtype=cfg.model.dtype,
                            gpu_memory_utilization=r.vllm.gpu_memory_utilization, sleep=r.vllm.sleep,
                            max_model_len=window.tokens, seed=cfg.train.seed, tensor_parallel_size=r.vllm.tensor_parallel_size,
                            rank=dist.rank, local_rank=actor.accelerator.local_process_index, world_size=dist.world,
                            weight_bucket_mb=r.vllm.weight_bucket_mb)
    else:
        engine = HFEngine(actor.policy, pad_token_id=actor.pad_id, eos_token_id=stop_ids,
                          decode=lambda ids: tokenizer.decode(ids, skip_special_tokens=True),
                          batch_size=r.engine_batch_size, autocast_dtype=actor.autocast_dtype)
    return ContextLimit(engine, window.tokens)
