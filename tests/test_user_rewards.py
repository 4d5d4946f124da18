"""Your own reward function (skpo.rewards.user): verl's and TRL's signatures as their docs write
them, the kwargs those frameworks pass, the line an error names, and the worker process whose
bound holds whatever the function does."""

from __future__ import annotations

import json
import os
import re
import textwrap

import pytest
import yaml

from skpo.rewards.registry import RewardContext, RewardError, get_reward
from skpo.rewards.user import verl_arguments
from skpo.tasks.dataset import Problem

TRL_DOC_REWARDS = '''
import re

def reward_func(completion_ids, **kwargs):
    """Reward function that assigns higher scores to longer completions (in terms of token count)."""
    return [float(len(ids)) for ids in completion_ids]

def reward_len(completions, **kwargs):
    return [-abs(20 - len(completion)) for completion in completions]

def format_reward_func(completions, **kwargs):
    """Reward function that checks if the completion has a specific format."""
    pattern = r"^<think>.*?</think><answer>.*?</answer>$"
    completion_contents = [completion[0]["content"] for completion in completions]
    matches = [re.match(pattern, content) for content in completion_contents]
    return [1.0 if match else 0.0 for match in matches]

def accuracy(completions, ground_truth, **kwargs):
    # Regular expression to capture content inside \\\\boxed{}
    matches = [re.search(r"\\\\boxed\\{(.*?)\\}", completion) for completion in completions]
    contents = [match.group(1) if match else "" for match in matches]
    # Reward 1 if the content is the same as the ground truth, 0 otherwise
    return [1.0 if c == gt else 0.0 for c, gt in zip(contents, ground_truth)]

def inspects(prompts, completions, completion_ids, trainer_state, log_extra, log_metric, **columns):
    """What TRL's GRPOTrainer passes: the prompt column as given, every other column as a list."""
    assert prompts == ["2+3?", "1+1?"], prompts
    assert completions == ["\\\\boxed{5}", "\\\\boxed{3}"], completions
    assert len(completion_ids) == 2 and all(isinstance(i, int) for ids in completion_ids for i in ids)
    assert trainer_state is None and callable(log_extra) and callable(log_metric)
    log_metric("my/metric", 1.0)
    log_extra("my_column", ["a", "b"])
    assert columns == {"ground_truth": ["5", "2"], "level": [3, 1]}, columns
    return [1.0, None]
'''

VERL_DOC_REWARDS = '''
def my_reward_fn(data_source, solution_str, ground_truth, extra_info=None):
    return len(solution_str)/100

def compute_score(data_source, solution_str, ground_truth, extra_info=None):
    correct = solution_str.strip().endswith(ground_truth)
    return {"score": 1.0 if correct else -1.0, "acc": correct, "pred": solution_str.strip()[-1:]}

def gsm8k_style(solution_str, ground_truth, method="strict", format_score=0.0, score=1.0):
    return score if ground_truth in solution_str else format_score
'''


@pytest.fixture
def module(tmp_path):
    """``module(name, source) -> 'path.py'``: a reward module written to a fresh file."""
    def write(name: str, source: str) -> str:
        path = tmp_path / f"{name}.py"
        path.write_text(textwrap.dedent(source))
        return str(path)

    return write


def problems(*rows: dict) -> list[Problem]:
    return [Problem(index=i, id=f"p{i}", question=row.get("prompt", "q"), gold=str(row.get("ground_truth", "")),
                    row=row) for i, row in enumerate(rows)]


# ----------------------------------------------------------------------------- verl


def test_verl_functions_as_verls_docs_write_them(module):
    path = module("verl_rewards", VERL_DOC_REWARDS)
    rows = problems({"data_source": "openai/gsm8k", "reward_model": {"ground_truth": "5"}},
                    {"data_source": "openai/gsm8k", "reward_model": {"ground_truth": "7"}})
    [v] = get_reward(f"{path}:my_reward_fn").score(["abc"], rows[:1])
    assert (v.reward, v.correct) == (0.03, False)
    dicts = get_reward(f"{path}:compute_score", (-1.0, 1.0)).score(["so 5", "so 6"], rows)
    assert [(v.reward, v.correct, v.extracted) for v in dicts] == [(1.0, True, "5"), (0.0, False, "6")]
    # verl's own gsm8k.compute_score has neither data_source nor extra_info: it gets what it takes
    assert [v.correct for v in get_reward(f"{path}:gsm8k_style").score(["#### 5", "#### 5"], rows)] == [True, False]


