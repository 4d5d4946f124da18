"""Multiple-choice verifier: read the option letter a completion chose."""

from __future__ import annotations

import re

__all__ = ["LETTERS", "extract_choice"]

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"

_BOXED_LETTER = re.compile(r"\\boxed\{\s*(?:\\text\{)?\s*\(?([A-Z])\)?\s*\}?\s*\}")
_ANCHORED_LETTER = re.compile(
    r"(?i:answer|option|choice)(?i:\s+is)?\s*[:：]?\s*(?:\*\*)?\s*[\(\[]?([A-Z])(?![A-Za-z0-9])"
)
_LONE_LETTER = re.compile(r"^\s*(?:\*\*)?\(?([A-Z])\)?[.:)]?(?:\*\*)?\s*$", re.MULTILINE)
_LEADING_LETTER = re.compile(r"^\s*\(?([A-Z])[.:)]\s")


def extract_choice(text: str, n_choices: int = 4) -> str | None:
    """The option letter a completion chose, or ``None``.

    Looked for in this order (the last match of a rule wins; letters beyond ``n_choices``
    are ignored): ``\\boxed{B}``; an anchored phrase ("Answer: B", "the answer is (B)",
    "option B"); a line holding only the letter ("B", "(B)", "B."); a completion that starts
    with "B." / "(B)". A bare capital letter elsewhere in prose (the word "A") never counts.
    """
    allowed = LETTERS[:n_choices]
    for pattern in (_BOXED_LETTER, _ANCHORED_LETTER, _LONE_LETTER):
        hits = [m.group(1) for m in pattern.finditer(text) if m.group(1) in allowed]
        if hits:
            return hits[-1]
    match = _LEADING_LETTER.match(text)
    if match and match.group(1) in allowed:
        return match.group(1)
    return None
