"""The sampler's user-facing options, by the names the node widgets and the CLI share, -> ``GenerationSettings``.

Both front ends (the SteadyDancerSampler node and the CLI) parse their values here, so the names, defaults
(``defaults.SAMPLER``) and conversions are the same in both.
"""
from __future__ import annotations

from dataclasses import fields
from typing import Mapping

from .defaults import SAMPLER, SamplerDefaults
from .settings import GenerationSettings

SAMPLER_OPTIONS = tuple(f.name for f in fields(SamplerDefaults))


def generation_settings(values: Mapping, **extra) -> GenerationSettings:
    """``GenerationSettings`` from sampler options named as ``SamplerDefaults``' fields (missing ones take the
    defaults); ``extra``: other ``GenerationSettings`` fields (sigmas, preview, batch_passes, vae_tile)."""
    unknown = sorted(set(values) - set(SAMPLER_OPTIONS))
    if unknown:
        raise TypeError(f"unknown sampler options {unknown}; known: {', '.join(SAMPLER_OPTIONS)}")
    chosen = {name: values.get(name, getattr(SAMPLER, name)) for name in SAMPLER_OPTIONS}
    for name in SAMPLER_OPTIONS:
        if isinstance(getattr(SAMPLER, name), float) and isinstance(chosen[name], int) \
                and not isinstance(chosen[name], bool):
            chosen[name] = float(chosen[name])
    window = (chosen.pop("pose_cfg_start"), chosen.pop("pose_cfg_end"))
    return GenerationSettings(**chosen, pose_cfg_window=window, **extra)
