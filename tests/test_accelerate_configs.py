"""The launch configs in ``configs/accelerate/``: each is a valid accelerate config, and the
FSDP ones reach skpo's sharding as their files say (through the ``FSDP_*`` variables that
``accelerate launch`` exports; ``tests/test_distributed.py`` trains under those variables)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from skpo.config import FSDPSection
from skpo.training.sharding import ShardingSettings, sharding_settings

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs" / "accelerate").glob("*.yaml"))


def launch_env(path: Path) -> tuple[dict[str, str], int]:
    """The variables ``accelerate launch --config_file path`` exports for FSDP, and its process count."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils.launch import prepare_multi_gpu_env

    args, _, _ = _validate_launch_command(launch_command_parser().parse_args(["--config_file", str(path), "x.py"]))
    env = prepare_multi_gpu_env(args) if args.use_fsdp else {}
    return {k: v for k, v in env.items() if k.startswith(("FSDP_", "ACCELERATE_USE_FSDP"))}, int(args.num_processes)


def fake_accelerator(processes: int):
    return SimpleNamespace(state=SimpleNamespace(), num_processes=processes)


def test_the_shipped_set():
    assert {p.name for p in CONFIGS} == {"1gpu.yaml", "ddp_8gpu.yaml", "fsdp2_8gpu.yaml", "fsdp2_offload_2gpu.yaml",
                                         "fsdp2_2nodes.yaml"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_each_config_launches_what_it_says(path, monkeypatch):
    env, processes = launch_env(path)
    for key in [k for k in list(__import__("os").environ) if k.startswith(("FSDP_", "ACCELERATE_USE_FSDP"))]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = sharding_settings(FSDPSection(), False, fake_accelerator(processes))
    if "fsdp" not in path.name:
        assert settings is None and not env
        return
    assert env["FSDP_VERSION"] == "2"
    assert settings == ShardingSettings(reshard_after_forward=True, cpu_offload="offload" in path.name,
                                        gradient_checkpointing=True, source="accelerate config")
    assert processes == (16 if "2nodes" in path.name else 2 if "2gpu" in path.name else 8)


def test_train_fsdp_section_and_its_limits(monkeypatch):
    monkeypatch.delenv("ACCELERATE_USE_FSDP", raising=False)
    section = FSDPSection(enabled=True, reshard_after_forward=False, cpu_offload=True)
    assert sharding_settings(section, True, fake_accelerator(4)) == ShardingSettings(False, True, True, "train.fsdp")
    assert sharding_settings(FSDPSection(), False, fake_accelerator(4)) is None
    assert sharding_settings(section, False, fake_accelerator(1)) is None  # one process: nothing to shard
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    monkeypatch.setenv("FSDP_VERSION", "1")
    with pytest.raises(ValueError, match="fsdp_version: 2"):
        sharding_settings(FSDPSection(), False, fake_accelerator(4))
