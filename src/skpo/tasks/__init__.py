"""skpo.tasks: data sources and prompt templates.

- :mod:`skpo.tasks.arith` — the chained-arithmetic synthetic task (the embedded default).
- :mod:`skpo.tasks.templates` — its plain, continual and skip (``[s, q]``) inputs as token ids.
"""
