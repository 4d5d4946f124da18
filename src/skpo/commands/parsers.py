"""The command line's parsers, one per command: light (argparse and a few constants), so
``skpo <command> --help`` answers without loading the training stack; each command module
imports what it runs at its top and parses with its parser here."""

from __future__ import annotations

import argparse
from pathlib import Path

from skpo.commands.warmstart_config import WarmstartConfig
from skpo.evaluation.benchmarks import BUILTIN_BENCHMARKS
from skpo.paths import REPO_ROOT
from skpo.tasks.arith import ArithConfig
from skpo.tasks.countdown import CountdownConfig

DEFAULT_CONFIG = REPO_ROOT / "configs" / "arith" / "skpo.yaml"  # skpo main's recipe
DEFAULT_METHODS = "skpo,grpo,dapo,cispo,spo,mc_dense,oar"  # skpo compare's methods
ANALYSES = ("mc-accuracy", "shortcut", "implicit-advantage", "segment-variance")
WARMSTART_DESCRIPTION = ("Warm-start the tiny model by supervised fine-tuning on the synthetic task "
                         "(plain and skip-format examples).")


def shipped_method_names() -> list[str]:
    """The shipped methods, read off their documents (no import of the training stack)."""
    return sorted(p.stem for p in (Path(__file__).resolve().parents[1] / "methods").glob("*.yaml"))


def _common(p: argparse.ArgumentParser, problems_help: str) -> None:
    p.add_argument("--model", default="tiny-arith",
                   help="model dir, checkpoint dir, run dir, or 'tiny-arith' (the shipped warm start; default)")
    p.add_argument("--problems", type=int, default=None, help=problems_help)
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    p.add_argument("--out", type=Path, default=Path("runs/analysis"), help="output directory (default runs/analysis)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    p.add_argument("--quick", action="store_true", help="a few-second setting (tests), same code path")
    p.add_argument("--device", default="cpu", help="torch device (default cpu)")
    p.add_argument("--batch-size", type=int, default=None, help="(prompt, sample) rows decoded together (default 512)")


def main_job_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="skpo main",
        description="The main job: SKPO on the embedded default (the shipped warm-started tiny model on synthetic "
        "chained arithmetic), with the warm start and the trained policy evaluated on the same held-out problems, "
        "the learning curves plotted and a summary written (OUT/main_summary.json).")
    p.add_argument("--config", default=str(DEFAULT_CONFIG))
    p.add_argument("--eval-problems", type=int, default=200, help="held-out problems for the before/after evaluation")
    p.add_argument("--k", type=int, default=8, help="samples per problem (avg@k, pass@k)")
    p.add_argument("--resume", action="store_true", help="continue the run in log.out_dir from its newest intact checkpoint")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the run in log.out_dir (the default unless --resume: the main job always starts "
                   "from the warm start, so running it again replaces its previous run)")
    p.add_argument("overrides", nargs="*", help="key.sub=value overrides of the training config")
    return p


def train_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="skpo train", description="Train a policy from a YAML config.",
        epilog=f"methods (train.method=NAME, or a method .yaml file; `skpo methods` for details): {', '.join(shipped_method_names())}. "
               "Any part of a method can be overridden: method.terms.<role>.<key>=value (docs/methods.md).")
    parser.add_argument("--config", help="YAML config (defaults: the embedded SKPO recipe)")
    parser.add_argument("--resume", action="store_true", help="continue the run in log.out_dir from its newest intact checkpoint")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the run in log.out_dir (its files are removed first)")
    parser.add_argument("--allow-data-change", action="store_true",
                        help="with --resume: continue although the training data changed since the run started "
                        "(recorded in run.json; refused otherwise)")
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and method, then exit")
    parser.add_argument("--check", action="store_true", help="validate the config and its paths, then exit")
    parser.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                        help="a module or .py file to import first: your own estimators, losses, rollout kinds, "
                        "samplers or rewards (repeatable; recorded in the config's plugins)")
    parser.add_argument("--threads", type=int, default=None, metavar="N",
                        help="torch CPU threads (train.threads; 1 when other jobs share the cores)")
    parser.add_argument("overrides", nargs="*", help="key.sub=value overrides")
    return parser


