"""The memory arithmetic of docs/scaling.md (``skpo.training.memory``) against what a run holds.

The training state per rank is exact: the tiny model and a stand-in of each paper family, sharded by the trainer's
FSDP2 set-up over 2 ranks (gloo) with its compute-precision policy, after one AdamW step, holds
exactly the bytes :func:`training_state` predicts on each rank for weights, gradients and AdamW
moments (float32 master shards whatever the compute dtype), and one unsharded process holds the
unsharded figure (16 bytes per trainable parameter). The phase estimates are checked for what they
claim: each phase adds to the resident state, and the configurations docs/scaling.md calls
fitting fit. The vLLM weight sync's own peak (:func:`weight_sync_peak`) is exact too: counted
tensor by tensor while the engine syncs a plain, a LoRA and a sharded policy, it is what the
formula says, to the byte.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from skpo.training.memory import (
    LLAMA32_3B,
    QWEN25_MATH_7B,
    chunk_rows,
    phase_memory,
    sync_tensor_bytes,
    training_state,
    weight_sync_peak,
)

WORKER = Path(__file__).resolve().parent / "data" / "memory_worker.py"


def test_chunk_rows_is_torch_chunk():
    import torch

    for rows in (0, 1, 5, 64, 151, 152064):
        for world in (1, 2, 3, 8):
            sizes = [len(c) for c in torch.arange(rows).chunk(world)] if rows else []
            sizes += [0] * (world - len(sizes))
            assert [chunk_rows(rows, world, r) for r in range(world)] == sizes, (rows, world)


def _run(model_dir: Path, out: Path, world: int) -> list[dict]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = []
    for rank in range(world):
        env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
        if world > 1:
            env.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world))
        procs.append(subprocess.Popen([sys.executable, str(WORKER), str(model_dir), str(out / f"rank{rank}.json")],
                                      env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    for p in procs:
        log, _ = p.communicate(timeout=300)
        assert p.returncode == 0, log[-3000:]
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(world)]


_OTHER_FAMILY = pytest.mark.slow(reason="the same sharding and measurement as the quick tiny-arith case, on a paper "
                                         "family's shapes (152k / 128k vocabularies, untied / tied embeddings)")


@pytest.mark.xdist_group("processes")
@pytest.mark.parametrize("family", ["tiny-arith", pytest.param("qwen2.5-math-7b", marks=_OTHER_FAMILY),
                                    pytest.param("llama-3.2-3b-instruct", marks=_OTHER_FAMILY)])
def test_training_state_per_rank_is_what_the_formula_says(standin, tmp_path, family):
    from skpo.models.loading import tiny_arith_dir

    model_dir = tiny_arith_dir() if family == "tiny-arith" else standin(family)
    for world in (1, 2) if family != "tiny-arith" else (2,):  # (one process: test_one_process_holds_16_bytes_a_parameter)
        out = tmp_path / f"world{world}"
        out.mkdir()
        for measured in _run(model_dir, out, world):
            predicted = training_state(measured["shapes"], world=world, rank=measured["rank"])
            got = (measured["weights"], measured["gradients"], measured["optimizer"])
            assert got == (predicted.weights, predicted.gradients, predicted.optimizer), (world, measured["rank"])
            if world == 1:
                assert predicted.total == 16 * sum(__import__("math").prod(s) for s in measured["shapes"])


def test_one_process_holds_16_bytes_a_parameter(tmp_path):
    """Unsharded, in this process: weights, gradients and AdamW moments of the tiny model after one
    step are the formula's figure, 16 bytes per parameter."""
    import math
    import sys

    import torch

    sys.path.insert(0, str(WORKER.parent))
    import memory_worker

    from skpo.models.loading import load_policy, tiny_arith_dir

    model = load_policy(tiny_arith_dir(), dtype="float32")
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model(input_ids=torch.tensor([[5, 6, 7, 8]])).logits.float().logsumexp(-1).sum().backward()
    optimizer.step()
    shapes = [tuple(p.shape) for p in model.parameters()]
    measured = (sum(memory_worker.nbytes(p) for p in model.parameters()),
                sum(memory_worker.nbytes(p.grad) for p in model.parameters()),
                sum(memory_worker.nbytes(v) for st in optimizer.state.values() for k, v in st.items() if k != "step"))
    predicted = training_state(shapes)
    assert measured == (predicted.weights, predicted.gradients, predicted.optimizer)
    assert predicted.total == 16 * sum(math.prod(s) for s in shapes)


def test_lora_holds_the_frozen_base_once():
    base = training_state([(1000, 10)], [False])
    adapters = training_state([(8, 10), (1000, 8)], [True, True])
    assert (base.weights, base.gradients, base.optimizer) == (40_000, 0, 0)
    assert adapters.total == 16 * (80 + 8000)


