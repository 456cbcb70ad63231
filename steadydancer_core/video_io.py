"""Read and write video files with PyAV, streaming, so memory never grows with the video's length.

Frames in the core are torch float32 ``[T, H, W, 3]`` in ``[0, 1]`` (ComfyUI's IMAGE convention). Reading yields
chunks of that shape; writing accepts chunks of that shape (or uint8 numpy ``[T, H, W, 3]``) and encodes them as
H.264 / yuv420p mp4 incrementally, so a long video can be decoded and written segment by segment.

Pose extraction reads ``iter_pose_frames``: uint8 frames one at a time, scaled while they are converted from the
decoder's YUV to at most ``POSE_DECODE_MAX_SIDE`` pixels on the long side (what the pose models can use; a 1080p
video is read as stored), so a 4K or 8K clip costs no more host memory than a 1080p one. Every reader turns the
frames upright as the file's rotation metadata says (phone clips), and picks frames by their timestamps: at
``target_fps``, or, for a variable-frame-rate file read without one, at its average rate (a constant-rate file read
without one keeps every frame). Frame rates are bounded to ``FPS_RANGE`` (the nodes' range).
"""
from __future__ import annotations

import math
import os
import warnings
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import BinaryIO, Iterator

import numpy as np
import torch

DEFAULT_CRF = 19              # visually lossless-ish x264 quality; lower is better, 0 is lossless
DEFAULT_PRESET = "medium"
DEFAULT_CHUNK_FRAMES = 16
POSE_DECODE_MAX_SIDE = 1920   # pose frames: long side at most this (1080p as stored; the detector sees 640x640)
FPS_RANGE = (0.01, 240.0)     # frame rates read and written (the nodes' fps / target_fps widgets: 0.01 steps .. 240)
VARIABLE_RATE_TOLERANCE = 0.01  # average and base rate further apart than this share: a variable-frame-rate file
DECODER_FRAME_BUDGET = 256 << 20  # bytes of decoded YUV frames the decoder threads may hold between them


class VideoReadError(ValueError):
    """A file that cannot be read as a video; the message names the file and what to do."""


class VideoWriteError(ValueError):
    """Invalid frames or settings for writing a video; the message names the problem and the fix."""


@dataclass(frozen=True)
class VideoInfo:
    """What a video file holds: coded size in pixels (before its rotation), average frame rate, (when the container
    knows it) frame count and duration, and whether its frame rate is variable (average != base rate)."""

    width: int
    height: int
    fps: float
    frames: int | None
    duration_s: float | None
    variable_rate: bool = False


def check_fps(fps, what: str = "fps") -> float:
    """A frame rate within ``FPS_RANGE`` as a float; ValueError (one line naming ``what`` and the range) otherwise."""
    low, high = FPS_RANGE
    value = float(fps) if isinstance(fps, (int, float)) and not isinstance(fps, bool) else math.nan
    if not low <= value <= high:                          # NaN fails too
        raise ValueError(f"{what} must be a frame rate from {low:g} to {high:g} frames per second, got {fps!r}; "
                         "use e.g. 24")
    return value


def _import_av():
    try:
        import av  # noqa: PLC0415  (optional at import time of the package)
    except ImportError as err:  # pragma: no cover - av is a dependency
        raise ImportError("reading and writing video needs PyAV: pip install av") from err
    return av


def _open_input(path):
    av = _import_av()
    if hasattr(path, "read") and hasattr(path, "seek"):  # an in-memory or open file (PyAV reads file-likes)
        path.seek(0)
        try:
            container = av.open(path, mode="r")
        except av.FFmpegError as err:
            raise VideoReadError(f"the driving video could not be opened ({err}). Re-encode it with ffmpeg.") from err
        if not container.streams.video:
            container.close()
            raise VideoReadError("the driving video has no video stream (audio only or not a video).")
        return container
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"video file not found: {path}. Check the path (or pass pose frames instead).")
    try:
        container = av.open(str(path), mode="r")
    except av.FFmpegError as err:
        raise VideoReadError(
            f"{path} could not be opened as a video ({err}). Use an mp4/webm/mov/mkv/gif file that plays in a "
            f"media player; re-encode it with ffmpeg if it is truncated or unusual."
        ) from err
    if not container.streams.video:
        container.close()
        raise VideoReadError(f"{path} has no video stream (audio only or not a video). Pass a video file.")
    return container


