"""The pure parts of parallel generation: degrees and their validation, the rank layout, the pass assignment and
its arithmetic, each rank's share in the memory plan."""
import pytest
import torch

from steadydancer_core.models.dit_config import DiTConfig
from steadydancer_core.models.sequence_parallel import chunk_size, valid_sequence_degrees
from steadydancer_core.runtime.memory_plan import GIB, JobShape, ModelSizes, OffloadRequest, RankShare, plan_memory
from steadydancer_core.runtime.parallel import ParallelConfig, init_parallel, rank_layout
from steadydancer_core.runtime.sizes import dit_activation_bytes
from steadydancer_core.sampling.guidance import COND, UNCOND_CONDITION, UNCOND_TEXT, Guidance
from steadydancer_core.sampling.guidance_parallel import busiest_group_passes, job_passes, pass_owners
from steadydancer_core.sampling.settings import GenerationSettings


def test_valid_sequence_degrees_divide_the_heads():
    assert valid_sequence_degrees(40) == (2, 4, 5, 8)
    assert valid_sequence_degrees(12) == (2, 3, 4, 6)
    assert valid_sequence_degrees(7) == (7,)


@pytest.mark.parametrize("bad", [3, 6, 7, 10, 16])
def test_a_degree_that_does_not_divide_the_heads_is_refused_naming_the_valid_ones(bad):
    with pytest.raises(ValueError, match=f"degree {bad} must divide the DiT's 40 attention heads .*valid degrees: "
                                         "2, 4, 5, 8"):
        ParallelConfig(sequence=bad)


def test_config_validation():
    assert ParallelConfig().world_size == 1
    assert ParallelConfig(sequence=4, guidance=2).world_size == 8
    with pytest.raises(ValueError, match="guidance-parallel degree must be 1, 2 or 3"):
        ParallelConfig(guidance=4)
    with pytest.raises(ValueError, match="set sequence to 2 or more"):
        ParallelConfig(shard_blocks=True)
    with pytest.raises(ValueError, match="sequence must be an integer >= 1"):
        ParallelConfig(sequence=0)
    with pytest.raises(ValueError, match="guidance must be an integer >= 1"):
        ParallelConfig(guidance=True)
    with pytest.raises(ValueError, match="divide the DiT's 4 attention heads .*valid degrees: 2, 4"):
        ParallelConfig(sequence=8).for_heads(4)
    assert ParallelConfig(sequence=2, guidance=3).describe() == "3 guidance groups x 2 sequence ranks"


def test_rank_layout_keeps_a_sequence_group_on_consecutive_ranks():
    config = ParallelConfig(sequence=4, guidance=2)
    layout = rank_layout(config, 6)
    assert (layout.guidance_group, layout.sequence_rank) == (1, 2)
    assert layout.sequence_ranks == (4, 5, 6, 7)
    assert layout.guidance_peers == (2, 6)
    with pytest.raises(ValueError, match="outside the 8 ranks"):
        rank_layout(config, 8)


def test_init_parallel_needs_torch_distributed_first():
    with pytest.raises(RuntimeError, match="torchrun"):
        init_parallel(ParallelConfig(sequence=2))


def test_chunks_cover_the_sequence_with_padding_at_the_end():
    assert chunk_size(45, 4) == 12 and chunk_size(48, 4) == 12 and chunk_size(5, 8) == 1


def test_passes_go_round_robin_and_stay_with_their_group():
    g = Guidance(text_cfg=5.0, pose_cfg=1.0, pose_cfg_start=0.1, pose_cfg_end=0.4)
    assert job_passes(g, 40) == (COND, UNCOND_TEXT, UNCOND_CONDITION)
    assert pass_owners(job_passes(g, 40), 2) == {COND: 0, UNCOND_TEXT: 1, UNCOND_CONDITION: 0}
    no_text = Guidance(text_cfg=1.0, pose_cfg=1.0, pose_cfg_start=0.0, pose_cfg_end=1.0)
    assert pass_owners(job_passes(no_text, 10), 2) == {COND: 0, UNCOND_CONDITION: 1}


