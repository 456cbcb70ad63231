"""Shared test helpers: the fixture root and tiny-config switches."""
import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def fixture_root() -> Path:
    """Fixture root from ``STEADYDANCER_FIXTURES`` (default ``../shared/fixtures`` from the repo root)."""
    env = os.environ.get("STEADYDANCER_FIXTURES")
    return Path(env) if env else (REPO_ROOT.parent / "shared" / "fixtures")


def fixture_file(*parts: str) -> Path:
    """Path of a fixture file. Fails (never skips) when it is missing: fidelity tests must not pass silently."""
    path = fixture_root().joinpath(*parts)
    if not path.exists():
        pytest.fail(
            f"fixture file missing: {path}. Set STEADYDANCER_FIXTURES to the fixture root "
            f"(default ../shared/fixtures relative to the repo root)."
        )
    return path


@pytest.fixture
def fixtures_dir() -> Path:
    root = fixture_root()
    if not root.is_dir():
        pytest.fail(f"fixture root {root} does not exist; set STEADYDANCER_FIXTURES")
    return root


FIXTURES_NEEDED = ("the fidelity tests need the official reference fixtures: set STEADYDANCER_FIXTURES to their "
                   "folder (or place them at ../shared/fixtures beside the repo)")


def fixtures_absent() -> bool:
    """A fresh clone with neither STEADYDANCER_FIXTURES set nor the default folder: fidelity tests are skipped.
    When the variable is set, a missing file fails (``fixture_file``)."""
    return "STEADYDANCER_FIXTURES" not in os.environ and not fixture_root().is_dir()


def pytest_terminal_summary(terminalreporter):
    if fixtures_absent():
        terminalreporter.write_line(f"fidelity tests skipped: {FIXTURES_NEEDED}")


def pytest_collection_modifyitems(config, items):
    import torch

    skip_fidelity = pytest.mark.skip(reason=FIXTURES_NEEDED) if fixtures_absent() else None
    skip_gpu = None if torch.cuda.is_available() else pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if skip_gpu is not None and "gpu" in item.keywords:
            item.add_marker(skip_gpu)
        if skip_fidelity is not None and "fidelity" in item.keywords:
            item.add_marker(skip_fidelity)
