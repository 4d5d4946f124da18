"""``skpo methods [--markdown | --show NAME]``: the shipped methods as a table, or one method's
resolved document.

The table (name, rollout kind, estimator, loss, aggregation, key defaults, source paper) is
built from the method documents in ``skpo/methods``; ``docs/methods.md`` holds the same table
(``--markdown``) and ``tests/test_presets.py`` keeps the two equal.
"""

from __future__ import annotations

import argparse


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="skpo methods", description="List the shipped methods (train.method=<name>).")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--markdown", action="store_true", help="the table as Markdown (docs/methods.md)")
    group.add_argument("--show", metavar="NAME", help="one method's full document, every default resolved")
    return parser


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    from skpo.methods import method_table, method_table_markdown

    if args.show:
        import yaml

        from skpo.methods import method_to_document, resolve_method

        print(yaml.safe_dump(method_to_document(resolve_method(args.show)), sort_keys=False, allow_unicode=True), end="")
        return 0
    if args.markdown:
        print(method_table_markdown())
        return 0
    _print_table(method_table())
    return 0


def _print_table(rows: list[dict[str, str]]) -> None:
    """A rich table on a terminal; plain aligned columns otherwise (pipes, logs)."""
    import sys

    cols = ["name", "rollout", "estimator", "loss", "aggregation", "key defaults", "source"]
    if sys.stdout.isatty():
        from rich.console import Console
        from rich.table import Table

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
