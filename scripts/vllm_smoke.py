"""The vLLM engine on real vLLM, once, end to end: for the first GPU machine that has vLLM.

    python3 scripts/vllm_smoke.py [--report FILE] [--bucket-mb 64] [--hidden-size 3072] [--layers 2]
                                  [--prompts 8] [--max-new-tokens 32] [--like FAMILY|DIR] [--allow-cpu]

Where vLLM does not import (or there is no CUDA device) it prints one line saying it skipped and
exits 0 (tests/test_vllm_engine.py checks that line; ``--allow-cpu`` runs it on whatever ``vllm``
imports without a GPU, as the same test does on the fake vLLM). Otherwise, in this one process (``distributed_executor_backend="external_launcher"``, as
training runs it):

1. builds a tied stand-in of Llama-3.2-3B-Instruct (``skpo standin``: the real vocabulary of
   128,256 and hidden size 3,072, 2 layers, random weights; ``lm_head`` is the input embedding):
   ~595 M parameters, ~1.2 GB in bf16, its embedding alone 788 MB — larger than a bucket;
2. starts ``skpo.engines.vllm_engine.VLLMEngine`` on it (bf16, sleep mode) and generates;
3. puts the engine to sleep (level 2: weights and KV cache dropped), moves the policy's weights
   (float32, on the GPU) and syncs them in buckets of ``--bucket-mb`` (64 MiB: the embedding is
   a bucket alone, the layers fill several, so the tied pair is split across loads as in a real
   run), then generates again;
4. scores each phase's completions with the Hugging Face engine in float32 (teacher-forced, the
   same prompts): vLLM's bf16 log-probs of the sampled tokens must agree to a mean absolute
   difference of at most 0.05 nat (the engine contract suite's bf16 tolerance) before and after
   the sync; and the update must move the log-probs by more than that and by more than 4x the
   after-sync difference (an engine still holding the old weights would be off by that much).

Per phase: seconds, the device's peak memory in use (``cudaMemGetInfo`` sampled every 5 ms:
vLLM's own allocations included) and torch's peak allocated. One JSON report.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TOLERANCE = 0.05  # mean |Δ log-prob| of bf16 vLLM against a float32 forward (tests/test_engine_contract.py)


def skip(reason: str, report: Path | None) -> int:
    print(f"vllm_smoke: skipped: {reason}")
    if report is not None:
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text(json.dumps({"skipped": reason}, indent=1))
    return 0


class DeviceMemory:
    """Peak memory in use on the device per phase, sampled every 5 ms in a thread (vLLM maps its
    weights and KV cache outside torch's caching allocator), and torch's own peak (zeros without
    a CUDA device)."""

    def __init__(self, torch) -> None:
        self.torch = torch
        self.cuda = torch.cuda.is_available()
        self.phases: dict[str, dict] = {}
        self._peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()

    def _used(self) -> int:
        if not self.cuda:
            return 0
        free, total = self.torch.cuda.mem_get_info()
        return total - free

    def _sync(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize()

    def _poll(self) -> None:
        while not self._stop.is_set():
            self._peak = max(self._peak, self._used())
            time.sleep(0.005)

    def phase(self, name: str):
        memory = self

        class Phase:
            def __enter__(self):
                memory._sync()
                if memory.cuda:
                    memory.torch.cuda.reset_peak_memory_stats()
                memory._peak = memory._used()
                self.started = time.perf_counter()

            def __exit__(self, *exc):
                memory._sync()
                memory._peak = max(memory._peak, memory._used())
                torch_peak = memory.torch.cuda.max_memory_allocated() if memory.cuda else 0
                memory.phases[name] = {"seconds": round(time.perf_counter() - self.started, 2),
                                       "peak_gib_device": round(memory._peak / 2**30, 3),
                                       "peak_gib_torch": round(torch_peak / 2**30, 3),
                                       "in_use_gib_after": round(memory._used() / 2**30, 3)}
                print(f"{name}: {json.dumps(memory.phases[name])}", flush=True)

        return Phase()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


def compare(engine_rows, reference_rows) -> dict:
    """Mean and largest |Δ| between the engine's log-probs and the reference's, token by token."""
    diffs = [abs(a - b) for got, ref in zip(engine_rows, reference_rows) for a, b in zip(got, ref)]
    return {"tokens": len(diffs), "mean_abs": round(sum(diffs) / max(1, len(diffs)), 5),
            "max_abs": round(max(diffs, default=0.0), 5)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--report", type=Path, default=None, help="JSON report (default: only printed)")
    p.add_argument("--bucket-mb", type=int, default=64, help="rollout.vllm.weight_bucket_mb for the sync")
    p.add_argument("--like", default="llama-3.2-3b-instruct",
                   help="what the tied stand-in stands in for: a stand-in family or a local model directory")
    p.add_argument("--hidden-size", type=int, default=3072, help="the stand-in's hidden size (3072: the real 3B's)")
    p.add_argument("--layers", type=int, default=2, help="the stand-in's decoder layers")
    p.add_argument("--gpu-memory-utilization", type=float, default=0.3)
    p.add_argument("--prompts", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--allow-cpu", action="store_true", help="run without a GPU (a dry run of the script itself)")
    args = p.parse_args()
    try:
        import vllm  # the [vllm] extra
    except Exception as err:  # noqa: BLE001 - absent or broken, either way nothing to run
        return skip(f"vLLM does not import here ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})",
                    args.report)
    import torch

    if not torch.cuda.is_available() and not args.allow_cpu:
        return skip("vLLM imports but there is no CUDA device", args.report)
    with tempfile.TemporaryDirectory(prefix="skpo-vllm-smoke-") as work:
        return run(args, Path(work), getattr(vllm, "__version__", "?"))


def run(args: argparse.Namespace, work: Path, vllm_version: str) -> int:
    import torch

    from skpo.engines import HFEngine, SamplingParams
    from skpo.engines.vllm_engine import VLLMEngine, tied_aliases
    from skpo.models.loading import load_policy
    from skpo.models.standin import make_standin

    cuda = torch.cuda.is_available()
    report: dict = {"environment": {"python": platform.python_version(), "torch": torch.__version__, "vllm": vllm_version,
                                    "gpu": torch.cuda.get_device_name(0) if cuda else None,
                                    "gpu_gib": round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
                                    if cuda else None}}
    memory = DeviceMemory(torch)
    path = make_standin(args.like, work / "standin", hidden_size=args.hidden_size, num_layers=args.layers,
                        num_kv_heads=min(8, args.hidden_size // 64))
    policy = load_policy(path, device="cuda" if cuda else "cpu", dtype="float32")  # as the trainer holds it
    params = sum(p.numel() for p in policy.parameters())
    embedding = policy.get_input_embeddings().weight
    report["model"] = {"stand_in_for": str(args.like), "parameters": params,
                       "bf16_gib": round(2 * params / 2**30, 3),
                       "embedding_bf16_mib": round(2 * embedding.numel() / 2**20, 1),
                       "tied": tied_aliases(policy), "bucket_mib": args.bucket_mb}
    print(json.dumps(report), flush=True)
    vocab = policy.config.vocab_size
    g = torch.Generator().manual_seed(0)
    margin = min(1000, vocab // 4)  # (ordinary tokens: clear of the special ones at either end)
    prompts = [torch.randint(margin, vocab - margin, (16,), generator=g).tolist() for _ in range(args.prompts)]
    sampling = SamplingParams(temperature=1.0, top_p=1.0, max_new_tokens=args.max_new_tokens, seed=7, ignore_eos=True)
    reference = HFEngine(policy, pad_token_id=0)

    def logprobs(rows) -> tuple[list[list[float]], list[list[float]]]:
        """vLLM's log-probs of each completion's tokens, and the HF engine's (the policy now)."""
        flat = [(prompts[i], list(c.token_ids)) for i, row in enumerate(rows) for c in row]
        scored = reference.score([p for p, _ in flat], [c for _, c in flat], temperature=sampling.temperature)
        return [list(c.logprobs) for row in rows for c in row], scored

    ok = True
    try:
        with memory.phase("start"):
            engine = VLLMEngine(str(path), dtype="bfloat16", gpu_memory_utilization=args.gpu_memory_utilization,
                                sleep=True, max_model_len=256, weight_bucket_mb=args.bucket_mb)
        with memory.phase("generate_before_sync"):
            before = engine.generate(prompts, 2, sampling)
        report["before_sync"] = compare(*logprobs(before))
        with memory.phase("sleep"):
            engine.sleep()
        with torch.no_grad():  # a training update: every weight moves (the tied pair once)
            for p in policy.parameters():
                p.add_(torch.randn(p.shape, generator=g).to(p.device) * p.std())
        with memory.phase("sync"):
            engine.sync_weights(policy)
        with memory.phase("generate_after_sync"):
            after = engine.generate(prompts, 2, sampling)
        report["after_sync"] = compare(*logprobs(after))
        # how far the update moved the log-probs (the first completions, old weights against new): an
        # engine still holding the old weights would miss the new ones by about this much
        report["update_moved_logprobs_by"] = compare(*logprobs(before))
        for key in ("before_sync", "after_sync"):
            report[key]["tolerance"] = TOLERANCE
            report[key]["ok"] = report[key]["mean_abs"] <= TOLERANCE and report[key]["tokens"] > 0
            ok = ok and report[key]["ok"]
        moved = report["update_moved_logprobs_by"]["mean_abs"]
        report["sync_took_effect"] = moved > max(TOLERANCE, 4 * report["after_sync"]["mean_abs"])
        ok = ok and report["sync_took_effect"]
    except Exception as err:  # noqa: BLE001 - reported, and the smoke test fails
        import traceback

        report["error"] = f"{type(err).__name__}: {err}"
        report["traceback"] = traceback.format_exc()[-4000:]
        ok = False
    finally:
        memory.close()
    report["phases"] = memory.phases
    report["ok"] = bool(ok)
    text = json.dumps(report, indent=1)
    if args.report is not None:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(text)
    print(text, flush=True)
    print(f"vllm_smoke: {'OK' if ok else 'FAILED'}", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT / "src"))
    sys.exit(main())
