"""benchmarks/gpu_proof.py on the CPU: the command line, the plan and its estimates, the packing (also when a part
fails, hangs or the run is stopped), the skip paths, carried wheels and fixtures, and that ``pytest -m gpu``
collects without the packages the GPU machine lacks."""
import importlib
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
import zipfile

import pytest
from conftest import REPO_ROOT

RUNNER = REPO_ROOT / "benchmarks" / "gpu_proof.py"
CARRIER = REPO_ROOT / "benchmarks" / "gpu_carry.py"


def _benchmark_module(name: str, folder: str = "benchmarks/gpu"):
    """Import ``folder/name.py`` (and what it imports beside it) with the folder on sys.path only meanwhile."""
    path = str(REPO_ROOT / folder)
    sys.path.insert(0, path)
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(path)


carry, plan, proof_io = (_benchmark_module(n) for n in ("carry", "plan", "proof_io"))

# packages the GPU machine does not have; hidden from a child Python by a sitecustomize on its PYTHONPATH
ABSENT_THERE = ("av", "gguf", "ftfy", "flash_attn", "sageattention")
HIDE = """import sys
HIDDEN = set({names!r})
class _Hide:
    def __init__(self, inner):
        self.inner = inner
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in HIDDEN:
            return None
        find = getattr(self.inner, "find_spec", None)
        return find(name, path, target) if find else None
    def __getattr__(self, attr):
        return getattr(self.inner, attr)
sys.meta_path[:] = [_Hide(f) for f in sys.meta_path]
"""


def _hiding_env(tmp_path, names=ABSENT_THERE) -> dict:
    folder = tmp_path / "hide"
    folder.mkdir()
    (folder / "sitecustomize.py").write_text(HIDE.format(names=tuple(names)))
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(folder), str(REPO_ROOT)])}


def _run(args, env=None, timeout=300):
    return subprocess.run([sys.executable, str(RUNNER), *args], capture_output=True, text=True, timeout=timeout,
                          cwd=REPO_ROOT, env=env)


def _archive(out) -> dict:
    """name -> parsed JSON (or text) of every file in OUT/gpu_proof.tar.gz."""
    found = {}
    with tarfile.open(out / "gpu_proof.tar.gz") as tar:
        for m in tar.getmembers():
            text = tar.extractfile(m).read().decode()
            assert m.name.startswith("gpu_proof/"), m.name
            name = m.name.split("/", 1)[1]
            found[name] = json.loads(text) if name.endswith(".json") else text
    return found


