"""The codec's networks."""

from .hyperprior import ALIGN, MeanScaleHyperprior, ModelConfig

__all__ = ["ALIGN", "MeanScaleHyperprior", "ModelConfig"]
