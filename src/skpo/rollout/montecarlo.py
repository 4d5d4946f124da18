"""Monte Carlo values of response prefixes, from K continuations sampled by the policy.

``V(prompt + response[:pos]) ≈ (1/K) Σ_k R(prompt, response[:pos] + c_k)``, with
``c_k ~ π(· | prompt + response[:pos])``. This is the estimator behind the paper's token-level
MC reward (SKPO §3.1, Eq. 1) and behind VinePPO's step values; SKPO itself uses one such
estimate per prompt (the upstream reward, with ``K = G`` downstream answers).

Batching: all prefixes of all responses go to the engine in **one** ``generate`` call with
``n = K``. The engine prefills each prefix once and shares its KV cache across the K
continuations, and chunks rows by its own ``batch_size``.

Seeds: prefix ``m`` of the flattened list (responses in order, positions in order, terminal
positions included) is sampled with prompt seed ``mix_seed(params.seed, m)`` — exactly as
if all prefixes were the prompts of one ``engine.generate(..., params)`` call. So a single
prefix can be reproduced with ``engine.generate([prefix_m], K, replace(params,
seed=[mix_seed(params.seed, m)]))``.

Terminal positions: ``pos == len(response)`` is the finished response; its value is the
response's own reward (``reward_fn`` on it, or a given ``terminal_rewards`` entry) and no
continuation is sampled.

Deviation notes: continuation budgets are ``params.max_new_tokens`` per prefix unless
``max_response_tokens`` is given (then ``max_response_tokens − pos``, so a continued response
obeys the same length limit as the original); a continuation that stops on length gets
``reward_fn``'s verdict unless ``truncated_reward`` is set (VinePPO uses a fixed
unfinished-response penalty).
"""

from __future__ import annotations

from collections.abc import Callable, Container, Sequence
from dataclasses import dataclass, replace

import torch
from torch import Tensor

from skpo.engines.engine import Engine, SamplingParams, mix_seed, score_batch

__all__ = [
    "RewardFn",
    "mc_values",
    "mc_values_batch",
    "step_boundaries",
    "token_step_index",
    "StepValues",
    "vineppo_values",
    "vineppo_values_batch",
]

RewardFn = Callable[[list[int], list[int]], float]
"""``reward_fn(prompt_ids, full_response_ids) -> float`` (the response without the prompt)."""


