"""Writes the bundled workflows from one description: UI format (workflows/ui/, example_workflows/) and API format
(workflows/api/). ComfyUI's template browser lists ``*.json`` directly inside a pack's ``example_workflows/`` and
also ``workflows/`` (not their subfolders), so the UI copies live in ``workflows/ui/`` to be listed once.

Everything that depends on the nodes is derived from their definitions, so the files follow the nodes when widgets
are added: widget order and defaults come from INPUT_TYPES; node heights from the number of sockets and widgets
(the ComfyUI 0.8 frontend's layout: 20 px per socket row, 24 px per widget, 54 px per multiline text); nodes are
stacked in columns from those heights, and the saved view (``extra.ds``) is computed so the whole graph fits a
1600x900 browser window. The model loader carries the frontend's missing-models list (``properties.models``: file
name, Hugging Face URL, model folder: the model file table's), so a missing file is named, with its download.

    python scripts/build_workflows.py            # rewrite the files
    python scripts/build_workflows.py --check    # exit 1 if a file is out of date
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

import comfy_standin  # noqa: E402  (tests/comfy_standin.py: a stand-in ComfyUI host)
import steadydancer_core as sd  # noqa: E402
from steadydancer_core import tiny_kit  # noqa: E402

# File names the workflows reference: the model file table's and the tiny kit's example inputs (the kit writes tiny
# files under the same names).
PHOTO, DRIVING_VIDEO = tiny_kit.PHOTO_FILE, tiny_kit.VIDEO_FILE
DIT_FP16, DIT_FP8, VAE, T5_FP16, T5_FP8, CLIP_VISION, DISTILL_LORA, DETECTOR, POSE_MODEL = (
    sd.model_file_info(key).name for key in ("dit_fp16", "dit_fp8", "vae", "t5_fp16", "t5_fp8", "clip_vision",
                                             "distill_lora", "detector", "pose_model"))
AREA_480P = 832 * 480  # pixels: the 24 GB workflow renders at 480p

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}

# The frontend's missing-models list: ComfyUI 0.8 tells the frontend only about these file types
# (/experiment/models), so an .onnx entry would always be reported missing, even when the file is there.
FRONTEND_LISTED = (".safetensors", ".ckpt", ".pt")


def model_sources() -> dict[str, tuple[str, str]]:
    """{file name: (ComfyUI model folder, download URL)} for the model table's files the frontend can check."""
    return {f.name: (f.folders[0], f.url) for f in sd.MODEL_FILE_TABLE
            if f.url and f.name.endswith(FRONTEND_LISTED)}


MODEL_SOURCES = model_sources()

# Core ComfyUI nodes used by the workflows: (sockets in order, widgets in order, outputs). Checked against a real
# ComfyUI 0.8 /object_info; "upload" is the frontend's upload button (saved in widgets_values, not sent to /prompt).
CORE_SCHEMAS = {
    "LoadImage": {"inputs": [], "widgets": [("image", "COMBO"), ("upload", "UPLOAD")],
                  "outputs": [("IMAGE", "IMAGE"), ("MASK", "MASK")]},
    "LoadVideo": {"inputs": [], "widgets": [("file", "COMBO"), ("upload", "UPLOAD")],
                  "outputs": [("VIDEO", "VIDEO")]},
    "GetVideoComponents": {"inputs": [("video", "VIDEO", False)], "widgets": [],
                           "outputs": [("images", "IMAGE"), ("audio", "AUDIO"), ("fps", "FLOAT")]},
    "CreateVideo": {"inputs": [("images", "IMAGE", False), ("audio", "AUDIO", True)], "widgets": [("fps", "FLOAT")],
                    "outputs": [("VIDEO", "VIDEO")]},
    "SaveVideo": {"inputs": [("video", "VIDEO", False)],
                  "widgets": [("filename_prefix", "STRING"), ("format", "COMBO"), ("codec", "COMBO")],
                  "outputs": []},
    "PreviewImage": {"inputs": [("images", "IMAGE", False)], "widgets": [], "outputs": []},
}
UPLOAD_VALUE = "image"

