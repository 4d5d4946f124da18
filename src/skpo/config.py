"""Run configuration: pydantic models loaded from YAML, with ``key.sub=value`` overrides.

Unknown keys and bad values are errors that name the key (``train.lr: Input should be a
valid number``). One ``RunConfig`` holds everything a ``skpo train`` run needs.
"""

from __future__ import annotations

import difflib
import math
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from skpo.errors import ConfigError, MethodError
from skpo.methods import is_method_file, method_names, resolve_for_run
from skpo.plugins import import_plugins
from skpo.tasks.arith import ArithConfig
from skpo.tasks.dataset import DatasetSpec

MATH_TEMPLATE = "{question}\nPlease reason step by step, and put your final answer within \\boxed{}."


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class LoraSection(_Strict):
    """LoRA through peft: adapters train, the frozen base is also the KL reference."""

    enabled: bool = False
    r: int = Field(16, ge=1)
    alpha: float = Field(32.0, gt=0)
    dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: list[str] = Field(
        ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        description="module names that get adapters (Qwen2 / Llama projection names)",
    )


class ModelSection(_Strict):
    """The policy. Mixed precision as verl and TRL do it: float32 master weights and AdamW
    state, ``dtype`` the compute precision of every forward (``torch.autocast``)."""

    path: str = Field("tiny-arith", description="local HF model directory, or a shipped warm start: 'tiny-arith' (the embedded default), 'tiny-arith-long' (5-8 operations)")
    dtype: Literal["float32", "bfloat16", "float16"] = Field(
        "float32", description="compute precision: bfloat16/float16 autocast over float32 master weights"
    )
    pure_low_precision: bool = Field(
        False, description="hold the weights and optimizer state in `dtype` itself (less memory; at lr ~1e-6 most "
        "bf16 updates round away — warns)",
    )
    lm_head_precision: Literal["auto", "compute", "float32"] = Field(
        "auto", description="where the LM head computes under mixed precision: 'compute' (= dtype), 'float32' "
        "(TRL's cast_lm_head_to_fp32), 'auto' = float32 on CPU (bf16 GEMMs are slow there), compute elsewhere",
    )
    device: str = Field("auto", description="'auto', 'cpu', 'cuda', 'cuda:1', …")
    lora: LoraSection = Field(default_factory=LoraSection, description="LoRA adapters (peft) instead of full fine-tuning")


class ArithSection(_Strict):
    min_ops: int = 2
    max_ops: int = 4
    min_operand: int = 1
    max_operand: int = 50
    operators: list[str] = ["+", "-"]
    allow_negative: bool = False
    pool_size: int = Field(2000, ge=1, description="distinct training problems (the prompt pool)")

    @model_validator(mode="after")
    def _ranges(self) -> "ArithSection":
        ArithConfig(min_ops=self.min_ops, max_ops=self.max_ops, min_operand=self.min_operand,
                    max_operand=self.max_operand, operators=tuple(self.operators), allow_negative=self.allow_negative)
        return self


