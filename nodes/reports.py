"""The nodes' reports (the text shown under each node after a run, and the one log line per job phase).

Every report starts with one line an artist understands: what was (or will be) made, its size, frame rate, time
or memory, and anything adjusted and why, in the words of the widgets. The engineering detail follows on the
next lines. Pure functions of the results, so a test can read each first line.
"""
from __future__ import annotations

import logging

from .. import steadydancer_core as sd

log = logging.getLogger("steadydancer")

# what each first_frame mode guarantees (the option's help says the same at length)
FIRST_FRAME_WORDS = {
    "exact": "frame 0 = the photo, pixel for pixel",
    "latent": "frame 0 = the photo through the VAE (close, not identical)",
    "model": "frame 0 re-made by the model (official behaviour)",
}


def first_line(text: str) -> str:
    return text.split("\n", 1)[0]


def log_phase(node: str, text: str) -> None:
    """One INFO line per job phase in the server's console: the node's name and its report's first line."""
    log.info("%s: %s", node, first_line(text))


def duration_words(seconds: float) -> str:
    """"0.4 s", "12 s", "3 min 05 s", "1 h 02 min"."""
    if seconds < 10:
        return f"{seconds:.1f} s"
    total = int(round(seconds))
    if total < 60:
        return f"{total} s"
    if total < 3600:
        return f"{total // 60} min {total % 60:02d} s"
    return f"{total // 3600} h {total % 3600 // 60:02d} min"


def _plural(count: int, word: str) -> str:
    return f"{count} {word}" + ("" if count == 1 else "s")


# ----------------------------------------------------------------------------------------------------- loader
def loader_report(model, lora_lines=()) -> str:
    """"Loaded SteadyDancer fp8 + umT5 fp8 + VAE + CLIP vision on cuda:0, computing in bf16; a typical job (81
    frames at 1024x576): block_swap: 20 of 40 blocks streamed from RAM; about 19 GB of VRAM at the peak", then the
    load-time plan in detail (the sampler plans each job for its real size), fp8 matmul and one line per LoRA."""
    head = f"Loaded {sd.describe_model(model)}" + (" (precision auto)" if model.settings.precision == sd.AUTO_PRECISION
                                                    else "")
    plan = model.load_plan
    lines = []
    if plan is not None:
        head += f"; a typical job ({plan.frames} frames at {plan.width}x{plan.height}): {plan.summary()}"
        lines.append(f"memory plan for a typical job (each run is planned for its real size): {plan.explanation}")
    if model.fp8_matmul_report:
        lines.append(model.fp8_matmul_report)
    lines += [f"LoRA {line}" for line in lora_lines] or ["no LoRA"]
    return "\n".join([head, *lines])


# ---------------------------------------------------------------------------------------------------- sampler
def length_words(made: int, asked: int, available: int) -> str:
    """Why the frame count differs from the length widget ("" when it does not): the poses end earlier, or the
    count was rounded down to 4n+1."""
    wanted = asked or available
    if made == wanted:
        return ""
    if asked and asked > available:
        reason = f"length {asked}, but the driving poses have {available}"
        if made != available:
            reason += "; rounded down to 4n+1"
        return f" ({reason})"
    return f" ({wanted} rounded down to 4n+1)"


def sampler_report(result, settings, fps: float, seconds: float, available: int, notes=()) -> str:
    """"Made 81 frames at 832x480, 16 fps (5.1 s of video), in 1 segment, 40 steps, in 3 min 10 s; frame 0 = the
    photo, pixel for pixel", then what was adjusted and why, the memory plan of this job in the loader's words and
    its detail."""
    segments = len(result.segments)
    steps = settings.schedule.steps
    head = (f"Made {result.num_frames} frames{length_words(result.num_frames, settings.length, available)} at "
            f"{result.width}x{result.height}, {fps:g} fps ({result.num_frames / fps:.1f} s of video), in "
            + (_plural(segments, "segment") if segments == 1 else f"{segments} overlapping segments")
            + f", {_plural(steps, 'step')}, in {duration_words(seconds)}; {FIRST_FRAME_WORDS[result.first_frame]}")
    said = set(sd.resolve_length(settings.length, available)[1])      # the length notices: the head says them
    lines = [head, *[str(n) for n in notes if n], *[str(n) for n in result.notices if str(n) not in said]]
    plan = result.memory_plan
    if plan is not None:
        lines.append(f"memory: {plan.summary()}")
        lines.append(f"memory plan for this job: {plan.explanation}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------- poses
def extract_report(count: int, fps: float, persons: str, notes: str = "", audio: bool | None = None) -> str:
    """"Poses of 81 driving frames at 16 fps (5.1 s); a person in 79 of 81 frames", then what was adjusted (the
    frame rate resampled, frames cut) and whether the driving audio was found."""
    head = f"Poses of {count} driving frames at {fps:g} fps ({count / fps:.1f} s)" + (f"; {persons}" if persons
                                                                                     else "")
    lines = [head] + ([notes] if notes else [])
    if audio is not None:
        lines.append("driving audio: found (the audio output)" if audio else "driving audio: none in this video")
    return "\n".join(lines)


def align_report(count: int, frame_hw: tuple, preview_count: int, image_frames: int, notes: str = "") -> str:
    """"81 pose frames aligned to the photo (592x976); preview: 24 of 81, evenly spread", then what was adjusted
    in the alignment."""
    h, w = frame_hw
    shown = f"all {count}" if preview_count == count else f"{preview_count} of {count}, evenly spread"
    lines = [f"{_plural(count, 'pose frame')} aligned to the photo ({w}x{h}); preview: {shown}"]
    if image_frames == 1 and count > 1:
        lines.append("IMAGE outputs: frame 0 only (image_outputs first_frame)")
    if notes:
        lines.append(notes)
    return "\n".join(lines)
