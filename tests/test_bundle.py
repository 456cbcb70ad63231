"""runtime/options: the loader's settings (validated by the LOADER rows) and the files one load reads."""
import math

import pytest

from steadydancer_core import LOADER, LoaderSettings, ModelFiles, OptionError
from steadydancer_core.runtime.options import OFFLOAD_MODES


def test_offload_modes_map_to_the_planner():
    assert OFFLOAD_MODES == ("auto", "all_resident", "block_swap")
    assert LoaderSettings(offload="auto", blocks_to_swap=7).swap == "auto"
    assert LoaderSettings(offload="all_resident", blocks_to_swap=7).swap == 0
    assert LoaderSettings(offload="block_swap", blocks_to_swap=7).swap == 7
    with pytest.raises(OptionError, match="^offload must be one of auto, all_resident, block_swap, got 'none'$"):
        LoaderSettings(offload="none")
    with pytest.raises(OptionError, match="^blocks_to_swap must be an integer from 0 to 64, got -1$"):
        LoaderSettings(offload="block_swap", blocks_to_swap=-1)


def test_max_vram_gb_zero_means_no_cap():
    assert LoaderSettings().vram_cap_gb is None and LoaderSettings(max_vram_gb=0).vram_cap_gb is None
    assert LoaderSettings(max_vram_gb=6.5).vram_cap_gb == 6.5 and LoaderSettings(max_vram_gb=20).vram_cap_gb == 20.0
    for bad in (-1, math.nan, math.inf, True, 2000):
        with pytest.raises(OptionError, match=r"^max_vram_gb must be a number from 0 to 1024"):
            LoaderSettings(max_vram_gb=bad)


def test_loader_settings_are_the_table():
    assert LoaderSettings.option_fields() == LOADER.names
    assert {name: getattr(LoaderSettings(), name) for name in LOADER.names} == LOADER.defaults()


def test_model_files_check_their_entries():
    files = ModelFiles("d.safetensors", "v.safetensors", "t.safetensors", "c.safetensors",
                       loras=[("l.safetensors", 1)])
    assert files.loras == (("l.safetensors", 1.0),) and files.tokenizer is None
    with pytest.raises(OptionError, match="lora_strength must be a number from -10 to 10"):
        ModelFiles("d", "v", "t", "c", loras=[("l.safetensors", math.nan)])
    with pytest.raises(ValueError, match="loras must be \\(path, strength\\) pairs"):
        ModelFiles("d", "v", "t", "c", loras=["l.safetensors"])
    with pytest.raises(ValueError, match="vae must be a file path"):
        ModelFiles("d", None, "t", "c")
