"""Stand-in models (skpo.models.standin, ``skpo standin``): real template, ids, BOS behaviour,
config values and generation config on a tiny random model; reproducible weights; CLI errors.

Expected strings are written out by hand from the real templates' documented output (Qwen2.5-Math:
ChatML with the default system prompt "Please reason step by step, and put your final answer
within \\boxed{}."; Llama 3.2: header blocks, the "Cutting Knowledge Date" system preamble,
``<|eot_id|>`` after each turn), not produced by rendering.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

from skpo.cli import main as cli_main
from skpo.models.standin import known_families, load_family, make_standin, unused_token

QWEN, LLAMA = "qwen2.5-math-7b", "llama-3.2-3b-instruct"
SYSTEM, USER = "You are a careful solver.", "What is 2+3?"


def _tok(path: Path):
    return AutoTokenizer.from_pretrained(str(path), local_files_only=True)


def _ids(value) -> list[int]:
    """apply_chat_template(tokenize=True) as a flat list, whatever the transformers version returns."""
    if isinstance(value, torch.Tensor):
        value = value.tolist()
    if not isinstance(value, list) and hasattr(value, "keys") and "input_ids" in value:
        value = value["input_ids"]
    if isinstance(value, torch.Tensor):
        value = value.tolist()
    if value and isinstance(value[0], list):
        assert len(value) == 1
        value = value[0]
    return [int(i) for i in value]


@pytest.fixture(scope="module")
def qwen(standin):
    return standin(QWEN)


@pytest.fixture(scope="module")
def llama(standin):
    return standin(LLAMA)


def test_known_families_include_the_paper_models():
    assert {QWEN, LLAMA} <= set(known_families())
    assert load_family("Qwen/Qwen2.5-Math-7B")["name"] == QWEN  # repo id works too
    for name in (QWEN, LLAMA):
        record = load_family(name)
        assert record["source"] and isinstance(record["unverified"], list)


# ---------------------------------------------------------------------------------- templates

QWEN_DEFAULT_SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."


def test_qwen_chat_template(qwen):
    tok = _tok(qwen)
    both = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": USER}]
    assert tok.apply_chat_template(both, tokenize=False, add_generation_prompt=True) == (
        "<|im_start|>system\nYou are a careful solver.<|im_end|>\n"
        "<|im_start|>user\nWhat is 2+3?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    user_only = [{"role": "user", "content": USER}]
    assert tok.apply_chat_template(user_only, tokenize=False, add_generation_prompt=True) == (
        "<|im_start|>system\nPlease reason step by step, and put your final answer within \\boxed{}.<|im_end|>\n"
        "<|im_start|>user\nWhat is 2+3?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    with_answer = user_only + [{"role": "assistant", "content": "5"}]
    assert tok.apply_chat_template(with_answer, tokenize=False) == (
        f"<|im_start|>system\n{QWEN_DEFAULT_SYSTEM}<|im_end|>\n"
        "<|im_start|>user\nWhat is 2+3?<|im_end|>\n"
        "<|im_start|>assistant\n5<|im_end|>\n"
    )
    assert tok.chat_template == load_family(QWEN)["tokenizer_config"]["chat_template"]


def test_llama_chat_template(llama):
    tok = _tok(llama)
    both = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": USER}]
    assert tok.apply_chat_template(both, tokenize=False, add_generation_prompt=True, date_string="26 Jul 2024") == (
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"
        "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n"
        "You are a careful solver.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nWhat is 2+3?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )
    user_only = [{"role": "user", "content": USER}]
    assert tok.apply_chat_template(user_only, tokenize=False, add_generation_prompt=True, date_string="1 Jan 2025") == (
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n"
        "Cutting Knowledge Date: December 2023\nToday Date: 1 Jan 2025\n\n"
        "<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nWhat is 2+3?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )
    # message contents are stripped; no generation prompt without add_generation_prompt
    with_answer = [{"role": "user", "content": f"  {USER}\n"}, {"role": "assistant", "content": " 5 "}]
    assert tok.apply_chat_template(with_answer, tokenize=False, date_string="26 Jul 2024").endswith(
        "<|start_header_id|>user<|end_header_id|>\n\nWhat is 2+3?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n5<|eot_id|>"
    )
    assert tok.chat_template == load_family(LLAMA)["tokenizer_config"]["chat_template"]


@pytest.mark.parametrize("family", [QWEN, LLAMA])
def test_chat_template_ids_equal_encoding_the_rendered_text(standin, family):
    tok = _tok(standin(family))
    kw = {"date_string": "26 Jul 2024"} if family == LLAMA else {}
    msgs = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Find $x$ if $3x+4=19$."}]
    rendered = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True, **kw)
    ids = _ids(tok.apply_chat_template(msgs, tokenize=True, add_generation_prompt=True, **kw))
    assert ids == tok.encode(rendered, add_special_tokens=False)
    bos = tok.convert_tokens_to_ids("<|begin_of_text|>") if family == LLAMA else None
    assert ids.count(bos) == (1 if family == LLAMA else 0)  # the template's BOS, and only it


# ---------------------------------------------------------------------------------- ids

def test_qwen_special_tokens(qwen):
    tok = _tok(qwen)
    expected = {
        "<|endoftext|>": 151643, "<|im_start|>": 151644, "<|im_end|>": 151645, "<|object_ref_start|>": 151646,
        "<|vision_pad|>": 151654, "<|video_pad|>": 151656, "<tool_call>": 151657, "</tool_call>": 151658,
        "<|fim_prefix|>": 151659, "<|file_sep|>": 151664,
    }  # fmt: skip
    assert {t: tok.convert_tokens_to_ids(t) for t in expected} == expected
    assert (tok.bos_token, tok.bos_token_id) == (None, None)
    assert (tok.eos_token, tok.eos_token_id) == ("<|endoftext|>", 151643)
    assert (tok.pad_token, tok.pad_token_id) == ("<|endoftext|>", 151643)
    assert (len(tok), tok.vocab_size) == (151665, 151643)  # the real tokenizer's
    assert tok.model_max_length == 131072
    # special flags are real: <tool_call> is an added but not special token
    text = "<|im_start|>user\nhi<|im_end|><tool_call>"
    assert tok.decode(tok.encode(text), skip_special_tokens=True) == "user\nhi<tool_call>"
    assert tok.encode("<|im_end|>") == [151645]


def test_llama_special_tokens(llama):
    tok = _tok(llama)
    expected = {
        "<|begin_of_text|>": 128000, "<|end_of_text|>": 128001, "<|reserved_special_token_0|>": 128002,
        "<|finetune_right_pad_id|>": 128004, "<|start_header_id|>": 128006, "<|end_header_id|>": 128007,
        "<|eom_id|>": 128008, "<|eot_id|>": 128009, "<|python_tag|>": 128010,
        "<|reserved_special_token_3|>": 128011, "<|reserved_special_token_247|>": 128255,
    }  # fmt: skip
    assert {t: tok.convert_tokens_to_ids(t) for t in expected} == expected
    assert (tok.bos_token, tok.bos_token_id) == ("<|begin_of_text|>", 128000)
    assert (tok.eos_token, tok.eos_token_id) == ("<|eot_id|>", 128009)
    assert tok.pad_token is None and tok.pad_token_id is None  # the real tokenizer has none either
    assert (len(tok), tok.vocab_size) == (128256, 128000)
    assert tok.model_max_length == 131072
    record = json.loads((llama / "standin.json").read_text())
    assert record["trainer_pad_token"]["id"] == 128004


def test_encode_adds_bos_exactly_for_llama(qwen, llama):
    text = "Compute 12 + 30."
    q, lla = _tok(qwen), _tok(llama)
    assert q.encode(text) == q.encode(text, add_special_tokens=False)
    assert all(i < 151643 for i in q.encode(text))
    l_ids, l_plain = lla.encode(text), lla.encode(text, add_special_tokens=False)
    assert l_ids == [128000] + l_plain and 128000 not in l_plain
    assert lla(text)["input_ids"][0] == 128000
    assert lla.decode(l_ids, skip_special_tokens=True) == text


def test_real_pre_tokenizer_and_round_trip(qwen, llama):
    q, lla = _tok(qwen), _tok(llama)
    split = lambda tok, s: [p for p, _ in tok.backend_tokenizer.pre_tokenizer.pre_tokenize_str(s)]  # noqa: E731
    assert split(q, "x=12345") == ["x", "=", "1", "2", "3", "4", "5"]  # Qwen2: one digit per piece
    assert split(lla, "x=12345") == ["x", "=", "123", "45"]  # Llama 3: up to three digits
    text = "Janet’s ducks lay 16 eggs — café ∑ $\\frac{1}{2}$\n\n  done"
    for tok in (q, lla):
        assert tok.decode(tok.encode(text, add_special_tokens=False)) == text
    # the small BPE still compresses math text (not one token per byte)
    problem = "Convert the point $(0,3)$ in rectangular coordinates to polar coordinates."
    assert len(q.encode(problem)) < 0.6 * len(problem.encode())


def test_unused_ids_decode_without_error(qwen, llama):
    for path, first_special in ((qwen, 151643), (llama, 128000)):
        tok = _tok(path)
        model_vocab = json.loads((path / "config.json").read_text())["vocab_size"]
        assert len(tok) <= model_vocab and first_special < model_vocab
        gap = [1024, 5000, first_special - 1]
        assert tok.decode(gap) == "".join(unused_token(i) for i in gap)
        assert tok.convert_ids_to_tokens(gap) == [unused_token(i) for i in gap]
        assert tok.decode([40, *gap, 41]) == tok.decode([40]) + tok.decode(gap) + tok.decode([41])
        # no text encodes to an unused id
        assert all(i < 1024 or i >= first_special for i in tok.encode(tok.decode(gap)))
    q = _tok(qwen)
    assert q.decode([151700, 152063]) == ""  # model rows beyond the tokenizer, as in the real model


# ---------------------------------------------------------------------------------- model

def test_qwen_model_and_config(qwen):
    model = AutoModelForCausalLM.from_pretrained(str(qwen), local_files_only=True, dtype=torch.float32)
    cfg = model.config
    assert type(model).__name__ == "Qwen2ForCausalLM" and cfg.model_type == "qwen2"
    # kept real
    assert cfg.vocab_size == 152064 and cfg.max_position_embeddings == 4096
    assert cfg.tie_word_embeddings is False and cfg.bos_token_id == 151643 and cfg.eos_token_id == 151643
    assert cfg.rms_norm_eps == 1e-6 and cfg.use_sliding_window is False
    raw = json.loads((qwen / "config.json").read_text())
    assert raw["rope_theta"] == 10000 and raw["torch_dtype"] == "bfloat16"
    # shrunk: 7 query heads per key/value head as in the real 28/4, head_dim = hidden / heads
    assert (cfg.num_hidden_layers, cfg.num_attention_heads, cfg.num_key_value_heads) == (2, 7, 1)
    assert (cfg.hidden_size, cfg.intermediate_size, cfg.max_window_layers) == (56, 296, 2)
    assert model.model.layers[0].self_attn.q_proj.bias is not None  # Qwen2's q/k/v bias
    assert model.lm_head.weight.data_ptr() != model.model.embed_tokens.weight.data_ptr()
    ids = torch.tensor([[151644, 872, 198, 151645]])
    assert model(ids).logits.shape == (1, 4, 152064)
    real = load_family(QWEN)["config"]
    shrunk = json.loads((qwen / "standin.json").read_text())["shrunk"]
    assert {k for k in real if raw[k] != real[k]} == set(shrunk)


def test_llama_model_and_config(llama):
    model = AutoModelForCausalLM.from_pretrained(str(llama), local_files_only=True, dtype=torch.float32)
    cfg = model.config
    assert type(model).__name__ == "LlamaForCausalLM" and cfg.model_type == "llama"
    assert cfg.vocab_size == 128256 and cfg.max_position_embeddings == 131072
    assert cfg.tie_word_embeddings is True
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    assert cfg.bos_token_id == 128000 and list(cfg.eos_token_id) == [128001, 128008, 128009]
    raw = json.loads((llama / "config.json").read_text())
    assert raw["rope_theta"] == 500000.0
    assert raw["rope_scaling"] == {
        "factor": 32.0, "high_freq_factor": 4.0, "low_freq_factor": 1.0,
        "original_max_position_embeddings": 8192, "rope_type": "llama3",
    }  # fmt: skip
    assert (cfg.num_hidden_layers, cfg.num_attention_heads, cfg.num_key_value_heads) == (2, 3, 1)  # 24/8 = 3
    assert (cfg.hidden_size, cfg.head_dim, cfg.intermediate_size) == (60, 20, 160)
    assert model(torch.tensor([[128000, 40, 41]])).logits.shape == (1, 3, 128256)


def test_generation_config_is_real(qwen, llama):
    g = GenerationConfig.from_pretrained(str(qwen), local_files_only=True)
    assert (g.bos_token_id, g.eos_token_id, g.max_new_tokens) == (151643, 151643, 2048)
    g = GenerationConfig.from_pretrained(str(llama), local_files_only=True)
    assert (g.bos_token_id, list(g.eos_token_id)) == (128000, [128001, 128008, 128009])
    assert (g.do_sample, g.temperature, g.top_p) == (True, 0.6, 0.9)


def test_random_model_generates_and_decodes(llama):
    tok = _tok(llama)
    model = AutoModelForCausalLM.from_pretrained(str(llama), local_files_only=True, dtype=torch.float32)
    prompt = _ids(tok.apply_chat_template([{"role": "user", "content": USER}], add_generation_prompt=True,
                                          date_string="26 Jul 2024"))  # fmt: skip
    torch.manual_seed(0)
    out = model.generate(torch.tensor([prompt]), max_new_tokens=6, do_sample=True, pad_token_id=128004)
    assert out.shape[1] <= len(prompt) + 6
    assert isinstance(tok.decode(out[0, len(prompt):]), str)


def test_tokenizer_survives_save_pretrained(qwen, llama, tmp_path):
    text = "Solve $x^2=49$.<|im_end|>"
    for i, path in enumerate((qwen, llama)):
        tok = _tok(path)
        tok.save_pretrained(tmp_path / str(i))
        again = _tok(tmp_path / str(i))
        assert again.encode(text) == tok.encode(text)
        assert (len(again), again.eos_token_id, again.bos_token_id) == (len(tok), tok.eos_token_id, tok.bos_token_id)
        assert again.chat_template == tok.chat_template


# ---------------------------------------------------------------------------------- weights

def _digest(path: Path) -> str:
    return hashlib.sha256((path / "model.safetensors").read_bytes()).hexdigest()


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path):
    kw = {"hidden_size": 16, "num_layers": 1}
    a = make_standin(LLAMA, tmp_path / "a", seed=3, **kw)
    b = make_standin(LLAMA, tmp_path / "b", seed=3, **kw)
    c = make_standin(LLAMA, tmp_path / "c", seed=4, **kw)
    assert _digest(a) == _digest(b) != _digest(c)
    model = AutoModelForCausalLM.from_pretrained(str(a), local_files_only=True, dtype=torch.float32)
    assert model.model.embed_tokens.weight.dtype == torch.float32
    assert model.config.hidden_size == 24  # 3 heads x head_dim 8 (16 // 3 = 5 is below the minimum 8)
    assert torch.equal(model.model.norm.weight, torch.ones(24))  # RMSNorm weights start at one
    assert 0.015 < model.model.embed_tokens.weight.std().item() < 0.025  # N(0, 0.02^2)
    record = json.loads((a / "standin.json").read_text())
    assert record["seed"] == 3 and record["standin_of"] == LLAMA


def test_standin_of_a_local_model_dir_copies_its_tokenizer(qwen, tmp_path):
    out = make_standin(qwen, tmp_path / "local", hidden_size=16, num_layers=1, seed=1)
    for name in ("tokenizer.json", "tokenizer_config.json", "generation_config.json"):
        assert (out / name).read_bytes() == (qwen / name).read_bytes()
    record = json.loads((out / "standin.json").read_text())
    assert record["standin_of"] == str(qwen.resolve())
    assert record["shrunk"]["num_hidden_layers"] == [2, 1]
    assert record["tokenizer"]["copied_verbatim"] == ["tokenizer.json", "tokenizer_config.json"]
    model = AutoModelForCausalLM.from_pretrained(str(out), local_files_only=True, dtype=torch.float32)
    assert model.config.vocab_size == 152064 and model.config.num_attention_heads == 7


@pytest.mark.slow
def test_shipped_bpe_merges_are_reproducible():
    """The shipped merges are what train_bpe learns from the benchmark texts (~4 s per style)."""
    from skpo.models.standin import _BPE_DIR, bpe_corpus, train_bpe
    from skpo.paths import REPO_ROOT

    texts = bpe_corpus(REPO_ROOT / "data" / "benchmarks")
    for style in ("qwen2", "llama3"):
        shipped = json.loads((_BPE_DIR / f"{style}.json").read_text())
        assert train_bpe(texts, style)["merges"] == shipped["merges"]


# ---------------------------------------------------------------------------------- CLI

def test_cli_list_and_make(tmp_path, capsys):
    assert cli_main(["standin", "--list"]) == 0
    listed = capsys.readouterr().out
    assert QWEN in listed and LLAMA in listed and "meta-llama/Llama-3.2-3B-Instruct" in listed
    out = tmp_path / "s"
    assert cli_main(["standin", "--like", LLAMA, "--out", str(out), "--seed", "2", "--hidden-size", "16", "--layers", "1"]) == 0
    assert json.loads((out / "standin.json").read_text())["seed"] == 2
    assert "wrote" in capsys.readouterr().out


def test_cli_errors(tmp_path, capsys):
    assert cli_main(["standin", "--like", "gpt-17", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "gpt-17" in err and QWEN in err and LLAMA in err
    assert not (tmp_path / "x").exists()

    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "keep.txt").write_text("mine")
    assert cli_main(["standin", "--like", QWEN, "--out", str(busy)]) == 2
    err = capsys.readouterr().err.strip()
    assert "not empty" in err and "--force" in err and (busy / "keep.txt").read_text() == "mine"

    not_model = tmp_path / "notmodel"
    not_model.mkdir()
    assert cli_main(["standin", "--like", str(not_model), "--out", str(tmp_path / "y")]) == 2
    err = capsys.readouterr().err.strip()
    assert "not a model directory" in err and "config.json" in err

    assert cli_main(["standin", "--out", str(tmp_path / "z")]) == 2
    assert "--like" in capsys.readouterr().err

    # a model directory transformers cannot build: one-line error, no half-written output
    odd = tmp_path / "odd"
    odd.mkdir()
    (odd / "config.json").write_text(json.dumps(
        {"model_type": "no-such-arch", "hidden_size": 64, "num_attention_heads": 4, "num_hidden_layers": 2,
         "intermediate_size": 128}))  # fmt: skip
    (odd / "tokenizer_config.json").write_text("{}")
    assert cli_main(["standin", "--like", str(odd), "--out", str(tmp_path / "w")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no-such-arch" in err
    assert not (tmp_path / "w").exists()