def methods_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="skpo methods", description="List the shipped methods (train.method=<name>).")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--markdown", action="store_true", help="the table as Markdown (docs/methods.md)")
    group.add_argument("--show", metavar="NAME", help="one method's full document, every default resolved")
    return parser


def evaluate_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="skpo eval",
        description="Evaluate a model directory or training checkpoint: avg@k, pass@k, maj@k per benchmark.",
    )
    p.add_argument("--model", required=True, help="HF model dir, checkpoint dir (with model/), run dir, or 'tiny-arith'")
    p.add_argument(
        "--benchmarks", default=None,
        help=f"comma-separated names (built-in: {', '.join(BUILTIN_BENCHMARKS)}; names from --spec), spec files "
        ".yaml/.json, or data files and folders (as --data); default: arith, or only the --spec and --data "
        "benchmarks when either is given",
    )
    p.add_argument("--spec", action="append", default=[], type=Path,
                   help="JSON/YAML file with extra benchmark spec(s), which are evaluated too; repeatable")
    p.add_argument("--data", action="append", default=[], metavar="FILE",
                   help="a data file or folder (JSONL, JSONL.gz, Parquet, a datasets save_to_disk folder) read as "
                   "training reads data.path: prompt and answer columns found by name, the math reward and template; "
                   "other layouts need a --spec; repeatable")
    p.add_argument("--k", type=int, default=8, help="samples per problem (default 8)")
    p.add_argument("--limit", type=int, default=None, help="first N problems of each benchmark")
    p.add_argument("--out", type=Path, default=None, help="write results JSON here")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--max-new-tokens", type=int, default=None, help="default: per benchmark")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=64, help="(prompt, sample) rows decoded together")
    p.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    p.add_argument("--dtype", default=None,
                   help="weights dtype, e.g. bfloat16 (default: the checkpoint's on GPU; float32 on CPU, where bf16 "
                   "matmuls are slow)")
    p.add_argument("--max-prompt-tokens", type=int, default=None,
                   help="drop prompts longer than this (the paper: 1024); the count is in the results")
    p.add_argument("--chat-template", choices=("auto", "on", "off"), default="auto",
                   help="wrap text prompts in the tokenizer's chat template (auto: when it has one)")
    p.add_argument("--save-samples", action="store_true", help="keep every completion in the JSON")
    p.add_argument("--threads", type=int, default=None,
                   help="torch CPU threads (default: torch's; 1 is often fastest for tiny models on a busy machine)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def warmstart_parser() -> argparse.ArgumentParser:
    d, t, c = WarmstartConfig, ArithConfig(), CountdownConfig()  # the class's defaults (no model config is built)
    p = argparse.ArgumentParser(prog="skpo warmstart", description=WARMSTART_DESCRIPTION)
    p.add_argument("--out", type=Path, required=True, help="output directory (created)")
    p.add_argument("--task", choices=("arith", "countdown"), default="arith",
                   help="the embedded task: chained arithmetic (default) or countdown")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--init", default=None,
                   help="continue from this saved model (e.g. 'tiny-arith', a shipped one) instead of a fresh tiny model")
    p.add_argument("--steps", type=int, default=None,
                   help=f"most optimizer steps; the LR schedule spans them (default {d.steps} without --minutes)")
    p.add_argument("--minutes", type=float, default=None, help="wall-clock budget (not bit-reproducible)")
    p.add_argument("--target-avg", type=float, default=d.target_avg,
                   help="stop once validation plain avg@k reaches this (a negative value: never)")
    p.add_argument("--check-every", type=int, default=d.check_every, help=f"validation every N steps (0: never; default {d.check_every})")
    p.add_argument("--val-problems", type=int, default=d.val_problems)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--threads", type=int, default=d.threads)
    p.add_argument("--mix", type=float, nargs=3, default=list(d.mix), metavar=("PLAIN", "SKIP_OK", "SKIP_FLAWED"))
    p.add_argument("--min-ops", type=int, default=t.min_ops)
    p.add_argument("--max-ops", type=int, default=t.max_ops)
    p.add_argument("--min-operand", type=int, default=t.min_operand)
    p.add_argument("--max-operand", type=int, default=t.max_operand)
    p.add_argument("--operators", default=None,
                   help=f"e.g. '+-' or '+-*' (default: arith '{''.join(t.operators)}', countdown '{''.join(c.operators)}')")
    p.add_argument("--allow-negative", action="store_true", default=t.allow_negative)
    p.add_argument("--max-abs-result", type=int, default=t.max_abs_result)
    cd = p.add_argument_group("countdown (--task countdown)")
    cd.add_argument("--min-numbers", type=int, default=c.min_numbers, help=f"numbers per problem, at least (default {c.min_numbers})")
    cd.add_argument("--max-numbers", type=int, default=c.max_numbers, help=f"numbers per problem, at most (default {c.max_numbers})")
    cd.add_argument("--min-number", type=int, default=c.min_number)
    cd.add_argument("--max-number", type=int, default=c.max_number)
    cd.add_argument("--min-target", type=int, default=c.min_target)
    cd.add_argument("--max-target", type=int, default=c.max_target)
    cd.add_argument("--max-intermediate", type=int, default=c.max_intermediate,
                    help=f"largest result of a reference move (default {c.max_intermediate})")
    p.add_argument("--eval-problems", type=int, default=200, help="held-out problems (0: skip evaluation)")
    p.add_argument("--eval-k", type=int, default=8)
    p.add_argument("--log-every", type=int, default=100)
    return p


