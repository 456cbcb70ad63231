"""LoRA: read one or more LoRA files, match their keys to the model, merge or attach them.

Key styles (names resolved by ``key_names.lora_target``): ``diffusion_model.`` prefixed ``lora_A``/``lora_B``,
``lora_down``/``lora_up`` + ``alpha``, kohya ``lora_unet_blocks_N_...`` (matched against the model's module names),
diffusers ``transformer.`` prefix (diffusers Wan module names are translated), plus ``diff`` / ``diff_b`` dense
deltas (e.g. norms and biases in the lightx2v step-distill LoRAs).

Update of a layer: ``W += strength * (alpha / rank) * up @ down`` (alpha defaults to the rank). Plain
fp32/fp16/bf16 weights are merged in place (computed in fp32); ``PackedLinear`` layers holding an fp8 or GGUF weight
keep it packed and get the update as an extra low-rank path in ``forward``.
"""
from __future__ import annotations

import logging
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from .errors import WeightFileError
from .finite import check_finite
from .key_names import lora_target
from .quant_ops import LoraAdapter, PackedLinear
from .weight_files import open_state_dict

log = logging.getLogger(__name__)

_DENSE_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


@dataclass
class LoraFileReport:
    path: str
    strength: float
    matched: list[str] = field(default_factory=list)       # module names that received an update
    unmatched: list[str] = field(default_factory=list)     # file keys that fit nothing (with the reason)


@dataclass
class LoraReport:
    files: list[LoraFileReport] = field(default_factory=list)

    @property
    def matched(self) -> list[str]:
        return [f"{Path(f.path).name}: {m}" for f in self.files for m in f.matched]

    @property
    def unmatched(self) -> list[str]:
        return [f"{Path(f.path).name}: {u}" for f in self.files for u in f.unmatched]

    def summary(self) -> str:
        """One line per file: ``name: updated/total modules, strength S`` (total counts the unused keys too)."""
        lines = []
        for f in self.files:
            name = Path(f.path).name
            if f.strength == 0:
                lines.append(f"{name}: skipped, strength 0.0")
                continue
            line = f"{name}: {len(f.matched)}/{len(f.matched) + len(f.unmatched)} modules, strength {float(f.strength)}"
            if f.unmatched:
                line += f"; {len(f.unmatched)} not used, e.g. {f.unmatched[0]}"
            lines.append(line)
        return "\n".join(lines)


class DenseDeltaAdapter(nn.Module):
    """Full-rank weight delta on a packed layer: adds ``scale * x @ delta.T``."""

    def __init__(self, delta: torch.Tensor, scale: float):
        super().__init__()
        self.register_buffer("delta", delta)
        self.scale = float(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.delta.to(x.dtype)) * self.scale


def _model_dtype(model: nn.Module) -> torch.dtype:
    for p in model.parameters():
        if p.dtype in _DENSE_DTYPES:
            return p.dtype
    return torch.float32


def _group(sd, module_names: set[str], report: LoraFileReport) -> dict[str, dict[str, str]]:
    """LoRA keys -> {module name: {role: key}}; unknown keys go to the report."""
    groups: dict[str, dict[str, str]] = defaultdict(dict)
    for key in sd.keys():
        target, role = lora_target(key, module_names)
        if role is None:
            report.unmatched.append(f"{key} (unknown key type)")
        elif target is None:
            report.unmatched.append(f"{key} (no such layer in the model)")
        else:
            groups[target][role] = key
    return groups