def mc_values_batch(
    engine: Engine,
    prompts: Sequence[Sequence[int]],
    responses: Sequence[Sequence[int]],
    positions: Sequence[Sequence[int]],
    k: int,
    params: SamplingParams,
    reward_fn: RewardFn,
    *,
    max_response_tokens: int | None = None,
    truncated_reward: float | None = None,
    terminal_rewards: Sequence[float] | None = None,
) -> list[Tensor]:
    """MC values at given positions of several responses, in one engine call.

    Args:
        engine: any :class:`~skpo.engines.engine.Engine`.
        prompts: ``[N]`` prompt token lists.
        responses: ``[N]`` response token lists (without the prompt).
        positions: ``[N][M_r]`` indices into each response, ``0 <= pos <= len(response)``;
            the prefix is ``prompt + response[:pos]``.
        k: continuations per prefix (``>= 1``).
        params: sampling settings of the continuations; ``params.seed`` (int or None) seeds
            the call as described in the module docstring.
        reward_fn: scores ``(prompt, response[:pos] + continuation)``.
        max_response_tokens: if given, a continuation from ``pos`` may add at most
            ``max_response_tokens − pos`` tokens.
        truncated_reward: if given, the reward of a continuation that ended on length.
        terminal_rewards: ``[N]`` rewards of the responses themselves, used at
            ``pos == len(response)`` instead of calling ``reward_fn``.

    Returns:
        ``N`` float32 tensors of shape ``[M_r]``: the value of each requested prefix.
    """
    if not len(prompts) == len(responses) == len(positions):
        raise ValueError("prompts, responses and positions must have the same length")
    if terminal_rewards is not None and len(terminal_rewards) != len(responses):
        raise ValueError("terminal_rewards needs one entry per response")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if params.seed is not None and not isinstance(params.seed, int):
        raise ValueError("mc_values takes an int (or None) seed; per-prefix seeds are derived")
    base = params.seed if params.seed is not None else int(torch.randint(0, 2**62, (1,)).item())

    values = [torch.zeros(len(p), dtype=torch.float32) for p in positions]
    # Flatten (response, position) pairs; sampled ones remember where their value goes.
    sample_prompts: list[list[int]] = []
    sample_budget: list[int] = []
    sample_seeds: list[int] = []
    sample_slot: list[tuple[int, int, int]] = []  # (response r, value index, pos)
    m = 0
    for r, (prompt, response, pos_list) in enumerate(zip(prompts, responses, positions)):
        for v, pos in enumerate(pos_list):
            if not 0 <= pos <= len(response):
                raise ValueError(f"position {pos} outside response {r} of length {len(response)}")
            if pos == len(response):
                own = terminal_rewards[r] if terminal_rewards is not None else score_batch(reward_fn, [(list(prompt), list(response))])[0]
                values[r][v] = float(own)
            else:
                sample_prompts.append(list(prompt) + list(response[:pos]))
                budget = params.max_new_tokens if max_response_tokens is None else max_response_tokens - pos
                sample_budget.append(max(budget, 0))
                sample_seeds.append(mix_seed(base, m))
                sample_slot.append((r, v, pos))
            m += 1

    if sample_prompts:
        outs = engine.generate(
            sample_prompts, k, replace(params, seed=sample_seeds), max_new_tokens=sample_budget
        )
        # Score every continuation of the batch in one call (a verifier pool runs them in parallel).
        calls: list[tuple[list[int], list[int]]] = []
        owner: list[int] = []  # the sample slot of each call
        totals = [0.0] * len(sample_slot)
        for s_i, ((r, _v, pos), conts) in enumerate(zip(sample_slot, outs)):
            prefix = list(responses[r][:pos])
            for c in conts:
                if truncated_reward is not None and c.finish_reason == "length":
                    totals[s_i] += truncated_reward
                else:
                    calls.append((list(prompts[r]), prefix + list(c.token_ids)))
                    owner.append(s_i)
        for s_i, reward in zip(owner, score_batch(reward_fn, calls)):
            totals[s_i] += reward
        for (r, v, _), total in zip(sample_slot, totals):
            values[r][v] = total / k
    return values


def mc_values(
    engine: Engine,
    prompt_ids: Sequence[int],
    response_ids: Sequence[int],
    positions: Sequence[int],
    k: int,
    params: SamplingParams,
    reward_fn: RewardFn,
    **kwargs,
) -> Tensor:
    """MC values ``[len(positions)]`` of ``prompt + response[:pos]`` for one response.

    Same as :func:`mc_values_batch` with one response (keyword options pass through;
    ``terminal_reward=`` may be given as a float).
    """
    if "terminal_reward" in kwargs:
        kwargs["terminal_rewards"] = [kwargs.pop("terminal_reward")]
    return mc_values_batch(engine, [prompt_ids], [response_ids], [positions], k, params, reward_fn, **kwargs)[0]


# ---------------------------------------------------------------------- VinePPO steps


def step_boundaries(
    response_ids: Sequence[int], is_boundary_token: Callable[[int], bool] | Container[int]
) -> list[int]:
    """Start indices of steps 2, 3, … of a response (VinePPO-style step split).

    A step ends with a delimiter token (e.g. any token containing a newline); a run of
    delimiters counts as one. The boundary is the index right after the run, and a run at the
    very end of the response opens no new step. So ``[]`` means one step, and boundaries are
    strictly increasing with ``0 < b < len(response)``.

    Example: ``a b \\n c \\n \\n d`` (delimiter ``\\n``) → ``[3, 6]``.
    """
    is_b = is_boundary_token if callable(is_boundary_token) else is_boundary_token.__contains__
    out: list[int] = []
    for t, tok in enumerate(response_ids):
        nxt = t + 1
        if is_b(tok) and nxt < len(response_ids) and not is_b(response_ids[nxt]):
            out.append(nxt)
    return out


