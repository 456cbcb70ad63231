"""DecodeVideo: SteadyDancer latent -> IMAGE frames (and a VIDEO for the core SaveVideo node), or an mp4 written to
ComfyUI's output folder segment by segment (memory stays at one segment whatever the length)."""
from __future__ import annotations

from pathlib import Path

from .. import steadydancer_core as sd
from ..steadydancer_core.safe_write import write_beside
from . import comfy_bridge as bridge
from .types import LATENT_RESULT_KEY, MODEL_TYPE

CATEGORY = "SteadyDancer"
TILING_MODES = ["auto", "off", "on"]
OUTPUT_MODES = ["frames", "file"]
PREVIEW_FRAMES = 1


class DecodeVideo:
    """Decodes the sampler's latent with the Wan VAE (segment by segment for long videos)."""

    CATEGORY = CATEGORY
    FUNCTION = "decode"
    RETURN_TYPES = ("IMAGE", "VIDEO")
    RETURN_NAMES = ("frames", "video")
    OUTPUT_TOOLTIPS = (
        "output 'frames': the whole video as one IMAGE batch, about width x height x 3 x 4 bytes of system RAM per "
        "frame (832x480: 4.8 MB a frame, 81 frames 390 MB, 1000 frames 4.8 GB). output 'file': only the first frame, "
        "as a preview.",
        "output 'frames': a VIDEO of the frames for Save Video. output 'file': a VIDEO reading the written mp4.",
    )
    OUTPUT_NODE = True
    DESCRIPTION = (
        "Decodes the SteadyDancer latent to frames. Tiling 'auto' picks spatial tiles from the free memory; 'on' "
        "uses tile_size. Also outputs a VIDEO at fps (connect ExtractPose's fps) for Save Video. output 'file' "
        "writes an H.264 mp4 to the output folder one segment at a time instead (for long videos: system RAM stays "
        "at one segment), with the optional audio muxed in. The segments of a long video that the sampler already "
        "decoded (to continue from their last frames) are read back from ComfyUI's temp folder, not decoded again; "
        "tiling applies to the others."
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
                "output": (OUTPUT_MODES, {"default": "frames", "tooltip": (
                    "frames: decode the whole video into one IMAGE batch (about width x height x 12 bytes of system "
                    "RAM per frame). file: write an H.264 mp4 to the output folder segment by segment (RAM stays at "
                    "one segment) and output only a preview frame.")}),
                "filename_prefix": ("STRING", {"default": "SteadyDancer/video", "tooltip": (
                    "File name prefix in the output folder when output is 'file' (a numbered name is picked; an "
                    "existing file is never replaced).")}),
            },
            "optional": {
                "audio": ("AUDIO", {"tooltip": "Audio muxed into the file when output is 'file' (the driving video's, "
                                               "from Get Video Components). Ignored for 'frames'."}),
            },
            "hidden": {"unique_id": "UNIQUE_ID"},
        }

    def decode(self, model, latent, tiling, tile_size, fps, output="frames", filename_prefix="SteadyDancer/video",
               audio=None, unique_id=None):

        result = latent.get(LATENT_RESULT_KEY)
        if result is None:
            raise ValueError("DecodeVideo needs the LATENT of a SteadyDancerSampler (this latent has no "
                             f"'{LATENT_RESULT_KEY}' entry); use ComfyUI's VAE Decode for other latents.")
        tile = {"auto": "auto", "off": False, "on": int(tile_size)}[tiling]
        if output == "file":
            return self._decode_to_file(model, result, tile, float(fps), filename_prefix, audio, unique_id)
        progress = bridge.StepProgress(1, unique_id)
        try:
            frames = sd.decode(model, result, tile=tile, callback=progress, should_cancel=bridge.interrupted)
        except sd.Cancelled:
            bridge.raise_if_interrupted()
            raise
        frames = frames.float().clamp(0, 1).cpu()
        return (frames, bridge.make_video(frames, float(fps)))

    def _decode_to_file(self, model, result, tile, fps, filename_prefix, audio, unique_id):
        path, file, subfolder = bridge.output_target(filename_prefix or "SteadyDancer/video",
                                                     result.width, result.height)
        total = len(result.segments)
        progress = bridge.StepProgress(total, unique_id)
        preview = []

        def write(tmp: Path) -> None:
            with sd.VideoWriter(tmp, fps) as writer:
                for i, (_, frames) in enumerate(sd.iter_decoded(model, result, tile, bridge.interrupted)):
                    frames = frames.float().clamp(0, 1).cpu()
                    if len(preview) < PREVIEW_FRAMES:
                        preview.append(frames[:PREVIEW_FRAMES - len(preview)].clone())
                    writer.write(frames)
                    del frames
                    progress(i + 1, total)
            if audio is not None:
                mux_audio(tmp, audio)

        try:
            write_beside(Path(path), write)
        except sd.Cancelled:
            bridge.raise_if_interrupted()
            raise
        import torch

        frames = torch.cat(preview) if preview else torch.zeros(1, result.height, result.width, 3)
        return {"result": (frames, bridge.video_from_file(path)), "ui": bridge.saved_video_ui(file, subfolder)}


def mux_audio(path: Path, audio: dict) -> None:
    """Rewrite the video-only mp4 at ``path`` with ``audio`` (ComfyUI AUDIO: waveform [B, C, S], sample_rate) added
    as AAC, cut to the video's length. The video packets are copied, not re-encoded."""
    import av
    import numpy as np

    waveform = audio["waveform"]
    rate = int(audio["sample_rate"])
    if waveform.dim() == 3:
        waveform = waveform[0]
    samples = waveform.detach().float().cpu().numpy()        # [C, S]
    if samples.shape[0] > 2:
        samples = samples[:2]
    layout = "stereo" if samples.shape[0] == 2 else "mono"
    muxed = path.with_name(path.stem + ".mux" + path.suffix)
    try:
        with av.open(str(path)) as src, av.open(str(muxed), mode="w") as dst:
            vin = src.streams.video[0]
            duration = float(vin.frames / vin.average_rate) if vin.frames and vin.average_rate else None
            vout = dst.add_stream_from_template(vin)
            aout = dst.add_stream("aac", rate=rate, layout=layout)
            if duration is not None:
                samples = samples[:, :int(round(duration * rate))]
            for packet in src.demux(vin):
                if packet.dts is None:
                    continue
                packet.stream = vout
                dst.mux(packet)
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples.astype(np.float32)), format="fltp",
                                               layout=layout)
            frame.sample_rate = rate
            frame.pts = 0
            for packet in aout.encode(frame):
                dst.mux(packet)
            for packet in aout.encode(None):
                dst.mux(packet)
        muxed.replace(path)
    finally:
        if muxed.exists():
            muxed.unlink()


NODE_CLASS_MAPPINGS = {"DecodeVideo": DecodeVideo}
NODE_DISPLAY_NAME_MAPPINGS = {"DecodeVideo": "SteadyDancer Decode Video"}