# Layout, in the ComfyUI 0.8 frontend's canvas units (measured on its nodes: a node's height is 20 px per row of
# sockets + 24 px per widget + 54 px per multiline text + 14 px; the title bar is 30 px above the node's position).
SLOT_PX, WIDGET_PX, MULTILINE_PX, NODE_PAD_PX, TITLE_PX = 20, 24, 54, 14, 30
NODE_WIDTH = 300
# Wider nodes: the loader shows whole model file names; the sampler's report wraps less.
NODE_WIDTHS = {"LoadSteadyDancerModel": 530, "SteadyDancerSampler": 380, "SaveVideo": 320}
# Nodes whose size depends on what they show (measured with the tiny kit's portrait photo and video); previews get
# room for an image.
FIXED_SIZES = {"LoadImage": (280, 310), "LoadVideo": (280, 500), "PreviewImage": (300, 300),
               "GetVideoComponents": (220, 80), "CreateVideo": (270, 80)}
# Room kept under a pack node for the report the frontend extension shows after a run (web/steadydancer_report.js:
# 15 px a line + 14), in lines of text at the node's width: the reports' usual length.
LINE_PX, REPORT_PAD_PX = 15, 14
REPORT_LINES = {"LoadSteadyDancerModel": 10, "SteadyDancerSampler": 12, "ExtractPose": 5, "AlignPose": 4}
# Room under the nodes that show the written video after a run (SaveVideo, DecodeVideo with output 'file'): the
# video at the node's width, the tiny kit's portrait output (592x976) and the frontend's controls.
VIDEO_ASPECT = 976 / 592
VIDEO_CONTROLS_PX = 30
ROW_GAP_PX = 40      # between a node (with its report room) and the next title bar
COLUMN_GAP_PX = 50
# The view the workflows open with: the whole graph inside a 1600x900 browser window, less the frontend's side
# bar (left) and tab / menu bars (top), and away from the minimap and the canvas toolbar in the bottom right corner
# (screen pixels, x0, y0, x1, y1), so nothing ends under them after a run.
VIEW = {"left": 70, "top": 100, "width": 1510, "height": 780}
MINIMAP = (1335, 630, 1600, 900)
PACK_CATEGORY = "SteadyDancer"


def pack_schemas() -> dict:
    """{node type: schema} for the pack's nodes, from their INPUT_TYPES (under the stand-in host)."""
    with tempfile.TemporaryDirectory() as tmp:
        comfy_standin.install(Path(tmp))
        try:
            pack = comfy_standin.load_pack()
            return {name: schema_of(cls) for name, cls in pack.NODE_CLASS_MAPPINGS.items()}
        finally:
            comfy_standin.uninstall()


def schema_of(cls) -> dict:
    spec = cls.INPUT_TYPES()
    inputs, widgets = [], []
    for section in ("required", "optional"):
        for name, entry in spec.get(section, {}).items():
            kind = entry[0]
            options = entry[1] if len(entry) > 1 else {}
            if isinstance(kind, list):
                widgets.append((name, "COMBO", options.get("default", kind[0] if kind else None), options))
            elif kind in WIDGET_TYPES and not options.get("forceInput"):
                widgets.append((name, kind, options.get("default", _frontend_default(kind, options)), options))
            else:
                inputs.append((name, kind, section == "optional"))
    outputs = list(zip(getattr(cls, "RETURN_NAMES", cls.RETURN_TYPES), cls.RETURN_TYPES))
    return {"inputs": inputs, "widgets": widgets, "outputs": outputs, "category": getattr(cls, "CATEGORY", "")}


def _frontend_default(kind: str, options: dict):
    """A value for a widget declared without a default (0 kept inside min..max, "", False, the first option), so
    a newly added widget never stops the build."""
    if kind in ("INT", "FLOAT"):
        return min(max(0, options.get("min", 0)), options.get("max", 0) if "max" in options else float("inf"))
    if kind == "COMBO":
        choices = options.get("options") or [None]
        return choices[0]
    return {"STRING": "", "BOOLEAN": False}.get(kind)


def core_schema(node_type: str) -> dict:
    s = CORE_SCHEMAS[node_type]
    return {"inputs": s["inputs"], "widgets": [(n, k, None, {}) for n, k in s["widgets"]], "outputs": s["outputs"],
            "category": "core"}


