"""Run configuration: pydantic models loaded from YAML, with ``key.sub=value`` overrides.

Unknown keys and bad values are errors that name the key and the value given
(``train.lr=fast: Input should be a valid number``). One ``RunConfig`` holds everything a
``skpo train`` run needs. The schema is checked before the method registries are imported (they
load torch), so a mistyped key fails in a fraction of a second.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, NamedTuple

import yaml
from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from skpo.errors import ConfigError, MethodError, closest_name, did_you_mean
from skpo.paths import is_method_file, shipped_method_names
from skpo.plugins import import_plugins
from skpo.tasks.arith import ArithConfig
from skpo.tasks.countdown import CountdownConfig
from skpo.tasks.dataset import MATH_TEMPLATE, DatasetSpec, sniff_reward

if TYPE_CHECKING:
    from skpo.methods import ResolvedMethod


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

    path: str = Field("tiny-arith", description="local HF model directory, or a shipped warm start: 'tiny-arith' (the embedded default), 'tiny-arith-long' (5-8 operations), 'tiny-countdown' (data.task=countdown)")
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
    def _ranges(self) -> ArithSection:
        ArithConfig(min_ops=self.min_ops, max_ops=self.max_ops, min_operand=self.min_operand,
                    max_operand=self.max_operand, operators=tuple(self.operators), allow_negative=self.allow_negative)
        return self


class CountdownSection(_Strict):
    """The synthetic countdown task (``data.task: countdown``; :mod:`skpo.tasks.countdown`)."""

    min_numbers: int = Field(3, description="numbers per problem, at least")
    max_numbers: int = Field(4, description="numbers per problem, at most")
    min_number: int = 1
    max_number: int = 10
    min_target: int = 10
    max_target: int = 100
    operators: list[str] = ["+", "-", "*", "/"]
    max_intermediate: int = Field(200, description="largest result of a reference move")
    pool_size: int = Field(2000, ge=1, description="distinct training problems (the prompt pool)")

    @model_validator(mode="after")
    def _ranges(self) -> CountdownSection:
        countdown_task(self)
        return self


def countdown_task(section: CountdownSection) -> CountdownConfig:
    """The task of a ``data.countdown`` section (raises ``ValueError`` naming a bad knob)."""
    return CountdownConfig(
        min_numbers=section.min_numbers, max_numbers=section.max_numbers, min_number=section.min_number,
        max_number=section.max_number, min_target=section.min_target, max_target=section.max_target,
        operators=tuple(section.operators), max_intermediate=section.max_intermediate)


SYNTHETIC_TASKS = ("arith", "countdown")
"""``data.task`` values that generate their problems (no data file)."""


class DataSection(DatasetSpec):
    """Training data: a synthetic task (``task: arith``, the default, or ``task: countdown``)
    or a data file described by the same :class:`~skpo.tasks.dataset.DatasetSpec` fields as a
    benchmark (``task: jsonl`` — any supported format: JSONL, JSONL.gz, Parquet). A data file
    given without a reward whose first row is in TinyZero's / verl's countdown layout (``nums``
    and ``target``, or ``reward_model.ground_truth`` with ``numbers`` and ``target``) is scored
    by the ``countdown`` reward (:func:`~skpo.tasks.dataset.sniff_reward`). ``max_new_tokens``
    / ``n_problems`` of the spec apply to benchmarks only; the rollout budget is
    ``rollout.max_new_tokens``."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, populate_by_name=True, frozen=False)
    key_prefix: ClassVar[str] = "data."

    task: Literal["arith", "countdown", "jsonl", "dataset"] = Field(
        "arith", description="'arith', 'countdown' or a data file ('jsonl' and 'dataset' are the same)")
    # the run's own sections (DatasetSpec, for a benchmark, takes the tasks' plain configs)
    arith: ArithSection = ArithSection()  # type: ignore[assignment]
    countdown: CountdownSection = CountdownSection()  # type: ignore[assignment]
    template: str = Field(MATH_TEMPLATE, validation_alias=AliasChoices("template", "prompt_template"))
    reward: str = Field("math", validation_alias=AliasChoices("reward", "verifier"))
    heldout: int | None = Field(
        None, ge=0, description="rows of the data file held out of training and scored by in-training evaluation "
        "(eval.benchmarks 'heldout'): the rows whose prompts hash lowest, the same in every run. None = a tenth of "
        "the rows, at most 100, when 'heldout' is evaluated (the default with a data file), else none; 0 = none")

    @model_validator(mode="before")
    @classmethod
    def _task_defaults(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("path") and "task" not in data:
            data = {**data, "task": "jsonl"}  # a data file given: train on it (not on the synthetic default)
        if isinstance(data, dict) and data.get("task", "arith") in SYNTHETIC_TASKS:
            task = data.get("task", "arith")
            if data.get("path"):
                raise ValueError(f"data.path={data['path']!r} is set but data.task is {task!r} (a synthetic task, "
                                 "which reads no file): set data.task=jsonl to train on the file, or drop data.path")
            data = {**data}
            data.setdefault("reward", task)  # the synthetic task's exact checker
        elif isinstance(data, dict) and data.get("path") and "reward" not in data and "verifier" not in data:
            sniffed = sniff_reward(str(data["path"]), str(data.get("format", "auto")))
            if sniffed is not None:  # TinyZero's countdown parquet: its reward without naming it
                data = {**data, "reward": sniffed}
        return data

    @model_validator(mode="after")
    def _consistent(self) -> DataSection:  # replaces the spec's check: a synthetic task has no file
        if self.task in SYNTHETIC_TASKS:
            if self.heldout:
                raise ValueError(f"data.heldout={self.heldout} holds rows of a data file out of training, but data.task "
                                 f"is {self.task!r} (its held-out problems are the {self.task!r} benchmark): set "
                                 "data.path, or drop data.heldout")
            return self
        if not self.path:
            raise ValueError("data.path is required when data.task is 'jsonl'")
        return self._check_spec()


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
    temperature: float = Field(1.0, ge=0)
    top_p: float = Field(1.0, gt=0, le=1)
    max_new_tokens: int = Field(64, ge=1)
    ignore_eos: bool = Field(False, description="sample past EOS up to max_new_tokens (equal-work benchmarks only)")
    engine_batch_size: int = Field(256, ge=1, description="most rows (prompt × sample) the engine decodes together")
    max_context_tokens: int | None = Field(
        None, ge=2, description="the engine's context (prompt + skip segment + answer); default: what the rollout needs, "
        "checked against the model's positions at start. A smaller value (at most the model's) cuts the answers that reach "
        "it: counted as rollout/cut_by_context and scored as unfinished")
    initial_length: float = Field(
        32.0, gt=0, description="the length tracker's prior L in tokens before a prompt is seen (methods with a "
        "length tracker: SKPO's split points t_q ~ U[L·split_low, L·split_high]): about the mean answer length "
        "(the tiny warm start: 33 tokens; the paper: 1024 for real models)")

    @model_validator(mode="after")
    def _one_context(self) -> RolloutSection:
        old, new = self.vllm.max_model_len, self.max_context_tokens
        if old is not None and new is not None and old != new:
            raise ValueError(f"rollout.vllm.max_model_len={old} and rollout.max_context_tokens={new} name the same "
                             "context: set only rollout.max_context_tokens")
        return self

    @property
    def context_setting(self) -> int | None:
        """The user's engine context (``max_context_tokens``, or its older name), if set."""
        return self.max_context_tokens or self.vllm.max_model_len


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
    rho_mode: Literal["kl", "steps"] = Field(
        "kl", description="tracker forgetting: 'kl' = 2^(-KL/half_life) with the policy drift since the prompt was last seen; 'steps' = 2^(-Δsteps/half_life)"
    )
    recompute_old_log_probs: bool = Field(True, description="old log-probs from a trainer forward (False: the engine's)")

    @field_validator("method")
    @classmethod
    def _known_method(cls, value: str) -> str:
        if is_method_file(value):  # a user's method document; read and validated with the method
            return value
        if value not in (names := shipped_method_names()):
            raise ValueError(f"unknown method {value!r}{did_you_mean(value, names)}; methods: {', '.join(names)} (skpo methods lists "
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

    @field_validator("range", mode="before")
    @classmethod
    def _range_text(cls, value: Any) -> Any:
        """``reward.range=-1,1`` on a command line arrives as the text ``-1,1``: read as ``[-1, 1]``."""
        if isinstance(value, str):
            try:
                low, high = (float(p) for p in value.strip().strip("[]()").split(","))
            except ValueError:
                raise ValueError("expected two numbers [low, high], e.g. reward.range=[-1,1]") from None
            return (low, high)
        return value

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
    benchmarks: list[str] | None = Field(
        None, description="built-in names (arith = the run's own task difficulty; heldout = the rows held out of "
        "data.path, see data.heldout), spec files (.yaml/.json) or data files (scored as data.path would be). "
        "None = follow the data: [arith] for the synthetic task, [heldout] for a data file")
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
    out_dir: str | None = Field(
        None, description="the run directory. None = named from the data: runs/skpo-arith for the synthetic task, "
        "runs/<method>-<model>-<data> for a data file (e.g. runs/grpo-Qwen2.5-0.5B-gsm8k-train)")
    tensorboard: bool = True
    wandb: bool = False
    wandb_project: str = "skpo"
    progress: bool = Field(True, description="a start line, then a progress bar on a terminal or log lines otherwise")
    print_every: int = Field(0, ge=0, description="off a terminal: at least this many steps between log lines (0 = 1)")
    print_seconds: float = Field(30.0, ge=0, description="off a terminal: at least this many seconds between log lines "
                                 "(a line per step when steps are slower)")
    save_every: int = Field(0, ge=0, description="checkpoint every N steps (0 = only at the end)")
    samples_every: int = Field(
        10, ge=0, description="at the first step and every N steps, a few prompts with their completions (special "
        "tokens as the model saw them), rewards and verdicts go to samples.jsonl, TensorBoard (text) and wandb "
        "(table); 0 = never")
    samples: int = Field(2, ge=1, description="prompts per sample dump (with all their answers; SKPO: the segment too)")
    console_samples: int = Field(
        4, ge=0, description="of those, completions also shown on the console at the same steps (a table on a "
        "terminal, plain lines otherwise; with log.progress); 0 or false = none")

    @field_validator("console_samples", mode="before")
    @classmethod
    def _switch(cls, value: Any) -> Any:  # a switch: true shows the default number, false none
        return (4 if value else 0) if isinstance(value, bool) else value

    def samples_due(self, step: int) -> bool:
        """Samples are written after step ``step`` (0-based): the first step, then every ``samples_every``."""
        return bool(self.samples_every) and (step == 0 or (step + 1) % self.samples_every == 0)
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
        description="overrides of the method document of train.method (skpo/methods/<name>.yaml), merged onto it: "
        "every method setting lives there (method.group_size=4, method.kl_coef=0.01, method.rollout_params.skip=false); "
        "terms are addressed by role: method.terms.upstream.weight=0.1",
    )
    log: LogSection = LogSection()
    # the method of train.method with the method section merged, resolved once per distinct input
    # (load_config resolves it; :meth:`resolved` reads it)
    _resolved: tuple[str, ResolvedMethod] | None = PrivateAttr(default=None)

    def _method_inputs(self) -> str:
        return json.dumps([self.train.method, self.method, self.plugins], sort_keys=True, default=str)

    def resolved(self) -> ResolvedMethod:
        """The method this run trains (:class:`skpo.methods.ResolvedMethod`: the record, the
        ``method`` section as applied and notes for the user): ``train.method``'s document with
        the ``method`` section merged in, validated. Resolved once (by :func:`load_config`, or
        here on first use) and read by everything downstream."""
        key = self._method_inputs()
        if self._resolved is None or self._resolved[0] != key:
            from skpo.methods import resolve_run_method  # heavy (the registries load torch)

            import_plugins(self.plugins)
            self._resolved = (key, resolve_run_method(self.train.method, self.method))
        return self._resolved[1]

    @model_validator(mode="before")
    @classmethod
    def _task_follows(cls, data: Any) -> Any:
        """``data.task: countdown`` without a model of its own gets the countdown warm start
        (``tiny-countdown``), not the arithmetic one (its evaluation: :meth:`_defaults_follow_the_data`)."""
        if not isinstance(data, dict) or not isinstance(data.get("data"), dict) or data["data"].get("task") != "countdown":
            return data
        data = dict(data)
        for section, key, value in (("model", "path", "tiny-countdown"),):
            tree = data.get(section)
            if tree is None or (isinstance(tree, dict) and key not in tree):
                data[section] = {**(tree or {}), key: value}
        return data

    @model_validator(mode="after")
    def _defaults_follow_the_data(self) -> RunConfig:
        """The defaults that depend on the data: the run directory, what in-training evaluation
        scores, and whether rows are held out for it (a data file never falls back to the
        synthetic task's directory or benchmark)."""
        data = self.data
        if self.eval.benchmarks is None:
            synthetic = data.task in SYNTHETIC_TASKS  # its own held-out set, the benchmark of the same name
            self.eval.benchmarks = [data.task] if synthetic else ([HELDOUT] if data.heldout != 0 else [])
            self.eval.model_fields_set.discard("benchmarks")  # still a default: a dump without defaults leaves it out
        if data.task in SYNTHETIC_TASKS and HELDOUT in self.eval.benchmarks:
            raise ValueError(f"eval.benchmarks: {HELDOUT!r} is a slice of data.path, but data.task is {data.task!r} (the "
                             f"synthetic task's held-out problems are the {data.task!r} benchmark)")
        if data.task not in SYNTHETIC_TASKS and data.heldout is None and HELDOUT not in self.eval.benchmarks:
            data.heldout = 0  # rows are held out only for an evaluation that scores them
            data.model_fields_set.discard("heldout")
        if self.log.out_dir is None:
            self.log.out_dir = default_out_dir(self.train.method, self.model.path,
                                               None if data.task in SYNTHETIC_TASKS else data.path, data.task)
            self.log.model_fields_set.discard("out_dir")
        return self


HELDOUT = "heldout"  # the benchmark of rows held out of data.path (data.heldout)
ARITH_RUN_DIR = "runs/skpo-arith"  # the synthetic task's run directory (skpo main's, and every method's by default)
_GENERIC_STEMS = ("train", "test", "validation", "val", "data", "dataset")


def default_out_dir(method: str, model: str, data: str | None, task: str = "arith") -> str:
    """The run directory when ``log.out_dir`` is not set: :data:`ARITH_RUN_DIR` for the
    arithmetic task, ``runs/<method>-countdown`` for countdown (``data`` None), else ``runs/<method>-<model>-<data>`` from the method (a
    method file: its stem), the model directory's name (a training checkpoint: its run's name and
    step) and the data file's stem (a generic stem such as ``train`` with its folder's name:
    ``gsm8k-train``)."""
    method_name = Path(method).stem if is_method_file(method) else method
    if data is None:
        return ARITH_RUN_DIR if task == "arith" else f"runs/{method_name}-{task}"
    model_path = Path(str(model).rstrip("/")).expanduser()
    if model_path.name == "model" and model_path.parent.name:  # CHECKPOINT/model
        model_path = model_path.parent
    model_name = model_path.name
    if re.fullmatch(r"step_\d+", model_name) and model_path.parent.name == "checkpoints":
        model_name = f"{model_path.parent.parent.name}-{model_name}"
    data_path = Path(str(data).rstrip("/")).expanduser()
    data_name = data_path.name
    for suffix in (".gz", ".jsonl", ".json", ".parquet", ".arrow"):
        data_name = data_name.removesuffix(suffix)
    if data_name.lower() in _GENERIC_STEMS and data_path.parent.name:
        data_name = f"{data_path.parent.name}-{data_name}"
    parts = [re.sub(r"[^A-Za-z0-9._+-]+", "_", p).strip("._") or "x" for p in (method_name, model_name, data_name)]
    return "runs/" + "-".join(parts)


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


# Keys of verl's configs (Hydra ``key=value`` overrides look the same) and the key that sets the
# same thing here; an unknown key found in this table points to its counterpart.
VERL_KEYS = {
    "data.train_files": "data.path (one data file or folder: JSONL, JSONL.gz, Parquet or a datasets save_to_disk folder)",
    "data.val_files": "eval.benchmarks (a data file there is scored with the columns found as for data.path)",
    "data.train_batch_size": "train.prompts_per_step",
    "data.max_prompt_length": "data.max_prompt_tokens",
    "data.max_response_length": "rollout.max_new_tokens",
    "actor_rollout_ref.model.path": "model.path",
    "actor_rollout_ref.rollout.n": "method.group_size",
    "actor_rollout_ref.actor.optim.lr": "train.lr",
    "algorithm.adv_estimator": "train.method",
    "trainer.total_training_steps": "train.steps",
    "trainer.default_local_dir": "log.out_dir",
    "custom_reward_function.path": "reward.function (path/to/file.py:function)",
    "custom_reward_function.name": "reward.function (path/to/file.py:function)",
}


def _shown(value: Any) -> str:
    """A value as it would be typed after ``key=``."""
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_shown(v) for v in value) + "]"
    if isinstance(value, str):
        return value if value.strip() == value and value and not any(c in value for c in ",:#[]{}") else repr(value)
    return "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)


