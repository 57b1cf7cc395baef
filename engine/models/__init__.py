"""The codec's networks: every model kind implements `CodingModel` (engine/models/base.py)."""

from .base import CodingModel, Encoded, ModelInfo
from .cae import CaeConfig, CompressiveAutoencoder
from .channel import ChannelConditional, ChannelConfig
from .context import ContextConfig, JointAutoregressive
from .factorized_prior import FactorizedPrior
from .hyperprior import MeanScaleHyperprior, ModelConfig
from .scale_hyperprior import ScaleHyperprior

# Every model kind, by the name its weights files carry ("arch").
KINDS: dict[str, type[CodingModel]] = {
    kind.ARCH: kind for kind in (MeanScaleHyperprior, ScaleHyperprior, FactorizedPrior,
                                ChannelConditional, CompressiveAutoencoder,
                                JointAutoregressive)}

__all__ = ["KINDS", "CaeConfig", "ChannelConditional", "ChannelConfig", "CodingModel",
           "CompressiveAutoencoder", "ContextConfig", "Encoded", "JointAutoregressive",
           "MeanScaleHyperprior", "ModelConfig", "ModelInfo"]
