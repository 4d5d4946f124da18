"""A fake ``vllm`` (0.30.0) with the API surface :mod:`skpo.engines.vllm_engine` uses and vLLM's
behaviour where the engine relies on it, read from vLLM's source (file references below are
``vllm/…`` of 0.30.0). Sampling itself is delegated to skpo's Hugging Face engine on the CPU.

Modelled behaviours (each has a contract test in ``tests/test_vllm_engine.py``):

- **Where the engine core runs** (``v1/engine/llm_engine.py``, ``config/parallel.py``): in a child
  process unless ``distributed_executor_backend="external_launcher"`` (which needs ``RANK`` and
  ``LOCAL_RANK``, and ``MASTER_ADDR``/``MASTER_PORT`` without an initialised process group, and
  sets ``VLLM_ENABLE_V1_MULTIPROCESSING=0``) or that variable is ``0``. Out of process,
  ``apply_model`` must serialise its function: refused with vLLM's ``TypeError`` unless
  ``VLLM_ALLOW_INSECURE_SERIALIZATION=1``, and then every tensor the function holds is copied
  (counted in ``LLM.serialized_bytes``). ``llm_engine.model_executor`` exists in-process only.
- **Start-up side effects** (``utils/torch_utils.py``): the global ``random``/``numpy``/``torch``
  generators are seeded with the engine's seed.
- **Context** (``renderers/params.py``, ``v1/engine/input_processor.py``, ``v1/core/sched/utils.py``):
  an empty prompt or one of ``>= max_model_len`` tokens raises ``VLLMValidationError``; a
  completion stops at ``max_model_len`` with ``finish_reason="length"`` (no error);
  ``max_model_len`` defaults to the model's positions and may not exceed them.
- **Log-probs** (``v1/worker/gpu/sample/sampler.py``): ``processed_logprobs`` is
  ``log_softmax(logits / T)`` after top-p, renormalised over the nucleus; ``raw_logprobs`` the
  untempered model's.
- **SamplingParams** (``sampling_params.py``): ``VLLMValidationError`` (not a ``ValueError``) for
  ``n < 1``, ``max_tokens < 1``, ``temperature`` outside ``[0, 2]``, greedy with ``n > 1``, stop
  strings without ``detokenize``. Sample ``j`` of a request is seeded with ``seed + j``
  (``v1/engine/parallel_sampling.py``).
- **Stops** (``v1/core/sched/utils.py``): the stop token stays in ``token_ids``; ``stop_reason``
  is ``None`` for the tokenizer's EOS, the id for ``stop_token_ids`` and the model's other EOS
  ids, the string for stop strings.
- **Sleep mode** (``v1/executor/abstract.py``, ``device_allocator/cumem.py``): ``sleep(level=1)``
  keeps the weights (offloaded), ``level=2`` discards them; ``wake_up(tags)`` wakes the tags
  given, and the engine runs only once every tag is awake. Real vLLM *hangs* when asked to
  generate while any tag sleeps and *samples garbage* from weights discarded and never
  reloaded; the fake raises in both cases so a test fails instead. Loading weights while the
  ``weights`` tag sleeps writes to unmapped memory in vLLM: the fake raises. ``sleep`` without
  ``enable_sleep_mode`` only pauses (frees nothing). ``wake_up(tags)`` naming a tag that does not
  sleep while others do wakes *nothing* in vLLM (``Executor.wake_up`` warns "Tag … is not in
  sleeping tags" and returns) and ``EngineCore.wake_up`` (``v1/engine/core.py``) leaves the
  scheduler paused, so the next ``generate`` never returns: the fake raises at the ``wake_up``.
  With nothing asleep, ``wake_up`` is a warning and nothing else in both.
- **Weight loading** (``model_executor/models/utils.py``: ``AutoWeightsLoader``,
  ``_get_tied_embedding_params``, ``_filter_skipped``, ``_check_skipped_aliases``; ``llama.py``,
  ``qwen2.py``: ``load_weights`` builds a new ``AutoWeightsLoader`` per call, and a tied
  ``lm_head`` is ``model.embed_tokens``' parameter): a name tied to one before it in the model
  (``lm_head.weight`` of a tied model) is skipped, and a call that carries such an alias without
  its first name raises vLLM's ``ValueError`` ("… was skipped because it is tied to … so the tied
  weight is uninitialized") after loading the rest of the call. An unknown name raises vLLM's
  ``ValueError`` ("There is no module or parameter named …").
- **Start-up memory** (``v1/worker/gpu_worker.py``: ``init_device`` → ``v1/worker/utils.py``:
  ``request_memory``): after ``gc.collect()`` and ``empty_cache()``, the device's free memory
  must cover ``gpu_memory_utilization × total`` or vLLM raises ``ValueError`` ("Free memory on
  device … is less than desired GPU memory utilization …"). The fake's device is
  ``DEVICE_MEMORY`` (total and free bytes; a test lowers ``free`` for what the trainer holds).
- **Finish reasons** (``v1/engine/__init__.py``): ``stop``, ``length``, ``abort``, ``error``,
  ``repetition``; a test sets ``LLM.force_finish_reason`` to get one of the last three.

Every call is recorded in ``LLM.calls`` so tests can assert what the engine asked for.
"""

