"""The sampler split in two nodes (SteadyDancer Sampler: what an artist changes; SteadyDancer Sampler Options: the
expert settings), and workflows saved before the split: UI workflows are migrated by the frontend extension
(web/steadydancer_migrate.js, run here with node), API prompts that set expert options on the sampler are honoured
(or refused with one line naming the fix), under the stand-in host with the tiny kit."""
from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys
import textwrap

import pytest

from conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "tests"))

import comfy_standin  # noqa: E402

DATA = REPO_ROOT / "tests" / "data"
OLD_UI = DATA / "basic_dance_ui_before_options_node.json"
LATENT_UI = DATA / "basic_dance_ui_first_frame_latent.json"
OLD_API = DATA / "basic_dance_api_before_options_node.json"
MIGRATE_JS = REPO_ROOT / "web" / "steadydancer_migrate.js"
FAST = {"steps": 1, "max_area": 48 * 64}


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    with comfy_standin.host_with_kit(tmp_path_factory.mktemp("comfy")) as (host, nodes, _):
        host.cache = {}
        yield host, nodes


@pytest.fixture(scope="module")
def defs(env):
    """The two nodes' definitions as ComfyUI's /object_info gives them to the frontend."""
    _, nodes = env
    out = {}
    for name in ("SteadyDancerSampler", "SteadyDancerSamplerOptions"):
        spec = nodes[name].INPUT_TYPES()
        sections = {s: spec.get(s, {}) for s in ("required", "optional")}
        out[name] = json.loads(json.dumps({"name": name, "input": sections,
                                           "input_order": {s: list(v) for s, v in sections.items()}}))
    return out


def _sampler_module(nodes):
    return sys.modules[nodes["SteadyDancerSampler"].__module__]


# ------------------------------------------------------------------------------------------------- the nodes
def test_sampler_shows_the_basic_rows_and_the_options_node_the_expert_rows(env):
    _, nodes = env
    core = sys.modules[comfy_standin.PACK_NAME + ".steadydancer_core"]
    sampler = nodes["SteadyDancerSampler"].INPUT_TYPES()
    widgets = [n for n, e in sampler["required"].items() if n not in ("model", "photo")]
    assert widgets == [r.name for r in core.SAMPLER.shown("node", "basic")] + ["background"]
    assert set(widgets[:-1]) >= {"prompt", "steps", "text_cfg", "pose_cfg", "seed", "length", "max_area"}
    assert sampler["optional"]["options"][0] == "STEADYDANCER_SAMPLER_OPTIONS"
    options = nodes["SteadyDancerSamplerOptions"].INPUT_TYPES()["required"]
    assert list(options) == [r.name for r in core.SAMPLER.shown("node", "expert")] + ["tiling", "tile_size"]
    for name, (kind, opts) in options.items():
        row = core.SAMPLER[name] if name in core.SAMPLER else core.VAE_TILING[name]
        assert opts["default"] == row.default and row.help in opts["tooltip"], name


class _Stop(Exception):
    pass


def _settings_of(nodes, monkeypatch, **kwargs):
    """The GenerationSettings the sampler builds (generate is stopped before any work)."""
    module = _sampler_module(nodes)
    seen = {}

    def capture(model, photo, positive, negative, settings, **_):
        seen["settings"] = settings
        raise _Stop

    monkeypatch.setattr(module.sd, "generate", capture)
    import torch

    photo = torch.rand(1, 64, 48, 3)
    poses = torch.rand(9, 64, 48, 3)
    core = sys.modules[comfy_standin.PACK_NAME + ".steadydancer_core"]
    basic = {r.name: r.default for r in core.SAMPLER.shown("node", "basic")}
    with pytest.raises(_Stop):
        nodes["SteadyDancerSampler"]().sample(object(), photo, poses, poses, **{**basic, **kwargs})
    return seen["settings"]


def test_unconnected_options_take_the_table_defaults(env, monkeypatch):
    _, nodes = env
    core = sys.modules[comfy_standin.PACK_NAME + ".steadydancer_core"]
    settings = _settings_of(nodes, monkeypatch)
    defaults = core.GenerationSettings()
    for row in core.SAMPLER.shown("node", "expert") + core.VAE_TILING.rows:
        assert getattr(settings, row.name) == getattr(defaults, row.name), row.name
    assert settings.first_frame == "exact"


