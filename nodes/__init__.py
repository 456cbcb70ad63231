"""ComfyUI nodes: the only package that imports ComfyUI modules.

Importing it registers the model folders (``models/steadydancer``, ``models/dwpose``) with ComfyUI's
``folder_paths``; the pack's ``__init__.py`` imports it only when ComfyUI is present.
"""
from . import comfy_bridge, model_nodes, multi_gpu_nodes, pose_nodes, quality_nodes, sampler_nodes, video_nodes

comfy_bridge.register_model_folders()

NODE_CLASS_MAPPINGS = {}
NODE_DISPLAY_NAME_MAPPINGS = {}
for _module in (model_nodes, multi_gpu_nodes, pose_nodes, sampler_nodes, video_nodes, quality_nodes):
    NODE_CLASS_MAPPINGS.update(_module.NODE_CLASS_MAPPINGS)
    NODE_DISPLAY_NAME_MAPPINGS.update(_module.NODE_DISPLAY_NAME_MAPPINGS)
del _module
