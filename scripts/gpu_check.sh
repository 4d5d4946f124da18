#!/usr/bin/env bash
# The GPU check, on a bare GPU machine: python3 with torch + CUDA, transformers, accelerate,
# peft and pytest; vLLM optional; no internet and nothing to install. It reports what it found,
# runs the engine contract suite on CUDA (the Hugging Face engine; vLLM where it imports), times
# the HF engine's decoding with each sampler, runs scripts/vllm_smoke.py where vLLM imports, then
# 5 steps of the paper's SKPO recipe on a Qwen2.5-Math-7B stand-in at the paper's lengths (1024 +
# 3072) in bf16, then, with 2+ GPUs, a 2-rank FSDP2 run over NCCL with a resume. Per phase: time,
# tokens/s and peak GPU memory; one JSON report. About 8 minutes at most on one H200.
#
#   scripts/gpu_check.sh [REPORT.json] [gpu_check.py options: --model DIR --steps N --prompts N …]
#
# pydantic (the config's schema) is the one package such an image may lack that the check
# needs: its wheels for CPython 3.12 on x86-64 are carried in scripts/gpu_wheels/ and unpacked
# onto PYTHONPATH when the import fails (no pip, no network). Everything else skpo uses that such
# an image may lack (vLLM, math-verify, rich, tensorboard, matplotlib, pyarrow, datasets, wandb)
# is imported only where it is used, off the check's path; the report lists what it carried and
# what it did without (tests/test_gpu_check_script.py runs the check with those blocked).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
REPORT=${1:-${OUT:-$(mktemp -d)}/gpu_check.json}
[ $# -ge 1 ] && shift
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
if ! "$PY" -c "import pydantic" 2>/dev/null; then
  SITE=$(mktemp -d)
  "$PY" - "$SITE" scripts/gpu_wheels/*.whl <<'PYEOF'
import sys, zipfile
for wheel in sys.argv[2:]:
    zipfile.ZipFile(wheel).extractall(sys.argv[1])
PYEOF
  export PYTHONPATH="$PYTHONPATH:$SITE"
  export SKPO_GPU_CHECK_CARRIED="pydantic from scripts/gpu_wheels"
  "$PY" -c "import pydantic" || { echo "pydantic is missing and the carried wheels do not load here" >&2; exit 1; }
fi
exec "$PY" scripts/gpu_check.py --report "$REPORT" "$@"
