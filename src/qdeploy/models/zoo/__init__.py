"""The architectures people fine-tune and deploy, written here with torchvision's and timm's module layouts so
that a checkpoint either library saved loads with strict keys (neither library imports beside this project's CPU
torch: torchvision's wheel is CUDA-linked, timm imports torchvision). Each module names the source file whose layout
it follows; tests/models/test_zoo_layouts.py checks parameter counts and key shapes against those libraries'
published figures."""
from .timm_nets import SIZED, STATE_KWARGS, TIMM_ARCHITECTURES
from .torchvision_nets import TORCHVISION_ARCHITECTURES

ZOO = {**TORCHVISION_ARCHITECTURES, **TIMM_ARCHITECTURES}
LIBRARY = {**{k: "torchvision" for k in TORCHVISION_ARCHITECTURES}, **{k: "timm" for k in TIMM_ARCHITECTURES}}

__all__ = ["LIBRARY", "SIZED", "STATE_KWARGS", "ZOO"]