from __future__ import annotations

import math
import os
import random
from dataclasses import dataclass
from typing import Any

__version__ = "0.30.0-fake"

LOGPROBS_MODES = ("raw_logprobs", "processed_logprobs", "raw_logits", "processed_logits")
FINISH_REASONS = ("stop", "length", "abort", "error", "repetition")
BACKENDS = (None, "ray", "mp", "uni", "external_launcher")
WAKE_TAGS = ("weights", "kv_cache", "scheduling")
# EngineArgs fields the fake accepts besides LLM's explicit parameters (an unknown one is a TypeError in vLLM too)
ENGINE_ARGS = {"enable_prefix_caching", "enable_sleep_mode", "max_model_len", "logprobs_mode",
               "distributed_executor_backend", "max_num_seqs", "max_num_batched_tokens", "model_impl",
               "quantization", "trust_remote_code", "disable_log_stats"}


# The fake's GPU for the start-up check: bytes in total and free (a test sets "free" to leave room
# for what the trainer already holds; 80 GiB and all of it free by default).
DEVICE_MEMORY = {"total": 80 << 30, "free": 80 << 30}


class VLLMValidationError(Exception):
    """vLLM's request validation error (``vllm/exceptions.py``): an ``Exception``, not a ``ValueError``."""


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
        if 0 < temperature < 0.01:
            temperature = 0.01  # vLLM warns and raises it
        if seed == -1:
            seed = None
        if not isinstance(n, int) or n < 1:
            raise VLLMValidationError(f"n must be at least 1, got {n}.")
        if not (math.isfinite(temperature) and 0 <= temperature <= 2):
            raise VLLMValidationError(f"temperature must be in [0, 2], got {temperature}.")
        if not 0 < top_p <= 1:
            raise VLLMValidationError(f"top_p must be in (0, 1], got {top_p}.")
        if max_tokens is not None and max_tokens < 1:
            raise VLLMValidationError(f"max_tokens must be at least 1, got {max_tokens}.")
        if stop and not detokenize:
            raise VLLMValidationError("stop strings are only supported when detokenize is True.")
        if temperature < 1e-5:
            if n > 1:
                raise VLLMValidationError(f"n must be 1 when using greedy sampling, got {n}.")
            top_p = 1.0
        self.n, self.temperature, self.top_p, self.max_tokens, self.seed = n, temperature, top_p, max_tokens, seed
        self.logprobs, self.stop_token_ids, self.ignore_eos = logprobs, list(stop_token_ids or []), ignore_eos
        self.stop = [stop] if isinstance(stop, str) else list(stop or [])
        self.include_stop_str_in_output, self.detokenize = include_stop_str_in_output, detokenize


class _Namespace:
    def __init__(self, **kw: Any) -> None:
        self.__dict__.update(kw)


