"""scripts/queue_batch.py against stand-in ComfyUI HTTP servers on 127.0.0.1 (tests/fake_comfy_server.py): safe
downloads, hostile replies (trickled, huge, nested, wrongly typed, escape codes), several servers with one dying,
Ctrl-C and resume from the ledger, the progress lines and the documented options."""
import json
import os
import signal
import stat
import subprocess
import sys
import time
import types
from pathlib import Path
from types import SimpleNamespace

import pytest

from fake_comfy_server import GIVE_UP_POLLS, FakeComfy, endless, trickle

REPO_ROOT = Path(__file__).resolve().parents[1]
SCRIPT = REPO_ROOT / "scripts" / "queue_batch.py"
sys.path.insert(0, str(REPO_ROOT / "scripts"))

import queue_batch  # noqa: E402
from comfy_queue import progress, replies  # noqa: E402
from comfy_queue.client import Client, Limits  # noqa: E402
from comfy_queue.errors import ComfyError, ReplyTooBig, ServerDown, clean  # noqa: E402
from comfy_queue.options import build_parser, options_markdown  # noqa: E402

WORKFLOW = {
    "1": {"class_type": "LoadImage", "inputs": {"image": "x.png"}},
    "2": {"class_type": "LoadVideo", "inputs": {"file": "x.mp4"}},
    "3": {"class_type": "SteadyDancerSampler", "inputs": {"prompt": "default", "seed": 0},
          "_meta": {"title": "SteadyDancer Sampler"}},
    "4": {"class_type": "SaveVideo", "inputs": {"filename_prefix": "p"}},
}
FAST = ["--poll", "0.01"]


@pytest.fixture
def server():
    """``start(scenarios, files, **kw)`` -> (FakeComfy, base URL); every server stops when the test ends."""
    running = []

    def start(scenarios=(), files=None, **kw):
        fake = FakeComfy(scenarios, files, **kw)
        running.append(fake)
        return fake, fake.start()

    yield start
    for fake in running:
        fake.stop()


def _inputs(tmp_path, n):
    names = []
    for i in range(n):
        (tmp_path / f"p{i}.png").write_bytes(b"png%d" % i)
        (tmp_path / f"v{i}.mp4").write_bytes(b"mp4%d" % i)
        names.append((f"p{i}.png", f"v{i}.mp4"))
    workflow = tmp_path / "wf.json"
    workflow.write_text(json.dumps(WORKFLOW))
    return names, workflow


def _pair_args(tmp_path, names):
    return [a for p, v in names for a in ("--pair", str(tmp_path / p), str(tmp_path / v))]


def _item(filename, subfolder="steadydancer"):
    return {"filename": filename, "subfolder": subfolder, "type": "output"}


def _tree(root):
    return {str(p.relative_to(root)) for p in Path(root).rglob("*")}


# ------------------------------------------------------------------------------------------------- downloads
@pytest.mark.parametrize("filename, subfolder", [
    ("../evil.mp4", ""), ("..", ""), ("a/b.mp4", ""), ("a\\b.mp4", ""), ("/etc/passwd", ""), ("x.mp4", "/tmp"),
    ("x.mp4", "../.."), ("x.mp4", "ok/../../up"), ("x.mp4", "..\\up"), ("x.mp4", "C:\\Windows"), ("C:x.mp4", ""),
    ("", "s"), ("x\0.mp4", ""), ("x\x1b[2J.mp4", ""),
])
def test_download_names_that_would_leave_the_folder_are_refused(tmp_path, filename, subfolder):
    with pytest.raises(ComfyError, match="refusing to download") as err:
        queue_batch.download_target(tmp_path / "dl", _item(filename, subfolder))
    assert "\x1b" not in str(err.value) and "\0" not in str(err.value)


def test_download_through_a_link_out_of_the_folder_is_refused(tmp_path):
    folder = tmp_path / "dl"
    folder.mkdir()
    (folder / "steadydancer").symlink_to(tmp_path)  # resolves outside dl/
    with pytest.raises(ComfyError, match="resolves outside"):
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
    with pytest.raises(ComfyError, match=r"line 1: 4 fields.*double quotes"):
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
                             "--download", str(download), *FAST])
    out, err = capsys.readouterr()
    assert code == 1
    assert "1 of 4 pairs done" in out
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
    assert fake.jobs["job1"]["polls"] < GIVE_UP_POLLS  # it stopped polling on its own


