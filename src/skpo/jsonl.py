"""Reading JSONL (and ``.jsonl.gz``) files with errors that name the file, row and line.

One reader for benchmark files, training data and ``metrics.jsonl``; callers pass the error
class they raise, so each layer keeps its own exception type.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

from skpo.errors import UserError


class JsonlError(UserError, ValueError):
    """A JSONL line that is not a JSON object; the message names file, row and line."""


def read_jsonl(path: str | Path, error_cls: type[ValueError] = JsonlError, what: str = "file") -> list[tuple[int, dict[str, Any]]]:
    """All rows as ``(line_number, row)`` in file order; blank lines are skipped.

    Raises:
        FileNotFoundError: naming the file (``what`` says what kind of file it is).
        error_cls: a line that is not valid JSON or not a JSON object, or an unreadable file.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{what} {str(path)!r} does not exist")
    if path.is_dir():
        raise error_cls(f"{what} {str(path)!r} is a directory, not a JSONL file")
    rows: list[tuple[int, dict[str, Any]]] = []
    opener = (lambda: gzip.open(path, "rb")) if path.name.endswith(".gz") else (lambda: path.open("rb"))  # noqa: SIM115
    try:
        with opener() as handle:
            for line_no, raw in enumerate(handle, start=1):
                try:  # decoded line by line, so an undecodable byte is named by its line
                    line = raw.decode("utf-8").rstrip("\r\n")
                except UnicodeDecodeError as err:
                    raise error_cls(f"{path}: line {line_no}: not UTF-8 text (byte {err.start + 1} of the line: "
                                    f"{err.reason})") from None
                if not line.strip():
                    continue
                where = f"{path}: row {len(rows) + 1} (line {line_no})"
                try:
                    row = json.loads(line)
                except json.JSONDecodeError as err:
                    raise error_cls(f"{where}: invalid JSON: {err.msg} at column {err.colno}") from None
                if not isinstance(row, dict):
                    raise error_cls(f"{where}: expected a JSON object, got {type(row).__name__}")
                rows.append((line_no, row))
    except (OSError, EOFError) as err:  # e.g. a truncated or non-gzip .gz
        raise error_cls(f"{path}: cannot read: {err}") from err
    return rows
