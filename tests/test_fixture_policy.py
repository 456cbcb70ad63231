"""Fidelity tests: skipped (with one line saying what they need) on a fresh clone with no fixtures anywhere; failing,
never skipping, when STEADYDANCER_FIXTURES is set and a file is missing."""
import os
import shutil
import subprocess
import sys

from conftest import REPO_ROOT

PROBE = '''
import pytest
from conftest import fixture_file

@pytest.mark.fidelity
def test_needs_a_fixture():
    fixture_file("steadydancer_dit", "meta.json")
'''


def _run(tmp_path, env_root):
    repo = tmp_path / "clone"
    (repo / "tests").mkdir(parents=True)
    shutil.copy(REPO_ROOT / "tests" / "conftest.py", repo / "tests" / "conftest.py")
    shutil.copy(REPO_ROOT / "pyproject.toml", repo / "pyproject.toml")
    (repo / "tests" / "test_probe.py").write_text(PROBE)
    env = {k: v for k, v in os.environ.items() if k != "STEADYDANCER_FIXTURES"}
    if env_root is not None:
        env["STEADYDANCER_FIXTURES"] = str(env_root)
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"], cwd=repo,
                          env=env, capture_output=True, text=True)


def test_fresh_clone_without_fixtures_skips_with_one_line(tmp_path):
    run = _run(tmp_path, None)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "1 skipped" in run.stdout
    assert run.stdout.count("fidelity tests skipped: ") == 1 and "STEADYDANCER_FIXTURES" in run.stdout


def test_a_set_root_with_a_missing_file_fails(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    run = _run(tmp_path, empty)
    assert run.returncode == 1, run.stdout + run.stderr
    assert "1 failed" in run.stdout and "fixture file missing" in run.stdout
