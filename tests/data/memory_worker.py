"""One rank (or the one process) of tests/test_memory.py: shard a stand-in with the trainer's
FSDP2 set-up, take one AdamW step, and write the bytes this rank holds for weights, gradients
and optimizer state, with the parameters' shapes.

    python memory_worker.py MODEL_DIR OUT_JSON     # under RANK/WORLD_SIZE env for 2 ranks
"""

from __future__ import annotations

import json
import os
import sys

import torch

torch.set_num_threads(1)


def local(t) -> torch.Tensor:
    return t.to_local() if hasattr(t, "to_local") else t


def nbytes(t) -> int:
    t = local(t)
    return t.numel() * t.element_size()


def main() -> None:
    from skpo.models.loading import load_policy
    from skpo.training.sharding import ShardingSettings, shard_model

    model_dir, out = sys.argv[1], sys.argv[2]
    world = int(os.environ.get("WORLD_SIZE", "1"))
    model = load_policy(model_dir, dtype="float32")  # float32 master weights, as a run loads them
    shapes = [list(p.shape) for p in model.parameters()]
    if world > 1:
        torch.distributed.init_process_group("gloo")
        shard_model(model, ShardingSettings(), torch.device("cpu"), compute_dtype=torch.bfloat16)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    logits = model(input_ids=torch.tensor([[5, 6, 7, 8]])).logits
    logits.float().logsumexp(-1).sum().backward()
    grads = sum(nbytes(p.grad) for p in model.parameters() if p.grad is not None)
    optimizer.step()
    moments = sum(nbytes(v) for state in optimizer.state.values() for k, v in state.items() if k != "step")
    rank = int(os.environ.get("RANK", "0"))
    with open(out, "w") as f:
        json.dump({"rank": rank, "world": world, "shapes": shapes, "weights": sum(nbytes(p) for p in model.parameters()),
                   "gradients": grads, "optimizer": moments}, f)
    if world > 1:
        torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main()
