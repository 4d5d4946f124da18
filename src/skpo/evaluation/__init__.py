"""skpo.evaluation: sampling-based metrics, benchmark specs and the evaluation runner.

- :mod:`skpo.evaluation.metrics` — avg@k, unbiased pass@k, maj@k, success histograms (pure).
- :mod:`skpo.evaluation.benchmarks` — :class:`BenchmarkSpec`, the built-in benchmarks, the JSONL
  loader, verifier dispatch.
- :mod:`skpo.evaluation.runner` — :func:`evaluate`: sample ``k`` per problem, verify, summarise.
"""

from skpo.evaluation.benchmarks import (
    BUILTIN_BENCHMARKS,
    BenchmarkDataError,
    BenchmarkSpec,
    Problem,
    get_spec,
    load_problems,
    load_spec_file,
    score_completions,
)
from skpo.evaluation.metrics import (
    avg_at_k,
    maj_at_k,
    majority_vote,
    mean_pass_at_k,
    pass_at_k,
    pass_k_values,
    success_histogram,
    success_rates,
)
from skpo.evaluation.runner import evaluate

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
