"""The networks only: SteadyDancer DiT (with its SSAR / TMCM / FAAU condition modules), Wan 2.1 VAE, umT5, CLIP
vision. Each config dataclass sits beside its model. Nothing here reads files or moves tensors between devices."""
