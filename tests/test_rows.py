"""The teacher-forced forward of the trainer: padded rows and tree-packed prompt groups give
the log-probs, entropies and gradients of scoring each row alone."""

from __future__ import annotations

import pytest
import torch

from skpo.models.forward import group_by_prompt, length_buckets, pack_buckets, policy_forward
from skpo.models.loading import load_policy, tiny_arith_dir
from skpo.rows import Rows, concat_rows, pad_lists, pad_responses


@pytest.fixture(scope="module")
def model():
    return load_policy(tiny_arith_dir(), device="cpu")


def batch(seed: int = 0):
    """Three prompt groups (sizes 3, 1, 4) of different prompt lengths; responses of
    length 0..9 (0 and 1 are the edge cases of the packed layout)."""
    g = torch.Generator().manual_seed(seed)
    prompts = [torch.randint(0, 260, (n,), generator=g).tolist() for n in (7, 3, 12)]
    rows = [0, 0, 0, 1, 2, 2, 2, 2]
    lengths = [5, 0, 9, 4, 1, 8, 8, 3]
    responses = [torch.randint(0, 260, (n,), generator=g).tolist() for n in lengths]
    ids, mask, _ = pad_responses(responses, [[0.0] * n for n in lengths], pad_id=262)
    order = [4, 0, 6, 1, 3, 7, 2, 5]  # groups interleaved: packing must not rely on row order
    return [prompts[rows[i]] for i in order], ids[order], mask[order]


def alone(model, prompts, ids, mask, temperature):
    """Ground truth: each row scored by itself, no padding at all."""
    out = torch.zeros(ids.shape)
    for b, p in enumerate(prompts):
        n = int(mask[b].sum())
        if n == 0:
            continue
        seq = torch.tensor([list(p) + ids[b, :n].tolist()])
        logits = model(input_ids=seq).logits[0, len(p) - 1 : -1] / temperature
        out[b, :n] = torch.log_softmax(logits, -1).gather(-1, ids[b, :n, None]).squeeze(-1)
    return out


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_packed_and_padded_rows_equal_rows_scored_alone(model, attn, temperature):
    model.set_attn_implementation(attn)
    try:
        prompts, ids, mask = batch()
        with torch.no_grad():
            truth = alone(model, prompts, ids, mask, temperature)
            rows_lp, rows_h = policy_forward(model, prompts, ids, mask, 262, temperature, with_entropy=True)
            pack_lp, pack_h = policy_forward(model, prompts, ids, mask, 262, temperature, with_entropy=True,
                                            packs=group_by_prompt(prompts))
        torch.testing.assert_close(rows_lp, truth, atol=2e-5, rtol=0)
        torch.testing.assert_close(pack_lp, truth, atol=2e-5, rtol=0)
        torch.testing.assert_close(pack_h, rows_h, atol=2e-5, rtol=0)
        assert (pack_lp[mask == 0] == 0).all() and (pack_h[mask == 0] == 0).all()
        assert (pack_lp[mask == 1] < 0).all()
    finally:
        model.set_attn_implementation("sdpa")


def test_packed_gradients_equal_padded_rows(model):
    prompts, ids, mask = batch(1)
    weights = torch.randn(ids.shape, generator=torch.Generator().manual_seed(3))

    def grads(packs) -> dict[str, torch.Tensor]:
        model.zero_grad()
        lp, h = policy_forward(model, prompts, ids, mask, 262, 1.0, with_entropy=True, packs=packs)
        ((lp * weights).sum() + 0.1 * h.sum()).backward()
        return {k: p.grad.clone() for k, p in model.named_parameters()}

    # two packs for the 4-row group: a prompt may be split across packs
    assert sorted(group_by_prompt(prompts)) == [[0, 2, 5, 7], [1, 3, 6], [4]]
    packs = [[0, 2], [5, 7], [1, 3, 6], [4]]
    packed, rows = grads(packs), grads(None)
    for k in rows:
        torch.testing.assert_close(packed[k], rows[k], atol=5e-5, rtol=1e-3)  # float32 sums in another order
    assert any(g.abs().sum() > 0 for g in packed.values())


