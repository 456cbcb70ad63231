"""GPU suite part ``pytest_gpu``: the project's CUDA checks, ``pytest -m gpu`` over the test files that hold such
tests (collecting only those keeps an optional package one of the other files imports from failing the run).
The fidelity checks among them need the reference fixtures (``STEADYDANCER_FIXTURES``); without them they skip.

    python benchmarks/gpu/pytest_gpu.py
"""
from __future__ import annotations

import re
import subprocess
import sys

from common import REPO, Skip, run_part

COUNTS = re.compile(r"(\d+) (passed|failed|skipped|error|errors|deselected|xfailed|xpassed)")


def gpu_test_files() -> list[str]:
    return sorted(str(p.relative_to(REPO)) for p in (REPO / "tests").glob("test_*.py")
                  if "mark.gpu" in p.read_text(encoding="utf-8"))


def body(args, device):
    try:
        import pytest  # noqa: F401
    except ImportError as err:
        raise Skip(f"pytest is not installed ({err})") from err
    files = gpu_test_files()
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-rfEs", "-p", "no:cacheprovider", *files]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    counts = {}
    for line in lines[-3:]:
        for n, what in COUNTS.findall(line):
            counts[what.rstrip("s") if what == "errors" else what] = int(n)
    result = {"files": files, "returncode": proc.returncode, "counts": counts, "output_tail": lines[-40:]}
    result["summary"] = ", ".join(f"{n} {k}" for k, n in counts.items()) or f"pytest exit code {proc.returncode}"
    if proc.returncode not in (0, 5):             # 5: nothing collected
        result["status"] = f"failed: pytest exit code {proc.returncode}"
    return result


if __name__ == "__main__":
    raise SystemExit(run_part("pytest_gpu", __doc__, body))
