"""Every ``configs/paper`` recipe trains on a stand-in of its model family, on CPU.

The stand-in (``skpo standin``) has the real architecture family, chat template, special tokens
and generation config, with tiny random weights. Each recipe runs exactly as written — bf16
mixed precision, chat-templated math data in the dapo-math-17k layout, the paper's learning
rate, warm-up, mini-batches, group size and in-training evaluation on MATH-500, AIME24 and
AMC23 — except for sizes (steps, prompts per step, token budgets, evaluation size) and one
thing a random model cannot give: correct answers. The math verifier would score every
answer wrong, every group would be flat and no gradient would flow, so the reward is a user
function (``tests/data/rewards_for_tests.py:parity``, a hash of the text) that mixes the
rewards of every group; the math reward itself runs in the in-training evaluation.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from skpo.config import load_config
from skpo.training.setup import build_trainer

ROOT = Path(__file__).resolve().parents[1]
RECIPES = sorted((ROOT / "configs" / "paper").glob("*.yaml"))
# The quick tier trains one recipe per model family; the others differ from these only in their
# method, and every method trains in the quick tier (tests/test_trainer.py::test_every_preset_trains).
QUICK_RECIPES = ("qwen2.5-math-7b-skpo", "llama-3.2-3b-instruct-grpo")
_SLOW_RECIPE = pytest.mark.slow(reason="same base file and data path as the family's quick recipe "
                                       f"({', '.join(QUICK_RECIPES)}); the method trains in test_every_preset_trains")
PARITY = f"{ROOT / 'tests' / 'data' / 'rewards_for_tests.py'}:parity"


def family_of(recipe: Path) -> str:
    for family in ("qwen2.5-math-7b", "llama-3.2-3b-instruct"):
        if recipe.name.startswith(family):
            return family
    raise AssertionError(f"{recipe.name}: unknown model family")


@pytest.fixture(scope="module")
def dapo_jsonl(tmp_path_factory) -> Path:
    """The six shortest MATH-500 problems in the dapo-math-17k / verl layout (chat-list prompt,
    nested gold)."""
    from skpo.evaluation.benchmarks import get_spec, load_problems

    rows = []
    for p in sorted(load_problems(get_spec("math500")), key=lambda p: len(p.question))[:6]:
        content = f"Solve the following math problem step by step.\n\n{p.question}\n\nRemember to put your answer on its own line after \"Answer:\"."
        rows.append({"data_source": "math_dapo", "prompt": [{"role": "user", "content": content}], "ability": "MATH",
                     "reward_model": {"ground_truth": p.gold, "style": "rule"}, "extra_info": {"index": p.id}})
    path = tmp_path_factory.mktemp("data") / "dapo-math.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def size_overrides(recipe: Path) -> list[str]:
    spo = recipe.stem.endswith("-spo")  # one answer per prompt: more prompts so the batch has contrast
    return [
        "train.steps=2", f"train.prompts_per_step={4 if spo else 2}", "rollout.max_new_tokens=12",
        "rollout.initial_length=16", "train.micro_batch_tokens=2048", "eval.every=2", "eval.limit=1", "eval.k=2",
        "eval.max_new_tokens=6",
    ]


@pytest.mark.parametrize("recipe", [pytest.param(r, id=r.stem, marks=() if r.stem in QUICK_RECIPES else _SLOW_RECIPE)
                                    for r in RECIPES])
def test_paper_recipe_trains_on_a_standin(recipe, standin, dapo_jsonl, tmp_path):
    out = tmp_path / "run"
    cfg = load_config(recipe, [
        f"model.path={standin(family_of(recipe))}", f"data.path={dapo_jsonl}", f"reward.function={PARITY}",
        f"log.out_dir={out}", "log.progress=false", "log.tensorboard=false", *size_overrides(recipe),
    ])
    assert cfg.model.dtype == "bfloat16" and not cfg.model.pure_low_precision and cfg.train.lr == 1e-6
    trainer = build_trainer(cfg)
    head = trainer.policy.get_output_embeddings().weight
    assert head.dtype == torch.float32  # master weights stay float32 under bf16 compute
    before = head.detach().clone()
    trainer.train()

    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [1, 2]
    for line in lines:
        assert all(math.isfinite(v) for v in line.values() if isinstance(v, (int, float))), line
    assert any(x["actor/grad_norm"] > 0 for x in lines)
    # The output head gets a dense gradient; AdamW's first steps move each element by ~lr·(1/10
    # warm-up): visible in float32 master weights, lost in bf16 ones (test_precision.py).
    moved = (head.detach() != before).float().mean().item()
    assert moved > 0.99, moved
    for bench in ("math500", "aime24", "amc23"):
        assert 0.0 <= lines[-1][f"eval/{bench}/avg@2"] <= 1.0
    assert "eval/arith/avg@2" not in lines[-1]
    assert (out / "checkpoints" / "step_000002" / "model" / "model.safetensors").is_file()
    run = json.loads((out / "run.json").read_text())
    assert run["compute_dtype"] == "bfloat16" and run["weights_dtype"] == "float32"
    # chat prompts end at the assistant turn; answers stop at the template's end-of-turn token too
    eot = {"qwen2.5-math-7b": 151645, "llama-3.2-3b-instruct": 128009}[family_of(recipe)]
    assert eot in run["stop_token_ids"]


def test_recipes_resolve_as_before_the_base_files():
    """Every shipped recipe (paper: one base per model + the method; embedded: the defaults + the
    method) resolves to the config and method it resolved to when each recipe was one flat file
    (``tests/data/recipes_resolved.json``, written from the flat files before they were split,
    in the layout of that time: its method keys in the run config are read as a saved config's are
    on resume), and says nothing: no setting that does not apply, no earlier spelling."""
    from skpo.config import RunConfig, move_old_spellings
    from skpo.methods import method_to_document

    def flat(tree, prefix=""):
        if isinstance(tree, dict):
            return {k2: v2 for k, v in tree.items() for k2, v2 in flat(v, f"{prefix}{k}.").items()}
        return {prefix[:-1]: tree}

    defaults = flat(RunConfig().model_dump(mode="json"))
    expected = json.loads((ROOT / "tests" / "data" / "recipes_resolved.json").read_text())
    found = sorted(str(p.relative_to(ROOT)) for d in ("paper", "arith") for p in (ROOT / "configs" / d).glob("*.yaml"))
    assert found == sorted(expected)
    for name, want in expected.items():
        cfg = load_config(ROOT / name)
        resolved = cfg.resolved()
        now, then = flat(cfg.model_dump(mode="json")), flat(move_old_spellings(want["config"])[0])
        assert {k: v for k, v in now.items() if k in then} == then, name
        added = {k: v for k, v in now.items() if k not in then}  # keys added since: defaults, where data.heldout
        # follows the data (0, nothing held out, where a recipe on a data file names its own benchmarks)
        assert added == {k: 0 if k == "data.heldout" and cfg.data.task != "arith" else defaults[k] for k in added}, name
        assert json.loads(json.dumps(method_to_document(resolved.method))) == want["method"], name
        assert resolved.notes == (), name
