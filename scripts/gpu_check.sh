#!/usr/bin/env bash
# On a GPU machine: the engine contract suite over every engine present (the Hugging Face
# engine, and vLLM when it imports), then 5 steps of the paper's SKPO recipe at the paper's
# lengths on a stand-in of Qwen2.5-Math-7B (or the model given), printing time and tokens/s per
# phase and peak GPU memory. Under 10 minutes on one modern GPU.
#
#   scripts/gpu_check.sh [MODEL_DIR]      # after: pip install -e ".[dev,vllm]"
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
"$PY" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name(0))"
"$PY" -c "import vllm; print('vllm', vllm.__version__)" || echo "vllm not importable: the contract suite runs the HF engine only"
"$PY" -m pytest -q tests/test_engine_contract.py
ENGINE=vllm
"$PY" -c "import vllm" 2>/dev/null || ENGINE=hf
if [ $# -ge 1 ]; then
  timeout 600 "$PY" scripts/gpu_check.py --engine "$ENGINE" --model "$1"
else
  timeout 600 "$PY" scripts/gpu_check.py --engine "$ENGINE"
fi