def _wheel(folder) -> None:
    """A minimal pure-Python wheel (package ``demo_carried_pkg``) in ``folder``."""
    folder.mkdir(parents=True)
    info = "demo_carried_pkg-0.1.dist-info"
    files = {"demo_carried_pkg/__init__.py": "VALUE = 1\n",
             f"{info}/METADATA": "Metadata-Version: 2.1\nName: demo-carried-pkg\nVersion: 0.1\n",
             f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    files[f"{info}/RECORD"] = "".join(f"{k},,\n" for k in [*files, f"{info}/RECORD"])
    with zipfile.ZipFile(folder / "demo_carried_pkg-0.1-py3-none-any.whl", "w") as z:
        for name, text in files.items():
            z.writestr(name, text)


# --- the plan and the command line ----------------------------------------------------------------------------

def test_plan_puts_must_haves_first_within_six_minutes_and_every_part_has_a_script():
    names = [p.name for p in plan.PARTS]
    assert {"env", "matmul", "dit", "block_swap", "attention", "vae", "pytest_gpu", "pose_cuda", "rank_share",
            "step_cache", "compile"} == set(names)
    optional = [p.optional for p in plan.PARTS]
    assert optional == sorted(optional), "optional parts run last"
    assert sum(p.estimate for p in plan.PARTS) <= 6 * 60
    assert sum(p.estimate for p in plan.PARTS) <= plan.DEFAULT_BUDGET_S
    for p in plan.PARTS:
        assert (REPO_ROOT / "benchmarks" / "gpu" / f"{p.name}.py").is_file(), p.name
        assert p.timeout >= 1.5 * p.estimate, p.name


def test_flop_counts_of_the_estimates_are_the_models():
    from steadydancer_core import DiTConfig

    bench_dit = _benchmark_module("bench_dit", "benchmarks")

    assert bench_dit.forward_flops(DiTConfig(), (21, 60, 104)) / 1e12 == pytest.approx(plan.DIT_FORWARD_TFLOP, 1e-3)
    assert bench_dit.forward_flops(DiTConfig(), (9, 34, 60)) / 1e12 == pytest.approx(plan.DIT_SMALL_TFLOP, 1e-3)


def test_dry_run_lists_parts_and_estimates_and_writes_nothing(tmp_path):
    before = sorted(p for p in REPO_ROOT.rglob("*") if ".git" not in p.parts and "__pycache__" not in p.parts)
    proc = _run(["--dry-run"])
    assert proc.returncode == 0, proc.stderr
    for p in plan.PARTS:
        assert f"\n{p.name} " in proc.stdout and p.how in proc.stdout, p.name
    assert "estimated:" in proc.stdout and "pip --no-index --target" in proc.stdout
    after = sorted(p for p in REPO_ROOT.rglob("*") if ".git" not in p.parts and "__pycache__" not in p.parts)
    assert after == before


@pytest.mark.parametrize("args,message", [
    (["--dry-run", "--only", "dit,nope"], "unknown part 'nope'"),
    (["--dry-run", "--timeout", "dti=3"], "unknown part 'dti'"),
    (["--dry-run", "--args", "dit"], "expected PART=VALUE"),
    (["--only", "dit"], "--out DIR is required"),
])
def test_bad_command_lines_are_refused_in_one_line(args, message):
    proc = _run(args)
    assert proc.returncode == 2 and message in proc.stderr and "Traceback" not in proc.stderr


def test_a_part_out_of_the_budget_is_skipped_saying_so(tmp_path):
    proc = _run(["--tiny", "--only", "compile", "--budget", "5", "--out", str(tmp_path / "out"),
                 "--work", str(tmp_path / "work")])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    got = _archive(tmp_path / "out")
    assert got["gpu_compile.json"]["status"].startswith("skipped: out of the time budget")
    assert "--only compile" in got["gpu_compile.json"]["status"]


# --- a run on tiny models -------------------------------------------------------------------------------------

@pytest.mark.slow
def test_tiny_run_packs_everything_reports_skips_and_keeps_going_past_failures(tmp_path):
    """Four parts on the CPU: env runs, dit fails (a bad variant), vae hangs past its 1 s limit, pose_cuda
    is skipped without onnxruntime's CUDA provider; a carried wheel is installed onto the parts' path. OUT holds
    the archive and the log alone; the archive holds every result, each part's log and the table."""
    import onnxruntime

    _wheel(tmp_path / "wheels")
    out = tmp_path / "out"
    proc = _run(["--tiny", "--only", "env,dit,vae,pose_cuda", "--args", "dit=--variants nope",
                 "--timeout", "vae=1", "--wheels", str(tmp_path / "wheels"), "--fixtures", str(tmp_path / "fx"),
                 "--out", str(out), "--work", str(tmp_path / "work")], env=_hiding_env(tmp_path))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert sorted(p.name for p in out.iterdir()) == ["gpu_proof.log", "gpu_proof.tar.gz"]
    got = _archive(out)
    status = {p: got[f"gpu_{p}.json"]["status"] for p in ("env", "dit", "vae", "pose_cuda")}
    assert status["env"] == "ok", status
    assert status["dit"].startswith("failed: ValueError: unknown variants"), status
    assert status["vae"] == "failed: timed out after 1 s (its limit)", status
    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        assert status["pose_cuda"].startswith("skipped: onnxruntime") and "onnxruntime-gpu" in status["pose_cuda"]
    for p in status:
        assert f"gpu_{p}.log" in got, p
    env = got["gpu_env.json"]
    assert env["packages"]["gguf"] is None and "gguf" in env["missing"]          # hidden as on the GPU machine
    setup = got["gpu_setup.json"]
    assert setup["pip_returncode"] == 0 and setup["wheels"] == ["demo_carried_pkg-0.1-py3-none-any.whl"]
    assert (tmp_path / "work" / "site" / "demo_carried_pkg" / "__init__.py").is_file()
    assert env["PYTHONPATH"][0] == str(tmp_path / "work" / "site")
    assert setup["fixture_files_missing"] == list(carry.FIXTURE_FILES)
    assert "FIXTURES MISSING" in got["gpu_proof.log"]
    table = {r["part"]: r for r in got["gpu_summary.json"]["parts"]}
    assert list(table) == ["env", "dit", "vae", "pose_cuda"]
    assert "figures / reason" in proc.stdout and "a part FAILED" in proc.stdout

    # a rerun of the failed part keeps the other parts' results and packs them all again
    rerun = _run(["--tiny", "--only", "vae", "--out", str(out), "--work", str(tmp_path / "work")])
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    again = _archive(out)
    assert again["gpu_vae.json"]["status"] == "ok"
    assert again["gpu_dit.json"]["status"] == status["dit"] and "gpu_env.json" in again


@pytest.mark.slow
def test_a_stopped_run_still_packs(tmp_path):
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, str(RUNNER), "--tiny", "--only", "env,matmul", "--out", str(out),
                             "--work", str(tmp_path / "work")], cwd=REPO_ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    log = out / "gpu_proof.log"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (log.is_file() and "benchmarks/gpu/env.py" in log.read_text()):
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 128 + signal.SIGTERM
    got = _archive(out)
    assert got["gpu_env.json"]["status"] == "failed: the run was stopped (SIGTERM) while this part ran"
    assert "stopped by SIGTERM" in got["gpu_proof.log"]
    assert [r["part"] for r in got["gpu_summary.json"]["parts"]] == ["env", "matmul"]


