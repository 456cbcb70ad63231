"""Every bundled workflow against the node schemas: node types, widget counts, order and value types, link types,
UI <-> API agreement, and the example_workflows copies."""
from __future__ import annotations

import json
import sys

import pytest

from conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "scripts"))
sys.path.insert(0, str(REPO_ROOT / "tests"))

import build_workflows  # noqa: E402
import comfy_standin  # noqa: E402

UI_FILES = sorted((REPO_ROOT / "workflows" / "ui").glob("*.json"))
API_DIR = REPO_ROOT / "workflows" / "api"
PACK_CATEGORY = "SteadyDancer"
CORE_TYPES = set(build_workflows.CORE_SCHEMAS)
PY_TYPES = {"INT": (int,), "FLOAT": (int, float), "STRING": (str,), "BOOLEAN": (bool,)}
CONTROL_VALUES = {"fixed", "increment", "decrement", "randomize"}


@pytest.fixture(scope="module")
def pack_classes(tmp_path_factory):
    """The pack's node classes under the stand-in host."""
    host = comfy_standin.install(tmp_path_factory.mktemp("host"))
    try:
        yield comfy_standin.load_pack().NODE_CLASS_MAPPINGS, host
    finally:
        comfy_standin.uninstall()


def _schema(node_type, classes):
    if node_type in classes:
        return build_workflows.schema_of(classes[node_type])
    assert node_type in CORE_TYPES, f"unknown node type {node_type}: neither this pack nor a core node it expects"
    return build_workflows.core_schema(node_type)


def _widget_layout(schema):
    """[(name, kind, options)] per widgets_values slot, including control_after_generate and upload slots."""
    layout = []
    for name, kind, _, options in schema["widgets"]:
        layout.append((name, kind, options))
        if options.get("control_after_generate"):
            layout.append((name + ":control", "CONTROL", {}))
    return layout


def ui_to_api(ui: dict, classes) -> dict:
    """The frontend's graphToPrompt rules (see the ComfyUI notes): widget values by input name, links as
    [source id, output slot]; upload and control_after_generate slots are not sent."""
    links = {link[0]: link for link in ui["links"]}
    prompt = {}
    for node in ui["nodes"]:
        if node.get("mode", 0) in (2, 4):
            continue
        schema = _schema(node["type"], classes)
        inputs = {}
        for (name, kind, _), value in zip(_widget_layout(schema), node["widgets_values"]):
            if kind not in ("CONTROL", "UPLOAD"):
                inputs[name] = value
        for slot in node["inputs"]:
            if slot.get("link") is not None:
                _, origin, origin_slot, _, _, _ = links[slot["link"]]
                inputs[slot["name"]] = [str(origin), origin_slot]
        prompt[str(node["id"])] = {"class_type": node["type"], "inputs": inputs}
    return prompt


def test_there_are_three_workflows_in_both_folders():
    names = {p.name for p in UI_FILES}
    assert {"steadydancer_basic_dance.json", "steadydancer_long_video.json",
            "steadydancer_24gb_fp8_distill.json"} <= names
    for path in UI_FILES:
        copy = REPO_ROOT / "example_workflows" / path.name
        assert copy.read_text() == path.read_text(), f"example_workflows/{path.name} differs from workflows/ui/"
        assert (API_DIR / path.name).exists(), f"workflows/api/{path.name} is missing"


def test_template_browser_lists_each_workflow_once():
    """ComfyUI 0.8 lists the *.json directly inside a pack's example_workflows/, example/, examples/, workflow/ and
    workflows/ folders (not their subfolders): only example_workflows/ may hold them at the top level."""
    for folder in ("example", "examples", "workflow", "workflows"):
        assert not sorted((REPO_ROOT / folder).glob("*.json")), f"{folder}/*.json would show twice in the browser"
    listed = sorted(p.name for p in (REPO_ROOT / "example_workflows").glob("*.json"))
    assert listed == [p.name for p in UI_FILES] == ["steadydancer_24gb_fp8_distill.json",
                                                    "steadydancer_basic_dance.json", "steadydancer_long_video.json"]


