"""Spawned ranks for the parallel tests: a tiny SteadyDancer model, the scenarios each rank runs, and the spawner.

Every scenario builds the same tiny model (fixed seeds), installs a ``ParallelRuntime`` built from a gloo default
group and records what the rank got (tensors, or the error it ended with) in ``OUT/rank<r>.pt``; the test process
compares them with the single-process result. Ranks other than 0 hold no VAE and no encoders (the conditioning is
broadcast from rank 0), which also proves they never use them.
"""
from __future__ import annotations

import datetime
import hashlib
import multiprocessing
import os
import time
import traceback
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from steadydancer_core.models.dit import SteadyDancerDiT
from steadydancer_core.models.dit_config import DiTConfig
from steadydancer_core.models.sequence_parallel import SequenceParallel
from steadydancer_core.models.vae import WanVAE
from steadydancer_core.models.vae_config import VAEConfig
from steadydancer_core.runtime.bundle import SteadyDancerModel
from steadydancer_core.runtime.parallel import ParallelConfig, init_parallel, parallel_process_group
from steadydancer_core.sampling.guidance import Cancelled
from steadydancer_core.sampling.pipeline import generate
from steadydancer_core.sampling.settings import GenerationSettings

SIZE = 48              # photo side: 3 x 3 latent patches per frame
LENGTH = 13            # frames: two segments of 9 (overlap 5); 3 latent frames + 2 references = 45 tokens
TIMEOUT = datetime.timedelta(seconds=60)     # any collective waiting longer fails
CLIP_TOKENS = 5


class StandInTextEncoder:
    """``encode(prompts)`` -> one [tokens, text_dim] context per prompt, a fixed function of the prompt's text."""

    def __init__(self, text_dim: int):
        self.text_dim = text_dim

    def encode(self, prompts):
        out = []
        for prompt in prompts:
            seed = int.from_bytes(hashlib.sha256(prompt.encode()).digest()[:4], "little")
            g = torch.Generator().manual_seed(seed)
            out.append(torch.randn(3 + seed % 5, self.text_dim, generator=g))
        return out


class StandInImageEncoder:
    """``encode(images [1, 3, H, W])`` -> [1, CLIP_TOKENS, clip_dim], a fixed function of the pixels."""

    def __init__(self, clip_dim: int):
        g = torch.Generator().manual_seed(11)
        self.mix = torch.randn(3, CLIP_TOKENS * clip_dim, generator=g)
        self.clip_dim = clip_dim

    def encode(self, images):
        return (images.mean(dim=(2, 3)) @ self.mix).reshape(images.shape[0], CLIP_TOKENS, self.clip_dim)


def tiny_dit() -> SteadyDancerDiT:
    torch.manual_seed(0)
    dit = SteadyDancerDiT(DiTConfig.tiny(num_heads=4, clip_tokens=CLIP_TOKENS)).eval().requires_grad_(False)
    with torch.no_grad():       # make the random DiT respond visibly to its inputs
        for p in dit.parameters():
            if p.ndim == 1 and torch.count_nonzero(p) == 0:
                p.normal_(0, 0.02)
    return dit


def tiny_model(conditioning: bool = True) -> SteadyDancerModel:
    """The tiny model; without ``conditioning`` it has no VAE and no encoders (a rank that receives them)."""
    dit = tiny_dit()
    vae = text = image = None
    if conditioning:
        torch.manual_seed(1)
        vae = WanVAE(VAEConfig.tiny()).eval().requires_grad_(False)
        text, image = StandInTextEncoder(dit.config.text_dim), StandInImageEncoder(dit.config.clip_dim)
    return SteadyDancerModel(dit=dit, vae=vae, text_encoder=text, image_encoder=image, dtype=torch.float32)


def inputs():
    g = torch.Generator().manual_seed(5)
    photo = torch.rand(SIZE, SIZE, 3, generator=g)
    return photo, torch.rand(LENGTH, SIZE, SIZE, 3, generator=g), torch.rand(LENGTH, SIZE, SIZE, 3, generator=g)


def settings(**overrides) -> GenerationSettings:
    base = dict(prompt="a dancer", steps=4, max_area=SIZE * SIZE, seed=3, length=LENGTH, segment_frames=9,
                segment_overlap=5)
    base.update(overrides)
    return GenerationSettings(**base)


CACHED = dict(step_cache="magcache", cache_threshold=1.0, cache_keep_first=1, cache_keep_last=0, cache_max_skip=2)


def forward_inputs(config: DiTConfig) -> dict:
    """One DiT forward's inputs, batch 2: 3 latent frames of 3 x 3 patches (+ 2 reference frames = 45 tokens)."""
    g = torch.Generator().manual_seed(9)
    f, h, w = 3, 6, 6

    def randn(*shape):
        return torch.randn(*shape, generator=g)

    return dict(x=randn(2, config.out_dim, f, h, w), t=torch.tensor([700]), context=randn(2, 7, config.text_dim),
                y=randn(2, config.y_channels, f, h, w), condition=randn(2, config.condition_channels, f, h, w),
                ref_x=randn(2, config.in_dim, 1, h, w), ref_c=randn(2, config.in_dim, 1, h, w),
                clip_fea_x=randn(2, config.clip_tokens, config.clip_dim),
                clip_fea_c=randn(2, config.clip_tokens, config.clip_dim))


def reference() -> dict:
    """The single-process results the scenarios are compared with."""
    model = tiny_model()
    with torch.inference_mode():
        forward = model.dit(**forward_inputs(model.dit.config))
    out = {"forward": forward}
    for kind, extra in (("generate", {}), ("cached", CACHED)):
        result = generate(model, *inputs(), settings(**extra))
        out[kind] = {"latent": result.latent, "passes": _passes(result)}
    return out


