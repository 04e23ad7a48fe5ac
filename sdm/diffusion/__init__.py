"""Diffusion: the shared sampler, training loop, data, sample shards and checkpoints."""
