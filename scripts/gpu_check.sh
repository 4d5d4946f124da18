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
# With 2+ GPUs: FSDP2 over NCCL (bf16 autocast, float32 shards), the 2-process sharding tests
# on GPUs, then 3 sharded steps of the SKPO recipe on the stand-in with a checkpoint at step 2
# and a resume to step 3.
GPUS=$("$PY" -c "import torch; print(torch.cuda.device_count())")
if [ "$GPUS" -ge 2 ]; then
  OUT=$(mktemp -d)
  "$PY" -m skpo.cli standin --like qwen2.5-math-7b --out "$OUT/standin"
  "$PY" - "$OUT/data.jsonl" <<'PYEOF'
import json, sys
from skpo.evaluation.benchmarks import get_spec, load_problems
probs = sorted(load_problems(get_spec("math500")), key=lambda x: len(x.question))[:32]
rows = [{"prompt": [{"role": "user", "content": p.question}], "reward_model": {"ground_truth": p.gold}} for p in probs]
open(sys.argv[1], "w").write("".join(json.dumps(r) + "\n" for r in rows))
PYEOF
  COMMON=(--config configs/paper/qwen2.5-math-7b-skpo.yaml "model.path=$OUT/standin" "data.path=$OUT/data.jsonl"
          "reward.function=$PWD/tests/data/rewards_for_tests.py:parity" train.fsdp.enabled=true
          train.prompts_per_step=4 rollout.group_size=4 rollout.max_new_tokens=256 eval.every=0 log.save_every=2
          log.progress=false "log.out_dir=$OUT/fsdp")
  timeout 300 torchrun --nproc_per_node 2 -m skpo.cli train "${COMMON[@]}" train.steps=2
  timeout 300 torchrun --nproc_per_node 2 -m skpo.cli train "${COMMON[@]}" train.steps=3 --resume
  ls "$OUT/fsdp/checkpoints/step_000003/optimizer"
else
  echo "one GPU: the FSDP2 check needs 2 (it ran on CPU over gloo in tests/test_distributed.py)"
fi