def _passes(result) -> tuple:
    return sum(s.passes_computed for s in result.segments), sum(s.passes_skipped for s in result.segments)


# --- scenarios: run on every rank, each returns what it records ----------------------------------------------------

def _install(config: ParallelConfig):
    runtime = init_parallel(config, timeout=TIMEOUT)
    model = tiny_model(conditioning=runtime.is_conditioning_rank)
    runtime.attach(model)
    return runtime, model


def _wrong_to_heads(self, x):
    """A broken exchange: the chunks of the sequence come back in the wrong order."""
    out = SequenceParallel.to_heads(self, x)
    n = self.degree
    chunks = out.chunk(n, dim=2)
    return torch.cat(chunks[::-1], dim=2)


def scenario(name: str, rank: int) -> dict:
    """``kind:SxG`` (S sequence ranks x G guidance groups) on this rank; returns what the rank records."""
    kind, _, layout = name.partition(":")
    sequence, guidance = (int(v) for v in layout.split("x"))
    config = ParallelConfig(sequence=sequence, guidance=guidance, shard_blocks=kind == "sharded", num_heads=4)
    if kind == "mismatch":
        try:
            init_parallel(config, timeout=TIMEOUT)
        except ValueError as err:
            return {"error": str(err)}
        return {"error": None}
    runtime, model = _install(config)
    record = {}
    try:
        if kind in ("forward", "wrong_exchange"):
            if kind == "wrong_exchange":
                runtime.sequence.to_heads = _wrong_to_heads.__get__(runtime.sequence)
            with torch.inference_mode():
                record["forward"] = model.dit(**forward_inputs(model.dit.config))
            record["traffic"] = dict(runtime.sequence.traffic)
        elif kind in ("generate", "sharded", "cached"):
            result = generate(model, *inputs(), settings(**(CACHED if kind == "cached" else {})))
            record["latent"] = result.latent
            record["passes"] = _passes(result)
            record["plan_line"] = runtime.share.describe(3)
            record["block_weights"] = type(model.dit.blocks[0].self_attn.q.weight).__name__
        elif kind == "cancel":
            calls = []

            def should_cancel():        # only rank 0 is asked to stop, before step 3
                calls.append(1)
                return rank == 0 and len(calls) == 3

            try:
                generate(model, *inputs(), settings(), should_cancel=should_cancel)
            except Cancelled as err:
                record["error"] = f"Cancelled: {err}"
            record["usable_after"] = runtime.any_rank(False) is False and runtime.broken is None
        elif kind == "fail":
            steps = []

            def boom(module, args):     # rank 1 fails inside its second block, at the second step
                if rank == 1 and len(steps) == 1:
                    raise RuntimeError("boom on purpose")

            model.dit.blocks[1].register_forward_pre_hook(boom)
            try:
                generate(model, *inputs(), settings(), callback=lambda *a: steps.append(1))
            except Exception as err:   # the record says which error this rank ended with
                record["error"] = f"{type(err).__name__}: {err}"
            record["ended_at"] = time.time()
        else:
            raise ValueError(f"unknown scenario {name}")
    finally:
        if kind != "fail":          # a failed job leaves collectives half-matched: its groups are not reused
            runtime.close()
    return record


def worker(rank: int, world: int, init_file: str, names: list, out_dir: str) -> None:
    torch.set_num_threads(1)
    records = {}
    with parallel_process_group(rank, world, f"file://{init_file}", timeout=TIMEOUT):
        for name in names:
            try:
                records[name] = scenario(name, rank)
            except Exception:       # an unexpected error: recorded, the test shows it
                records[name] = {"crash": traceback.format_exc()}
                break
    torch.save(records, Path(out_dir) / f"rank{rank}.pt")


def start_method() -> str:
    """"forkserver" where there is one: a server process imports torch and this module once, and every rank is a
    fork of it (a rank starts in milliseconds instead of importing torch again); else "spawn"."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return "spawn"
    from multiprocessing import forkserver

    if not getattr(start_method, "started", False):
        # the server imports its preload modules with the environment's path only: give it this checkout's
        here = os.pathsep.join([str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)])
        saved = os.environ.get("PYTHONPATH")
        os.environ["PYTHONPATH"] = here if saved is None else here + os.pathsep + saved
        try:
            multiprocessing.get_context("forkserver").set_forkserver_preload(["parallel_workers"])
            forkserver.ensure_running()
        finally:
            if saved is None:
                del os.environ["PYTHONPATH"]
            else:
                os.environ["PYTHONPATH"] = saved
        start_method.started = True
    return "forkserver"


def spawn(world: int, names: list, tmp_path: Path, timeout: float = 120.0) -> list:
    """Run ``names`` on ``world`` new processes; returns each rank's records. Kills the ranks after ``timeout``."""
    init_file = tmp_path / f"init{world}"
    out_dir = tmp_path / f"out{world}"
    out_dir.mkdir()
    context = mp.start_processes(worker, args=(world, str(init_file), names, str(out_dir)), nprocs=world,
                                 join=False, start_method=start_method())
    deadline = time.monotonic() + timeout
    while not context.join(timeout=1.0):
        if time.monotonic() > deadline:
            for p in context.processes:
                if p.is_alive():
                    p.kill()
            raise TimeoutError(f"the {world} ranks did not finish {names} within {timeout:.0f} s")
    return [torch.load(out_dir / f"rank{r}.pt", weights_only=True) for r in range(world)]

