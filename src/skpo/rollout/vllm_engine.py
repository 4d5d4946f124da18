"""The rollout engine on vLLM (``rollout.engine: vllm``, extra ``[vllm]``).

:class:`VLLMEngine` implements :class:`~skpo.rollout.engine.Engine` with vLLM's offline
``LLM`` API, colocated with training on the same GPUs. It uses exactly this surface of vLLM
(``tests/fakes/vllm`` implements the same surface, so a change there breaks a test here, not a
run on a cluster):

- ``vllm.LLM(model=, tokenizer=, dtype=, seed=, gpu_memory_utilization=, enable_prefix_caching=,
  enable_sleep_mode=, max_model_len=, tensor_parallel_size=, logprobs_mode=,
  distributed_executor_backend=)``
- ``LLM.generate(prompts=[{"prompt_token_ids": [...]}, …], sampling_params=[…], use_tqdm=False)``
  → ``RequestOutput.outputs[j]``: ``token_ids``, ``logprobs`` (one ``{token_id: Logprob}`` per
  token, ``Logprob.logprob``), ``finish_reason`` (``"stop"`` / ``"length"``), ``stop_reason``
- ``vllm.SamplingParams(n=, temperature=, top_p=, max_tokens=, seed=, logprobs=0,
  stop_token_ids=, stop=, ignore_eos=, include_stop_str_in_output=, detokenize=)``
- ``LLM.apply_model(fn)`` (weight sync: ``fn`` runs on the engine's model and calls its
  ``load_weights(iterable of (name, tensor))``), ``LLM.reset_prefix_cache()``,
  ``LLM.sleep(level=1)``, ``LLM.wake_up()``.

How the protocol maps:

- **Log-probs**: the protocol's ``log_softmax(logits / T)`` of the sampled token, before top-p,
  is vLLM's ``logprobs_mode="processed_logprobs"`` with ``logprobs=0`` (the sampled token
  only). vLLM's default (``raw_logprobs``) would be the untempered model's.
- **Seeds**: each prompt is one request with its own ``seed`` — the protocol's prompt seed
  (``mix_seed(call seed, i)``), so a prompt's samples do not depend on the other prompts. The
  samples differ from the Hugging Face engine's for the same seed (another sampler).
- **Shared prefill**: ``n`` samples of one request share its prefill, and prefix caching
  (``enable_prefix_caching=True``) reuses the KV of SKPO's ``[s, q]`` across its answers and of
  a prompt across the two phases.
- **SKPO's upstream phase**: a per-prompt ``max_new_tokens`` becomes that request's
  ``max_tokens`` (``t_q``); a prompt with budget 0 is answered with empty completions (vLLM
  refuses ``max_tokens=0``).
- **Stop tokens** stay in ``token_ids`` (vLLM keeps the stop token id it stopped on; EOS is
  always in force unless ``ignore_eos``).
- **Weights**: :meth:`sync_weights` after each optimizer step sends the policy's weights (in the
  engine's dtype) and resets the prefix cache (its KV was computed with the old weights).
  :meth:`sleep` / :meth:`wake_up` free the engine's GPU memory during the update
  (``enable_sleep_mode``); without sleep mode, ``gpu_memory_utilization`` caps its share.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch

from skpo.rollout.engine import Completion, SamplingParams, prompt_seeds, resolve_max_new_tokens

__all__ = ["VLLMEngine"]


class VLLMEngine:
    """:class:`~skpo.rollout.engine.Engine` on ``vllm.LLM``.

    Args:
        model_path: a local Hugging Face model directory (weights, config, tokenizer).
        dtype: the engine's weights and compute dtype (``bfloat16`` in the paper's recipes).
        gpu_memory_utilization: the fraction of GPU memory vLLM may take (weights + KV cache).
        sleep: use vLLM's sleep mode: the engine releases its memory while the trainer updates.
        max_model_len: prompt + answer tokens (the paper: 1024 + 3072).
        seed: the engine's own seed (every request carries its own seed anyway).
        tensor_parallel_size: GPUs per engine.
        external_launcher: one engine per training process (``torchrun`` / ``accelerate
            launch``), vLLM's ``distributed_executor_backend="external_launcher"``.
        llm: an existing ``vllm.LLM`` (tests).
    """

    def __init__(self, model_path: str, *, dtype: str = "bfloat16", gpu_memory_utilization: float = 0.3,
                 sleep: bool = True, max_model_len: int | None = None, seed: int = 0, tensor_parallel_size: int = 1,
                 external_launcher: bool = False, llm: Any = None) -> None:
        import vllm

        self._vllm = vllm
        self.sleep_mode = sleep
        self.asleep = False
        if llm is None:
            kwargs: dict[str, Any] = dict(
                model=str(model_path), tokenizer=str(model_path), dtype=dtype, seed=seed,
                gpu_memory_utilization=gpu_memory_utilization, enable_prefix_caching=True, enable_sleep_mode=sleep,
                max_model_len=max_model_len, tensor_parallel_size=tensor_parallel_size,
                logprobs_mode="processed_logprobs",
            )
            if external_launcher:
                kwargs["distributed_executor_backend"] = "external_launcher"
            llm = vllm.LLM(**kwargs)
        self.llm = llm
        self.dtype = getattr(torch, dtype) if isinstance(dtype, str) and hasattr(torch, dtype) else torch.bfloat16

    # ------------------------------------------------------------------ Engine protocol
    def generate(self, prompts: list[list[int]], n: int, params: SamplingParams,
                 max_new_tokens: list[int] | None = None) -> list[list[Completion]]:
        """Sample ``n`` completions per prompt (:meth:`skpo.rollout.engine.Engine.generate`)."""
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        if any(len(p) == 0 for p in prompts):
            raise ValueError("prompts must hold at least one token")
        if self.asleep:
            self.wake_up()
        budgets = resolve_max_new_tokens(params, len(prompts), max_new_tokens)
        seeds = prompt_seeds(params.seed, len(prompts))
        out: list[list[Completion]] = [[] for _ in prompts]
        todo = [i for i in range(len(prompts)) if budgets[i] > 0 and n > 0]
        for i in range(len(prompts)):
            if budgets[i] == 0 and n > 0:
                out[i] = [Completion([], [], "length") for _ in range(n)]
        if not todo:
            return out
        requests = [{"prompt_token_ids": list(prompts[i])} for i in todo]
        sampling = [self._sampling_params(params, n, budgets[i], seeds[i]) for i in todo]
        results = self.llm.generate(requests, sampling_params=sampling, use_tqdm=False)
        stops = set(params.stop_token_ids)
        for i, result in zip(todo, results):
            completions = sorted(result.outputs, key=lambda o: o.index)
            out[i] = [self._completion(o, stops) for o in completions]
        return out

    def _sampling_params(self, params: SamplingParams, n: int, budget: int, seed: int):
        greedy = params.temperature == 0
        return self._vllm.SamplingParams(
            n=n, temperature=0.0 if greedy else float(params.temperature), top_p=1.0 if greedy else float(params.top_p),
            max_tokens=int(budget), seed=int(seed) & ((1 << 63) - 1), logprobs=0,
            stop_token_ids=list(params.stop_token_ids), stop=list(params.stop) or None, ignore_eos=bool(params.ignore_eos),
            include_stop_str_in_output=True, detokenize=bool(params.stop),
        )

    @staticmethod
    def _completion(output: Any, stops: set[int]) -> Completion:
        token_ids = [int(t) for t in output.token_ids]
        logprobs = []
        for tok, entry in zip(token_ids, output.logprobs or []):
            logprobs.append(float(entry[tok].logprob))
        if len(logprobs) != len(token_ids):
            raise RuntimeError(f"vLLM returned {len(logprobs)} log-probs for {len(token_ids)} tokens "
                               "(the engine asks for logprobs=0: the sampled token's)")
        finished = "stop" if output.finish_reason == "stop" else "length"
        stop_reason = output.stop_reason
        if finished == "stop" and stop_reason is None and token_ids:
            stop_reason = token_ids[-1]  # EOS: vLLM reports no stop_reason for it
        return Completion(token_ids, logprobs, finished, stop_reason)

    # ------------------------------------------------------------------ weights and memory
    def sync_weights(self, model: torch.nn.Module) -> None:
        """Send ``model``'s weights (Hugging Face names, in the engine's dtype) to the engine and
        drop the prefix cache computed with the old ones."""
        weights = [(name, tensor.detach().to(self.dtype)) for name, tensor in _named_weights(model)]

        def load(engine_model: Any) -> None:
            engine_model.load_weights(weights)

        if self.asleep:
            self.wake_up()
        self.llm.apply_model(load)
        self.llm.reset_prefix_cache()

    def sleep(self) -> None:
        """Release the engine's GPU memory (weights offloaded, KV cache dropped) for the update."""
        if self.sleep_mode and not self.asleep:
            self.llm.sleep(level=1)
            self.asleep = True

    def wake_up(self) -> None:
        if self.asleep:
            self.llm.wake_up()
            self.asleep = False


def _named_weights(model: torch.nn.Module) -> Iterable[tuple[str, torch.Tensor]]:
    """The model's weights under their Hugging Face names (a PEFT model: merged base weights; a
    sharded model: each tensor all-gathered in turn, a collective every rank runs)."""
    from skpo.training.lora import is_lora, merged_state_dict
    from skpo.training.sharding import full_named_tensors

    if is_lora(model):
        return merged_state_dict(model).items()
    return full_named_tensors(model)

