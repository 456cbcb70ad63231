"""Writes the bundled workflows from one description: UI format (workflows/ui/, example_workflows/) and API format
(workflows/api/). ComfyUI's template browser lists ``*.json`` directly inside a pack's ``example_workflows/`` and
also ``workflows/`` (not their subfolders), so the UI copies live in ``workflows/ui/`` to be listed once. Widget order and defaults come from the nodes' own INPUT_TYPES, so the files always match the
node schemas (tests/test_workflows.py checks that too).

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
sys.path.insert(0, str(REPO / "tests"))

import comfy_standin  # noqa: E402  (tests/comfy_standin.py: a stand-in ComfyUI host)

# File names the workflows reference; steadydancer_core.tiny_kit writes tiny files under the same names.
PHOTO = "steadydancer_photo.png"
DRIVING_VIDEO = "steadydancer_dance.mp4"
DIT_FP16 = "Wan21_SteadyDancer_fp16.safetensors"
DIT_FP8 = "Wan21_SteadyDancer_fp8_e4m3fn_scaled_KJ.safetensors"
VAE = "wan_2.1_vae.safetensors"
T5_FP16 = "umt5_xxl_fp16.safetensors"
T5_FP8 = "umt5_xxl_fp8_e4m3fn_scaled.safetensors"
CLIP_VISION = "clip_vision_h.safetensors"
DISTILL_LORA = "lightx2v_I2V_14B_480p_cfg_step_distill_rank64_bf16.safetensors"
AREA_480P = 832 * 480  # pixels: the 24 GB workflow renders at 480p
DETECTOR = "yolox_l.onnx"
POSE_MODEL = "dw-ll_ucoco_384.onnx"

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}

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
}
UPLOAD_VALUE = "image"
# Node sizes as the ComfyUI 0.8 frontend lays them out (width, height); others get DEFAULT_SIZE.
NODE_SIZES = {"LoadImage": (320, 314), "LoadVideo": (320, 554), "ExtractPose": (320, 250), "AlignPose": (320, 238),
              "LoadSteadyDancerModel": (320, 290), "SteadyDancerSampler": (320, 662), "DecodeVideo": (320, 200),
              "SaveVideo": (320, 130), "GetVideoComponents": (220, 90), "CreateVideo": (270, 100)}
DEFAULT_SIZE = (320, 120)


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
                widgets.append((name, kind, options.get("default"), options))
            else:
                inputs.append((name, kind, section == "optional"))
    outputs = list(zip(getattr(cls, "RETURN_NAMES", cls.RETURN_TYPES), cls.RETURN_TYPES))
    return {"inputs": inputs, "widgets": widgets, "outputs": outputs}


def core_schema(node_type: str) -> dict:
    s = CORE_SCHEMAS[node_type]
    return {"inputs": s["inputs"], "widgets": [(n, k, None, {}) for n, k in s["widgets"]], "outputs": s["outputs"]}


class Graph:
    """A workflow under construction: nodes with widget values, links by input/output name."""

    def __init__(self, schemas: dict):
        self.schemas = schemas
        self.nodes: list[dict] = []
        self.links: list[tuple] = []  # (src id, output name, dst id, input name)

    def add(self, node_type: str, pos, title=None, **values) -> int:
        schema = self.schemas[node_type] if node_type in self.schemas else core_schema(node_type)
        known = {w[0] for w in schema["widgets"]}
        unknown = set(values) - known
        if unknown:
            raise KeyError(f"{node_type} has no widgets {sorted(unknown)}")
        node_id = len(self.nodes) + 1
        self.nodes.append({"id": node_id, "type": node_type, "pos": pos, "title": title, "values": values,
                           "schema": schema})
        return node_id

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
        for order, node in enumerate(self.nodes):
            outputs = [{"name": name, "type": kind, "links": out_links[node["id"]][i] or None}
                       for i, (name, kind) in enumerate(node["schema"]["outputs"])]
            ui = {"id": node["id"], "type": node["type"], "pos": list(node["pos"]), "size": list(NODE_SIZES.get(node["type"], DEFAULT_SIZE)),
                  "flags": {}, "order": order, "mode": 0, "inputs": slots[node["id"]], "outputs": outputs,
                  "properties": {"Node name for S&R": node["type"]}, "widgets_values": self.widget_values(node)}
            if node["title"]:
                ui["title"] = node["title"]
            ui_nodes.append(ui)
        return {"last_node_id": len(self.nodes), "last_link_id": len(self.links), "nodes": ui_nodes,
                "links": ui_links, "groups": [], "config": {}, "extra": {"ds": {"scale": 0.8, "offset": [0, 0]}},
                "version": 0.4}


# ------------------------------------------------------------------------------------------------ workflows
def _pose_front(g: Graph, *, via_images: bool) -> tuple[int, int, int]:
    """Photo, driving video and pose nodes; returns (photo, extract, align) ids."""
    photo = g.add("LoadImage", (0, 0), title="Photo (first frame)", image=PHOTO)
    video = g.add("LoadVideo", (0, 380), title="Driving video", file=DRIVING_VIDEO)
    extract = g.add("ExtractPose", (380, 380), detector=DETECTOR, pose_model=POSE_MODEL)
    if via_images:
        parts = g.add("GetVideoComponents", (380, 700))
        g.link(video, "VIDEO", parts, "video")
        g.link(parts, "images", extract, "images")
        g.link(parts, "fps", extract, "images_fps")
    else:
        g.link(video, "VIDEO", extract, "video")
    align = g.add("AlignPose", (760, 360), augment_seed=0, canvas="1x" if via_images else "2x",
                  image_outputs="first_frame")
    g.link(photo, "IMAGE", align, "photo")
    g.link(photo, "MASK", align, "photo_mask")              # a transparent photo: composited on `background`
    g.link(extract, "pose", align, "pose")
    return photo, extract, align


def _sampler(g: Graph, model: int, photo: int, align: int, **values) -> int:
    sampler = g.add("SteadyDancerSampler", (1140, 0), **values)
    g.link(model, "model", sampler, "model")
    g.link(photo, "IMAGE", sampler, "photo")
    g.link(photo, "MASK", sampler, "photo_mask")
    g.link(align, "aligned_pose", sampler, "aligned_pose")   # compact keypoints: rendered segment by segment
    return sampler


def _decode(g: Graph, model: int, sampler: int, extract: int) -> int:
    decode = g.add("DecodeVideo", (1520, 0))
    g.link(model, "model", decode, "model")
    g.link(sampler, "latent", decode, "latent")
    g.link(extract, "fps", decode, "fps")
    return decode


def _loader(g: Graph, **widgets) -> int:
    """LoadSteadyDancerModel with the shared VAE and CLIP vision files; the rest of its widgets from ``widgets``."""
    return g.add("LoadSteadyDancerModel", (760, 0), vae_name=VAE, clip_vision_name=CLIP_VISION, **widgets)


def _decode_save(g: Graph, model: int, sampler: int, extract: int, prefix: str) -> int:
    decode = _decode(g, model, sampler, extract)
    save = g.add("SaveVideo", (1900, 0), filename_prefix=prefix, format="auto", codec="auto")
    g.link(decode, "video", save, "video")
    return decode


def basic_dance(schemas) -> Graph:
    """Eight nodes: photo + driving video -> poses -> SteadyDancer -> mp4."""
    g = Graph(schemas)
    photo, extract, align = _pose_front(g, via_images=False)
    model = _loader(g, dit_name=DIT_FP16, t5_name=T5_FP16, lora_name="None")
    sampler = _sampler(g, model, photo, align, prompt="A person dancing, natural motion, high quality.")
    _decode_save(g, model, sampler, extract, "steadydancer/dance")
    return g


def long_video(schemas) -> Graph:
    """Every driving frame, generated in overlapping segments; the driving video's audio is kept."""
    g = Graph(schemas)
    photo, extract, align = _pose_front(g, via_images=True)
    model = _loader(g, dit_name=DIT_FP16, t5_name=T5_FP16, lora_name="None")
    sampler = _sampler(g, model, photo, align, prompt="A person dancing, natural motion, high quality.",
                       length=0, color_correction=1.0)
    decode = _decode(g, model, sampler, extract)
    create = g.add("CreateVideo", (1900, 0), fps=24.0)
    g.link(decode, "frames", create, "images")
    g.link(extract, "fps", create, "fps")
    parts = next(n["id"] for n in g.nodes if n["type"] == "GetVideoComponents")
    g.link(parts, "audio", create, "audio")
    save = g.add("SaveVideo", (2280, 0), filename_prefix="steadydancer/long", format="auto", codec="auto")
    g.link(create, "VIDEO", save, "video")
    return g


def low_vram_24gb(schemas) -> Graph:
    """24 GB cards: fp8 DiT and umT5, 20 blocks swapped, 4-step distill LoRA (no text CFG), 832x480."""
    g = Graph(schemas)
    photo, extract, align = _pose_front(g, via_images=False)
    model = _loader(g, dit_name=DIT_FP8, t5_name=T5_FP8, offload="block_swap", blocks_to_swap=20,
                    lora_name=DISTILL_LORA, lora_strength=1.0)
    sampler = _sampler(g, model, photo, align, prompt="A person dancing, natural motion, high quality.",
                       steps=4, text_cfg=1.0, pose_cfg=1.0, shift=5.0, solver="euler", max_area=AREA_480P)
    _decode_save(g, model, sampler, extract, "steadydancer/dance_24gb")
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
