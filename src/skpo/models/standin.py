"""Stand-in models: tiny random models of a real family, with that family's real tokenizer surface.

A stand-in of ``qwen2.5-math-7b`` or ``llama-3.2-3b-instruct`` is a directory that loads like the
real checkpoint (``AutoModelForCausalLM`` / ``AutoTokenizer``, ``local_files_only=True``) and agrees
with it on everything a training or evaluation recipe touches *except the weights and the size*:

- the model class, ``model_type`` and every architecture value of the real ``config.json``
  (vocabulary size, RoPE base and scaling, context length, tied or untied embeddings, q/k/v bias,
  norm epsilon, BOS/EOS ids, dtype) — only the size fields are shrunk (hidden, intermediate,
  layers, heads; the grouped-query ratio is kept and ``head_dim == hidden / heads``);
- the real ``generation_config.json``;
- a tokenizer with the real chat template (verbatim), the real special/added tokens at their real
  ids with their real flags, the real BOS/EOS/pad tokens, the real pre-tokenizer, normalizer,
  decoder and post-processor (Llama 3 prepends ``<|begin_of_text|>`` on ``encode``; Qwen2 adds
  nothing), and the real ``model_max_length``.

What is *not* real: the weights (random, seeded, float32) and the regular vocabulary — a small
byte-level BPE (256 byte tokens + 768 merges learned once from the benchmark texts, shipped in
``skpo/assets/standins/bpe/``), so a stand-in needs no download and no training.

The id gap. Regular tokens take ids ``0..1023``; the special tokens keep their real ids
(Qwen ``151643..151664``, Llama ``128000..128255``). The ids in between are filled with unused
vocabulary entries of two private-use characters (:func:`unused_token`): no text encodes to them,
``decode`` of one gives those characters (the random model will sample them; nothing fails), and
``len(tokenizer)`` / ``tokenizer.vocab_size`` are the real tokenizer's (151665 / 151643 for Qwen,
128256 / 128000 for Llama), never above the model's ``vocab_size``: a trainer that resizes
embeddings to ``len(tokenizer)`` keeps every id valid. As in the real Qwen checkpoint, model rows
above ``len(tokenizer)`` belong to no token (``decode`` gives ``""``).

Family records (``skpo/assets/standins/<name>.json``) hold the real values with a ``source`` entry
for each and an ``unverified`` list for what could not be read from the model's own repository.

Simplifications: the regular vocabulary is not the real one (ids of ordinary text differ from the
real model's), so token counts of ordinary text are larger than with the real tokenizer; weights
are float32 even where the real config says bfloat16 (the config keeps the real dtype, so
``dtype="auto"`` loads bfloat16 like the real model).
"""

from __future__ import annotations

import copy
import json
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from tokenizers import Regex, Tokenizer, models, normalizers, pre_tokenizers, trainers
from transformers import AutoConfig, AutoModelForCausalLM

from skpo.models.tokenizer import byte_symbols

_ASSETS = Path(__file__).resolve().parents[1] / "assets" / "standins"
_BPE_DIR = _ASSETS / "bpe"

BPE_VOCAB_SIZE = 1024  # 256 byte tokens + 768 merges
STANDIN_FILE = "standin.json"

# Files of a Hugging Face model directory that make up its tokenizer (copied verbatim from a
# local model directory).
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
    "chat_template.jinja",
    "chat_template.json",
)

# Pre-tokenization patterns of the BPE styles shipped (see the family records' sources).
BPE_STYLES: dict[str, dict[str, Any]] = {
    "qwen2": {
        "pattern": r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+""",
        "nfc": True,
    },
    "llama3": {
        "pattern": r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+""",
        "nfc": False,
    },
}


class StandinError(ValueError):
    """A stand-in cannot be made: unknown family, unusable output or source directory."""


# --------------------------------------------------------------------------------------------
# Family records
# --------------------------------------------------------------------------------------------


def known_families() -> list[str]:
    """Names of the shipped family records, sorted (e.g. ``["llama-3.2-3b-instruct", ...]``)."""
    return sorted(p.stem for p in _ASSETS.glob("*.json"))


