"""The GPU check (``scripts/gpu_check.sh`` runs it): what a bare GPU machine has (and what the
check carried or did without), the engine contract suite on CUDA, the HF engine's decode speed
with each sampler, the engine on real vLLM where vLLM imports (``scripts/vllm_smoke.py``, in a
process of its own), a few steps of a paper recipe at the paper's lengths, and — with two GPUs
or more — a 2-rank FSDP2 run over NCCL with a resume. Prints each phase as it ends and writes
one JSON report.

    python3 scripts/gpu_check.py [--report FILE] [--recipe configs/paper/qwen2.5-math-7b-skpo.yaml]
                                 [--model DIR] [--steps 5] [--prompts 8] [--engine auto|vllm|hf]
                                 [--budget-s 480]

Without ``--model`` it trains a stand-in of the recipe's model family (``skpo standin``: the
real architecture, vocabulary, chat template and special tokens; tiny random weights) at the
recipe's lengths (prompts up to 1024 tokens, answers up to 3072, SKPO's ``[s, q]`` inside
Qwen2.5-Math-7B's 4096 positions) in bf16. A random model never answers correctly and never
stops early, so every answer runs to its budget (the most decode work a step can have) and the
reward is ``tests/data/rewards_for_tests.py:parity`` (mixed groups, so every phase runs). Data:
the shortest MATH-500 problems in the dapo-math-17k layout. With ``--model`` a real local model
and the recipe's own reward.

Sizing (one H200): each step decodes up to ~512 segment tokens and then ~3,500 answer tokens
one position at a time (the stand-in's forward is tiny, so a decode step costs about its kernel
launches), and trains on ~8 × 8 × 3,500 tokens in micro-batches of 32,768 through a
152,064-token vocabulary; ``--prompts 8`` (the recipe: 128) keeps 5 steps to a few minutes. The
phases stop early when ``--budget-s`` would be exceeded, and say so in the report.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


# What the check needs of a GPU image: these, as an image with torch carries them (pydantic is
# carried by gpu_check.sh when absent)…
NEEDED = ("transformers", "accelerate", "peft", "safetensors", "pydantic", "pytest")
# …and what it runs without, imported by skpo only where used: what the check does when one is absent.
OPTIONAL = {
    "vllm": "the HF engine rolls out (--engine auto); the contract suite runs the vLLM engine on the fake only; "
            "scripts/vllm_smoke.py is skipped",
    "math_verify": "the stand-in's reward is tests/data/rewards_for_tests.py:parity; a --model run with the "
                   "recipe's math reward needs it",
    "rich": "no progress bar (the check logs with log.progress=false and no terminal)",
    "tensorboard": "no TensorBoard files (log.tensorboard=false)",
    "matplotlib": "no figures (none on the check's path)",
    "pyarrow": "no Parquet data (the check's data is JSONL)",
    "datasets": "no Hugging Face dataset folders (the check's data is JSONL)",
    "wandb": "no wandb logging (log.wandb=false)",
}


def environment() -> dict:
    """Versions, devices, what is missing, what the check carried and what it does without."""
    import torch

    found: dict = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
                   "gpus": [], "packages": {}}
    for i in range(torch.cuda.device_count()):
        p = torch.cuda.get_device_properties(i)
        found["gpus"].append({"name": p.name, "memory_gib": round(p.total_memory / 2**30, 1)})
    for name in (*NEEDED, *OPTIONAL):
        try:
            module = importlib.import_module(name)
            found["packages"][name] = getattr(module, "__version__", None) or installed_version(name)
        except Exception as err:  # noqa: BLE001 - absent or broken: report it
            found["packages"][name] = f"absent ({type(err).__name__})"
    carried = os.environ.get("SKPO_GPU_CHECK_CARRIED", "")
    found["carried"] = [c for c in carried.split(";") if c]
    found["skipped"] = {name: what for name, what in OPTIONAL.items() if found["packages"][name].startswith("absent")}
    return found


def installed_version(module_name: str) -> str:
    """A package's version from its distribution's metadata, for modules without ``__version__``
    (math_verify is distributed as math-verify)."""
    for dist_name in (module_name, module_name.replace("_", "-")):
        try:
            return metadata.version(dist_name)
        except metadata.PackageNotFoundError:
            continue
    return "?"


def run_contract_suite(timeout_s: float) -> dict:
    """tests/test_engine_contract.py in a subprocess: the HF engine on CPU and CUDA, the vLLM
    engine on the fake and, where vLLM imports, the real one."""
    started = time.perf_counter()
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:randomly",
           "tests/test_engine_contract.py", "-rA"]
    try:
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout_s)
        out, code = proc.stdout + proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as err:
        out, code = (err.stdout or b"").decode() if isinstance(err.stdout, bytes) else (err.stdout or ""), "timeout"
    lines = out.strip().splitlines()
    summary = next((line for line in reversed(lines) if " passed" in line or " failed" in line or " error" in line), "")
    passed = [line.split(" ", 1)[1] for line in lines if line.startswith("PASSED ")]
    return {"ok": code == 0, "exit": code, "summary": summary, "seconds": round(time.perf_counter() - started, 1),
            "engines": sorted({p.split("[", 1)[1].rstrip("]") for p in passed if "[" in p}),
            "errors": [line for line in lines if line.startswith(("E ", "FAILED", "ERROR"))][:40] if code != 0 else []}


class PhaseMemory:
    """Peak GPU memory per trainer phase: the trainer's ``Timer`` resets the peak when an
    outermost phase starts and reads it when any phase ends (a phase inside another, such as
    scoring inside the rollout, reports the peak of its outer phase so far)."""

    def __init__(self) -> None:
        self.peak: dict[str, float] = {}
        self.depth = 0

    def install(self) -> None:
        import torch

        from skpo import rollout

        memory, real_call = self, rollout.Timer.__call__

        def call(timer, name):
            inner = real_call(timer, name)

            class Phase:
                def __enter__(self):
                    if memory.depth == 0:
                        torch.cuda.synchronize()
                        torch.cuda.reset_peak_memory_stats()
                    memory.depth += 1
                    return inner.__enter__()

                def __exit__(self, *exc):
                    memory.depth -= 1
                    torch.cuda.synchronize()
                    gib = torch.cuda.max_memory_allocated() / 2**30
                    memory.peak[name] = max(memory.peak.get(name, 0.0), round(gib, 3))
                    return inner.__exit__(*exc)

            return Phase()

        rollout.Timer.__call__ = call


def end_answers_on_average_after(mean_tokens: float) -> None:
    """Give every policy the trainer loads a fixed logit offset on its stop tokens so that a
    random stand-in ends an answer after ``mean_tokens`` tokens on average (a geometric length,
    still cut at the recipe's 3072), as a real model's answers end, instead of every answer
    running to the budget. A forward hook on the LM head: the rollout and every training
    forward see the same model."""
    import math

    from skpo.training import setup

    real = setup.load_run_model

    def load_run_model(cfg, path=None):
        import torch
        from transformers import GenerationConfig

        model = real(cfg, path)
        eos = GenerationConfig.from_pretrained(str(path or cfg.model.path)).eos_token_id
        ids = [eos] if isinstance(eos, int) else list(eos)
        vocab = model.config.vocab_size
        # P(stop) = k·e^b / (V − k + k·e^b) = 1 / mean  ⇔  e^b = (V − k) / (k · (mean − 1))
        bias = torch.zeros(vocab)
        bias[ids] = math.log((vocab - len(ids)) / (len(ids) * (mean_tokens - 1)))
        head = model.get_output_embeddings()
        head.register_forward_hook(lambda module, inputs, out: out + bias.to(out.device, out.dtype))
        return model

    setup.load_run_model = load_run_model


def decode_profile(work: Path, rows: int = 64, steps: int = 48) -> dict:
    """Where a decode step of the Hugging Face engine goes on this GPU: ms per step at ``rows``
    rows, the sampler alone on a ``[rows, vocab]`` logits tensor, and the top operators."""
    import torch

    from skpo.engines import HFEngine, SamplingParams
    from skpo.engines.hf_engine import sample_from_logits
    from skpo.models.loading import load_policy
    from skpo.models.standin import make_standin

    model = load_policy(make_standin("qwen2.5-math-7b", work / "standin-profile")).to("cuda")
    engine = HFEngine(model, pad_token_id=0, autocast_dtype=torch.bfloat16, batch_size=rows)
    prompts = [[100 + i] * 64 for i in range(rows // 8)]
    params = SamplingParams(max_new_tokens=steps, seed=1, ignore_eos=True)
    engine.generate(prompts, 8, SamplingParams(max_new_tokens=4, seed=0, ignore_eos=True))  # warm-up
    out: dict = {"rows": rows}
    for n_rows in (rows, 8):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        engine.generate(prompts[: max(1, n_rows // 8)], 8 if n_rows >= 8 else n_rows, params)
        torch.cuda.synchronize()
        out[f"ms_per_step_{n_rows}_rows"] = round((time.perf_counter() - t0) / steps * 1000, 2)
    logits = torch.randn(rows, model.config.vocab_size, device="cuda", dtype=torch.bfloat16)
    uniforms = torch.rand(rows, device="cuda", dtype=torch.float64)
    for name, exact in (("float64_reference", True), ("blocked", False)):
        sample_from_logits(logits, uniforms, 1.0, 1.0, exact=exact)  # warm-up
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(20):
            sample_from_logits(logits, uniforms, 1.0, 1.0, exact=exact)
        torch.cuda.synchronize()
        out[f"ms_sampler_alone_{name}"] = round((time.perf_counter() - t0) / 20 * 1000, 2)
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        engine.generate(prompts, 8, SamplingParams(max_new_tokens=12, seed=2, ignore_eos=True))
        torch.cuda.synchronize()
    events = prof.key_averages()
    out["top_cpu_ms"] = {e.key: round(e.self_cpu_time_total / 1000, 2)
                         for e in sorted(events, key=lambda e: -e.self_cpu_time_total)[:10]}
    out["top_gpu_ms"] = {e.key: round(getattr(e, "self_device_time_total", 0) / 1000, 2)
                         for e in sorted(events, key=lambda e: -getattr(e, "self_device_time_total", 0))[:8]}
    return out


def vllm_smoke(work: Path, timeout_s: float) -> dict:
    """scripts/vllm_smoke.py in a process of its own (the engine on real vLLM: start, generate,
    sleep, a tied 1.2 GB model synced in small buckets, generate, log-probs against the HF
    engine's; peak memory per phase)."""
    started = time.perf_counter()
    out_path = work / "vllm_smoke.json"
    try:
        proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "vllm_smoke.py"), "--report", str(out_path)],
                              cwd=ROOT, capture_output=True, text=True, timeout=timeout_s)
        code, tail = proc.returncode, "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-8:])
    except subprocess.TimeoutExpired:
        code, tail = "timeout", ""
    result = json.loads(out_path.read_text()) if out_path.is_file() else {}
    result.update({"exit": code, "seconds": round(time.perf_counter() - started, 1)})
    if code != 0:
        result["tail"] = tail
    return result


