"""Identity and subject consistency: CLIP vision embeddings of each frame (and of its face crop) compared by cosine
with the photo's and with the previous frame's.

The measure takes an embedding function ``embed(images) -> [N, D]`` (images: a list of float32 [h, w, 3] arrays
in [0, 1], of any sizes), so anything can stand in for CLIP; ``clip_embedder`` makes one from the pack's
``ImageEncoder`` (clip_vision_h): each image resized as Wan's CLIP preprocessing resizes it (bicubic straight to
the tower's square input), embedded as the class token of the tower's output.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

Embed = Callable[[Sequence[np.ndarray]], np.ndarray]


def cosine(a: Optional[np.ndarray], b: Optional[np.ndarray]) -> float:
    """Cosine similarity of two vectors [D] (NaN when either is missing or zero)."""
    if a is None or b is None:
        return float("nan")
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    norm = np.linalg.norm(a) * np.linalg.norm(b)
    return float(a @ b / norm) if norm > 0 else float("nan")


def clip_embedder(encoder, batch_size: int = 8) -> Embed:
    """An ``embed`` function from an ``ImageEncoder``: images -> the class token of its features, float32 [N, dim].

    Runs wherever the encoder's weights are (placing it is the caller's business)."""
    size = int(encoder.config.image_size)

    def embed(images: Sequence[np.ndarray]) -> np.ndarray:
        if not len(images):
            return np.zeros((0, int(encoder.config.dim)), np.float32)
        batch = []
        for image in images:
            t = torch.from_numpy(np.ascontiguousarray(image, np.float32)).permute(2, 0, 1)[None] * 2.0 - 1.0
            batch.append(F.interpolate(t, size=(size, size), mode="bicubic", align_corners=False))
        features = encoder.encode(torch.cat(batch), batch_size=batch_size)
        return features[:, 0].float().cpu().numpy()

    return embed


def embed_many(embed: Embed, images: Sequence[Optional[np.ndarray]]) -> list:
    """Embed the images that exist in one call; None stays None. -> list of [D] arrays or None."""
    present = [i for i, im in enumerate(images) if im is not None]
    out: list = [None] * len(images)
    if present:
        vectors = np.asarray(embed([images[i] for i in present]), np.float32)
        if vectors.ndim != 2 or vectors.shape[0] != len(present):
            raise ValueError(f"the embedding function must return [N, D] for N images, got shape {vectors.shape} "
                             f"for {len(present)} images")
        for i, v in zip(present, vectors):
            out[i] = v
    return out
