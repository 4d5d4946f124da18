"""The policy update: ``ppo_epochs`` × ``mini_batches`` optimizer steps over one flat batch.
Each row carries its term (by role); a mini-batch is the rows of a set of prompts, a
micro-batch a slice of it that shares one forward/backward for all terms. Loss denominators are
those of the whole mini-batch (and of every rank), so micro-batch and rank losses add up."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from skpo.algorithms import POLICY_LOSSES, AggDenominators, PolicyLossInputs, agg_loss, kl_penalty, masked_mean
from skpo.config import RunConfig
from skpo.engines import mix_seed
from skpo.methods import Method, joint_roles
from skpo.methods.record import LossTerm
from skpo.rows import Rows
from skpo.training.actor import Actor
from skpo.training.distributed import Dist
from skpo.training.log_probs import is_on_policy
from skpo.training.sharding import equalize


@dataclass(frozen=True)
class UpdateSettings:
    """What the update reads of a run's config.

    Attributes:
        ppo_epochs / mini_batches: passes over the batch and optimizer steps per pass.
        seed: the run's seed (the mini-batches' shuffle is ``mix_seed(seed, step, 41)``).
        max_response_length: ``rollout.max_new_tokens``, the constant of Dr. GRPO's aggregation
            (a method with ``agg_scale: max_response_length``).
    """

    ppo_epochs: int = 1
    mini_batches: int = 1
    seed: int = 0
    max_response_length: int = 64

    @property
    def on_policy(self) -> bool:
        """One epoch of one mini-batch: π_old is the policy itself (:func:`~skpo.training.log_probs.is_on_policy`)."""
        return is_on_policy(self.mini_batches, self.ppo_epochs)

    @classmethod
    def of(cls, cfg: RunConfig) -> UpdateSettings:
        return cls(cfg.train.ppo_epochs, cfg.train.mini_batches, cfg.train.seed, cfg.rollout.max_new_tokens)


@dataclass
class MetricSums:
    """Sums (and weighted means) of metrics over micro-batches and ranks."""

    sums: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    def add(self, key: str, value: float, n: int | None) -> None:
        """``n`` None: a sum; else a mean weighted by ``n``."""
        self.sums[key] = self.sums.get(key, 0.0) + (value if n is None else value * n)
        if n is not None:
            self.counts[key] = self.counts.get(key, 0) + n

    def count(self, key: str, n: int) -> None:
        """``n`` more parts in ``key``'s mean (a sum added elsewhere, e.g. micro-batch losses)."""
        self.counts[key] = self.counts.get(key, 0) + n


def update(actor: Actor, method: Method, rows: Rows, dist: Dist, settings: UpdateSettings, step: int,
           metrics: dict[str, float]) -> None:
    """Train on ``rows`` (with advantages) and add the update's metrics to ``metrics``: for each
    of ``ppo_epochs`` passes, the prompts shuffled into ``mini_batches`` sets, one optimizer step
    each; a mini-batch's rows run in micro-batches, each one forward and one backward of the sum
    of its terms' losses (denominators: the whole mini-batch's, so the parts add up)."""
    plan = TermAssignment.of(method, rows)
    keys = sorted(set(rows.prompt_keys), key=str)
    gen = torch.Generator().manual_seed(mix_seed(settings.seed, step, 41))
    sums = MetricSums()
    actor.model.train()
    for _epoch in range(settings.ppo_epochs):
        order = [keys[i] for i in torch.randperm(len(keys), generator=gen).tolist()]
        for chunk in (set(order[i :: settings.mini_batches]) for i in range(settings.mini_batches)):
            mini = plan.mini_batch(rows, chunk, dist, settings.max_response_length)
            if mini is None:  # no row of these prompts trains: no optimizer step
                continue
            micro = actor.micro_batches(mini.rows) if len(mini.rows) else []
            # sharded: FSDP's collectives run inside forward/backward, so every rank runs the same
            # number of micro-batches (agreed before the first; the short ranks pad with zero-loss passes)
            padding = equalize(dist.all_gather_object(len(micro))) - len(micro) if actor.sharding else 0
            for bucket, packs in micro:
                mb, mb_term = mini.rows.select(bucket), [mini.row_term[b] for b in bucket]
                real, padded = forward_tokens(mb, packs)
                sums.add("tokens/update_real", real, None)
                sums.add("tokens/update_padded", padded, None)
                log_prob, entropy = actor.train_forward(mb, packs)  # [b, T] each, one forward for all terms
                loss = log_prob.new_zeros(())
                for i, local in rows_by_term(mb_term):
                    term, pick = method.terms[i], torch.tensor(local, device=log_prob.device)
                    value, term_metrics = term_loss_value(method, term, log_prob[pick], entropy[pick],
                                                          mb.select(local), mini.denominators[i], settings.on_policy)
                    loss = loss + value
                    for k, v in term_metrics.items():  # pg_loss: micro-batch parts of the mini-batch loss add up
                        sums.add(f"{term.role}/{k}", float(v), None if k == "pg_loss" else len(local))
                actor.backward(loss)
            actor.pad_passes(padding)
            for i in mini.terms:  # pg_loss: the mean over mini-batches of their loss
                sums.count(f"{method.terms[i].role}/pg_loss", int(dist.rank == 0))
            sums.add("actor/grad_norm", actor.optimizer_step(), int(dist.rank == 0))
    actor.scheduler.step()
    metrics.update(_term_metrics(method, plan, dist, sums))


