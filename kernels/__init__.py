"""Fused Triton kernels for the codec's memory-bound steps, each beside its PyTorch reference.

`kernels.dispatch` holds the entry points the engine calls; per call it runs the Triton kernel
(`kernels/<name>.py`) or the reference (`kernels/<name>_reference.py`). Only the dispatcher
imports the Triton modules, so the package works without triton.
"""
