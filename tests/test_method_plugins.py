"""A new advantage estimator and a new rollout kind, registered from this file, train through
``skpo``'s own trainer with a method document written here: nothing in the package is touched.

The rollout kind (``halves``) splits every group's answers into two roles, ``early`` and
``late`` (the first and second half of each group); the method gives each role its own loss
term, one of them with the new estimator (``sign_of_centered``: the sign of the reward minus
its group mean, a group-relative estimator grouped by prompt). The checks: both plug-ins were
called, the estimator got exactly the rows of its role with their group keys, the trainer
logged per-role and aggregate metrics, the weights moved, and ``method.yaml`` records it all.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import pytest
import torch
import yaml

from skpo.algorithms import ADVANTAGE_ESTIMATORS
from skpo.algorithms.advantages import AdvantageInputs
from skpo.config import ConfigError, load_config
from skpo.rollout.base import ROLLOUTS, RolloutContext, RolloutResult
from skpo.rollout.group import group_rollout
from skpo.training.setup import build_trainer

CALLS: dict[str, list] = {"estimator": [], "rollout": []}


@dataclass(frozen=True)
class SignParams:
    scale: float = 1.0


def sign_of_centered(batch: AdvantageInputs, params: SignParams) -> torch.Tensor:
    """``scale · sign(r − mean of the row's group)`` on every response token."""
    scores = batch.scores
    keys = list(batch.index)
    adv = torch.zeros_like(scores)
    for key in set(keys):
        rows = [i for i, k in enumerate(keys) if k == key]
        adv[rows] = torch.sign(scores[rows] - scores[rows].mean())
    CALLS["estimator"].append((len(keys), keys))
    return params.scale * adv[:, None] * batch.response_mask


@dataclass(frozen=True)
class HalvesParams:
    late_share: float = 0.5


def halves_rollout(ctx: RolloutContext, items) -> RolloutResult:
    """The ``group`` rollout, with each group's answers split into roles ``early`` and ``late``."""
    result = group_rollout(ctx, items)
    rows = result.rows
    g = ctx.method.group_size
    cut = g - round(g * ctx.rollout_params.late_share)
    roles = ["early" if b % g < cut else "late" for b in range(len(rows.rewards))]
    CALLS["rollout"].append(roles)
    return dataclasses.replace(result, rows=rows.replace(role=roles))


METHOD = {
    "name": "halves_sign",
    "description": "two roles from one group rollout, one of them with a sign-of-centred-reward advantage",
    "source": "tests/test_method_plugins.py",
    "rollout": "halves",
    "rollout_params": {"late_share": 0.5},
    "group_size": 4,
    "terms": {
        "early": {"advantage": "grpo", "loss": "ppo_clip", "loss_params": {"clip_low": 0.2, "clip_high": 0.2},
                  "agg": "token-mean", "weight": 0.7},
        "late": {"advantage": "sign_of_centered", "advantage_params": {"scale": 0.5}, "loss": "cispo",
                 "agg": "seq-mean-token-mean", "weight": 0.3},
    },
}


@pytest.fixture()
def plugins():
    ADVANTAGE_ESTIMATORS.register("sign_of_centered", SignParams, group_key="prompt")(sign_of_centered)
    ROLLOUTS.register("halves", HalvesParams, roles=("early", "late"))(halves_rollout)
    for v in CALLS.values():
        v.clear()
    yield
    ADVANTAGE_ESTIMATORS.unregister("sign_of_centered")
    ROLLOUTS.unregister("halves")


def _config(tiny_dir, method_file, out, *extra):
    return load_config(None, [
        f"model.path={tiny_dir}", f"train.method={method_file}", "train.steps=2", "train.prompts_per_step=3",
        "rollout.max_new_tokens=32", "rollout.temperature=1.5", "train.lr=1e-3", f"log.out_dir={out}",
        "log.progress=false", "log.tensorboard=false", "data.arith.pool_size=30", "eval.every=0", *extra,
    ])


def test_new_estimator_and_rollout_kind_train(tmp_path, plugins):
    from skpo.models.loading import tiny_arith_dir

    method_file = tmp_path / "halves_sign.yaml"
    method_file.write_text(yaml.safe_dump(METHOD))
    cfg = _config(tiny_arith_dir(), method_file, tmp_path / "run")
    trainer = build_trainer(cfg)
    before = {k: v.detach().clone() for k, v in trainer.policy.state_dict().items()}
    metrics = trainer.train_step(0)
    trainer.state.step += 1
    trainer.close()

    # the rollout kind ran and split each group of 4 into 2 early + 2 late answers
    assert CALLS["rollout"] and CALLS["rollout"][0] == ["early", "early", "late", "late"] * 3
    # the estimator saw only its role's rows (2 per prompt, 3 prompts), grouped by prompt
    n, keys = CALLS["estimator"][0]
    assert n == 6 and len(set(keys)) == 3
    # per-role metrics under the role names, aggregates under the same names as every method
    for role in ("early", "late"):
        assert math.isfinite(metrics[f"{role}/pg_loss"])
    assert math.isfinite(metrics["actor/pg_loss"]) and metrics["actor/grad_norm"] > 0
    moved = sum(float((v - before[k]).abs().sum()) for k, v in trainer.policy.state_dict().items())
    assert moved > 0
    written = yaml.safe_load((tmp_path / "run" / "method.yaml").read_text())
    assert written["rollout"] == "halves" and written["terms"]["late"]["advantage_params"] == {"scale": 0.5}
    assert written["terms"]["early"]["weight"] == 0.7


def test_plugin_parameters_are_validated_by_their_schema(tmp_path, plugins):
    from skpo.models.loading import tiny_arith_dir

    bad = dict(METHOD, terms={**METHOD["terms"], "late": {**METHOD["terms"]["late"], "advantage_params": {"scal": 1}}})
    method_file = tmp_path / "bad.yaml"
    method_file.write_text(yaml.safe_dump(bad))
    with pytest.raises(ConfigError, match=r"method\.terms\.late\.advantage_params: sign_of_centered: unknown parameter"):
        _config(tiny_arith_dir(), method_file, tmp_path / "run")
    # a role the rollout kind does not produce
    wrong_roles = dict(METHOD, terms={"response": METHOD["terms"]["early"]})
    method_file.write_text(yaml.safe_dump(wrong_roles))
    with pytest.raises(ConfigError, match=r"rollout 'halves' produces roles \['early', 'late'\]"):
        _config(tiny_arith_dir(), method_file, tmp_path / "run")
    # overrides address the user's method like a shipped one
    method_file.write_text(yaml.safe_dump(METHOD))
    with pytest.raises(ConfigError, match=r"halves: unknown parameter\(s\) \['share'\]"):
        _config(tiny_arith_dir(), method_file, tmp_path / "run", "method.rollout_params.share=0.3")


def test_unregistered_plugins_are_named(tmp_path):
    from skpo.models.loading import tiny_arith_dir

    method_file = tmp_path / "m.yaml"
    method_file.write_text(yaml.safe_dump(METHOD))
    with pytest.raises(ConfigError, match=r"unknown rollout kind 'halves'"):
        _config(tiny_arith_dir(), method_file, tmp_path / "run")
    with pytest.raises(ConfigError, match=r"method file .*nope\.yaml' does not exist"):
        _config(tiny_arith_dir(), tmp_path / "nope.yaml", tmp_path / "run")


PLUGIN = '''
from dataclasses import dataclass
import torch
from skpo.algorithms import ADVANTAGE_ESTIMATORS

@dataclass(frozen=True)
class P:
    scale: float = 1.0

@ADVANTAGE_ESTIMATORS.register("{name}", P, group_key="prompt")
def estimator(batch, params):
    keys = list(batch.index)
    adv = torch.zeros_like(batch.scores)
    for key in set(keys):
        rows = [i for i, k in enumerate(keys) if k == key]
        adv[rows] = batch.scores[rows] - batch.scores[rows].mean()
    return params.scale * adv[:, None] * batch.response_mask
'''


def _plugin_and_method(tmp_path, name):
    plugin = tmp_path / f"{name}_plugin.py"
    plugin.write_text(PLUGIN.format(name=name))
    method = tmp_path / f"{name}.yaml"
    method.write_text(yaml.safe_dump({"name": name, "rollout": "group", "group_size": 2, "terms": {
        "response": {"advantage": name, "loss": "ppo_clip", "agg": "token-mean"}}}))
    return plugin, method


def test_plugins_from_the_command_line_and_the_config(tmp_path, capsys):
    """A method document naming an estimator of the user's module: unknown (and the error says
    how to register) until the module is imported, by ``--import`` or ``plugins:``."""
    from skpo.commands.train import main as train_main

    plugin, method = _plugin_and_method(tmp_path, "centered_from_plugin")
    base = ["train.steps=1", "train.prompts_per_step=2", "rollout.max_new_tokens=8", "eval.every=0",
            "log.progress=false", "log.tensorboard=false", "data.arith.pool_size=20", f"train.method={method}"]
    assert train_main([*base, f"log.out_dir={tmp_path / 'a'}"]) == 2
    err = capsys.readouterr().err
    assert "unknown advantage estimator 'centered_from_plugin'" in err and "--import MODULE" in err
    assert train_main(["--import", str(plugin), *base, f"log.out_dir={tmp_path / 'b'}"]) == 0
    saved = yaml.safe_load((tmp_path / "b" / "config.yaml").read_text())
    assert saved["plugins"] == [str(plugin)]  # a resumed run imports it again
    plugin2, method2 = _plugin_and_method(tmp_path, "centered_from_config")
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({"plugins": [str(plugin2)], "train": {"method": str(method2)}}))
    assert train_main(["--config", str(config), *base[:-1], f"log.out_dir={tmp_path / 'c'}"]) == 0