def node_size(node_type: str, schema: dict) -> tuple[int, int]:
    """(width, height) of a node as the frontend lays it out (without its title bar)."""
    if node_type in FIXED_SIZES:
        return FIXED_SIZES[node_type]
    rows = multiline = 0
    for _, kind, _, options in schema["widgets"]:
        if kind == "STRING" and options.get("multiline"):
            multiline += 1
        else:
            rows += 1 + bool(options.get("control_after_generate"))
    sockets = max(len(schema["inputs"]), len(schema["outputs"]))
    width = NODE_WIDTHS.get(node_type, NODE_WIDTH)
    return width, SLOT_PX * sockets + WIDGET_PX * rows + MULTILINE_PX * multiline + NODE_PAD_PX


def shows_video(node_type: str, values: dict) -> bool:
    """Whether the node shows the written video after a run."""
    return node_type == "SaveVideo" or (node_type == "DecodeVideo" and values.get("output") == "file")


def after_run_px(node_type: str, schema: dict, values: dict | None = None) -> int:
    """Height a node grows by after a run: its report (pack nodes) or the video it shows."""
    width = node_size(node_type, schema)[0]
    if shows_video(node_type, values or {}):
        return int(width * VIDEO_ASPECT) + VIDEO_CONTROLS_PX
    if schema.get("category", "").startswith(PACK_CATEGORY) and node_type in REPORT_LINES:
        return REPORT_LINES[node_type] * LINE_PX + REPORT_PAD_PX
    return 0


def footprint(node_type: str, schema: dict, values: dict | None = None) -> tuple[int, int]:
    """(width, height) a node takes in its column after a run: title bar, body and what it shows below (its report,
    the written video)."""
    width, height = node_size(node_type, schema)
    return width, TITLE_PX + height + after_run_px(node_type, schema, values)


def widget_names(schema: dict) -> list:
    """The names of a node's ``widgets_values`` entries in order (a seed's control value after the seed)."""
    names = []
    for name, _, _, options in schema["widgets"]:
        names.append(name)
        if options.get("control_after_generate"):
            names.append(f"{name}:control")
    return names


def model_entries(values: dict) -> list[dict]:
    """The frontend's missing-models list for a node: the model files among its widget values."""
    return [{"name": v, "url": MODEL_SOURCES[v][1], "directory": MODEL_SOURCES[v][0]}
            for v in values.values() if isinstance(v, str) and v in MODEL_SOURCES]


def _screen(box, scale: float, offset) -> tuple:
    return tuple((v + offset[i % 2]) * scale for i, v in enumerate(box))


def _under_minimap(box) -> bool:
    x0, y0, x1, y1 = box
    return x1 > MINIMAP[0] and y1 > MINIMAP[1] and x0 < MINIMAP[2] and y0 < MINIMAP[3]


def fit_view(boxes: list[tuple[float, float, float, float]]) -> dict:
    """``extra.ds`` (scale, offset) showing every box (x0, y0, x1, y1) inside VIEW, centred across and from the top,
    none under the minimap; screen = (graph + offset) * scale."""
    x0, y0 = min(b[0] for b in boxes), min(b[1] for b in boxes)
    x1, y1 = max(b[2] for b in boxes), max(b[3] for b in boxes)
    scale = int(min(1.0, VIEW["width"] / (x1 - x0), VIEW["height"] / (y1 - y0)) * 100) / 100
    while True:
        left = VIEW["left"] + (VIEW["width"] - (x1 - x0) * scale) / 2
        offset = [round(left / scale - x0, 1), round(VIEW["top"] / scale - y0, 1)]
        if scale <= 0.3 or not any(_under_minimap(_screen(b, scale, offset)) for b in boxes):
            return {"scale": scale, "offset": offset}
        scale = round(scale - 0.01, 2)


