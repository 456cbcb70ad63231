"""scripts/queue_batch.py against a small stand-in ComfyUI HTTP server on 127.0.0.1."""
import json
import os
import re
import stat
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import parse_qs, urlparse

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "scripts"))

import queue_batch

WORKFLOW = {
    "1": {"class_type": "LoadImage", "inputs": {"image": "x.png"}},
    "2": {"class_type": "LoadVideo", "inputs": {"file": "x.mp4"}},
    "3": {"class_type": "SteadyDancerSampler", "inputs": {"prompt": "default", "seed": 0}},
    "4": {"class_type": "SaveVideo", "inputs": {"filename_prefix": "p"}},
}
GIVE_UP_POLLS = 200  # the stand-in ends a forgotten job after this many polls, so a regression fails, not hangs


class FakeComfy:
    """Jobs follow ``scenarios`` in order, one per POST /prompt:

    ``{"outputs": [item, ...]}`` finishes after one poll with those outputs (``files`` maps (subfolder, filename)
    to the bytes GET /view serves); ``{"forget": True}`` is never in /queue or /history; ``{"prompt_reply": text}``
    answers POST /prompt with that (non-JSON) text.
    """

    def __init__(self, scenarios, files):
        self.scenarios = list(scenarios)
        self.files = files
        self.jobs = {}  # prompt id -> (scenario, polls so far)
        self.prompts = []  # the workflows queued
        self.lock = threading.Lock()

    def handle(self, method, path, body):
        url = urlparse(path)
        with self.lock:
            if method == "GET" and url.path.startswith("/object_info/"):
                return 200, {}
            if method == "POST" and url.path == "/upload/image":
                name = re.search(rb'filename="([^"]+)"', body).group(1).decode()
                return 200, {"name": name, "subfolder": "steadydancer", "type": "input"}
            if method == "POST" and url.path == "/prompt":
                scenario = self.scenarios.pop(0)
                if "prompt_reply" in scenario:
                    return 200, scenario["prompt_reply"]
                prompt_id = f"job{len(self.prompts)}"
                self.prompts.append(json.loads(body)["prompt"])
                self.jobs[prompt_id] = [scenario, 0]
                return 200, {"prompt_id": prompt_id, "number": len(self.prompts), "node_errors": {}}
            if method == "GET" and url.path == "/queue":
                pending = [[0, pid, {}, {}, []] for pid, (sc, polls) in self.jobs.items()
                           if not sc.get("forget") and polls < 2]
                return 200, {"queue_running": [], "queue_pending": pending}
            if method == "GET" and url.path.startswith("/history/"):
                prompt_id = url.path.rsplit("/", 1)[1]
                job = self.jobs.get(prompt_id)
                if job is None:
                    return 200, {}
                job[1] += 1
                scenario, polls = job
                if scenario.get("forget") and polls < GIVE_UP_POLLS:
                    return 200, {}
                if polls < 2 and not scenario.get("forget"):
                    return 200, {}
                outputs = {"4": {"images": scenario.get("outputs", [])}}
                return 200, {prompt_id: {"outputs": outputs, "status": {"status_str": "success", "completed": True}}}
            if method == "GET" and url.path == "/view":
                query = {k: v[0] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
                data = self.files.get((query.get("subfolder", ""), query.get("filename")))
                return (200, data) if data is not None else (404, {"error": "no such file"})
        return 404, {"error": "unknown"}


@pytest.fixture
def server():
    """``start(scenarios, files)`` -> (FakeComfy, base URL); the server runs in a thread until the test ends."""
    running = []

    def start(scenarios, files=None):
        fake = FakeComfy(scenarios, files or {})

        class Handler(BaseHTTPRequestHandler):
            def _reply(self, method):
                length = int(self.headers.get("Content-Length") or 0)
                status, payload = fake.handle(method, self.path, self.rfile.read(length))
                body = payload if isinstance(payload, bytes) else (
                    payload.encode() if isinstance(payload, str) else json.dumps(payload).encode())
                self.send_response(status)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                self._reply("GET")

            def do_POST(self):
                self._reply("POST")

            def log_message(self, *args):
                pass

        httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        thread.start()
        running.append((httpd, thread))
        return fake, f"http://127.0.0.1:{httpd.server_address[1]}"

    yield start
    for httpd, thread in running:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


@pytest.fixture(autouse=True)
def fast_polls(monkeypatch):
    monkeypatch.setattr(queue_batch, "POLL_SECONDS", 0.005)


def _inputs(tmp_path, n):
    names = []
    for i in range(n):
        (tmp_path / f"p{i}.png").write_bytes(b"png")
        (tmp_path / f"v{i}.mp4").write_bytes(b"mp4")
        names.append((f"p{i}.png", f"v{i}.mp4"))
    workflow = tmp_path / "wf.json"
    workflow.write_text(json.dumps(WORKFLOW))
    return names, workflow


def _item(filename, subfolder="steadydancer"):
    return {"filename": filename, "subfolder": subfolder, "type": "output"}


# ------------------------------------------------------------------------------------------------- downloads
@pytest.mark.parametrize("filename, subfolder", [
    ("../evil.mp4", ""), ("..", ""), ("a/b.mp4", ""), ("a\\b.mp4", ""), ("/etc/passwd", ""), ("x.mp4", "/tmp"),
    ("x.mp4", "../.."), ("x.mp4", "ok/../../up"), ("x.mp4", "..\\up"), ("x.mp4", "C:\\Windows"), ("C:x.mp4", ""),
    ("", "s"), ("x\0.mp4", ""),
])
def test_download_names_that_would_leave_the_folder_are_refused(tmp_path, filename, subfolder):
    with pytest.raises(queue_batch.ComfyError, match="refusing to download") as err:
        queue_batch.download_target(tmp_path / "dl", _item(filename, subfolder))
    assert filename in str(err.value) or subfolder in str(err.value) or not filename


def test_download_through_a_link_out_of_the_folder_is_refused(tmp_path):
    folder = tmp_path / "dl"
    folder.mkdir()
    (folder / "steadydancer").symlink_to(tmp_path)  # resolves outside dl/
    with pytest.raises(queue_batch.ComfyError, match="resolves outside"):
        queue_batch.download_target(folder, _item("x.mp4"))
    assert queue_batch.download_target(folder, _item("x.mp4", "a/./b")) == (folder / "a" / "b" / "x.mp4").resolve()


def test_save_new_never_replaces_and_makes_readable_files(tmp_path):
    saved = os.umask(0o022)
    try:
        target = tmp_path / "out" / "batch_001_00001_.mp4"
        first = queue_batch.save_new(target, b"one")
        second = queue_batch.save_new(target, b"two")
        third = queue_batch.save_new(target, b"three")
    finally:
        os.umask(saved)
    assert (first, second, third) == (target, target.with_name("batch_001_00001_-1.mp4"),
                                      target.with_name("batch_001_00001_-2.mp4"))
    assert [p.read_bytes() for p in (first, second, third)] == [b"one", b"two", b"three"]
    assert stat.S_IMODE(first.stat().st_mode) == 0o644
    assert sorted(p.name for p in target.parent.iterdir()) == sorted(p.name for p in (first, second, third))


# ------------------------------------------------------------------------------------------------- pairs csv
def test_pairs_csv_takes_quoted_prompts_with_commas(tmp_path):
    (tmp_path / "pairs.csv").write_text(
        '# photo,video,prompt\n'
        'p0.png,v0.mp4,"a woman, dancing, in the rain"\n'
        'p1.png, v1.mp4, "say ""hi"", then wave"\n'
        '\n'
        'p0.png,v1.mp4\n', encoding="utf-8")
    _inputs(tmp_path, 2)
    pairs = queue_batch.read_pairs(SimpleNamespace(pair=None, pairs=str(tmp_path / "pairs.csv")))
    assert pairs == [(tmp_path / "p0.png", tmp_path / "v0.mp4", "a woman, dancing, in the rain"),
                     (tmp_path / "p1.png", tmp_path / "v1.mp4", 'say "hi", then wave'),
                     (tmp_path / "p0.png", tmp_path / "v1.mp4", None)]


def test_pairs_csv_with_an_unquoted_comma_prompt_says_to_quote_it(tmp_path):
    _inputs(tmp_path, 1)
    (tmp_path / "pairs.csv").write_text("p0.png,v0.mp4,a woman, dancing\n")
    with pytest.raises(queue_batch.ComfyError, match=r"line 1: 4 fields.*double quotes"):
        queue_batch.read_pairs(SimpleNamespace(pair=None, pairs=str(tmp_path / "pairs.csv")))


# ------------------------------------------------------------------------------------------------- whole runs
def test_a_batch_keeps_going_past_bad_pairs(tmp_path, server, capsys):
    """Pair 1 lists an output outside --download, pair 2 is forgotten by the server, pair 3 gets a non-JSON reply,
    pair 4 works and does not replace the file already in --download."""
    names, workflow = _inputs(tmp_path, 4)
    rows = [f'{p},{v},"pair {i}, with a comma"\n' for i, (p, v) in enumerate(names)]
    (tmp_path / "pairs.csv").write_text("".join(rows))
    good = _item("batch_004_00001_.mp4")
    files = {("steadydancer", "batch_004_00001_.mp4"): b"video", ("..", "evil.mp4"): b"evil"}
    fake, url = server([{"outputs": [_item("evil.mp4", "..")]}, {"forget": True},
                        {"prompt_reply": "<html>502 Bad Gateway</html>"}, {"outputs": [good]}], files)
    download = tmp_path / "results"
    (download / "steadydancer").mkdir(parents=True)
    (download / "steadydancer" / good["filename"]).write_bytes(b"older result")

    code = queue_batch.main(["--server", url, "--workflow", str(workflow), "--pairs", str(tmp_path / "pairs.csv"),
                             "--download", str(download)])
    out, err = capsys.readouterr()
    assert code == 1
    assert "3 pairs" not in out and "1 of 4 pairs done" in out
    failed = {line.split("]")[0].strip("["): line for line in err.splitlines() if "FAILED" in line}
    assert set(failed) == {"1/4", "2/4", "3/4"}
    assert "refusing to download '../evil.mp4'" in failed["1/4"]
    assert "no longer knows prompt job1" in failed["2/4"] and "neither /queue nor /history" in failed["2/4"]
    assert "POST /prompt" in failed["3/4"] and "not JSON" in failed["3/4"] and "502 Bad Gateway" in failed["3/4"]
    assert not (tmp_path / "evil.mp4").exists()
    assert (download / "steadydancer" / good["filename"]).read_bytes() == b"older result"
    assert (download / "steadydancer" / "batch_004_00001_-1.mp4").read_bytes() == b"video"
    assert [p["3"]["inputs"]["prompt"] for p in fake.prompts] == ["pair 0, with a comma", "pair 1, with a comma",
                                                                  "pair 3, with a comma"]
    assert fake.jobs["job1"][1] < GIVE_UP_POLLS  # it stopped polling on its own


def test_a_non_json_upload_reply_names_the_file(tmp_path, server, capsys, monkeypatch):
    names, workflow = _inputs(tmp_path, 1)
    fake, url = server([])
    original = fake.handle
    monkeypatch.setattr(fake, "handle", lambda method, path, body: (200, "Internal Server Error")
                        if path == "/upload/image" else original(method, path, body))
    code = queue_batch.main(["--server", url, "--workflow", str(workflow),
                             "--pair", str(tmp_path / names[0][0]), str(tmp_path / names[0][1])])
    err = capsys.readouterr().err
    assert code == 1
    assert f"uploading {tmp_path / names[0][0]}" in err and "not JSON" in err


def test_odd_error_replies_are_explained_not_raised():
    assert queue_batch._explain("[1, 2]") == "[1, 2]"
    assert queue_batch._explain("<html>oops</html>") == "<html>oops</html>"
    assert queue_batch._node_errors({"3": "broken", "4": {"class_type": "X", "errors": ["odd"]}}) == \
        "node 3: broken; node 4 (X): odd"
    odd = {"messages": ["junk", ["execution_error", "not a dict"]]}
    assert queue_batch.run_failure(odd) == "the job failed: no message"
    failed = {"messages": [["execution_error", {"node_type": "VAEDecode", "exception_message": "out of memory\n"}]]}
    assert queue_batch.run_failure(failed) == "VAEDecode failed: out of memory"
