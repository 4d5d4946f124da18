"""The rollout engine on vLLM (``rollout.engine: vllm``, extra ``[vllm]``), colocated with training.

The whole story (sources, readings, how each step runs): ``docs/scaling.md``, section "Notes from skpo.engines.vllm_engine"."""

from __future__ import annotations

import contextlib
import gc
import os
import random
import socket
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import torch

from skpo.engines.engine import Completion, SamplingParams, prompt_seeds, resolve_max_new_tokens
from skpo.models.lora import is_lora, merged_named_tensors

__all__ = ["VLLMEngine", "tied_aliases", "weight_buckets"]

_SEED_BITS = (1 << 62) - 1  # vLLM adds the sample index to a request's seed in an int64
_MAX_TEMPERATURE = 2.0  # vLLM's SamplingParams refuses more


class VLLMEngine:
    """:class:`~skpo.engines.engine.Engine` on an in-process ``vllm.LLM``.

    Args:
        model_path: a local Hugging Face model directory (weights, config, tokenizer).
        dtype: the engine's weights and compute dtype (``bfloat16`` in the paper's recipes).
        gpu_memory_utilization: the fraction of GPU memory vLLM may take (weights + KV cache).
        sleep: vLLM's sleep mode: the engine releases its memory while the trainer updates.
        max_model_len: the context (prompt + completion); ``None``: the model's own.
        seed: the engine's own seed (every request carries its own seed anyway).
        tensor_parallel_size: GPUs per engine; only 1 (see the module docstring).
        rank, local_rank, world_size: this process in the launch (one engine per process).
        weight_bucket_mb: most bytes (MiB) of weights handed to vLLM in one load during a sync.
        llm: an existing ``vllm.LLM`` (tests).
    """

    logprobs_after_top_p = True
    sleep_level = 2

    def __init__(self, model_path: str, *, dtype: str = "bfloat16", gpu_memory_utilization: float = 0.3,
                 sleep: bool = True, max_model_len: int | None = None, seed: int = 0, tensor_parallel_size: int = 1,
                 rank: int = 0, local_rank: int = 0, world_size: int = 1, weight_bucket_mb: int = 512,
                 llm: Any = None) -> None:
        if tensor_parallel_size != 1:
            raise ValueError(
                f"rollout.vllm.tensor_parallel_size={tensor_parallel_size}: tensor parallelism is not supported. Colocated "
                "engines run one per training process, and vLLM needs every rank of a tensor-parallel group to submit "
                "the same requests in the same calls, which skpo's per-rank rollouts do not do; use one engine per "
                "GPU (tensor_parallel_size: 1)")
        if weight_bucket_mb < 1:
            raise ValueError(f"weight_bucket_mb must be >= 1, got {weight_bucket_mb}")
        import vllm  # the [vllm] extra: imported only when this engine is chosen

        self._vllm = vllm
        self.sleep_mode = sleep
        self.dtype = getattr(torch, dtype) if isinstance(dtype, str) and isinstance(getattr(torch, dtype, None), torch.dtype) \
            else torch.bfloat16
        self.bucket_bytes = int(weight_bucket_mb) << 20
        self._sleeping: set[str] = set()  # vLLM's sleeping tags: "weights", "kv_cache"
        self.weights_loaded = True  # False after a level-2 sleep, until the next sync
        if llm is None:
            _set_launcher_env(rank, local_rank, world_size)
            with _rng_states_kept():
                llm = vllm.LLM(
                    model=str(model_path), tokenizer=str(model_path), dtype=dtype, seed=seed,
                    gpu_memory_utilization=gpu_memory_utilization, enable_prefix_caching=True, enable_sleep_mode=sleep,
                    max_model_len=max_model_len, tensor_parallel_size=1, logprobs_mode="processed_logprobs",
                    distributed_executor_backend="external_launcher",
                )
        self.llm = llm
        self.max_model_len = max_model_len or _engine_max_model_len(llm)

    @property
    def asleep(self) -> bool:
        return bool(self._sleeping)

    # ------------------------------------------------------------------ Engine protocol
    def generate(self, prompts: list[list[int]], n: int, params: SamplingParams,
                 max_new_tokens: list[int] | None = None) -> list[list[Completion]]:
        """Sample ``n`` completions per prompt (:meth:`skpo.engines.engine.Engine.generate`)."""
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        if any(len(p) == 0 for p in prompts):
            raise ValueError("prompts must hold at least one token")
        if params.temperature > _MAX_TEMPERATURE:
            raise ValueError(f"temperature {params.temperature} > {_MAX_TEMPERATURE}: vLLM refuses it")
        self._awake_for_generation()
        budgets = resolve_max_new_tokens(params, len(prompts), max_new_tokens)
        limits = [min(b, max(0, self.max_model_len - len(p))) if self.max_model_len else b
                  for b, p in zip(budgets, prompts)]
        seeds = prompt_seeds(params.seed, len(prompts))
        out: list[list[Completion]] = [[] for _ in prompts]
        todo = [i for i in range(len(prompts)) if limits[i] > 0 and n > 0]
        for i in range(len(prompts)):
            if limits[i] == 0 and n > 0:
                out[i] = [Completion([], [], "length", cut_by_context=budgets[i] > 0) for _ in range(n)]
        if not todo:
            return out
        draws = 1 if params.greedy else n  # vLLM refuses greedy sampling with n > 1
        requests = [{"prompt_token_ids": list(prompts[i])} for i in todo]
        sampling = [self._sampling_params(params, draws, limits[i], seeds[i]) for i in todo]
        results = self.llm.generate(requests, sampling_params=sampling, use_tqdm=False)
        if len(results) != len(todo):
            raise RuntimeError(f"vLLM returned {len(results)} results for {len(todo)} requests")
        for i, result in zip(todo, results):
            completions = [self._completion(o, cut=limits[i] < budgets[i] and len(o.token_ids) >= limits[i])
                           for o in sorted(result.outputs, key=lambda o: o.index)]
            out[i] = completions if len(completions) == n else [_copy(completions[0]) for _ in range(n)]
        return out

    def _sampling_params(self, params: SamplingParams, n: int, budget: int, seed: int):
        greedy = params.greedy
        return self._vllm.SamplingParams(
            n=n, temperature=0.0 if greedy else float(params.temperature), top_p=1.0 if greedy else float(params.top_p),
            max_tokens=int(budget), seed=int(seed) & _SEED_BITS, logprobs=0,
            stop_token_ids=list(params.stop_token_ids), stop=list(params.stop) or None, ignore_eos=bool(params.ignore_eos),
            include_stop_str_in_output=True, detokenize=bool(params.stop),
        )

    @staticmethod
    def _completion(output: Any, cut: bool) -> Completion:
        reason = output.finish_reason
        if reason not in ("stop", "length"):
            raise RuntimeError(f"vLLM ended a request with finish_reason={reason!r} (stop_reason="
                               f"{output.stop_reason!r}): an aborted or failed request is not an answer")
        token_ids = [int(t) for t in output.token_ids]
        entries = output.logprobs or []
        if len(entries) != len(token_ids):
            raise RuntimeError(f"vLLM returned {len(entries)} log-probs for {len(token_ids)} tokens "
                               "(the engine asks for logprobs=0: the sampled token's)")
        logprobs = [float(entry[tok].logprob) for tok, entry in zip(token_ids, entries)]
        stop_reason = output.stop_reason
        if reason == "stop" and stop_reason is None and token_ids:
            stop_reason = token_ids[-1]  # vLLM reports None for the tokenizer's EOS, which it keeps last
        return Completion(token_ids, logprobs, reason, stop_reason, cut_by_context=cut and reason == "length")

    # ------------------------------------------------------------------ weights and memory
    def sync_weights(self, model: torch.nn.Module) -> None:
        """Load ``model``'s weights (Hugging Face names) into the engine, bucket by bucket, and
        drop the prefix cache computed with the old ones (see the module docstring)."""
        _release_cached_memory()  # the update's cached blocks, before vLLM maps its weights again
        if "weights" in self._sleeping:
            self.llm.wake_up(tags=["weights"])
            self._sleeping.discard("weights")
        device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
        for bucket in weight_buckets(_named_weights(model, device, self.dtype), self.bucket_bytes):
            self.llm.apply_model(_Loader(bucket))  # in-process: runs on the engine's model itself
            del bucket  # (weight_buckets drops its own reference when it resumes)
        self.weights_loaded = True
        self.llm.reset_prefix_cache()

    def sleep(self) -> None:
        """Release the engine's GPU memory for the update: level 2 drops the weights (reloaded
        by the next :meth:`sync_weights`) and the KV cache."""
        if self.sleep_mode and not self._sleeping:
            self.llm.sleep(level=self.sleep_level)
            self._sleeping = {"weights", "kv_cache"}
            self.weights_loaded = self.sleep_level < 2

    def wake_up(self) -> None:
        """Wake everything that sleeps (refused while the weights wait for a sync)."""
        self._awake_for_generation()

    def _awake_for_generation(self) -> None:
        if not self._sleeping:
            return
        if not self.weights_loaded:
            raise RuntimeError("the vLLM engine's weights were dropped by sleep(level=2): sync_weights(model) must load "
                               "them before it generates")
        if "kv_cache" in self._sleeping:
            _release_cached_memory()  # the sync's and the evaluation's cached blocks, before the KV cache is mapped
        self.llm.wake_up(tags=sorted(self._sleeping))
        self._sleeping.clear()


