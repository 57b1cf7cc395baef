"""Fused kernels for the codec's memory-bound steps, each beside its PyTorch reference."""
