"""The code's structure: imports run one way (models <- loading <- runtime; models <- sampling; the root modules and
the nodes above them), no module imports itself through a loop, and the public API at the package roots is
complete."""
import ast
from pathlib import Path

import pytest

from conftest import REPO_ROOT

CORE = REPO_ROOT / "steadydancer_core"
# which inner layers each layer may import: sampling uses a model through sampling/model_interface.py (a Protocol),
# never runtime/ or loading/
LAYERS = {"models": set(), "loading": {"models"}, "runtime": {"models", "loading"}, "sampling": {"models"}}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO_ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> set:
    """Absolute names of the pack's modules that ``path`` imports (relative imports resolved)."""
    name = _module_name(path)
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                found.add(f"{target}.{alias.name}")
                found.add(target)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return found


def _graph() -> dict:
    files = [p for p in REPO_ROOT.joinpath("steadydancer_core").rglob("*.py")] + \
        [p for p in REPO_ROOT.joinpath("pose").rglob("*.py")]
    modules = {_module_name(p): p for p in files}
    return {name: {m for m in _imports(path) if m in modules and m != name} for name, path in modules.items()}


def test_no_import_cycles():
    graph = _graph()
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if nxt.endswith("__init__") or graph.get(nxt) is None:
                continue
            if state.get(nxt) == "open":
                loop = stack[stack.index(nxt):] + [nxt]
                pytest.fail("import cycle: " + " -> ".join(loop))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    # package roots re-export their modules; the loops that matter run between modules
    for node in sorted(n for n in graph if n not in ("steadydancer_core", "pose")):
        graph[node] = {m for m in graph[node] if m not in ("steadydancer_core", "pose")}
    for node in sorted(graph):
        if node not in state:
            visit(node)


@pytest.mark.parametrize("layer", LAYERS)
def test_layers_import_only_the_layers_below(layer):
    """A layer imports its own modules, the layers it is allowed and the pure root modules (``option.py``)."""
    allowed = LAYERS[layer] | {layer, "option"}
    for path in sorted((CORE / layer).rglob("*.py")):
        for target in _imports(path):
            parts = target.split(".")
            if parts[0] != "steadydancer_core" or len(parts) < 2:
                continue
            assert parts[1] in allowed, f"{path.relative_to(REPO_ROOT)} imports {target}: {layer}/ may not import " \
                                        f"{parts[1]}"


def test_public_api_is_complete():
    import pose
    import steadydancer_core as core

    for name in core.__all__:
        assert hasattr(core, name), name
    for name in ("load_model", "GenerationSettings", "generate", "decode", "iter_decoded", "SteadyDancerModel",
                 "DiTConfig", "VAEConfig", "T5Config", "CLIPVisionConfig", "MemoryPlan"):
        assert name in core.__all__, name
    for name in pose.__all__:
        assert hasattr(pose, name), name
    for name in ("extract", "align", "render_frames", "augment_frames"):
        assert name in pose.__all__, name


FRONT_ENDS = ["nodes", "scripts", "benchmarks", "steadydancer_core/cli.py", "steadydancer_core/cli_options.py",
              "steadydancer_core/models_folder.py", "steadydancer_core/demo.py"]
INNER = {"models", "loading", "runtime", "sampling"}


def test_front_ends_use_only_the_public_api():
    """Nodes, the CLI, the demo, scripts and benchmarks import ``steadydancer_core`` and ``pose`` at their roots (or
    the root-level modules such as ``video_io``), never the inner layers, whose layout may change."""
    paths = []
    for entry in FRONT_ENDS:
        target = REPO_ROOT / entry
        paths += sorted(target.rglob("*.py")) if target.is_dir() else [target]
    for path in paths:
        for target in _imports(path):
            parts = target.split(".")
            core = parts.index("steadydancer_core") if "steadydancer_core" in parts else None
            if core is not None and len(parts) > core + 1:
                assert parts[core + 1] not in INNER, f"{path.relative_to(REPO_ROOT)} imports {target}"
            if "pose" in parts and len(parts) > parts.index("pose") + 1 and path.parent.name != "pose":
                inner = parts[parts.index("pose") + 1]
                assert inner in pose_public(), f"{path.relative_to(REPO_ROOT)} imports {target}"


def pose_public() -> set:
    import pose

    return set(pose.__all__)