def _leaves(prefix: str, value: Any) -> list[tuple[str, Any]]:
    """``("a", {"b": 1})`` → ``[("a.b", 1)]``: the keys a user wrote under an unknown section."""
    if isinstance(value, dict) and value:
        return [leaf for k, v in value.items() for leaf in _leaves(f"{prefix}.{k}", v)]
    return [(prefix, value)]


def _format_errors(err: ValidationError, source: str, overridden: set[str]) -> str:
    """One line per problem, each naming the key and the value given (and where it was given:
    the config file, unless the key came from the command line):
    ``train.steps=abc: Input should be a valid integer…``; ``bad.key=1: unknown key``."""
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"])
        where = f"{source}: " if source != "defaults" and not any(
            k == loc or k.startswith(loc + ".") for k in overridden) else ""
        if e["type"] == "extra_forbidden":
            for key, value in _leaves(loc, e.get("input")):
                lines.append(f"{where}{key}={_shown(value)}: unknown key{_unknown_hint(key, e['loc'])}")
            continue
        msg = str(e["msg"]).removeprefix("Value error, ")
        shown = "" if e["type"] == "missing" or isinstance(e.get("input"), dict) else f"={_shown(e.get('input'))}"
        plain = not shown and (not loc or msg.startswith(loc + "."))  # the message names its key already
        lines.append(f"{where}{msg}" if plain else f"{where}{loc}{shown}: {msg}")
    return "\n".join(lines)


