"""``skpo train --check`` runs the reward: on the first rows of the training data, the gold answer
written as the reward reads it must get the top of ``reward.range``, and a clearly wrong answer
must not.

- The gold answer as a completion: ``The answer is $\\boxed{gold}$.`` (math, gsm8k and your own
  function), ``The answer is B.`` (choice), the reference solution (arith; countdown's own
  problems), an equation the brute-force solver finds in ``<answer>…</answer>`` (countdown data
  files: TinyZero's answer format), the row's
  ``canonical_solution`` in a code block (code; rows without one are not checked this way).
- The wrong answer: ``I do not know.`` — no number, no letter, no program.
- A reward that raises, hangs, exits or returns a value outside its range fails the check with
  the line training would print.
- A built-in reward that refuses the gold on every checked row, or pays the wrong answer, fails
  the check (the answer column is not what the reward reads); on some rows only, a note names
  them. Your own function may expect another format (a ``<think>`` block, a language), so for it
  both are notes.
"""

from __future__ import annotations

from typing import Any

from skpo.reward_range import from_unit
from skpo.rewards.countdown import numbers_and_target
from skpo.rewards.registry import REWARDS
from skpo.tasks import countdown
from skpo.tasks.arith import solution_text

__all__ = ["ROWS", "WRONG", "check_reward", "gold_completion"]

ROWS = 4
WRONG = "I do not know."


def gold_completion(reward: str, problem: Any) -> str | None:
    """The gold answer of ``problem`` written as reward ``reward`` reads it, or ``None`` (no gold)."""
    arith = getattr(problem, "arith", None)
    if reward == "arith" and arith is not None:
        return solution_text(arith)
    if reward == "countdown":
        if getattr(problem, "countdown", None) is not None:  # the synthetic task: its reference moves
            return countdown.solution_text(problem.countdown)
        try:
            numbers, target = numbers_and_target(problem)
        except ValueError:
            return None
        equations = countdown.solve(numbers, target, limit=1)
        return f"<answer>{equations[0]}</answer>" if equations else None
    if reward == "code":
        row = getattr(problem, "row", None) or {}
        solution = row.get("canonical_solution")
        return f"```python\n{row.get('prompt', '')}{solution}\n```" if isinstance(solution, str) and solution else None
    gold = getattr(problem, "gold", None)
    if not gold:
        return None
    if reward == "choice":
        return f"The answer is {gold}."
    return f"The answer is $\\boxed{{{gold}}}$."


def check_reward(source: Any, value_range: tuple[float, float] = (0.0, 1.0)) -> list[str]:
    """Run ``source``'s reward on its first :data:`ROWS` prompts (see the module docstring);
    returns notes, raises ``ValueError`` (a :class:`~skpo.rewards.registry.RewardError` from the
    reward itself) when the check fails. ``value_range``: ``reward.range``, for the messages."""
    entry = source.reward
    items = list(source.items[:ROWS])
    if not items:
        return []
    gold = [(item, gold_completion(entry.name, item.answer)) for item in items]
    gold = [(item, text) for item, text in gold if text is not None]
    try:
        verdicts = source.score([it for it, _ in gold] + items, [text for _, text in gold] + [WRONG] * len(items))
    except RuntimeError as err:  # the code sandbox cannot start here: training would stop the same way
        raise ValueError(f"reward {entry.name!r}: {err}") from err
    gold_verdicts, wrong_verdicts = verdicts[:len(gold)], verdicts[len(gold):]
    refused = [(item, text, v) for (item, text), v in zip(gold, gold_verdicts) if v.reward != 1.0]
    paid = [item for item, v in zip(items, wrong_verdicts) if v.reward == 1.0]
    own = entry.name not in REWARDS or getattr(entry, "_skpo_user", False)
    notes: list[str] = []
    if refused:
        item, text, v = refused[0]
        what = (f"reward {entry.name!r} gives {from_unit(v.reward, value_range):g} ({v.reason}) to the gold answer written as {text!r} "
                f"(prompt {item.key}), not the top of reward.range")
        if own:
            notes.append(f"{what}, on {len(refused)} of {len(gold)} checked rows: does it expect another format?")
        elif len(refused) == len(gold):
            raise ValueError(f"{what}, on every checked row ({len(gold)}): does the answer column hold the final answer "
                             "(data.answer_column), and is this the reward for the data (data.reward)?")
        else:
            notes.append(f"{what}; {len(refused)} of the {len(gold)} checked rows: that reward can never pay them")
    if paid:
        what = (f"reward {entry.name!r} gives the top of reward.range to the wrong answer {WRONG!r} "
                f"(prompts {', '.join(it.key for it in paid)})")
        if not own:
            raise ValueError(what)
        notes.append(f"{what}: does it reward the answer at all?")
    return notes