def test_workflow_files_are_up_to_date_with_the_generator():
    stale = [p for p, text in build_workflows.render_all().items() if not p.exists() or p.read_text() != text]
    assert not stale, f"run python scripts/build_workflows.py: {stale}"


@pytest.mark.parametrize("path", UI_FILES, ids=lambda p: p.stem)
def test_ui_workflow_matches_node_schemas(path, pack_classes):
    classes, _ = pack_classes
    ui = json.loads(path.read_text())
    assert ui["version"] == 0.4 and {"nodes", "links", "last_node_id", "last_link_id"} <= set(ui)
    nodes = {n["id"]: n for n in ui["nodes"]}
    for node in ui["nodes"]:
        schema = _schema(node["type"], classes)
        layout = _widget_layout(schema)
        values = node["widgets_values"]
        assert len(values) == len(layout), (
            f"{path.name} node {node['id']} {node['type']}: {len(values)} widget values, schema has "
            f"{[l[0] for l in layout]}")
        for (name, kind, options), value in zip(layout, values):
            where = f"{path.name} node {node['id']} {node['type']}.{name}"
            if kind == "CONTROL":
                assert value in CONTROL_VALUES, where
            elif kind == "UPLOAD":
                assert value == build_workflows.UPLOAD_VALUE, where
            elif kind in PY_TYPES:
                assert isinstance(value, PY_TYPES[kind]) and not (kind != "BOOLEAN" and isinstance(value, bool)), where
                if "min" in options:
                    assert value >= options["min"], where
                if "max" in options:
                    assert value <= options["max"], where
        socket_types = {n: t for n, t, _ in schema["inputs"]}
        widget_types = {w[0]: w[1] for w in schema["widgets"]}
        for slot in node["inputs"]:
            if "widget" in slot:
                assert slot["name"] in widget_types, f"{node['type']} has no widget {slot['name']}"
            else:
                assert socket_types.get(slot["name"]) == slot["type"], f"{node['type']}.{slot['name']}"
        required = [n for n, _, optional in schema["inputs"] if not optional]
        linked = {s["name"] for s in node["inputs"] if s.get("link") is not None}
        assert set(required) <= linked, f"{path.name} {node['type']} unconnected: {set(required) - linked}"
        assert [o["type"] for o in node["outputs"]] == [t for _, t in schema["outputs"]], node["type"]
    for link_id, origin, origin_slot, target, target_slot, link_type in ui["links"]:
        out = nodes[origin]["outputs"][origin_slot]
        slot = nodes[target]["inputs"][target_slot]
        assert slot["link"] == link_id and link_id in out["links"]
        target_schema = _schema(nodes[target]["type"], classes)
        expected = {w[0]: w[1] for w in target_schema["widgets"]}.get(slot["name"], slot["type"])
        assert out["type"] == link_type == expected, (
            f"{path.name} link {link_id}: {nodes[origin]['type']}.{out['name']} ({out['type']}) -> "
            f"{nodes[target]['type']}.{slot['name']} ({expected})")


@pytest.mark.parametrize("path", UI_FILES, ids=lambda p: p.stem)
def test_api_workflow_is_the_ui_workflow(path, pack_classes):
    classes, _ = pack_classes
    ui = json.loads(path.read_text())
    api = json.loads((API_DIR / path.name).read_text())
    stripped = {k: {"class_type": v["class_type"], "inputs": v["inputs"]} for k, v in api.items()}
    assert ui_to_api(ui, classes) == stripped