def _unknown_hint(key: str, loc: tuple) -> str:
    """Where an unknown key's setting lives: verl's keys point to ours; else the closest key of
    its section (`` (did you mean 'train.steps'?)``), or the sections when the section is unknown."""
    foreign = next((ours for theirs, ours in VERL_KEYS.items() if key == theirs or key.startswith(theirs + ".")), None)
    if foreign is not None:
        return f" (verl's {key}; here: {foreign})"
    model: Any = RunConfig
    for part in loc[:-1]:
        field = getattr(model, "model_fields", {}).get(str(part))
        model = getattr(field, "annotation", None) if field is not None else None
        if not isinstance(model, type) or not issubclass(model, BaseModel):
            return ""
    close = closest_name(str(loc[-1]), list(model.model_fields))
    if close is not None:
        return f" (did you mean {'.'.join([*map(str, loc[:-1]), close])!r}?)"
    if len(loc) == 1:
        return f"; the sections are {', '.join(RunConfig.model_fields)}"
    return f"; {'.'.join(map(str, loc[:-1]))} has {', '.join(model.model_fields)}"


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


# Keys of earlier releases and where the setting lives now. A method's settings have one home,
# its document (``train.method``) with the config's ``method:`` section merged in; the run-config
# keys that used to set parts of it are read as their new spelling (``method:`` wins over them)
# with a note, and one that does not apply to the method's rollout kind is ignored, as before.
OLD_SPELLINGS: dict[str, str] = {
    "rollout.group_size": "method.group_size",
    "rollout.mc_k": "method.rollout_params.k",
    "rollout.mc_max_steps": "method.rollout_params.max_steps",
    **{f"rollout.skpo.{key}": f"method.rollout_params.{key}"
       for key in ("skip", "upstream_reward", "split", "selection", "num_segments", "split_low", "split_high")},
    "rollout.skpo.initial_length": "rollout.initial_length",
    "train.kl_coef": "method.kl_coef",
    "train.kl_estimator": "method.kl_estimator",
    "train.kl_placement": "method.kl_placement",
    "train.entropy_coef": "method.entropy_coef",
    "train.prompt_sampling": "method.prompt_sampling",
    "train.filter_groups": "method.filter_groups",
    "train.dapo_max_gen_batches": "method.max_gen_batches",
}


