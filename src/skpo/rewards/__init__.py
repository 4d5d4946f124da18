"""Verifiers: map a model's text to a reward with a reason.

- ``skpo.rewards.arith``: the synthetic chained-arithmetic checker (exact, per step).
- ``skpo.rewards.math``: math answers through ``math-verify`` (``\\boxed{}`` and plain answers).
- ``skpo.rewards.code``: Python code run in a sandboxed subprocess against tests.
"""
