"""Everything that needs a GPU, in one command on a bare machine, with every figure in one archive and one log.

    python3 benchmarks/gpu_proof.py --out "$OUT"                 # all parts (docs/gpu_proof.md)
    python3 benchmarks/gpu_proof.py --out "$OUT" --only vae,compile   # rerun some; the others' results are kept
    python3 benchmarks/gpu_proof.py --dry-run                    # the parts, their estimates and limits
    python3 benchmarks/gpu_proof.py --tiny --out DIR --work DIR2 # tiny models on any device (checks the runner)
    python3 benchmarks/gpu_proof.py --collect gpu_proof.tar.gz   # its GPU figures into benchmarks/results/

Uses the Python it runs under as it is. Wheels carried in ``.gpu-carry/wheels`` (``--wheels``) are installed with
``pip install --no-index --no-deps --target .gpu-proof/site`` and put first on the parts' PYTHONPATH; the fixture
folder ``.gpu-carry/fixtures`` (``--fixtures``; an already set STEADYDANCER_FIXTURES wins) is passed to the tests
as STEADYDANCER_FIXTURES, so missing fixtures fail the fidelity tests instead of skipping them. Each part of
``benchmarks/gpu/plan.py`` runs as its own process under its own timeout, in plan order (must-have figures first,
step cache and compile last), while the time budget (``--budget``) has room for its estimate; a part that no
longer fits, or that lacks a package or provider, is reported "skipped: <why>". Results go to
``.gpu-proof/results`` (``--work``); after every part, and whatever happens (a failing or hanging part, SIGTERM),
they are packed into ``OUT/gpu_proof.tar.gz`` beside the log ``OUT/gpu_proof.log``. Exit code 0 when every part
is ok or skipped, 1 when one failed, 2 for a bad command line.
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks" / "gpu"))
import carry  # noqa: E402
import plan  # noqa: E402
import proof_io  # noqa: E402

KILL_GRACE_S = 10


class Stopped(Exception):
    """The runner got a termination signal; its message names it."""


def _on_signal(signum, _frame):
    raise Stopped(signal.Signals(signum).name)


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", help="folder for gpu_proof.tar.gz and gpu_proof.log (on the GPU machine: $OUT)")
    p.add_argument("--work", default=".gpu-proof", help="working folder: results/ and site/ (default .gpu-proof)")
    p.add_argument("--only", help="comma-separated parts to run (the other parts' earlier results are kept)")
    p.add_argument("--skip", default="", help="comma-separated parts not to run")
    p.add_argument("--budget", type=float, default=plan.DEFAULT_BUDGET_S, help="seconds for the whole run")
    p.add_argument("--tiny", action="store_true", help="tiny models on any device: checks the runner, no figures")
    p.add_argument("--dry-run", action="store_true", help="list the parts with their estimates; run nothing")
    p.add_argument("--wheels", help=f"folder of wheels to install (default {carry.CARRY_DIR}/{carry.WHEELS_SUBDIR})")
    p.add_argument("--fixtures", help="fixture root for the tests (default: STEADYDANCER_FIXTURES if set, else "
                                      f"{carry.CARRY_DIR}/{carry.FIXTURES_SUBDIR})")
    p.add_argument("--timeout", action="append", default=[], metavar="PART=SECONDS", help="a part's time limit")
    p.add_argument("--args", action="append", default=[], metavar="PART=ARGS", help="extra arguments of a part")
    p.add_argument("--collect", metavar="ARCHIVE", help="copy the GPU figures of ARCHIVE into benchmarks/results")
    args = p.parse_args(argv)
    try:
        args.parts = plan.select(args.only.split(",") if args.only else None, [s for s in args.skip.split(",") if s])
        args.timeouts = {k: float(v) for k, v in _pairs(args.timeout).items()}
        args.extra = {k: v.split() for k, v in _pairs(args.args).items()}
        plan.select(list(args.timeouts) + list(args.extra), [])
    except ValueError as err:
        p.exit(2, f"gpu_proof: {err}\n")
    if not (args.dry_run or args.collect or args.out):
        p.exit(2, "gpu_proof: --out DIR is required (on the GPU machine: --out \"$OUT\")\n")
    return args


def _pairs(items) -> dict:
    found = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"expected PART=VALUE, got {item!r}")
        found[key] = value
    return found


def rel(path: Path) -> str:
    path = Path(path).resolve()
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def setup(args, work: Path, log) -> tuple[dict, dict]:
    """Install carried wheels into work/site. Returns (what was done, for gpu_setup.json; the parts' environment)."""
    wheels_dir = Path(args.wheels) if args.wheels else REPO / carry.CARRY_DIR / carry.WHEELS_SUBDIR
    fixtures = Path(args.fixtures) if args.fixtures else (
        Path(os.environ["STEADYDANCER_FIXTURES"]) if os.environ.get("STEADYDANCER_FIXTURES")
        else REPO / carry.CARRY_DIR / carry.FIXTURES_SUBDIR)
    site = work / "site"
    wheels = sorted(wheels_dir.glob("*.whl")) if wheels_dir.is_dir() else []
    info = {"python": sys.version.split()[0], "wheels_dir": rel(wheels_dir), "wheels": [w.name for w in wheels],
            "fixtures": rel(fixtures), "fixture_files_missing": [f for f in carry.FIXTURE_FILES
                                                                 if not (fixtures / f).is_file()]}
    if wheels:
        cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--no-compile",
               "--no-cache-dir", "--upgrade", "--disable-pip-version-check", "--target", str(site),
               *map(str, wheels)]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180)
            info.update(pip_returncode=proc.returncode, pip_output=(proc.stdout + proc.stderr).strip()[-2000:])
        except (OSError, subprocess.TimeoutExpired) as err:
            info.update(pip_returncode=None, pip_output=f"{type(err).__name__}: {err}")
        log.say(f"wheels: pip install --no-index --target {rel(site)} {' '.join(info['wheels'])} -> "
                f"exit {info['pip_returncode']} {info['pip_output'][-300:]}")
    else:
        log.say(f"wheels: none carried ({rel(wheels_dir)} has no .whl); parts needing one report it as skipped")
    if info["fixture_files_missing"]:
        log.say(f"FIXTURES MISSING under {rel(fixtures)}: {', '.join(info['fixture_files_missing'])} -> the gpu "
                f"fidelity tests will FAIL (make the folder with benchmarks/gpu_carry.py)")
    env = dict(os.environ, PYTHONUNBUFFERED="1", STEADYDANCER_FIXTURES=str(fixtures.resolve()))
    paths = ([str(site)] if wheels else []) + [str(REPO)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep)
                                                             if p]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    info["site"] = rel(site) if wheels else None
    return info, env