def plot_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="skpo plot", description="Learning curves of one or more runs, overlaid.")
    p.add_argument("run_dirs", nargs="+", type=Path, metavar="RUN_DIR", help="directories holding metrics.jsonl")
    p.add_argument("--out", type=Path, default=Path("curves.png"), help="image to write (default curves.png)")
    p.add_argument("--metrics", default=None,
                   help="comma-separated metric names, one panel each (default: accuracy, reward, entropy, length)")
    p.add_argument("--panels", default=None,
                   help="comma-separated panel names: accuracy, reward, entropy, length, eval, loss, grad_norm, clip, kl, "
                        "tokens, time")
    p.add_argument("--labels", default=None,
                   help="comma-separated legend labels, one per run (distinct labels, distinct colours); 'dir' = the "
                        "directory names. Default: each run's method (runs of one method share a colour)")
    p.add_argument("--x", choices=("step", "time", "tokens"), default="step",
                   help="horizontal axis (tokens = cumulative decoded rollout tokens)")
    p.add_argument("--smooth", type=float, default=0.0, help="EMA weight in [0, 1) (default 0: raw)")
    p.add_argument("--title", default=None)
    p.add_argument("--dpi", type=int, default=120)
    return p


def compare_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="skpo compare",
        description="Methods at an equal rollout-token budget, over seeds: every run trains until it has decoded "
        "--budget rollout tokens, then is evaluated; the table gives the mean ± a 95%% confidence interval over "
        "seeds, with curves of accuracy against tokens and time. Re-running the command resumes the sweep.")
    p.add_argument("--methods", default=DEFAULT_METHODS, help=f"comma-separated presets or variants (default {DEFAULT_METHODS})")
    p.add_argument("--variant", action="append", default=[], metavar="NAME=METHOD:k=v,k=v", help="define a variant; repeatable")
    p.add_argument("--seeds", type=int, default=5, help="seeds 1..N (default 5)")
    p.add_argument("--budget", type=int, default=200_000, help="rollout tokens decoded per run (default 200000)")
    p.add_argument("--config", default=None, help="base YAML config (default: the embedded defaults); the method is set per run")
    p.add_argument("--out", default="runs/compare", help="output directory (default runs/compare)")
    p.add_argument("--benchmarks", default=None,
                   help="comma-separated benchmarks of the evaluations (default: the config's eval.benchmarks; "
                        "built-in names or spec files); avg@k etc. are the mean over them")
    p.add_argument("--eval-problems", type=int, default=200, help="held-out problems of the final evaluation (default 200)")
    p.add_argument("--k", type=int, default=8, help="samples per problem of the final evaluation (default 8)")
    p.add_argument("--points", type=int, default=4, help="evaluations along each run, for the curves (default 4)")
    p.add_argument("--curve-problems", type=int, default=100)
    p.add_argument("--curve-k", type=int, default=4)
    p.add_argument("--jobs", type=int, default=2, help="runs at a time (default 2: one per core here)")
    p.add_argument("--save-every", type=int, default=20, help="checkpoint every N steps, for resuming (default 20)")
    p.add_argument("--max-steps", type=int, default=100_000, help="a cap on steps, whatever the budget")
    p.add_argument("--quick", action="store_true", help="a tiny sweep for tests: 2 seeds, 1500 tokens, small evaluations")
    p.add_argument("--summary-only", action="store_true", help="only aggregate the runs already in --out")
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: run one spec (JSON)
    p.add_argument("overrides", nargs="*", help="key.sub=value overrides for every run")
    return p


