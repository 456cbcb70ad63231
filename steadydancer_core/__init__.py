"""SteadyDancer in pure PyTorch: DiT, encoders, VAE, sampler, offloading. Never imports ComfyUI."""