def term_loss_value(method: Method, term: LossTerm, log_prob: torch.Tensor, entropy: torch.Tensor | None,
                    mb: Rows, den: AggDenominators, on_policy: bool) -> tuple[torch.Tensor, dict[str, float]]:
    """One loss term on its rows ``mb`` of a micro-batch, from that micro-batch's forward
    (``log_prob`` / ``entropy`` ``[b, T]``): the registered policy loss (``POLICY_LOSSES``)
    aggregated with the mini-batch's denominators ``den``, the KL-in-loss and entropy terms,
    times the term's weight. Ranks' gradients are summed and denominators are global."""
    device = log_prob.device
    mask = mb.response_mask.to(device)
    old_log_prob = log_prob.detach() if on_policy else mb.old_log_probs.to(device)
    extras = {k: v.to(device) for k, v in {**mb.token_stats, **mb.estimator_outputs}.items()}
    assert mb.advantages is not None  # (the advantages phase fills them before the update)
    inputs = PolicyLossInputs(log_prob, old_log_prob, mb.advantages.to(device), mask, extras=extras)
    policy_loss = POLICY_LOSSES.get(term.loss)
    out_loss = policy_loss.fn(inputs, policy_loss.make_params(term.loss_params))
    pg = agg_loss(out_loss.loss_mat, mask, term.agg, den)
    loss = pg
    out = {k: v.item() for k, v in out_loss.metrics.items()}
    if mb.ref_log_probs is not None and method.kl_coef > 0 and method.kl_placement == "loss":
        kl = kl_penalty(log_prob, mb.ref_log_probs.to(device), method.kl_estimator)
        loss = loss + method.kl_coef * agg_loss(kl, mask, term.agg, den)
        out["kl_ref"] = masked_mean(kl.detach(), mask).item()
    if entropy is not None:
        if method.entropy_coef > 0:
            loss = loss - method.entropy_coef * agg_loss(entropy, mask, term.agg, den)
        out["entropy"] = masked_mean(entropy.detach(), mask).item()
    out["pg_loss"] = pg.item()
    return term.weight * loss, out


# ------------------------------------------------------------------ the update's bookkeeping
@dataclass
class MiniBatch:
    """This rank's rows of one mini-batch and what their losses are divided by.

    Attributes:
        rows: this rank's rows of the mini-batch's prompts that a term trains.
        row_term: each of those rows' term.
        terms: the terms with rows in the mini-batch (on any rank).
        denominators: each term's token/row counts over the whole mini-batch (every rank's
            rows; a joint group's terms count the group's rows), so micro-batch and rank losses
            add up to the mini-batch's.
    """

    rows: Rows
    row_term: list[int]
    terms: set[int]
    denominators: dict[int, AggDenominators]


