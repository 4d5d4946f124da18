"""The warm start: examples and rows, the SFT term against a hand-computed NLL, a short run
through the CLI, validation through the evaluation runner, the schedule, reproducibility."""

from __future__ import annotations

import json
import random

import pytest
import torch

import skpo.commands.warmstart_training as ws
from skpo.commands.warmstart import main
from skpo.commands.warmstart_training import WarmstartConfig, draft_inputs, make_example, train
from skpo.models.loading import load_policy, load_tokenizer, tiny_arith_dir
from skpo.models.tiny import build_tiny_model
from skpo.models.tokenizer import build_tokenizer
from skpo.rewards.arith import check_answer
from skpo.tasks.arith import ArithConfig, ArithProblem, solution_text
from skpo.tasks.templates import plain_input_ids, response_ids
from skpo.training.schedule import lr_factor

SHORT = ["--steps", "40", "--batch-size", "16", "--log-every", "0", "--threads", "1"]


@pytest.fixture(autouse=True)
def _restore_torch_settings():
    """``train`` sets threads and deterministic mode process-wide; give the next test back its own."""
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    fill = torch.utils.deterministic.fill_uninitialized_memory
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(deterministic)
    torch.utils.deterministic.fill_uninitialized_memory = fill


def test_examples_put_the_loss_on_the_solution_only():
    tok = build_tokenizer()
    p = ArithProblem.from_question("17+5-9+11")
    target = response_ids(tok, p)
    rng = random.Random(0)
    for kind in ("plain", "skip_correct", "skip_flawed"):
        for _ in range(20):
            ex = make_example(p, kind, tok, rng)
            assert ex.response_ids == target  # the target is always the correct solution
            assert ex.loss_mask == [0] * len(ex.prompt_ids) + [1] * len(target)
            context = tok.decode(ex.prompt_ids)
            assert context.endswith("Q: 17+5-9+11\nA:\n")
            draft = context[: -len("Q: 17+5-9+11\nA:\n")]
            if kind == "plain":
                assert draft == ""
            elif kind == "skip_correct":
                assert draft and solution_text(p).startswith(draft)
            else:  # the flawed draft always shows its wrong number
                assert draft and not solution_text(p).startswith(draft)


def _examples(tok):
    rng = random.Random(1)
    problems = [ArithProblem.from_question(q) for q in ("3+4", "12+30-7", "41-15+22+8")]
    return [make_example(p, kind, tok, rng) for p, kind in zip(problems, ("plain", "skip_correct", "skip_flawed"))]


def test_batches_are_rows_with_the_context_as_prompt():
    tok = build_tokenizer()
    examples = _examples(tok)
    rows = ws.examples_to_rows(examples, tok.pad_token_id)
    assert rows.prompt_ids == [e.prompt_ids for e in examples]
    lengths = [len(e.response_ids) for e in examples]
    assert rows.response_ids.shape == (3, max(lengths))
    assert rows.response_mask.sum(-1).tolist() == lengths
    for b, e in enumerate(examples):
        assert rows.response_ids[b, : lengths[b]].tolist() == e.response_ids
        assert (rows.response_ids[b, lengths[b] :] == tok.pad_token_id).all()


def test_sft_loss_is_the_token_mean_nll_of_the_response_tokens():
    """The ``sft`` term through the trainer's forward equals −Σ log p(response token) / #response
    tokens, computed here one unpadded sequence at a time; with responses of 11, 23 and 32
    tokens it is not the mean of the per-row means (that would be ``seq-mean-token-mean``)."""
    tok = build_tokenizer()
    torch.manual_seed(0)
    model = build_tiny_model(tok, seed=3).eval()
    examples = _examples(tok)
    rows = ws.examples_to_rows(examples, tok.pad_token_id)
    loss = ws.sft_loss(model, rows, tok.pad_token_id)

    nll_sums, counts = [], []
    with torch.no_grad():
        for e in examples:
            ids = torch.tensor([e.input_ids])
            log_p = torch.log_softmax(model(input_ids=ids).logits[0].double(), -1)  # [L, V]
            n_ctx = len(e.prompt_ids)
            # response token j sits at n_ctx + j and is predicted at position n_ctx + j - 1
            picked = [log_p[n_ctx + j - 1, tok_id] for j, tok_id in enumerate(e.response_ids)]
            nll_sums.append(-sum(picked).item())
            counts.append(len(picked))
    token_mean = sum(nll_sums) / sum(counts)
    seq_mean = sum(s / n for s, n in zip(nll_sums, counts)) / len(counts)
    assert counts == [11, 23, 32]
    assert loss.item() == pytest.approx(token_mean, rel=1e-5)
    assert abs(token_mean - seq_mean) > 1e-3  # the check above can tell the two apart
    loss.backward()
    assert model.model.embed_tokens.weight.grad.abs().sum() > 0


