"""Data parallelism for the trainer: prompt shards, gathered rows, one gradient all-reduce.

How a step runs on ``W`` processes (``accelerate launch`` / ``torchrun``; gloo on CPU, NCCL on GPUs):

1. **Prompts.** ``train.prompts_per_step`` is the *global* batch. Every rank draws the same
   global list (a function of seed, step and the tracker state, which is the same on every
   rank) and rolls out its own contiguous shard of it (:meth:`Dist.shard`; shards differ by at
   most one prompt). A prompt's G answers, its SKPO segment and answers, its Monte Carlo
   continuations all stay on one rank: groups are never split.
2. **Rows.** After the rollout (and the old/reference log-probs, computed where the rows were
   sampled) the rows of all ranks are gathered (:meth:`Dist.gather_rows`), so every rank holds
   the global batch. Advantages are computed on the global batch — GRPO's groups, SPO/SKPO's
   batch normalisation, BNPO's moment fit and DAPO's filter see exactly what one process would
   see — and the per-prompt trackers (SPO value, SKPO length) are updated from the global
   rows on every rank: they are *replicated*, identical everywhere, and checkpointed once by
   rank 0. DAPO's refill decides on the global count of informative groups (a gather per round).
3. **Update.** Each mini-batch (a set of prompts) is split by prompt across ranks; loss
   denominators are those of the global mini-batch; each rank backpropagates its part with as
   many micro-batches as its rows need, and the gradients are summed with one bucketed
   all-reduce per optimizer step (:meth:`Dist.all_reduce_grads`). No collective depends on a
   rank's row lengths, so ranks never wait on each other inside a forward or backward. The
   result equals one process's update on the same global batch up to float summation order
   (``tests/test_distributed.py``).
4. **Everything else.** Token counts (the budget), the policy-drift measure (trackers' ρ) and
   stop signals are reduced, so every rank takes the same decisions; only rank 0 evaluates,
   logs and writes checkpoints. A checkpoint holds the full model, optimizer and trackers, so a
   run resumes at another world size (its rollouts then differ from an uninterrupted run's:
   sampling streams are per rank).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar, cast

import torch

from skpo.rows import Rows, concat_rows

T = TypeVar("T")

# gradients are all-reduced in buckets of at most this many elements (a bounded extra buffer)
GRAD_BUCKET_ELEMENTS = 1 << 24


class Dist:
    """The few collectives the trainer uses; on one process every method is the identity."""

    def __init__(self, accelerator) -> None:
        self.accelerator = accelerator
        self.rank = accelerator.process_index
        self.world = accelerator.num_processes

    @property
    def active(self) -> bool:
        return self.world > 1

    def shard(self, items: Sequence[T]) -> list[T]:
        """This rank's contiguous part of ``items`` (rank order = list order)."""
        n = len(items)
        lo, hi = self.rank * n // self.world, (self.rank + 1) * n // self.world
        return list(items[lo:hi])

    def all_gather_object(self, obj: Any) -> list[Any]:
        """``obj`` of every rank, in rank order (``[obj]`` on one process)."""
        if not self.active:
            return [obj]
        out: list[Any] = [None] * self.world
        torch.distributed.all_gather_object(out, obj)
        return out

    def gather_rows(self, rows: Rows, pad_id: int) -> Rows:
        """Every rank's rows as one record, ranks in order (rows travel on the CPU)."""
        if not self.active:
            return rows
        parts = [p for p in self.all_gather_object(_to_cpu(rows)) if len(p)]
        return concat_rows(parts, pad_id) if len(parts) > 1 else parts[0]

    def sum_int(self, value: int) -> int:
        if not self.active:
            return value
        return int(sum(self.all_gather_object(int(value))))

    def broadcast_float(self, value: float) -> float:
        """Rank 0's ``value`` on every rank (keeps replicated state bit-identical)."""
        if not self.active:
            return value
        return float(self.all_gather_object(float(value))[0])

    def all_reduce_grads(self, params: Sequence[torch.nn.Parameter]) -> None:
        """Sum the gradients of ``params`` over ranks, in flat buckets (one collective per
        bucket, the same sequence on every rank; a parameter without a gradient sends zeros)."""
        if not self.active:
            return
        params = [p for p in params if p.requires_grad]
        for p in params:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        bucket: list[torch.nn.Parameter] = []
        size = 0
        for p in params:
            bucket.append(p)
            size += p.numel()
            if size >= GRAD_BUCKET_ELEMENTS:
                self._reduce_bucket(bucket)
                bucket, size = [], 0
        if bucket:
            self._reduce_bucket(bucket)

    @staticmethod
    def _reduce_bucket(bucket: list[torch.nn.Parameter]) -> None:
        grads = [cast(torch.Tensor, p.grad) for p in bucket]  # (all_reduce_grads gave every parameter one)
        flat = torch.cat([g.reshape(-1) for g in grads])
        torch.distributed.all_reduce(flat, op=torch.distributed.ReduceOp.SUM)
        offset = 0
        for p, g in zip(bucket, grads):
            n = p.numel()
            g.copy_(flat[offset : offset + n].view_as(g))
            offset += n

    def merge_sums(self, sums: dict[str, float], counts: dict[str, int]) -> tuple[dict[str, float], dict[str, int]]:
        """Metric sums and counts added over ranks (keys a rank lacks count as 0)."""
        if not self.active:
            return sums, counts
        merged_sums: dict[str, float] = {}
        merged_counts: dict[str, int] = {}
        for s, c in self.all_gather_object((sums, counts)):
            for k, v in s.items():
                merged_sums[k] = merged_sums.get(k, 0.0) + v
            for k, v in c.items():
                merged_counts[k] = merged_counts.get(k, 0) + v
        return merged_sums, merged_counts

    def mean_metrics(self, metrics: dict[str, float], weight: float) -> dict[str, float]:
        """Rollout metrics of all ranks merged (:func:`merge_rank_metrics`)."""
        if not self.active:
            return metrics
        return merge_rank_metrics(self.all_gather_object((metrics, float(weight))))


def merge_rank_metrics(parts: Sequence[tuple[dict[str, float], float]]) -> dict[str, float]:
    """``(metrics, weight)`` of each rank → one dict: counters (``tokens/*``) summed, the rest
    averaged with each rank weighted by ``weight`` (its rows)."""
    out: dict[str, float] = {}
    for key in sorted({k for m, _ in parts for k in m}):
        have = [(m[key], w) for m, w in parts if key in m]
        if key.startswith("tokens/"):
            out[key] = sum(v for v, _ in have)
        else:
            total = sum(w for _, w in have)
            out[key] = sum(v * w for v, w in have) / total if total else sum(v for v, _ in have) / len(have)
    return out


def _to_cpu(rows: Rows) -> Rows:
    move = lambda x: None if x is None else x.detach().cpu()  # noqa: E731
    extra = {k: (v.detach().cpu() if isinstance(v, torch.Tensor) else v) for k, v in rows.extra.items()}
    return rows.replace(response_ids=move(rows.response_ids), response_mask=move(rows.response_mask),
                        old_log_probs=move(rows.old_log_probs), rewards=move(rows.rewards), extra=extra,
                        advantages=move(rows.advantages), ref_log_probs=move(rows.ref_log_probs),
                        token_stats={k: move(v) for k, v in rows.token_stats.items()},
                        estimator_outputs={k: move(v) for k, v in rows.estimator_outputs.items()})


def shutdown() -> None:
    """End the process group cleanly once every rank is done (all ranks call it): a group left
    to the interpreter's exit can abort a rank there (gloo's threads torn down unjoined:
    "terminate called without an active exception"), after a run that succeeded."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