def analyze_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="skpo analyze", description="The paper's analyses on the embedded tasks (arithmetic; countdown for "
        "mc-accuracy and segment-variance)."
    )
    sub = p.add_subparsers(dest="analysis", required=True, metavar="{" + ",".join(ANALYSES) + "}")
    mc = sub.add_parser(
        "mc-accuracy", help="sign accuracy / MAE of Monte Carlo advantages vs K and position (Fig. 1/8)"
    )
    _common(mc, "held-out problems, G answers each (default 24)")
    mc.add_argument("--group-size", type=int, default=None, help="answers per problem G (default 8)")
    mc.add_argument("--k-true", type=int, default=None, help="continuations for the 'true' value (default 256)")
    mc.add_argument("--k-est", type=int, default=None, help="estimation pool per (answer, prefix) (default 32)")
    mc.add_argument("--ks", default=None, help="comma-separated K values (default 1,2,4,8,16,32)")
    sc = sub.add_parser("shortcut", help="unconditional / continual / skip conditioning at six cut positions (Fig. 3)")
    _common(sc, "held-out problems, one response each (default 200)")
    sc.add_argument("--group-size", type=int, default=None, help="answers per conditioning and position G (default 8)")
    ia = sub.add_parser("implicit-advantage", help="SKPO upstream advantage vs true value change and step correctness")
    _common(ia, "held-out problems, one segment each (default 100; same as --segments)")
    ia.add_argument("--segments", type=int, default=None, help="segments, one per held-out problem (default 100)")
    ia.add_argument("--models", default=None, help="comma-separated models to compare (overrides --model)")
    ia.add_argument("--group-size", type=int, default=None, help="SKPO's G (default 8)")
    ia.add_argument("--k-true", type=int, default=None, help="continuations per true value (default 128)")
    ia.add_argument("--length", choices=("measured", "prior"), default=None,
                    help="L_q: the model's mean answer length on the problem (default) or --length-prior")
    ia.add_argument("--length-prior", type=float, default=None, help="fixed L_q for --length prior (default 32)")
    sv = sub.add_parser("segment-variance",
                        help="share of outcome variance explained by SKPO's upstream segment (per task, side by side)")
    _common(sv, "held-out problems of each model's own task (default 128)")
    sv.add_argument("--models", default=None,
                    help="comma-separated models, each on its own task, side by side (overrides --model)")
    sv.add_argument("--group-size", type=int, default=None, help="plain answers per problem, for L_q (default 8)")
    sv.add_argument("--segments", type=int, default=None, help="segments per problem M (default 8)")
    sv.add_argument("--answers", type=int, default=None, help="answers after each segment K, per conditioning (default 8)")
    return p


def standin_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="skpo standin",
        description="Write a tiny randomly initialised stand-in of a real model family (real config values, "
        "chat template, special tokens and generation config; shrunk sizes; small vocabulary).",
    )
    p.add_argument("--like", metavar="NAME|DIR", help="a known family (see --list) or a local Hugging Face model directory")
    p.add_argument("--out", type=Path, metavar="DIR", help="output directory (must be empty unless --force)")
    p.add_argument("--seed", type=int, default=0, help="weight seed; same seed, same bytes (default 0)")
    p.add_argument("--hidden-size", type=int, default=64, help="target hidden size (default 64)")
    p.add_argument("--layers", type=int, default=2, help="number of layers (default 2)")
    p.add_argument("--kv-heads", type=int, default=1, help="key/value heads; query heads keep the real ratio (default 1)")
    p.add_argument("--force", action="store_true", help="replace a non-empty output directory")
    p.add_argument("--list", action="store_true", help="print the known families and exit")
    return p


PARSERS = {
    "main": main_job_parser, "train": train_parser, "methods": methods_parser, "eval": evaluate_parser,
    "warmstart": warmstart_parser, "plot": plot_parser, "compare": compare_parser, "analyze": analyze_parser,
    "standin": standin_parser,
}