def test_guidance_pass_arithmetic_at_the_defaults():
    """40 steps, pose CFG while 0.1 < step/40 < 0.4 (11 steps): 91 passes; the busiest of 2 groups runs 51, of 3
    runs 40."""
    g = GenerationSettings().guidance                # the defaults
    assert busiest_group_passes(g, 40, 1) == 91
    assert busiest_group_passes(g, 40, 2) == 51
    assert busiest_group_passes(g, 40, 3) == 40


def test_rank_share_explains_the_layout():
    assert RankShare(sequence=4, guidance=2).describe(3) == (
        "2 guidance groups x 4 sequence ranks: each rank holds a full replica, 1/4 of the tokens, up to 2 of 3 "
        "passes per step")
    assert RankShare(sequence=2, guidance=3, shard_blocks=True).describe(3) == (
        "3 guidance groups x 2 sequence ranks: each rank holds 1/2 of each DiT block (FSDP2), 1/2 of the tokens, "
        "1 of 3 passes per step")
    assert RankShare(sequence=1, guidance=2).describe(2) == (
        "2 guidance groups x 1 sequence rank: each rank holds a full replica, all tokens, 1 of 2 passes per step")
    assert not RankShare().parallel


def _sizes():
    config = DiTConfig()
    return ModelSizes(block_bytes=int(0.7 * GIB), n_blocks=40, other_bytes=int(1.5 * GIB), dtype=torch.bfloat16,
                      dit_config=config)


def test_each_rank_plans_its_share_of_tokens_and_passes():
    sizes, job = _sizes(), JobShape(832, 480, 81, guidance_passes=3)
    request = OffloadRequest(batch_passes=True)
    alone = plan_memory(80 * GIB, sizes, job, request)
    share = RankShare(sequence=4, guidance=2)
    rank = plan_memory(80 * GIB, sizes, job, request, share=share)
    assert rank.explanation.startswith("2 guidance groups x 4 sequence ranks: each rank holds a full replica, 1/4 "
                                       "of the tokens, up to 2 of 3 passes per step; ")
    assert "2 guidance passes batched" in rank.explanation
    assert rank.weight_bytes == alone.weight_bytes                 # a full replica on every rank
    assert rank.activation_bytes < alone.activation_bytes / 2       # 2 of 3 passes, 1/4 of the tokens (+ exchange)
    one_rank = dit_activation_bytes(sizes.config, 832, 480, 81, torch.bfloat16, 2, sequence=4)
    assert rank.activation_bytes == one_rank
    assert plan_memory(80 * GIB, sizes, job, request, share=RankShare()).explanation == alone.explanation


def test_sharded_blocks_hold_their_share_and_are_never_swapped():
    sizes, job = _sizes(), JobShape(832, 480, 81, guidance_passes=2)
    share = RankShare(sequence=4, shard_blocks=True)
    plan = plan_memory(16 * GIB, sizes, job, OffloadRequest(blocks_to_swap=10), share=share)
    assert plan.blocks_to_swap == 0
    assert plan.weight_bytes == int(1.5 * GIB) + 2 * int(0.7 * GIB) + 40 * -(-int(0.7 * GIB) // 4)
    assert "blocks_to_swap 10 not used: sharded blocks are not swapped" in plan.explanation
    replica = plan_memory(16 * GIB, sizes, job, OffloadRequest(), share=RankShare(sequence=4))
    assert replica.blocks_to_swap > 0 and plan.fits


def test_sequence_parallel_activation_estimate_counts_the_exchange_and_the_whole_sequence():
    config = DiTConfig()
    alone = dit_activation_bytes(config, 832, 480, 81, torch.bfloat16)
    assert dit_activation_bytes(config, 832, 480, 81, torch.bfloat16, sequence=1) == alone
    halves = dit_activation_bytes(config, 832, 480, 81, torch.bfloat16, sequence=2)
    assert alone / 2 < halves < alone
