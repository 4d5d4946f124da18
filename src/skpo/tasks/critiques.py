"""Natural-language critiques of an answer and the prompts that ask for a refinement (Critique-GRPO).

Critique-GRPO (Zhang et al. 2025, arXiv 2506.03106) shows the policy a critique of its answer
and asks it to answer again. This module writes the critiques and builds the two prompts the
method needs, as token ids:

Critiques
---------
- :func:`step_critique` — the embedded arithmetic task: the exact step checker
  (:func:`skpo.rewards.arith.check_steps`) names the first wrong line and what it should be,
  e.g. ``line 2 is wrong: 13 + 5 is 18, not 17``, or ``all steps are correct; the answer 33
  is right``. (Derived: the task's checker plays the paper's critic.)
- :func:`verdict_critique` — any verifiable task: the verifier's verdict, with or without the
  gold answer. These are the source's ``simple_gt`` ("critique with ground truth", the
  official run script's choice) and ``simple`` ("indicative critique") templates.
- :func:`critic_messages` — the prompt for a critic model that writes a chain-of-thought
  critique of a wrong answer against the reference (the source asks GPT-4o; here a local
  model). Reading: the reference is the reference solution when the task has one (the
  arithmetic task), else the gold answer (the source passes its data set's solution text).

Refinement prompts (:func:`refinement_prompt_ids`)
--------------------------------------------------
- Data sets (chat or plain): the task's own conversation (its system message, its template
  with the answer-format instructions) with the last user message extended by the previous
  answer, the critique and the request to answer again (:func:`refinement_request`), through
  the chat template when the tokenizer has one (:mod:`skpo.tasks.prompts`). Reading: the
  source writes a fresh prompt with a ``\\boxed`` instruction; keeping the task's template
  keeps whatever answer format the task's verifier reads.
- The embedded arithmetic task (no chat template): SKPO's skip layout ``[s, q]``
  (:func:`skpo.tasks.templates.skip_input_ids`) with the draft ``s`` = the previous answer and
  the critique (:func:`refinement_draft`); the model writes a fresh answer after ``q``, the
  layout its warm start taught it to read.

The refinement itself is trained as an answer to ``q`` (the source puts it in the group of
``q``'s answers); only its sampling sees these prompts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from skpo.rewards.arith import ProblemLike, apply_op, check_steps, parse_equation
from skpo.tasks.prompts import has_chat_template, prompt_ids
from skpo.tasks.templates import skip_input_ids

__all__ = [
    "critic_messages",
    "refinement_draft",
    "refinement_prompt_ids",
    "refinement_request",
    "step_critique",
    "verdict_critique",
]

Message = Mapping[str, Any]


def _expr(a: int, op: str, b: int) -> str:
    return f"{a} {op} {b}"


def step_critique(completion: str, problem: ProblemLike) -> str:
    """A critique of an arithmetic solution from the exact step checker: the first wrong line
    (1-based) and what it should be, or that every step and the answer are right.

    ``problem`` has ``steps`` (``left, op, right, result``) and ``answer`` (an
    :class:`~skpo.tasks.arith.ArithProblem`)."""
    check = check_steps(completion, problem)
    steps = list(problem.steps)
    if check.first_error is None:
        return f"all steps are correct; the answer {problem.answer} is right"
    i = check.first_error
    if i < len(steps):
        ref = steps[i]
        should = _expr(ref.left, ref.op, ref.right)
        if i >= len(check.lines):
            return f"line {i + 1} is missing: it should compute {should}"
        parsed = parse_equation(check.lines[i])
        if parsed is None:
            return f"line {i + 1} is not an equation: it should compute {should}"
        a, op, b, c = parsed
        if (op, b) != (ref.op, ref.right):
            return f"line {i + 1} is wrong: step {i + 1} of the problem is {should}, not {_expr(a, op, b)}"
        if a != ref.left:
            return f"line {i + 1} is wrong: it should start from {ref.left}, the previous result, not {a}"
        return f"line {i + 1} is wrong: {_expr(a, op, b)} is {apply_op(a, op, b)}, not {c}"
    n = len(steps)  # every step right; the ending is not
    if len(check.lines) > n:
        return f"lines 1 to {n} are correct, but line {n + 1} is one step too many: the problem has {n} steps"
    if check.answer is None:
        return f"all steps are correct, but the answer line is missing: it should read Answer: {problem.answer}"
    return f"all steps are correct, but the answer {check.answer} is wrong: the last step gives {problem.answer}"


def verdict_critique(correct: bool, gold: str | None = None) -> str:
    """The source's template critiques: ``The generated solution is correct[, the ground truth
    is G].`` (``gold=None``: the indicative form without the ground truth)."""
    verdict = "correct" if correct else "incorrect"
    if gold is None:
        return f"The generated solution is {verdict}."
    return f"The generated solution is {verdict}, the ground truth is {gold}."


CRITIC_SYSTEM = (
    "You are a science expert. Analyze a student's incorrect solution by comparing it with the correct "
    "solution. Identify the errors and explain the mistakes step by step. Conclude with: 'Conclusion: wrong'"
)


def critic_messages(question: str, answer: str, reference: str) -> list[dict[str, str]]:
    """The critic model's conversation for a wrong answer (system instruction + the question,
    the student's answer and the correct solution)."""
    user = f"Question:\n{question}\n\nStudent's answer:\n{answer}\n\nCorrect solution:\n{reference}\n\nCritique:"
    return [{"role": "system", "content": CRITIC_SYSTEM}, {"role": "user", "content": user}]