class OldSpelling(NamedTuple):
    """A key given in its earlier spelling (:data:`OLD_SPELLINGS`) and its value."""

    old: str
    new: str
    value: Any


def move_old_spellings(tree: dict[str, Any]) -> tuple[dict[str, Any], list[OldSpelling]]:
    """``tree`` without the keys of :data:`OLD_SPELLINGS`, and those keys. A run key (``rollout.
    initial_length``) is moved in the tree; method keys are returned for the method's resolution
    (:func:`skpo.methods.resolve_run_method`), except those left at "the method's value"
    (``null``, or ``default`` for ``train.prompt_sampling``), which are dropped."""
    out = copy.deepcopy(tree)
    moved: list[OldSpelling] = []
    for old, new in OLD_SPELLINGS.items():
        *sections, key = old.split(".")
        node: Any = out
        for part in sections:
            node = node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, dict) or key not in node:
            continue
        value = node.pop(key)
        if sections[-1] == "skpo" and not node:
            del out["rollout"]["skpo"]  # the whole old section was moved
        if not new.startswith("method."):
            section = out.setdefault(new.split(".")[0], {})
            have = section.get(new.split(".")[1], value)
            if have != value:
                raise ConfigError(f"{old}={_shown(value)} and {new}={_shown(have)} name the same setting: set only {new}")
            section[new.split(".")[1]] = value
        elif value is None or (old == "train.prompt_sampling" and value == "default"):
            continue  # "the method's own value"
        moved.append(OldSpelling(old, new, value))
    return out, moved


