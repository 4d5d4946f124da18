"""One rank of a data-parallel run (tests/test_distributed.py), or the one-process replay.

    python dist_worker.py record RECORD_DIR OVERRIDES_JSON     # under RANK/WORLD_SIZE env
    python dist_worker.py replay RECORD_DIR OVERRIDES_JSON     # one process
    python dist_worker.py resume RECORD_DIR OVERRIDES_JSON     # --resume, the method's own rollouts

``record`` trains with the method's own rollout kind, saving what each rank's rollout
returned at every step; ``replay`` trains one process whose rollout returns, at each step, the
ranks' recorded results joined in rank order — the same global batch.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import torch

torch.set_num_threads(1)


def main() -> None:
    mode, record_dir, overrides = sys.argv[1], Path(sys.argv[2]), json.loads(sys.argv[3])
    from skpo import rollout
    from skpo.config import load_config
    from skpo.rows import concat_rows
    from skpo.training.distributed import merge_rank_metrics
    from skpo.training.setup import build_trainer

    cfg = load_config(None, overrides)
    kind = cfg.resolved().method.rollout
    entry = rollout.ROLLOUTS.get(kind)
    real = entry.fn

    def recording(ctx, items):
        result = real(ctx, items)
        torch.save(result, record_dir / f"step{ctx.step}_rank{ctx.rank}.pt")
        return result

    def replay(ctx, items):
        parts = [torch.load(p, weights_only=False) for p in sorted(record_dir.glob(f"step{ctx.step}_rank*.pt"))]
        obs = None
        if parts[0].length_observations is not None:
            obs = ([k for p in parts for k in p.length_observations[0]], [v for p in parts for v in p.length_observations[1]])
        metrics = merge_rank_metrics([(p.metrics, len(p.rows)) for p in parts])  # as the ranks' are merged
        return dataclasses.replace(parts[0], rows=concat_rows([p.rows for p in parts], ctx.pad_id), metrics=metrics,
                                   decoded_tokens=sum(p.decoded_tokens for p in parts),
                                   prefill_tokens=sum(p.prefill_tokens for p in parts), length_observations=obs,
                                   verdicts={k: v for p in parts for k, v in p.verdicts.items()})

    if mode != "resume":
        rollout.ROLLOUTS._entries[kind] = dataclasses.replace(entry, fn=recording if mode == "record" else replay)
    trainer = build_trainer(cfg, resume=mode == "resume")
    trainer.train()
    from skpo.training.sharding import full_named_tensors, full_weights

    weights = {k: v.detach().cpu() for k, v in full_named_tensors(trainer.policy)}  # (sharded: a collective)
    with full_weights(trainer.actor.model if trainer.actor.sharding is not None else None):  # what a gathered layer computes in
        gathered_dtype = str(next(trainer.policy.model.layers[0].parameters()).dtype)
    engine_matches = None
    llm = getattr(trainer.engine, "llm", None)
    if llm is not None:  # a vLLM engine (the fake in tests): does it hold the policy's weights, in its dtype?
        dtype = getattr(torch, cfg.model.dtype)
        held = llm.model.state_dict()
        engine_matches = all(torch.equal(held[k], w.to(dtype).to(held[k].dtype)) for k, w in weights.items() if k in held)
        if not engine_matches:  # every rank checks its own engine
            sys.exit(f"rank {trainer.accelerator.process_index}: the engine does not hold the policy's weights")
    if trainer.accelerator.is_main_process:
        torch.save(weights, Path(cfg.log.out_dir) / "final.pt")
        (Path(cfg.log.out_dir) / "final.json").write_text(json.dumps(
            {"tokens_seen": trainer.state.tokens_seen, "step": trainer.state.step, "gathered_dtype": gathered_dtype,
             "engine_matches": engine_matches,
             "value_tracker": trainer.state.value_tracker.state_dict() if trainer.state.value_tracker else None}, default=str))
    print(f"rank {trainer.accelerator.process_index} done step {trainer.state.step}", flush=True)
    from skpo.training.distributed import shutdown

    shutdown()


if __name__ == "__main__":
    main()
