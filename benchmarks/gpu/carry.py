"""What travels to the GPU machine beside the working tree: the folder ``.gpu-carry/`` (git-ignored), made here by
``benchmarks/gpu_carry.py`` and named in the device command's ``carry``. Pure Python (no torch).

  .gpu-carry/fixtures/   the reference-fixture files the gpu-marked fidelity tests read (FIXTURE_FILES), under the
                         same relative paths as in the fixture root; the proof runner sets STEADYDANCER_FIXTURES here
  .gpu-carry/wheels/     wheels pip installs there with ``--no-index --target`` (WHEELS: packages the machine lacks
                         that are small and pure Python)
"""
from __future__ import annotations

CARRY_DIR = ".gpu-carry"
FIXTURES_SUBDIR = "fixtures"
WHEELS_SUBDIR = "wheels"

# read by tests/test_dit.py::test_dit_cuda_matches_official and
# tests/test_e2e.py::test_e2e_official_noise_on_cuda_is_the_device_generator (tests/test_gpu_proof.py checks that
# the functions those tests read fixtures with find everything in a carried copy)
FIXTURE_FILES = (
    "steadydancer_dit/model/config.json",
    "steadydancer_dit/model/diffusion_pytorch_model.safetensors",
    "steadydancer_dit/dit_meta.json",
    "steadydancer_dit/dit_io.safetensors",
    "steadydancer_e2e/e2e_meta.json",
    "steadydancer_e2e/e2e_io.safetensors",
)

# the machine's Python and platform, for ``pip download``
DEVICE_PYTHON = "3.12"
DEVICE_PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64", "any")
WHEELS = ("sageattention==1.0.6",)      # pure-Triton SageAttention (20 kB); 2.x needs a CUDA build

# what may travel in all: the tree, the fixtures and the wheels together stay under the machine's 64 MiB
CARRY_LIMIT_MIB = 48
