"""The small error hierarchy. Every message says what is wrong and how to fix it."""


class QDeployError(Exception):
    """Base of every error qdeploy raises on purpose; the CLI prints it as one line."""


class CheckpointError(QDeployError):
    """A checkpoint is missing, unreadable, or does not fit the architecture."""


class ArchitectureError(QDeployError):
    """An architecture name or user model file cannot be resolved."""


class DataError(QDeployError):
    """A data directory is missing, empty, mixed, or does not fit the model."""


class ExportError(QDeployError):
    """torch -> ONNX export failed or the ONNX model disagrees with PyTorch."""


class QuantizeError(QDeployError):
    """Quantization failed or produced a model that disagrees with FP32."""


class ConfigError(QDeployError):
    """A stage configuration value is invalid."""


class OutputError(QDeployError):
    """An output location cannot be written."""


class ModelFileError(QDeployError):
    """An ONNX model file is missing, corrupt, or lacks qdeploy metadata."""
