"""DecodeVideo: SteadyDancer latent -> IMAGE frames (and a VIDEO for the core SaveVideo node)."""
from __future__ import annotations

from .. import steadydancer_core as sd
from . import comfy_bridge as bridge
from .types import LATENT_RESULT_KEY, MODEL_TYPE

CATEGORY = "SteadyDancer"
TILING_MODES = ["auto", "off", "on"]


class DecodeVideo:
    """Decodes the sampler's latent with the Wan VAE (segment by segment for long videos)."""

    CATEGORY = CATEGORY
    FUNCTION = "decode"
    RETURN_TYPES = ("IMAGE", "VIDEO")
    RETURN_NAMES = ("frames", "video")
    DESCRIPTION = (
        "Decodes the SteadyDancer latent to frames. Tiling 'auto' picks spatial tiles from the free memory; 'on' "
        "uses tile_size. Also outputs a VIDEO at fps (connect ExtractPose's fps) for Save Video."
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "model": (MODEL_TYPE,),
                "latent": ("LATENT", {"tooltip": "Output of SteadyDancerSampler."}),
                "tiling": (TILING_MODES, {"default": "auto",
                                          "tooltip": "Spatial tiling of the VAE decode (saves memory)."}),
                "tile_size": ("INT", {"default": 256, "min": 64, "max": 2048, "step": 32,
                                      "tooltip": "Tile size in pixels when tiling is 'on'."}),
                "fps": ("FLOAT", {"default": 24.0, "min": 1.0, "max": 240.0, "step": 0.01,
                                  "tooltip": "Frame rate of the VIDEO output (the driving video's, from ExtractPose)."}),
            },
            "hidden": {"unique_id": "UNIQUE_ID"},
        }

    def decode(self, model, latent, tiling, tile_size, fps, unique_id=None):

        result = latent.get(LATENT_RESULT_KEY)
        if result is None:
            raise ValueError("DecodeVideo needs the LATENT of a SteadyDancerSampler (this latent has no "
                             f"'{LATENT_RESULT_KEY}' entry); use ComfyUI's VAE Decode for other latents.")
        tile = {"auto": "auto", "off": False, "on": int(tile_size)}[tiling]
        progress = bridge.StepProgress(1, unique_id)
        try:
            frames = sd.decode(model, result, tile=tile, callback=progress, should_cancel=bridge.interrupted)
        except sd.Cancelled:
            bridge.raise_if_interrupted()
            raise
        frames = frames.float().clamp(0, 1).cpu()
        return (frames, bridge.make_video(frames, float(fps)))


NODE_CLASS_MAPPINGS = {"DecodeVideo": DecodeVideo}
NODE_DISPLAY_NAME_MAPPINGS = {"DecodeVideo": "SteadyDancer Decode Video"}
