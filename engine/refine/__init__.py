"""Encode-time latent refinement: SGA (Yang et al., NeurIPS 2020) and SGA+ (Perugachi-Diaz,
Gansekoele, Bhulai, "Robustly overfitting latents for flexible neural image compression",
NeurIPS 2024).

    data = engine.compress(image, quality=q, refine=engine.Refine(method="ssl", iterations=500))

The latents of one image are optimised against the frozen model; the stream is an ordinary one
for the ordinary decoder. docs/REFINE.md describes the methods, defaults and experiments.
"""

from .config import METHODS, Refine
from .optimize import History, refine_lambda, refine_latents
from .rounding import relax

__all__ = ["METHODS", "History", "Refine", "refine_lambda", "refine_latents", "relax"]
