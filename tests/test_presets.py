"""Methods as data: every shipped method document resolves; the objective is assembled generically."""

from __future__ import annotations

import pytest
import torch
import yaml

from skpo.algorithms import AggDenominators, PolicyLossInputs
from skpo.methods import METHODS, MethodError, get_method, method_names, resolve_method
from skpo.methods.record import term_loss

EXPECTED = {"grpo", "dr_grpo", "dapo", "cispo", "gspo", "sapo", "spo", "rloo", "mc_dense", "oar", "oar_p", "skpo",
            "bnpo", "clip_cov", "kl_cov", "prime", "critique_grpo", "knapsack", "vas", "scaf_grpo",
            "papo", "lp_reg", "gtpo", "riskpo", "copo"}


def test_all_methods_present_and_valid():
    assert set(METHODS) == set(method_names()) == EXPECTED
    for preset in METHODS.values():
        preset.validate()
        assert preset.source


def test_skpo_preset_matches_paper_appendix_c():
    p = get_method("skpo")
    up, down = p.terms
    assert (up.role, up.advantage, up.loss, up.agg, up.weight) == ("upstream", "skpo_upstream", "ppo_clip", "seq-mean-token-mean", 0.5)
    assert dict(up.loss_params) == {"clip_low": 0.2, "clip_high": 0.2, "dual_clip": None}
    assert (down.role, down.advantage, down.loss, down.agg, down.weight) == ("downstream", "skpo_downstream", "cispo", "token-mean", 0.5)
    assert dict(down.loss_params) == {"clip_low": 0.2, "clip_high": 0.28}
    assert p.kl_coef == 0 and p.entropy_coef == 0 and p.group_size == 8
    assert p.value_tracker and p.length_tracker and p.prompt_sampling == "prioritized"
    assert dict(p.rollout_params)["skip"] is True and dict(p.rollout_params)["selection"] == "median"


def test_baseline_knobs():
    assert get_method("dapo").filter_groups and dict(get_method("dapo").terms[0].loss_params)["clip_high"] == 0.28
    assert dict(get_method("dr_grpo").terms[0].advantage_params) == {"norm_by_std": False}
    assert get_method("dr_grpo").agg_scale == "max_response_length"
    assert get_method("spo").group_size == 1
    assert get_method("oar_p").token_weights == "oar_p" and get_method("oar").token_weights == "oar_g"
    assert get_method("kl_cov").terms[0].loss == "kl_cov" and get_method("bnpo").terms[0].advantage == "bnpo"


@pytest.mark.parametrize(
    "overrides,match",
    [
        ({"terms": {"downstream": {"loss_params": {"clip_hgh": 0.3}}}}, r"method\.terms\.downstream\.loss_params: cispo: unknown parameter\(s\) \['clip_hgh'\]"),
        ({"terms": {"downstream": {"advantage": "grpoo"}}}, r"method\.terms\.downstream\.advantage: unknown advantage estimator 'grpoo'"),
        ({"terms": {"upstream": None}}, r"rollout 'skpo' produces roles \['upstream', 'downstream'\]"),
        ({"terms": {"downstream": {"agg": "tokenmean"}}}, r"method\.terms\.downstream\.agg: must be one of"),
        ({"rollout_params": {"skipp": True}}, r"rollout_params: skpo: unknown parameter\(s\) \['skipp'\]"),
        ({"value_tracker": False, "prompt_sampling": "uniform"}, r"reads the value tracker"),
        ({"value_tracker": False}, r"prioritized prompt sampling needs value_tracker"),
        ({"length_tracker": False}, r"needs a length tracker"),
        ({"kl_coeff": 0.1}, r"method: unknown key\(s\) \['kl_coeff'\]"),
        ({"rollout_params": {"split_low": 0.6}}, r"split_low <= split_high"),
    ],
)
def test_bad_overrides_name_the_key(overrides, match):
    with pytest.raises(MethodError, match=match):
        resolve_method("skpo", overrides)


def test_grpo_cannot_take_step_estimators():
    # SKPO's downstream estimator is group-relative over the rollout's groups: on ``group`` rows, GRPO's
    assert resolve_method("grpo", {"terms": {"response": {"advantage": "skpo_downstream"}}}).terms[0].advantage == "skpo_downstream"
    with pytest.raises(MethodError, match="needs \\['step_values'\\]"):
        resolve_method("cispo", {"terms": {"response": {"advantage": "mc_step"}}})
    with pytest.raises(MethodError, match="takes group_size 1"):
        resolve_method("spo", {"group_size": 4})
    with pytest.raises(MethodError, match="unknown method 'grpp'"):
        resolve_method("grpp")


def test_overrides_merge_into_the_document():
    m = resolve_method("skpo", {"terms": {"upstream": {"weight": 0.1}, "downstream": {"loss_params": {"clip_high": 0.3}}},
                                "rollout_params": {"selection": "extreme"}})
    assert m.term("upstream").weight == 0.1 and dict(m.term("downstream").loss_params) == {"clip_low": 0.2, "clip_high": 0.3}
    assert dict(m.rollout_params)["selection"] == "extreme" and dict(m.rollout_params)["skip"] is True
    assert get_method("skpo").term("upstream").weight == 0.5  # the shipped document is untouched
    off = resolve_method("grpo", {"terms": {"response": {"loss_params": {"dual_clip": None}}}})
    assert dict(off.terms[0].loss_params)["dual_clip"] is None  # null is a value, not a deletion


def test_term_loss_equals_direct_computation():
    g = torch.Generator().manual_seed(0)
    old = -torch.rand(4, 5, generator=g)
    cur = old + 0.1 * torch.randn(4, 5, generator=g)
    adv = torch.randn(4, 5, generator=g)
    mask = torch.ones(4, 5)
    down = get_method("skpo").term("downstream")
    loss, metrics = term_loss(down, PolicyLossInputs(cur, old, adv, mask), AggDenominators.from_mask(mask))
    expected = (-(torch.exp(cur - old).clamp(0.8, 1.28)) * adv * cur).mean()
    torch.testing.assert_close(loss, expected)
    assert "clipfrac" in metrics


def test_docs_table_is_current():
    """docs/methods.md holds the table `skpo methods --markdown` prints."""
    from pathlib import Path

    from skpo.methods import method_table_markdown

    text = (Path(__file__).resolve().parents[1] / "docs" / "methods.md").read_text()
    start, end = "<!-- methods-table:start -->\n", "\n<!-- methods-table:end -->"
    assert start in text and end in text
    assert text.split(start, 1)[1].split(end, 1)[0] == method_table_markdown(), \
        "docs/methods.md is stale: paste `skpo methods --markdown` between its markers"


def test_skpo_methods_command(capsys):
    from skpo.commands.methods import main
    from skpo.methods import method_names

    assert main([]) == 0
    out = capsys.readouterr().out
    for name in method_names():
        assert f"{name}: rollout " in out
    assert main(["--show", "dapo"]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["filter_groups"] is True and shown["terms"]["response"]["loss_params"]["clip_high"] == 0.28