@pytest.mark.verl
def test_verl_arguments_are_what_verls_reward_manager_passes():
    """verl 0.9.1's NaiveRewardManager run on one row, and ours on the same row and text."""
    np = pytest.importorskip("numpy")
    torch = pytest.importorskip("torch")
    pytest.importorskip("verl")
    from verl import DataProto
    from verl.workers.reward_manager.naive import NaiveRewardManager

    from skpo.models.loading import load_tokenizer, tiny_arith_dir

    tokenizer = load_tokenizer(tiny_arith_dir())
    seen = []

    def compute_score(data_source, solution_str, ground_truth, extra_info=None):
        seen.append({"data_source": data_source, "solution_str": solution_str, "ground_truth": ground_truth,
                     "extra_info": dict(extra_info)})
        return 1.0

    row = {"data_source": "openai/gsm8k", "reward_model": {"ground_truth": "5", "style": "rule"},
           "extra_info": {"split": "train", "index": 7}}
    prompt, response = tokenizer.encode("2+3=", add_special_tokens=False), tokenizer.encode("5\nAnswer: 5", add_special_tokens=False)
    prompts = torch.full((1, 6), tokenizer.pad_token_id)
    prompts[0, 6 - len(prompt):] = torch.tensor(prompt)
    responses = torch.full((1, 12), tokenizer.pad_token_id)
    responses[0, :len(response)] = torch.tensor(response)
    mask = torch.zeros(1, 18, dtype=torch.long)
    mask[0, 6 - len(prompt):6 + len(response)] = 1
    batch = DataProto.from_dict(
        tensors={"prompts": prompts, "responses": responses, "attention_mask": mask},
        non_tensors={key: np.array([json.loads(json.dumps(row[key]))], dtype=object) for key in row})
    NaiveRewardManager(tokenizer, 0, compute_score)(batch)
    [theirs] = seen
    assert verl_arguments(theirs["solution_str"], problems(row)[0]) == theirs
    assert theirs["extra_info"] == {"split": "train", "index": 7, "num_turns": None, "rollout_reward_scores": {}}


# ----------------------------------------------------------------------------- TRL


def test_trl_functions_as_trls_docs_write_them(module):
    from skpo.models.loading import load_tokenizer, tiny_arith_dir

    path = module("trl_rewards", TRL_DOC_REWARDS)
    tokenizer = load_tokenizer(tiny_arith_dir())
    ctx = RewardContext(tokenizer=tokenizer)
    plain = problems({"prompt": "2+3?", "ground_truth": "5", "level": 3}, {"prompt": "1+1?", "ground_truth": "2", "level": 1})
    texts = ["\\boxed{5}", "\\boxed{3}"]
    lengths = get_reward(f"{path}:reward_func", (0.0, 100.0)).score(texts, plain, ctx)
    assert [v.reward * 100 for v in lengths] == [float(len(tokenizer.encode(t, add_special_tokens=False))) for t in texts]
    assert [v.reward for v in get_reward(f"{path}:reward_len", (-20.0, 0.0)).score(["x" * 20, "x" * 10], plain)] == [1.0, 0.5]
    assert [v.correct for v in get_reward(f"{path}:accuracy").score(texts, plain)] == [True, False]
    checked = get_reward(f"{path}:inspects").score(texts, plain, ctx)  # asserts inside (an AssertionError names its line)
    assert [(v.reward, v.correct) for v in checked] == [(1.0, True), (0.0, False)]
    assert checked[1].reason == "returned None: scored 0, as TRL sums it"
    # conversational data: completions are message lists, as TRL passes them
    chat = [Problem(index=0, id="c0", question="What is 1+2?", gold="3", row={"prompt": []},
                    messages=({"role": "user", "content": "What is 1+2?"},))] * 2
    answers = ["<think>1 and 2</think><answer>3</answer>", "3"]
    assert [v.reward for v in get_reward(f"{path}:format_reward_func").score(answers, chat)] == [1.0, 0.0]