class LLM:
    def __init__(self, model: str, *, tokenizer: str | None = None, skip_tokenizer_init: bool = False,
                 tensor_parallel_size: int = 1, dtype: str = "auto", seed: int = 0, gpu_memory_utilization: float = 0.92,
                 enforce_eager: bool = False, **kwargs: Any) -> None:
        import numpy as np
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        unknown = set(kwargs) - ENGINE_ARGS
        if unknown:
            raise TypeError(f"EngineArgs.__init__() got an unexpected keyword argument {sorted(unknown)[0]!r}")
        logprobs_mode = kwargs.get("logprobs_mode", "raw_logprobs")
        backend = kwargs.get("distributed_executor_backend")
        if logprobs_mode not in LOGPROBS_MODES:
            raise ValueError(f"logprobs_mode must be one of {LOGPROBS_MODES}")
        if backend not in BACKENDS:
            raise ValueError(f"distributed_executor_backend must be one of {BACKENDS}")
        if not 0 < gpu_memory_utilization <= 1:
            raise ValueError("gpu_memory_utilization must be in (0, 1]")
        if backend == "external_launcher":
            os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"  # ParallelConfig.__post_init__
            int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])  # KeyError without them, as in vLLM
            if not torch.distributed.is_initialized():
                missing = [k for k in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(k)]
                if missing:
                    raise ValueError(f"Error initializing torch.distributed using env:// rendezvous: environment "
                                     f"variable {missing[0]} expected, but not set")
        _request_memory(gpu_memory_utilization)
        self.in_process = os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING", "1") == "0"
        self.kwargs = dict(model=model, tokenizer=tokenizer, dtype=dtype, seed=seed,
                           gpu_memory_utilization=gpu_memory_utilization, tensor_parallel_size=tensor_parallel_size,
                           enforce_eager=enforce_eager, **kwargs)
        self.calls: list[tuple[str, Any]] = [("__init__", self.kwargs)]
        self.model = AutoModelForCausalLM.from_pretrained(model, local_files_only=True, dtype=torch.float32).eval()
        self.tokenizer = None if skip_tokenizer_init else AutoTokenizer.from_pretrained(tokenizer or model, local_files_only=True)
        positions = self.model.config.max_position_embeddings
        max_model_len = kwargs.get("max_model_len")
        if max_model_len is not None and max_model_len > positions and os.environ.get("VLLM_ALLOW_LONG_MAX_MODEL_LEN") != "1":
            raise ValueError(f"User-specified max_model_len ({max_model_len}) is greater than the derived "
                             f"max_model_len (max_position_embeddings={positions} in model's config.json).")
        self.max_model_len = max_model_len or positions
        self.llm_engine = _Namespace(model_config=_Namespace(max_model_len=self.max_model_len))
        if self.in_process:  # only then does LLMEngine expose the executor (and the model) in this process
            runner = _Namespace(model=_ModelWithLoadWeights(self))
            self.llm_engine.model_executor = _Namespace(driver_worker=_Namespace(worker=_Namespace(model_runner=runner)))
        self.sleeping: set[str] = set()
        self.weights_valid = True
        self.prefix_cache_resets = 0
        self.serialized_bytes = 0
        self.loaded_names: list[str] = []  # every name load_weights loaded, in order
        self.force_finish_reason: str | None = None
        # vLLM seeds the process's generators when it starts (set_random_seed, twice)
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)

    def get_tokenizer(self):
        return self.tokenizer

    # -- generation
    def generate(self, prompts: Any, sampling_params: SamplingParams | list[SamplingParams] | None = None, *,
                 use_tqdm: bool = True) -> list[RequestOutput]:
        from skpo.engines import HFEngine
        from skpo.engines import SamplingParams as SkpoParams

        if self.sleeping:
            raise RuntimeError(f"generate while {sorted(self.sleeping)} sleep: vLLM's scheduler stays paused until every "
                               "tag is awake, and the call would never return")
        if not self.weights_valid:
            raise RuntimeError("generate after sleep(level=2) dropped the weights and before they were loaded again: "
                               "vLLM would sample from undefined memory")
        prompts = [prompts] if isinstance(prompts, dict) else list(prompts)
        params = sampling_params if isinstance(sampling_params, list) else [sampling_params or SamplingParams()] * len(prompts)
        if len(params) != len(prompts):
            raise ValueError("The lengths of prompts and sampling_params must be the same.")
        for prompt in prompts:
            n_prompt = len(prompt["prompt_token_ids"])
            if n_prompt == 0:
                raise VLLMValidationError("The decoder prompt cannot be empty")
            if n_prompt >= self.max_model_len:
                raise VLLMValidationError(
                    f"The decoder prompt (length {n_prompt}) plus the number of requested output tokens (at least 1) "
                    f"is longer than the maximum model length of {self.max_model_len}.")
        self.calls.append(("generate", [(p, sp) for p, sp in zip(prompts, params)]))
        eos = self.model.config.eos_token_id
        eos_ids = [] if eos is None else ([eos] if isinstance(eos, int) else list(eos))
        tokenizer_eos = self.tokenizer.eos_token_id if self.tokenizer is not None else None
        decode = (lambda t: self.tokenizer.decode(t, skip_special_tokens=True)) if self.tokenizer is not None else None
        outputs = []
        for r, (prompt, sp) in enumerate(zip(prompts, params)):
            ids = list(prompt["prompt_token_ids"])
            budget = min(sp.max_tokens or 16, self.max_model_len - len(ids))  # stops at max_model_len: "length"
            engine = HFEngine(self.model, pad_token_id=0, eos_token_id=None if sp.ignore_eos else eos_ids, decode=decode)
            seed = sp.seed if sp.seed is not None else random.randrange(1 << 62)
            outs = []
            for j in range(sp.n):  # sample j is the request with seed + j
                c = engine.generate([ids], 1, SkpoParams(
                    temperature=sp.temperature, top_p=sp.top_p, max_new_tokens=budget, stop_token_ids=sp.stop_token_ids,
                    stop=sp.stop, seed=[seed + j], ignore_eos=sp.ignore_eos))[0][0]
                lps = self._reported_logprobs(engine, ids, c, sp)
                entries = [{t: Logprob(lp, 1)} for t, lp in zip(c.token_ids, lps)] if sp.logprobs is not None else None
                stop_reason = None if c.stop_reason == tokenizer_eos else c.stop_reason
                finish = self.force_finish_reason or c.finish_reason
                outs.append(CompletionOutput(j, decode(list(c.token_ids)) if decode and sp.detokenize else "",
                                             list(c.token_ids), float(sum(lps)) if lps else 0.0, entries, finish,
                                             stop_reason))
            outputs.append(RequestOutput(str(r), None, ids, outs))
        return outputs

    def _reported_logprobs(self, engine, ids: list[int], c, sp: SamplingParams) -> list[float]:
        """The sampled tokens' log-probs as ``logprobs_mode`` reports them."""
        import torch

        if not c.token_ids:
            return []
        mode = self.kwargs.get("logprobs_mode", "raw_logprobs")
        if mode == "raw_logprobs":  # the untempered model's
            return engine.score([ids], [list(c.token_ids)], temperature=1.0)[0]
        if sp.temperature == 0 or sp.top_p >= 1.0:
            return list(c.logprobs)
        # processed: after top-p, renormalised over the nucleus (the smallest set of most likely
        # tokens whose mass reaches top_p, the token that crosses it included)
        with torch.no_grad():
            logits = self.model(torch.tensor([ids + list(c.token_ids)])).logits[0, len(ids) - 1: -1].float()
        probs = torch.softmax(logits / sp.temperature, dim=-1)
        sorted_probs, _ = probs.sort(dim=-1, descending=True)
        before = sorted_probs.cumsum(-1) - sorted_probs  # mass of the more likely tokens
        nucleus = (sorted_probs * (before < sp.top_p)).sum(-1)
        return [lp - math.log(float(m)) for lp, m in zip(c.logprobs, nucleus)]

    # -- weights and memory
    def apply_model(self, func):
        self.calls.append(("apply_model", func))
        if not self.in_process:
            if os.environ.get("VLLM_ALLOW_INSECURE_SERIALIZATION") != "1":
                raise TypeError("Object of type <class 'function'> is not serializable Set "
                                "VLLM_ALLOW_INSECURE_SERIALIZATION=1 to allow fallback to pickle-based serialization.")
            self.serialized_bytes += _tensor_bytes(func)  # cloudpickled to the engine process: every tensor copied
        return [func(_ModelWithLoadWeights(self))]

    def reset_prefix_cache(self) -> bool:
        self.calls.append(("reset_prefix_cache", None))
        self.prefix_cache_resets += 1
        return True

    def sleep(self, level: int = 1) -> None:
        self.calls.append(("sleep", level))
        if self.sleeping:  # vLLM: a warning, nothing happens
            return
        if not self.kwargs.get("enable_sleep_mode"):
            self.sleeping = {"scheduling"}  # level 0 only: paused, nothing freed
            return
        self.sleeping = {"weights", "kv_cache"}
        if level >= 2:
            self.weights_valid = False
            self._loaded_since_drop: set[str] = set()

    def wake_up(self, tags: list[str] | None = None) -> None:
        """``EngineCore.wake_up`` (``v1/engine/core.py``) drops ``"scheduling"`` from the tags and
        hands the rest to ``Executor.wake_up`` (``v1/executor/abstract.py``), which wakes them only
        if every one sleeps; the scheduler resumes once nothing sleeps."""
        self.calls.append(("wake_up", tags))
        for tag in tags or ():
            if tag not in WAKE_TAGS:
                raise ValueError(f"invalid tag {tag!r}; valid: {WAKE_TAGS}")
        memory = [t for t in tags if t != "scheduling"] if tags is not None else None
        asleep = self.sleeping - {"scheduling"}
        if memory is None or memory:
            if not asleep:
                pass  # vLLM: "Executor is not sleeping." (a warning), nothing else
            elif memory and not set(memory) <= asleep:
                raise RuntimeError(
                    f"wake_up(tags={tags}) while only {sorted(asleep)} sleep: vLLM warns that a tag is not in the "
                    "sleeping tags and wakes nothing, and its scheduler stays paused, so the next generate never returns")
            else:
                self.sleeping -= set(memory) if memory else asleep
        if not (self.sleeping - {"scheduling"}):
            self.sleeping = set()  # resume_scheduler: nothing of the executor sleeps any more