class DataSection(DatasetSpec):
    """Training data: the synthetic task (``task: arith``) or a data file described by the same
    :class:`~skpo.tasks.dataset.DatasetSpec` fields as a benchmark (``task: jsonl`` — any
    supported format: JSONL, JSONL.gz, Parquet). ``max_new_tokens`` / ``n_problems`` of the spec
    apply to benchmarks only; the rollout budget is ``rollout.max_new_tokens``."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, populate_by_name=True, frozen=False)

    task: Literal["arith", "jsonl", "dataset"] = Field("arith", description="'arith' or a data file ('jsonl' and 'dataset' are the same)")
    arith: ArithSection = ArithSection()
    template: str = Field(MATH_TEMPLATE, validation_alias=AliasChoices("template", "prompt_template"))
    reward: str = Field("math", validation_alias=AliasChoices("reward", "verifier"))

    @model_validator(mode="before")
    @classmethod
    def _task_defaults(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("path") and "task" not in data:
            data = {**data, "task": "jsonl"}  # a data file given: train on it (not on the synthetic default)
        if isinstance(data, dict) and data.get("task", "arith") == "arith":
            if data.get("path"):
                raise ValueError(f"data.path={data['path']!r} is set but data.task is 'arith' (the synthetic task, "
                                 "which reads no file): set data.task=jsonl to train on the file, or drop data.path")
            data = {**data}
            data.setdefault("reward", "arith")  # the synthetic task's exact checker
        return data

    @model_validator(mode="after")
    def _consistent(self) -> "DataSection":  # replaces the spec's check: the arith task has no file
        if self.task == "arith":
            return self
        if not self.path:
            raise ValueError("data.path is required when data.task is 'jsonl'")
        return self._check_spec()


class SkpoSection(_Strict):
    """SKPO rollout switches (paper defaults; the ablations of Table 2 are switches)."""

    initial_length: float = Field(
        32.0, gt=0, description="L_q prior in tokens: about the mean answer length (warm start: 33 tokens; paper: 1024 for real models)"
    )
    split_low: float = Field(1 / 6, gt=0, le=1)
    split_high: float = Field(1 / 2, gt=0, le=1)
    skip: bool = True
    upstream_reward: Literal["mc", "own"] = "mc"
    split: Literal["uniform", "fixed"] = "uniform"
    selection: Literal["median", "extreme", "first"] = "median"
    num_segments: int | None = Field(None, ge=1, description="segments in parallel; None = group size")

    @model_validator(mode="after")
    def _split_order(self) -> "SkpoSection":
        if self.split_low > self.split_high:
            raise ValueError(f"need split_low <= split_high (got {self.split_low}, {self.split_high})")
        return self


class VLLMSection(_Strict):
    """The vLLM engine (``rollout.engine: vllm``, extra ``[vllm]``; GPUs only)."""

    gpu_memory_utilization: float = Field(0.3, gt=0, le=1, description="share of each GPU vLLM may take (weights + KV cache)")
    sleep: bool = Field(True, description="release the engine's memory while the trainer updates (vLLM sleep mode, level 2)")
    max_model_len: int | None = Field(
        None, ge=2, description="an older name of rollout.max_context_tokens (the two may not disagree)")
    tensor_parallel_size: int = Field(
        1, ge=1, description="GPUs per engine: 1 only (colocated engines run one per process, and vLLM needs every "
        "rank of a tensor-parallel group to submit the same requests, which per-rank rollouts do not)")
    weight_bucket_mb: int = Field(512, ge=1, description="most MiB of weights loaded into vLLM at once when syncing")

    @field_validator("tensor_parallel_size")
    @classmethod
    def _one_gpu_per_engine(cls, value: int) -> int:
        if value != 1:
            raise ValueError(
                f"{value} is not supported: colocated vLLM engines run one per training process, and vLLM needs every "
                "rank of a tensor-parallel group to submit the same requests in the same calls, which skpo's per-rank "
                "rollouts do not; use 1 (one engine per GPU: a 7B model in bf16 takes 15 GB)")
        return value


class RolloutSection(_Strict):
    engine: Literal["hf", "vllm"] = Field("hf", description="rollout engine: the built-in Hugging Face decoder, or vLLM (GPUs)")
    vllm: VLLMSection = VLLMSection()
    group_size: int | None = Field(None, ge=1, description="answers per prompt; None = the method's default")
    temperature: float = Field(1.0, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    max_new_tokens: int = Field(64, ge=1)
    ignore_eos: bool = Field(False, description="sample past EOS up to max_new_tokens (equal-work benchmarks only)")
    engine_batch_size: int = Field(256, ge=1, description="most rows (prompt × sample) the engine decodes together")
    max_context_tokens: int | None = Field(
        None, ge=2, description="the engine's context (prompt + skip segment + answer); default: what the rollout needs, "
        "checked against the model's positions at start. A smaller value (at most the model's) cuts the answers that reach "
        "it: counted as rollout/cut_by_context and scored as unfinished")
    mc_k: int = Field(4, ge=1, description="Monte Carlo continuations per step boundary (mc_dense)")
    mc_max_steps: int = Field(8, ge=1, description="step boundaries valued per response (mc_dense)")
    skpo: SkpoSection = SkpoSection()

    @model_validator(mode="after")
    def _one_context(self) -> "RolloutSection":
        old, new = self.vllm.max_model_len, self.max_context_tokens
        if old is not None and new is not None and old != new:
            raise ValueError(f"rollout.vllm.max_model_len={old} and rollout.max_context_tokens={new} name the same "
                             "context: set only rollout.max_context_tokens")
        return self

    @property
    def context_setting(self) -> int | None:
        """The user's engine context (``max_context_tokens``, or its older name), if set."""
        return self.max_context_tokens or self.vllm.max_model_len

    @property
    def initial_length(self) -> float:
        """The length tracker's prior ``L`` before a prompt is seen (``rollout.skpo.initial_length``)."""
        return self.skpo.initial_length