def test_a_trl_function_that_needs_a_missing_column_says_which(module):
    path = module("trl_needs", "def f(completions, solution, **kwargs):\n    return [1.0] * len(completions)\n")
    with pytest.raises(RewardError, match=r"needs 'solution', which the rows do not have \(columns: ground_truth, prompt\)"):
        get_reward(f"{path}:f").score(["x"], problems({"prompt": "q", "ground_truth": "5"}))


def test_a_function_with_none_of_the_signatures_is_one_line_naming_the_three(module):
    path = module("no_signature", "def f(a, b, c):\n    return 1.0\n")
    with pytest.raises(RewardError) as err:
        get_reward(f"{path}:f")
    message = str(err.value)
    assert "\n" not in message and "has the signature (a, b, c)" in message
    assert all(s in message for s in ("score(completion, example)", "compute_score(data_source, solution_str, ground_truth",
                                      "reward_func(prompts, completions, **kwargs)", "reward.style"))
    # declared: a TRL function without **kwargs takes two arguments, as skpo's does; reward.style says which
    declared = module("declared", "def f(prompts, completions):\n    return [0.5 for _ in completions]\n")
    assert get_reward(f"{declared}:f", style="trl").score(["a"], problems({}))[0].reward == 0.5
    with pytest.raises(RewardError, match="not iterable"):  # detected as skpo's: called per answer, as (completion, example)
        get_reward(f"{declared}:f").score(["a"], problems({}))


def test_an_error_names_the_file_and_line_in_the_users_function(module):
    path = module("buggy", """\
        import json

        def score(completion, example):
            return json.loads(completion)["reward"]
        """)
    with pytest.raises(RewardError) as err:
        get_reward(f"{path}:score").score(["not json"], problems({}))
    assert f"raised JSONDecodeError on problem 'p0' at {path}:4: Expecting value" in str(err.value)  # not json's own line


# ----------------------------------------------------------------------------- the worker process


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.mark.parametrize("body", [
    # catches every exception the bound could raise, in a loop
    "import time\n    while True:\n        try:\n            time.sleep(0.2)\n        except BaseException:\n            pass",
    # switches the timer signal off, then sleeps
    "import signal, time\n    signal.signal(signal.SIGALRM, signal.SIG_IGN)\n    time.sleep(300)\n    return 1.0",
])
def test_the_timeout_holds_whatever_the_function_catches(module, body):
    path = module("stubborn", f"def score(completion, example):\n    {body}\n")
    entry = get_reward(f"{path}:score", timeout_s=1.0)
    pid = entry.worker.pid
    with pytest.raises(RewardError, match=r"did not return within reward.timeout_s=1 s for a batch of 1 answers \(its worker process was killed\)"):
        entry.score(["x"], problems({}))
    assert _gone(pid) and entry.worker.pid is None
    assert entry.worker.start().style == "skpo" and entry.worker.pid != pid  # a later batch gets a fresh worker


def test_a_module_that_hangs_at_import_is_bounded(module):
    path = module("hangs_at_import", "import time\ntime.sleep(300)\n\ndef score(completion, example):\n    return 1.0\n")
    with pytest.raises(RewardError, match=r"importing '.*hangs_at_import.py' did not finish within reward.timeout_s=1 s"):
        get_reward(f"{path}:score", timeout_s=1.0)


def test_the_module_is_imported_once_and_the_function_keeps_its_state(module, tmp_path):
    marker = tmp_path / "imports.txt"
    path = module("counts", f"""\
        open({str(marker)!r}, "a").write("imported\\n")
        calls = []

        def score(completion, example):
            calls.append(completion)
            return len(calls) / 10
        """)
    entry = get_reward(f"{path}:score")
    assert [v.reward for v in entry.score(["a", "b"], problems({}, {}))] == [0.1, 0.2]
    assert [v.reward for v in entry.score(["c"], problems({}))] == [0.3]
    assert marker.read_text() == "imported\n"