def sampler_decode(work: Path, rows: int, steps: int) -> dict:
    """Decode tokens/s of the Hugging Face engine on the Qwen stand-in (152,064-token vocabulary)
    with each sampler (``skpo.engines.hf_engine.sample_from_logits``): the float64 reference (a
    cumulative sum over the whole vocabulary) and the blocked one (the default on CUDA), on the
    same prompts and seeds, side by side; and how many of the sampled tokens the two share."""
    import torch

    from skpo.engines import HFEngine, SamplingParams
    from skpo.models.loading import load_policy
    from skpo.models.standin import make_standin

    cuda = torch.cuda.is_available()
    path = work / "standin-qwen2.5-math-7b"  # (train_steps trains the same one)
    model = load_policy(path if (path / "standin.json").is_file() else make_standin("qwen2.5-math-7b", path))
    model = model.to("cuda") if cuda else model
    prompts = [[100 + i] * 64 for i in range(max(1, rows // 8))]
    per_prompt = min(8, rows)
    out: dict = {"rows": len(prompts) * per_prompt, "steps": steps, "device": "cuda" if cuda else "cpu",
                 "decode_tokens_per_s": {}}
    tokens = {}
    for name, exact in (("float64_reference", True), ("blocked", False)):
        engine = HFEngine(model, pad_token_id=0, autocast_dtype=torch.bfloat16 if cuda else None,
                          batch_size=len(prompts) * per_prompt, exact_sampling=exact)
        engine.generate(prompts, per_prompt, SamplingParams(max_new_tokens=2, seed=0, ignore_eos=True))  # warm-up
        if cuda:
            torch.cuda.synchronize()
        started = time.perf_counter()
        result = engine.generate(prompts, per_prompt, SamplingParams(max_new_tokens=steps, seed=1, ignore_eos=True))
        if cuda:
            torch.cuda.synchronize()
        seconds = time.perf_counter() - started
        tokens[name] = [t for row in result for c in row for t in c.token_ids]
        out["decode_tokens_per_s"][name] = round(len(tokens[name]) / seconds, 1)
    same = sum(a == b for a, b in zip(tokens["float64_reference"], tokens["blocked"]))
    out["same_tokens"] = f"{same} of {len(tokens['blocked'])}"  # a first difference changes the rest of its row
    out["speedup"] = round(out["decode_tokens_per_s"]["blocked"] / out["decode_tokens_per_s"]["float64_reference"], 2)
    return out


def train_steps(args, work: Path, deadline: float, engine: str) -> dict:
    """``args.steps`` steps of the recipe; per step: phase times, tokens/s, peak memory per phase."""
    import torch

    from skpo.config import load_config
    from skpo.evaluation.benchmarks import get_spec, load_problems
    from skpo.training.setup import build_trainer

    family = "llama-3.2-3b-instruct" if "llama" in Path(args.recipe).name else "qwen2.5-math-7b"
    overrides = []
    model = args.model
    if model is None:
        from skpo.models.standin import make_standin

        path = work / f"standin-{family}"
        model = str(path if (path / "standin.json").is_file() else make_standin(family, path))
        overrides.append(f"reward.function={ROOT / 'tests/data/rewards_for_tests.py'}:parity")
        if args.answer_mean and engine == "hf":
            end_answers_on_average_after(args.answer_mean)
    rows = []
    for prob in sorted(load_problems(get_spec("math500")), key=lambda x: len(x.question))[: 4 * args.prompts]:
        rows.append({"prompt": [{"role": "user", "content": prob.question}], "reward_model": {"ground_truth": prob.gold}})
    data = work / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = load_config(args.recipe, [f"model.path={model}", f"data.path={data}", f"train.steps={args.steps}",
                                    f"train.prompts_per_step={args.prompts}", f"rollout.engine={engine}",
                                    "eval.every=0", "log.progress=false", "log.tensorboard=false", "log.save_every=0",
                                    f"log.out_dir={work / ('run-' + engine)}", *overrides, *args.set])
    memory = PhaseMemory()
    if torch.cuda.is_available():
        memory.install()
    started = time.perf_counter()
    trainer = build_trainer(cfg)
    result = {"recipe": str(Path(args.recipe).relative_to(ROOT)) if Path(args.recipe).is_relative_to(ROOT) else args.recipe,
              "engine": engine, "model": model, "prompts_per_step": args.prompts,
              "group_size": trainer.method.group_size, "max_prompt_tokens": cfg.data.max_prompt_tokens,
              "max_new_tokens": cfg.rollout.max_new_tokens, "context": trainer.context_window.tokens,
              "compute_dtype": cfg.model.dtype, "setup_seconds": round(time.perf_counter() - started, 1),
              "sampler": "blocked" if torch.cuda.is_available() else "float64_reference",  # the HF engine's default
              "stand_in_answer_mean": args.answer_mean if args.model is None and engine == "hf" else None, "steps": []}
    print(f"set-up {result['setup_seconds']} s ({engine} engine, {family}, context {trainer.context_window.tokens})", flush=True)
    for step in range(args.steps):
        if step and time.perf_counter() + 1.5 * max(s["seconds"]["step"] for s in result["steps"]) > deadline:
            result["stopped_early"] = f"time budget: {step} of {args.steps} steps"
            break
        memory.peak.clear()
        step_peak = 0.0
        m = trainer.train_step(step)
        trainer.state.step += 1
        row = {"step": step + 1,
               "seconds": {k.removeprefix("time/"): round(v, 2) for k, v in m.items() if k.startswith("time/")},
               "decoded_tokens": m["tokens/decoded"], "trained_tokens": m["tokens/trained"],
               "decode_tokens_per_s": round(m["throughput/decoded_tokens_per_s"]),
               "trained_tokens_per_s": round(m["throughput/trained_tokens_per_s"]),
               "cut_by_context": m["rollout/cut_by_context"],
               "peak_gib_by_phase": dict(memory.peak),
               "peak_gib_step": max(memory.peak.values(), default=step_peak)}
        result["steps"].append(row)
        print(json.dumps(row), flush=True)
    trainer.close()
    result["seconds"] = round(time.perf_counter() - started, 1)
    return result


def fsdp_run(work: Path, timeout_s: float) -> dict:
    """Two ranks over NCCL: 2 sharded steps of the SKPO recipe on the stand-in with a
    checkpoint at step 2, then a resume to step 3."""
    from skpo.models.standin import make_standin

    started = time.perf_counter()
    standin = make_standin("qwen2.5-math-7b", work / "standin-fsdp")
    data = work / "data.jsonl"
    common = [f"--config={ROOT / 'configs/paper/qwen2.5-math-7b-skpo.yaml'}", f"model.path={standin}",
              f"data.path={data}", f"reward.function={ROOT / 'tests/data/rewards_for_tests.py'}:parity",
              "train.fsdp.enabled=true", "train.prompts_per_step=4", "method.group_size=4", "rollout.max_new_tokens=256",
              "eval.every=0", "log.save_every=2", "log.progress=false", f"log.out_dir={work / 'fsdp'}"]
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "-m", "skpo.cli", "train"]
    out = {}
    for name, extra in (("two_steps", ["train.steps=2"]), ("resume_to_three", ["train.steps=3", "--resume"])):
        left = timeout_s - (time.perf_counter() - started)
        proc = subprocess.run([*launch, *common, *extra], cwd=ROOT, capture_output=True, text=True, timeout=max(30, left))
        out[name] = {"exit": proc.returncode, "tail": "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-8:])}
        if proc.returncode:
            break
    shards = sorted(p.name for p in (work / "fsdp" / "checkpoints" / "step_000003" / "optimizer").glob("*.distcp")) \
        if (work / "fsdp" / "checkpoints" / "step_000003").is_dir() else []
    return {"ok": all(v["exit"] == 0 for v in out.values()) and len(shards) == 2, "runs": out, "optimizer_shards": shards,
            "seconds": round(time.perf_counter() - started, 1)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--report", type=Path, default=None, help="JSON report (default: a temporary directory)")
    p.add_argument("--recipe", default=str(ROOT / "configs/paper/qwen2.5-math-7b-skpo.yaml"))
    p.add_argument("--model", default=None, help="a real local model directory (default: a stand-in)")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--prompts", type=int, default=8, help="prompts per step (the recipe: 128)")
    p.add_argument("--engine", choices=("auto", "vllm", "hf"), default="auto", help="auto: vLLM where it imports")
    p.add_argument("--budget-s", type=float, default=480.0, help="wall-clock budget of the whole check (default 8 min)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a config override (repeatable)")
    p.add_argument("--answer-mean", type=float, default=150.0,
                   help="a stand-in on the HF engine ends its answers after this many tokens on average (0: never, "
                   "every answer runs to 3072; see end_answers_on_average_after)")
    p.add_argument("--profile", action="store_true", help="also profile the HF engine's decode step")
    p.add_argument("--allow-cpu", action="store_true", help="run without a GPU (a dry run of the script itself)")
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="skpo-gpu-check-"))
    try:
        return run_check(args, work)
    finally:
        if args.report is not None:  # the report lives elsewhere: the stand-in and runs go
            shutil.rmtree(work, ignore_errors=True)


def run_check(args: argparse.Namespace, work: Path) -> int:
    """Every phase in turn, the report rewritten after each; 0 when all passed."""
    started = time.perf_counter()
    deadline = started + args.budget_s
    report_path = args.report or work / "gpu_check.json"
    report: dict = {"environment": environment()}

    def write() -> None:
        report["seconds"] = round(time.perf_counter() - started, 1)
        report_path.parent.mkdir(parents=True, exist_ok=True)
        report_path.write_text(json.dumps(report, indent=1))

    print(json.dumps(report["environment"]), flush=True)
    import torch

    if not torch.cuda.is_available() and not args.allow_cpu:
        report["error"] = "no CUDA device"
        write()
        print("no CUDA device: nothing to check", file=sys.stderr)
        return 1
    report["contract_suite"] = run_contract_suite(timeout_s=min(180.0, deadline - time.perf_counter()))
    print("contract suite:", report["contract_suite"]["summary"], flush=True)
    write()
    try:
        cuda = torch.cuda.is_available()
        report["sampler_decode"] = sampler_decode(work, rows=64 if cuda else 2, steps=64 if cuda else 3)
    except Exception as err:  # noqa: BLE001 - a measurement, not a check
        report["sampler_decode"] = {"error": f"{type(err).__name__}: {err}"}
    print("decode tokens/s by sampler:", json.dumps(report["sampler_decode"]), flush=True)
    write()
    if args.profile and torch.cuda.is_available():
        try:
            report["decode_profile"] = decode_profile(work)
        except Exception as err:  # noqa: BLE001 - a measurement, not a check
            report["decode_profile"] = {"error": f"{type(err).__name__}: {err}"}
        print("decode profile:", json.dumps(report["decode_profile"]), flush=True)
        write()
    vllm_present = not report["environment"]["packages"]["vllm"].startswith("absent")
    if vllm_present and torch.cuda.is_available():
        report["vllm_smoke"] = vllm_smoke(work, timeout_s=max(60.0, min(300.0, deadline - time.perf_counter() - 120)))
    else:
        report["vllm_smoke"] = {"skipped": "vLLM does not import here" if not vllm_present else "no CUDA device"}
    print("vLLM smoke test:", json.dumps({k: v for k, v in report["vllm_smoke"].items() if k != "phases"}), flush=True)
    write()
    engine = args.engine if args.engine != "auto" else ("vllm" if vllm_present else "hf")
    gpus = torch.cuda.device_count()
    try:
        reserve = 150.0 if gpus >= 2 else 10.0  # time kept for the FSDP run
        report["training"] = train_steps(args, work, deadline - reserve, engine)
    except Exception as err:  # noqa: BLE001 - reported, and the check fails
        import traceback

        report["training"] = {"ok": False, "error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc()[-3000:]}
    else:
        report["training"]["ok"] = len(report["training"]["steps"]) > 0
    write()
    if gpus >= 2:
        report["fsdp"] = fsdp_run(work, timeout_s=max(60.0, deadline - time.perf_counter()))
    else:
        report["fsdp"] = {"skipped": f"{gpus} GPU: the 2-rank FSDP2 run needs 2 (it runs on CPU over gloo in "
                                     "tests/test_distributed.py)"}
    ok = (report["contract_suite"]["ok"] and report["training"].get("ok", False) and report["fsdp"].get("ok", True)
          and report["vllm_smoke"].get("ok", True))
    report["ok"] = bool(ok)
    write()
    print(f"{'OK' if ok else 'FAILED'}: report {report_path} ({report['seconds']} s)", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
