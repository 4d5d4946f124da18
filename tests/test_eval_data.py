"""``skpo eval --data FILE`` (or a data path in ``--benchmarks``, or in ``eval.benchmarks``)
evaluates a data file as training reads ``data.path``: one spec, one column detection."""

from __future__ import annotations

import gzip
import json

import pytest

from skpo.cli import main
from skpo.config import DataSection, load_config
from skpo.evaluation.benchmarks import resolve_benchmarks
from skpo.tasks.dataset import DatasetSpec, data_file_spec, load_problems

VERL_ROWS = [  # verl's layout: a chat-list prompt, the gold nested in reward_model
    {"data_source": "gsm8k", "prompt": [{"role": "user", "content": "What is 2+3?"}],
     "reward_model": {"ground_truth": "5", "style": "rule"}},
    {"data_source": "gsm8k", "prompt": [{"role": "user", "content": "What is 7*6?"}],
     "reward_model": {"ground_truth": "42", "style": "rule"}},
]


def test_a_data_file_is_the_training_data_spec(tmp_path):
    """``data_file_spec`` and the run config's ``data`` section (only ``data.path`` set) agree on
    every field of the spec, so evaluation reads a file exactly as training does."""
    path = tmp_path / "train.jsonl"
    path.write_text(json.dumps({"problem": "1+1", "solution": "\\boxed{2}"}) + "\n")
    section, spec = load_config(None, [f"data.path={path}"]).data, data_file_spec(path)
    fields = [f for f in DatasetSpec.model_fields if f not in ("arith", "countdown")]  # (synthetic tasks: no file)
    assert {f: getattr(section, f) for f in fields} == {f: getattr(spec, f) for f in fields}
    assert isinstance(section, DataSection) and resolve_benchmarks([str(path)]) == [spec]
    assert load_problems(spec)[0].gold == "2"


def test_skpo_eval_scores_data_files_found_as_training_finds_them(tmp_path, capsys):
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    parquet = tmp_path / "verl" / "test.parquet"
    parquet.parent.mkdir()
    pq.write_table(pa.Table.from_pylist(VERL_ROWS), parquet)
    gz = tmp_path / "flat.jsonl.gz"
    with gzip.open(gz, "wt") as f:
        f.writelines(json.dumps({"question": f"{i}+{i}=", "answer": str(2 * i)}) + "\n" for i in range(3))
    saved = tmp_path / "saved"
    datasets.Dataset.from_list([{"problem": "9-4", "solution": "\\boxed{5}"}]).save_to_disk(str(saved))
    out = tmp_path / "results.json"
    assert main(["eval", "--model", "tiny-arith", "--data", str(parquet), "--data", str(gz), "--benchmarks", str(saved),
                 "--k", "1", "--max-new-tokens", "3", "--no-progress", "--out", str(out)]) == 0
    results = json.loads(out.read_text())["benchmarks"]
    assert list(results) == ["saved", "test", "flat"]  # --benchmarks first, then --data; no arith
    golds = {name: [p["gold"] for p in r["problems"]] for name, r in results.items()}
    assert golds == {"saved": ["5"], "test": ["5", "42"], "flat": ["0", "2", "4"]}
    assert results["test"]["prompt_format"] == "plain" and results["test"]["n_problems"] == 2


@pytest.mark.parametrize("argv, message", [
    (["--benchmarks", "nope"], "unknown benchmark 'nope'; known: aime24"),
    (["--benchmarks", "nope"], "(skpo eval --data FILE); describe any other layout in a spec file"),
    (["--benchmarks", "missing/test.parquet"], "data file 'missing/test.parquet' does not exist"),
    (["--data", "missing.jsonl"], "--data: 'missing.jsonl' does not exist"),
])
def test_what_is_neither_a_benchmark_nor_a_file_says_what_to_give(argv, message, capsys):
    assert main(["eval", "--model", "tiny-arith", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("skpo eval: ") and message in err and len(err.strip().splitlines()) == 1


def test_a_run_may_evaluate_a_data_file_in_training(tmp_path):
    path = tmp_path / "val.jsonl"
    path.write_text(json.dumps({"question": "1+1", "answer": "2"}) + "\n")
    cfg = load_config(None, [f"eval.benchmarks=[arith,{path}]"])
    from skpo.training.setup import check_paths

    check_paths(cfg)  # resolves: the file is read as data.path would be
    with pytest.raises(ValueError, match="unknown benchmark 'val_files'"):
        check_paths(load_config(None, ["eval.benchmarks=[val_files]"]))
