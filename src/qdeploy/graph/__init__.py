"""Graph rewrites on ONNX models (seed 003's PowerDifference operator)."""