# --- the pieces -----------------------------------------------------------------------------------------------

def test_junit_report_lists_every_outcome_with_its_reason():
    pytest_gpu = _benchmark_module("pytest_gpu")
    xml = """<testsuites><testsuite name="pytest">
      <testcase classname="tests.test_vae" name="test_ok" time="0.1"/>
      <testcase classname="tests.test_dit" name="test_bad"><failure message="AssertionError: rel 0.2">x</failure>
      </testcase>
      <testcase classname="tests.test_attention" name="test_b[flash-attn]">
        <skipped type="pytest.skip" message="flash-attn not installed">skip</skipped></testcase>
      <testcase classname="" name="tests.test_quant"><error message="collection failure">E</error></testcase>
    </testsuite></testsuites>"""
    found = pytest_gpu.read_junit(xml)
    assert found["passed"] == ["tests.test_vae::test_ok"]
    assert found["failed"] == [{"test": "tests.test_dit::test_bad", "message": "AssertionError: rel 0.2"},
                               {"test": "tests.test_quant", "message": "collection failure"}]
    assert found["skipped"] == [{"test": "tests.test_attention::test_b[flash-attn]",
                                 "reason": "flash-attn not installed"}]
    assert "skipped: tests.test_attention::test_b[flash-attn] (flash-attn not installed)" in pytest_gpu.summary(found)


def test_collect_takes_only_gpu_figures(tmp_path):
    results = tmp_path / "results"
    proof_io.write_json(results / "gpu_dit.json", {"status": "ok", "environment": {"device": "NVIDIA H100 80GB"}})
    proof_io.write_json(results / "gpu_vae.json", {"status": "ok", "tiny": True, "environment": {"device": "cpu"}})
    proof_io.write_json(results / "gpu_pose_cuda.json", {"status": "skipped: x", "device": None})
    proof_io.pack(results, tmp_path / "none.log", tmp_path / "out")
    written, left = proof_io.collect(tmp_path / "out" / "gpu_proof.tar.gz", tmp_path / "dest")
    assert written == ["gpu_dit.json"] and sorted(p.name for p in (tmp_path / "dest").iterdir()) == written
    assert sorted(left) == ["gpu_pose_cuda.json: names no CUDA device", "gpu_vae.json: a --tiny result"]


def test_pytest_gpu_collects_without_the_packages_the_gpu_machine_lacks(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-m", "gpu", "-p",
                           "no:cacheprovider", "tests"], cwd=REPO_ROOT, capture_output=True, text=True,
                          timeout=300, env=_hiding_env(tmp_path))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "test_dit_cuda_matches_official" in proc.stdout


@pytest.mark.fidelity
def test_carried_fixtures_hold_what_the_gpu_fidelity_tests_read(tmp_path, fixtures_dir):
    dest = tmp_path / "carry"
    proc = subprocess.run([sys.executable, str(CARRIER), "--fixtures", str(fixtures_dir), "--dest", str(dest)],
                          capture_output=True, text=True, timeout=120)
    needed = sum((fixtures_dir / n).stat().st_size for n in carry.FIXTURE_FILES if (fixtures_dir / n).is_file())
    if needed > carry.CARRY_LIMIT_MIB << 20:       # a fixture set too large to carry: refused in one clear line
        assert proc.returncode == 2 and f"is over {carry.CARRY_LIMIT_MIB} MiB" in proc.stderr, proc.stderr
        return
    assert proc.returncode == 0, proc.stderr
    assert f"in {dest}" in proc.stdout
    sizes = sum(p.stat().st_size for p in dest.rglob("*") if p.is_file())
    assert sizes < carry.CARRY_LIMIT_MIB << 20
    check = ("import sys; sys.path.insert(0, 'tests'); import test_dit, test_e2e; test_dit.load_fixture_model(); "
             "test_dit.fixture_cases(); test_e2e._meta(); test_e2e._io()['noise']; print('read')")
    run = subprocess.run([sys.executable, "-c", check], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "STEADYDANCER_FIXTURES": str(dest / "fixtures"),
                              "PYTHONPATH": str(REPO_ROOT)})
    assert run.returncode == 0 and "read" in run.stdout, run.stdout + run.stderr
