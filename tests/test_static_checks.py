"""The static checks of ``make lint``, in the quick tier: mypy over ``src/`` and ruff over the
code, each with its configuration in ``pyproject.toml`` (both come with the ``[dev]`` extra)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(tool: str, *args: str) -> subprocess.CompletedProcess[str]:
    if importlib.util.find_spec(tool) is None:
        pytest.skip(f"{tool} is not installed (it comes with the [dev] extra: pip install -e '.[dev]')")
    return subprocess.run([sys.executable, "-m", tool, *args], cwd=ROOT, capture_output=True, text=True, check=False)


@pytest.mark.xdist_group("processes")
def test_mypy_passes_on_the_package():
    result = _run("mypy", "--config-file", str(ROOT / "pyproject.toml"))
    assert result.returncode == 0, f"mypy found errors:\n{result.stdout}{result.stderr}"
    assert "Success: no issues found" in result.stdout


@pytest.mark.xdist_group("processes")
def test_ruff_passes_with_the_project_rules():
    result = _run("ruff", "check", "--config", str(ROOT / "pyproject.toml"), "--no-fix", "--output-format", "concise")
    assert result.returncode == 0, f"ruff found problems:\n{result.stdout}{result.stderr}"
