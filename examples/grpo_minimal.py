"""GRPO on the embedded task in one file, from skpo's algorithm and engine layers alone.

The file to read first: every step of a GRPO update in the order it happens, with no trainer,
config or run directory in the way — the trainer (skpo/training/trainer.py) does the same with
every method, several processes, checkpoints and metrics around it.

    python examples/grpo_minimal.py [--steps 30] [--prompts 16] [--group 8] [--seed 0]

1. **Prompts**: chained-arithmetic problems (``17+5-9=``) from the synthetic task.
2. **Rollout**: the Hugging Face engine samples ``G`` answers per prompt from the policy
   itself, with each token's sampling log-prob (``skpo.rollout``).
3. **Rewards**: the task's exact checker scores each answer 1 or 0, mapped to ±1.
4. **Advantages**: GRPO's group-relative estimator — ``(r − mean) / (std + ε)`` over the
   answers of one prompt — registered as ``ADVANTAGE_ESTIMATORS["grpo"]``.
5. **Loss**: PPO's clipped surrogate per token (``POLICY_LOSSES["ppo_clip"]``), aggregated as
   GRPO does (``seq-mean-token-mean``). One mini-batch, so the ratio is 1 and ``log π_old`` is
   the detached ``log π`` of the same forward.
6. **Update**: AdamW on the policy; the next rollout samples from the new weights.

Runs on a CPU in about a minute; ``tests/test_examples.py`` runs three steps of it, and checks
that :func:`grpo_update` (steps 3-6) gives the trainer's GRPO update on the same batch.
"""

from __future__ import annotations

import argparse
import itertools
import random

import torch

from skpo.algorithms import ADVANTAGE_ESTIMATORS, POLICY_LOSSES, AdvantageInputs, PolicyLossInputs, agg_loss
from skpo.algorithms.stats import logprobs_from_logits
from skpo.engines import HFEngine, SamplingParams, mix_seed
from skpo.models.loading import load_policy, load_tokenizer, tiny_arith_dir
from skpo.rewards.arith import check_answer
from skpo.rows import pad_lists
from skpo.tasks.arith import ArithConfig, iter_problems
from skpo.tasks.templates import plain_input_ids


def rollout(engine: HFEngine, prompts: list[list[int]], group: int, max_new_tokens: int, seed: int):
    """``G`` sampled answers per prompt: token ids and their sampling log-probs."""
    params = SamplingParams(temperature=1.0, max_new_tokens=max_new_tokens, seed=seed,
                            stop_token_ids=list(engine.eos_token_ids))
    return engine.generate(prompts, group, params)  # [B][G] Completion(token_ids, logprobs, …)


def to_batch(prompts: list[list[int]], groups: list[list[list[int]]], pad_id: int):
    """Rows ``[B·G]``: padded prompt+answer ids, the answer's token mask, the prompt lengths."""
    rows, lengths, answers = [], [], []
    for prompt, group in zip(prompts, groups):
        for answer in group:
            rows.append(prompt + list(answer))
            lengths.append(len(prompt))
            answers.append(list(answer))
    ids, attention = pad_lists(rows, pad_id)  # [N, W], right-padded
    response_ids, response_mask = pad_lists(answers, pad_id)  # [N, T]: mask 1 on answer tokens
    return ids, attention, lengths, response_ids, response_mask.float()


def answer_log_probs(model, ids, attention, lengths, response_ids) -> torch.Tensor:
    """``log π(o_t | q, o_<t)`` of every answer token, ``[N, T]`` (0 past each answer)."""
    logits = model(input_ids=ids, attention_mask=attention).logits  # [N, W, V]
    t = response_ids.shape[1]
    # the logits that predict answer token j sit at position (prompt length − 1 + j)
    positions = torch.tensor(lengths)[:, None] - 1 + torch.arange(t)[None, :]  # [N, T]
    positions = positions.clamp(max=ids.shape[1] - 1)
    picked = logits.gather(1, positions[..., None].expand(-1, -1, logits.shape[-1]))  # [N, T, V]
    return logprobs_from_logits(picked, response_ids)  # [N, T] float32


def grpo_update(model, optimizer, prompts: list[list[int]], answers: list[list[list[int]]], correct: list[bool],
                pad_id: int) -> float:
    """Steps 3-6 on one batch: ``answers[b]`` are prompt ``b``'s ``G`` answers (token ids),
    ``correct`` the checker's verdicts on them (flat, ``[B·G]``). Returns the loss."""
    ids, attention, lengths, response_ids, mask = to_batch(prompts, answers, pad_id)
    # 3. rewards: ±1, as the last token's reward
    rewards = torch.tensor([1.0 if ok else -1.0 for ok in correct])  # [N]
    last = (mask.sum(-1) - 1).clamp(min=0).long()
    token_rewards = torch.zeros_like(mask).scatter(1, last[:, None], rewards[:, None]) * mask  # [N, T]
    # 4. group-relative advantages: one group per prompt
    estimator = ADVANTAGE_ESTIMATORS.get("grpo")  # (function, its parameter record, metadata)
    index = [b for b, group in enumerate(answers) for _ in group]
    advantages = estimator.fn(AdvantageInputs(token_rewards, mask, index), estimator.make_params())  # [N, T]
    # 5-6. one on-policy update: log π_old is log π itself, detached (ratio 1)
    model.train()
    log_prob = answer_log_probs(model, ids, attention, lengths, response_ids)
    loss_fn = POLICY_LOSSES.get("ppo_clip")
    out = loss_fn.fn(PolicyLossInputs(log_prob, log_prob.detach(), advantages, mask), loss_fn.make_params())
    loss = agg_loss(out.loss_mat, mask, "seq-mean-token-mean")
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    model.eval()
    return loss.item()


def main(argv: list[str] | None = None) -> dict[str, float]:
    p = argparse.ArgumentParser(description="GRPO on the embedded task, in one file")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--prompts", type=int, default=16)
    p.add_argument("--group", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    torch.manual_seed(args.seed)
    model = load_policy(tiny_arith_dir())  # the shipped warm-started tiny Qwen2 (float32)
    tokenizer = load_tokenizer(tiny_arith_dir())
    pad_id = tokenizer.pad_token_id
    engine = HFEngine(model, pad_token_id=pad_id, eos_token_id=tokenizer.eos_token_id)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0)
    problems = list(itertools.islice(iter_problems(ArithConfig(), seed=args.seed, split="train"), 2000))
    rng = random.Random(args.seed)
    history: dict[str, float] = {}

    for step in range(args.steps):
        # 1-2. prompts and G answers each
        batch = rng.sample(problems, args.prompts)
        prompts = [plain_input_ids(tokenizer, q) for q in batch]
        with torch.no_grad():
            completions = rollout(engine, prompts, args.group, args.max_new_tokens, mix_seed(args.seed, step))
        # 3. the exact checker's verdict on each answer
        correct = [check_answer(tokenizer.decode(c.token_ids, skip_special_tokens=True), q)
                   for q, group in zip(batch, completions) for c in group]
        # 3-6. ±1 rewards, group-relative advantages, the loss and one optimizer step
        answers = [[list(c.token_ids) for c in group] for group in completions]
        loss = grpo_update(model, optimizer, prompts, answers, correct, pad_id)
        history = {"step": step + 1, "accuracy": sum(correct) / len(correct), "loss": loss,
                   "answer_tokens": sum(len(a) for group in answers for a in group) / len(correct)}
        print("  ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in history.items()), flush=True)
    return history


if __name__ == "__main__":
    main()