def test_a_non_json_upload_reply_names_the_file(tmp_path, server, capsys, monkeypatch):
    names, workflow = _inputs(tmp_path, 1)
    fake, url = server([])
    original = fake.handle
    monkeypatch.setattr(fake, "handle", lambda method, path, body: (200, "Internal Server Error")
                        if path == "/upload/image" else original(method, path, body))
    code = queue_batch.main(["--server", url, "--workflow", str(workflow), *_pair_args(tmp_path, names[:1])])
    err = capsys.readouterr().err
    assert code == 1
    assert f"uploading {tmp_path / names[0][0]}" in err and "not JSON" in err


def test_odd_error_replies_are_explained_not_raised():
    assert replies.explain("[1, 2]") == "[1, 2]"
    assert replies.explain("<html>oops</html>") == "<html>oops</html>"
    assert replies.node_errors({"3": "broken", "4": {"class_type": "X", "errors": ["odd"]}}) == \
        "node 3: broken; node 4 (X): odd"
    odd = {"messages": ["junk", ["execution_error", "not a dict"]]}
    assert queue_batch.run_failure(odd) == "the job failed: no message"
    failed = {"messages": [["execution_error", {"node_type": "VAEDecode", "exception_message": "out of memory\n"}]]}
    assert queue_batch.run_failure(failed) == "VAEDecode failed: out of memory"


# ------------------------------------------------------------------------------------------ hostile replies
@pytest.mark.parametrize("headers_too", [False, True], ids=["body", "headers"])
def test_a_trickled_reply_ends_at_the_deadline(server, headers_too):
    """One byte every 0.3 s of a 1 MB reply: each read succeeds, the request still ends at --timeout."""
    fake, url = server()
    fake.raw["/queue"] = trickle(every=0.3, headers_too=headers_too)
    start = time.monotonic()
    with pytest.raises(ServerDown, match=r"GET /queue: no complete reply from .* within 1 s.*raise --timeout"):
        Client(url, Limits(timeout=1.0)).queued("job0")
    assert time.monotonic() - start < 2.5


@pytest.mark.parametrize("declared", [300 * 2**20, None], ids=["declared", "streamed"])
def test_a_huge_reply_is_refused_at_the_cap(server, declared):
    fake, url = server()
    fake.raw["/queue"] = endless(declared)
    start = time.monotonic()
    with pytest.raises(ReplyTooBig, match=r"GET /queue: the reply is .*over the 1.0 MB cap.*--max-reply-mb"):
        Client(url, Limits(max_reply=2**20)).queued("job0")
    assert time.monotonic() - start < 5


def test_downloads_stream_to_disk_with_an_optional_cap(tmp_path, server, capsys):
    """A 3 MB video is streamed into --download; over --max-download-mb the pair fails and no partial file stays."""
    names, workflow = _inputs(tmp_path, 2)
    video = os.urandom(3 * 2**20)
    files = {("steadydancer", "big.mp4"): video}
    fake, url = server([{"outputs": [_item("big.mp4")]}] * 2, files)
    download = tmp_path / "results"
    common = ["--server", url, "--workflow", str(workflow), "--download", str(download), *FAST]
    assert queue_batch.main([*common, *_pair_args(tmp_path, names[:1])]) == 0
    assert (download / "steadydancer" / "big.mp4").read_bytes() == video
    assert queue_batch.main([*common, "--max-download-mb", "1", *_pair_args(tmp_path, names[1:])]) == 1
    assert "over the 1.0 MB cap" in capsys.readouterr().err
    assert sorted(p.name for p in (download / "steadydancer").iterdir()) == ["big.mp4"]


