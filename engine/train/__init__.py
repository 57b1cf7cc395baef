"""Training: data, the resumable rate-distortion loop, and export to shipped weights."""

from .loop import TrainConfig, Trainer

__all__ = ["TrainConfig", "Trainer"]
