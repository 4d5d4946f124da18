"""``skpo main``: the README's first command."""

from __future__ import annotations


def main(argv: list[str]) -> int:
    print(
        "skpo main: the SKPO training loop and its evaluation arrive with the trainer issue; "
        "the algorithm core is in place (run `make test`)."
    )
    return 0
