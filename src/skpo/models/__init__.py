"""skpo.models: tokenizer, tiny Qwen2 policy, and local loading of any HF model directory.

- :mod:`skpo.models.tokenizer` — the embedded default's character-level tokenizer.
- :mod:`skpo.models.tiny` — the ~1M-parameter Qwen2-architecture model.
- :mod:`skpo.models.loading` — ``load_policy`` / ``load_tokenizer`` (local files only) and
  ``tiny_arith_dir()``, the shipped warm-started checkpoint.
"""

from skpo.models.loading import load_policy, load_tokenizer, tiny_arith_dir
from skpo.models.tiny import TinyConfig, build_tiny_model, count_parameters
from skpo.models.tokenizer import build_tokenizer

__all__ = [
    "TinyConfig",
    "build_tiny_model",
    "build_tokenizer",
    "count_parameters",
    "load_policy",
    "load_tokenizer",
    "tiny_arith_dir",
]