def load_family(name: str) -> dict[str, Any]:
    """The family record ``name`` (a record name or its Hugging Face repo id, any case).

    Raises:
        StandinError: naming the known families when ``name`` is not one of them.
    """
    wanted = name.strip().lower()
    for family in known_families():
        record = json.loads((_ASSETS / f"{family}.json").read_text(encoding="utf-8"))
        if wanted in {family, str(record.get("hf_repo", "")).lower()}:
            return record
    raise StandinError(f"unknown stand-in family {name!r}; known: {', '.join(known_families())}")


# --------------------------------------------------------------------------------------------
# The small byte-level BPE
# --------------------------------------------------------------------------------------------


def bpe_corpus(benchmark_dir: Path) -> list[str]:
    """The texts the shipped merges were learned from: every string field ``problem``,
    ``question``, ``solution``, ``answer`` of the ``*.jsonl`` files in ``benchmark_dir``."""
    texts: list[str] = []
    for path in sorted(Path(benchmark_dir).glob("*.jsonl")):
        with path.open(encoding="utf-8") as f:
            for line in f:
                if not line.strip():
                    continue
                row = json.loads(line)
                texts += [row[k] for k in ("problem", "question", "solution", "answer") if isinstance(row.get(k), str)]
    return texts


def train_bpe(texts: Iterable[str], style: str, vocab_size: int = BPE_VOCAB_SIZE) -> dict[str, Any]:
    """Learn ``vocab_size - 256`` byte-level BPE merges from ``texts`` under a family's
    pre-tokenization ``style`` (``"qwen2"``: single digits; ``"llama3"``: up to 3 digits).

    Run once to make the shipped assets (``skpo/assets/standins/bpe/<style>.json``); making a
    stand-in only reads them. Returns ``{"style", "pattern", "vocab_size", "merges"}``.
    """
    spec = BPE_STYLES[style]
    tok = Tokenizer(models.BPE())
    if spec["nfc"]:
        tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(spec["pattern"]), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, initial_alphabet=byte_symbols(), show_progress=False, min_frequency=2
    )
    tok.train_from_iterator(list(texts), trainer)
    merges = json.loads(tok.to_str())["model"]["merges"]
    merges = [m.split(" ", 1) if isinstance(m, str) else list(m) for m in merges]
    return {"style": style, "pattern": spec["pattern"], "vocab_size": 256 + len(merges), "merges": merges}


def load_bpe(style: str) -> tuple[dict[str, int], list[list[str]]]:
    """Vocabulary (byte symbols at ids 0..255 in byte order, then one token per merge in merge
    order) and merges of the shipped BPE ``style``."""
    asset = json.loads((_BPE_DIR / f"{style}.json").read_text(encoding="utf-8"))
    vocab = {symbol: i for i, symbol in enumerate(byte_symbols())}
    for left, right in asset["merges"]:
        vocab.setdefault(left + right, len(vocab))
    return vocab, [list(m) for m in asset["merges"]]


def unused_token(i: int) -> str:
    """The vocabulary entry that fills unused id ``i``: two characters from Unicode's private use
    area (U+E000–U+F8FF), which byte-level pre-tokenization never produces, so no text encodes
    to it; decoding it gives those two characters."""
    first, second = divmod(i, _PUA_SIZE)
    if first >= _PUA_SIZE:
        raise StandinError(f"id {i} is beyond the unused-token range")
    return chr(_PUA_START + first) + chr(_PUA_START + second)


_PUA_START, _PUA_SIZE = 0xE000, 0xF8FF - 0xE000 + 1


def build_tokenizer_json(family: dict[str, Any]) -> dict[str, Any]:
    """The ``tokenizer.json`` of a family's stand-in.

    Layout (the real one's, with a small regular vocabulary): ids ``0..1023`` the shipped
    byte-level BPE; ids ``1024..real_base_vocab_size-1`` unused entries (:func:`unused_token`);
    then every added token at its real id with its real flags. Pipeline: the family's real
    normalizer, pre-tokenizer, post-processor, decoder and BPE flags.
    """
    vocab, merges = load_bpe(family["bpe"])
    base = int(family["real_base_vocab_size"])
    if len(vocab) > base:
        raise StandinError(f"BPE vocabulary ({len(vocab)}) is larger than the real one ({base})")
    for i in range(len(vocab), base):
        vocab[unused_token(i)] = i
    ids = sorted(t["id"] for t in family["added_tokens"])
    if ids != list(range(base, base + len(ids))):
        raise StandinError("added tokens must take the ids right after the regular vocabulary")
    added = [
        {
            "id": t["id"],
            "content": t["content"],
            "single_word": t.get("single_word", False),
            "lstrip": t.get("lstrip", False),
            "rstrip": t.get("rstrip", False),
            "normalized": t.get("normalized", False),
            "special": t["special"],
        }
        for t in sorted(family["added_tokens"], key=lambda t: t["id"])
    ]
    pipeline = copy.deepcopy(family["tokenizer_json"])
    model = dict(pipeline["model"], vocab=vocab, merges=merges)
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": pipeline["normalizer"],
        "pre_tokenizer": pipeline["pre_tokenizer"],
        "post_processor": pipeline["post_processor"],
        "decoder": pipeline["decoder"],
        "model": model,
    }