class Graph:
    """A workflow under construction: nodes with widget values, links by input/output name."""

    def __init__(self, schemas: dict):
        self.schemas = schemas
        self.nodes: list[dict] = []
        self.links: list[tuple] = []  # (src id, output name, dst id, input name)

    def add(self, node_type: str, column: int, title=None, **values) -> int:
        """A node at the bottom of layout column ``column`` (columns run left to right, nodes top to bottom)."""
        schema = self.schemas[node_type] if node_type in self.schemas else core_schema(node_type)
        known = {w[0] for w in schema["widgets"]}
        unknown = set(values) - known
        if unknown:
            raise KeyError(f"{node_type} has no widgets {sorted(unknown)}")
        node_id = len(self.nodes) + 1
        self.nodes.append({"id": node_id, "type": node_type, "column": column, "title": title, "values": values,
                           "schema": schema})
        return node_id

    def layout(self) -> dict[int, tuple[list, list]]:
        """{node id: (pos, size)}: columns side by side, as wide as their widest node; nodes stacked in each."""
        columns: dict[int, list] = {}
        for node in self.nodes:
            columns.setdefault(node["column"], []).append(node)
        placed, x = {}, 0
        for index in sorted(columns):
            y = 0
            for node in columns[index]:
                placed[node["id"]] = ([x, y + TITLE_PX], list(node_size(node["type"], node["schema"])))
                y += footprint(node["type"], node["schema"], self.values_of(node))[1] + ROW_GAP_PX
            x += max(footprint(n["type"], n["schema"])[0] for n in columns[index]) + COLUMN_GAP_PX
        return placed

    def boxes(self) -> list[tuple[int, int, int, int]]:
        """Each node's area on the canvas (title bar, body and report room): (x0, y0, x1, y1)."""
        placed = self.layout()
        result = []
        for node in self.nodes:
            (x, y), _ = placed[node["id"]]
            width, height = footprint(node["type"], node["schema"], self.values_of(node))
            result.append((x, y - TITLE_PX, x + width, y - TITLE_PX + height))
        return result

    @staticmethod
    def values_of(node) -> dict:
        """{widget name: value} of a node (its defaults where not set)."""
        return {name: node["values"].get(name, default) for name, _, default, _ in node["schema"]["widgets"]}

    def link(self, src: int, output: str, dst: int, input_name: str) -> None:
        self.links.append((src, output, dst, input_name))

    # --------------------------------------------------------------------------------------------- formats
    def widget_values(self, node) -> list:
        values = []
        for name, kind, default, options in node["schema"]["widgets"]:
            if kind == "UPLOAD":
                values.append(UPLOAD_VALUE)
                continue
            value = node["values"].get(name, default)
            if value is None:
                raise ValueError(f"{node['type']}.{name} needs a value")
            values.append(value)
            if options.get("control_after_generate"):
                values.append("fixed")
        return values

    def to_api(self) -> dict:
        prompt = {}
        for node in self.nodes:
            inputs = {}
            for name, kind, default, _ in node["schema"]["widgets"]:
                if kind != "UPLOAD":
                    inputs[name] = node["values"].get(name, default)
            for src, output, dst, input_name in self.links:
                if dst == node["id"]:
                    inputs[input_name] = [str(src), self._output_index(src, output)]
            prompt[str(node["id"])] = {"class_type": node["type"], "inputs": inputs,
                                       "_meta": {"title": node["title"] or node["type"]}}
        return prompt

    def _node(self, node_id):
        return self.nodes[node_id - 1]

    def _output_index(self, node_id, output):
        names = [o[0] for o in self._node(node_id)["schema"]["outputs"]]
        return names.index(output)

    def to_ui(self) -> dict:
        ui_nodes, ui_links = [], []
        slots = {}  # node id -> list of input slots
        for node in self.nodes:
            schema = node["schema"]
            entries = [{"name": n, "type": t, "link": None, **({"shape": 7} if opt else {})}
                       for n, t, opt in schema["inputs"]]
            widget_types = {w[0]: w[1] for w in schema["widgets"]}
            for _, _, dst, input_name in self.links:
                if dst == node["id"] and input_name in widget_types:
                    entries.append({"name": input_name, "type": widget_types[input_name],
                                    "widget": {"name": input_name}, "link": None})
            slots[node["id"]] = entries
        out_links = {node["id"]: [[] for _ in node["schema"]["outputs"]] for node in self.nodes}
        for link_id, (src, output, dst, input_name) in enumerate(self.links, start=1):
            o = self._output_index(src, output)
            entry = next(e for e in slots[dst] if e["name"] == input_name)
            if entry["link"] is not None:
                raise ValueError(f"input {input_name} of node {dst} linked twice")
            entry["link"] = link_id
            out_links[src][o].append(link_id)
            ui_links.append([link_id, src, o, dst, slots[dst].index(entry), entry["type"]])
        placed = self.layout()
        for order, node in enumerate(self.nodes):
            outputs = [{"name": name, "type": kind, "links": out_links[node["id"]][i] or None}
                       for i, (name, kind) in enumerate(node["schema"]["outputs"])]
            pos, size = placed[node["id"]]
            properties = {"Node name for S&R": node["type"]}
            models = model_entries({name: node["values"].get(name, default)
                                    for name, _, default, _ in node["schema"]["widgets"]})
            if models:
                properties["models"] = models
            ui = {"id": node["id"], "type": node["type"], "pos": pos, "size": size,
                  "flags": {}, "order": order, "mode": 0, "inputs": slots[node["id"]], "outputs": outputs,
                  "properties": properties, "widgets_values": self.widget_values(node)}
            if node["title"]:
                ui["title"] = node["title"]
            ui_nodes.append(ui)
        return {"last_node_id": len(self.nodes), "last_link_id": len(self.links), "nodes": ui_nodes,
                "links": ui_links, "groups": [], "config": {}, "extra": {"ds": fit_view(self.boxes())},
                "version": 0.4}