@pytest.mark.parametrize("model, gpus, gpu_gb, sharded, lora", [
    (QWEN25_MATH_7B, 1, 141, False, True),   # 7B LoRA on one H200 (configs/paper/qwen2.5-math-7b-skpo-lora-1gpu.yaml)
    (QWEN25_MATH_7B, 8, 80, True, False),    # 7B full fine-tuning sharded over 8 × 80 GB
    (LLAMA32_3B, 1, 80, False, True),        # 3B LoRA on one 80 GB GPU
])
def test_the_configurations_the_docs_call_fitting_fit(model, gpus, gpu_gb, sharded, lora):
    phases = phase_memory(model, gpus=gpus, gpu_gb=gpu_gb, sharded=sharded, lora=lora, micro_batch_tokens=16384)
    assert all(phases[p] > phases["resident"] for p in ("rollout", "update", "sync"))
    assert max(phases.values()) < 0.95 * gpu_gb, phases


def test_full_fine_tuning_of_7b_does_not_fit_one_gpu():
    assert phase_memory(QWEN25_MATH_7B, gpus=1, gpu_gb=141, sharded=False)["resident"] > 120  # 16 B × 7.62 B


def test_the_shipped_one_gpu_config_trains_and_fits(standin, tmp_path):
    """configs/one-gpu/qwen2.5-math-7b-skpo-lora.yaml: two steps on the Qwen stand-in (the HF
    engine on this CPU in place of vLLM), adapters only moving; and by the formula, with the
    config's own micro-batch and vLLM share, every phase fits one H200."""
    import torch

    from skpo.config import load_config
    from skpo.training.setup import build_trainer

    root = Path(__file__).resolve().parents[1]
    path = root / "configs" / "one-gpu" / "qwen2.5-math-7b-skpo-lora.yaml"
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"prompt": [{"role": "user", "content": f"What is {i} + {i}?"}],
                                        "reward_model": {"ground_truth": str(2 * i)}}) + "\n" for i in range(4)))
    cfg = load_config(path, [f"model.path={standin('qwen2.5-math-7b')}", f"data.path={data}", "rollout.engine=hf",
                             f"reward.function={root / 'tests' / 'data' / 'rewards_for_tests.py'}:parity",
                             "train.steps=2", "train.prompts_per_step=2", "method.group_size=2",
                             "rollout.max_new_tokens=8", "eval.every=0", "log.progress=false", "log.tensorboard=false",
                             f"log.out_dir={tmp_path / 'run'}"])
    phases = phase_memory(QWEN25_MATH_7B, gpus=1, gpu_gb=141, sharded=False, lora=cfg.model.lora.enabled,
                          micro_batch_tokens=cfg.train.micro_batch_tokens,
                          gpu_memory_utilization=cfg.rollout.vllm.gpu_memory_utilization,
                          checkpointing=cfg.train.gradient_checkpointing)
    assert cfg.model.lora.r == 64 and max(phases.values()) < 0.95 * 141, phases
    trainer = build_trainer(cfg)
    frozen = {n: p.detach().clone() for n, p in trainer.policy.named_parameters() if not p.requires_grad}
    trainer.train()
    assert all(torch.equal(frozen[n], p) for n, p in trainer.policy.named_parameters() if n in frozen)
    assert any(p.requires_grad and "lora_" in n for n, p in trainer.policy.named_parameters())


# ----------------------------------------------------------------------------- the vLLM weight sync's peak
class LiveBytes:
    """Bytes of the tensors made while it is active that are still referenced, and their peak:
    every aten call's outputs are seen (a dispatch mode); a new storage counts until the last
    tensor on it is gone (views and in-place results share their input's)."""

    def __init__(self) -> None:
        from torch.utils._python_dispatch import TorchDispatchMode

        meter = self
        self.live: dict[int, list[int]] = {}  # storage address -> [bytes, tensors on it]
        self.now = self.peak = 0

        class Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                out = func(*args, **(kwargs or {}))
                meter._count(out, (args, kwargs))
                return out

        self.mode = Mode()

    def _count(self, out, inputs) -> None:
        import weakref

        import torch
        from torch.utils._pytree import tree_leaves

        known = {t.untyped_storage().data_ptr() for t in tree_leaves(inputs) if isinstance(t, torch.Tensor)}
        for t in tree_leaves(out):
            if not isinstance(t, torch.Tensor) or t.untyped_storage().nbytes() == 0:
                continue
            ptr = t.untyped_storage().data_ptr()
            if ptr in self.live:
                self.live[ptr][1] += 1
            elif ptr in known:
                continue  # a view of a tensor made before: no new memory
            else:
                self.live[ptr] = [t.untyped_storage().nbytes(), 1]
                self.now += self.live[ptr][0]
                self.peak = max(self.peak, self.now)
            weakref.finalize(t, self._drop, ptr)

    def _drop(self, ptr: int) -> None:
        entry = self.live[ptr]
        entry[1] -= 1
        if entry[1] == 0:
            self.now -= entry[0]
            del self.live[ptr]

    def __enter__(self):
        self.mode.__enter__()
        return self

    def __exit__(self, *exc):
        return self.mode.__exit__(*exc)


