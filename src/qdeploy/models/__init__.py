"""Architectures and checkpoint loading."""
from .registry import ARCHITECTURES, build_model, head_classes, load_checkpoint, load_model, pretrained

__all__ = ["ARCHITECTURES", "build_model", "head_classes", "load_checkpoint", "load_model", "pretrained"]
