"""INT8 variants: one config dataclass per scheme (qdeploy/recipes.py), one handler per config type (base.py's
registry: ORT static/dynamic, PyTorch eager PTQ/QAT/PoT, auto search)."""
from ..recipes import PRESETS, VARIANTS, AutoConfig, QuantConfig, TorchQuantConfig, preset
from ..tasks import QuantCheck
from .base import VariantContext, build_variant, register
from .ort import quantize, verify

__all__ = ["PRESETS", "VARIANTS", "AutoConfig", "QuantCheck", "QuantConfig", "TorchQuantConfig", "VariantContext",
           "build_variant", "preset", "quantize", "register", "verify"]