def _stream_fps(stream) -> float:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    return float(rate) if rate else 0.0


def _variable_rate(stream) -> bool:
    average, base = stream.average_rate, stream.base_rate
    return bool(average and base) and abs(float(average) - float(base)) > VARIABLE_RATE_TOLERANCE * float(base)


def probe_video(path: str | Path | BinaryIO) -> VideoInfo:
    """Size, frame rate and frame count of a video file (a path or a seekable file-like) without decoding it."""
    container = _open_input(path)
    try:
        stream = container.streams.video[0]
        frames = int(stream.frames) if stream.frames else None
        duration = None
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / 1_000_000
        fps = _stream_fps(stream)
        if frames is None and duration and fps:
            frames = int(round(duration * fps))
        return VideoInfo(stream.codec_context.width, stream.codec_context.height, fps, frames, duration,
                         _variable_rate(stream))
    finally:
        container.close()


def read_audio(path: str | Path | BinaryIO, max_seconds: float | None = None):
    """The first audio stream of a video file as (samples float32 [channels, S] in -1..1, sample rate), or None when
    it has none; only the audio packets are decoded (no video frame), at most ``max_seconds`` of them."""
    av = _import_av()
    container = _open_input(path)
    try:
        if not container.streams.audio:
            return None
        stream = container.streams.audio[0]
        resampler = av.AudioResampler(format="fltp")
        chunks, rate, count = [], None, 0
        for frame in container.decode(stream):
            for planar in resampler.resample(frame):
                rate = rate or planar.sample_rate
                chunks.append(planar.to_ndarray())
                count += chunks[-1].shape[-1]
            if max_seconds is not None and rate and count >= max_seconds * rate:
                break
        if not chunks:
            return None
        samples = np.concatenate(chunks, axis=-1).astype(np.float32, copy=False)
        if max_seconds is not None:
            samples = samples[:, :int(round(max_seconds * rate))]
        return samples, int(rate)
    finally:
        container.close()


def is_still_image(path: str | Path) -> bool:
    """Whether ``path`` is a single still image (png, jpg, webp, bmp ...) rather than a video or an animation."""
    container = _open_input(path)
    try:
        return container.format.name == "image2" or container.format.name.endswith("_pipe")
    finally:
        container.close()


def resample_indices(source_fps: float, target_fps: float) -> Iterator[tuple[int, int]]:
    """Endless ``(source_index, output_index)`` pairs: the source frame on screen at each output frame's time.

    Output frame ``j`` (at ``j / target_fps`` s) shows source frame ``floor(j * source_fps / target_fps)``; a
    source frame may be used zero times (downsampling) or several times (upsampling).
    """
    if source_fps <= 0 or target_fps <= 0:
        raise ValueError(f"frame rates must be positive, got source {source_fps} and target {target_fps}")
    ratio = source_fps / target_fps
    j = 0
    while True:
        yield int(math.floor(j * ratio + 1e-9)), j
        j += 1


MAX_FRAME_GAP_S = 5.0         # a frame shown longer than this (a timestamp jump) counts as shown this long