def test_a_broken_plugin_is_one_line(tmp_path, capsys):
    from skpo.commands.train import main as train_main

    broken = tmp_path / "broken.py"
    broken.write_text("def f(:\n    pass\n")
    assert train_main(["--import", str(broken), "--check", f"log.out_dir={tmp_path / 'r'}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "broken.py" in err[0] and "syntax error at" in err[0] and ":1:" in err[0]
    raising = tmp_path / "raising.py"
    raising.write_text("raise RuntimeError('boom at import')\n")
    assert train_main(["--import", str(raising), "--check", f"log.out_dir={tmp_path / 'r'}"]) == 2
    assert "failed to import: RuntimeError: boom at import" in capsys.readouterr().err


def test_an_earlier_spelling_does_not_silently_replace_the_users_method_value(tmp_path, capsys):
    """A run-config key of earlier releases (a recipe's ``rollout.group_size``) that replaces a
    value the user's own method document sets is said: a note at start (a warning) and in ``--check``."""
    from skpo.commands.train import main as train_main

    method = tmp_path / "mine.yaml"
    method.write_text(yaml.safe_dump({"name": "mine", "rollout": "group", "group_size": 4, "terms": {
        "response": {"advantage": "grpo", "loss": "ppo_clip", "agg": "token-mean"}}}))
    resolved = load_config(None, [f"train.method={method}", "rollout.group_size=8"]).resolved()
    assert resolved.method.group_size == 8
    assert resolved.notes[1:] == (f"rollout.group_size=8 from the run config replaces group_size: 4 of your method "
                                  f"document {method} (set it in one place to silence this note)",)
    assert "earlier spelling" in resolved.notes[0]
    assert load_config(None, [f"train.method={method}", "rollout.group_size=4"]).resolved().notes[1:] == ()
    assert load_config(None, [f"train.method={method}", "method.group_size=8"]).resolved().notes == ()  # said once
    assert train_main(["--check", f"train.method={method}", "rollout.group_size=8", f"log.out_dir={tmp_path / 'r'}"]) == 0
    assert "replaces group_size: 4 of your method document" in capsys.readouterr().out
