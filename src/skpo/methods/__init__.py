"""Methods as data: the shipped method documents (``skpo/methods/<name>.yaml``), overrides, validation.

A method document names its rollout kind and that kind's parameters, its loss terms (one per
role: advantage + params, loss + params, aggregation, weight), its trackers, prompt sampling,
filters, token weights, KL/entropy settings and the paper its defaults come from. A run picks
one with ``train.method`` and may change any part of it with a ``method:`` section — in YAML or
on the command line — that is merged onto the document (terms are addressed by role)::

    method:
      terms:
        upstream: {weight: 0.1}
        downstream: {weight: 0.9, loss_params: {clip_high: 0.3}}
      rollout_params: {selection: extreme}

    skpo train train.method=skpo method.terms.upstream.weight=0.1 method.kl_coef=0.01

A ``null`` removes a key (``method.terms.upstream=null`` drops a term, which the rollout
validation then refuses for SKPO). The document and the ``method`` section are the one home of
every method setting: group size, rollout parameters, KL and entropy coefficients, prompt
sampling, DAPO's filter. The run-config keys of earlier releases that set parts of it
(``rollout.group_size``, ``rollout.skpo.*``, ``rollout.mc_k``, ``train.kl_coef``, …:
:data:`skpo.config.OLD_SPELLINGS`) are read as their ``method.*`` spelling with a note, and
``method:`` wins over them. Every value is validated through the registries' parameter records
(an unknown key names itself: ``method.terms.downstream.loss_params: cispo: unknown
parameter(s) ['clip_hgh']``). The method is resolved once per run (:func:`resolve_run_method`,
from :func:`skpo.config.load_config`); the resolved record is written to the run directory
(``method.yaml``) and shown by ``skpo train --check`` and ``skpo methods --show``.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml

from skpo.algorithms import PROMPT_SAMPLERS
from skpo.errors import MethodError, did_you_mean
from skpo.methods.checks import check_method_against_rollout, check_term, joint_roles, rollout_params
from skpo.methods.record import LossTerm, Method, term_loss
from skpo.paths import METHOD_DIR, is_method_file, shipped_method_names
from skpo.registry import check_types
from skpo.rollout import ROLLOUTS

__all__ = ["METHODS", "Method", "MethodError", "ResolvedMethod", "check_method_against_rollout", "get_method", "joint_roles",
           "method_document", "method_names", "sizes_that_apply", "method_table", "method_table_markdown", "method_to_document", "method_yaml",
           "resolve_method", "resolve_run_method", "rollout_params", "term_loss"]


_TOP_KEYS = {
    "name", "description", "source", "rollout", "rollout_params", "group_size", "terms", "filter_groups",
    "max_gen_batches", "value_tracker", "length_tracker", "prompt_sampling", "prompt_sampling_params", "token_weights",
    "token_weight_params", "agg_scale", "kl_coef", "kl_estimator", "kl_placement", "entropy_coef", "reward_range",
    "reward_model", "reward_model_params",
}
_TERM_KEYS = {"advantage", "advantage_params", "loss", "loss_params", "agg", "weight"}


def method_names() -> list[str]:
    """Names of the shipped methods (the YAML files of ``skpo/methods``)."""
    return shipped_method_names()


@cache
def _read_shipped(name: str) -> dict[str, Any]:
    path = METHOD_DIR / f"{name}.yaml"
    if not path.is_file():
        raise MethodError(f"unknown method {name!r}{did_you_mean(name, method_names())}; methods: {', '.join(method_names())} (or a path to a method .yaml)")
    return _parse(path)


def _parse(path: Path) -> dict[str, Any]:
    try:
        doc = yaml.safe_load(path.read_text())
    except OSError as err:
        raise MethodError(f"method file {path}: cannot read it ({err.strerror or err})") from None
    except yaml.YAMLError as err:
        raise MethodError(f"method file {path}: not valid YAML ({' '.join(str(err).split())})") from None
    if not isinstance(doc, dict):
        raise MethodError(f"{path}: a method document must be a mapping")
    return doc


def _read(name: str) -> dict[str, Any]:
    """A shipped method by name, or a user's method document by path (read each time: it may change)."""
    if is_method_file(name):
        path = Path(name).expanduser()
        if not path.is_file():
            raise MethodError(f"method file {name!r} does not exist")
        doc = _parse(path)
        doc.setdefault("name", path.stem)
        return doc
    return _read_shipped(name)