def token_step_index(response_len: int, boundaries: Sequence[int]) -> Tensor:
    """Map each response token to its step.

    Args:
        response_len: ``T``.
        boundaries: step starts from :func:`step_boundaries` (``0 < b < T``, increasing).

    Returns:
        LongTensor ``[T]``: token ``t`` is in step ``#{b <= t}`` (step 0 starts at token 0).
        With values ``V[0..S]`` from :func:`vineppo_values`, the step advantage of token ``t``
        is ``V[s+1] - V[s]`` with ``s = index[t]`` (computed in ``skpo.algorithms``).
    """
    b = torch.as_tensor(list(boundaries), dtype=torch.long)
    if b.numel() and (bool((b[1:] <= b[:-1]).any()) or int(b[0]) <= 0 or int(b[-1]) >= response_len):
        raise ValueError(f"boundaries must be increasing in (0, {response_len}), got {list(boundaries)}")
    return torch.searchsorted(b, torch.arange(response_len), right=True)


@dataclass
class StepValues:
    """Values at the step states of one response.

    Attributes:
        positions: ``[S+1]`` response indices of the states ``s_0 … s_S``: ``0``, each
            boundary, and ``len(response)``.
        values: ``[S+1]`` float32; ``values[S]`` is the response's own reward (terminal
            value), ``values[k]`` for ``k < S`` the MC estimate at ``positions[k]``.
        token_step: ``[T]`` step index of each response token (see :func:`token_step_index`).
    """

    positions: list[int]
    values: Tensor
    token_step: Tensor

    @property
    def num_steps(self) -> int:
        return len(self.positions) - 1


def vineppo_values_batch(
    engine: Engine,
    prompts: Sequence[Sequence[int]],
    responses: Sequence[Sequence[int]],
    is_boundary_token: Callable[[int], bool] | Container[int],
    k: int,
    params: SamplingParams,
    reward_fn: RewardFn,
    *,
    max_steps: int | None = None,
    **kwargs,
) -> list[StepValues]:
    """VinePPO step values for several responses, in one engine call.

    ``max_steps`` (VinePPO's ``max_step_for_value_estimation``): only states ``s_0 …
    s_{max_steps-1}`` are estimated; later states are back-filled with ``V_k = r_k + V_{k+1}``
    which, with reward only at the end and ``γ = 1``, is the terminal value. Other keyword
    options go to :func:`mc_values_batch`.
    """
    all_positions: list[list[int]] = []
    for response in responses:
        bounds = step_boundaries(response, is_boundary_token)
        all_positions.append([0, *bounds, len(response)])
    # Only the estimated states (plus the terminal one) go to the engine.
    asked = [
        p if max_steps is None else [*p[: min(max_steps, len(p) - 1)], p[-1]] for p in all_positions
    ]
    est = mc_values_batch(engine, prompts, responses, asked, k, params, reward_fn, **kwargs)
    out: list[StepValues] = []
    for response, pos, got in zip(responses, all_positions, est):
        values = torch.full((len(pos),), float(got[-1]), dtype=torch.float32)  # back-fill = terminal
        values[: len(got) - 1] = got[:-1]
        out.append(StepValues(pos, values, token_step_index(len(response), pos[1:-1])))
    return out


def vineppo_values(
    engine: Engine,
    prompt_ids: Sequence[int],
    response_ids: Sequence[int],
    is_boundary_token: Callable[[int], bool] | Container[int],
    k: int,
    params: SamplingParams,
    reward_fn: RewardFn,
    **kwargs,
) -> StepValues:
    """VinePPO step values of one response (see :func:`vineppo_values_batch`)."""
    return vineppo_values_batch(
        engine, [prompt_ids], [response_ids], is_boundary_token, k, params, reward_fn, **kwargs
    )[0]
