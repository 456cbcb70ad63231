"""What the artist sees in ComfyUI's frontend: node names, the report extension, the bundled workflows' previews,
missing-model downloads, opening view, and the template browser's thumbnails."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap

import pytest

from conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "scripts"))
sys.path.insert(0, str(REPO_ROOT / "tests"))

import build_workflows  # noqa: E402
import comfy_standin  # noqa: E402

import steadydancer_core as sd  # noqa: E402

UI_FILES = sorted((REPO_ROOT / "workflows" / "ui").glob("*.json"))
EXAMPLES = sorted((REPO_ROOT / "example_workflows").glob("*.json"))
WEB_FILE = REPO_ROOT / "web" / "steadydancer_report.js"
# The 0.8 frontend (1.35.9) draws nodes without text below this zoom (its LOD font threshold 8 px / 14 px text).
TEXT_ZOOM = 8 / 14


@pytest.fixture(scope="module")
def pack(tmp_path_factory):
    comfy_standin.install(tmp_path_factory.mktemp("host"))
    try:
        yield comfy_standin.load_pack()
    finally:
        comfy_standin.uninstall()


def _nodes(path):
    return json.loads(path.read_text())["nodes"]


# ----------------------------------------------------------------------------------------------- node names
def test_every_node_display_name_contains_the_pack_name(pack):
    """Searching "SteadyDancer" in the node search finds every node of the pack."""
    assert set(pack.NODE_DISPLAY_NAME_MAPPINGS) == set(pack.NODE_CLASS_MAPPINGS)
    for node_id, name in pack.NODE_DISPLAY_NAME_MAPPINGS.items():
        assert "SteadyDancer" in name, f"{node_id}: display name {name!r} lacks 'SteadyDancer'"
    assert pack.NODE_DISPLAY_NAME_MAPPINGS["ExtractPose"] == "SteadyDancer Extract Pose (DWPose)"


# --------------------------------------------------------------------------------------- report extension
def test_pack_serves_the_report_extension(pack):
    assert pack.WEB_DIRECTORY == "./web" and WEB_FILE.is_file()
    assert "WEB_DIRECTORY" in pack.__all__
    source = WEB_FILE.read_text()
    # served at /extensions/<pack folder>/<file>.js: the app module is two folders up
    depth = len(WEB_FILE.relative_to(REPO_ROOT / "web").parts) + 1
    assert f'from "{"../" * depth}scripts/app.js"' in source


def _run_js(tmp_path, body: str) -> dict:
    """Run ``body`` with node against the extension served as ComfyUI serves it (stub app and DOM)."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node (JavaScript) is not installed")
    ext_dir = tmp_path / "extensions" / "comfyui-steadydancer"
    ext_dir.mkdir(parents=True)
    shutil.copy(WEB_FILE, ext_dir / WEB_FILE.name)
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "app.js").write_text(
        "export const app = { registerExtension(ext) { globalThis.registered.push(ext); } };\n")
    harness = textwrap.dedent("""
        globalThis.registered = [];
        globalThis.document = { createElement: () => ({ value: "", style: {} }) };
        const mod = await import("./extensions/comfyui-steadydancer/steadydancer_report.js");
        class FakeNode {
            constructor() { this.widgets = []; this.size = [320, 200]; }
            addDOMWidget(name, type, element, options) {
                const w = { name, type, element, options };
                Object.defineProperty(w, "value", { get: () => options.getValue(), set: (v) => options.setValue(v) });
                this.widgets.push(w); return w;
            }
            computeSize() {
                const extra = this.widgets.reduce((h, w) => h + (w.options.getMinHeight?.() ?? 0), 0);
                return [300, 200 + extra];
            }
            setSize(size) { this.size = size; }
        }
        async function register(category) {
            const nodeType = function () {};
            nodeType.prototype = new FakeNode();
            nodeType.prototype.onExecuted = function (output) { this.seen = output; };
            for (const ext of globalThis.registered) await ext.beforeRegisterNodeDef(nodeType, { category });
            return nodeType;
        }
    """) + body
    (tmp_path / "harness.mjs").write_text(harness)
    out = subprocess.run([node, str(tmp_path / "harness.mjs")], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_report_extension_shows_text_under_pack_nodes_only(tmp_path):
    result = _run_js(tmp_path, textwrap.dedent("""
        const Ours = await register("SteadyDancer");
        const node = new Ours(); node.widgets = []; node.size = [320, 200];
        node.onExecuted({ text: ["81 frames at 832x480\\nmemory plan for this job: " + "x".repeat(200)] });
        const again = node.widgets.length;
        node.onExecuted({ text: ["second run"] });
        node.onExecuted({ images: [] });                 // an output without text keeps the last report
        const w = node.widgets[0];
        const Other = await register("image");
        const other = new Other(); other.widgets = [];
        other.onExecuted({ text: ["not ours"] });
        console.log(JSON.stringify({
            name: w.name, value: w.value, widgets: node.widgets.length, again, serialize: w.serialize,
            optionSerialize: w.options.serialize, original: node.seen !== undefined, grew: node.size[1] > 200,
            otherWidgets: other.widgets.length, joined: mod.reportText({ text: ["a", "b"] }),
            none: mod.reportText({ images: [] }), lines: mod.wrappedLines("x".repeat(400), 320),
            words: mod.wrappedLines("word ".repeat(30).trim() + "\\nshort", 320),
        }));
    """))
    assert result["name"] == "steadydancer_report" and result["value"] == "second run"
    assert result["widgets"] == result["again"] == 1, "one report box per node, reused on every run"
    assert result["serialize"] is False and result["optionSerialize"] is False, "never saved nor sent to the server"
    assert result["original"] and result["grew"]
    assert result["otherWidgets"] == 0, "other packs' nodes are left alone"
    assert result["joined"] == "a\nb" and result["none"] is None and result["lines"] >= 9
    assert result["words"] == 5, "30 words of 4 letters wrap to 4 lines at 43 characters, plus one short line"


@pytest.mark.parametrize("node_type", ["LoadSteadyDancerModel", "SteadyDancerSampler", "ExtractPose", "AlignPose"])
def test_reporting_nodes_are_in_the_category_the_extension_watches(pack, node_type):
    category = pack.NODE_CLASS_MAPPINGS[node_type].CATEGORY
    assert category == "SteadyDancer" or category.startswith("SteadyDancer/")
    assert 'const CATEGORY = "SteadyDancer";' in WEB_FILE.read_text()


# ------------------------------------------------------------------------------------------------ workflows
@pytest.mark.parametrize("path", UI_FILES, ids=lambda p: p.stem)
def test_workflow_previews_the_extracted_and_the_aligned_poses(path):
    ui = json.loads(path.read_text())
    nodes = {n["id"]: n for n in ui["nodes"]}
    previewed = {(nodes[origin]["type"], nodes[origin]["outputs"][slot]["name"])
                 for _, origin, slot, target, _, _ in ui["links"] if nodes[target]["type"] == "PreviewImage"}
    quality = {("SteadyDancerQualityReport", "plot")} if path.stem == "steadydancer_long_video" else set()
    assert previewed == {("ExtractPose", "preview"), ("AlignPose", "preview")} | quality


def _table_sources() -> dict[str, tuple[str, str]]:
    """{file name: (ComfyUI folder, Hugging Face resolve URL)} from the model file table."""
    return {f.name: (f.folders[0], f.url) for f in sd.MODEL_FILE_TABLE if f.url}


@pytest.mark.parametrize("path", UI_FILES, ids=lambda p: p.stem)
def test_model_loading_nodes_list_their_files_for_the_missing_models_dialog(path, pack):
    sources = _table_sources()
    # Not the ONNX pose models: ComfyUI 0.8 tells the frontend only about .safetensors / .ckpt / .pt files, so an
    # .onnx entry would always be reported missing.
    folders = {"LoadSteadyDancerModel": {"diffusion_models", "vae", "text_encoders", "clip_vision", "loras",
                                         "steadydancer"}}
    for node in _nodes(path):
        if node["type"] not in folders:
            assert "models" not in node["properties"], node["type"]
            continue
        files = [v for v in node["widgets_values"] if isinstance(v, str) and v.endswith(".safetensors")]
        models = node["properties"]["models"]
        # the frontend lists the entries whose name is one of the node's widget values
        assert sorted(m["name"] for m in models) == sorted(files) and files
        for entry in models:
            assert (entry["directory"], entry["url"]) == sources[entry["name"]], entry
            assert entry["directory"] in folders[node["type"]], entry


def test_starter_workflow_uses_the_fp8_files():
    loader = next(n for n in _nodes(REPO_ROOT / "workflows" / "ui" / "steadydancer_basic_dance.json")
                  if n["type"] == "LoadSteadyDancerModel")
    assert build_workflows.DIT_FP8 in loader["widgets_values"]
    assert build_workflows.T5_FP8 in loader["widgets_values"]
    assert not any("fp16" in str(v) for v in loader["widgets_values"])


def _footprints(path, pack):
    """(x0, y0, x1, y1) per node: title bar, body and the room kept for what it shows after a run (its report, the
    written video)."""
    boxes = []
    for node in _nodes(path):
        cls = pack.NODE_CLASS_MAPPINGS.get(node["type"])
        schema = build_workflows.schema_of(cls) if cls else build_workflows.core_schema(node["type"])
        values = dict(zip(build_workflows.widget_names(schema), node["widgets_values"]))
        width, height = build_workflows.footprint(node["type"], schema, values)
        (x, y), size = node["pos"], node["size"]
        assert list(size) == list(build_workflows.node_size(node["type"], schema)), node["type"]
        top = y - build_workflows.TITLE_PX
        boxes.append((node["type"], (x, top, x + width, top + height)))
    return boxes


@pytest.mark.parametrize("path", UI_FILES, ids=lambda p: p.stem)
def test_workflow_opens_with_every_node_in_view_and_readable(path, pack):
    ds = json.loads(path.read_text())["extra"]["ds"]
    view = build_workflows.VIEW
    scale, (ox, oy) = ds["scale"], ds["offset"]
    assert TEXT_ZOOM <= scale <= 1.0, "below the frontend's text zoom the nodes are drawn as empty boxes"
    for node_type, (x0, y0, x1, y1) in _footprints(path, pack):
        left, top, right, bottom = ((x0 + ox) * scale, (y0 + oy) * scale, (x1 + ox) * scale, (y1 + oy) * scale)
        assert view["left"] - 1 <= left and right <= view["left"] + view["width"] + 1, node_type
        assert view["top"] - 1 <= top and bottom <= view["top"] + view["height"] + 1, node_type
        assert right <= 1600 and bottom <= 900


@pytest.mark.parametrize("path", UI_FILES, ids=lambda p: p.stem)
def test_nothing_ends_under_the_minimap_after_a_run(path, pack):
    """At 1600x900 the frontend draws its minimap and canvas toolbar in the bottom right corner: no node, with its
    report or written video shown after a run, reaches under them."""
    ds = json.loads(path.read_text())["extra"]["ds"]
    scale, (ox, oy) = ds["scale"], ds["offset"]
    mx0, my0, mx1, my1 = build_workflows.MINIMAP
    for node_type, (x0, y0, x1, y1) in _footprints(path, pack):
        left, top, right, bottom = ((x0 + ox) * scale, (y0 + oy) * scale, (x1 + ox) * scale, (y1 + oy) * scale)
        assert right <= mx0 or bottom <= my0 or left >= mx1 or top >= my1, f"{node_type} reaches under the minimap"


def test_the_loader_shows_whole_model_file_names(pack):
    """The loader is wide enough for the longest file name of the bundled workflows (6.8 px a character at the
    frontend's widget font, measured, plus 100 px for the widget's name and arrows)."""
    loader = build_workflows.node_size("LoadSteadyDancerModel",
                                       build_workflows.schema_of(pack.NODE_CLASS_MAPPINGS["LoadSteadyDancerModel"]))
    names = [v for path in UI_FILES for n in _nodes(path) if n["type"] == "LoadSteadyDancerModel"
             for v in n["widgets_values"] if isinstance(v, str) and v.endswith(".safetensors")]
    assert loader[0] >= 100 + 6.8 * max(map(len, names))


@pytest.mark.parametrize("path", UI_FILES, ids=lambda p: p.stem)
def test_workflow_nodes_do_not_overlap(path, pack):
    boxes = _footprints(path, pack)
    for i, (a, (ax0, ay0, ax1, ay1)) in enumerate(boxes):
        for b, (bx0, by0, bx1, by1) in boxes[i + 1:]:
            assert ax1 <= bx0 or bx1 <= ax0 or ay1 <= by0 or by1 <= ay0, f"{path.stem}: {a} overlaps {b}"


def test_layout_follows_added_widgets(pack):
    """A widget added to a node makes it taller and moves the nodes below it down (the layout is derived)."""
    schemas = {name: build_workflows.schema_of(cls) for name, cls in pack.NODE_CLASS_MAPPINGS.items()}
    before = build_workflows.basic_dance(schemas).layout()
    grown = json.loads(json.dumps(schemas))   # a copy with one more widget on ExtractPose
    grown["ExtractPose"]["widgets"].append(["new_option", "INT", 0, {}])
    after = build_workflows.basic_dance(grown).layout()
    graph = build_workflows.basic_dance(schemas)
    extract = next(n["id"] for n in graph.nodes if n["type"] == "ExtractPose")
    preview = next(n["id"] for n in graph.nodes if n["type"] == "PreviewImage")
    assert after[extract][1][1] == before[extract][1][1] + build_workflows.WIDGET_PX
    assert after[preview][0][1] == before[preview][0][1] + build_workflows.WIDGET_PX


# ------------------------------------------------------------------------------------------ template browser
@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.stem)
def test_each_template_has_a_small_jpeg_thumbnail_beside_it(path):
    """The 0.8 frontend asks for /api/workflow_templates/<pack>/<name>.jpg: <name>.jpg in example_workflows/."""
    from PIL import Image

    thumb = path.with_suffix(".jpg")
    assert thumb.is_file(), f"missing thumbnail {thumb.name} (python scripts/make_thumbnails.py)"
    assert thumb.stat().st_size < 100_000
    with Image.open(thumb) as image:
        assert image.format == "JPEG" and min(image.size) >= 256


def test_a_widget_declared_without_a_default_still_gets_a_value():
    class NewNode:
        CATEGORY = "SteadyDancer"
        RETURN_TYPES = ()

        @classmethod
        def INPUT_TYPES(cls):
            return {"required": {"count": ("INT", {"min": 3}), "label": ("STRING", {}), "flag": ("BOOLEAN",)},
                    "optional": {"choice": ("COMBO", {"options": ["a", "b"]})}}

    assert [w[2] for w in build_workflows.schema_of(NewNode)["widgets"]] == [3, "", False, "a"]