def run_part(part, args, results: Path, env: dict, limit: float, log) -> str:
    """Run one part as its own process group; returns "" or why the runner wrote its result."""
    script = REPO / "benchmarks" / "gpu" / f"{part.name}.py"
    cmd = [sys.executable, str(script), "--out", rel(results), *part.args, *args.extra.get(part.name, []),
           *(["--tiny"] if args.tiny else [])]
    log.say(f"part {part.name} (limit {limit:.0f} s, est. {part.estimate:.0f} s): {part.what}")
    (results / f"gpu_{part.name}.json").unlink(missing_ok=True)
    shown = " ".join(["python3", *cmd[1:]]).replace(str(REPO) + "/", "")
    start, proc, reader, why = time.monotonic(), None, None, ""
    with open(results / f"gpu_{part.name}.log", "w", encoding="utf-8") as part_log:
        try:
            proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    text=True, start_new_session=True, errors="replace")
            log.raw("    " + shown)
            reader = threading.Thread(target=copy_lines, args=(proc.stdout, log, part_log), daemon=True)
            reader.start()
            proc.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            why = f"failed: timed out after {limit:.0f} s (its limit)"
        except Stopped as sig:
            why = f"failed: the run was stopped ({sig}) while this part ran"
            raise
        finally:
            if proc is not None and proc.poll() is None:
                stop_group(proc)
            if reader is not None:
                reader.join(timeout=5)
            seconds = time.monotonic() - start
            if why or not (results / f"gpu_{part.name}.json").is_file():
                why = why or f"failed: exit code {None if proc is None else proc.returncode} without a result"
                proof_io.write_json(results / f"gpu_{part.name}.json", {
                    "part": part.name, "status": why, "summary": "", "tiny": args.tiny, "wall_seconds": seconds,
                    "command": shown})
    log.say(f"part {part.name}: exit {proc.returncode}, {seconds:.0f} s" + (f"; {why}" if why else ""))
    return why


