"""A fake ``vllm`` with exactly the API surface :mod:`skpo.rollout.vllm_engine` uses.

Signatures are keyword-checked as vLLM documents them (an argument the engine passes that vLLM
does not take is a ``TypeError`` here too); behaviour is vLLM's where the engine relies on it:
one ``RequestOutput`` per prompt in order, ``n`` outputs with ``index``, the stop token kept in
``token_ids``, EOS in force unless ``ignore_eos``, ``logprobs=0`` giving the sampled token's
log-prob (``logprobs_mode`` ``processed_logprobs``: after temperature; ``raw_logprobs``: the
model's), ``max_tokens >= 1``, sleep/wake, ``apply_model`` running a function on the model,
``reset_prefix_cache``. Sampling itself is delegated to skpo's Hugging Face engine on the CPU.

Every call is recorded in ``LLM.calls`` so tests can assert what the engine asked for.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__version__ = "0.0.0-fake"

LOGPROBS_MODES = ("raw_logprobs", "processed_logprobs", "raw_logits", "processed_logits")


@dataclass
class Logprob:
    logprob: float
    rank: int | None = None
    decoded_token: str | None = None


@dataclass
class CompletionOutput:
    index: int
    text: str
    token_ids: list[int]
    cumulative_logprob: float | None
    logprobs: list[dict[int, Logprob]] | None
    finish_reason: str | None = None
    stop_reason: int | str | None = None


@dataclass
class RequestOutput:
    request_id: str
    prompt: str | None
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput]
    finished: bool = True


class SamplingParams:
    def __init__(self, *, n: int = 1, temperature: float = 1.0, top_p: float = 1.0, max_tokens: int | None = 16,
                 seed: int | None = None, logprobs: int | None = None, stop_token_ids: list[int] | None = None,
                 stop: str | list[str] | None = None, ignore_eos: bool = False, include_stop_str_in_output: bool = False,
                 detokenize: bool = True) -> None:
        if n < 1:
            raise ValueError(f"n must be at least 1, got {n}.")
        if temperature < 0:
            raise ValueError(f"temperature must be non-negative, got {temperature}.")
        if not 0 < top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {top_p}.")
        if max_tokens is not None and max_tokens < 1:
            raise ValueError(f"max_tokens must be at least 1, got {max_tokens}.")
        if seed is not None and not -(1 << 63) <= seed < (1 << 63):
            raise ValueError("seed must fit in 64 bits")
        if stop and not detokenize:
            raise ValueError("stop strings are only supported when detokenize is True.")
        self.n, self.temperature, self.top_p, self.max_tokens, self.seed = n, temperature, top_p, max_tokens, seed
        self.logprobs, self.stop_token_ids, self.ignore_eos = logprobs, list(stop_token_ids or []), ignore_eos
        self.stop = [stop] if isinstance(stop, str) else list(stop or [])
        self.include_stop_str_in_output, self.detokenize = include_stop_str_in_output, detokenize


class LLM:
    def __init__(self, model: str, *, tokenizer: str | None = None, dtype: str = "auto", seed: int = 0,
                 gpu_memory_utilization: float = 0.9, enable_prefix_caching: bool | None = None,
                 enable_sleep_mode: bool = False, max_model_len: int | None = None, tensor_parallel_size: int = 1,
                 logprobs_mode: str = "raw_logprobs", distributed_executor_backend: str | None = None,
                 skip_tokenizer_init: bool = False) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if logprobs_mode not in LOGPROBS_MODES:
            raise ValueError(f"logprobs_mode must be one of {LOGPROBS_MODES}")
        if not 0 < gpu_memory_utilization <= 1:
            raise ValueError("gpu_memory_utilization must be in (0, 1]")
        self.kwargs = dict(model=model, tokenizer=tokenizer, dtype=dtype, seed=seed,
                           gpu_memory_utilization=gpu_memory_utilization, enable_prefix_caching=enable_prefix_caching,
                           enable_sleep_mode=enable_sleep_mode, max_model_len=max_model_len,
                           tensor_parallel_size=tensor_parallel_size, logprobs_mode=logprobs_mode,
                           distributed_executor_backend=distributed_executor_backend)
        self.calls: list[tuple[str, Any]] = [("__init__", self.kwargs)]
        self.model = AutoModelForCausalLM.from_pretrained(model, local_files_only=True, dtype=torch.float32).eval()
        self.tokenizer = None if skip_tokenizer_init else AutoTokenizer.from_pretrained(tokenizer or model, local_files_only=True)
        self.asleep = False
        self.max_model_len = max_model_len

    # -- generation
    def generate(self, prompts: Any, sampling_params: SamplingParams | list[SamplingParams] | None = None,
                 use_tqdm: bool = True) -> list[RequestOutput]:
        from skpo.rollout import HFEngine
        from skpo.rollout import SamplingParams as SkpoParams

        if self.asleep:
            raise RuntimeError("the engine is asleep: call wake_up() first")
        prompts = [prompts] if isinstance(prompts, dict) else list(prompts)
        params = sampling_params if isinstance(sampling_params, list) else [sampling_params or SamplingParams()] * len(prompts)
        if len(params) != len(prompts):
            raise ValueError("The lengths of prompts and sampling_params must be the same.")
        self.calls.append(("generate", [(p, sp) for p, sp in zip(prompts, params)]))
        eos = self.model.config.eos_token_id
        eos_ids = [] if eos is None else ([eos] if isinstance(eos, int) else list(eos))
        outputs = []
        for r, (prompt, sp) in enumerate(zip(prompts, params)):
            ids = list(prompt["prompt_token_ids"])
            if self.max_model_len is not None and len(ids) + (sp.max_tokens or 0) > self.max_model_len:
                raise ValueError("prompt + max_tokens exceeds max_model_len")
            decode = (lambda t: self.tokenizer.decode(t, skip_special_tokens=True)) if self.tokenizer is not None else None
            engine = HFEngine(self.model, pad_token_id=0, eos_token_id=None if sp.ignore_eos else eos_ids, decode=decode)
            raw = self.kwargs["logprobs_mode"] == "raw_logprobs"
            completions = engine.generate([ids], sp.n, SkpoParams(
                temperature=sp.temperature, top_p=sp.top_p, max_new_tokens=sp.max_tokens or 16,
                stop_token_ids=sp.stop_token_ids, stop=sp.stop, seed=sp.seed, ignore_eos=sp.ignore_eos))[0]
            outs = []
            for j, c in enumerate(completions):
                lps = c.logprobs
                if raw and sp.temperature not in (0, 1):  # the untempered model's log-probs
                    lps = engine.score([ids], [list(c.token_ids)], temperature=1.0)[0]
                entries = [{t: Logprob(lp, 1)} for t, lp in zip(c.token_ids, lps)] if sp.logprobs is not None else None
                stop_reason = c.stop_reason if c.stop_reason not in eos_ids else None  # vLLM: None for EOS
                outs.append(CompletionOutput(j, decode(list(c.token_ids)) if decode and sp.detokenize else "",
                                             list(c.token_ids), float(sum(lps)) if lps else 0.0, entries,
                                             c.finish_reason, stop_reason))
            outputs.append(RequestOutput(str(r), None, ids, outs))
        return outputs

    # -- weights and memory
    def apply_model(self, func):
        self.calls.append(("apply_model", func))
        return [func(_ModelWithLoadWeights(self.model))]

    def reset_prefix_cache(self) -> bool:
        self.calls.append(("reset_prefix_cache", None))
        return True

    def sleep(self, level: int = 1) -> None:
        if not self.kwargs["enable_sleep_mode"]:
            raise ValueError("Sleep mode is not enabled")
        self.calls.append(("sleep", level))
        self.asleep = True

    def wake_up(self, tags: list[str] | None = None) -> None:
        self.calls.append(("wake_up", tags))
        self.asleep = False


class _ModelWithLoadWeights:
    """vLLM's model classes take ``load_weights(iterable of (HF name, tensor))``."""

    def __init__(self, model) -> None:
        self.model = model

    def load_weights(self, weights) -> set[str]:
        import torch

        state = self.model.state_dict()
        loaded = set()
        with torch.no_grad():
            for name, tensor in weights:
                if name not in state:
                    raise KeyError(f"unexpected weight {name!r}")
                state[name].copy_(tensor.to(state[name].dtype))
                loaded.add(name)
        return loaded