# ------------------------------------------------------------------------------------------------ workflows
# Layout columns, left to right: inputs, poses, alignment, loader, sampler, output.
INPUTS, POSES, ALIGNMENT, LOADER_COLUMN, SAMPLER_COLUMN, OUTPUT = range(6)


def _pose_front(g: Graph, *, canvas: str = "2x") -> tuple[int, int, int]:
    """Photo, driving video (read by ExtractPose one frame at a time), pose nodes and their previews (the extracted
    poses, the aligned poses over the photo: a bad alignment shows before any sampling); returns (photo, extract,
    align) ids."""
    photo = g.add("LoadImage", INPUTS, title="Photo (first frame)", image=PHOTO)
    video = g.add("LoadVideo", INPUTS, title="Driving video", file=DRIVING_VIDEO)
    extract = g.add("ExtractPose", POSES, detector=DETECTOR, pose_model=POSE_MODEL)
    g.link(video, "VIDEO", extract, "video")
    poses = g.add("PreviewImage", POSES, title="Extracted poses")
    g.link(extract, "preview", poses, "images")
    align = g.add("AlignPose", ALIGNMENT, augment_seed=0, canvas=canvas, image_outputs="first_frame")
    g.link(photo, "IMAGE", align, "photo")
    g.link(photo, "MASK", align, "photo_mask")              # a transparent photo: composited on `background`
    g.link(extract, "pose", align, "pose")
    aligned = g.add("PreviewImage", ALIGNMENT, title="Aligned poses over the photo")
    g.link(align, "preview", aligned, "images")
    return photo, extract, align


def _sampler(g: Graph, model: int, photo: int, align: int, options: dict | None = None, **values) -> int:
    """The sampler with its own (basic) widgets from ``values``; ``options``: expert settings on a SteadyDancer
    Sampler Options node in the loader's column, connected to the sampler (none: their defaults)."""
    if options is not None:
        expert = g.add("SteadyDancerSamplerOptions", LOADER_COLUMN, **options)
    sampler = g.add("SteadyDancerSampler", SAMPLER_COLUMN, **values)
    g.link(model, "model", sampler, "model")
    g.link(photo, "IMAGE", sampler, "photo")
    g.link(photo, "MASK", sampler, "photo_mask")
    g.link(align, "aligned_pose", sampler, "aligned_pose")   # compact keypoints: rendered segment by segment
    if options is not None:
        g.link(expert, "options", sampler, "options")
    return sampler


def _decode(g: Graph, model: int, sampler: int, column: int = None, **values) -> int:
    # fps 0: the driving poses' rate, carried by the latent
    decode = g.add("DecodeVideo", OUTPUT if column is None else column, **values)
    g.link(model, "model", decode, "model")
    g.link(sampler, "latent", decode, "latent")
    return decode


def _loader(g: Graph, **widgets) -> int:
    """LoadSteadyDancerModel with the shared VAE and CLIP vision files; the rest of its widgets from ``widgets``."""
    return g.add("LoadSteadyDancerModel", LOADER_COLUMN, vae_name=VAE, clip_vision_name=CLIP_VISION, **widgets)