def test_short_warmstart_lowers_the_loss_saves_and_loads(tmp_path):
    out = tmp_path / "ws"
    assert main(["--out", str(out), "--seed", "3", *SHORT, "--eval-problems", "4", "--eval-k", "2"]) == 0
    record = json.loads((out / "warmstart.json").read_text())
    assert record["steps"] == 40 and record["seed"] == 3
    assert record["config"]["batch_size"] == 16
    # from ~ln(263) = 5.6 at random init; by step 40 the model has learned the format
    assert record["losses"][0] > 5.0
    assert sum(record["losses"][-5:]) / 5 < 0.6 * record["losses"][0]
    assert set(record["metrics"]) >= {"plain", "skip_correct_draft", "skip_flawed_draft"}
    assert record["metrics"]["plain"]["n_problems"] == 4
    model = load_policy(out)
    tokenizer = load_tokenizer(out)
    p = ArithProblem.from_question("3+4")
    ids = torch.tensor([plain_input_ids(tokenizer, p)])
    generated = model.generate(ids, max_new_tokens=8, do_sample=False)
    assert generated.shape[1] > ids.shape[1]
    assert isinstance(check_answer(tokenizer.decode(generated[0]), p), bool)


def test_validation_through_the_runner_on_the_shipped_model():
    """Validation problems and skip inputs go through the evaluation runner; the shipped model
    (plain avg@8 ≈ 0.32 on the held-out set) gets a rate strictly inside (0, 1)."""
    path = tiny_arith_dir()
    model, tok = load_policy(path), load_tokenizer(path)
    problems = ws.validation_problems(ArithConfig(), 8, seed=0)
    m = ws.evaluate_avg_at_k(model, tok, problems, k=4, seed=0)
    assert (m.k, m.n_problems, sum(m.histogram), len(m.histogram)) == (4, 8, 8, 5)
    assert 0.0 < m.avg_at_k < 1.0 and m.avg_at_k <= m.pass_at_k <= 1.0
    assert m.avg_at_k == sum(j * n for j, n in enumerate(m.histogram)) / (8 * 4)
    assert m == ws.evaluate_avg_at_k(model, tok, problems, k=4, seed=0)  # seeded per problem
    every = ws.evaluate_all(model, tok, problems[:4], k=2)
    assert set(every) == {"plain", "skip_correct_draft", "skip_flawed_draft"}
    for name, r in every.items():
        assert r["n_problems"] == 4 and 0.0 <= r["avg_at_k"] <= 1.0, name


@pytest.mark.slow(reason="the warm start trains in the quick test_short_warmstart_lowers_the_loss_saves_and_loads")
def test_same_seed_same_weights():
    config = WarmstartConfig(seed=5, steps=12, batch_size=8, threads=1, target_avg=None)
    a = train(config, log_every=0).model.state_dict()
    b = train(config, log_every=0).model.state_dict()
    c = train(WarmstartConfig(seed=6, steps=12, batch_size=8, threads=1, target_avg=None), log_every=0).model.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_draft_inputs_hold_correct_and_flawed_first_lines():
    tok = build_tokenizer()
    p = ArithProblem.from_question("37+48-12+5")
    good = tok.decode(draft_inputs(tok, [p], flawed=False)[0])
    bad = tok.decode(draft_inputs(tok, [p], flawed=True)[0])
    assert good == "37+48=85\nQ: 37+48-12+5\nA:\n"
    first = bad.split("\n")[0]
    assert first.startswith("37+48=") and first != "37+48=85"
    assert bad.endswith("\nQ: 37+48-12+5\nA:\n")
    assert ArithConfig().max_ops >= 2


def test_validation_checks_are_recorded_and_stop_at_the_target(monkeypatch):
    base = dict(seed=1, steps=30, batch_size=8, check_every=10, val_problems=4, val_k=2, threads=1)
    run = train(WarmstartConfig(target_avg=1.0, **base), log_every=0)  # unreachable target
    assert [v["step"] for v in run.validation] == [10, 20, 30]
    assert run.steps == 30 and not run.reached_target
    assert all(0.0 <= v["avg_at_k"] <= 1.0 for v in run.validation)

    seen: list[int] = []

    def fake_eval(model, tokenizer, problems, k, seed):
        seen.append(len(problems))
        avg = 0.1 * len(seen)  # 0.1, 0.2, 0.3, ...
        return ws.AvgAtK(k=k, n_problems=len(problems), avg_at_k=avg, pass_at_k=avg, frac_mixed=avg, histogram=[])

    monkeypatch.setattr(ws, "evaluate_avg_at_k", fake_eval)
    run = train(WarmstartConfig(target_avg=0.2, **base), log_every=0)
    assert run.reached_target and run.steps == 20 and seen == [4, 4]


def test_schedule_is_the_trainers_cosine_with_a_floor():
    # default run: cap 2000, 100 warm-up steps; a 40-step run warms up over half of it
    assert ws.schedule_axis(WarmstartConfig()) == (2000, 100)
    assert ws.schedule_axis(WarmstartConfig(steps=40)) == (40, 20)
    assert ws.schedule_axis(WarmstartConfig(steps=None, minutes=1.0)) == (1000, 50)
    f = lambda step: lr_factor(step, 2000, 100, "cosine", 0.1)  # noqa: E731
    assert f(0) == pytest.approx(0.01)  # (0 + 1) / 100
    assert f(99) == f(100) == 1.0
    assert f(1050) == pytest.approx(0.1 + 0.9 * 0.5)  # halfway through the decay: cos(π/2) = 0
    assert f(2000) == pytest.approx(0.1)  # the floor, min_lr_ratio