def _decoder_threads(stream) -> int:
    """Decoder threads: as many as the CPU has, but no more than ``DECODER_FRAME_BUDGET`` of frames in flight
    (each frame thread holds about two decoded frames: measured ~95 MB per thread at 8K)."""
    ctx = stream.codec_context
    frame_bytes = max(1, int(ctx.width or 0) * int(ctx.height or 0) * 3 // 2)      # YUV 4:2:0
    return max(1, min(os.cpu_count() or 1, DECODER_FRAME_BUDGET // (2 * frame_bytes)))


def _timed(frames, time_base, fallback_s: float) -> Iterator[tuple[object, float, float]]:
    """(frame, start, duration) in seconds from the first frame: timestamps made monotonic, a missing one taken as
    one ``fallback_s`` after the previous frame, gaps above ``MAX_FRAME_GAP_S`` shortened to it."""
    base = float(time_base) if time_base else 0.0
    origin = previous = None
    for frame in frames:
        stamp = float(frame.pts) * base if frame.pts is not None and base else None
        if previous is None:
            origin = stamp if stamp is not None else 0.0
            start = 0.0
        elif stamp is None:
            start = previous + fallback_s
        else:
            start = stamp - origin
            if start - previous > MAX_FRAME_GAP_S:
                origin += start - previous - MAX_FRAME_GAP_S
                start = previous + MAX_FRAME_GAP_S
            start = max(start, previous)
        duration = float(frame.duration) * base if getattr(frame, "duration", None) and base else fallback_s
        previous = start
        yield frame, start, min(max(duration, 0.0) or fallback_s, MAX_FRAME_GAP_S)


def pick_by_time(timed, rate: float, tolerance_s: float) -> Iterator[tuple[object, int]]:
    """(item, times shown) for ``timed`` (item, start s, duration s) resampled to ``rate``: output frame ``j`` (at
    ``j / rate`` s) shows the latest item starting at or before it (``tolerance_s`` absorbs timestamp rounding);
    the last item is shown until its start + duration. For evenly spaced items this is ``resample_indices``."""
    shown = 0
    held = None
    for item, start, duration in timed:
        if held is not None:
            count = 0
            while (shown + count) / rate < start - tolerance_s:
                count += 1
            shown += count
            yield held[0], count
        held = (item, start + duration)
    if held is not None:
        count = 0
        while (shown + count) / rate < held[1] - tolerance_s:
            count += 1
        yield held[0], count


def _upright(array: np.ndarray, rotation) -> np.ndarray:
    """The frame turned as the file's display matrix says (``rotation``: degrees counter-clockwise, PyAV's
    ``VideoFrame.rotation``), to the nearest quarter turn."""
    turns = int(round(float(rotation or 0) / 90.0)) % 4
    return array if turns == 0 else np.ascontiguousarray(np.rot90(array, turns))


def _rgb(frame, max_side: int | None) -> np.ndarray:
    """uint8 [H, W, 3] of a decoded frame, scaled while converted from YUV so the long side is at most
    ``max_side`` (None: as stored), then turned upright."""
    width, height = frame.width, frame.height
    if max_side is None or max(width, height) <= max_side:
        rgb = frame.to_ndarray(format="rgb24")
    else:
        scale = max_side / max(width, height)
        rgb = frame.to_ndarray(width=max(1, round(width * scale)), height=max(1, round(height * scale)),
                               format="rgb24", interpolation="AREA")
    return _upright(rgb, getattr(frame, "rotation", 0))


def iter_frames(
    path: str | Path | BinaryIO,
    max_frames: int | None = None,
    target_fps: float | None = None,
    max_side: int | None = None,
) -> Iterator[np.ndarray]:
    """Decoded frames of ``path`` (a path or a seekable file-like) one at a time: uint8 ``[H, W, 3]``, upright, long
    side at most ``max_side`` (None: as stored).

    ``target_fps`` picks frames by timestamp at that rate (within ``FPS_RANGE``; None keeps every frame, except that
    a variable-frame-rate file is picked at its average rate); ``max_frames`` stops after that many frames. One
    decoded frame is held at a time (a repeated frame is the same array).
    """
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"max_frames must be >= 1 or None, got {max_frames}")
    rate = None if target_fps is None else check_fps(target_fps, "target_fps")
    av = _import_av()
    container = _open_input(path)
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        stream.codec_context.thread_count = _decoder_threads(stream)
        source_fps = _stream_fps(stream)
        if rate is not None and source_fps <= 0:
            raise VideoReadError(f"{path} does not state its frame rate; read it without target_fps.")
        if rate is None and _variable_rate(stream):
            rate = source_fps
        emitted = 0
        try:
            frames = container.decode(stream)
            if rate is None:
                picked = ((frame, 1) for frame in frames)
            else:
                tolerance = min(0.5 * float(stream.time_base or 0) or 1e-6, 0.25 / rate)
                picked = pick_by_time(_timed(frames, stream.time_base, 1.0 / (source_fps or rate)), rate, tolerance)
            for frame, count in picked:
                if count == 0:
                    continue
                rgb = _rgb(frame, max_side)
                for _ in range(count):
                    yield rgb
                    emitted += 1
                    if max_frames is not None and emitted >= max_frames:
                        return
        except av.FFmpegError as err:
            raise VideoReadError(
                f"{path} is damaged after {emitted} frames ({err}). Re-encode it with ffmpeg or trim it."
            ) from err
        if emitted == 0:
            raise VideoReadError(f"{path} contains no decodable frames. Pass a video with at least one frame.")
    finally:
        container.close()


def iter_pose_frames(path: str | Path | BinaryIO, max_frames: int | None = None, target_fps: float | None = None,
                     max_side: int = POSE_DECODE_MAX_SIDE) -> Iterator[np.ndarray]:
    """The frames pose extraction reads: ``iter_frames`` with the long side at most ``POSE_DECODE_MAX_SIDE``."""
    return iter_frames(path, max_frames=max_frames, target_fps=target_fps, max_side=max_side)


def iter_video_frames(
    path: str | Path | BinaryIO,
    chunk_frames: int = DEFAULT_CHUNK_FRAMES,
    max_frames: int | None = None,
    target_fps: float | None = None,
) -> Iterator[torch.Tensor]:
    """Decode ``path`` (a path or a seekable file-like) as float32 chunks ``[t, H, W, 3]`` in ``[0, 1]`` (``t <= chunk_frames``), streaming.

    ``target_fps`` resamples to that rate by timestamp (``None`` keeps every frame, see ``iter_frames``);
    ``max_frames`` stops after that many output frames. Only one chunk is held in memory at a time.
    """
    if chunk_frames < 1:
        raise ValueError(f"chunk_frames must be >= 1, got {chunk_frames}")
    buffer: list[np.ndarray] = []
    for rgb in iter_frames(path, max_frames=max_frames, target_fps=target_fps):
        buffer.append(rgb)
        if len(buffer) == chunk_frames:
            yield _to_float_frames(buffer)
            buffer = []
    if buffer:
        yield _to_float_frames(buffer)


def read_video(
    path: str | Path, max_frames: int | None = None, target_fps: float | None = None
) -> tuple[torch.Tensor, float]:
    """Whole video as float32 ``[T, H, W, 3]`` in ``[0, 1]`` plus its frame rate (``target_fps`` if given)."""
    chunks = list(iter_video_frames(path, max_frames=max_frames, target_fps=target_fps))
    fps = float(target_fps) if target_fps is not None else probe_video(path).fps
    return torch.cat(chunks, dim=0), fps


def _to_float_frames(frames: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack(frames)).to(torch.float32).div_(255.0)


def frames_to_uint8(frames: torch.Tensor | np.ndarray) -> np.ndarray:
    """``[T, H, W, 3]`` float in ``[0, 1]`` (torch or numpy) or uint8 -> contiguous uint8 numpy ``[T, H, W, 3]``."""
    if isinstance(frames, torch.Tensor):
        frames = frames.detach().to("cpu")
        if frames.dtype == torch.uint8:
            array = frames.numpy()
        else:
            array = frames.float().clamp(0.0, 1.0).mul(255.0).round().to(torch.uint8).numpy()
    else:
        array = np.asarray(frames)
        if array.dtype != np.uint8:
            array = (np.clip(array.astype(np.float32), 0.0, 1.0) * 255.0).round().astype(np.uint8)
    if array.ndim == 3:
        array = array[None]
    if array.ndim != 4 or array.shape[-1] != 3:
        raise VideoWriteError(f"frames must be [T, H, W, 3] RGB, got shape {tuple(array.shape)}")
    return np.ascontiguousarray(array)


class VideoWriter:
    """Incremental H.264 (yuv420p) mp4 writer: ``with VideoWriter(path, fps) as w: w.write(chunk)``.

    The size is taken from the first chunk; later chunks must match it. yuv420p needs even sizes: an odd width or
    height is padded by repeating the last column/row, with a warning that says so.
    """

    def __init__(self, path: str | Path, fps: float, crf: int = DEFAULT_CRF, preset: str = DEFAULT_PRESET):
        try:
            fps = check_fps(fps)
        except ValueError as err:
            raise VideoWriteError(str(err)) from None
        if not 0 <= int(crf) <= 51:
            raise VideoWriteError(f"crf must be in 0..51 (lower = better quality), got {crf}")
        self.path = Path(path)
        self.fps = float(fps)
        self.crf = int(crf)
        self.preset = preset
        self.frames_written = 0
        self._container = None
        self._stream = None
        self._size: tuple[int, int] | None = None     # (height, width) of the input frames
        self._pad = (0, 0)

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(flush=exc_type is None)

    def _open(self, height: int, width: int) -> None:
        av = _import_av()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._pad = (height % 2, width % 2)
        if any(self._pad):
            warnings.warn(
                f"video size {width}x{height} is odd; yuv420p needs even sizes, so the frames are padded to "
                f"{width + self._pad[1]}x{height + self._pad[0]} by repeating the last column/row",
                stacklevel=3,
            )
        self._container = av.open(str(self.path), mode="w")
        rate = Fraction(self.fps).limit_denominator(1001)
        self._stream = self._container.add_stream("libx264", rate=rate)
        self._stream.width = width + self._pad[1]
        self._stream.height = height + self._pad[0]
        self._stream.pix_fmt = "yuv420p"
        self._stream.options = {"crf": str(self.crf), "preset": self.preset}
        self._size = (height, width)

    def write(self, frames: torch.Tensor | np.ndarray) -> None:
        """Encode ``[T, H, W, 3]`` frames (float in ``[0, 1]`` or uint8) and append them to the file."""
        array = frames_to_uint8(frames)
        height, width = array.shape[1:3]
        if self._container is None:
            self._open(height, width)
        elif (height, width) != self._size:
            raise VideoWriteError(
                f"frame size changed from {self._size[1]}x{self._size[0]} to {width}x{height}; all frames of a "
                f"video must have one size (resize them first)."
            )
        if any(self._pad):
            array = np.pad(array, ((0, 0), (0, self._pad[0]), (0, self._pad[1]), (0, 0)), mode="edge")
        av = _import_av()
        for image in array:
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            for packet in self._stream.encode(frame):
                self._container.mux(packet)
            self.frames_written += 1

    def close(self, flush: bool = True) -> None:
        """Flush the encoder and close the file (idempotent). ``flush=False`` only closes (after an error)."""
        if self._container is None:
            return
        try:
            if flush:
                for packet in self._stream.encode(None):
                    self._container.mux(packet)
        finally:
            self._container.close()
            self._container = None
            self._stream = None


def write_video(path: str | Path, frames: torch.Tensor | np.ndarray, fps: float, crf: int = DEFAULT_CRF) -> Path:
    """Write all ``[T, H, W, 3]`` frames to an H.264 mp4 at ``path`` and return the path."""
    with VideoWriter(path, fps, crf=crf) as writer:
        writer.write(frames)
    return Path(path)
