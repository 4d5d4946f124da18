"""One dataset spec for training data and benchmarks: layouts, formats, answers, prompts, length filter."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from skpo.tasks.dataset import DatasetError, DatasetSpec, encode_problems, last_boxed, load_problems, load_spec_file


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


DAPO_ROWS = [
    {"data_source": "math_dapo", "prompt": [{"role": "user", "content": "What is 2+3?"}], "ability": "MATH",
     "reward_model": {"ground_truth": "5", "style": "rule"}, "extra_info": {"index": "a1"}},
    {"data_source": "math_dapo", "prompt": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 7*6?"}],
     "ability": "MATH", "reward_model": {"ground_truth": "42", "style": "rule"}, "extra_info": {"index": "b2"}},
]


def test_dapo_layout_is_found_by_name_and_used_as_a_conversation(tmp_path):
    spec = DatasetSpec(path=str(write_jsonl(tmp_path / "dapo.jsonl", DAPO_ROWS)), id_column="extra_info.index")
    a, b = load_problems(spec)
    assert (a.gold, b.gold) == ("5", "42") and (a.id, b.id) == ("a1", "b2")  # nested answer and id
    assert a.messages == ({"role": "user", "content": "What is 2+3?"},) and a.question == "What is 2+3?"
    assert b.messages[0] == {"role": "system", "content": "Be brief."} and b.question == "What is 7*6?"
    assert spec.name == "dapo"


def test_explicit_nested_columns_and_a_literal_dotted_key_wins(tmp_path):
    rows = [{"q": {"text": "Find x."}, "a.b": "7", "a": {"b": "wrong"}}]
    spec = DatasetSpec(path=str(write_jsonl(tmp_path / "n.jsonl", rows)), prompt_column="q.text", answer_column="a.b")
    (p,) = load_problems(spec)
    assert (p.question, p.gold) == ("Find x.", "7")


def test_answer_lists_worked_solutions_and_gsm8k_fields(tmp_path):
    rows = [
        {"problem": "p1", "answer": ["1/2", "0.5", 3]},
        {"problem": "p2", "solution": "First $x=2$, so \\boxed{\\frac{1}{2}} is wrong; finally \\boxed{\\sqrt{2}}."},
        {"problem": "p3", "answer": "Natalia sold 48/2 = 24 clips.\n#### 1,072"},
    ]
    problems = load_problems(DatasetSpec(path=str(write_jsonl(tmp_path / "m.jsonl", rows[:1]))))
    assert problems[0].golds == ("1/2", "0.5", "3") and problems[0].gold == "1/2"
    (solution,) = load_problems(DatasetSpec(path=str(write_jsonl(tmp_path / "s.jsonl", rows[1:2]))))
    assert solution.gold == "\\sqrt{2}"  # the last \boxed{} of the worked solution, braces matched
    (gsm,) = load_problems(DatasetSpec(path=str(write_jsonl(tmp_path / "g.jsonl", rows[2:]))))
    assert gsm.gold == "1072"
    plain = DatasetSpec(path=str(tmp_path / "g.jsonl"), answer_format="plain")
    assert load_problems(plain)[0].gold.endswith("#### 1,072")


def test_last_boxed():
    assert last_boxed("a \\boxed{1} b \\boxed{\\frac{a}{b}}") == "\\frac{a}{b}"
    assert last_boxed("\\fbox{x}") == "x" and last_boxed("no box") is None and last_boxed("\\boxed{open") is None


def test_gzip_and_parquet_read_the_same_rows(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"question": "one?", "answer": "1"}, {"question": "two?", "answer": 2}]
    plain = write_jsonl(tmp_path / "d.jsonl", rows)
    gz = tmp_path / "d.jsonl.gz"
    gz.write_bytes(gzip.compress(plain.read_bytes()))
    parquet = tmp_path / "d.parquet"
    pq.write_table(pa.Table.from_pylist([{"question": r["question"], "answer": str(r["answer"])} for r in rows]), parquet)
    want = [("one?", "1"), ("two?", "2")]
    for path in (plain, gz, parquet):
        assert [(p.question, p.gold) for p in load_problems(DatasetSpec(path=str(path)))] == want, path
    assert load_problems(DatasetSpec(path=str(parquet)))[1].line is None


def test_parquet_chat_list_layout(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "dapo.parquet"
    pq.write_table(pa.Table.from_pylist(DAPO_ROWS), path)
    a, b = load_problems(DatasetSpec(path=str(path)))
    assert a.messages[0]["content"] == "What is 2+3?" and b.gold == "42"


@pytest.mark.parametrize(
    "rows,spec_kw,match",
    [
        ([{"text": "x"}], {}, r"no prompt column: set prompt_column \(row has keys: text"),
        ([{"problem": "x"}], {}, r"no answer column for reward 'math'"),
        ([{"problem": "x", "answer": "1"}, {"problem": "y"}], {}, r"row 2 \(line 2\): missing key 'answer'"),
        ([{"problem": "x", "answer": "1"}, {"problem": 3, "answer": "1"}], {}, r"row 2 \(line 2\): key 'problem' must be"),
        ([{"prompt": [{"role": "user"}], "answer": "1"}], {}, r"row 1 \(line 1\): key 'prompt' must be a string or a list"),
        ([{"problem": "x", "answer": []}], {}, r"empty list of answers"),
        ([{"problem": "x", "answer": {"v": 1}}], {}, r"key 'answer' must be a string or a number"),
        ([{"problem": "x", "solution": "no box here"}], {"answer_column": "solution", "answer_format": "boxed"},
         r"key 'solution' has no \\boxed"),
        ([{"problem": "x", "answer": "1"}], {"id_column": "uid"}, r"missing key 'uid'"),
    ],
)
def test_bad_rows_are_named(tmp_path, rows, spec_kw, match):
    spec = DatasetSpec(path=str(write_jsonl(tmp_path / "bad.jsonl", rows)), **spec_kw)
    with pytest.raises(DatasetError, match=match):
        load_problems(spec)


def test_spec_validation_names_the_key():
    with pytest.raises(ValueError, match="placeholder"):
        DatasetSpec(path="x.jsonl", template="no placeholder")
    with pytest.raises(ValueError, match="unknown reward 'mathh'"):
        DatasetSpec(path="x.jsonl", reward="mathh")
    with pytest.raises(ValueError, match="promt_column"):
        DatasetSpec.model_validate({"path": "x.jsonl", "promt_column": "q"})
    # the older words still read
    spec = DatasetSpec.model_validate({"path": "x.jsonl", "verifier": "gsm8k", "prompt_key": "q", "answer_key": "a"})
    assert (spec.reward, spec.prompt_column, spec.answer_column, spec.verifier) == ("gsm8k", "q", "a", "gsm8k")


def test_template_context_and_system(tmp_path):
    rows = [{"question": "How many?", "answer": "3", "passage": "Three cats.", "sys": "You count."}]
    path = write_jsonl(tmp_path / "c.jsonl", rows)
    spec = DatasetSpec(path=str(path), context_column="passage", system_column="sys", template="Q: {question} \\boxed{}")
    (p,) = load_problems(spec)
    from skpo.tasks.dataset import prompt_messages

    assert prompt_messages(spec, p, chat=True) == [
        {"role": "system", "content": "You count."},
        {"role": "user", "content": "Three cats.\n\nQ: How many? \\boxed{}"},
    ]
    placed = spec.model_copy(update={"template": "{question}\nContext: {context}"})
    assert prompt_messages(placed, p, chat=False)[-1]["content"] == "How many?\nContext: Three cats."


class _CharTokenizer:
    """One token per character; a chat template that wraps messages in <role>…</role>."""

    chat_template = "x"
    bos_token_id = None
    eos_token_id = 0

    def encode(self, text, add_special_tokens=True):
        return [ord(c) for c in text]

    def apply_chat_template(self, messages, add_generation_prompt=True, tokenize=True):
        text = "".join(f"<{m['role']}>{m['content']}</{m['role']}>" for m in messages) + "<assistant>"
        return {"input_ids": self.encode(text)} if tokenize else text


def test_overlong_prompts_are_dropped_with_a_count_or_refused(tmp_path):
    rows = [{"problem": "short", "answer": "1"}, {"problem": "x" * 200, "answer": "2"}, {"problem": "mid" * 5, "answer": "3"}]
    path = write_jsonl(tmp_path / "o.jsonl", rows)
    tok = _CharTokenizer()
    spec = DatasetSpec(path=str(path), max_prompt_tokens=60)
    problems = load_problems(spec)
    enc = encode_problems(spec, tok, problems)
    assert [p.gold for p in enc.problems] == ["1", "3"] and enc.dropped == ["1"] and enc.prompt_format == "chat"
    assert all(len(ids) <= 60 for ids in enc.prompt_ids)
    assert "".join(map(chr, enc.prompt_ids[0])) == "<user>short</user><assistant>"
    with pytest.raises(DatasetError, match=r"o.jsonl: row 2 \(line 2\): prompt is 2\d\d tokens, over max_prompt_tokens=60"):
        encode_problems(spec.model_copy(update={"overlong": "error"}), tok, problems)


def test_spec_file_resolves_relative_paths(tmp_path):
    write_jsonl(tmp_path / "aime25.jsonl", [{"q": "Find 2+2.", "a": "4"}])
    (tmp_path / "s.yaml").write_text("name: aime25\nreward: math\npath: aime25.jsonl\nprompt_column: q\nanswer_column: a\n")
    (spec,) = load_spec_file(tmp_path / "s.yaml")
    assert Path(spec.path) == (tmp_path / "aime25.jsonl").resolve()
    assert load_problems(spec)[0].gold == "4"


@pytest.mark.parametrize("content, needle", [
    (b'{"question": "q", "answer": "1"}\n{"question": "q2", "answer": "2",\n', "row 2 (line 2): invalid JSON: Expecting property name enclosed in double quotes at column 34"),
    (b'{"question": "q", "answer": "1"}\n{"question": "\xff", "answer": "2"}\n', "line 2: not UTF-8 text (byte 15 of the line"),
    (b'{"question": "q", "answer": "1"}\n{"question": "q2", "answer": NaN}\n', "row 2 (line 2): key 'answer' is nan, not an answer"),
    (b'{"question": "q", "answer": "nan"}\n', "row 1 (line 1): key 'answer' is 'nan', not an answer"),
])
def test_data_errors_name_the_line_and_what_is_wrong(tmp_path, content, needle):
    path = tmp_path / "d.jsonl"
    path.write_bytes(content)
    with pytest.raises(DatasetError) as err:
        load_problems(DatasetSpec(name="d", path=str(path)))
    assert needle in str(err.value) and str(path) in str(err.value), str(err.value)


def test_a_directory_is_named_as_one(tmp_path):
    from skpo.jsonl import JsonlError, read_jsonl

    with pytest.raises(JsonlError, match="is a directory"):
        read_jsonl(tmp_path, what="data file")