@dataclass
class TermAssignment:
    """Which term trains each row, and which terms share loss denominators (a joint group)."""

    method: Method
    row_term: list[int]  # [B] the row's term, -1: a role with no term trains nothing
    shared: dict[int, set[int]]  # term → the terms whose rows count in its denominators
    term_of: dict[str, int]  # role → term

    @classmethod
    def of(cls, method: Method, rows: Rows) -> TermAssignment:
        term_of = {term.role: i for i, term in enumerate(method.terms)}
        grouped_with = joint_roles(method)
        shared = {i: {term_of[r] for r in grouped_with[term.role] if r in term_of} for i, term in enumerate(method.terms)}
        return cls(method, [term_of.get(r, -1) for r in rows.roles()], shared, term_of)

    def mini_batch(self, rows: Rows, chunk_keys: set, dist: Dist, max_response_length: int) -> MiniBatch | None:
        """The mini-batch of the prompts ``chunk_keys`` (``None``: no row of them trains)."""
        sel = [b for b, k in enumerate(rows.prompt_keys) if k in chunk_keys and self.row_term[b] >= 0]
        if not sel:
            return None
        global_term = [self.row_term[b] for b in sel]
        dens = {i: denominators(rows.response_mask[[b for b, tt in zip(sel, global_term) if tt in self.shared[i]]],
                                self.method, max_response_length)
                for i in set(global_term)}
        if dist.active:  # this rank's prompts of the mini-batch
            mine = set(dist.shard(sorted(chunk_keys, key=str)))
            sel = [b for b in sel if rows.prompt_keys[b] in mine]
        return MiniBatch(rows.select(sel), [self.row_term[b] for b in sel], set(global_term), dens)


def rows_by_term(row_term: list[int]) -> list[tuple[int, list[int]]]:
    """``(term, its rows' positions)`` for each term in ``row_term``, terms in order."""
    return [(i, [j for j, t in enumerate(row_term) if t == i]) for i in sorted(set(row_term))]


def denominators(mask: torch.Tensor, method: Method, max_response_length: int) -> AggDenominators:
    """Counts of a term's rows in the whole mini-batch (every rank holds the global rows)."""
    counts = torch.tensor([mask.sum().item(), (mask.sum(-1) > 0).sum().item()], dtype=torch.float64)
    scale = float(max_response_length) if method.agg_scale == "max_response_length" else None
    return AggDenominators(float(counts[0]), float(counts[1]), scale)


def _term_metrics(method: Method, plan: TermAssignment, dist: Dist, sums: MetricSums) -> dict[str, float]:
    """Per-role metrics over ranks, and the same aggregate names for every method: ``actor/<k>``
    = the mean over terms (``pg_loss``: the weighted sum, the objective's policy-gradient part)."""
    total, counts = dist.merge_sums(sums.sums, sums.counts)
    per_role = {k: total[k] / counts[k] if k in counts else total[k] for k in total}
    out = dict(per_role)
    for k in {k.split("/", 1)[1] for k in per_role if k.split("/", 1)[0] in plan.term_of}:
        vals = [(term, per_role[f"{term.role}/{k}"]) for term in method.terms if f"{term.role}/{k}" in per_role]
        if k == "pg_loss":
            out["actor/pg_loss"] = sum(term.weight * v for term, v in vals)
        else:
            out[f"actor/{k}"] = sum(v for _, v in vals) / len(vals)
    return out


def forward_tokens(mb: Rows, packs) -> tuple[int, int]:
    """Tokens one training forward runs over: real ones (prompt once per pack or per row,
    plus responses) and the padded total (sequences × width) the kernels compute on."""
    lengths = mb.lengths().tolist()
    if packs is None:
        sizes = [len(p) + n for p, n in zip(mb.prompt_ids, lengths)]
    else:
        sizes = [len(mb.prompt_ids[pack[0]]) + sum(lengths[b] for b in pack) for pack in packs]
    return sum(sizes), len(sizes) * max(sizes)