def test_pack_buckets_cap_packs_and_respect_the_budget():
    prompts = [[1] * 10] * 4 + [[2] * 30] * 4 + [[3] * 5] * 2 + [[4] * 200] * 3
    lengths = [20, 5, 9, 30, 40, 2, 7, 1, 3, 3, 150, 20, 90]
    buckets = pack_buckets(prompts, lengths, token_budget=200, pack_max_tokens=60)
    seen = sorted(b for rows, _ in buckets for b in rows)
    assert seen == list(range(len(prompts)))  # every row exactly once
    n_packs = 0
    for rows, packs in buckets:
        if packs is None:  # only answers that cannot fit a pack even alone
            assert all(len(prompts[b]) + lengths[b] > 60 for b in rows)
            assert len(rows) == 1 or len(rows) * max(len(prompts[b]) + lengths[b] for b in rows) <= 200
            continue
        assert sorted(i for p in packs for i in p) == list(range(len(rows)))
        sizes = []
        for p in packs:
            members = [rows[i] for i in p]
            assert len({tuple(prompts[b]) for b in members}) == 1  # one prompt per pack
            sizes.append(len(prompts[members[0]]) + sum(lengths[b] for b in members))
        assert max(sizes) <= 60 and len(packs) * max(sizes) <= 200
        n_packs += len(packs)
    # 10-token prompt: [30, 20] [9, 5]; 30-token prompt: 40 → rows (70 > 60), [7, 2, 1];
    # 5-token prompt: [3, 3]; 200-token prompt: all three → rows
    assert n_packs == 4
    assert sorted(b for rows, packs in buckets if packs is None for b in rows) == [4, 10, 11, 12]


def test_length_buckets_sorted_and_within_budget():
    lengths = [5, 50, 7, 48, 6, 300]
    buckets = length_buckets(lengths, 100)
    assert sorted(i for b in buckets for i in b) == list(range(6))
    for b in buckets:
        assert len(b) == 1 or len(b) * max(lengths[i] for i in b) <= 100
    assert [5] in buckets  # the over-long row goes alone


def test_pad_lists_layout():
    """Right padding (responses), left padding (prompts), a fixed width, float lists, empty lists."""
    ids, mask = pad_lists([[5, 6], [7], []], 0)
    assert ids.tolist() == [[5, 6], [7, 0], [0, 0]] and mask.tolist() == [[1, 1], [1, 0], [0, 0]]
    ids, mask = pad_lists([[5, 6], [7]], 9, left=True)
    assert ids.tolist() == [[5, 6], [9, 7]] and mask.tolist() == [[1, 1], [0, 1]]
    ids, mask = pad_lists([[]], 0, width=2)
    assert ids.tolist() == [[0, 0]] and mask.tolist() == [[0, 0]]
    assert pad_lists([[], []], 0)[0].shape == (2, 1)  # at least one column
    lps, _ = pad_lists([[-0.5], [-0.25, -1.0]], 0.0, torch.float32, width=3)
    assert lps.dtype == torch.float32 and lps.tolist() == [[-0.5, 0.0, 0.0], [-0.25, -1.0, 0.0]]
    with pytest.raises(ValueError, match="does not fit width 1"):
        pad_lists([[1, 2]], 0, width=1)
    ids, mask, lps = pad_responses([[3, 4], []], [[-0.5, -1.5], []], pad_id=1)
    assert ids.tolist() == [[3, 4], [1, 1]] and mask.dtype == torch.float32 and mask.tolist() == [[1, 1], [0, 0]]
    assert lps.tolist() == [[-0.5, -1.5], [0.0, 0.0]]


def _rows(widths: list[int], stats: dict[str, float], outputs: dict[str, float]) -> Rows:
    ids, mask, lps = pad_responses([[3] * n for n in widths], [[-0.5] * n for n in widths], pad_id=0)
    shape = ids.shape
    return Rows([[1]] * len(widths), ids, mask, lps, torch.zeros(len(widths)), list(range(len(widths))),
                token_stats={k: torch.full(shape, v) for k, v in stats.items()},
                estimator_outputs={k: torch.full(shape, v) for k, v in outputs.items()})


def test_token_stats_and_estimator_outputs_follow_select_and_concat():
    """Both channels are picked with their rows and joined across parts (narrower parts padded
    with 0), each under its own names; parts that disagree on the names are refused."""
    a = _rows([2, 1], {"entropy": 0.5}, {"entropy": 2.0})  # one name in both channels: no clash
    b = _rows([3], {"entropy": 0.25}, {"entropy": 4.0})
    both = concat_rows([a, b], pad_id=0)
    assert both.token_stats["entropy"].tolist() == [[0.5, 0.5, 0.0], [0.5, 0.5, 0.0], [0.25, 0.25, 0.25]]
    assert both.estimator_outputs["entropy"].tolist() == [[2.0, 2.0, 0.0], [2.0, 2.0, 0.0], [4.0, 4.0, 4.0]]
    picked = both.select([2, 0])
    assert picked.token_stats["entropy"][:, 0].tolist() == [0.25, 0.5]
    assert picked.estimator_outputs["entropy"][:, 0].tolist() == [4.0, 2.0]
    assert not picked.extra
    with pytest.raises(ValueError, match="different token_stats"):
        concat_rows([a, _rows([1], {}, {"entropy": 1.0})], pad_id=0)
    with pytest.raises(ValueError, match="different estimator_outputs"):
        concat_rows([a, _rows([1], {"entropy": 1.0}, {})], pad_id=0)
