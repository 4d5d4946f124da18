"""skpo.evaluation: sampling-based metrics, benchmark specs and the evaluation runner.

- :mod:`skpo.evaluation.metrics` — avg@k, unbiased pass@k, maj@k, success histograms (pure).
- :mod:`skpo.evaluation.benchmarks` — :class:`BenchmarkSpec`, the built-in benchmarks, the JSONL
  loader, verifier dispatch.
- :mod:`skpo.evaluation.runner` — :func:`evaluate`: sample ``k`` per problem, verify, summarise.
"""

import importlib

# Names resolve on first use (PEP 562), so ``skpo eval --help`` and the benchmark specs load
# without the torch-based runner.
_HOMES = {
    "benchmarks": ("BUILTIN_BENCHMARKS", "BenchmarkDataError", "BenchmarkSpec", "Problem", "get_spec", "load_problems",
                   "load_spec_file", "score_completions"),
    "metrics": ("avg_at_k", "maj_at_k", "majority_vote", "mean_pass_at_k", "pass_at_k", "pass_k_values",
                "success_histogram", "success_rates"),
    "runner": ("evaluate",),
}
_WHERE = {name: module for module, names in _HOMES.items() for name in names}


def __getattr__(name: str):
    if name not in _WHERE:
        raise AttributeError(f"module 'skpo.evaluation' has no attribute {name!r}")
    return getattr(importlib.import_module(f"skpo.evaluation.{_WHERE[name]}"), name)


__all__ = [
    "BUILTIN_BENCHMARKS",
    "BenchmarkDataError",
    "BenchmarkSpec",
    "Problem",
    "avg_at_k",
    "evaluate",
    "get_spec",
    "load_problems",
    "load_spec_file",
    "maj_at_k",
    "majority_vote",
    "mean_pass_at_k",
    "pass_at_k",
    "pass_k_values",
    "score_completions",
    "success_histogram",
    "success_rates",
]