def test_hostile_history_replies_fail_their_pair_only(tmp_path, server, capsys):
    """A /history nested 100000 deep, one of the wrong types, one whose error text carries escape codes: those three
    pairs fail with one clean line each, the fourth is downloaded."""
    names, workflow = _inputs(tmp_path, 4)
    fake, url = server([
        {},
        {"history": {"job1": {"status": ["completed"], "outputs": "video.mp4"}}},
        {"error": "\x1b[2J\x1b]0;pwned\x07boom\r\n\x1b[31mred\x1b[0m \u202eevil\u2028" + "x" * 5000},
        {}])
    original = fake.handle

    def handle(method, path, body):
        if path == "/history/job0":
            return 200, b'{"job0": ' + b"[" * 100000 + b"]" * 100000 + b"}"
        return original(method, path, body)

    fake.handle = handle
    download = tmp_path / "results"
    code = queue_batch.main(["--server", url, "--workflow", str(workflow), "--download", str(download), *FAST,
                             *_pair_args(tmp_path, names)])
    out, err = capsys.readouterr()
    assert code == 1
    failed = [line for line in err.splitlines() if "FAILED" in line]
    assert [line.split("]")[0] for line in failed] == ["[1/4", "[2/4", "[3/4"]
    assert "nested too deeply" in failed[0]
    assert "'status' is a list, expected an object or null" in failed[1]
    assert "SteadyDancerSampler failed: boom red evil xxx" in failed[2] and len(failed[2]) < 500
    assert not any(ch in out + err for ch in "\x1b\x07\r\u202e\u2028")
    assert (download / "steadydancer" / "batch_004_00001_.mp4").read_bytes() == b"fake:steadydancer/batch_004"


def test_server_text_is_cleaned():
    assert clean("\x1b[1;31mred\x1b[0m\x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\ \x9b2Jz") == "redlink z"
    assert clean("a\r\nb\tc\u202ed\u200be\u2028f\x00g") == "a b c d e f g"
    assert clean("y" * 1000, 10) == "y" * 9 + "…"


# --------------------------------------------------------------------------------------------- several servers
def test_pairs_spread_over_servers_and_one_dying_loses_none(tmp_path, server, capsys):
    """Three servers; the second dies while running its second job: that pair is retried on another server, the
    dead server is dropped, every pair is done and downloaded exactly once, and nothing is written outside
    --download."""
    names, workflow = _inputs(tmp_path, 8)
    fakes = [server([], name="a", job_seconds=0.15)[0], server([{}, {"die": True}], name="b", job_seconds=0.15)[0],
             server([], name="c", job_seconds=0.15)[0]]
    download, before = tmp_path / "results", _tree(tmp_path)
    servers = [a for f in fakes for a in ("--server", f.url)]
    code = queue_batch.main([*servers, "--workflow", str(workflow), "--download", str(download), *FAST,
                             *_pair_args(tmp_path, names)])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "8 of 8 pairs done" in out and "retrying on another server" in err and "dropping 127.0.0.1:" in err
    assert _tree(tmp_path) - before == {"results", "results/steadydancer", "results/queue_batch_ledger.jsonl",
                                        *(f"results/steadydancer/batch_{i:03d}_00001_.mp4" for i in range(1, 9))}
    contents = [(download / "steadydancer" / f"batch_{i:03d}_00001_.mp4").read_bytes() for i in range(1, 9)]
    assert [c.split(b":")[1] for c in contents] == [b"steadydancer/batch_%03d" % i for i in range(1, 9)]
    assert {c.split(b":")[0] for c in contents} >= {b"a", b"c"}
    queued = [p["4"]["inputs"]["filename_prefix"] for f in fakes for p in f.prompts]
    assert len(queued) == 9 and len(set(queued)) == 8                 # the dead server's pair ran twice
    records = [json.loads(line) for line in (download / "queue_batch_ledger.jsonl").read_text().splitlines()[1:]]
    assert sum(r["status"] == "done" for r in records) == 8 and len({r["key"] for r in records}) == 8
    table = out[out.index("pair "):].splitlines()
    assert table[0].split() == ["pair", "server", "status", "seconds", "output"] and len(table) == 10


def test_a_single_dead_server_fails_the_batch_quickly(tmp_path, server, capsys):
    names, workflow = _inputs(tmp_path, 3)
    fake, url = server([{"die": True}])
    start = time.monotonic()
    code = queue_batch.main(["--server", url, "--workflow", str(workflow), *FAST, *_pair_args(tmp_path, names)])
    out, err = capsys.readouterr()
    assert code == 1 and time.monotonic() - start < 10
    assert "HTTP 503: going down" in err and "no server left" in err
    assert "connection refused" in err or "Connection reset" in err
    assert "0 of 3 pairs done" in out and len(fake.prompts) == 1


def test_no_reachable_server_is_one_line_and_exit_2(tmp_path, capsys):
    names, workflow = _inputs(tmp_path, 1)
    code = queue_batch.main(["--server", "http://127.0.0.1:9", "--workflow", str(workflow),
                             *_pair_args(tmp_path, names)])
    err = capsys.readouterr().err
    assert code == 2 and "cannot reach ComfyUI at http://127.0.0.1:9" in err and len(err.strip().splitlines()) == 1


