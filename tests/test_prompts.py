"""Chat templates wherever tokens are built: prompt ids, stop tokens, and SKPO's skip input on the
stand-ins of both paper families."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from transformers import BatchEncoding

from skpo.models.loading import load_tokenizer, tiny_arith_dir
from skpo.tasks.prompts import as_token_ids, chat_ids, end_of_turn_ids, prompt_head_length, prompt_ids, stop_token_ids

QWEN, LLAMA = "qwen2.5-math-7b", "llama-3.2-3b-instruct"


@pytest.mark.parametrize(
    "value",
    [[5, 6, 7], (5, 6, 7), [[5, 6, 7]], {"input_ids": [5, 6, 7], "attention_mask": [1, 1, 1]},
     BatchEncoding({"input_ids": [5, 6, 7], "attention_mask": [1, 1, 1]}), BatchEncoding({"input_ids": [[5, 6, 7]]}),
     torch.tensor([5, 6, 7]), torch.tensor([[5, 6, 7]]), np.array([5, 6, 7]), {"input_ids": torch.tensor([[5, 6, 7]])}],
    ids=["list", "tuple", "nested", "dict", "batchencoding", "batchencoding-nested", "tensor", "tensor-2d", "numpy", "dict-tensor"],
)
def test_every_return_shape_of_apply_chat_template_gives_the_same_ids(value):
    assert as_token_ids(value) == [5, 6, 7]


@pytest.mark.parametrize("value", [[[1, 2], [3, 4]], "text", {"attention_mask": [1]}, [1.5, 2.0]])
def test_what_is_not_one_sequence_is_refused(value):
    with pytest.raises(TypeError):
        as_token_ids(value)


@pytest.mark.parametrize("family", [QWEN, LLAMA])
def test_chat_ids_equal_the_rendered_text_encoded_whatever_the_call_returns(family, standin, monkeypatch):
    tok = load_tokenizer(standin(family))
    messages = [{"role": "user", "content": "What is $1+1$? Put it in \\boxed{}."}]
    rendered = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    want = tok.encode(rendered, add_special_tokens=False)
    assert chat_ids(tok, messages) == want == prompt_ids(tok, messages)
    # whatever this transformers version returns, and what older/newer ones do
    for shape in (lambda ids: ids, lambda ids: BatchEncoding({"input_ids": ids}), lambda ids: torch.tensor([ids])):
        monkeypatch.setattr(type(tok), "apply_chat_template", lambda self, *a, shape=shape, **k: shape(list(want)))
        assert chat_ids(tok, messages) == want


def test_plain_prompts_get_the_tokenizers_own_special_tokens(standin):
    llama, qwen = load_tokenizer(standin(LLAMA)), load_tokenizer(standin(QWEN))
    msg = [{"role": "user", "content": "2+2"}]
    assert prompt_ids(llama, msg, chat=False)[0] == 128000  # Llama 3 prepends <|begin_of_text|>
    assert prompt_ids(qwen, msg, chat=False) == qwen.encode("2+2", add_special_tokens=False)  # Qwen adds nothing
    tiny = load_tokenizer(tiny_arith_dir())
    with pytest.raises(ValueError, match="no chat template"):
        chat_ids(tiny, msg)


def test_stop_tokens_and_end_of_turn(standin):
    from skpo.models.loading import load_policy

    qwen_dir, llama_dir = standin(QWEN), standin(LLAMA)
    qwen, llama = load_tokenizer(qwen_dir), load_tokenizer(llama_dir)
    assert end_of_turn_ids(qwen) == [151645] and end_of_turn_ids(llama) == [128009]
    assert end_of_turn_ids(load_tokenizer(tiny_arith_dir())) == []
    q_model, l_model = load_policy(qwen_dir), load_policy(llama_dir)
    # Qwen2.5-Math's EOS is <|endoftext|>; a chat answer ends with <|im_end|>
    assert stop_token_ids(qwen, q_model) == [151643] and stop_token_ids(qwen, q_model, chat=True) == [151643, 151645]
    assert stop_token_ids(llama, l_model, chat=True) == [128001, 128008, 128009]


def test_prompt_head_is_the_bos_token(standin):
    llama, qwen = load_tokenizer(standin(LLAMA)), load_tokenizer(standin(QWEN))
    msg = [{"role": "user", "content": "hi"}]
    assert prompt_head_length(llama, chat_ids(llama, msg)) == 1
    assert prompt_head_length(qwen, chat_ids(qwen, msg)) == 0
    assert prompt_head_length(llama, []) == 0


class _ScriptedEngine:
    """Records every prompt; returns fixed tokens (segments stop at the budget)."""

    def __init__(self, answer):
        self.calls = []
        self.answer = answer

    def generate(self, prompts, n, params, max_new_tokens=None):
        from skpo.engines.engine import Completion

        self.calls.append([list(p) for p in prompts])
        budgets = max_new_tokens or [params.max_new_tokens] * len(prompts)
        return [[Completion(self.answer[:b], [-1.0] * len(self.answer[:b]), "length") for _ in range(n)] for b in budgets]


@pytest.mark.parametrize("family", [QWEN, LLAMA])
def test_skpo_skip_input_keeps_bos_first_then_segment_then_the_templated_prompt(family, standin, tmp_path):
    """The reading of U1 with a chat template: the tokens a model requires at the very start
    (BOS) stay first; then the segment; then the whole chat-templated prompt, header included,
    ending at the assistant turn — from where the model writes a fresh answer."""
    from skpo.algorithms import LengthTracker
    from skpo.engines.engine import SamplingParams
    from skpo.rollout.skpo_rollout import SkpoPrompt, SkpoRolloutParams, skpo_rollout
    from skpo.tasks.dataset import DatasetSpec
    from skpo.tasks.sources import DatasetSource

    tok = load_tokenizer(standin(family))
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"prompt": [{"role": "user", "content": "What is 6*7?"}], "answer": "42"}) + "\n")
    (item,) = DatasetSource(tok, DatasetSpec(path=str(data))).items
    q = list(item.prompt_ids)
    segment = tok.encode("First, 6*7", add_special_tokens=False)
    engine = _ScriptedEngine(segment + tok.encode(" = 42", add_special_tokens=False))
    skpo_rollout(engine, [SkpoPrompt(item.key, item.prompt_ids, item.head)], LengthTracker(initial=2 * len(segment) * 6 / 2),
                 SamplingParams(max_new_tokens=40, seed=0), lambda i, ids: 1.0, torch.Generator().manual_seed(0),
                 SkpoRolloutParams(split="fixed"), group_size=2, step=1, pad_token_id=0)
    (segment_call, downstream_call) = engine.calls
    assert segment_call == [q]
    (down,) = downstream_call
    s = down[: len(down) - len(q)] if family == QWEN else down[1 : len(down) - len(q) + 1]
    assert s and s == engine.answer[: len(s)]  # the selected segment: a prefix of the sampled answer
    if family == LLAMA:
        assert q[0] == 128000 and q[1] == tok.convert_tokens_to_ids("<|start_header_id|>")
        assert down == [128000] + s + q[1:]
    else:
        assert q[0] == tok.convert_tokens_to_ids("<|im_start|>")
        assert down == s + q
    tail = {QWEN: "<|im_start|>assistant\n", LLAMA: "<|start_header_id|>assistant<|end_header_id|>\n\n"}[family]
    assert tok.decode(q).endswith(tail)  # q ends where the answer starts