def test_os_exit_in_a_reward_is_an_error_with_exit_2_and_a_clean_run_directory(module, tmp_path, capsys):
    from skpo.commands.train import main as train_main

    path = module("exits_hard", "import os\n\ndef score(completion, example):\n    os._exit(0)\n")
    out = tmp_path / "run"
    args = ["train.steps=1", "train.prompts_per_step=2", "method.group_size=2", "rollout.max_new_tokens=8",
            "data.arith.pool_size=20", "eval.every=0", "log.progress=false", f"reward.function={path}:score",
            f"log.out_dir={out}"]
    assert train_main(args) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "its worker process ended while scoring a batch of 4 answers (exit code 0" in err[-1]
    assert sorted(p.name for p in out.iterdir()) == [".lock"]  # what the run wrote is gone: the command can run again
    assert train_main(["--check", *args]) == 2  # --check runs the reward: the same line
    assert capsys.readouterr().err.strip().splitlines()[-1] == err[-1].replace("4 answers", "8 answers")


def test_a_worker_that_died_between_batches_is_replaced(module):
    import signal
    import time

    path = module("plain", "def score(completion, example):\n    return 1.0\n")
    entry = get_reward(f"{path}:score")
    pid = entry.worker.pid
    os.kill(pid, signal.SIGKILL)
    while not os.waitpid(pid, os.WNOHANG)[0]:  # (collected here, as a dead worker may already be)
        time.sleep(0.01)
    assert entry.score(["x"], problems({}))[0].correct and entry.worker.pid not in (None, pid)


def test_in_process_rewards_when_asked(module, tmp_path):
    """``reward.worker: false``: the function runs here (what it changes is seen here)."""
    import sys

    path = module("inline", "seen = []\n\ndef score(completion, example):\n    seen.append(completion)\n    return 1.0\n")
    entry = get_reward(f"{path}:score", worker=False)
    assert entry.worker is None and entry.score(["a"], problems({}))[0].correct
    [inline] = [m for m in sys.modules.values() if getattr(m, "__file__", None) == path]
    assert inline.seen == ["a"]


# ----------------------------------------------------------------------------- API runs, resumed from the command line

SMALL = ["train.prompts_per_step=2", "method.group_size=2", "rollout.max_new_tokens=8", "eval.every=0",
         "log.progress=false", "log.tensorboard=false"]


