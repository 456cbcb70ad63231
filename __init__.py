"""ComfyUI entry point of the SteadyDancer node pack.

ComfyUI imports this folder as a package and reads ``NODE_CLASS_MAPPINGS``. Outside ComfyUI (tests, the
headless CLI) this file is never needed: ``steadydancer_core`` and ``pose`` import on their own. Importing
it without ComfyUI present leaves the mappings empty instead of failing. ``WEB_DIRECTORY`` holds the frontend
extension that shows each node's report under the node.
"""
import importlib.util

NODE_CLASS_MAPPINGS = {}
NODE_DISPLAY_NAME_MAPPINGS = {}
WEB_DIRECTORY = "./web"

if __package__ and importlib.util.find_spec("folder_paths") is not None:
    from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS  # noqa: F811

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS", "WEB_DIRECTORY"]
