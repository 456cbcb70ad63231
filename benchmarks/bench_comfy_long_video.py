"""Host memory of the long-video workflow in a running ComfyUI: the server's peak resident memory while it makes a
video from a driving clip, to compare a short clip with a long one (the workflow streams: ExtractPose reads the
VIDEO one frame at a time, DecodeVideo writes the mp4 one segment at a time, so the peak should barely grow).

Start ComfyUI (with the pack and the models) in a fresh process for each clip, so that its peak (VmHWM) is this
run's, put the photo and the clip in its input folder, then:

    python benchmarks/bench_comfy_long_video.py --server http://127.0.0.1:8188 --server-pid PID \\
        --photo ref_image_00001.png --video dance_81.mp4 --label short [--steps 1 --max-area 15360]

The workflow is ``workflows/api/steadydancer_long_video.json`` (or ``--workflow``) with the photo, the clip,
``--steps`` and ``--max-area`` set (everything else as bundled). While it runs the server's VmRSS is sampled every
0.1 s; at the end its VmHWM is read. The run is added under ``--label`` to ``--out`` (default
``benchmarks/results/comfy_long_video_ram.json``), with the frames made (the sampler's report) and the command
line; with two labels there, the ratio of the peaks is written too (``--ratio-of LONG SHORT``).
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW = ROOT / "workflows" / "api" / "steadydancer_long_video.json"
OUT = ROOT / "benchmarks" / "results" / "comfy_long_video_ram.json"


def status_kb(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def request(server: str, path: str, data=None):
    body = None if data is None else json.dumps(data).encode()
    req = urllib.request.Request(server.rstrip("/") + path, data=body,
                                 headers={"Content-Type": "application/json"} if body else {})
    with urllib.request.urlopen(req, timeout=60) as reply:
        return json.loads(reply.read())


def prompt_for(workflow: Path, photo: str, video: str, steps: int, max_area: int, prefix: str) -> dict:
    prompt = json.loads(workflow.read_text())
    for node in prompt.values():
        inputs = node["inputs"]
        kind = node["class_type"]
        if kind == "LoadImage":
            inputs["image"] = photo
        elif kind == "LoadVideo":
            inputs["file"] = video
        elif kind == "SteadyDancerSampler":
            inputs.update(steps=steps, max_area=max_area)
        elif kind in ("DecodeVideo", "SaveVideo"):
            inputs["filename_prefix"] = prefix
    return prompt


def run(args) -> dict:
    pid = args.server_pid
    before = status_kb(pid, "VmRSS")
    peak = [before]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], status_kb(pid, "VmRSS"))
            time.sleep(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.monotonic()
    prompt = prompt_for(args.workflow, args.photo, args.video, args.steps, args.max_area, f"bench/{args.label}")
    queued = request(args.server, "/prompt", {"prompt": prompt, "client_id": uuid.uuid4().hex})
    job = queued["prompt_id"]
    entry = None
    while time.monotonic() - started < args.timeout:
        history = request(args.server, f"/history/{job}")
        entry = history.get(job)
        if entry and entry.get("status", {}).get("completed") is not None:
            break
        time.sleep(1.0)
    seconds = time.monotonic() - started
    done.set()
    sampler.join()
    if not entry or entry.get("status", {}).get("status_str") != "success":
        raise SystemExit(f"the run did not finish successfully: {json.dumps((entry or {}).get('status'))[:400]}")
    texts = {node: out.get("text") for node, out in entry["outputs"].items() if out.get("text")}
    first_lines = [t[0].splitlines()[0] for t in texts.values()]
    made = next((int(m.group(1)) for line in first_lines if (m := re.match(r"Made (\d+) frames", line))), None)
    poses = next((int(m.group(1)) for line in first_lines if (m := re.match(r"Poses of (\d+) driving", line))), None)
    return {"workflow": args.workflow.name, "video": args.video, "photo": args.photo, "steps": args.steps,
            "max_area": args.max_area, "pose_frames": poses, "frames_made": made, "seconds": round(seconds, 1),
            "rss_before_mb": round(before / 1024, 1), "peak_rss_sampled_mb": round(peak[0] / 1024, 1),
            "vmhwm_mb": round(status_kb(pid, "VmHWM") / 1024, 1), "reports": first_lines,
            "command": "python " + " ".join(sys.argv)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", default="http://127.0.0.1:8188")
    parser.add_argument("--server-pid", type=int, required=True, help="the ComfyUI process (its /proc status)")
    parser.add_argument("--photo", required=True, help="file name in ComfyUI's input folder")
    parser.add_argument("--video", required=True, help="file name in ComfyUI's input folder")
    parser.add_argument("--label", required=True)
    parser.add_argument("--steps", type=int, default=1)
    parser.add_argument("--max-area", type=int, default=15360)
    parser.add_argument("--timeout", type=float, default=3600)
    parser.add_argument("--workflow", type=Path, default=WORKFLOW,
                        help="an API workflow (default: the bundled long-video one; e.g. an older version's)")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--ratio-of", nargs=2, metavar=("LONG", "SHORT"),
                        help="write the ratio of the two labels' peaks (VmHWM)")
    args = parser.parse_args(argv)
    results = json.loads(args.out.read_text()) if args.out.exists() else {"runs": {}}
    results["runs"][args.label] = record = run(args)
    print(json.dumps(record, indent=1))
    if args.ratio_of:
        long, short = (results["runs"][k]["vmhwm_mb"] for k in args.ratio_of)
        results["ratio"] = {"of": args.ratio_of, "vmhwm": round(long / short, 3), "goal": 1.25,
                            "meets_goal": long / short <= 1.25}
        print(json.dumps(results["ratio"]))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
