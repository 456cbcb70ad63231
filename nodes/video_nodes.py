"""DecodeVideo: SteadyDancer latent -> IMAGE frames (and a VIDEO for the core SaveVideo node), or an mp4 written to
ComfyUI's output folder segment by segment (memory stays at one segment whatever the length).

It decodes with the SteadyDancer model's own VAE or with a ComfyUI VAE (Load VAE), segment by segment, and adds what
a plain VAE Decode of the LATENT's ``samples`` cannot: the overlaps of a long video cross-faded, each segment's colour
correction, and frame 0 = the photo pixel for pixel in ``exact`` mode."""
from __future__ import annotations

from pathlib import Path

from .. import steadydancer_core as sd
from ..steadydancer_core.safe_write import write_beside
from ..steadydancer_core.option_tables import DECODE
from . import comfy_bridge as bridge
from .types import LATENT_FPS_KEY, LATENT_RESULT_KEY, MODEL_TYPE
from .widgets import widgets

CATEGORY = "SteadyDancer"
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
        "Decodes the SteadyDancer latent to frames, with the model's VAE or a connected VAE (Load VAE, "
        "wan_2.1_vae.safetensors), and adds what ComfyUI's VAE Decode of the latent cannot: long videos' seams "
        "cross-faded and colour-matched, and frame 0 = the photo in first_frame 'exact' mode. Tiling 'auto' picks "
        "spatial tiles from the free memory; 'on' uses tile_size. Also outputs a VIDEO at fps (0 = the driving "
        "poses' rate, carried by the latent) for Save Video. output 'file' writes an H.264 mp4 to the output folder "
        "one segment at a time instead (for long videos: system RAM stays at one segment), with the optional audio "
        "muxed in. The segments of a long video that the sampler already decoded (to continue from their last "
        "frames) are read back from ComfyUI's temp folder, not decoded again (unless a VAE is connected); tiling "
        "applies to the others."
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "latent": ("LATENT", {"tooltip": "Output of SteadyDancerSampler."}),
                **widgets(DECODE, tiling={"tooltip": DECODE["tiling"].help + (
                    " With a connected VAE: 'on' uses ComfyUI's tiled decode at tile_size; 'auto' and 'off' its "
                    "plain decode (it tiles by itself when memory runs out).")}),
            },
            "optional": {
                "model": (MODEL_TYPE, {"tooltip": "The SteadyDancer model: decodes with its own VAE (when no 'vae' "
                                                  "is connected)."}),
                "vae": ("VAE", {"tooltip": "A ComfyUI VAE (Load VAE, wan_2.1_vae.safetensors): decodes with it "
                                           "instead of the model's VAE, and also decodes other Wan 2.1 latents."}),
                "audio": ("AUDIO", {"tooltip": "Audio muxed into the file when output is 'file' (the driving video's: "
                                               "ExtractPose's audio output). Ignored for 'frames'."}),
            },
            "hidden": {"unique_id": "UNIQUE_ID"},
        }

    def decode(self, model=None, latent=None, tiling=DECODE.default("tiling"), tile_size=DECODE.default("tile_size"),
               fps=DECODE.default("fps"), output=DECODE.default("output"),
               filename_prefix=DECODE.default("filename_prefix"), audio=None, vae=None, unique_id=None):
        if latent is None:
            raise ValueError("DecodeVideo needs a latent: connect SteadyDancerSampler's latent.")
        if model is None and vae is None:
            raise ValueError("DecodeVideo has nothing to decode with: connect the SteadyDancer model (its own VAE) "
                             "or a VAE (Load VAE with wan_2.1_vae.safetensors).")
        tiling, tile_size, fps, output = (DECODE[name].check(value) for name, value in
                                          (("tiling", tiling), ("tile_size", tile_size), ("fps", fps),
                                           ("output", output)))
        result = latent.get(LATENT_RESULT_KEY)
        if result is None and vae is None:
            raise ValueError("DecodeVideo needs the LATENT of a SteadyDancerSampler (this latent has no "
                             f"'{LATENT_RESULT_KEY}' entry); for other Wan 2.1 latents connect a VAE (Load VAE) "
                             "or use ComfyUI's VAE Decode.")
        fps = fps if fps > 0 else float(latent.get(LATENT_FPS_KEY) or sd.WAN_FPS)
        decoder = None
        if vae is not None:
            bridge.check_wan21_vae(vae)
            native_tile = int(tile_size) if tiling == "on" else None
            if result is None:
                return self._decode_plain(vae, latent["samples"], native_tile, fps, output, filename_prefix, audio,
                                          unique_id)
            decoder = lambda z: bridge.vae_decode(vae, sd.to_raw_latent(z[None]), native_tile)  # noqa: E731
        if output == "file":
            return self._decode_to_file(model, result, (tiling, tile_size), fps, filename_prefix, audio, unique_id,
                                        decoder)
        progress = bridge.StepProgress(1, unique_id)
        try:
            frames = sd.decode(model, result, tiling, tile_size, callback=progress, should_cancel=bridge.interrupted,
                               decoder=decoder)
        except sd.Cancelled:
            bridge.raise_if_interrupted()
            raise
        frames = frames.float().clamp(0, 1).cpu()
        return (frames, bridge.make_video(frames, fps))

    def _decode_plain(self, vae, samples, tile_size, fps, output, filename_prefix, audio, unique_id):
        """A LATENT from another sampler: ``samples`` (raw Wan 2.1 latent [B, 16, F, h, w]) decoded in one go."""
        frames = bridge.vae_decode(vae, samples, tile_size).clamp(0, 1)
        if output != "file":
            return (frames, bridge.make_video(frames, fps))
        path, file, subfolder = bridge.output_target(filename_prefix or DECODE.default("filename_prefix"),
                                                     frames.shape[2],
                                                     frames.shape[1])

        def write(tmp: Path) -> None:
            with sd.VideoWriter(tmp, fps) as writer:
                writer.write(frames)
            if audio is not None:
                mux_audio(tmp, audio)

        write_beside(Path(path), write)
        return {"result": (frames[:PREVIEW_FRAMES].clone(), bridge.video_from_file(path)),
                "ui": bridge.saved_video_ui(file, subfolder)}

    def _decode_to_file(self, model, result, tiling, fps, filename_prefix, audio, unique_id, decoder=None):
        path, file, subfolder = bridge.output_target(filename_prefix or DECODE.default("filename_prefix"),
                                                     result.width, result.height)
        total = len(result.segments)
        progress = bridge.StepProgress(total, unique_id)
        preview = []

        def write(tmp: Path) -> None:
            with sd.VideoWriter(tmp, fps) as writer:
                chunks = sd.iter_decoded(model, result, *tiling, should_cancel=bridge.interrupted, decoder=decoder)
                for i, (_, frames) in enumerate(chunks):
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
