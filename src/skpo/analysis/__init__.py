"""skpo.analysis: plots and the paper's analyses.

- :mod:`skpo.analysis.plots` — learning curves of one or more runs from their ``metrics.jsonl``
  (``skpo plot``).
"""
