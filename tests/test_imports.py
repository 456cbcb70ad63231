"""The core packages import with no ComfyUI present and never import it."""
import ast
import subprocess
import sys

import pytest

from conftest import REPO_ROOT

HOST_MODULES = {"comfy", "folder_paths", "comfy_api", "comfy_extras", "server", "execution", "nodes"}


@pytest.mark.parametrize("package", ["steadydancer_core", "pose"])
def test_core_packages_never_import_comfyui(package):
    for path in sorted((REPO_ROOT / package).rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                assert name.split(".")[0] not in HOST_MODULES, f"{path.name} imports {name}"


def test_core_imports_without_comfyui():
    code = (
        "import sys, pkgutil, importlib\n"
        "import steadydancer_core, pose\n"
        "for pkg in (steadydancer_core, pose):\n"
        "    for m in pkgutil.iter_modules(pkg.__path__):\n"
        "        if m.name in ('cli', '__main__'):\n"
        "            continue\n"
        "        importlib.import_module(pkg.__name__ + '.' + m.name)\n"
        "assert not any(k == 'comfy' or k.startswith('comfy.') or k == 'folder_paths' for k in sys.modules)\n"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, check=True)


def test_repo_init_imports_outside_comfyui():
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "steadydancer_pack", REPO_ROOT / "__init__.py", submodule_search_locations=[str(REPO_ROOT)]
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert isinstance(module.NODE_CLASS_MAPPINGS, dict)
