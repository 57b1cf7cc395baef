"""Entropy models: the densities of the latents and the CDF tables the coder uses."""
