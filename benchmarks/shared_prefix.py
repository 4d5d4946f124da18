"""Shared-prefix vs unshared downstream generation with HFEngine (a script, not a test).

SKPO's downstream phase samples G answers from one prompt ``[s, q]``. ``HFEngine`` prefills
the prompt once and repeats its KV cache for the G rows (``share_prefix=True``); the
unshared path prefills G copies (``share_prefix=False``; same tokens, checked below). As a
reference, ``model.generate(num_return_sequences=n)`` also expands the prompt before prefill.

The three variants run interleaved (order rotated every repetition) and the table reports
the median of the repetitions and the ratio measured side by side in the same run — the
machine is shared and noisy, so absolute seconds mean little.

    python benchmarks/shared_prefix.py                      # defaults below
    python benchmarks/shared_prefix.py --prefix 32 128 512 --n 8 --new 32 --reps 7
"""

from __future__ import annotations

import argparse

import _bench
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from skpo.engines import HFEngine, SamplingParams


def build_model(vocab: int, seed: int = 0) -> Qwen2ForCausalLM:
    torch.manual_seed(seed)
    cfg = Qwen2Config(
        vocab_size=vocab, hidden_size=256, intermediate_size=768, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
        tie_word_embeddings=False, pad_token_id=0, eos_token_id=1,
    )
    return Qwen2ForCausalLM(cfg).float().eval()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--prefix", type=int, nargs="+", default=[32, 128, 512])
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--new", type=int, default=32)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--vocab", type=int, default=1024)
    ap.add_argument(
        "--threads", type=int, default=1,
        help="torch threads (1 by default: on a shared machine, more threads than free cores "
        "make OpenMP barriers stall for seconds; 0 = leave torch's default)",
    )
    ap.add_argument("--no-hf", action="store_true", help="skip the model.generate reference")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    model = build_model(args.vocab)
    n_params = sum(p.numel() for p in model.parameters())
    # No stop tokens: every row generates exactly `new` tokens, so the work is identical.
    params = SamplingParams(temperature=1.0, max_new_tokens=args.new, seed=0)
    shared = HFEngine(model, pad_token_id=0, eos_token_id=None, batch_size=args.n, share_prefix=True)
    unshared = HFEngine(model, pad_token_id=0, eos_token_id=None, batch_size=args.n, share_prefix=False)

    def hf_generate(prompt: list[int]) -> None:
        ids = torch.tensor([prompt])
        with torch.inference_mode():
            model.generate(
                ids, attention_mask=torch.ones_like(ids), do_sample=True, top_k=0, top_p=1.0,
                num_return_sequences=args.n, max_new_tokens=args.new, min_new_tokens=args.new,
                pad_token_id=0, eos_token_id=None,
            )

    print(f"# {_bench.machine_line()}")
    print(
        f"# Qwen2 {n_params / 1e6:.2f}M params, float32, torch threads {torch.get_num_threads()}, "
        f"n={args.n} samples of {args.new} new tokens from one prompt, median of {args.reps} "
        f"interleaved repetitions"
    )
    cols = ["prefix", "shared s", "unshared s", "unshared/shared"]
    if not args.no_hf:
        cols += ["HF generate s", "HF/shared"]
    print("| " + " | ".join(cols) + " |")
    print("|" + "|".join("---:" for _ in cols) + "|")
    g = torch.Generator().manual_seed(1)
    for plen in args.prefix:
        prompt = torch.randint(2, args.vocab, (plen,), generator=g).tolist()
        variants = {
            "shared": lambda: shared.generate([prompt], args.n, params),  # noqa: B023 - called in this iteration  # noqa: B023 - called in this iteration  # noqa: B023 - called in this iteration
            "unshared": lambda: unshared.generate([prompt], args.n, params),  # noqa: B023 - called in this iteration  # noqa: B023 - called in this iteration  # noqa: B023 - called in this iteration
        }
        if not args.no_hf:
            variants["hf"] = lambda: hf_generate(prompt)  # noqa: B023 - called in this iteration  # noqa: B023 - called in this iteration  # noqa: B023 - called in this iteration
        # Same samples either way (the speed-up is not bought with different work); this
        # also warms up every variant before timing.
        a, b = variants["shared"](), variants["unshared"]()
        assert [c.token_ids for c in a[0]] == [c.token_ids for c in b[0]]
        if "hf" in variants:
            variants["hf"]()
        times = _bench.interleave(variants, args.reps)
        med = {k: _bench.median(v) for k, v in times.items()}
        # Ratio per repetition (paired, same moment on the machine), then the median.
        ratio = _bench.paired_ratio(times["unshared"], times["shared"])
        row = [str(plen), f"{med['shared']:.3f}", f"{med['unshared']:.3f}", f"{ratio:.2f}×"]
        if not args.no_hf:
            hf_ratio = _bench.paired_ratio(times["hf"], times["shared"])
            row += [f"{med['hf']:.3f}", f"{hf_ratio:.2f}×"]
        print("| " + " | ".join(row) + " |", flush=True)


if __name__ == "__main__":
    main()
