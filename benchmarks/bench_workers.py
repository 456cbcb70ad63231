"""What the worker processes of ``WorkerModel`` (the ComfyUI multi-GPU loader's) cost around a job, on the tiny kit:
starting them (each imports torch and loads its share), a job on them against the same job in one process, stopping
them, and how long the workers of a killed client live on. CPU workers (gloo), guidance parallel 2.

    python benchmarks/bench_workers.py [--repeats 3]     # writes benchmarks/results/workers.json
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

import steadydancer_core as sd  # noqa: E402
from steadydancer_core import tiny_kit  # noqa: E402


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "workers.json"))
    args = parser.parse_args()
    rows, kills = [], []
    with tempfile.TemporaryDirectory() as tmp:
        m = Path(tmp) / "models"
        tiny_kit.write_kit(m)
        files = sd.ModelFiles(dit=str(m / "diffusion_models" / tiny_kit.DIT_FP8),
                              vae=str(m / "vae" / tiny_kit.VAE_FILE), t5=str(m / "text_encoders" / tiny_kit.T5_FP16),
                              clip_vision=str(m / "clip_vision" / tiny_kit.CLIP_FILE))
        g = torch.Generator().manual_seed(0)
        inputs = [torch.rand(*s, generator=g) for s in ((64, 48, 3), (9, 64, 48, 3), (9, 64, 48, 3))]
        settings = sd.GenerationSettings(steps=3, max_area=48 * 64, length=9, pose_cfg=2.0, pose_cfg_start=0.0,
                                         pose_cfg_end=1.0, batch_passes=False)
        local = sd.load_model(files)
        sd.generate(local, *inputs, settings)
        for _ in range(args.repeats):
            model = sd.WorkerModel(files, parallel=sd.parallel_config(guidance_parallel=2))
            t = time.perf_counter()
            model.start()
            start = time.perf_counter() - t
            jobs = []
            for _ in range(2):
                t = time.perf_counter()
                latent = sd.generate(model, *inputs, settings).latent
                jobs.append(time.perf_counter() - t)
            t = time.perf_counter()
            want = sd.generate(local, *inputs, settings).latent
            one = time.perf_counter() - t
            pids = model.pids
            t = time.perf_counter()
            model.stop()
            rows.append({"start_s": start, "job_s": jobs, "one_process_job_s": one, "stop_s": time.perf_counter() - t,
                         "same_latent": bool(torch.equal(latent, want)), "left": sum(map(alive, pids))})
            print(json.dumps(rows[-1]))
        script = textwrap.dedent(f"""
            import sys, steadydancer_core as sd
            files = sd.ModelFiles(**{dict(dit=files.dit, vae=files.vae, t5=files.t5, clip_vision=files.clip_vision)!r})
            model = sd.WorkerModel(files, parallel=sd.parallel_config(guidance_parallel=2))
            model.start()
            print(*model.pids, flush=True)
            sys.stdin.read()""")
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        for _ in range(args.repeats):
            client = subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      text=True, env=env)
            pids = [int(p) for p in client.stdout.readline().split()]
            client.send_signal(signal.SIGKILL)
            t = time.perf_counter()
            client.wait()
            while any(map(alive, pids)) and time.perf_counter() - t < 60:
                time.sleep(0.01)
            kills.append(time.perf_counter() - t)
            print(json.dumps({"killed_client_workers_gone_s": kills[-1]}))
    result = {"layout": "1 sequence x 2 guidance, CPU, gloo", "cpus": os.cpu_count(),
              "load_average": os.getloadavg(), "runs": rows, "killed_client_workers_gone_s": kills}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
