"""INT8 variants: ONNX Runtime static/dynamic now; the registry grows with later back-ends."""
from .config import PRESETS, QuantConfig, preset
from .ort import QuantCheck, quantize, verify

__all__ = ["PRESETS", "QuantCheck", "QuantConfig", "preset", "quantize", "verify"]
