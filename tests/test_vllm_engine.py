"""The vLLM engine against vLLM's behaviour (``tests/fakes/vllm`` models vLLM 0.30.0, read from
its source; see that file for the references): one test per behaviour the engine relies on.

- an engine in one process runs vLLM's core in-process (``external_launcher``), so the weight
  sync works without serialising anything; out of process ``apply_model`` is refused;
- starting vLLM in-process leaves the trainer's random generators as they were;
- weights are synced after a level-2 sleep: weights woken alone, loaded in bounded buckets
  (never the whole model at once), prefix cache reset, KV cache woken at the next generation
  after torch's cached blocks are released; generating before the weights are back is refused;
- a tied model's alias (``lm_head.weight``) is never sent — vLLM's loader refuses a bucket that
  carries it without ``model.embed_tokens.weight`` — for plain, LoRA and FSDP2-sharded policies;
- ``wake_up`` naming a tag that is not asleep is refused (vLLM would wake nothing and hang);
  vLLM refuses to start when free memory is short of ``gpu_memory_utilization``;
- completions are cut at ``max_model_len`` with ``finish_reason="length"`` by vLLM; the engine
  clamps budgets and marks such completions, and a prompt that leaves no room gets none;
- ``abort`` / ``error`` / ``repetition`` raise; greedy with ``n > 1`` is one sample repeated;
- tensor parallelism is refused; sharded (offloaded) tensors are moved to the GPU before they
  are gathered;
- SKPO trains on the engine with skip inputs longer than the context allows: the cut answers
  are counted and logged;
- ``scripts/vllm_smoke.py`` (the real-vLLM smoke test) skips in one line where vLLM does not
  import, and runs its whole flow on the fake.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import random
import sys
from pathlib import Path

import pytest
import torch

from skpo.engines import SamplingParams
from skpo.models.loading import load_policy, tiny_arith_dir

FAKES = Path(__file__).resolve().parent / "fakes"


@pytest.fixture()
def fake_vllm(monkeypatch):
    spec = importlib.util.spec_from_file_location("vllm", FAKES / "vllm" / "__init__.py")
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "vllm", module)
    spec.loader.exec_module(module)
    for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "VLLM_ENABLE_V1_MULTIPROCESSING",
                 "VLLM_ALLOW_INSECURE_SERIALIZATION"):
        monkeypatch.delenv(name, raising=False)  # a plain single-process run
    return module


def engine(**kwargs):
    from skpo.engines.vllm_engine import VLLMEngine

    return VLLMEngine(str(tiny_arith_dir()), dtype="float32", **kwargs)


def moved_policy():
    policy = load_policy(tiny_arith_dir())
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(0.01)
    return policy


# ----------------------------------------------------------------------------- where the core runs
def test_one_process_runs_the_core_in_process_and_syncs(fake_vllm):
    eng = engine()
    assert eng.llm.in_process and eng.llm.kwargs["distributed_executor_backend"] == "external_launcher"
    policy = moved_policy()
    eng.sync_weights(policy)
    engine_state = eng.llm.model.state_dict()
    assert all(torch.equal(engine_state[k], v) for k, v in policy.state_dict().items())
    assert eng.llm.serialized_bytes == 0  # nothing pickled


def test_out_of_process_apply_model_is_refused_or_copies_every_tensor(fake_vllm, monkeypatch):
    llm = fake_vllm.LLM(str(tiny_arith_dir()), dtype="float32")  # vLLM's default: a child process
    assert not llm.in_process and not hasattr(llm.llm_engine, "model_executor")
    weights = [("model.norm.weight", torch.ones(128))]
    with pytest.raises(TypeError, match="VLLM_ALLOW_INSECURE_SERIALIZATION"):
        llm.apply_model(lambda m: m.load_weights(weights))
    monkeypatch.setenv("VLLM_ALLOW_INSECURE_SERIALIZATION", "1")
    llm.apply_model(lambda m: m.load_weights(weights))
    assert llm.serialized_bytes == 128 * 4


def test_external_launcher_needs_the_launch_variables(fake_vllm):
    with pytest.raises(KeyError):
        fake_vllm.LLM(str(tiny_arith_dir()), dtype="float32", distributed_executor_backend="external_launcher")


def test_starting_vllm_leaves_the_trainers_generators_alone(fake_vllm):
    import numpy as np

    def draws():
        return random.random(), float(np.random.rand()), float(torch.rand(()))

    torch.manual_seed(123), random.seed(123), np.random.seed(123)
    expected = draws()
    torch.manual_seed(123), random.seed(123), np.random.seed(123)
    engine(seed=7)
    assert draws() == expected
    fake_vllm.LLM(str(tiny_arith_dir()), dtype="float32", seed=7)  # vLLM itself reseeds them
    assert draws() != expected


# ----------------------------------------------------------------------------- sleep and sync
def test_level_two_sleep_then_weights_first_in_buckets_then_kv_cache(fake_vllm):
    eng = engine(sleep=True, weight_bucket_mb=1)
    llm = eng.llm
    eng.generate([[5, 6, 7]], 1, SamplingParams(max_new_tokens=3, seed=0))
    eng.sleep()
    assert ("sleep", 2) in llm.calls and not llm.weights_valid
    with pytest.raises(RuntimeError, match="sync_weights"):
        eng.generate([[5, 6, 7]], 1, SamplingParams(max_new_tokens=3, seed=0))
    start = len(llm.calls)
    policy = moved_policy()
    eng.sync_weights(policy)
    calls = llm.calls[start:]
    assert calls[0] == ("wake_up", ["weights"]) and calls[-1] == ("reset_prefix_cache", None)
    loads = [c[1] for c in calls if c[0] == "apply_model"]
    sizes = [sum(t.numel() * t.element_size() for _, t in load.bucket) for load in loads]
    largest = max(t.numel() * t.element_size() for t in policy.state_dict().values())
    assert len(loads) > 1 and max(sizes) <= max(1 << 20, largest)  # bounded buckets, never the whole model
    assert sum(len(load.bucket) for load in loads) == len(dict(policy.named_parameters()))  # (tied: once)
    assert llm.sleeping == {"kv_cache"} and llm.weights_valid  # the KV cache still sleeps
    out = eng.generate([[5, 6, 7]], 1, SamplingParams(max_new_tokens=3, seed=0))
    assert llm.calls[-2] == ("wake_up", ["kv_cache"]) and len(out[0][0].token_ids) <= 3
    assert all(torch.equal(llm.model.state_dict()[k], v) for k, v in policy.state_dict().items())


def test_torchs_cached_blocks_are_released_before_each_wake_up(fake_vllm, monkeypatch):
    """After the update and after the sync (and an evaluation between them) torch's caching
    allocator may hold blocks vLLM needs for its weights and KV cache: ``gc.collect()`` and
    ``torch.cuda.empty_cache()`` run right before each ``wake_up`` (as verl does)."""
    from skpo.engines import vllm_engine

    eng = engine(sleep=True)
    llm = eng.llm
    monkeypatch.setattr(vllm_engine.gc, "collect", lambda: llm.calls.append(("gc.collect", None)))
    monkeypatch.setattr(vllm_engine.torch.cuda, "empty_cache", lambda: llm.calls.append(("empty_cache", None)))
    eng.sleep()
    eng.sync_weights(moved_policy())
    monkeypatch.setattr(vllm_engine.torch.cuda, "is_available", lambda: True)  # (only empty_cache asks)
    eng.generate([[5, 6, 7]], 1, SamplingParams(max_new_tokens=2, seed=0))
    names = [c[0] if c[0] != "wake_up" else f"wake_up {c[1][0]}" for c in llm.calls if c[0] != "apply_model"]
    assert names[names.index("wake_up weights") - 1] == "gc.collect"
    assert names[names.index("wake_up kv_cache") - 2:names.index("wake_up kv_cache")] == ["gc.collect", "empty_cache"]


# ----------------------------------------------------------------------------- tied weights
def test_vllms_loader_refuses_a_tied_alias_without_its_first_name(fake_vllm):
    """vLLM 0.30.0's ``AutoWeightsLoader``: ``lm_head.weight`` of a tied model is skipped, and a
    load carrying it without ``model.embed_tokens.weight`` raises — which a bucketed sync of the
    whole state dict does as soon as the two land in different buckets."""
    from skpo.engines.vllm_engine import weight_buckets

    llm = engine().llm
    policy = moved_policy()  # the tiny model: Qwen2 with tied embeddings, 3.9 MiB
    state = policy.state_dict()
    head = state["lm_head.weight"]
    with pytest.raises(ValueError, match=r"^'lm_head.weight' was skipped because it is tied to 'model.embed_tokens.weight' "
                                         r"in Qwen2ForCausalLM, but 'model.embed_tokens.weight' was not found in the "
                                         r"checkpoint, so the tied weight is uninitialized\.$"):
        llm.apply_model(lambda m: m.load_weights([("model.norm.weight", state["model.norm.weight"]), ("lm_head.weight", head)]))
    loaded = llm.apply_model(lambda m: m.load_weights([("model.embed_tokens.weight", head), ("lm_head.weight", head)]))[0]
    assert loaded == {"model.embed_tokens.weight"}  # the alias skipped, its first name loaded
    with pytest.raises(ValueError, match=r"no module or parameter named 'lm_head\.bias'"):
        llm.apply_model(lambda m: m.load_weights([("lm_head.bias", head[0])]))
    buckets = list(weight_buckets(state.items(), 1 << 20))  # the engine as it was: every state-dict name
    assert "model.embed_tokens.weight" in dict(buckets[0]) and "lm_head.weight" in dict(buckets[-1])
    with pytest.raises(ValueError, match="tied weight is uninitialized"):
        llm.apply_model(lambda m: m.load_weights(buckets[-1]))


def _synced_once(eng, policy) -> list[str]:
    start = len(eng.llm.loaded_names)
    eng.sync_weights(policy)
    return eng.llm.loaded_names[start:]


def test_a_tied_model_larger_than_a_bucket_is_synced_once_and_whole(fake_vllm):
    eng = engine(sleep=True, weight_bucket_mb=1)  # the tied tiny model spans 4 buckets
    eng.sleep()
    policy = moved_policy()
    sent = _synced_once(eng, policy)
    assert sorted(sent) == sorted(dict(policy.named_parameters())) and "lm_head.weight" not in sent
    assert len(sent) == len(set(sent))  # each tensor once (the 128 kB embedding is not shipped twice)
    held = eng.llm.model.state_dict()
    assert all(torch.equal(held[k], v) for k, v in policy.state_dict().items())  # lm_head too: it is the embedding


def test_a_lora_policy_on_a_tied_model_is_synced_once(fake_vllm):
    from types import SimpleNamespace

    from skpo.models.lora import apply_lora, merged_state_dict

    lora = SimpleNamespace(r=4, alpha=8, dropout=0.0, target_modules=["q_proj", "v_proj", "down_proj"])
    policy = apply_lora(moved_policy(), lora, seed=1)
    with torch.no_grad():
        for name, p in policy.named_parameters():
            if "lora_B" in name:
                p.normal_()  # (peft starts B at 0: ΔW would be 0)
    eng = engine(sleep=True, weight_bucket_mb=1)
    eng.sleep()
    sent = _synced_once(eng, policy)
    merged = merged_state_dict(policy)
    assert "lm_head.weight" not in sent and sorted(sent) == sorted(k for k in merged if k != "lm_head.weight")
    held = eng.llm.model.state_dict()
    assert all(torch.equal(held[k], v) for k, v in merged.items())
    assert not torch.equal(held["model.layers.0.self_attn.q_proj.weight"],
                           policy.get_base_model().model.layers[0].self_attn.q_proj.base_layer.weight)  # W + ΔW arrived
    head = apply_lora(moved_policy(), SimpleNamespace(r=4, alpha=8, dropout=0.0, target_modules=["q_proj", "lm_head"]))
    with pytest.raises(ValueError, match=r"lm_head\.weight is tied to model\.embed_tokens\.weight.*target_modules"):
        eng.sync_weights(head)


def test_an_fsdp2_sharded_tied_model_is_gathered_and_synced_once(fake_vllm):
    """FSDP2 (one gloo rank, in this process) keeps one sharded Parameter for the tied pair, so
    every rank skips the same alias and runs the same gathers (2 ranks: the slow
    tests/test_distributed.py::test_sharded_training_with_the_vllm_engine_syncs_every_rank)."""
    import torch.distributed as dist

    from skpo.engines.vllm_engine import tied_aliases
    from skpo.training.sharding import ShardingSettings, full_named_tensors, shard_model

    policy = moved_policy()
    expected = {k: v.clone() for k, v in policy.state_dict().items()}
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        shard_model(policy, ShardingSettings(), torch.device("cpu"))
        assert type(policy.state_dict()["lm_head.weight"]).__name__ == "DTensor"
        assert tied_aliases(policy) == {"lm_head.weight": "model.embed_tokens.weight"}
        eng = engine(sleep=True, weight_bucket_mb=1)
        eng.sleep()
        sent = _synced_once(eng, policy)
        assert "lm_head.weight" not in sent and len(sent) == len(set(sent)) == len(expected) - 1
        held = eng.llm.model.state_dict()
        assert all(torch.equal(held[k], v) for k, v in expected.items())
        assert all(torch.equal(held[k], v) for k, v in full_named_tensors(policy))
    finally:
        dist.destroy_process_group()


# ----------------------------------------------------------------------------- what vLLM refuses at start and wake-up
def test_wake_up_with_a_tag_that_is_not_asleep_is_refused(fake_vllm):
    """vLLM 0.30.0 (``Executor.wake_up``): a tag outside the sleeping ones wakes nothing (a
    warning), and the scheduler stays paused, so the next generate never returns."""
    llm = engine(sleep=True).llm
    llm.sleep(level=2)
    llm.wake_up(tags=["weights"])
    with pytest.raises(RuntimeError, match=r"only \['kv_cache'\] sleep.*never returns"):
        llm.wake_up(tags=["weights", "kv_cache"])
    assert llm.sleeping == {"kv_cache"}  # nothing was woken
    llm.wake_up(tags=["kv_cache"])
    assert llm.sleeping == set()
    llm.wake_up(tags=["kv_cache"])  # nothing asleep: a warning in vLLM, nothing else
    llm.sleep(level=1)
    llm.wake_up()  # every tag
    assert llm.sleeping == set()


def test_vllm_refuses_to_start_without_the_memory_it_is_given(fake_vllm):
    """``request_memory``: free memory at start-up must cover ``gpu_memory_utilization`` of the
    device (vLLM's share is a fraction of the total, not of what the trainer left free)."""
    fake_vllm.DEVICE_MEMORY.update(total=80 << 30, free=20 << 30)  # the trainer holds 60 GiB
    with pytest.raises(ValueError, match=r"Free memory on device cuda:0 \(20.00/80.00 GiB\) on startup is less than "
                                         r"desired GPU memory utilization \(0.3, 24.00 GiB\)"):
        engine(gpu_memory_utilization=0.3)
    assert engine(gpu_memory_utilization=0.25).llm.kwargs["gpu_memory_utilization"] == 0.25


def test_sharded_tensors_are_moved_to_the_device_before_they_are_gathered():
    from skpo.engines.vllm_engine import _named_weights

    class Shard:  # a DTensor shard in host memory (CPU offload): NCCL cannot gather it there
        def __init__(self, on="cpu-offload"):
            self.on = on

        def detach(self):
            return self

        def to(self, device):
            return Shard(on=str(device))

        def full_tensor(self):
            assert self.on == "cpu", f"gathered from {self.on}"
            return torch.ones(2, 2)

    class Model:
        shard = Shard()

        def named_parameters(self, remove_duplicate=True):
            return [("w", self.shard)]

        def named_buffers(self, remove_duplicate=True):
            return []

        def state_dict(self):
            return {"w": self.shard}

    [(name, tensor)] = list(_named_weights(Model(), torch.device("cpu"), torch.bfloat16))
    assert name == "w" and tensor.dtype == torch.bfloat16 and tensor.shape == (2, 2)


# ----------------------------------------------------------------------------- context
def test_completions_are_cut_at_the_context_and_marked(fake_vllm):
    eng = engine(max_model_len=12)
    prompt = [5, 6, 7, 8, 9, 10, 11, 12, 13, 14]  # 10 tokens: room for 2
    params = SamplingParams(temperature=1.0, max_new_tokens=8, seed=1, ignore_eos=True)
    [row] = eng.generate([prompt], 2, params)
    (_, requests), = [c for c in eng.llm.calls if c[0] == "generate"]
    assert requests[0][1].max_tokens == 2  # clamped: vLLM would stop there with a plain "length"
    assert all(c.finish_reason == "length" and len(c.token_ids) == 2 and c.cut_by_context for c in row)
    [row] = eng.generate([list(range(5, 17))], 2, params)  # 12 tokens: vLLM refuses such a prompt
    assert all(c.token_ids == [] and c.cut_by_context for c in row)
    [row] = eng.generate([[5, 6]], 2, SamplingParams(max_new_tokens=4, seed=1, ignore_eos=True))
    assert all(not c.cut_by_context for c in row)  # within the context: an ordinary length stop


def test_vllm_stops_at_max_model_len_with_length(fake_vllm):
    llm = fake_vllm.LLM(str(tiny_arith_dir()), dtype="float32", max_model_len=12)
    [out] = llm.generate([{"prompt_token_ids": list(range(5, 15))}],
                         fake_vllm.SamplingParams(max_tokens=8, ignore_eos=True, seed=0), use_tqdm=False)
    assert len(out.outputs[0].token_ids) == 2 and out.outputs[0].finish_reason == "length"
    with pytest.raises(fake_vllm.VLLMValidationError):
        llm.generate([{"prompt_token_ids": list(range(5, 17))}], fake_vllm.SamplingParams(max_tokens=8))


def test_the_context_limit_wrapper_counts_cuts():
    from skpo.engines import HFEngine
    from skpo.engines.context import ContextLimit

    model = load_policy(tiny_arith_dir())
    limited = ContextLimit(HFEngine(model, pad_token_id=0), context=8)
    out = limited.generate([[5, 6, 7, 8, 9, 10], [5, 6]], 2, SamplingParams(max_new_tokens=4, seed=3, ignore_eos=True))
    assert [len(c.token_ids) for c in out[0]] == [2, 2] and all(c.cut_by_context for c in out[0])
    assert [len(c.token_ids) for c in out[1]] == [4, 4] and not any(c.cut_by_context for c in out[1])
    assert limited.cuts == 2


def test_the_context_window_is_checked_against_the_model():
    from skpo.engines.context import ContextError, fit_context_window

    window = fit_context_window(1024, 1536, 3072, 8192)
    assert (window.need, window.tokens, window.may_cut) == (5632, 5632, False)
    with pytest.raises(ContextError, match=r"5632 tokens.*4096 positions.*rollout.max_context_tokens=4096"):
        fit_context_window(1024, 1536, 3072, 4096, growth_note="the skip segment s")
    window = fit_context_window(1024, 1536, 3072, 4096, setting=4096)
    assert (window.tokens, window.may_cut) == (4096, True)
    with pytest.raises(ContextError, match="exceeds the model's 4096"):
        fit_context_window(1024, 0, 3072, 4096, setting=5000)
    with pytest.raises(ContextError, match="no room"):
        fit_context_window(1024, 0, 3072, 4096, setting=1000)
    assert fit_context_window(100, None, 50, 4096).tokens == 4096  # growth not bounded: the model's whole context


def test_skpo_prompt_growth_bounds_the_segment():
    from skpo.rollout.skpo_rollout import SkpoRolloutParams, skpo_prompt_growth

    assert skpo_prompt_growth(SkpoRolloutParams(), 3072, 1024) == 1536  # ⌊3072 / 2⌋
    assert skpo_prompt_growth(SkpoRolloutParams(), 64, 200) == 64  # a large prior: capped at the budget
    assert skpo_prompt_growth(SkpoRolloutParams(split_high=0.25), 100, 32) == 25
    assert skpo_prompt_growth(SkpoRolloutParams(skip=False), 100, 32) == 100  # continual: L up to |s| + |o|


# ----------------------------------------------------------------------------- results
@pytest.mark.parametrize("reason", ["abort", "error", "repetition"])
def test_other_finish_reasons_raise(fake_vllm, reason):
    eng = engine()
    eng.llm.force_finish_reason = reason
    with pytest.raises(RuntimeError, match=reason):
        eng.generate([[5, 6, 7]], 2, SamplingParams(max_new_tokens=4, seed=0))


def test_greedy_with_several_samples_is_one_request_repeated(fake_vllm):
    eng = engine()
    [row] = eng.generate([[5, 6, 7]], 3, SamplingParams(temperature=0.0, max_new_tokens=5))
    (_, requests), = [c for c in eng.llm.calls if c[0] == "generate"]
    assert requests[0][1].n == 1 and len(row) == 3
    assert row[0].token_ids == row[1].token_ids == row[2].token_ids and row[0] is not row[1]


def test_tensor_parallel_is_refused(fake_vllm):
    from skpo.config import ConfigError, load_config

    with pytest.raises(ValueError, match="tensor parallelism is not supported"):
        engine(tensor_parallel_size=2)
    with pytest.raises(ConfigError, match="same requests"):
        load_config(None, ["rollout.vllm.tensor_parallel_size=2"])


# ----------------------------------------------------------------------------- SKPO on the engine
def test_skpo_on_the_vllm_engine_counts_answers_cut_by_the_context(fake_vllm, tmp_path, caplog):
    """SKPO's skip input [s, q] plus the answer budget needs more than the context set here:
    the run starts with a warning, and every answer that reaches the context is cut, counted
    and logged — never silently."""
    from skpo.config import load_config
    from skpo.training.setup import build_trainer

    args = ["rollout.engine=vllm", "train.method=skpo", "train.steps=2", "train.prompts_per_step=2",
            "method.group_size=2", "rollout.max_new_tokens=24", "rollout.temperature=1.5", "rollout.ignore_eos=true",
            "eval.every=0", "log.progress=false", "log.tensorboard=false", "data.arith.pool_size=20"]
    with caplog.at_level(logging.WARNING, logger="skpo"):
        trainer = build_trainer(load_config(None, [*args, f"log.out_dir={tmp_path / 'fits'}"]))
    plan = trainer.context_window
    # sized for [s, q] + answer: s is at most ⌊L/2⌋ = 16 tokens with the prior L = 32 (rollout.skpo.initial_length)
    assert plan.growth == 16 and plan.need == plan.longest_prompt + 16 + 24 == plan.tokens
    assert trainer.engine.llm.max_model_len == plan.tokens and "cut" not in caplog.text
    trainer.close()
    tight = plan.longest_prompt + 28  # room for the answer and a short segment, not a long one
    with caplog.at_level(logging.WARNING, logger="skpo"):
        trainer = build_trainer(load_config(None, [*args, f"rollout.max_context_tokens={tight}",
                                                   f"log.out_dir={tmp_path / 'tight'}"]))
        assert "answers that reach it are cut" in caplog.text
        trainer.train()
    lines = [json.loads(x) for x in (tmp_path / "tight" / "metrics.jsonl").read_text().splitlines()]
    assert sum(x["rollout/cut_by_context"] for x in lines) > 0
    assert "reached the engine's context" in caplog.text
    assert json.loads((tmp_path / "tight" / "run.json").read_text())["context_window"]["tokens"] == tight


# ----------------------------------------------------------------------------- scripts/vllm_smoke.py
SMOKE = Path(__file__).resolve().parents[1] / "scripts" / "vllm_smoke.py"


def _smoke(monkeypatch, capsys, *args: str) -> tuple[int, str]:
    import runpy

    monkeypatch.setattr(sys, "argv", ["vllm_smoke.py", *args])
    with pytest.raises(SystemExit) as done:
        runpy.run_path(str(SMOKE), run_name="__main__")
    return done.value.code, capsys.readouterr().out


def test_the_vllm_smoke_test_skips_in_one_line_where_vllm_does_not_import(monkeypatch, capsys, tmp_path):
    monkeypatch.setitem(sys.modules, "vllm", None)  # `import vllm` fails, installed or not
    code, out = _smoke(monkeypatch, capsys, "--report", str(tmp_path / "smoke.json"))
    assert code == 0 and out.count("\n") == 1
    assert out.startswith("vllm_smoke: skipped: vLLM does not import here (ModuleNotFoundError")
    assert json.loads((tmp_path / "smoke.json").read_text())["skipped"].startswith("vLLM does not import")


def test_the_vllm_smoke_test_runs_its_flow_on_the_fake(fake_vllm, monkeypatch, capsys, tmp_path):
    """The whole script on the fake vLLM, small (a stand-in of the tied tiny model): start,
    generate, sleep, the tied model synced in 1 MiB buckets, generate, log-probs against the HF
    engine's, a report with every phase."""
    code, out = _smoke(monkeypatch, capsys, "--allow-cpu", "--like", str(tiny_arith_dir()), "--hidden-size", "128",
                       "--layers", "4", "--prompts", "2", "--max-new-tokens", "4", "--bucket-mb", "1",
                       "--report", str(tmp_path / "smoke.json"))
    report = json.loads((tmp_path / "smoke.json").read_text())
    assert code == 0 and report["ok"] is True and out.rstrip().endswith("vllm_smoke: OK"), out[-2000:]
    assert report["model"]["tied"] == {"lm_head.weight": "model.embed_tokens.weight"}
    assert report["after_sync"]["mean_abs"] <= report["after_sync"]["tolerance"] and report["sync_took_effect"]
    assert set(report["phases"]) == {"start", "generate_before_sync", "sleep", "sync", "generate_after_sync"}
