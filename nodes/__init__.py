"""ComfyUI nodes: the only package that imports ComfyUI modules."""
NODE_CLASS_MAPPINGS = {}
NODE_DISPLAY_NAME_MAPPINGS = {}