def copy_lines(stream, log, part_log) -> None:
    """A part's output, line by line, into the log (and the console) and its own gpu_<part>.log."""
    for line in stream:
        log.raw("    | " + line.rstrip("\n"), also=part_log)


def stop_group(proc) -> None:
    """SIGTERM to the part's process group (its own children too), SIGKILL after KILL_GRACE_S."""
    for sig, wait in ((signal.SIGTERM, KILL_GRACE_S), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def skip_result(part, why: str, results: Path, tiny: bool) -> None:
    proof_io.write_json(results / f"gpu_{part.name}.json",
                        {"part": part.name, "status": f"skipped: {why}", "summary": "", "tiny": tiny})


def finish(args, results: Path, out: Path, log, setup_info: dict | None) -> bool:
    """The table (console, log, gpu_summary.json) and the archive. True when every part ran ok or skipped."""
    names = [p.name for p in plan.PARTS if (results / f"gpu_{p.name}.json").is_file() or p in args.parts]
    estimates = {p.name: p.estimate for p in plan.PARTS}
    rows = proof_io.table_rows(results, names, estimates)
    device = proof_io.device_name(proof_io.read_json(results / "gpu_env.json"))
    if setup_info is not None:
        proof_io.write_json(results / "gpu_setup.json", dict(setup_info, device=device, tiny=args.tiny))
    proof_io.write_json(results / "gpu_summary.json", {"device": device, "tiny": args.tiny, "parts": rows,
                                                       "command": "python3 benchmarks/gpu_proof.py " +
                                                       " ".join(sys.argv[1:]).replace(str(REPO) + "/", "")})
    log.raw("")
    for line in proof_io.table_lines(rows):
        log.raw(line)
    good = proof_io.all_good([r for r in rows if r["part"] in {p.name for p in args.parts}])
    archive = proof_io.pack(results, log.path, out)
    log.say(f"packed {archive.name} ({archive.stat().st_size / 1e3:.0f} kB) and {log.path.name} in {out}; "
            f"{'every part ok or skipped' if good else 'a part FAILED: rerun it with --only'}")
    return good


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.collect:
        written, left = proof_io.collect(Path(args.collect), REPO / "benchmarks" / "results")
        print("\n".join([f"wrote benchmarks/results/{n}" for n in written] + [f"left {x}" for x in left]))
        return 0 if written else 1
    if args.dry_run:
        print(f"gpu_proof dry run: nothing is installed, run or written. Wheels from "
              f"{args.wheels or carry.CARRY_DIR + '/' + carry.WHEELS_SUBDIR} (pip --no-index --target), fixtures "
              f"{args.fixtures or carry.CARRY_DIR + '/' + carry.FIXTURES_SUBDIR}.")
        print("\n".join(plan.plan_lines(args.parts, args.budget)))
        return 0
    start = time.monotonic()
    work, out = Path(args.work).resolve(), Path(args.out).resolve()
    results = work / "results"
    results.mkdir(parents=True, exist_ok=True)
    if args.only is None:                      # a full run starts empty; --only keeps the other parts' results
        for old in results.glob("gpu_*"):
            old.unlink()
    (out / proof_io.LOG).unlink(missing_ok=True)
    log = proof_io.Log(out / proof_io.LOG, start)
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, _on_signal)
    setup_info, stopped = None, None
    try:
        log.say(f"parts: {', '.join(p.name for p in args.parts)}; budget {args.budget:.0f} s; results in "
                f"{rel(results)}{'; --tiny' if args.tiny else ''}")
        setup_info, env = setup(args, work, log)
        for part in args.parts:
            left = args.budget - (time.monotonic() - start)
            if part.estimate > left:
                skip_result(part, f"out of the time budget (needs ~{part.estimate:.0f} s, {max(left, 0):.0f} s of "
                                  f"{args.budget:.0f} s left); rerun with --only {part.name}", results, args.tiny)
                log.say(f"part {part.name}: skipped, out of the time budget")
                continue
            run_part(part, args, results, env, min(args.timeouts.get(part.name, part.timeout), left), log)
            proof_io.pack(results, log.path, out)
    except Stopped as sig:
        stopped = str(sig)
        log.say(f"stopped by {sig}: packing what there is")
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        good = finish(args, results, out, log, setup_info)
        log.close()
    if stopped:
        return 128 + signal.Signals[stopped].value
    return 0 if good else 1


if __name__ == "__main__":
    sys.exit(main())
