"""SteadyDancer Sampler Options: the sampler's expert settings on a node of their own (as KSamplerAdvanced or
ComfyUI-GGUF's advanced loader do), so the sampler shows what an artist changes every time.

Which option goes where is the ``level`` of its row in ``steadydancer_core.SAMPLER`` ("basic": on the sampler;
"expert": here), plus the VAE tiling rows. An unconnected options socket means every expert option at its
default.

Workflows saved before the split still run: an API prompt that sets expert options on SteadyDancerSampler itself
has them honoured (the report says so); a key the sampler does not know is refused with one line naming the fix.
(The frontend extension ``web/steadydancer_migrate.js`` moves the values of an old UI workflow onto an options node
when it is opened.)
"""
from __future__ import annotations

from ..steadydancer_core import SAMPLER, VAE_TILING, OptionTable
from .types import SAMPLER_OPTIONS_TYPE, SamplerOptions
from .widgets import widgets

CATEGORY = "SteadyDancer"
SAMPLER_NODE = "SteadyDancerSampler"
OPTIONS_NODE = "SteadyDancer Sampler Options"

BASIC = OptionTable("SteadyDancer Sampler", SAMPLER.shown("node", "basic"))
OPTIONS = OptionTable(OPTIONS_NODE, SAMPLER.shown("node", "expert") + VAE_TILING.shown("node"))


class SteadyDancerSamplerOptions:
    """The sampler's expert settings (negative prompt, guidance window, shift, solver, first frame, long-video
    segments, noise, pose resizing, step cache, VAE tiling); connect to the sampler's ``options``."""

    CATEGORY = CATEGORY
    FUNCTION = "options"
    RETURN_TYPES = (SAMPLER_OPTIONS_TYPE,)
    RETURN_NAMES = ("options",)
    OUTPUT_TOOLTIPS = ("Connect to SteadyDancer Sampler's options input.",)
    DESCRIPTION = (
        "Expert settings of SteadyDancer Sampler: negative prompt, pose guidance window, shift, solver, what frame 0 "
        "is (first_frame), long-video segments and colour correction, noise, pose resizing, step cache and VAE "
        "tiling. Without this node the sampler uses the defaults shown here."
    )

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": widgets(OPTIONS)}

    def options(self, **values):
        return (SamplerOptions(OPTIONS.check_all(values)),)


def _is_link(value) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[0], str) and isinstance(value[1], int)


def old_inputs(api_prompt, node_id, declared) -> dict:
    """{name: value} of the expert options an API prompt sets on the sampler node ``node_id`` itself (workflows
    saved before the options node existed). ComfyUI passes a node only its declared inputs, so these are read from
    the prompt. An input the sampler does not know, or an old option connected to another node, is refused with
    one line naming the fix."""
    node = api_prompt.get(str(node_id)) if isinstance(api_prompt, dict) and node_id is not None else None
    inputs = node.get("inputs") if isinstance(node, dict) else None
    if not isinstance(inputs, dict):
        return {}
    old, unknown = {}, []
    for name, value in inputs.items():
        if name in declared:
            continue
        if name not in OPTIONS:
            unknown.append(name)
        elif _is_link(value):
            raise ValueError(f"{SAMPLER_NODE}: {name} is connected to node {value[0]} on the sampler itself (a "
                             f"workflow saved before the {OPTIONS_NODE} node); connect it to {name} of a "
                             f"{OPTIONS_NODE} node instead")
        else:
            old[name] = value
    if unknown:
        raise ValueError(f"{SAMPLER_NODE} has no input {', '.join(sorted(unknown))}; remove it from the prompt "
                         f"(its expert settings are on {OPTIONS_NODE}: {', '.join(OPTIONS.names)})")
    return old


def expert_values(options: SamplerOptions | None, old: dict) -> tuple[dict, str]:
    """(the expert options to use by name, a note for the report): the options node's values, or the old inputs
    of the sampler itself (checked by their rows). Both at once is refused: one of them would be ignored."""
    if options is not None and not isinstance(options, SamplerOptions):
        raise ValueError(f"{SAMPLER_NODE}: options must come from a {OPTIONS_NODE} node, got "
                         f"{type(options).__name__}")
    if not old:
        return (dict(options.values) if options is not None else {}), ""
    if options is not None:
        raise ValueError(f"{SAMPLER_NODE}: {', '.join(sorted(old))} set on the sampler itself (an older workflow) "
                         f"and a {OPTIONS_NODE} node is connected; set them on the options node and remove them "
                         f"from the sampler")
    checked = OPTIONS.check_all(old)
    changed = [f"{name} {value}" for name, value in checked.items() if value != OPTIONS.default(name)]
    rest = len(checked) - len(changed)
    used = "; ".join(filter(None, [", ".join(changed), f"{rest} more at their defaults" if rest else ""]))
    note = (f"older workflow: the expert settings were read from the sampler's own inputs ({used}); newer workflows "
            f"set them on {OPTIONS_NODE}")
    return checked, note