# ------------------------------------------------------------------------------------------ ledger and resume
def test_ctrl_c_stops_cleanly_and_a_rerun_resumes_from_the_ledger(tmp_path, server):
    names, workflow = _inputs(tmp_path, 6)
    fakes = [server([], name="a", job_seconds=0.4)[0], server([], name="b", job_seconds=0.4)[0]]
    download, before = tmp_path / "results", _tree(tmp_path)
    ledger = download / "queue_batch_ledger.jsonl"
    cmd = [sys.executable, str(SCRIPT), *(a for f in fakes for a in ("--server", f.url)), "--workflow",
           str(workflow), "--download", str(download), "--poll", "0.02", *_pair_args(tmp_path, names)]
    first = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and (not ledger.exists() or ledger.read_text().count('"done"') < 2):
            time.sleep(0.05)
        time.sleep(0.1)
        first.send_signal(signal.SIGINT)
        out, err = first.communicate(timeout=15)
    finally:
        first.kill()
    assert first.returncode == 130, err
    assert "stopped by Ctrl-C; run the same command again to resume" in err and "Traceback" not in err
    assert not [p for p in download.rglob("*.part")]
    done_first = {p.name for p in (download / "steadydancer").iterdir()}
    assert 2 <= len(done_first) < 6
    queued_first = sum(len(f.prompts) for f in fakes)

    second = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    assert second.returncode == 0, second.stderr
    assert f"{len(done_first)} of 6 pairs done earlier" in second.stdout and "6 of 6 pairs done" in second.stdout
    names_after = sorted(p.name for p in (download / "steadydancer").iterdir())
    assert names_after == [f"batch_{i:03d}_00001_.mp4" for i in range(1, 7)]     # each once, no name-1 copies
    queued = [p["4"]["inputs"]["filename_prefix"] for f in fakes for p in f.prompts]
    assert len(queued) == len(set(queued)) == 6 and sum(len(f.prompts) for f in fakes) - queued_first <= 6
    assert _tree(tmp_path) - before == {"results", "results/steadydancer", "results/queue_batch_ledger.jsonl",
                                        *(f"results/steadydancer/{n}" for n in names_after)}


def test_a_file_at_the_ledger_path_that_is_not_a_ledger_is_left_alone(tmp_path, capsys):
    names, workflow = _inputs(tmp_path, 1)
    mine = tmp_path / "notes.txt"
    mine.write_text("my notes\n")
    code = queue_batch.main(["--ledger", str(mine), "--workflow", str(workflow), *_pair_args(tmp_path, names)])
    assert code == 2 and "is not a queue_batch ledger" in capsys.readouterr().err
    assert mine.read_text() == "my notes\n"


def test_a_ledger_that_cannot_be_written_stops_the_batch_in_one_line(tmp_path, server, capsys, monkeypatch):
    from comfy_queue.ledger import Ledger

    names, workflow = _inputs(tmp_path, 3)
    fake, url = server()
    original = Ledger._append

    def full_disk(self, *records):
        if any(r.get("status") == "done" for r in records):
            raise OSError(28, "No space left on device")
        original(self, *records)

    monkeypatch.setattr(Ledger, "_append", full_disk)
    code = queue_batch.main(["--server", url, "--workflow", str(workflow), "--download", str(tmp_path / "dl"),
                             *FAST, *_pair_args(tmp_path, names)])
    err = capsys.readouterr().err
    assert code == 2 and "No space left on device; stopping the batch" in err and "Traceback" not in err
    assert len(fake.prompts) == 1


def test_a_torn_ledger_line_is_ignored(tmp_path):
    from comfy_queue.ledger import Ledger

    path = tmp_path / "l.jsonl"
    ledger = Ledger(path)
    ledger.update("k1", status="done", outputs=["a.mp4"])
    ledger.close()
    with open(path, "ab") as handle:
        handle.write(b'{"key": "k2", "stat')                      # a crash in the middle of a write
    ledger = Ledger(path)
    ledger.update("k2", status="running")
    ledger.close()
    again = Ledger(path)
    assert again.get("k1")["status"] == "done" and again.get("k2")["status"] == "running"
    assert again.skipped_lines == 1
    again.close()


