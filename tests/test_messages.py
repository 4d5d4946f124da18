"""The one-line messages a user meets first: help texts, did-you-mean, config errors naming the
key and the value, pointers from verl's keys, the Hub download command, and that a bad key is
reported before the training stack is imported."""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
import sys

import pytest

from skpo.cli import main
from skpo.config import ConfigError, load_config
from skpo.errors import closest_name, edit_distance
from skpo.paths import shipped_method_names


@pytest.mark.parametrize("verb, words", [
    ("compare", "equal rollout-token budget"),
    ("main", "embedded default"),
])
def test_help_describes_the_command(verb, words, capsys):
    from skpo.commands import parsers

    with pytest.raises(SystemExit):
        main([verb, "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert words in out
    assert parsers.__doc__.splitlines()[0] not in out  # not the parsers module's own docstring
    for name, build in parsers.PARSERS.items():  # every verb has a description of its own
        assert build().description and build().description != parsers.__doc__.splitlines()[0], name


@pytest.mark.parametrize("a, b, distance", [
    ("gpro", "grpo", 1),  # one swap of neighbours
    ("gpro", "gtpo", 2),
    ("kitten", "sitting", 3),
    ("ca", "abc", 3),  # optimal string alignment: a swapped pair is not edited again
    ("", "spo", 3),
    ("skpo", "skpo", 0),
])
def test_edit_distance_hand_values(a, b, distance):
    assert edit_distance(a, b) == distance == edit_distance(b, a)


@pytest.mark.parametrize("typo, meant", [
    ("gpro", "grpo"), ("dpao", "dapo"), ("skop", "skpo"), ("cipso", "cispo"), ("gsop", "gspo"), ("rlo", "rloo"),
    ("GRPO", "grpo"), ("oar-p", "oar_p"), ("drgrpo", "dr_grpo"), ("prmie", "prime"), ("kl-cov", "kl_cov"),
])
def test_a_mistyped_method_suggests_the_method_meant(typo, meant):
    assert closest_name(typo, shipped_method_names()) == meant
    with pytest.raises(ConfigError, match=rf"train\.method={typo}: unknown method '{typo}' \(did you mean '{meant}'\?\)"):
        load_config(None, [f"train.method={typo}"])


def test_nothing_close_suggests_nothing():
    assert closest_name("xyz", shipped_method_names()) is None
    assert closest_name("trian", ["main", "train", "eval"]) == "train"


@pytest.mark.parametrize("override, message", [
    ("train.steps=abc", "train.steps=abc: Input should be a valid integer"),
    ("bad.key=1", "bad.key=1: unknown key; the sections are plugins, model, data"),
    ("train.stpes=3", "train.stpes=3: unknown key (did you mean 'train.steps'?)"),
    ("method.rollout_params.selection=best", "method: skpo: rollout_params: skpo: selection must be one of 'median', "
                                             "'extreme', 'first' (got 'best')"),
    ("rollout.skpo.selection=best", "method: skpo: rollout_params: skpo: selection must be one of 'median', 'extreme', "
                                    "'first' (got 'best') (given as rollout.skpo.selection=best)"),
    ("method.group_size=abc", "method: group_size must be an integer (got 'abc')"),
    ("data.train_files=[a.parquet]", "data.train_files=[a.parquet]: unknown key (verl's data.train_files; here: "
                                     "data.path"),
    ("data.val_files=b.parquet", "data.val_files=b.parquet: unknown key (verl's data.val_files; here: eval.benchmarks"),
    ("actor_rollout_ref.rollout.n=8", "actor_rollout_ref.rollout.n=8: unknown key (verl's actor_rollout_ref.rollout.n; "
                                      "here: method.group_size)"),
    ("reward.range=abc", "reward.range=abc: expected two numbers [low, high], e.g. reward.range=[-1,1]"),
    ("data.task=jsonl", "data.path is required when data.task is 'jsonl'"),
])
def test_a_config_error_names_the_key_and_the_value(override, message):
    with pytest.raises(ConfigError) as err:
        load_config(None, [override])
    assert str(err.value).startswith(message.split(":")[0]) and message in str(err.value)
    assert "invalid configuration" not in str(err.value) and "defaults" not in str(err.value)


def test_an_error_in_a_file_names_the_file_and_one_from_the_command_line_does_not(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("train:\n  steps: abc\n")
    with pytest.raises(ConfigError, match=rf"^{path}: train\.steps=abc: Input should be a valid integer"):
        load_config(path)
    with pytest.raises(ConfigError, match=r"^train\.lr=fast: Input should be a valid number"):
        load_config(tmp_path / "run.yaml", ["train.steps=3", "train.lr=fast"])


@pytest.mark.parametrize("text", ["-1,1", "[-1,1]", "-1, 1"])
def test_reward_range_as_typed_on_a_command_line(text):
    assert load_config(None, [f"reward.range={text}"]).reward.range == (-1.0, 1.0)


def test_missing_columns_name_the_config_key_for_training_data_and_the_spec_key_for_a_spec(tmp_path):
    from skpo.tasks.dataset import DatasetSpec, load_problems

    path = tmp_path / "rows.jsonl"
    path.write_text(json.dumps({"text": "1+1", "answer": "2"}) + "\n")
    cfg = load_config(None, [f"data.path={path}"])
    with pytest.raises(ValueError, match=r"no prompt column: set data\.prompt_column \(row has keys: answer, text"):
        load_problems(cfg.data)
    with pytest.raises(ValueError, match=r"no prompt column: set prompt_column \("):
        load_problems(DatasetSpec(path=str(path)))
    path.write_text(json.dumps({"question": "1+1", "x": "2"}) + "\n")
    with pytest.raises(ValueError, match=r"set data\.answer_column"):
        load_problems(cfg.data)


def test_a_hub_id_names_the_installed_hub_command():
    """The download command in the message is the one the installed huggingface_hub ships."""
    from skpo.models.loading import hub_hint

    scripts = {ep.name for ep in importlib.metadata.entry_points(group="console_scripts")
               if ep.value.startswith("huggingface_hub")}
    assert "hf" in scripts
    hint = hub_hint("Qwen/Qwen2.5-Math-7B")
    assert "hf download Qwen/Qwen2.5-Math-7B --local-dir /models/Qwen2.5-Math-7B" in hint
    assert "huggingface-cli" not in hint


@pytest.mark.xdist_group("processes")
def test_a_config_error_comes_before_the_training_stack_is_imported():
    """``skpo train bad.key=1`` fails on the config alone: torch and transformers are never loaded."""
    code = ("import sys; from skpo.cli import main\n"
            "code = main(sys.argv[1:])\n"
            "print('EXIT', code, sorted(m for m in ('torch', 'transformers', 'skpo.training', 'skpo.methods') "
            "if m in sys.modules))")
    for argv in (["train", "bad.key=1"], ["train", "train.method=gpro"], ["train", "train.steps=abc"]):
        out = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=120)
        assert out.stdout.strip().splitlines()[-1] == "EXIT 2 []", (argv, out.stdout, out.stderr)
        assert out.stderr.startswith(f"skpo train: {argv[1]}")
