"""The lowest layer for model files: the keys qdeploy's metadata is stored under, reading it back from each runtime's
own format (offline artifacts, OpenVINO IR), and opening an ONNX Runtime session the way qdeploy always does. It
imports nothing of qdeploy's above errors; artifacts, targets, quantize and compile import it downward."""