# --------------------------------------------------------------------------------------- what the artist sees
def test_progress_is_one_line_per_change_by_node_title(monkeypatch):
    module = types.ModuleType("websocket")

    class Timeout(Exception):
        pass

    module.WebSocketTimeoutException = Timeout
    module.WebSocketException = Exception
    monkeypatch.setitem(sys.modules, "websocket", module)
    sent = [{"type": "executing", "data": {"node": "3", "prompt_id": "p"}}]
    for value in (0, 5, 5, 10, 11, 500, 1000):                    # weighted units, some repeated
        sent.append({"type": "progress", "data": {"node": "3", "value": value, "max": 1000, "prompt_id": "p"}})
        sent.append({"type": "progress_state", "data": {"prompt_id": "p", "nodes": {
            "3": {"value": value, "max": 1000, "state": "running"}}}})
    sent += [{"type": "progress", "data": {"node": "4", "value": "x", "max": None, "prompt_id": "p"}},
             {"type": "progress", "data": {"node": "9", "value": 1, "max": 2, "prompt_id": "other"}},
             {"type": "executing", "data": {"node": None, "prompt_id": "p"}}]

    class FakeSocket:
        def __init__(self):
            self.messages = [json.dumps(m) for m in sent]

        def settimeout(self, seconds):
            pass

        def recv(self):
            return self.messages.pop(0)

    lines, facts = [], {"node_seconds": {}, "cached": [], "previews": 0}
    titles = progress.node_titles(WORKFLOW)
    progress.follow(FakeSocket(), "p", lines.append, facts, titles)
    assert lines == ["SteadyDancer Sampler 0%", "SteadyDancer Sampler 1%", "SteadyDancer Sampler 50%",
                     "SteadyDancer Sampler 100%"]
    facts["seconds"] = 1.0
    assert progress.describe_run(titles, facts).startswith("1.0 s; SteadyDancer Sampler ")
    assert titles["1"] == "LoadImage"


@pytest.mark.parametrize("hostile", [None, "trickle", "huge"])
def test_the_websocket_shows_progress_and_bounds_each_message(tmp_path, server, capsys, hostile):
    """With websocket-client installed: one progress line per change, by title; a trickled or huge message ends
    the websocket (its own deadline and cap), and the pair finishes by polling /history."""
    pytest.importorskip("websocket")
    names, workflow = _inputs(tmp_path, 1)
    fake, url = server([{"ws": hostile}] if hostile else [{}], job_polls=1)
    start = time.monotonic()
    code = queue_batch.main(["--server", url, "--workflow", str(workflow), *FAST, "--timeout", "1",
                             "--max-reply-mb", "1", *_pair_args(tmp_path, names)])
    out, err = capsys.readouterr()
    assert code == 0, err
    shown = [line.split(": ", 1)[1] for line in out.splitlines() if "%" in line]
    if hostile is None:
        assert shown == ["SteadyDancer Sampler 0%", "SteadyDancer Sampler 50%", "SteadyDancer Sampler 100%"]
        assert "1 previews" in out
    else:
        assert shown == [] and time.monotonic() - start < 5
        why = "took more than 1 s to arrive" if hostile == "trickle" else "is over the 1.0 MB cap"
        assert f"websocket closed (a websocket message {why}); polling /history" in out


def test_every_option_has_help_and_is_in_the_docs():
    parser = build_parser()
    page = (REPO_ROOT / "docs" / "batch.md").read_text()
    assert options_markdown() in page, "docs/batch.md: paste comfy_queue.options.options_markdown() under Options"
    flags = [a.option_strings[-1] for a in parser._actions if a.option_strings and a.dest != "help"]
    assert {"--server", "--workflow", "--pair", "--seed", "--ledger", "--timeout"} <= set(flags)
    for action in parser._actions:
        if action.option_strings and action.dest != "help":
            assert action.help and len(action.help) > 20, action.option_strings
            assert f"`{action.option_strings[-1]}" in page, f"{action.option_strings[-1]} is not in docs/batch.md"


def test_usage_errors_are_one_line_with_exit_2(tmp_path, capsys):
    names, workflow = _inputs(tmp_path, 1)
    for argv in (["--seed", "-1"], ["--timeout", "0"], ["--server", "ftp://x", "--workflow", str(workflow),
                                                        *_pair_args(tmp_path, names)], []):
        with pytest.raises(SystemExit) as exit_:
            code = queue_batch.main(argv)
            raise SystemExit(code)
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and len(err.strip().splitlines()) == 1, err
