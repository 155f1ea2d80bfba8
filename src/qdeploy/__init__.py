"""qdeploy: checkpoint -> verified FP32 ONNX -> fast INT8 -> evaluated, benchmarked report."""

__version__ = "0.1.0"
