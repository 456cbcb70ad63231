"""Parallel generation on CPU: spawned gloo ranks (2, 3 and 4) running the tiny model give the single-process result.

Layouts are written ``kind:SxG`` (S sequence ranks x G guidance groups). Each world size is spawned once (module
fixtures); the ranks run their scenarios in order and the tests below read what each rank recorded
(``parallel_workers.py``). Sequence parallelism changes the size of every matrix product (a rank's chunk instead
of the whole sequence), so its results are held to 1e-6 relative L2; guidance parallelism runs exactly the
single-process forwards, so its latents must be bit-identical.
"""
import pytest
import torch

import parallel_workers as pw

from steadydancer_core.models.sequence_parallel import chunk_size

TWO = ["forward:2x1", "generate:2x1", "generate:1x2", "cached:1x2", "wrong_exchange:2x1", "sharded:2x1",
       "cancel:1x2", "mismatch:4x1", "fail:2x1"]
THREE = ["generate:1x3"]
FOUR = ["forward:4x1", "generate:4x1", "generate:2x2", "cached:2x2", "fail:2x2"]


def rel_l2(a, b) -> float:
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm()).item()


@pytest.fixture(scope="module")
def reference():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return pw.reference()
    finally:
        torch.set_num_threads(threads)


def _spawn(world, names, tmp_path_factory):
    records = pw.spawn(world, names, tmp_path_factory.mktemp(f"ranks{world}"))
    for rank, rec in enumerate(records):
        for name, value in rec.items():
            assert "crash" not in value, f"rank {rank}, {name}:\n{value['crash']}"
    return records


@pytest.fixture(scope="module")
def two(tmp_path_factory):
    return _spawn(2, TWO, tmp_path_factory)


@pytest.fixture(scope="module")
def three(tmp_path_factory):
    return _spawn(3, THREE, tmp_path_factory)


@pytest.fixture(scope="module")
def four(tmp_path_factory):
    return _spawn(4, FOUR, tmp_path_factory)


def _records(fixture, name):
    return [rec[name] for rec in fixture]


# --- one forward ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("world, name", [(2, "forward:2x1"), (4, "forward:4x1")])
def test_sequence_parallel_forward_matches_one_process(request, reference, world, name):
    """45 tokens: padded to 46 (2 ranks) and 48 (4 ranks); every rank returns the whole output."""
    for rec in _records(request.getfixturevalue({2: "two", 4: "four"}[world]), name):
        assert rel_l2(rec["forward"], reference["forward"]) <= 1e-6


def test_forward_traffic_is_what_the_exchange_sends(two, reference):
    """Per block: q, k, v out and the output back (4 x B x c x D values), (n - 1) / n of it leaving the rank;
    then the gathered chunk, float32, once per forward."""
    config = pw.tiny_dit().config
    b, n = 2, 2
    c = chunk_size(45, n)
    for rec in _records(two, "forward:2x1"):
        per_block = 4 * b * c * config.dim * 4 * (n - 1) // n
        assert rec["traffic"]["all_to_all"] == config.num_layers * per_block
        assert rec["traffic"]["all_gather"] == b * c * config.dim * 4 * (n - 1)


def test_a_wrong_exchange_is_caught(two, reference):
    """The same comparison fails when the exchange returns the sequence's chunks in the wrong order."""
    for rec in _records(two, "wrong_exchange:2x1"):
        assert rel_l2(rec["forward"], reference["forward"]) > 1e-3


# --- a whole guided denoise of a two-segment video -------------------------------------------------------------

@pytest.mark.parametrize("world, name", [(2, "generate:1x2"), (3, "generate:1x3"), (2, "cached:1x2")])
def test_guidance_parallel_is_bit_identical(request, reference, world, name):
    """``cached``: with the step cache skipping passes, each group decides for its own passes as one process."""
    fixture = request.getfixturevalue({2: "two", 3: "three"}[world])
    want = reference[name.split(":")[0]]
    for rec in _records(fixture, name):
        assert torch.equal(rec["latent"], want["latent"])
        assert tuple(rec["passes"]) == tuple(want["passes"])          # every group's passes counted once
    if name.startswith("cached"):
        assert want["passes"][1] > 0                                  # the cache did skip passes


def test_step_cache_decisions_agree_in_a_2x2_layout(four, reference):
    for rec in _records(four, "cached:2x2"):
        assert rel_l2(rec["latent"], reference["cached"]["latent"]) <= 1e-6
        assert tuple(rec["passes"]) == tuple(reference["cached"]["passes"])


@pytest.mark.parametrize("world, name", [(2, "generate:2x1"), (4, "generate:4x1"), (4, "generate:2x2"),
                                         (2, "sharded:2x1")])
def test_sequence_parallel_generate_matches_one_process(request, reference, world, name):
    """Two segments, 4 steps (one of them with the pose-unconditional pass), text + pose guidance; 30 tokens per
    forward (padded to 32 on 4 ranks). ``sharded``: the blocks FSDP2-sharded over the 2 ranks."""
    fixture = request.getfixturevalue({2: "two", 4: "four"}[world])
    want = reference["generate"]
    latents = [rec["latent"] for rec in _records(fixture, name)]
    for latent in latents:
        assert rel_l2(latent, want["latent"]) <= 1e-6
        assert torch.equal(latent, latents[0])                       # the same latent on every rank
    for rec in _records(fixture, name):
        assert tuple(rec["passes"]) == tuple(want["passes"])
        assert rec["block_weights"] == ("DTensor" if name.startswith("sharded") else "Parameter")


def test_plan_line_names_the_layout(four):
    assert _records(four, "generate:2x2")[0]["plan_line"] == (
        "2 guidance groups x 2 sequence ranks: each rank holds a full replica, 1/2 of the tokens, up to 2 of 3 "
        "passes per step")


# --- cancelling, failing ------------------------------------------------------------------------------------------

def test_a_cancel_on_one_rank_stops_every_rank_at_the_same_step(two):
    for rec in _records(two, "cancel:1x2"):
        assert rec["error"] == "Cancelled: generation cancelled before step 3/4"
        assert rec["usable_after"]                # nothing left half-done: the group still works


@pytest.mark.parametrize("world, name", [(2, "fail:2x1"), (4, "fail:2x2")])
def test_a_rank_raising_mid_step_ends_every_rank_with_its_error(request, world, name):
    """Rank 1 raises inside a block while its sequence peers wait in the block's exchange: every rank ends with
    rank 1's error, well before the collectives' 60 s timeout."""
    records = _records(request.getfixturevalue({2: "two", 4: "four"}[world]), name)
    assert records[1]["error"] == "RuntimeError: boom on purpose"
    for rank, rec in enumerate(records):
        if rank != 1:
            assert rec["error"] == f"RankFailedError: rank 1 of {world} failed: RuntimeError: boom on purpose"
    ended = [rec["ended_at"] for rec in records]
    assert max(ended) - min(ended) < 10


def test_a_layout_for_another_number_of_processes_is_refused(two):
    for rec in _records(two, "mismatch:4x1"):
        assert rec["error"] == ("1 guidance group x 4 sequence ranks needs 4 processes, but 2 were started; start 4 "
                                "or change the degrees")
