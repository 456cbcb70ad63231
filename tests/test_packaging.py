"""Packaging: ``pip install .`` gives importable ``steadydancer_core`` and ``pose`` and a working CLI outside the clone,
and no install path (the base dependencies, an extra, ``requirements.txt`` on any platform) puts both onnxruntime
packages into one environment."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from conftest import REPO_ROOT

try:
    import tomllib
except ImportError:            # Python 3.10
    tomllib = pytest.importorskip("tomli")

ONNXRUNTIMES = {"onnxruntime", "onnxruntime-gpu"}
# what the project's files need to build (copied, so the build's egg-info and build/ never land in the clone)
BUILD_FILES = ("pyproject.toml", "README.md", "LICENSE", "NOTICE", "steadydancer_core", "pose")
# platforms ComfyUI runs on, as environment markers see them
PLATFORMS = [
    {"platform_system": system, "platform_machine": machine, "sys_platform": sys_platform}
    for system, sys_platform, machines in (("Linux", "linux", ("x86_64", "aarch64")),
                                          ("Windows", "win32", ("AMD64", "x86_64", "ARM64")),
                                          ("Darwin", "darwin", ("arm64", "x86_64")))
    for machine in machines
]


def _pyproject() -> dict:
    return tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def _onnxruntimes(requirements, environment: dict | None = None) -> set:
    """The onnxruntime packages a list of requirement strings installs (on ``environment`` when given)."""
    found = set()
    for text in requirements:
        req = Requirement(text)
        if environment is not None and req.marker is not None and not req.marker.evaluate(environment):
            continue
        if req.name.lower() in ONNXRUNTIMES:
            found.add(req.name.lower())
    return found


def _requirements_txt() -> list:
    lines = (REPO_ROOT / "requirements.txt").read_text(encoding="utf-8").splitlines()
    return [line.split(" #")[0].strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]


def test_no_install_path_holds_both_onnxruntime_packages():
    project = _pyproject()["project"]
    assert not _onnxruntimes(project["dependencies"]), "the base dependencies name an onnxruntime package"
    for name, extra in project["optional-dependencies"].items():
        assert len(_onnxruntimes(extra)) <= 1, f"the extra {name!r} installs both onnxruntime packages"
    assert not _onnxruntimes(project["optional-dependencies"]["test"]), \
        "the test extra names an onnxruntime package; CI adds one with onnx-cpu"
    for platform in PLATFORMS:           # the markers' other variables take this interpreter's values
        assert len(_onnxruntimes(_requirements_txt(), platform)) == 1, \
            f"requirements.txt must install exactly one onnxruntime package on {platform}"


def test_ci_installs_one_onnxruntime_extra():
    ci = (REPO_ROOT / ".ci" / "run").read_text(encoding="utf-8")
    extras = _pyproject()["project"]["optional-dependencies"]
    (line,) = [l for l in ci.splitlines() if "pip install" in l and "-e " in l]
    chosen = line.split('".[')[1].split(']"')[0].split(",")
    assert sum(len(_onnxruntimes(extras[name])) for name in chosen) == 1, line


def test_pip_install_gives_both_packages_and_the_cli(tmp_path):
    """Build and install the project (offline, no dependencies: the test environment has them) into a folder, then
    import the packages and run the CLI from another folder with only that install on the path."""
    src, target, elsewhere = tmp_path / "src", tmp_path / "target", tmp_path / "elsewhere"
    for name in BUILD_FILES:
        path = REPO_ROOT / name
        if path.is_dir():
            shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            src.mkdir(exist_ok=True)
            shutil.copy2(path, src / name)
    elsewhere.mkdir()
    pip = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
           "--disable-pip-version-check", "--quiet", "--target", str(target), str(src)]
    built = subprocess.run(pip, capture_output=True, text=True, timeout=300)
    assert built.returncode == 0, built.stderr[-3000:]
    assert {p.name for p in target.iterdir() if p.is_dir() and not p.name.endswith("-info")} >= \
        {"steadydancer_core", "pose"}
    assert not (target / "nodes").exists() and not (target / "tests").exists()

    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(target)
    where = subprocess.run(
        [sys.executable, "-c", "import steadydancer_core, pose, steadydancer_core.sampling, steadydancer_core.quality; "
                               "print(steadydancer_core.__file__); print(pose.__file__); "
                               "print(steadydancer_core.pose_package.pose.__file__)"],
        cwd=elsewhere, env=env, capture_output=True, text=True, timeout=120)
    assert where.returncode == 0, where.stderr[-3000:]
    assert all(Path(line).is_relative_to(target) for line in where.stdout.split()), where.stdout
    cli = subprocess.run([sys.executable, "-m", "steadydancer_core.cli", "--help"], cwd=elsewhere, env=env,
                         capture_output=True, text=True, timeout=120)
    assert cli.returncode == 0 and "--photo" in cli.stdout and "--clip-vision" in cli.stdout, cli.stderr[-3000:]
