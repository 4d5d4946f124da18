"""The checks of a method against the registries: its terms' plug-ins and parameters, and its
rollout kind (roles, group size, the inputs its estimators need, joint groups). One place for
every cross-check; :mod:`skpo.methods` runs them when a method document resolves."""

from __future__ import annotations

from typing import Any

from skpo.algorithms import ADVANTAGE_ESTIMATORS, AGG_MODES, POLICY_LOSSES, PROMPT_SAMPLERS
from skpo.algorithms.advantages import TRAINER_INPUTS
from skpo.errors import MethodError
from skpo.methods.record import LossTerm, Method
from skpo.models.reward_models import check_reward_model
from skpo.rollout import ROLLOUTS


def check_term(term: LossTerm, where: str) -> None:
    """The term's plug-ins and their parameters, each error naming its key."""
    for key, registry, name, params in (
        ("advantage", ADVANTAGE_ESTIMATORS, term.advantage, term.advantage_params),
        ("loss", POLICY_LOSSES, term.loss, term.loss_params),
    ):
        registry.entry_and_params(name, params, f"{where}.{key}", MethodError)
    if term.agg not in AGG_MODES:
        raise MethodError(f"{where}.agg: must be one of {list(AGG_MODES)} (got {term.agg!r})")
    if not term.weight >= 0:
        raise MethodError(f"{where}.weight: must be >= 0 (got {term.weight!r})")


def rollout_params(method: Method) -> Any:
    """The parameter record of ``method``'s rollout kind (validated)."""
    return ROLLOUTS.get(method.rollout).make_params(dict(method.rollout_params))


def joint_roles(method: Method) -> dict[str, tuple[str, ...]]:
    """Role → the roles whose rows form one group with it (the rollout kind's ``joint_roles``);
    a role outside them is a group of its own."""
    joint = tuple(ROLLOUTS.get(method.rollout).meta.get("joint_roles", ()))
    return {role: joint if role in joint else (role,) for role in method.roles}


def check_method_against_rollout(method: Method) -> None:
    """The checks that need the rollout kind: parameters, roles, fixed group size, and that
    it provides every input the method's estimators need."""
    entry, params = ROLLOUTS.entry_and_params(method.rollout, method.rollout_params, f"{method.name}: rollout")
    if hasattr(params, "check_group_size"):  # checks of a kind's parameters that need the group size
        try:
            params.check_group_size(method.group_size)
        except ValueError as err:
            raise ValueError(f"{method.name}: rollout_params: {err}") from None
    produced = tuple(entry.meta.get("roles", ("response",)))
    if set(method.roles) != set(produced):
        raise ValueError(f"{method.name}: rollout {method.rollout!r} produces roles {list(produced)}, "
                         f"so the method needs one term for each (it has {list(method.roles)})")
    fixed = entry.meta.get("group_size")
    if fixed is not None and method.group_size != fixed:
        raise ValueError(f"{method.name}: rollout {method.rollout!r} takes group_size {fixed} (got {method.group_size})")
    if PROMPT_SAMPLERS.get(method.prompt_sampling).meta.get("allocates") and not entry.meta.get("variable_group_size"):
        raise ValueError(f"{method.name}: {method.prompt_sampling} prompt sampling gives each prompt its own number of "
                         f"answers, which rollout {method.rollout!r} does not take (kinds that do: "
                         f"{[n for n in ROLLOUTS.names() if ROLLOUTS.get(n).meta.get('variable_group_size')]})")
    provided = set(entry.meta.get("provides", ())) | ({"token_weights"} if method.token_weights else set())
    provided |= set(TRAINER_INPUTS)  # the trainer attaches these whatever the rollout kind
    if method.reward_model is not None:  # a trained reward model provides its outputs (:mod:`skpo.models.reward_models`)
        provided |= check_reward_model(method)
    for term in method.terms:
        missing = set(term.estimator_meta.get("needs", ())) - provided
        if missing:
            raise ValueError(f"{method.name}: estimator {term.advantage!r} needs {sorted(missing)}, which rollout "
                             f"{method.rollout!r} does not provide")
    if entry.meta.get("length_tracker") and not method.length_tracker:
        raise ValueError(f"{method.name}: rollout {method.rollout!r} needs a length tracker: set length_tracker: true")
    joint = [t for t in method.terms if t.role in entry.meta.get("joint_roles", ())]
    for term in joint[1:]:  # one group: one estimator and one aggregation over it
        for key in ("advantage", "advantage_params", "agg"):
            if getattr(term, key) != getattr(joint[0], key):
                raise ValueError(f"{method.name}: terms.{term.role}.{key}: roles {[t.role for t in joint]} form one group "
                                 f"(rollout {method.rollout!r}), so their terms need the same {key} "
                                 f"({getattr(term, key)!r} vs {getattr(joint[0], key)!r})")
