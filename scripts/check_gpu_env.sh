#!/usr/bin/env bash
# Proves that requirements/gpu.txt resolves for a Linux x86-64 GPU machine without downloading
# the GPU wheels: pip's resolver runs with --platform/--python-version/--only-binary and
# --dry-run, reading each candidate's metadata from the index (PEP 658), and writes its
# report. Then every dependency range in pyproject.toml is checked against what it chose, and the
# choice is written as pins (requirements/gpu-lock.txt unless LOCK.txt is given).
#
#   [GLIBC=35] scripts/check_gpu_env.sh [PYTHON_VERSION (default 3.12)] [REPORT.json] [LOCK.txt]
#   (REPORT and LOCK paths are taken from the repository root)
set -euo pipefail
cd "$(dirname "$0")/.."
PYV=${1:-3.12}
GLIBC=${GLIBC:-35}  # the machine's glibc minor version: 35 = Ubuntu 22.04 (24.04: 39)
PLATFORMS=()
for ((v = GLIBC; v >= 17; v--)); do PLATFORMS+=(--platform "manylinux_2_${v}_x86_64"); done
REPORT=${2:-$(mktemp -d)/gpu-env-report.json}
LOCK=${3:-requirements/gpu-lock.txt}
PY=${PYTHON:-python3}
# the index only: no local wheel caches or machine-wide constraint files in the way
PIP_CONSTRAINT= PIP_FIND_LINKS= "$PY" -m pip install --isolated --dry-run --ignore-installed --quiet \
  --report "$REPORT" --target "$(mktemp -d)" \
  --python-version "$PYV" --implementation cp --abi "cp${PYV/./}" --only-binary=:all: \
  "${PLATFORMS[@]}" --platform manylinux2014_x86_64 --platform linux_x86_64 --platform any \
  -r requirements/gpu.txt
"$PY" - "$REPORT" "$PYV" "$LOCK" <<'PYEOF'
import json, sys, tomllib
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

report = json.load(open(sys.argv[1]))
chosen = {canonicalize_name(i["metadata"]["name"]): i["metadata"]["version"] for i in report["install"]}
project = tomllib.load(open("pyproject.toml", "rb"))["project"]
wanted = [Requirement(r) for r in project["dependencies"] + project["optional-dependencies"]["vllm"]]
bad = [f"{r} (resolved {chosen.get(canonicalize_name(r.name))})" for r in wanted
       if canonicalize_name(r.name) not in chosen or not r.specifier.contains(chosen[canonicalize_name(r.name)], prereleases=True)]
print(f"resolved {len(chosen)} packages for Linux x86-64, CPython {sys.argv[2]}: "
      + ", ".join(f"{n}=={chosen[n]}" for n in ("vllm", "torch", "transformers", "accelerate", "numpy", "flashinfer-python")
                  if n in chosen))
if bad:
    sys.exit("pyproject.toml ranges not met by the GPU set: " + "; ".join(bad))
print(f"every pyproject.toml range holds; report: {sys.argv[1]}")
lock = sys.argv[3]
with open(lock, "w") as f:
    f.write(f"# Every package of requirements/gpu.txt as pip resolved it for Linux x86-64, CPython {sys.argv[2]}\n"
            "# (scripts/check_gpu_env.sh writes this file): pip install -r requirements/gpu-lock.txt\n")
    f.writelines(f"{i['metadata']['name']}=={i['metadata']['version']}\n"
                 for i in sorted(report["install"], key=lambda i: canonicalize_name(i["metadata"]["name"])))
print(f"pins written to {lock}")
PYEOF