class _ModelWithLoadWeights:
    """vLLM's model classes take ``load_weights(iterable of (HF name, tensor)) -> set of names``;
    loading every parameter after a level-2 sleep makes the weights valid again."""

    def __init__(self, llm: LLM) -> None:
        self.llm = llm

    def load_weights(self, weights) -> set[str]:
        """One ``AutoWeightsLoader(model).load_weights(weights)`` call: tied aliases skipped and
        checked against what this call loaded (``_filter_skipped``, ``_check_skipped_aliases``)."""
        import torch

        llm = self.llm
        if "weights" in llm.sleeping:
            raise RuntimeError("load_weights while the weights sleep: vLLM would write to unmapped memory")
        state = llm.model.state_dict()
        aliases = _tied_embedding_aliases(llm.model)
        skipped: dict[str, str] = {}
        loaded = set()
        with torch.no_grad():
            for name, tensor in weights:
                if name in aliases:  # _filter_skipped: the alias is not loaded, only remembered
                    skipped[name] = aliases[name]
                    continue
                if name not in state:
                    raise ValueError(f"There is no module or parameter named {name!r} in {type(llm.model).__name__}")
                state[name].copy_(tensor.to(state[name].dtype))
                loaded.add(name)
        llm.loaded_names.extend(sorted(loaded))
        for alias, canonical in skipped.items():  # _check_skipped_aliases
            if canonical not in loaded:
                raise ValueError(f"{alias!r} was skipped because it is tied to {canonical!r} in "
                                 f"{type(llm.model).__name__}, but {canonical!r} was not found in the checkpoint, so "
                                 "the tied weight is uninitialized.")
        if not llm.weights_valid:
            llm._loaded_since_drop |= loaded
            if {name for name, _ in llm.model.named_parameters()} <= llm._loaded_since_drop:
                llm.weights_valid = True
        return loaded


