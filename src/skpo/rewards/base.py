"""The result every verifier in ``skpo.rewards`` returns.

A verifier answers two questions about one completion: how much reward it earns and why.
Keeping the "why" next to the number makes reward curves debuggable (a run whose rewards
collapse to 0 because every answer times out looks very different from one that is simply
wrong), so each verifier fills ``reason`` with a few words and, where it makes sense, the
answer it extracted from the text.

Rewards are 0 or 1 at this layer; the trainer maps them to whatever scale it uses.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Verdict:
    """Outcome of checking one completion.

    Attributes:
        reward: 1.0 when the completion is correct, 0.0 otherwise.
        correct: the same fact as a bool, convenient for accuracy metrics.
        reason: a few words on why, e.g. ``"correct"``, ``"no answer found"``,
            ``"timeout after 5.0s"``, ``"test failed: AssertionError"``.
        extracted: the answer the verifier read from the completion, if any.
    """

    reward: float
    correct: bool
    reason: str
    extracted: str | None = None

    def __post_init__(self) -> None:
        if self.reward not in (0.0, 1.0):
            raise ValueError(f"reward must be 0 or 1 at the verifier layer, got {self.reward!r}")
        if self.correct != (self.reward == 1.0):
            raise ValueError(f"correct={self.correct} disagrees with reward={self.reward}")

    @classmethod
    def right(cls, reason: str = "correct", extracted: str | None = None) -> Verdict:
        """A passing verdict (reward 1)."""
        return cls(1.0, True, reason, extracted)

    @classmethod
    def wrong(cls, reason: str, extracted: str | None = None) -> Verdict:
        """A failing verdict (reward 0)."""
        return cls(0.0, False, reason, extracted)