def _decode_save(g: Graph, model: int, sampler: int, prefix: str) -> int:
    """DecodeVideo under the sampler and Save Video, which shows the video after a run, alone in the last column
    (its tall preview stays above the minimap)."""
    decode = _decode(g, model, sampler, column=SAMPLER_COLUMN)
    save = g.add("SaveVideo", OUTPUT, filename_prefix=prefix, format="auto", codec="auto")
    g.link(decode, "video", save, "video")
    return decode


def basic_dance(schemas) -> Graph:
    """Photo + driving video -> poses (with previews) -> SteadyDancer (fp8 DiT and umT5) -> mp4."""
    g = Graph(schemas)
    photo, _, align = _pose_front(g)
    model = _loader(g, dit_name=DIT_FP8, t5_name=T5_FP8, lora_name="None")
    sampler = _sampler(g, model, photo, align, prompt="A person dancing, natural motion, high quality.")
    _decode_save(g, model, sampler, "steadydancer/dance")
    return g


def long_video(schemas) -> Graph:
    """Every driving frame, in overlapping segments, streamed: the video is never held in memory; the driving audio
    is kept (ExtractPose reads the VIDEO one frame at a time and brings its audio; DecodeVideo writes the mp4 one
    segment at a time); the Quality Report reads the written file back and plots its quality over time."""
    g = Graph(schemas)
    photo, extract, align = _pose_front(g, canvas="1x")
    model = _loader(g, dit_name=DIT_FP8, t5_name=T5_FP8, lora_name="None")
    sampler = _sampler(g, model, photo, align, prompt="A person dancing, natural motion, high quality.", length=0)
    decode = _decode(g, model, sampler, output="file", filename_prefix="steadydancer/long")
    g.link(extract, "audio", decode, "audio")
    report = g.add("SteadyDancerQualityReport", LOADER_COLUMN)   # read from the written file: memory flat in the length
    for origin, output, name in ((decode, "video", "video"), (sampler, "latent", "latent"),
                                 (align, "aligned_pose", "aligned_pose"), (model, "model", "model")):
        g.link(origin, output, report, name)
    plot = g.add("PreviewImage", ALIGNMENT, title="Quality over time")
    g.link(report, "plot", plot, "images")
    return g


def low_vram_24gb(schemas) -> Graph:
    """24 GB cards: fp8 DiT and umT5, 20 blocks swapped, 4-step distill LoRA (no text CFG), 832x480."""
    g = Graph(schemas)
    photo, _, align = _pose_front(g)
    model = _loader(g, dit_name=DIT_FP8, t5_name=T5_FP8, offload="block_swap", blocks_to_swap=20,
                    lora_name=DISTILL_LORA, lora_strength=1.0)
    sampler = _sampler(g, model, photo, align, options=dict(solver="euler", shift=5.0),
                       prompt="A person dancing, natural motion, high quality.", steps=4, text_cfg=1.0, pose_cfg=1.0,
                       max_area=AREA_480P)
    _decode_save(g, model, sampler, "steadydancer/dance_24gb")
    return g


WORKFLOWS = {
    "steadydancer_basic_dance": basic_dance,
    "steadydancer_long_video": long_video,
    "steadydancer_24gb_fp8_distill": low_vram_24gb,
}


def render_all() -> dict[Path, str]:
    schemas = pack_schemas()
    files = {}
    for name, build in WORKFLOWS.items():
        graph = build(schemas)
        ui = json.dumps(graph.to_ui(), indent=2) + "\n"
        files[REPO / "workflows" / "ui" / f"{name}.json"] = ui
        files[REPO / "example_workflows" / f"{name}.json"] = ui
        files[REPO / "workflows" / "api" / f"{name}.json"] = json.dumps(graph.to_api(), indent=2) + "\n"
    return files


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report files that differ")
    args = parser.parse_args(argv)
    stale = []
    for path, text in render_all().items():
        if path.exists() and path.read_text() == text:
            continue
        stale.append(path)
        if not args.check:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    for path in stale:
        print(("out of date: " if args.check else "wrote ") + str(path.relative_to(REPO)))
    return 1 if (args.check and stale) else 0


if __name__ == "__main__":
    sys.exit(main())