def method_document(name: str) -> dict[str, Any]:
    """The shipped document of ``name`` (a fresh copy: terms as a mapping role → term)."""
    return copy.deepcopy(_read(name))


def _merge(base: Any, override: Any) -> Any:
    """``override`` merged into ``base``: mappings recursively; ``None`` in place of a mapping
    deletes it (``terms.upstream: null``); any other value replaces (``None`` included:
    ``dual_clip: null`` turns the dual clip off)."""
    if not isinstance(base, dict) or not isinstance(override, Mapping):
        return copy.deepcopy(override)
    out = dict(base)
    for key, value in override.items():
        if value is None and isinstance(out.get(key), dict):
            del out[key]
        elif key in out:
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def _build(doc: dict[str, Any], where: str) -> Method:
    unknown = sorted(set(doc) - _TOP_KEYS)
    if unknown:
        raise MethodError(f"{where}: unknown key(s) {unknown}; known: {sorted(_TOP_KEYS)}")
    terms_doc = doc.get("terms")
    if not isinstance(terms_doc, Mapping) or not terms_doc:
        raise MethodError(f"{where}.terms: a mapping role → term is required")
    terms = []
    for role, term in terms_doc.items():
        if term is None:
            continue
        if not isinstance(term, Mapping):
            raise MethodError(f"{where}.terms.{role}: a term must be a mapping (got {term!r})")
        bad = sorted(set(term) - _TERM_KEYS)
        if bad:
            raise MethodError(f"{where}.terms.{role}: unknown key(s) {bad}; known: {sorted(_TERM_KEYS)}")
        missing = sorted({"advantage", "loss", "agg"} - set(term))
        if missing:
            raise MethodError(f"{where}.terms.{role}: missing {missing}")
        for key in ("advantage_params", "loss_params"):
            if term.get(key) is not None and not isinstance(term[key], Mapping):
                raise MethodError(f"{where}.terms.{role}.{key}: must be a mapping (got {term[key]!r})")
        try:
            weight = float(term.get("weight", 1.0))
        except (TypeError, ValueError):
            raise MethodError(f"{where}.terms.{role}.weight: must be a number (got {term.get('weight')!r})") from None
        t = LossTerm(str(role), str(term["advantage"]), str(term["loss"]), str(term["agg"]), weight,
                     MappingProxyType(dict(term.get("advantage_params") or {})),
                     MappingProxyType(dict(term.get("loss_params") or {})))
        check_term(t, f"{where}.terms.{role}")
        terms.append(t)
    kwargs: dict[str, Any] = {}
    for key in _TOP_KEYS - {"terms", "name", "description", "rollout"}:
        if key in doc:
            value = doc[key]
            if key in ("rollout_params", "token_weight_params", "reward_model_params", "prompt_sampling_params"):
                if value is not None and not isinstance(value, Mapping):
                    raise MethodError(f"{where}.{key}: must be a mapping (got {value!r})")
                value = MappingProxyType(dict(value or {}))
            elif key == "reward_range":
                value = tuple(float(v) for v in value)
            kwargs[key] = value
    for key in ("name", "rollout"):
        if not doc.get(key):
            raise MethodError(f"{where}: {key!r} is required")
    try:
        check_types(Method, kwargs, where)
    except ValueError as err:
        raise MethodError(str(err)) from None
    try:
        method = Method(name=str(doc["name"]), description=str(doc.get("description", "")), rollout=str(doc["rollout"]),
                              terms=tuple(terms), **kwargs)
        method.validate()
        check_method_against_rollout(method)
    except (TypeError, ValueError) as err:
        raise MethodError(f"{where}: {err}") from None
    return method


def resolve_method(name: str, overrides: Mapping[str, Any] | None = None, where: str = "method") -> Method:
    """The method ``name`` with ``overrides`` merged in, validated (errors name ``where.<key>``)."""
    doc = method_document(name)
    if overrides:
        if not isinstance(overrides, Mapping):
            raise MethodError(f"{where}: overrides must be a mapping (got {overrides!r})")
        doc = _merge(doc, overrides)
        doc["name"] = _read(name).get("name", name) if "name" not in overrides else doc["name"]
    return _build(doc, where)


