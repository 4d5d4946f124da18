"""Method presets: every method is a valid record; the objective is assembled generically."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from skpo.algorithms import PRESETS, AggDenominators, LossTerm, PolicyLossInputs, get_preset, term_loss

EXPECTED = {"grpo", "dr_grpo", "dapo", "cispo", "gspo", "sapo", "spo", "rloo", "mc_dense", "oar", "skpo"}


def test_all_methods_present_and_valid():
    assert set(PRESETS) == EXPECTED
    for preset in PRESETS.values():
        preset.validate()


def test_skpo_preset_matches_paper_appendix_c():
    p = get_preset("skpo")
    up, down = p.terms
    assert (up.role, up.advantage, up.loss, up.agg, up.weight) == ("upstream", "skpo_upstream", "ppo_clip", "seq-mean-token-mean", 0.5)
    assert dict(up.loss_params) == {"clip_low": 0.2, "clip_high": 0.2, "dual_clip": None}
    assert (down.role, down.advantage, down.loss, down.agg, down.weight) == ("downstream", "skpo_downstream", "cispo", "token-mean", 0.5)
    assert dict(down.loss_params) == {"clip_low": 0.2, "clip_high": 0.28}
    assert p.kl_coef == 0 and p.entropy_coef == 0 and p.group_size == 8
    assert p.value_tracker and p.length_tracker and p.prompt_sampling == "prioritized"


def test_baseline_knobs():
    assert get_preset("dapo").filter_groups and dict(get_preset("dapo").terms[0].loss_params)["clip_high"] == 0.28
    assert dict(get_preset("dr_grpo").terms[0].advantage_params) == {"norm_by_std": False}
    assert get_preset("dr_grpo").agg_scale == "max_response_length"
    assert get_preset("spo").group_size == 1


def test_bad_presets_name_the_problem():
    with pytest.raises(KeyError, match="grpp"):
        get_preset("grpp")
    bad_term = LossTerm("response", "grpo", "ppo_clip", "token-mean", loss_params={"clip_hgh": 0.3})
    with pytest.raises(ValueError, match="clip_hgh"):
        dataclasses.replace(get_preset("grpo"), terms=(bad_term,)).validate()
    with pytest.raises(ValueError, match="upstream"):
        dataclasses.replace(get_preset("skpo"), terms=get_preset("grpo").terms).validate()
    with pytest.raises(ValueError, match="value_tracker"):
        dataclasses.replace(get_preset("grpo"), prompt_sampling="prioritized").validate()


def test_term_loss_equals_direct_computation():
    g = torch.Generator().manual_seed(0)
    old = -torch.rand(4, 5, generator=g)
    cur = old + 0.1 * torch.randn(4, 5, generator=g)
    adv = torch.randn(4, 5, generator=g)
    mask = torch.ones(4, 5)
    down = get_preset("skpo").terms[1]
    loss, metrics = term_loss(down, PolicyLossInputs(cur, old, adv, mask), AggDenominators.from_mask(mask))
    expected = (-(torch.exp(cur - old).clamp(0.8, 1.28)) * adv * cur).mean()
    torch.testing.assert_close(loss, expected)
    assert "clipfrac" in metrics