def test_options_node_values_reach_the_settings(env, monkeypatch):
    _, nodes = env
    core = sys.modules[comfy_standin.PACK_NAME + ".steadydancer_core"]
    values = {r.name: r.default for r in core.SAMPLER.shown("node", "expert") + core.VAE_TILING.rows}
    values.update(first_frame="latent", solver="euler", segment_frames=41, segment_overlap=5,
                  negative_prompt="blurry", tiling="on", tile_size=128)
    (options,) = nodes["SteadyDancerSamplerOptions"]().options(**values)
    settings = _settings_of(nodes, monkeypatch, options=options)
    for name, value in values.items():
        assert getattr(settings, name) == value, name
    with pytest.raises(ValueError, match="^solver must be one of unipc, dpm\\+\\+, euler, got 'heun'$"):
        nodes["SteadyDancerSamplerOptions"]().options(**{**values, "solver": "heun"})


# ------------------------------------------------------------------------------------------- old API prompts
def _prompt(path=OLD_API):
    prompt = json.loads(path.read_text())
    sampler = next(k for k, v in prompt.items() if v["class_type"] == "SteadyDancerSampler")
    prompt[sampler]["inputs"].update(FAST)
    return prompt, sampler


def test_old_api_prompt_with_expert_keys_on_the_sampler_runs_and_says_so(env):
    host, nodes = env
    prompt, sampler = _prompt()
    assert "segment_frames" in prompt[sampler]["inputs"] and "options" not in prompt[sampler]["inputs"]
    prompt[sampler]["inputs"]["first_frame"] = "latent"
    run = comfy_standin.run_prompt(prompt, nodes, host.cache)
    result = run["outputs"][sampler][0]["steadydancer_result"]
    assert result.first_frame == "latent", "an old key is honoured, not dropped"
    text = run["ui"][sampler]["text"][0]
    assert text.startswith("Made ") and "frame 0 = the photo through the VAE" in text.splitlines()[0]
    assert ("older workflow: the expert settings were read from the sampler's own inputs (first_frame latent; 15 "
            "more at their defaults); newer workflows set them on SteadyDancer Sampler Options") in text.splitlines()


@pytest.mark.parametrize("change, message", [
    (lambda i: i.update(pose_cfg_window=[0.1, 0.4]),
     "^SteadyDancerSampler has no input pose_cfg_window; remove it from the prompt \\(its expert settings are on "
     "SteadyDancer Sampler Options: negative_prompt, "),
    (lambda i: i.update(segment_frames=["99", 0]),
     "^SteadyDancerSampler: segment_frames is connected to node 99 on the sampler itself .*; connect it to "
     "segment_frames of a SteadyDancer Sampler Options node instead$"),
    (lambda i: i.update(options=["99", 0]),
     "^SteadyDancerSampler: .*set on the sampler itself \\(an older workflow\\) and a SteadyDancer Sampler Options "
     "node is connected; set them on the options node and remove them from the sampler$"),
    (lambda i: i.update(segment_frames=40),
     "^segment_frames must be 4n\\+1 \\(5, 9, ..., 81, ...\\), got 40$"),
])
def test_old_keys_that_cannot_be_honoured_are_refused_in_one_line(env, change, message):
    host, nodes = env
    prompt, sampler = _prompt()
    change(prompt[sampler]["inputs"])
    if prompt[sampler]["inputs"].get("options") == ["99", 0]:
        prompt["99"] = {"class_type": "SteadyDancerSamplerOptions", "inputs": {}}
        core = sys.modules[comfy_standin.PACK_NAME + ".steadydancer_core"]
        prompt["99"]["inputs"] = {r.name: r.default for r in core.SAMPLER.shown("node", "expert")
                                  + core.VAE_TILING.rows}
    if prompt[sampler]["inputs"].get("segment_frames") == ["99", 0]:
        prompt["99"] = {"class_type": "PrimitiveInt", "inputs": {}}
    with pytest.raises((ValueError, TypeError), match=message) as err:
        comfy_standin.run_prompt(prompt, {**nodes, "PrimitiveInt": _PrimitiveInt}, host.cache)
    assert "\n" not in str(err.value)


class _PrimitiveInt:
    FUNCTION = "run"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {}}

    def run(self):
        return (81,)


def test_bundled_api_workflows_carry_no_expert_key_on_the_sampler(env):
    _, nodes = env
    declared = nodes["SteadyDancerSampler"].declared_inputs()
    for path in sorted((REPO_ROOT / "workflows" / "api").glob("*.json")):
        for node in json.loads(path.read_text()).values():
            if node["class_type"] == "SteadyDancerSampler":
                assert set(node["inputs"]) <= declared, path.name