def _tied_embedding_aliases(model) -> dict[str, str]:
    """``_get_tied_embedding_params``: each qualname of an embedding's parameter (vLLM's
    ``VocabParallelEmbedding``, of which ``ParallelLMHead`` is a subclass: here the model's input
    and output embeddings) mapped to the first name, in module order, of the same parameter."""
    embeddings = {id(model.get_input_embeddings()), id(model.get_output_embeddings())}
    canonical: dict[int, str] = {}
    aliased: dict[str, str] = {}
    for prefix, module in model.named_modules(remove_duplicate=False):
        if id(module) not in embeddings:
            continue
        for name, param in module.named_parameters(remove_duplicate=False):
            qualname = f"{prefix}.{name}" if prefix else name
            first = canonical.setdefault(id(param), qualname)
            if first != qualname:
                aliased[qualname] = first
    return aliased


def _request_memory(gpu_memory_utilization: float) -> int:
    """``request_memory`` (``v1/worker/utils.py``), on the fake's ``DEVICE_MEMORY``."""
    total, free = DEVICE_MEMORY["total"], DEVICE_MEMORY["free"]
    requested = math.ceil(total * gpu_memory_utilization)
    if free < requested:
        raise ValueError(f"Free memory on device cuda:0 ({free / 2**30:.2f}/{total / 2**30:.2f} GiB) on startup is less "
                         f"than desired GPU memory utilization ({gpu_memory_utilization}, {requested / 2**30:.2f} GiB). "
                         "Decrease GPU memory utilization or reduce GPU memory used by other processes.")
    return requested


def _tensor_bytes(func) -> int:
    """Bytes of the tensors a function (or callable object) carries: what pickling would copy."""
    import torch

    seen, total, todo = set(), 0, [func]
    while todo:
        obj = todo.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, torch.Tensor):
            total += obj.numel() * obj.element_size()
        elif isinstance(obj, (list, tuple, set)):
            todo.extend(obj)
        elif isinstance(obj, dict):
            todo.extend(obj.values())
        else:
            todo.extend(c.cell_contents for c in (getattr(obj, "__closure__", None) or ()))
            todo.extend(getattr(obj, "__dict__", {}).values())
    return total