def old_spelling_note(spelling: OldSpelling) -> str:
    value = _shown(spelling.value)
    return f"{spelling.old}={value} is read as {spelling.new}={value}: an earlier spelling, write {spelling.new}"


def load_config(path: str | Path | None = None, overrides: list[str] | None = None,
                plugins: list[str] | None = None) -> RunConfig:
    """Load a YAML config (or the defaults when ``path`` is None) and apply overrides.

    A file may start from another: ``base: other.yaml`` (relative to the file) is read first and
    the file's own keys are merged over it (section by section). ``plugins`` (``--import``) join
    the config's own ``plugins``, and all are imported before the method resolves. Keys in an
    earlier spelling (:data:`OLD_SPELLINGS`) are read as their new one, with a note. The method
    is resolved here, once (:meth:`RunConfig.resolved` returns it), so a bad ``method.*``
    override fails at load, naming its key; the schema is checked first, before the method
    registries (and torch) are imported.
    """
    tree: dict = {}
    source = "defaults"
    if path is not None:
        source = str(path)
        tree = _read_tree(Path(path))
    overridden = set()
    for key, value in parse_overrides(overrides or []):
        _set_dotted(tree, key, value, "the command line" if path is None else source)
        overridden.add(OLD_SPELLINGS.get(key, key))
    if plugins:
        tree["plugins"] = [*(tree.get("plugins") or []), *[p for p in plugins if p not in (tree.get("plugins") or [])]]
    if tree.get("plugins"):
        if not isinstance(tree["plugins"], list):
            raise ConfigError(f"{source}: plugins: expected a list of modules or .py files, got {tree['plugins']!r}")
        import_plugins(tree["plugins"])
    tree, old = move_old_spellings(tree)
    try:
        cfg = RunConfig.model_validate(tree)
    except ValidationError as err:
        raise ConfigError(_format_errors(err, source, overridden)) from None
    from skpo.methods import resolve_run_method  # heavy (the registries load torch): after the schema passed

    try:
        resolved = resolve_run_method(cfg.train.method, cfg.method, [s for s in old if s.new.startswith("method.")])
    except MethodError as err:
        given = [f"{s.old}={_shown(s.value)}" for s in old if s.new.rsplit(".", 1)[1] in str(err)]
        message = str(err) + (f" (given as {', '.join(given)})" if given else "")
        raise ConfigError(f"{source}: {message}" if path is not None else message) from None
    cfg.method = dict(resolved.overrides)  # the old spellings, in their home
    notes = (*(old_spelling_note(s) for s in old), *resolved.notes)
    cfg._resolved = (cfg._method_inputs(), dataclasses.replace(resolved, notes=notes))
    return cfg


def dump_config(config: RunConfig) -> str:
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False, allow_unicode=True)


def countdown_config(cfg: RunConfig) -> CountdownConfig:
    """The countdown task of ``data.countdown``."""
    return countdown_task(cfg.data.countdown)


def arith_config(cfg: RunConfig) -> ArithConfig:
    """The arithmetic task of ``data.arith``."""
    a = cfg.data.arith
    return ArithConfig(min_ops=a.min_ops, max_ops=a.max_ops, min_operand=a.min_operand, max_operand=a.max_operand,
                       operators=tuple(a.operators), allow_negative=a.allow_negative)