class FSDPSection(_Strict):
    """Parameter sharding with FSDP2 (skpo/training/sharding.py, docs/scaling.md). Also switched
    on by an accelerate launch config with ``distributed_type: FSDP`` and ``fsdp_version: 2``."""

    enabled: bool = Field(False, description="shard parameters, gradients and AdamW state over the processes (FSDP2)")
    reshard_after_forward: bool = Field(
        True, description="free each layer's gathered weights after its forward (ZeRO-3; False keeps them to the backward: ZeRO-2-like, more memory, less traffic)")
    cpu_offload: bool = Field(False, description="keep shards, gradients and the optimizer step in CPU memory")


class TrainSection(_Strict):
    method: str = Field("skpo", description="a shipped method (skpo methods lists them) or the path of a method document (.yaml)")
    steps: int = Field(200, ge=0)
    token_budget: int | None = Field(
        None, ge=1, description="stop once this many rollout tokens were decoded (every token: segments, answers, "
        "Monte Carlo continuations, refills); equal-budget comparisons"
    )
    prompts_per_step: int = Field(16, ge=1)
    mini_batches: int = Field(1, ge=1, description="PPO mini-batches (optimizer steps) per training step")
    ppo_epochs: int = Field(1, ge=1)
    gradient_checkpointing: bool = Field(
        False, description="recompute each layer's activations in the backward pass (memory for time; same update)")
    threads: int | None = Field(
        None, ge=1, description="torch CPU threads (default: torch's, one per core); 1 when other processes share the "
        "cores (a second thread spin-waits behind them: measured 3-30x slower steps)")
    fsdp: FSDPSection = Field(default_factory=FSDPSection)
    micro_batch_tokens: int = Field(
        1024, ge=1, description="token budget of one forward/backward (length-bucketed; ~1k tokens keeps a CPU's caches warm, GPUs want far more)"
    )
    pack_max_tokens: int = Field(
        256, ge=0, description="pack answers to one prompt into tree-masked sequences of at most this many tokens "
        "(prompt encoded once per pack, no padding; attention is dense within a pack, so keep it short); 0 = padded rows"
    )
    lr: float = Field(5e-5, gt=0)
    warmup_steps: int = Field(0, ge=0)
    lr_schedule: Literal["constant", "cosine", "linear"] = "constant"
    weight_decay: float = Field(0.1, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)
    grad_clip: float = Field(1.0, gt=0)
    seed: int = 0
    kl_coef: float | None = Field(None, ge=0, description="None = the method's default (0)")
    kl_estimator: Literal["k1", "k2", "k3", "abs", "k1+", "k3+"] = "k3"
    kl_placement: Literal["loss", "reward"] = "loss"
    entropy_coef: float | None = Field(None, ge=0)
    prompt_sampling: str = Field(
        "default", description="a registered prompt sampler (uniform, prioritized, knapsack, vas; skpo.algorithms.prompt_samplers); "
        "default: the method's")
    rho_mode: Literal["kl", "steps"] = Field(
        "kl", description="tracker forgetting: 'kl' = 2^(-KL/half_life) with the policy drift since the prompt was last seen; 'steps' = 2^(-Δsteps/half_life)"
    )
    recompute_old_log_probs: bool = Field(True, description="old log-probs from a trainer forward (False: the engine's)")
    filter_groups: bool | None = None
    dapo_max_gen_batches: int = Field(
        3, ge=1, description="DAPO dynamic sampling: most rounds of prompts_per_step prompts drawn per step to fill the batch with groups of mixed rewards"
    )

    @field_validator("method")
    @classmethod
    def _known_method(cls, value: str) -> str:
        if is_method_file(value):  # a user's method document; read and validated with the method
            return value
        if value not in method_names():
            close = difflib.get_close_matches(value, method_names(), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"unknown method {value!r}{hint}; methods: {', '.join(method_names())} (skpo methods lists "
                             "them), or the path of your own method document (.yaml)")
        return value