def test_basic_dance_is_small_and_uses_only_this_pack_and_core_nodes(pack_classes):
    classes, _ = pack_classes
    ui = json.loads((REPO_ROOT / "workflows" / "ui" / "steadydancer_basic_dance.json").read_text())
    types = [n["type"] for n in ui["nodes"]]
    assert len([t for t in types if t != "PreviewImage"]) <= 8 and types.count("PreviewImage") == 2, types
    assert set(types) <= set(classes) | CORE_TYPES
    for required in ("LoadImage", "ExtractPose", "AlignPose", "LoadSteadyDancerModel", "SteadyDancerSampler",
                     "DecodeVideo", "SaveVideo"):
        assert required in types


def test_pack_nodes_are_in_the_steadydancer_category(pack_classes):
    classes, _ = pack_classes
    for name in ("LoadSteadyDancerModel", "ExtractPose", "AlignPose", "SteadyDancerSampler", "DecodeVideo"):
        assert classes[name].CATEGORY == PACK_CATEGORY


@pytest.mark.parametrize("path", sorted(API_DIR.glob("*.json")), ids=lambda p: p.stem)
def test_queue_batch_fills_in_a_pair(path):
    import queue_batch

    template = json.loads(path.read_text())
    prompt = queue_batch.prepare(template, "steadydancer/me.png", "steadydancer/clip.mp4", "a robot dancing",
                                 "steadydancer/batch_001", 7)
    assert template != prompt and json.loads(path.read_text()) == template  # the template is not modified
    by_type = {v["class_type"]: v["inputs"] for v in prompt.values()}
    assert by_type["LoadImage"]["image"] == "steadydancer/me.png"
    assert by_type["LoadVideo"]["file"] == "steadydancer/clip.mp4"
    assert by_type["SteadyDancerSampler"]["prompt"] == "a robot dancing"
    assert by_type["SteadyDancerSampler"]["seed"] == 7
    saver = by_type.get("SaveVideo") or by_type["DecodeVideo"]            # DecodeVideo with output 'file'
    assert saver["filename_prefix"] == "steadydancer/batch_001"
    entry = {"outputs": {"8": {"images": [{"filename": "x.mp4", "subfolder": "s", "type": "output"}]}}}
    assert queue_batch.saved_files(entry) == [{"filename": "x.mp4", "subfolder": "s", "type": "output"}]


def _api(name: str) -> dict:
    return json.loads((API_DIR / f"{name}.json").read_text())


def test_long_video_workflow_streams_the_video_in_and_out():
    """The long-video workflow never holds the video as one IMAGE batch: ExtractPose reads the VIDEO one frame at a
    time (no Get Video Components), DecodeVideo writes the mp4 one segment at a time (output 'file', no Create /
    Save Video collecting frames) with the driving audio, which ExtractPose reads without decoding frames."""
    prompt = _api("steadydancer_long_video")
    by_type = {v["class_type"]: (k, v["inputs"]) for k, v in prompt.items()}
    assert not {"GetVideoComponents", "CreateVideo", "SaveVideo"} & set(by_type)
    video_id = by_type["LoadVideo"][0]
    extract_id, extract = by_type["ExtractPose"]
    assert extract["video"] == [video_id, 0] and "images" not in extract
    _, decode = by_type["DecodeVideo"]
    assert decode["output"] == "file" and decode["audio"] == [extract_id, 4]
    assert by_type["SteadyDancerSampler"][1]["length"] == 0, "every pose frame"


@pytest.mark.parametrize("path", sorted(API_DIR.glob("*.json")), ids=lambda p: p.stem)
def test_bundled_workflows_make_frame_0_the_photo(path):
    """first_frame: the bundled workflows keep the unified default, exact (frame 0 is the photo pixel for pixel)."""
    from steadydancer_core import SAMPLER

    assert SAMPLER.default("first_frame") == "exact"
    options = [v["inputs"] for v in json.loads(path.read_text()).values()
               if v["class_type"] == "SteadyDancerSamplerOptions"]
    assert all(o["first_frame"] == "exact" for o in options)