def _apply_one(module: nn.Module, name: str, parts: dict[str, torch.Tensor], strength: float, dtype: torch.dtype,
               report: LoraFileReport) -> None:
    packed = isinstance(module, PackedLinear) and module.is_packed
    weight = None if packed else getattr(module, "weight", None)
    w_shape = (module.out_features, module.in_features) if packed else (None if weight is None else weight.shape)
    if "down" in parts or "up" in parts:
        down, up = parts.get("down"), parts.get("up")
        if down is None or up is None:
            report.unmatched.append(f"{name} (lora_up/lora_down pair incomplete)")
        else:
            rank = down.shape[0]
            alpha = float(parts["alpha"]) if "alpha" in parts else float(rank)
            scale = strength * alpha / rank
            d2, u2 = down.float().flatten(1), up.float().flatten(1)
            if w_shape is None or u2.shape[0] != w_shape[0] or d2.shape[1] != torch.Size(w_shape[1:]).numel() \
                    or u2.shape[1] != rank:
                report.unmatched.append(f"{name} (LoRA shape {tuple(up.shape)} x {tuple(down.shape)} does not fit "
                                        f"weight {tuple(w_shape) if w_shape is not None else None})")
            elif packed:
                module.loras.append(LoraAdapter(d2.to(dtype), u2.to(dtype), scale))
                report.matched.append(name)
            else:
                _merge(weight, (u2 @ d2).reshape(weight.shape) * scale)
                report.matched.append(name)
    if "diff" in parts:
        diff = parts["diff"].float()
        if w_shape is None or tuple(diff.shape) != tuple(w_shape):
            report.unmatched.append(f"{name}.diff (shape {tuple(diff.shape)} does not fit {w_shape})")
        elif packed:
            module.loras.append(DenseDeltaAdapter(diff.to(dtype), strength))
            report.matched.append(f"{name} (diff)")
        else:
            _merge(weight, diff * strength)
            report.matched.append(f"{name} (diff)")
    if "diff_b" in parts:
        bias = getattr(module, "bias", None)
        diff_b = parts["diff_b"].float()
        if bias is None or tuple(bias.shape) != tuple(diff_b.shape):
            report.unmatched.append(f"{name}.diff_b (layer has no bias of shape {tuple(diff_b.shape)})")
        else:
            _merge(bias, diff_b * strength)
            report.matched.append(f"{name} (diff_b)")


def _apply_to_parameter(param: torch.Tensor, name: str, parts: dict[str, torch.Tensor], strength: float,
                        report: LoraFileReport) -> None:
    """Bare parameters (e.g. ``blocks.N.modulation``) only take dense ``diff`` updates."""
    diff = parts.get("diff")
    if diff is None or diff.numel() != param.numel():
        report.unmatched.append(f"{name} ({sorted(parts)} cannot update a parameter of shape {tuple(param.shape)})")
        return
    _merge(param, diff.float().reshape(param.shape) * strength)
    report.matched.append(f"{name} (diff)")


@torch.no_grad()
def _merge(target: torch.Tensor, delta: torch.Tensor) -> None:
    target.copy_((target.float() + delta.to(target.device)).to(target.dtype))


def apply_loras(model: nn.Module, loras) -> LoraReport:
    """Apply ``[(path, strength), ...]`` to ``model`` in order. Returns a ``LoraReport``.

    Raises ``WeightFileError`` for unreadable files and for a file of which no key fits the model (a LoRA for a
    different model).
    """
    modules = dict(model.named_modules())
    params = {n: p for n, p in model.named_parameters() if "." in n and n.rpartition(".")[2] not in ("weight", "bias")}
    names = set(modules) | set(params)
    dtype = _model_dtype(model)
    report = LoraReport()
    for path, strength in loras:
        if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not math.isfinite(strength):
            raise ValueError(f"LoRA {path}: strength must be a finite number (e.g. 1.0), got {strength!r}")
    for path, strength in loras:
        sd = open_state_dict(path)
        file_report = LoraFileReport(str(path), float(strength))
        if float(strength) == 0.0:
            log.info("LoRA %s has strength 0: skipped", path)
            report.files.append(file_report)
            continue
        for name, roles in _group(sd, names, file_report).items():
            parts = {role: sd[key] for role, key in roles.items()}
            for role, key in roles.items():
                check_finite(parts[role], key, f"LoRA {path}")
            if name in params:
                _apply_to_parameter(params[name], name, parts, float(strength), file_report)
            else:
                _apply_one(modules[name], name, parts, float(strength), dtype, file_report)
        if not file_report.matched:
            raise WeightFileError(f"LoRA {path}: none of its {len(sd)} keys fits this model (e.g. "
                                  f"{', '.join(file_report.unmatched[:3])}). Is it a LoRA for a different model "
                                  "(Wan 2.1 14B I2V / SteadyDancer expected)?")
        if file_report.unmatched:
            log.warning("LoRA %s: %d keys not used, e.g. %s", path, len(file_report.unmatched),
                        file_report.unmatched[:5])
        report.files.append(file_report)
    invalidate = getattr(model, "invalidate_context_cache", None)     # weights changed: cached projections are stale
    if invalidate is not None:
        invalidate()
    return report