def critic_prompt_ids(tokenizer: Any, question: str, answer: str, reference: str) -> list[int]:
    """Token ids of :func:`critic_messages`: chat-templated when the critic's tokenizer has a
    template, else the plain text (:func:`skpo.tasks.prompts.prompt_ids`)."""
    return prompt_ids(tokenizer, critic_messages(question, answer, reference), chat=has_chat_template(tokenizer))


def refinement_request(task_prompt: str, previous: str, critique: str) -> str:
    """The user message that asks for a refinement: the task's own prompt text, the previous
    answer, the critique and the request to answer again."""
    return (
        f"{task_prompt}\n\nYour previous solution:\n{previous}\n\nCritique of it:\n{critique}\n\n"
        "Please answer again: correct the errors the critique identifies, if there are any, reason step by "
        "step, and give the final answer in the format asked for above."
    )


def refinement_draft(previous: str, critique: str) -> str:
    """The draft ``s`` of the skip layout ``[s, q]`` (plain tasks): the previous answer, then
    the critique on a line of its own."""
    return f"{previous.rstrip()}\nCritique: {critique}\n"


def refinement_prompt_ids(tokenizer: Any, prompt: Sequence[int], head: int, previous: str, critique: str,
                          messages: Sequence[Message] | None = None, chat: bool = False) -> list[int]:
    """Token ids of the prompt that asks for a refinement of ``previous`` given ``critique``.

    Args:
        tokenizer: the policy's tokenizer.
        prompt, head: the task prompt ``q`` as ids and its head (kept first: the BOS token).
        previous, critique: the previous answer's text and the critique.
        messages: the task's conversation (data sets), or ``None`` for the plain skip layout.
        chat: ``messages`` go through the chat template (else their plain text form).
    """
    if messages is None:
        draft = list(tokenizer.encode(refinement_draft(previous, critique), add_special_tokens=False))
        return skip_input_ids(draft, prompt, head)
    conversation = [dict(m) for m in messages]
    users = [i for i, m in enumerate(conversation) if m.get("role") == "user"]
    last = users[-1] if users else len(conversation) - 1
    conversation[last]["content"] = refinement_request(str(conversation[last].get("content", "")), previous, critique)
    return prompt_ids(tokenizer, conversation, chat=chat)