@dataclass(frozen=True)
class ResolvedMethod:
    """The method a run trains, resolved once from its config (:meth:`skpo.config.RunConfig.resolved`).

    Attributes:
        method: the record (``train.method``'s document with ``overrides`` merged in).
        overrides: the config's ``method`` section as applied (earlier spellings included).
        notes: what the user should read: settings that do not apply, earlier spellings.
    """

    method: Method
    overrides: Mapping[str, Any]
    notes: tuple[str, ...] = ()


_ABSENT = object()


def resolve_run_method(name: str, overrides: Mapping[str, Any] | None = None,
                       old: Sequence[tuple[str, str, Any]] = ()) -> ResolvedMethod:
    """The method a run config asks for: ``train.method``'s document (``name``) with the config's
    ``method`` section (``overrides``) merged in. ``old``: method keys the config gave in their
    earlier run-config spelling, ``(old key, new key, value)`` (:data:`skpo.config.OLD_SPELLINGS`);
    the ``method`` section wins over them, and one that does not apply to the method's rollout
    kind (a rollout parameter it does not have, a group size it fixes) is ignored with a note."""
    doc = method_document(name)
    try:
        kind = ROLLOUTS.get(str(doc.get("rollout")))
    except KeyError as err:
        raise MethodError(f"method {name!r}: rollout: {err.args[0]}") from None
    rollout_fields = set(getattr(kind.params_cls, "__dataclass_fields__", {}))
    fixed_group = kind.meta.get("group_size")
    from_old: dict[str, Any] = {}
    notes: list[str] = []
    for key, new, value in old:
        target = tuple(new.split(".")[1:])  # "method.rollout_params.k" → ("rollout_params", "k")
        if target[0] == "rollout_params" and target[1] not in rollout_fields:
            notes.append(f"{key} does not apply to method {name!r} (rollout {doc['rollout']!r}); ignored")
            continue
        if target == ("group_size",) and fixed_group is not None:
            if value != fixed_group:
                notes.append(f"{key}={value} does not apply to method {name!r} (rollout {doc['rollout']!r} takes "
                             f"{fixed_group} answer per prompt); ignored")
            continue
        if is_method_file(name):  # the user's own document: a run-config key may not silently replace its value
            have: Any = doc
            for part in target:
                have = have.get(part, _ABSENT) if isinstance(have, Mapping) else _ABSENT
            if have is not _ABSENT and have != value:  # said at start and by --check, never silent
                notes.append(f"{key}={value!r} from the run config replaces {'.'.join(target)}: {have!r} of your method "
                             f"document {name} (set it in one place to silence this note)")
        node = from_old
        for part in target[:-1]:
            node = node.setdefault(part, {})
        node[target[-1]] = value
    applied = _merge(from_old, dict(overrides or {}))
    return ResolvedMethod(resolve_method(name, applied, where="method"), applied, tuple(notes))


def sizes_that_apply(name: str, group_size: int | None = None, **rollout_params: Any) -> list[str]:
    """``method.*`` overrides (``key=value``) of a group size and rollout parameters, those that
    apply to the method ``name``: none for a group size its rollout kind fixes (SPO's 1) or a
    parameter the kind does not have — one setting for a sweep over several methods
    (``skpo compare --quick``: ``group_size=4, k=2, max_steps=2``)."""
    kind = ROLLOUTS.get(str(_read(name).get("rollout")))
    fields = set(getattr(kind.params_cls, "__dataclass_fields__", {}))
    out = [] if group_size is None or kind.meta.get("group_size") is not None else [f"method.group_size={group_size}"]
    return out + [f"method.rollout_params.{k}={json.dumps(v)}" for k, v in rollout_params.items() if k in fields]


def method_yaml(method: Method) -> str:
    """A resolved method as YAML: ``method.yaml`` of a run, ``skpo methods --show``, ``skpo train --check``."""
    return yaml.safe_dump(method_to_document(method), sort_keys=False, allow_unicode=True)