class RewardSection(_Strict):
    function: str | None = Field(
        None, description="your own reward, 'module:function' or 'path/file.py:function' (see docs/rewards.md); "
        "overrides data.reward for training",
    )
    range: tuple[float, float] = Field(
        (0.0, 1.0), description="the values your reward function returns, [low, high] (e.g. [-1, 1]); mapped linearly "
        "onto the method's reward range; a value outside it stops the run naming the function")
    style: Literal["auto", "skpo", "verl", "trl"] = Field(
        "auto", description="how your reward function is called: skpo (completion, example), verl compute_score("
        "data_source, solution_str, ground_truth, extra_info), trl (prompts, completions, **kwargs); auto: from its "
        "parameters")
    timeout_s: float = Field(120.0, gt=0, description="bound on one batch of your reward function, and on importing "
                             "its module (seconds): past it the worker process is killed and the run ends with one line "
                             "naming the function")
    worker: bool = Field(True, description="run your reward function in a worker process that reward.timeout_s can "
                         "kill (false: in this process, bounded by a timer signal the function can catch)")
    math_timeout_s: float = Field(5.0, gt=0, description="per-answer bound of the math verifier")
    workers: int | None = Field(None, ge=1, description="verifier processes (default: min(4, CPUs))")

    @field_validator("range")
    @classmethod
    def _finite_range(cls, value: tuple[float, float]) -> tuple[float, float]:
        low, high = value
        if not (math.isfinite(low) and math.isfinite(high) and low < high):
            raise ValueError(f"need finite low < high, got [{low}, {high}]")
        return (float(low), float(high))


