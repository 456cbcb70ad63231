"""runtime/bundle: the offload vocabulary and the max_vram_gb validator shared by the node, the CLI and the core."""
import math

import pytest

from steadydancer_core.runtime.bundle import OFFLOAD_MODES, check_max_vram_gb, swap_setting


def test_offload_modes_map_to_the_planner():
    assert OFFLOAD_MODES == ("auto", "all_resident", "block_swap")
    assert swap_setting("auto", 7) == "auto"
    assert swap_setting("all_resident", 7) == 0
    assert swap_setting("block_swap", 7) == 7
    with pytest.raises(ValueError, match="^offload must be one of auto, all_resident, block_swap, got 'none'$"):
        swap_setting("none")
    with pytest.raises(ValueError, match="^blocks_to_swap must be an integer >= 0, got -1$"):
        swap_setting("block_swap", -1)


def test_max_vram_gb_zero_means_no_cap():
    assert check_max_vram_gb(None) is None and check_max_vram_gb(0) is None and check_max_vram_gb(0.0) is None
    assert check_max_vram_gb(6.5) == 6.5 and check_max_vram_gb(20) == 20.0
    for bad in (-1, math.nan, math.inf, "20", True):
        with pytest.raises(ValueError, match=r"^max_vram_gb must be a positive number of GB \(0 = use the free VRAM\)"):
            check_max_vram_gb(bad)
