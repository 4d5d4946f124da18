"""``skpo methods [--markdown | --show NAME]``: the shipped methods as a table, or one method's
resolved document.

The table (name, rollout kind, estimator, loss, aggregation, key defaults, source paper) is
built from the method documents in ``skpo/methods``; ``docs/methods.md`` holds the same table
(``--markdown``) and ``tests/test_presets.py`` keeps the two equal.
"""

from __future__ import annotations

import sys

from rich.console import Console
from rich.table import Table

from skpo.commands.parsers import methods_parser
from skpo.methods import method_table, method_table_markdown, method_yaml, resolve_method


def main(argv: list[str]) -> int:
    args = methods_parser().parse_args(argv)
    if args.show:
        print(method_yaml(resolve_method(args.show)), end="")
        return 0
    if args.markdown:
        print(method_table_markdown())
        return 0
    _print_table(method_table())
    return 0


def _print_table(rows: list[dict[str, str]]) -> None:
    """A rich table on a terminal; plain aligned columns otherwise (pipes, logs)."""
    cols = ["name", "rollout", "estimator", "loss", "aggregation", "key defaults", "source"]
    if sys.stdout.isatty():
        table = Table(*cols, show_lines=True)
        for row in rows:
            table.add_row(*(row[c] for c in cols))
        Console().print(table)
        return
    for row in rows:
        print(f"{row['name']}: rollout {row['rollout']}; estimator {row['estimator']}; loss {row['loss']}; "
              f"aggregation {row['aggregation']}")
        print(f"    defaults: {row['key defaults']}")
        print(f"    source: {row['source']}")
