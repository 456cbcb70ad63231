"""GPU proof part ``pytest_gpu``: the project's CUDA checks as docs/testing.md runs them, ``python3 -m pytest -m gpu
tests``, with a JUnit XML report read back so that every test's outcome is in the result: passed, failed (with
its message) and skipped (with its reason: no skip goes unreported). The fidelity checks among them read the
fixtures at ``STEADYDANCER_FIXTURES``, which the proof runner always sets (to the carried ``.gpu-carry/fixtures``
unless the variable is already set): a missing fixture fails them, it never skips them.

    python3 benchmarks/gpu/pytest_gpu.py
"""
from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from common import REPO, Skip, out_dir, repo_relative, run_part


def first_line(text: str | None) -> str:
    lines = (text or "").strip().splitlines()
    return lines[0][:300] if lines else ""


def read_junit(xml_text: str) -> dict:
    """JUnit XML (pytest's ``--junitxml``) -> {"passed": [ids], "failed": [{test, message}], "skipped": [{test,
    reason}]}; a collection error counts as failed."""
    root = ET.fromstring(xml_text)
    found = {"passed": [], "failed": [], "skipped": []}
    for case in root.iter("testcase"):
        test = "::".join(x for x in (case.get("classname", ""), case.get("name", "")) if x)
        bad = case.find("failure") if case.find("failure") is not None else case.find("error")
        skipped = case.find("skipped")
        if bad is not None:
            found["failed"].append({"test": test, "message": first_line(bad.get("message") or bad.text)})
        elif skipped is not None:
            reason = skipped.get("message") or skipped.text or ""
            found["skipped"].append({"test": test, "reason": first_line(reason)})
        else:
            found["passed"].append(test)
    return found


def summary(found: dict) -> str:
    text = f"{len(found['passed'])} passed, {len(found['failed'])} failed, {len(found['skipped'])} skipped"
    if found["failed"]:
        text += "; failed: " + "; ".join(f"{f['test']} ({f['message']})" for f in found["failed"])
    if found["skipped"]:
        text += "; skipped: " + "; ".join(f"{s['test']} ({s['reason']})" for s in found["skipped"])
    return text


def fixtures_state() -> dict:
    root = os.environ.get("STEADYDANCER_FIXTURES")
    return {"STEADYDANCER_FIXTURES": repo_relative(root) if root else None,
            "exists": bool(root) and Path(root).is_dir()}


def body(args, device):
    try:
        import pytest  # noqa: F401
    except ImportError as err:
        raise Skip(f"pytest is not installed ({err})") from err
    xml_path = out_dir(args) / "gpu_pytest.xml"
    xml_path.parent.mkdir(parents=True, exist_ok=True)
    xml_path.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-rA", "-p", "no:cacheprovider",
           f"--junitxml={xml_path}", "tests"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    result = {"command": "python3 -m pytest -q -m gpu -rA tests", "returncode": proc.returncode,
              "fixtures": fixtures_state(), "output_tail": [repo_relative(x) for x in lines[-60:]]}
    if not xml_path.is_file():
        result.update(status=f"failed: pytest exit code {proc.returncode}, no report",
                      summary=first_line(lines[-1] if lines else ""))
        return result
    found = read_junit(xml_path.read_text())
    result.update(tests=found, summary=summary(found))
    if proc.returncode == 5 or not any(found.values()):
        result["status"] = "failed: no gpu test was collected"
    elif proc.returncode != 0 or found["failed"]:
        result["status"] = f"failed: pytest exit code {proc.returncode}, {len(found['failed'])} failed"
    return result


if __name__ == "__main__":
    raise SystemExit(run_part("pytest_gpu", __doc__, body))