# -------------------------------------------------------------------------------------- old UI workflows (JS)
def _migrate(tmp_path, workflows: list, defs: dict) -> list:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node (JavaScript) is not installed")
    shutil.copy(MIGRATE_JS, tmp_path / MIGRATE_JS.name)
    (tmp_path / "input.json").write_text(json.dumps({"workflows": workflows, "defs": defs}))
    (tmp_path / "run.mjs").write_text(textwrap.dedent(f"""
        import {{ readFileSync }} from "node:fs";
        import {{ migrateWorkflow }} from "./{MIGRATE_JS.name}";
        const {{ workflows, defs }} = JSON.parse(readFileSync(new URL("./input.json", import.meta.url)));
        const out = workflows.map((wf) => ({{ wf, ...migrateWorkflow(wf, defs) }}));
        console.log(JSON.stringify(out));
    """))
    run = subprocess.run([node, str(tmp_path / "run.mjs")], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


def _by_name(names: list, values: list) -> dict:
    return dict(zip(names, values))


def _names(defs, node_type):
    """widgets_values names of a node type (the seed's control value after it), from its definition."""
    names = []
    for section in ("required", "optional"):
        for name, (kind, *rest) in defs[node_type]["input"][section].items():
            opts = rest[0] if rest else {}
            if isinstance(kind, list) or kind in ("INT", "FLOAT", "STRING", "BOOLEAN"):
                names.append(name)
                if opts.get("control_after_generate"):
                    names.append(name + ":control")
    return names


def test_old_ui_workflow_keeps_every_value_by_name(tmp_path, defs):
    old = json.loads(OLD_UI.read_text())
    changed = copy.deepcopy(old)
    sampler = next(n for n in changed["nodes"] if n["type"] == "SteadyDancerSampler")
    old_names = ["prompt", "steps", "text_cfg", "pose_cfg", "seed", "seed:control", "length", "max_area",
                 "negative_prompt", "pose_cfg_start", "pose_cfg_end", "shift", "solver", "first_frame",
                 "segment_frames", "segment_overlap", "color_correction", "noise", "pose_resize", "step_cache",
                 "cache_threshold", "cache_keep_first", "cache_keep_last", "cache_max_skip", "background"]
    assert len(old_names) == len(sampler["widgets_values"])
    values = _by_name(old_names, sampler["widgets_values"])
    values.update(steps=12, seed=7, background="black", negative_prompt="blurry", segment_frames=41,
                  solver="euler", first_frame="model")
    sampler["widgets_values"] = [values[n] for n in old_names]
    current = json.loads((REPO_ROOT / "workflows" / "ui" / "steadydancer_basic_dance.json").read_text())
    plain, moved, bundled = _migrate(tmp_path, [old, changed, current], defs)

    # every expert value at its default: the sampler's own values land in the right widgets, no options node
    node = next(n for n in plain["wf"]["nodes"] if n["type"] == "SteadyDancerSampler")
    got = _by_name(_names(defs, "SteadyDancerSampler"), node["widgets_values"])
    assert got["background"] == "white" and got["max_area"] == 589824 and got["seed:control"] == "fixed"
    assert plain["pairs"] == [{"sampler": node["id"], "options": None}] and len(plain["lines"]) == 1
    assert "its expert settings were at their defaults" in plain["lines"][0]

    # changed expert values: a SteadyDancer Sampler Options node with them, connected to the sampler's options
    nodes = {n["id"]: n for n in moved["wf"]["nodes"]}
    sampler = next(n for n in nodes.values() if n["type"] == "SteadyDancerSampler")
    extra = next(n for n in nodes.values() if n["type"] == "SteadyDancerSamplerOptions")
    got = _by_name(_names(defs, "SteadyDancerSampler"), sampler["widgets_values"])
    assert (got["steps"], got["seed"], got["background"]) == (12, 7, "black")
    expert = _by_name(_names(defs, "SteadyDancerSamplerOptions"), extra["widgets_values"])
    assert (expert["negative_prompt"], expert["segment_frames"], expert["solver"], expert["first_frame"]) == (
        "blurry", 41, "euler", "model")
    assert (expert["tiling"], expert["tile_size"]) == ("auto", 256), "options the old sampler lacked: defaults"
    slot = next(i for i, s in enumerate(sampler["inputs"]) if s["name"] == "options")
    link = next(link for link in moved["wf"]["links"] if link[0] == sampler["inputs"][slot]["link"])
    assert link[1:] == [extra["id"], 0, sampler["id"], slot, "STEADYDANCER_SAMPLER_OPTIONS"]
    assert extra["outputs"][0]["links"] == [link[0]]
    assert moved["wf"]["last_node_id"] == extra["id"] and moved["wf"]["last_link_id"] == link[0]
    for word in ("negative_prompt", "segment_frames 41", "solver \"euler\"", "first_frame \"model\"",
                 "SteadyDancer Sampler Options"):
        assert word in moved["lines"][0]

    # a workflow saved with the current nodes is left exactly as it is
    assert bundled["wf"] == current and bundled["lines"] == []


def test_earlier_layout_with_first_frame_latent_keeps_it_on_an_options_node(tmp_path, defs):
    (migrated,) = _migrate(tmp_path, [json.loads(LATENT_UI.read_text())], defs)
    nodes = {n["id"]: n for n in migrated["wf"]["nodes"]}
    sampler = next(n for n in nodes.values() if n["type"] == "SteadyDancerSampler")
    extra = next(n for n in nodes.values() if n["type"] == "SteadyDancerSamplerOptions")
    got = _by_name(_names(defs, "SteadyDancerSampler"), sampler["widgets_values"])
    assert (got["prompt"], got["steps"], got["seed"], got["length"], got["background"]) == (
        "A person dancing, natural motion, high quality.", 40, 106060, 81, "white")
    expert = _by_name(_names(defs, "SteadyDancerSamplerOptions"), extra["widgets_values"])
    assert expert["first_frame"] == "latent" and expert["negative_prompt"] == ""
    assert migrated["lines"] == [f"SteadyDancer Sampler #{sampler['id']} was saved with an older layout: its values "
                                 f"were kept; first_frame \"latent\" moved to a new SteadyDancer Sampler Options node "
                                 f"connected to it."]


def test_frontend_extension_migrates_before_the_graph_is_configured(tmp_path, defs):
    """web/steadydancer_workflows.js as the frontend runs it: it keeps the two node definitions, migrates the
    workflow in beforeConfigureGraph and shows one notice; a current workflow gives none."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("node (JavaScript) is not installed")
    ext = tmp_path / "extensions" / "pack"
    ext.mkdir(parents=True)
    for name in ("steadydancer_workflows.js", "steadydancer_migrate.js"):
        shutil.copy(REPO_ROOT / "web" / name, ext / name)
    (tmp_path / "scripts").mkdir()
    (tmp_path / "scripts" / "app.js").write_text(textwrap.dedent("""
        export const app = { registered: [], toasts: [], registerExtension(e) { this.registered.push(e); },
                             extensionManager: { toast: { add(t) { app.toasts.push(t); } } } };
    """))
    current = json.loads((REPO_ROOT / "workflows" / "ui" / "steadydancer_basic_dance.json").read_text())
    (tmp_path / "input.json").write_text(json.dumps({"defs": defs, "old": json.loads(LATENT_UI.read_text()),
                                                     "current": current}))
    (tmp_path / "run.mjs").write_text(textwrap.dedent("""
        import { readFileSync } from "node:fs";
        import { app } from "./scripts/app.js";
        await import("./extensions/pack/steadydancer_workflows.js");
        const { defs, old, current } = JSON.parse(readFileSync(new URL("./input.json", import.meta.url)));
        const [ext] = app.registered;
        for (const def of Object.values(defs)) await ext.beforeRegisterNodeDef(function () {}, def);
        await ext.beforeRegisterNodeDef(function () {}, { name: "KSampler" });
        globalThis.console.info = () => {};
        await ext.beforeConfigureGraph(current);
        const quiet = app.toasts.length;
        await ext.beforeConfigureGraph(old);
        console.log(JSON.stringify({ name: ext.name, quiet, toasts: app.toasts,
            types: old.nodes.map((n) => n.type) }));
    """))
    run = subprocess.run([node, str(tmp_path / "run.mjs")], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["name"] == "SteadyDancer.OlderWorkflows" and out["quiet"] == 0
    assert len(out["toasts"]) == 1 and "first_frame \"latent\"" in out["toasts"][0]["detail"]
    assert out["types"].count("SteadyDancerSamplerOptions") == 1
