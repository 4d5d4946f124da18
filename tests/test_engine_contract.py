"""The Engine contract, run over every engine present: the Hugging Face engine always, the
vLLM engine on the fake ``vllm`` (``tests/fakes/vllm``: exactly the API surface the engine
uses), and the vLLM engine on the real ``vllm`` wherever it imports and a GPU is present
(``scripts/gpu_check.sh`` runs this file there).

Every engine samples from the shipped tiny model; its log-probs are checked against a
teacher-forced float32 forward of the same weights (tolerance per engine: 1e-4 on the CPU;
bf16 vLLM 0.05 mean absolute) — before top-p, or renormalised over the top-p nucleus for an
engine that reports them after it (``logprobs_after_top_p``: vLLM's ``processed_logprobs``).
The vLLM engine's own behaviours (in-process sync, sleep level 2, context cap, finish reasons)
are pinned in ``tests/test_vllm_engine.py``.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

import pytest
import torch

from skpo.engines import Engine, HFEngine, SamplingParams
from skpo.models.loading import load_policy, load_tokenizer, tiny_arith_dir

FAKES = Path(__file__).resolve().parent / "fakes"


def _real_vllm_available() -> bool:
    return importlib.util.find_spec("vllm") is not None and torch.cuda.is_available()


@pytest.fixture(scope="module")
def reference():
    model = load_policy(tiny_arith_dir())
    tok = load_tokenizer(tiny_arith_dir())
    return model, tok, HFEngine(model, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)


def _fake_vllm(monkeypatch):
    """The fake module, imported as ``vllm`` for the test (monkeypatch restores the real one)."""
    spec = importlib.util.spec_from_file_location("vllm", FAKES / "vllm" / "__init__.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "vllm", module)
    spec.loader.exec_module(module)
    return module


@pytest.fixture()
def fake_vllm(monkeypatch):
    return _fake_vllm(monkeypatch)


# the Hugging Face engine on a GPU too where there is one (scripts/gpu_check.sh)
ENGINES = ["hf", "vllm-fake"] + (["hf-cuda"] if torch.cuda.is_available() else []) + (["vllm"] if _real_vllm_available() else [])


@pytest.fixture(params=ENGINES)
def engine(request, reference, monkeypatch):
    model, tok, _ = reference
    if request.param in ("hf", "hf-cuda"):
        on_gpu = request.param == "hf-cuda"
        decoder = load_policy(tiny_arith_dir()).to("cuda") if on_gpu else model  # float32 on the GPU: 1e-3
        return HFEngine(decoder, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
                        decode=lambda t: tok.decode(t, skip_special_tokens=True)), 1e-3 if on_gpu else 1e-4
    from skpo.engines.vllm_engine import VLLMEngine

    if request.param == "vllm-fake":
        _fake_vllm(monkeypatch)
        return VLLMEngine(str(tiny_arith_dir()), dtype="float32", sleep=True), 1e-4
    return VLLMEngine(str(tiny_arith_dir()), dtype="bfloat16", gpu_memory_utilization=0.2, sleep=False), 5e-2


def _prompts(tok) -> list[list[int]]:
    texts = ["12+7-3=", "4+4+4+4=", "50-25+1=", "9-1="]
    return [tok.encode(t, add_special_tokens=False) for t in texts]


def test_is_an_engine(engine):
    assert isinstance(engine[0], Engine)


def test_shapes_budgets_and_logprobs_equal_a_teacher_forced_forward(engine, reference):
    eng, tol = engine
    model, tok, _ref = reference
    prompts = _prompts(tok)
    params = SamplingParams(temperature=0.8, top_p=0.95, max_new_tokens=12, seed=3)
    out = eng.generate(prompts, 3, params, max_new_tokens=[12, 5, 0, 8])
    assert [len(row) for row in out] == [3, 3, 3, 3]
    for row, budget in zip(out, [12, 5, 0, 8]):
        for c in row:
            assert len(c.token_ids) == len(c.logprobs) <= budget
            assert c.finish_reason in ("stop", "length")
            if c.finish_reason == "length":
                assert len(c.token_ids) == budget
            else:
                assert c.token_ids[-1] == tok.eos_token_id and c.stop_reason == tok.eos_token_id
    flat = [(prompts[i], c) for i, row in enumerate(out) for c in row if c.token_ids]
    scored = teacher_forced(model, [p for p, _ in flat], [list(c.token_ids) for _, c in flat], 0.8,
                            top_p=0.95 if getattr(eng, "logprobs_after_top_p", False) else 1.0)
    errors = torch.tensor([abs(a - b) for (_, c), s in zip(flat, scored) for a, b in zip(c.logprobs, s)])
    assert errors.mean() <= tol and (tol > 1e-3 or errors.max() <= 10 * tol)


@torch.no_grad()
def teacher_forced(model, prompts, completions, temperature, top_p=1.0) -> list[list[float]]:
    """``log_softmax(logits / T)`` of each completion token, renormalised over the top-p
    nucleus (the smallest set of most likely tokens whose mass reaches ``top_p``) when ``top_p < 1``."""
    out = []
    for prompt, completion in zip(prompts, completions):
        logits = model(torch.tensor([prompt + completion], device=next(model.parameters()).device)).logits
        logp = torch.log_softmax(logits[0, len(prompt) - 1 : -1].float() / temperature, dim=-1).cpu()
        lps = logp.gather(-1, torch.tensor(completion).unsqueeze(-1)).squeeze(-1)
        if top_p < 1.0:
            probs = logp.exp().sort(dim=-1, descending=True).values
            nucleus = (probs * ((probs.cumsum(-1) - probs) < top_p)).sum(-1)
            lps = lps - nucleus.log()
        out.append(lps.tolist())
    return out


def test_seeds_reproduce_and_prompts_are_independent(engine, reference):
    eng, _ = engine
    _, tok, _ = reference
    prompts = _prompts(tok)
    params = SamplingParams(temperature=1.0, max_new_tokens=10, seed=11)
    a = eng.generate(prompts, 2, params)
    b = eng.generate(prompts, 2, params)
    assert [[c.token_ids for c in row] for row in a] == [[c.token_ids for c in row] for row in b]
    other = eng.generate(prompts, 2, SamplingParams(temperature=1.0, max_new_tokens=10, seed=12))
    assert [[c.token_ids for c in row] for row in a] != [[c.token_ids for c in row] for row in other]
    # a prompt's samples depend only on its prompt seed: alone, with its seed, they are the same
    from skpo.engines.engine import prompt_seeds

    seeds = prompt_seeds(11, len(prompts))
    alone = eng.generate([prompts[2]], 2, SamplingParams(temperature=1.0, max_new_tokens=10, seed=[seeds[2]]))
    assert [c.token_ids for c in alone[0]] == [c.token_ids for c in a[2]]


def test_greedy_and_ignore_eos(engine, reference):
    eng, _ = engine
    model, tok, _ = reference
    prompts = _prompts(tok)
    greedy = eng.generate(prompts, 2, SamplingParams(temperature=0.0, max_new_tokens=8))
    for i, row in enumerate(greedy):
        assert row[0].token_ids == row[1].token_ids
        ids = torch.tensor([prompts[i] + row[0].token_ids[:-1]])
        with torch.no_grad():
            logits = model(ids).logits[0, len(prompts[i]) - 1 :]
        assert logits.argmax(-1).tolist() == row[0].token_ids
    full = eng.generate(prompts, 2, SamplingParams(temperature=1.0, max_new_tokens=9, seed=1, ignore_eos=True))
    assert all(len(c.token_ids) == 9 and c.finish_reason == "length" for row in full for c in row)


def test_stop_token_ids_are_kept(engine, reference):
    eng, _ = engine
    _, tok, _ = reference
    newline = tok.encode("\n", add_special_tokens=False)[-1]
    out = eng.generate(_prompts(tok), 4, SamplingParams(temperature=1.0, max_new_tokens=40, seed=5,
                                                       stop_token_ids=[newline]))
    stopped = [c for row in out for c in row if c.finish_reason == "stop"]
    assert stopped
    for c in stopped:
        assert c.token_ids[-1] in (newline, tok.eos_token_id) and c.stop_reason == c.token_ids[-1]
        assert newline not in c.token_ids[:-1]


# --------------------------------------------------------------------- the vLLM mapping (fake)
def test_vllm_engine_asks_vllm_for_what_the_protocol_needs(fake_vllm):
    from skpo.engines.vllm_engine import VLLMEngine

    eng = VLLMEngine(str(tiny_arith_dir()), dtype="float32", gpu_memory_utilization=0.4, max_model_len=256)
    init = eng.llm.calls[0][1]
    assert init["enable_prefix_caching"] is True and init["logprobs_mode"] == "processed_logprobs"
    assert init["distributed_executor_backend"] == "external_launcher" and init["max_model_len"] == 256
    eng.generate([[5, 6, 7], [8, 9]], 3, SamplingParams(temperature=0.7, top_p=0.9, max_new_tokens=6, seed=2),
                 max_new_tokens=[4, 0])
    (_kind, requests), = [c for c in eng.llm.calls if c[0] == "generate"]
    assert len(requests) == 1  # a zero budget never reaches vLLM (it refuses max_tokens=0)
    prompt, sp = requests[0]
    assert prompt == {"prompt_token_ids": [5, 6, 7]}
    assert (sp.n, sp.max_tokens, sp.temperature, sp.top_p, sp.logprobs) == (3, 4, 0.7, 0.9, 0)
    assert 0 <= sp.seed < 2**62  # vLLM seeds sample j with seed + j in an int64


def test_the_fake_refuses_what_vllm_refuses(fake_vllm):
    with pytest.raises(TypeError):
        fake_vllm.SamplingParams(n=1, max_new_tokens=3)  # vLLM's name is max_tokens
    for bad in (dict(max_tokens=0), dict(temperature=2.5), dict(temperature=0.0, n=2)):
        with pytest.raises(fake_vllm.VLLMValidationError):
            fake_vllm.SamplingParams(**bad)
    assert not issubclass(fake_vllm.VLLMValidationError, ValueError)


def test_training_with_the_vllm_engine(fake_vllm, tmp_path):
    """``rollout.engine: vllm`` trains; after every step the engine holds the policy's weights,
    loaded while its KV cache still sleeps; rollouts gather no weights for it."""
    import contextlib

    from skpo.config import load_config
    from skpo.training.setup import build_trainer

    cfg = load_config(None, ["rollout.engine=vllm", "train.method=grpo", "train.steps=2", "train.prompts_per_step=3",
                             "method.group_size=3", "rollout.max_new_tokens=16", "train.lr=1e-3", "eval.every=0",
                             "log.progress=false", "log.tensorboard=false", "data.arith.pool_size=20",
                             f"log.out_dir={tmp_path}"])
    trainer = build_trainer(cfg)
    assert isinstance(trainer._decoding_weights(), contextlib.nullcontext)
    llm = trainer.engine.llm
    start = {k: v.clone() for k, v in trainer.policy.state_dict().items()}
    for step in range(2):
        metrics = trainer.train_step(step)
        trainer.state.step += 1
        engine_state = llm.model.state_dict()
        assert all(torch.equal(engine_state[k], v.cpu()) for k, v in trainer.policy.state_dict().items())  # (the fake decodes on the CPU)
        assert metrics["tokens/decoded"] > 0 and metrics["time/weight_sync"] >= 0
        assert metrics["rollout/cut_by_context"] == 0
    assert any(not torch.equal(start[k], v) for k, v in trainer.policy.state_dict().items())
    names = [c[0] for c in llm.calls]
    assert names.count("sleep") == 2 and {c[1] for c in llm.calls if c[0] == "sleep"} == {2}
    assert [c[1] for c in llm.calls if c[0] == "wake_up"] == [["weights"], ["kv_cache"], ["weights"]]
    trainer.close()