class _Loader:
    """The function ``apply_model`` runs on the engine's model: load one bucket of weights."""

    def __init__(self, bucket: list[tuple[str, torch.Tensor]]) -> None:
        self.bucket = bucket

    def __call__(self, engine_model: Any) -> None:
        engine_model.load_weights(self.bucket)


def weight_buckets(named: Iterable[tuple[str, torch.Tensor]], max_bytes: int) -> Iterator[list[tuple[str, torch.Tensor]]]:
    """Consecutive ``(name, tensor)`` pairs in lists of at most ``max_bytes`` (a larger tensor
    alone), consumed lazily: at most one bucket's tensors exist at a time."""
    bucket: list[tuple[str, torch.Tensor]] = []
    size = 0
    for name, tensor in named:
        nbytes = tensor.numel() * tensor.element_size()
        if bucket and size + nbytes > max_bytes:
            yield bucket
            bucket, size = [], 0
        bucket.append((name, tensor))
        size += nbytes
    if bucket:
        yield bucket


def _named_weights(model: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> Iterator[tuple[str, torch.Tensor]]:
    """The policy's weights under their Hugging Face names, whole, one at a time, in ``dtype``:
    a LoRA policy's merged ``W + ΔW``; a sharded policy's tensors all-gathered in turn (a
    collective every rank runs in the same order), each shard moved to ``device`` first (an
    offloaded shard lives in host memory, which NCCL cannot gather).

    A tied name (:func:`tied_aliases`: a Llama-3.2 or small Qwen2.5 model's ``lm_head.weight``
    is ``model.embed_tokens.weight``) is not sent: vLLM holds one tensor for both, and its loader
    refuses a load that carries the alias without the first name (vLLM 0.30.0,
    ``model_executor/models/utils.py``, ``AutoWeightsLoader._check_skipped_aliases``), which
    happens as soon as the two fall into different buckets.

    Memory: only the tensor being prepared is new here — its whole float32 form (gathered or
    merged) is released as soon as its copy in ``dtype`` exists, and this generator keeps no
    reference to what it handed out (docs/scaling.md, "Memory, by phase": the sync's peak)."""
    aliases = _sync_aliases(model)
    tensors = merged_named_tensors(model) if is_lora(model) else model.state_dict().items()
    for name, tensor in tensors:
        if name in aliases:
            continue
        tensor = tensor.detach()
        if hasattr(tensor, "full_tensor"):  # a DTensor shard
            tensor = tensor.to(device).full_tensor()  # type: ignore[union-attr]  # (a DTensor, as checked)
        out = tensor.to(device=device, dtype=dtype)
        del tensor  # the whole float32 tensor (gathered or merged) goes before the next one is built
        yield name, out
        del out  # the bucket holds it now; once loaded nothing here keeps it


def tied_aliases(module: torch.nn.Module) -> dict[str, str]:
    """``{alias: first name}`` for the parameter and buffer names of ``module`` that are the same
    tensor as a name before them (tied weights), in ``named_parameters`` order — the order in
    which vLLM's ``_get_tied_embedding_params`` picks the name it loads (vLLM 0.30.0,
    ``model_executor/models/utils.py``). The same tensor: the same object (what
    ``named_parameters()`` de-duplicates; FSDP2 keeps one sharded ``Parameter`` for tied
    weights, so every rank finds the same aliases and runs the same gathers) or, for a plain
    tensor, the same storage, offset, shape and strides."""
    first: dict[tuple, str] = {}
    aliases: dict[str, str] = {}
    named = [*module.named_parameters(remove_duplicate=False), *module.named_buffers(remove_duplicate=False)]
    for name, tensor in named:
        keys: list[tuple] = [("object", id(tensor))]
        if not hasattr(tensor, "full_tensor") and tensor.numel() > 0:  # (an empty tensor has no storage to share)
            keys.append(("storage", tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tuple(tensor.shape),
                         tuple(tensor.stride())))
        earlier = next((first[k] for k in keys if k in first), None)
        if earlier is not None:
            aliases[name] = earlier
        else:
            first.update((k, name) for k in keys)
    return aliases


def _sync_aliases(model: torch.nn.Module) -> dict[str, str]:
    """The tied aliases among the names :func:`_named_weights` walks (a LoRA policy: its base
    model's, named as ``merged_named_tensors`` names them)."""
    if not is_lora(model):
        return tied_aliases(model)
    aliases = {}
    for alias, name in tied_aliases(model.get_base_model()).items():
        if "lora_" in alias:
            continue
        if ".base_layer." in alias or ".base_layer." in name:
            raise ValueError(f"{alias.replace('.base_layer.', '.')} is tied to {name.replace('.base_layer.', '.')} and "
                             "one of them has a LoRA adapter: the vLLM engine holds one tensor for both; leave the tied "
                             "module out of model.lora.target_modules")
        aliases[alias] = name
    return aliases


def _release_cached_memory() -> None:
    """Free what Python no longer references and hand torch's cached CUDA blocks back to the
    driver, so that vLLM can map its weights or KV cache there (TRL's and verl's order before
    each ``wake_up``). vLLM 0.30.0's own ``CuMemAllocator.wake_up`` (``device_allocator/cumem.py``)
    starts the same way in this process; doing it here keeps the order whatever the allocator."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _copy(c: Completion) -> Completion:
    return Completion(list(c.token_ids), list(c.logprobs), c.finish_reason, c.stop_reason, c.cut_by_context)


def _engine_max_model_len(llm: Any) -> int | None:
    try:
        return int(llm.llm_engine.model_config.max_model_len)
    except AttributeError:
        return None


def _set_launcher_env(rank: int, local_rank: int, world_size: int) -> None:
    """The variables ``external_launcher`` reads (``torchrun`` sets them for several processes;
    one process gets them here, with a free port for the process group vLLM then makes)."""
    os.environ.setdefault("RANK", str(rank))
    os.environ.setdefault("LOCAL_RANK", str(local_rank))
    os.environ.setdefault("WORLD_SIZE", str(world_size))
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    if not os.environ.get("MASTER_PORT"):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            os.environ["MASTER_PORT"] = str(s.getsockname()[1])


@contextlib.contextmanager
def _rng_states_kept() -> Iterator[None]:
    """Restore the global generators vLLM seeds while it starts in this process."""
    py, npy, cpu = random.getstate(), np.random.get_state(), torch.get_rng_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    try:
        yield
    finally:
        random.setstate(py)
        np.random.set_state(npy)
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)