def build_tokenizer_config(family: dict[str, Any]) -> dict[str, Any]:
    """The stand-in's ``tokenizer_config.json``: the real essentials plus ``added_tokens_decoder``."""
    config = copy.deepcopy(family["tokenizer_config"])
    config["added_tokens_decoder"] = {
        str(t["id"]): {k: t.get(k, False) for k in ("content", "lstrip", "normalized", "rstrip", "single_word", "special")}
        for t in family["added_tokens"]
    }
    return dict(sorted(config.items()))


# --------------------------------------------------------------------------------------------
# Shrinking a config and initialising weights
# --------------------------------------------------------------------------------------------


def _round_to(x: float, multiple: int) -> int:
    return max(multiple, int(round(x / multiple)) * multiple)


def shrink_config(
    config: dict[str, Any], *, hidden_size: int = 64, num_layers: int = 2, num_kv_heads: int = 1
) -> tuple[dict[str, Any], dict[str, list[Any]]]:
    """A copy of a real ``config.json`` dict with only its size fields shrunk.

    Kept: everything else (vocabulary size, RoPE, positions, tying, ids, dtype…). Shrunk:
    ``num_key_value_heads`` → ``min(num_kv_heads, real)``; ``num_attention_heads`` → that times the
    real grouped-query ratio; ``head_dim`` → ``hidden_size // heads`` rounded down to an even
    number (at least 8; RoPE rotates pairs); ``hidden_size`` → ``heads * head_dim`` (so it can
    differ a little from the requested value); ``intermediate_size`` → the real
    intermediate/hidden ratio times the new hidden size, rounded to a multiple of 8;
    ``num_hidden_layers`` → ``num_layers``; per-layer fields (``max_window_layers``,
    ``layer_types``) follow the layer count.

    Returns:
        ``(new_config, shrunk)`` where ``shrunk[key] == [real_value, new_value]``.

    Raises:
        StandinError: for configs without the usual decoder size fields (e.g. nested
            multimodal ``text_config``) or inconsistent head counts.
    """
    needed = ("hidden_size", "num_attention_heads", "num_hidden_layers", "intermediate_size")
    missing = [k for k in needed if k not in config]
    if missing:
        raise StandinError(f"config has no {', '.join(missing)} (only flat decoder-only configs can be shrunk)")
    if hidden_size < 8 or num_layers < 1 or num_kv_heads < 1:
        raise StandinError("hidden_size must be >= 8, num_layers and num_kv_heads >= 1")
    real_heads = int(config["num_attention_heads"])
    real_kv = int(config.get("num_key_value_heads") or real_heads)
    if real_heads % real_kv:
        raise StandinError(f"{real_heads} attention heads are not a multiple of {real_kv} key/value heads")
    ratio = real_heads // real_kv
    kv = min(num_kv_heads, real_kv)
    heads = kv * ratio
    head_dim = max(8, (hidden_size // heads) // 2 * 2)
    hidden = heads * head_dim
    real_hidden = int(config["hidden_size"])
    intermediate = _round_to(int(config["intermediate_size"]) / real_hidden * hidden, 8)

    new = copy.deepcopy(config)
    new_values: dict[str, Any] = {
        "hidden_size": hidden,
        "intermediate_size": intermediate,
        "num_hidden_layers": num_layers,
        "num_attention_heads": heads,
    }
    if "num_key_value_heads" in config:
        new_values["num_key_value_heads"] = kv
    if "head_dim" in config:
        new_values["head_dim"] = head_dim
    if "max_window_layers" in config:
        new_values["max_window_layers"] = min(int(config["max_window_layers"]), num_layers)
    if isinstance(config.get("layer_types"), list):
        new_values["layer_types"] = list(config["layer_types"][:num_layers])
    shrunk = {k: [config.get(k), v] for k, v in new_values.items() if config.get(k) != v}
    new.update(new_values)
    return new, shrunk


def weight_shapes(model: Any) -> dict[str, tuple[int, ...]]:
    """Names and shapes of the tensors a checkpoint of ``model`` stores: its state dict with each
    tied tensor (one parameter under two names, e.g. tied input/output embeddings) listed once,
    under its first name in module order (``model.embed_tokens.weight``, as ``save_pretrained``
    keeps it). Works on a ``meta``-device model."""
    out: dict[str, tuple[int, ...]] = {}
    seen: set[int] = set()
    for name, tensor in model.state_dict(keep_vars=True).items():
        if id(tensor) in seen:
            continue
        seen.add(id(tensor))
        out[name] = tuple(tensor.shape)
    return out


def random_state_dict(shapes: dict[str, tuple[int, ...]], seed: int, std: float) -> dict[str, Any]:
    """Seeded float32 weights for ``shapes``, filled in sorted name order and independent of
    ``transformers``' own initialisers (so the bytes depend only on names, shapes, ``seed`` and
    ``std``): RMSNorm weights 1, biases 0, every other tensor N(0, std²)."""
    generator = torch.Generator().manual_seed(seed)
    out: dict[str, torch.Tensor] = {}
    for name in sorted(shapes):
        shape = shapes[name]
        module = name.rsplit(".", 2)[-2] if name.count(".") >= 1 else name
        if name.endswith(".weight") and "norm" in module:
            out[name] = torch.ones(shape, dtype=torch.float32)
        elif name.endswith(".bias"):
            out[name] = torch.zeros(shape, dtype=torch.float32)
        else:
            out[name] = torch.empty(shape, dtype=torch.float32).normal_(0.0, std, generator=generator)
    return out


# --------------------------------------------------------------------------------------------
# make_standin
# --------------------------------------------------------------------------------------------


def _write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def _prepare_out(out: Path, force: bool) -> None:
    if out.exists() and not out.is_dir():
        raise StandinError(f"output path {str(out)!r} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()):
        if not force:
            raise StandinError(f"output directory {str(out)!r} exists and is not empty (--force / force=True replaces it)")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)


def _local_model_dir(path: Path) -> Path:
    if not path.is_dir():
        raise StandinError(f"{str(path)!r} is neither a known family ({', '.join(known_families())}) nor a directory")
    if not (path / "config.json").is_file():
        raise StandinError(f"{str(path)!r} is not a model directory: it has no config.json")
    if not any((path / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")):
        raise StandinError(f"{str(path)!r} is not a model directory: it has no tokenizer files")
    return path


def make_standin(
    like: str | Path,
    out: str | Path,
    *,
    seed: int = 0,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_kv_heads: int = 1,
    force: bool = False,
) -> Path:
    """Write a stand-in of ``like`` into ``out`` and return ``out``.

    Args:
        like: a known family name (:func:`known_families`; its Hugging Face repo id works too), or
            a local Hugging Face model directory — then its config is shrunk the same way, its
            tokenizer files and ``generation_config.json`` are copied verbatim (full vocabulary).
        out: output directory (created; must be empty unless ``force``).
        seed: weight seed — the same seed gives byte-identical ``model.safetensors``.
        hidden_size, num_layers, num_kv_heads: target size (see :func:`shrink_config`).
        force: replace a non-empty ``out``.

    Writes ``config.json``, ``generation_config.json``, ``model.safetensors`` (float32),
    ``tokenizer.json`` + ``tokenizer_config.json`` (+ ``special_tokens_map.json`` where the real
    model has one) or the copied tokenizer files, and ``standin.json`` (what it stands in for,
    the seed, what was shrunk, the id layout, the pad token a trainer should use).

    Raises:
        StandinError: unknown family / not a model directory / ``out`` not empty.
    """
    out = Path(out)
    like_path = Path(like).expanduser()
    family: dict[str, Any] | None = None
    source_dir: Path | None = None
    try:
        family = load_family(str(like))
    except StandinError:
        if not like_path.exists():
            raise StandinError(
                f"{str(like)!r} is neither a known stand-in family ({', '.join(known_families())}) "
                "nor an existing model directory"
            ) from None
        source_dir = _local_model_dir(like_path)
    if source_dir is not None and out.resolve() == source_dir.resolve():
        raise StandinError("output directory is the source model directory")

    if family is not None:
        real_config = family["config"]
    else:
        assert source_dir is not None  # (no family: a local model directory)
        real_config = json.loads((source_dir / "config.json").read_text(encoding="utf-8"))
    config, shrunk = shrink_config(real_config, hidden_size=hidden_size, num_layers=num_layers, num_kv_heads=num_kv_heads)

    _prepare_out(out, force)
    try:
        _write_standin(out, family, source_dir, real_config, config, shrunk, seed=seed,
                       requested={"hidden_size": hidden_size, "num_layers": num_layers, "num_kv_heads": num_kv_heads})
    except BaseException as e:
        shutil.rmtree(out, ignore_errors=True)  # never leave a half-written model directory
        if isinstance(e, (ValueError, KeyError, OSError)) and not isinstance(e, StandinError):
            first_line = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise StandinError(f"transformers cannot build a {config.get('model_type')!r} model from this config: {first_line}") from e
        raise
    return out


def _write_standin(
    out: Path,
    family: dict[str, Any] | None,
    source_dir: Path | None,
    real_config: dict[str, Any],
    config: dict[str, Any],
    shrunk: dict[str, list[Any]],
    *,
    seed: int,
    requested: dict[str, int],
) -> None:
    _write_json(out / "config.json", config)
    record: dict[str, Any] = {
        "standin_of": family["name"] if family else str(source_dir.resolve()),  # type: ignore[union-attr]  # (no family: a directory)
        "hf_repo": family["hf_repo"] if family else None,
        "seed": seed,
        "requested": requested,
        "shrunk": shrunk,
        "weights": "random (not trained): norms 1, biases 0, other tensors N(0, initializer_range^2), float32",
        "weights_dtype": "float32",
        "config_dtype": real_config.get("torch_dtype", real_config.get("dtype")),
    }

    if family is not None:
        _write_json(out / "generation_config.json", family["generation_config"])
        _write_json(out / "tokenizer.json", build_tokenizer_json(family))
        _write_json(out / "tokenizer_config.json", build_tokenizer_config(family))
        if family.get("special_tokens_map"):
            _write_json(out / "special_tokens_map.json", family["special_tokens_map"])
        vocab, _ = load_bpe(family["bpe"])
        ids = sorted(t["id"] for t in family["added_tokens"])
        record["tokenizer"] = {
            "regular_vocabulary": f"small byte-level BPE '{family['bpe']}' (ids 0..{len(vocab) - 1}), not the real one",
            "real_regular_vocabulary_size": family["real_base_vocab_size"],
            "special_ids": {t["content"]: t["id"] for t in family["added_tokens"] if not t["content"].startswith("<|reserved_special_token_")},
            "unused_ids": [len(vocab), ids[0] - 1],
            "unused_ids_are": "vocabulary entries of two private-use characters (U+E000-U+F8FF): no text encodes to them, decode gives those characters",
            "len_tokenizer": ids[-1] + 1,
            "model_vocab_size": config.get("vocab_size"),
        }
        record["pad_token"] = family["tokenizer_config"].get("pad_token")
        record["trainer_pad_token"] = family.get("trainer_pad_token")
        record["source"] = family["source"]
        record["unverified"] = family.get("unverified", [])
    else:
        assert source_dir is not None  # (no family: a local model directory)
        if (source_dir / "generation_config.json").is_file():
            shutil.copyfile(source_dir / "generation_config.json", out / "generation_config.json")
        copied = []
        for name in TOKENIZER_FILES:
            if (source_dir / name).is_file():
                shutil.copyfile(source_dir / name, out / name)
                copied.append(name)
        record["tokenizer"] = {"copied_verbatim": copied}
        tokenizer_config = source_dir / "tokenizer_config.json"
        if tokenizer_config.is_file():
            record["pad_token"] = json.loads(tokenizer_config.read_text(encoding="utf-8")).get("pad_token")

    hf_config = AutoConfig.from_pretrained(str(out), local_files_only=True)
    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(hf_config)
    state = random_state_dict(weight_shapes(skeleton), seed, float(real_config.get("initializer_range", 0.02)))
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    record["parameters"] = int(sum(t.numel() for t in state.values()))
    record["model_class"] = type(skeleton).__name__
    _write_json(out / STANDIN_FILE, record)