class _Shard:
    """A DTensor shard of a 2-rank FSDP2 run whose shards live in host memory (CPU offload):
    ``to(device)`` copies it there, ``full_tensor()`` all-gathers the whole float32 tensor."""

    world = 2

    def __init__(self, local) -> None:
        self.local = local

    def detach(self):
        return self

    def to(self, device):
        return _Shard(self.local.clone())

    def full_tensor(self):
        import torch

        return torch.cat([self.local] * self.world)


class _ShardedPolicy:
    """The tiny model's tensors as rank 0 of 2 holds them (its tied pair one Parameter, as FSDP2 keeps it)."""

    def __init__(self, model) -> None:
        from skpo.engines.vllm_engine import tied_aliases

        self.aliases = tied_aliases(model)
        self.names = list(model.state_dict())
        self.shards = {n: _Shard(p.detach()[: -(-p.shape[0] // 2)].clone()) for n, p in model.named_parameters()}

    def named_parameters(self, remove_duplicate=True):
        return [(n, self.shards[self.aliases.get(n, n)]) for n in self.names]

    def named_buffers(self, remove_duplicate=True):
        return []

    def state_dict(self):
        return dict(self.named_parameters())


@pytest.mark.parametrize("kind", ["plain", "lora", "sharded"])
@pytest.mark.parametrize("bucket_mb", [1, 0])
def test_the_weight_syncs_peak_is_what_the_formula_says(monkeypatch, kind, bucket_mb):
    """Every tensor the vLLM engine's sync makes (bf16 copies, gathered or merged float32 wholes,
    moved shards), counted while ``sync_weights`` runs: the peak equals :func:`weight_sync_peak`
    over the tensors sent, and stays within one bucket (or one larger tensor) + the largest
    tensor's preparation (docs/scaling.md's sync phase). A sync that kept a merged or gathered tensor while making the
    next one (the engine before, with peft's LoRA on every projection) would exceed it."""
    import importlib.util
    import sys
    from types import SimpleNamespace

    from skpo.engines.vllm_engine import VLLMEngine, tied_aliases
    from skpo.models.loading import load_policy, tiny_arith_dir
    from skpo.models.lora import apply_lora

    fake = Path(__file__).resolve().parent / "fakes" / "vllm" / "__init__.py"
    spec = importlib.util.spec_from_file_location("vllm", fake)
    monkeypatch.setitem(sys.modules, "vllm", importlib.util.module_from_spec(spec))

    class Loads:  # vLLM copies each bucket into its own weights: nothing of the bucket is kept
        def apply_model(self, func):
            func(SimpleNamespace(load_weights=lambda bucket: None))

        def wake_up(self, tags=None):
            pass

        def reset_prefix_cache(self):
            return True

    model = load_policy(tiny_arith_dir())
    if kind == "lora":
        model = apply_lora(model, SimpleNamespace(r=8, alpha=16, dropout=0.0, target_modules=[
            "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]))
        base = model.get_base_model()
        aliases = tied_aliases(base)
        plan = [sync_tensor_bytes(t.numel(), "merged" if ".base_layer." in n else "cast")
                for n, t in base.state_dict().items() if "lora_" not in n and n not in aliases]
    elif kind == "sharded":
        model = _ShardedPolicy(model)
        plan = [sync_tensor_bytes(2 * s.local.numel(), "gathered", moved_shard_numel=s.local.numel())
                for n, s in model.state_dict().items() if n not in model.aliases]
    else:
        aliases = tied_aliases(model)
        plan = [sync_tensor_bytes(t.numel()) for n, t in model.state_dict().items() if n not in aliases]
    engine = VLLMEngine(str(tiny_arith_dir()), dtype="bfloat16", weight_bucket_mb=max(1, bucket_mb), llm=Loads())
    if bucket_mb == 0:
        engine.bucket_bytes = 1  # every tensor alone
    with LiveBytes() as meter:
        engine.sync_weights(model)
    predicted = weight_sync_peak(plan, engine.bucket_bytes)
    assert meter.peak == predicted and meter.now == 0, (meter.peak, predicted)
    largest_copy = max(copy for copy, _ in plan)  # (a tensor larger than the bucket is a bucket alone)
    assert predicted <= max(engine.bucket_bytes, largest_copy) + max(making for _, making in plan)
    assert predicted >= max(making for _, making in plan)
