"""The examples the documentation marks with ``<!-- example: NAME -->`` run exactly as written, from an empty folder.

Each marked block (the fenced block right after the marker) runs in a temporary folder of its own, in a fresh
process, with the repository on ``PYTHONPATH`` (what ``pip install .`` provides) and this interpreter first on
``PATH`` (so ``python`` in a shell example is the one running the tests). The examples write the tiny random-weight
kit first and keep the steps and area small, so each takes seconds.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO_ROOT

PAGES = ("README.md", "docs/cli.md")
EXPECTED = {"python-api", "cli"}           # the examples the docs promise to run
_EXAMPLE = re.compile(r"<!-- example: ([\w-]+) -->\n```(\w+)\n(.*?)^```", re.S | re.M)


def examples() -> dict:
    """{name: (language, code, page)} of every marked example."""
    found = {}
    for page in PAGES:
        for name, language, code in _EXAMPLE.findall((REPO_ROOT / page).read_text(encoding="utf-8")):
            assert name not in found, f"example {name!r} is marked twice"
            found[name] = (language, code, page)
    return found


def test_the_promised_examples_are_marked():
    assert EXPECTED <= set(examples()), f"marked examples: {sorted(examples())}"


def _environment() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "STEADYDANCER_FIXTURES")}
    env["PYTHONPATH"] = str(REPO_ROOT)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["OMP_NUM_THREADS"] = env.get("OMP_NUM_THREADS", "2")
    return env


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_runs_as_written(name, tmp_path):
    language, code, page = examples()[name]
    if language == "python":
        script = tmp_path / "example.py"
        script.write_text(code, encoding="utf-8")
        command = [sys.executable, str(script)]
    else:
        assert language == "bash", f"{page}: example {name!r} is {language}; only python and bash run"
        command = ["bash", "-euo", "pipefail", "-c", code]
    run = subprocess.run(command, cwd=tmp_path, env=_environment(), capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, f"{page}: example {name!r} failed:\n{run.stdout[-2000:]}\n{run.stderr[-3000:]}"
    videos = [p for p in tmp_path.rglob("*.mp4") if p.stat().st_size > 0]
    assert any(p.name == "dance.mp4" for p in videos), f"{page}: example {name!r} wrote no video: {videos}"