def method_to_document(method: Method) -> dict[str, Any]:
    """A resolved method as a document (what ``method.yaml`` of a run holds)."""
    doc: dict[str, Any] = {
        "name": method.name, "description": method.description, "source": method.source, "rollout": method.rollout,
        "rollout_params": dict(method.rollout_params), "group_size": method.group_size, "terms": {},
        "filter_groups": method.filter_groups, "max_gen_batches": method.max_gen_batches,
        "value_tracker": method.value_tracker, "length_tracker": method.length_tracker,
        "prompt_sampling": method.prompt_sampling, "token_weights": method.token_weights,
        "token_weight_params": dict(method.token_weight_params), "agg_scale": method.agg_scale,
        "kl_coef": method.kl_coef, "kl_estimator": method.kl_estimator, "kl_placement": method.kl_placement,
        "entropy_coef": method.entropy_coef, "reward_range": list(method.reward_range),
    }
    if method.prompt_sampling_params:  # only when set: documents of runs without them stay as they were
        doc["prompt_sampling_params"] = dict(method.prompt_sampling_params)
    if method.reward_model is not None:  # only when set: documents of runs without one stay as they were
        doc["reward_model"] = method.reward_model
        doc["reward_model_params"] = dict(method.reward_model_params)
    for t in method.terms:
        doc["terms"][t.role] = {"advantage": t.advantage, "advantage_params": dict(t.advantage_params), "loss": t.loss,
                                "loss_params": dict(t.loss_params), "agg": t.agg, "weight": t.weight}
    return doc


class _ShippedMethods(Mapping):
    """The shipped methods by name, each resolved (validated) on first use."""

    def __getitem__(self, name: str) -> Method:
        if name not in method_names():
            raise KeyError(f"unknown method {name!r}; presets: {method_names()}")
        return _resolved(name)

    def __iter__(self):
        return iter(method_names())

    def __len__(self) -> int:
        return len(method_names())


@cache
def _resolved(name: str) -> Method:
    return resolve_method(name, where=f"skpo/methods/{name}.yaml")


METHODS: Mapping[str, Method] = _ShippedMethods()


def get_method(name: str) -> Method:
    """A shipped method, as its document says (``KeyError`` naming the known ones)."""
    return METHODS[name]


# ----------------------------------------------------------------------------- the table


def _params(params: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items())


def method_table() -> list[dict[str, str]]:
    """One row per shipped method: name, rollout, estimator, loss, aggregation, key defaults, source."""
    rows = []
    for name in method_names():
        m = get_method(name)
        terms = m.terms
        defaults = [f"G={m.group_size}"]
        if m.rollout_params:
            defaults.append(_params({k: v for k, v in m.rollout_params.items() if k in ("k", "max_steps", "skip", "selection",
                                                                                           "num_refinements", "critique",
                                                                                           "warmup_steps", "levels_per_tier")}))
        for t in terms:
            lp = _params(t.loss_params)
            ap = _params(t.advantage_params)
            label = f"{t.role}: " if len(terms) > 1 else ""
            defaults.append(f"{label}w={t.weight:g}" + (f", {lp}" if lp else "") + (f", {ap}" if ap else ""))
        if m.filter_groups:
            defaults.append(f"dynamic sampling (≤{m.max_gen_batches} rounds)")
        sampler = PROMPT_SAMPLERS.get(m.prompt_sampling)
        sampler_label = sampler.meta.get("label")
        if sampler_label and m.prompt_sampling_params:
            sampler_label += f" ({_params(m.prompt_sampling_params)})"
        reads_tracker = "value_tracker" in sampler.meta.get("needs", ())
        if m.value_tracker:
            defaults.append("value tracker" + (f", {sampler_label}" if sampler_label and reads_tracker else ""))
        if sampler_label and not (m.value_tracker and reads_tracker):
            defaults.append(sampler_label)
        if m.token_weights:
            defaults.append(f"token weights {m.token_weights}")
        if m.reward_model:
            defaults.append(f"reward model {m.reward_model}" + (f" ({_params(m.reward_model_params)})" if m.reward_model_params else ""))
        rows.append({
            "name": name, "rollout": m.rollout,
            "estimator": " / ".join(t.advantage for t in terms), "loss": " / ".join(t.loss for t in terms),
            "aggregation": " / ".join(t.agg for t in terms), "key defaults": "; ".join(d for d in defaults if d),
            "source": m.source,
        })
    return rows


def method_table_markdown() -> str:
    """The table as Markdown (``skpo methods --markdown``; ``docs/methods.md`` holds the same)."""
    cols = ["name", "rollout", "estimator", "loss", "aggregation", "key defaults", "source"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in method_table():
        lines.append("| " + " | ".join(row[c].replace("|", "\\|") for c in cols) + " |")
    return "\n".join(lines)