def test_an_api_run_with_an_importable_function_resumes_from_the_command_line(tmp_path, monkeypatch):
    import importlib

    import skpo
    from skpo.commands.train import main as train_main

    (tmp_path / "my_api_rewards.py").write_text("def score(completion, example):\n    return len(completion) % 2 == 0\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    score = importlib.import_module("my_api_rewards").score
    trainer = skpo.train(model="tiny-arith", reward=score, out_dir=tmp_path / "run", overrides=[*SMALL, "train.steps=1"])
    trainer.close()
    config = tmp_path / "run" / "config.yaml"
    assert yaml.safe_load(config.read_text())["reward"]["function"] == "my_api_rewards:score"
    assert train_main(["--config", str(config), "--resume", "train.steps=2"]) == 0
    assert json.loads((tmp_path / "run" / "run.json").read_text())["resumes"][-1]["step"] == 1


def test_an_api_run_with_a_closure_says_how_to_resume(tmp_path, capsys, monkeypatch):
    import skpo
    from skpo.commands.train import main as train_main
    from skpo.rewards.registry import REWARDS

    def score(completion, example):
        return len(completion) % 2 == 0

    trainer = skpo.train(model="tiny-arith", reward=score, out_dir=tmp_path / "run", overrides=[*SMALL, "train.steps=1"])
    trainer.close()
    config = tmp_path / "run" / "config.yaml"
    name = yaml.safe_load(config.read_text())["reward"]["function"]
    assert name.startswith("python.") and "_locals_" in name
    monkeypatch.delitem(REWARDS, name)  # a new process: nothing registers it
    assert train_main(["--config", str(config), "--resume", "train.steps=2"]) == 2
    err = capsys.readouterr().err
    assert "resume from Python with the same function" in err and "reward.function=module:function" in err
    # done as it says: the function moved into a module, named on resume
    (tmp_path / "moved.py").write_text("def score(completion, example):\n    return len(completion) % 2 == 0\n")
    monkeypatch.chdir(tmp_path)
    assert train_main(["--config", str(config), "--resume", "train.steps=2", "reward.function=moved:score"]) == 0
    resume = json.loads((tmp_path / "run" / "run.json").read_text())["resumes"][-1]
    assert resume["changed"]["reward.function"] == [name, "moved:score"]


# ----------------------------------------------------------------------------- --check runs the reward


def test_check_runs_the_reward_on_gold_and_wrong_answers(module, tmp_path, capsys):
    from skpo.commands.train import main as train_main

    path = module("check_rewards", """\
        def attribute_error(completion, example):
            return example.golden in completion

        def out_of_range(completion, example):
            return 2.0

        def constant(completion, example):
            return 1.0
        """)
    data = tmp_path / "train.jsonl"
    data.write_text('{"question": "1+1?", "answer": "2"}\n{"question": "2+5?", "answer": "7"}\n')
    base = ["model.path=tiny-arith", "data.task=jsonl", f"data.path={data}", "train.prompts_per_step=2", "eval.every=0",
            "log.progress=false", "train.steps=1", "method.group_size=2", "rollout.max_new_tokens=8"]
    # the math reward: the gold, boxed, is paid on every row and "I do not know." is not
    assert train_main(["--check", *base, "data.reward=math", f"log.out_dir={tmp_path / 'a'}"]) == 0
    # a bug that --check used to pass: the same one line as training
    assert train_main(["--check", *base, f"reward.function={path}:attribute_error", f"log.out_dir={tmp_path / 'b'}"]) == 2
    checked = capsys.readouterr().err.strip().splitlines()
    assert train_main([*base, f"reward.function={path}:attribute_error", f"log.out_dir={tmp_path / 'c'}"]) == 2
    trained = capsys.readouterr().err.strip().splitlines()
    same = [re.sub(r"on problem '\d+'", "on problem N", line) for line in checked + trained]  # (which row comes first)
    assert len(checked) == 1 and same[0] == same[1]
    assert f"raised AttributeError on problem '0' at {path}:2: 'Problem' object has no attribute 'golden'" in checked[0]
    assert train_main(["--check", *base, f"reward.function={path}:out_of_range", f"log.out_dir={tmp_path / 'd'}"]) == 2
    assert "reward must be a number in [0, 1], got 2.0" in capsys.readouterr().err
    # your own function may expect another format: what looks wrong is a note
    assert train_main(["--check", *base, f"reward.function={path}:constant", f"log.out_dir={tmp_path / 'e'}"]) == 0
    assert "gives the top of reward.range to the wrong answer 'I do not know.'" in capsys.readouterr().out


def test_check_fails_a_builtin_reward_that_refuses_every_gold_or_pays_a_wrong_answer(tmp_path, capsys, monkeypatch):
    """The reward and the data do not fit (here: a math reward that can read no gold, then one that
    pays anything): a built-in reward fails the check, naming a row and what it was given."""
    import skpo.rewards.registry as registry
    from skpo.commands.train import main as train_main
    from skpo.rewards.base import Verdict

    data = tmp_path / "train.jsonl"
    data.write_text('{"question": "1+1?", "answer": "2"}\n{"question": "2+5?", "answer": "7"}\n')
    args = ["--check", "model.path=tiny-arith", "data.task=jsonl", f"data.path={data}", "data.reward=math",
            "eval.every=0", f"log.out_dir={tmp_path / 'r'}"]
    math = registry.REWARDS["math"]
    monkeypatch.setitem(registry.REWARDS, "math", registry.RewardEntry(
        "math", lambda c, p, ctx: [Verdict.wrong("gold answer unparseable")] * len(c)))
    assert train_main(args) == 2
    err = capsys.readouterr().err
    assert ("reward 'math' gives 0 (gold answer unparseable) to the gold answer written as 'The answer is $\\\\boxed{2}$.' "
            "(prompt train.jsonl:1), not the top of reward.range, on every checked row (2)") in err
    monkeypatch.setitem(registry.REWARDS, "math", registry.RewardEntry(
        "math", lambda c, p, ctx: [Verdict.right()] * len(c)))
    assert train_main(args) == 2
    assert "reward 'math' gives the top of reward.range to the wrong answer 'I do not know.'" in capsys.readouterr().err
    monkeypatch.setitem(registry.REWARDS, "math", math)
    assert train_main(args) == 0
