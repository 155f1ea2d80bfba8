"""Training (seeds 002/004): a checkpoint that feeds `qdeploy run`."""
from .config import PRESETS, TrainConfig
from .trainer import TrainResult, curves, lr_factor, train

__all__ = ["PRESETS", "TrainConfig", "TrainResult", "curves", "lr_factor", "train"]
