"""A cheap RGB preview of a Wan 2.1 latent (linear projection of the 16 channels), for step previews.
"""
from __future__ import annotations

import torch

# Wan 2.1 latent -> RGB preview projection ([16][3] and bias), in normalised-latent space.
WAN21_LATENT_RGB_FACTORS = (
    (-0.1299, -0.1692, 0.2932), (0.0671, 0.0406, 0.0442), (0.3568, 0.2548, 0.1747), (0.0372, 0.2344, 0.1420),
    (0.0313, 0.0189, -0.0328), (0.0296, -0.0956, -0.0665), (-0.3477, -0.4059, -0.2925), (0.0166, 0.1902, 0.1975),
    (-0.0412, 0.0267, -0.1364), (-0.1293, 0.0740, 0.1636), (0.0680, 0.3019, 0.1128), (0.0032, 0.0581, 0.0639),
    (-0.1251, 0.0927, 0.1699), (0.0060, -0.0633, 0.0005), (0.3477, 0.2275, 0.2950), (0.1984, 0.0913, 0.1861),
)


WAN21_LATENT_RGB_BIAS = (-0.1835, -0.0868, -0.3360)


def latent_to_rgb(latent: torch.Tensor) -> torch.Tensor:
    """Cheap preview: normalised latent [16, F, h, w] -> [F, h, w, 3] in [0, 1] (Wan 2.1 latent_rgb_factors)."""
    factors = torch.tensor(WAN21_LATENT_RGB_FACTORS, dtype=torch.float32, device=latent.device)
    bias = torch.tensor(WAN21_LATENT_RGB_BIAS, dtype=torch.float32, device=latent.device)
    rgb = torch.einsum("cfhw,cr->fhwr", latent.float(), factors) + bias
    return rgb.add(1.0).div(2.0).clamp(0.0, 1.0)