class EvalSection(_Strict):
    """In-training evaluation, through the same runner as ``skpo eval``."""

    every: int = Field(50, ge=0, description="evaluate every N steps (0 = never during training)")
    every_tokens: int = Field(0, ge=0, description="also evaluate each time the decoded rollout tokens pass a multiple of this")
    benchmarks: list[str] = Field(
        ["arith"], description="built-in names (arith = the run's own task difficulty) or spec files (.yaml/.json)"
    )
    limit: int | None = Field(100, ge=1, validation_alias=AliasChoices("limit", "num_problems"),
                              description="first N problems of each benchmark (None = all)")
    k: int = Field(4, ge=1)
    temperature: float = Field(1.0, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    max_new_tokens: int | None = Field(None, ge=1, description="None = each benchmark's own budget")

    @property
    def num_problems(self) -> int | None:
        return self.limit


class LogSection(_Strict):
    out_dir: str = "runs/skpo-arith"
    tensorboard: bool = True
    wandb: bool = False
    wandb_project: str = "skpo"
    progress: bool = Field(True, description="a start line, then a progress bar on a terminal or log lines otherwise")
    print_every: int = Field(0, ge=0, description="off a terminal: at least this many steps between log lines (0 = 1)")
    print_seconds: float = Field(30.0, ge=0, description="off a terminal: at least this many seconds between log lines "
                                 "(a line per step when steps are slower)")
    save_every: int = Field(0, ge=0, description="checkpoint every N steps (0 = only at the end)")
    samples_every: int = Field(
        10, ge=0, description="every N steps, a few prompts with their completions, rewards and verdicts go to "
        "samples.jsonl, TensorBoard (text) and wandb (table); 0 = never")
    samples: int = Field(2, ge=1, description="prompts per sample dump (with all their answers; SKPO: the segment too)")
    keep_checkpoints: int = Field(2, ge=1)


class RunConfig(_Strict):
    plugins: list[str] = Field(
        default_factory=list, description="modules or .py files imported before the method resolves: your own "
        "estimators, losses, rollout kinds, samplers or rewards (skpo train --import MODULE adds one)")
    model: ModelSection = ModelSection()
    data: DataSection = DataSection()
    rollout: RolloutSection = RolloutSection()
    train: TrainSection = TrainSection()
    reward: RewardSection = RewardSection()
    eval: EvalSection = EvalSection()
    method: dict[str, Any] = Field(
        default_factory=dict,
        description="overrides of the method document of train.method (skpo/methods/<name>.yaml), merged onto it; "
        "terms are addressed by role: method.terms.upstream.weight=0.1",
    )
    log: LogSection = LogSection()


def _set_dotted(tree: dict, dotted: str, value: Any, source: str) -> None:
    keys = dotted.split(".")
    node = tree
    for key in keys[:-1]:
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{source}: cannot set {dotted!r}: {key!r} is not a section")
        node = child
    node[keys[-1]] = value


def parse_overrides(overrides: list[str]) -> list[tuple[str, Any]]:
    """``["train.steps=50", "model.path=/m"]`` → ``[("train.steps", 50), …]`` (values parsed as YAML)."""
    parsed = []
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key or any(not part for part in key.split(".")):
            raise ConfigError(f"override {item!r} is not of the form key.sub=value")
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError as err:
            raise ConfigError(f"override {item!r}: value is not valid YAML ({err})") from None
        parsed.append((key, value))
    return parsed


def _format_errors(err: ValidationError, source: str) -> str:
    lines = [f"{source}: invalid configuration"]
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        hint = _did_you_mean(e["loc"]) if e["type"] == "extra_forbidden" else ""
        lines.append(f"  {loc}: {e['msg']}{hint}" + (f" (got {e['input']!r})" if e["type"] != "missing" and "input" in e and not isinstance(e["input"], dict) else ""))
    return "\n".join(lines)


def _did_you_mean(loc: tuple) -> str:
    """`` (did you mean 'train.steps'?)`` for an unknown key close to a known one of its section."""
    model: Any = RunConfig
    for part in loc[:-1]:
        field = getattr(model, "model_fields", {}).get(str(part))
        model = getattr(field, "annotation", None) if field is not None else None
        if not isinstance(model, type) or not issubclass(model, BaseModel):
            return ""
    close = difflib.get_close_matches(str(loc[-1]), list(model.model_fields), n=1)
    return f" (did you mean {'.'.join([*map(str, loc[:-1]), close[0]])!r}?)" if close else ""


def _read_tree(path: Path, chain: tuple[Path, ...] = ()) -> dict:
    """A config file's tree, with its ``base:`` file (relative to it) merged underneath."""
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist" + (f" (the base of {chain[-1]})" if chain else ""))
    if path.resolve() in chain:
        raise ConfigError(f"{path}: 'base' files form a cycle: {' → '.join(str(c) for c in (*chain, path.resolve()))}")
    try:
        loaded = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({err})") from None
    if loaded is not None and not isinstance(loaded, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections")
    tree = dict(loaded or {})
    base = tree.pop("base", None)
    if base is None:
        return tree
    if not isinstance(base, str):
        raise ConfigError(f"{path}: base: expected a file name, got {base!r}")
    return _merge_trees(_read_tree((path.parent / base), (*chain, path.resolve())), tree)


def _merge_trees(base: dict, over: dict) -> dict:
    out = dict(base)
    for key, value in over.items():
        out[key] = _merge_trees(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def load_config(path: str | Path | None = None, overrides: list[str] | None = None,
                plugins: list[str] | None = None) -> RunConfig:
    """Load a YAML config (or the defaults when ``path`` is None) and apply overrides.

    A file may start from another: ``base: other.yaml`` (relative to the file) is read first and
    the file's own keys are merged over it (section by section). ``plugins`` (``--import``) join
    the config's own ``plugins``, and all are imported before the method resolves. The method is
    resolved here too, so a bad ``method.*`` override fails at load, naming its key.
    """
    tree: dict = {}
    source = "defaults"
    if path is not None:
        source = str(path)
        tree = _read_tree(Path(path))
    for key, value in parse_overrides(overrides or []):
        _set_dotted(tree, key, value, source)
    if plugins:
        tree["plugins"] = [*(tree.get("plugins") or []), *[p for p in plugins if p not in (tree.get("plugins") or [])]]
    if tree.get("plugins"):
        if not isinstance(tree["plugins"], list):
            raise ConfigError(f"{source}: plugins: expected a list of modules or .py files, got {tree['plugins']!r}")
        import_plugins(tree["plugins"])
    try:
        cfg = RunConfig.model_validate(tree)
    except ValidationError as err:
        raise ConfigError(_format_errors(err, source)) from None
    try:
        resolve_for_run(cfg)
    except MethodError as err:
        raise ConfigError(f"{source}: {err}") from None
    return cfg


def dump_config(config: RunConfig) -> str:
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


def arith_config(cfg: RunConfig) -> ArithConfig:
    """The arithmetic task of ``data.arith``."""
    a = cfg.data.arith
    return ArithConfig(min_ops=a.min_ops, max_ops=a.max_ops, min_operand=a.min_operand, max_operand=a.max_operand,
                       operators=tuple(a.operators), allow_negative=a.allow_negative)
