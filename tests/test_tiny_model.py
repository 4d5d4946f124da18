"""Tokenizer, tiny Qwen2 model, local loading, and the shipped warm-started checkpoint."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoTokenizer, Qwen2ForCausalLM

from skpo.commands.warmstart_training import draft_inputs, evaluate_avg_at_k
from skpo.models.loading import load_policy, load_tokenizer, tiny_arith_dir
from skpo.models.tiny import build_tiny_model, count_parameters
from skpo.models.tokenizer import EOS_TOKEN, PAD_TOKEN, build_tokenizer
from skpo.tasks.arith import ArithConfig, heldout_problems

TEXT = "Q: 37+48-12\nA:\n37+48=85\n85-12=73\nAnswer: 73"


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


def test_tokenizer_round_trip_through_autotokenizer(tokenizer, tmp_path):
    ids = tokenizer.encode(TEXT, add_special_tokens=False)
    assert tokenizer.decode(ids) == TEXT
    assert len(ids) == 38  # one token per character, "Answer" one token
    assert tokenizer.convert_ids_to_tokens(ids[:3]) == ["Q", ":", "Ġ"]
    assert "Answer" in tokenizer.convert_ids_to_tokens(ids)
    tokenizer.save_pretrained(tmp_path)
    loaded = AutoTokenizer.from_pretrained(tmp_path, local_files_only=True)
    assert loaded.encode(TEXT, add_special_tokens=False) == ids
    assert loaded.encode(TEXT) == ids  # no automatically added special tokens
    assert loaded.decode(ids) == TEXT
    assert (loaded.pad_token, loaded.eos_token) == (PAD_TOKEN, EOS_TOKEN)
    assert (loaded.pad_token_id, loaded.eos_token_id) == (262, 261)
    assert len(loaded) == len(tokenizer) == 263
    other = "héllo\tworld ∑ 5-12=-7\n\n  x"  # any text round-trips (byte level)
    assert loaded.decode(loaded.encode(other)) == other
    pad, eos = loaded.pad_token_id, loaded.eos_token_id
    assert loaded.decode(ids + [eos, pad, pad], skip_special_tokens=True) == TEXT
    assert load_tokenizer(tmp_path, padding_side="left").padding_side == "left"


def test_model_size_and_architecture(tokenizer):
    model = build_tiny_model(tokenizer, seed=0)
    assert isinstance(model, Qwen2ForCausalLM)
    assert count_parameters(model) == 1_018_880
    assert model.lm_head.weight is model.model.embed_tokens.weight  # tied
    assert model.config.num_key_value_heads == 2 and model.config.num_attention_heads == 4


def test_save_and_load_policy_gives_identical_logits(tokenizer, tmp_path):
    model = build_tiny_model(tokenizer, seed=1).eval()
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    loaded = load_policy(tmp_path, device="cpu")
    assert loaded.dtype == torch.float32
    ids = torch.tensor([tokenizer.encode(TEXT)])
    with torch.no_grad():
        assert torch.equal(model(ids).logits, loaded(ids).logits)
    assert load_policy(tmp_path, dtype="bfloat16").dtype == torch.bfloat16
    # next to a qwen2 config.json, AutoTokenizer builds Qwen2Tokenizer: it must tokenize the same
    loaded_tok = load_tokenizer(tmp_path)
    assert type(loaded_tok).__name__ == "Qwen2Tokenizer"
    assert loaded_tok.encode(TEXT) == tokenizer.encode(TEXT)
    assert (loaded_tok.pad_token_id, loaded_tok.eos_token_id) == (tokenizer.pad_token_id, tokenizer.eos_token_id)


def test_missing_or_wrong_path_names_it(tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(FileNotFoundError, match="no-such-model"):
        load_policy(missing)
    with pytest.raises(FileNotFoundError, match="no-such-model"):
        load_tokenizer(missing)
    empty = tmp_path / "empty-dir"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match=r"empty-dir.*not a model directory"):
        load_policy(empty)
    (empty / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match=r"empty-dir.*no weights"):
        load_policy(empty)
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    with pytest.raises(NotADirectoryError, match=r"file\.txt"):
        load_policy(a_file)


# Measured on the shipped checkpoint (docs/embedded-default.md): plain avg@8 on the 200 held-out
# problems, sampling seed 0, was 0.316875 with the warm start's previous sampler (pass@8 0.800, mixed
# 0.785; with a correct draft 0.318) and is 0.325 through the runner (pass@8 0.775, mixed 0.760;
# with a correct draft 0.3325).
# The bounds leave room for another CPU's rounding, not for a different model.
SHIPPED_AVG_AT_8 = (0.25, 0.40)
SHIPPED_MIXED_FLOOR = 0.6


@pytest.mark.slow(reason="the shipped model loads and is evaluated in the quick tests/test_evaluate.py::test_shipped_tiny_model_on_arith and tests/test_cli.py::test_main")
def test_shipped_checkpoint_loads_and_solves_a_fair_share():
    path = tiny_arith_dir()
    record = json.loads((path / "warmstart.json").read_text())
    model = load_policy(path)
    tokenizer = load_tokenizer(path)
    assert count_parameters(model) == record["parameters"] == 1_018_880
    assert (path / "model.safetensors").stat().st_size < 10_000_000
    problems = heldout_problems(ArithConfig(), 200)
    plain = evaluate_avg_at_k(model, tokenizer, problems, k=8, seed=0)
    assert SHIPPED_AVG_AT_8[0] <= plain.avg_at_k <= SHIPPED_AVG_AT_8[1]  # neither hopeless nor solved
    assert plain.frac_mixed >= SHIPPED_MIXED_FLOOR  # most problems give RL a signal
    assert sum(plain.histogram) == 200
    assert record["metrics"]["plain"]["avg_at_k"] == pytest.approx(0.316875)
    skip = evaluate_avg_at_k(
        model, tokenizer, problems, k=8, seed=0, inputs=draft_inputs(tokenizer, problems, flawed=False)
    )
    assert skip.avg_at_k >= SHIPPED_AVG_AT_8[0]  # it reads [s, q] and still answers
