"""OAR's probe (``skpo.models.answer_probe``): the answer readout modes and both importance kinds,
checked against direct computations on a tiny random model."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from transformers import Qwen2Config, Qwen2ForCausalLM

from skpo.models.answer_probe import oar_importance

MARKER = [7, 8]


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=40, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                      num_key_value_heads=1, max_position_embeddings=64, initializer_range=0.3, tie_word_embeddings=False)
    return Qwen2ForCausalLM(cfg).float().eval()


@pytest.mark.parametrize("answer_mode", ["answer_mean", "last"])
def test_oar_p_equals_a_direct_perturbation(model, answer_mode):
    prompt, response = [3, 4, 5], [11, 12, 13, 7, 8, 20, 21]  # reasoning 11 12 13, marker, answer 20 21
    imp, scored = oar_importance(model, [prompt], [response], MARKER, mode="oar_p", pad_id=0, answer_mode=answer_mode)
    ids = torch.tensor([prompt + response])
    a0, a1 = len(prompt) + 5, len(prompt) + 7  # answer tokens in probe coordinates

    def readout(x):
        logits = model(input_ids=x).logits.float()
        return logits[:, a0 - 1 : a1 - 1].mean(1) if answer_mode == "answer_mean" else logits[:, a1 - 2]

    with torch.no_grad():
        p0 = F.log_softmax(readout(ids), -1)
        expected = []
        for t in range(3):
            masked = ids.clone()
            masked[0, len(prompt) + t] = 0
            lp = F.log_softmax(readout(masked), -1)
            expected.append(float((p0.exp() * (p0 - lp)).sum()))
    assert scored[0].tolist() == [1, 1, 1, 0, 0, 0, 0]
    assert imp[0, :3].tolist() == pytest.approx(expected, rel=1e-5, abs=1e-9)
    assert imp[0, 3:].abs().sum() == 0


def test_modes_differ_and_rows_without_an_answer_are_not_scored(model):
    prompt, response = [3, 4, 5], [11, 12, 13, 7, 8, 20, 21, 22]
    mean, _ = oar_importance(model, [prompt], [response], MARKER, mode="oar_g", answer_mode="answer_mean",
                             generator=torch.Generator().manual_seed(0))
    last, _ = oar_importance(model, [prompt], [response], MARKER, mode="oar_g", answer_mode="last",
                             generator=torch.Generator().manual_seed(0))
    assert not torch.allclose(mean, last)
    none, scored = oar_importance(model, [prompt], [[11, 12, 13]], MARKER, mode="oar_p")
    assert scored.sum() == 0 and none.sum() == 0
    with pytest.raises(ValueError, match="answer_mode"):
        oar_importance(model, [prompt], [response], MARKER, mode="oar_p", answer_mode="first")


def test_answer_mode_is_a_validated_method_setting():
    from skpo.methods import MethodError, resolve_method

    assert resolve_method("oar_p", {"token_weight_params": {"answer_mode": "last"}}).token_weight_params["answer_mode"] == "last"
    with pytest.raises(MethodError, match="answer_mode"):
        resolve_method("oar", {"token_weight_params": {"answer_mode": "first"}})
