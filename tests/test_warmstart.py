"""The warm start: a short run through the real code path, loss masking, reproducibility."""

from __future__ import annotations

import json
import random

import torch

from skpo.models.loading import load_policy, load_tokenizer
from skpo.models.tokenizer import build_tokenizer
from skpo.rewards.arith import check_answer
from skpo.tasks.arith import ArithConfig, ArithProblem, solution_text
from skpo.tasks.templates import plain_input_ids, response_ids
from skpo.warmstart import WarmstartConfig, draft_inputs, main, make_example, train

SHORT = ["--steps", "40", "--batch-size", "16", "--log-every", "0"]


def test_examples_put_the_loss_on_the_solution_only():
    tok = build_tokenizer()
    p = ArithProblem.from_question("17+5-9+11")
    target = response_ids(tok, p)
    rng = random.Random(0)
    for kind in ("plain", "skip_correct", "skip_flawed"):
        for _ in range(20):
            ex = make_example(p, kind, tok, rng)
            n_ctx = ex.loss_mask.index(1)
            assert ex.loss_mask == [0] * n_ctx + [1] * len(target)
            assert ex.input_ids[n_ctx:] == target  # the target is always the correct solution
            context = tok.decode(ex.input_ids[:n_ctx])
            assert context.endswith("Q: 17+5-9+11\nA:\n")
            draft = context[: -len("Q: 17+5-9+11\nA:\n")]
            if kind == "plain":
                assert draft == ""
            elif kind == "skip_correct":
                assert draft and solution_text(p).startswith(draft)
            else:  # the flawed draft always shows its wrong number
                assert draft and not solution_text(p).startswith(draft)


def test_short_warmstart_runs_saves_and_loads(tmp_path):
    out = tmp_path / "ws"
    assert main(["--out", str(out), "--seed", "3", *SHORT, "--eval-problems", "4", "--eval-k", "2"]) == 0
    record = json.loads((out / "warmstart.json").read_text())
    assert record["steps"] == 40 and record["seed"] == 3
    assert record["config"]["batch_size"] == 16
    assert record["losses"][-1] < 0.6 * record["losses"][0]  # loss decreased
    assert set(record["metrics"]) >= {"plain", "skip_correct_draft", "skip_flawed_draft"}
    assert record["metrics"]["plain"]["n_problems"] == 4
    model = load_policy(out)
    tokenizer = load_tokenizer(out)
    p = ArithProblem.from_question("3+4")
    ids = torch.tensor([plain_input_ids(tokenizer, p)])
    generated = model.generate(ids, max_new_tokens=8, do_sample=False)
    assert generated.shape[1] > ids.shape[1]
    assert isinstance(check_answer(tokenizer.decode(generated[0]), p), bool)


def test_same_seed_same_weights():
    config = WarmstartConfig(seed=5, steps=25, batch_size=8)
    a = train(config, log_every=0).model.state_dict()
    b = train(config, log_every=0).model.state_dict()
    c = train(WarmstartConfig(seed=6, steps=25, batch_size=8), log_every=0).model.state_dict()
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
    import skpo.warmstart as ws

    base = dict(seed=1, steps=30, batch_size=8, check_every=10, val_problems=4, val_k=2)
    run = train(WarmstartConfig(target_avg=1.0, **base), log_every=0)  # unreachable target
    assert [v["step"] for v in run.validation] == [10, 20, 30]
    assert run.steps == 30 and not run.reached_target

    seen: list[int] = []

    def fake_eval(model, tokenizer, problems, k, seed):
        seen.append(len(problems))
        avg = 0.1 * len(seen)  # 0.1, 0.2, 0.3, ...
        return ws.AvgAtK(k=k, n_problems=len(problems), avg_at_k=avg, pass_at_k=avg, frac_mixed=avg, histogram=[])

    monkeypatch.setattr(ws, "evaluate_avg_at_k", fake_eval)
    run = train(WarmstartConfig(target_avg=0.2, **base), log_every=0)
    assert run.reached_target and run.steps == 20 and seen == [4, 4]
