"""The small error hierarchy. Every message says what is wrong and how to fix it."""


class QDeployError(Exception):
    """Base of every error qdeploy raises on purpose; the CLI prints it as one line."""

    check = None   # a refused model file: the check against FP32 it failed (tasks.QuantCheck) ...
    facts = None   # ... and what its recipe found out (results.VariantFacts: e.g. the per-node diagnosis)


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


class BundleError(QDeployError):
    """A bundle is incomplete, tampered with, or disagrees with its own models."""


# Optional dependencies by top-level module -> the extra that installs them. The core (ONNX files, ORT, serving
# with qdeploy[serve]) needs none of the torch extra; a command that does says so instead of an ImportError.
EXTRAS = {
    "torch": "torch", "onnxscript": "torch", "matplotlib": "torch",
    "gradio": "serve", "fastapi": "serve", "uvicorn": "serve", "multipart": "serve", "tritonclient": "serve",
    "prometheus_client": "serve", "google": "serve",
    "openvino": "openvino", "nncf": "openvino",
    "skimage": "image", "onnxruntime_extensions": "image",
    "ray": "ray",
}


def missing_extra(exc: ModuleNotFoundError) -> str | None:
    """One line for a missing optional dependency ('install qdeploy[torch]'), or None for any other import."""
    top = (exc.name or "").split(".")[0]
    extra = EXTRAS.get(top)
    if extra is None:
        return None
    hint = (' (install torch==2.13.0 first where a CPU build is wanted: any other torch requirement pulls a '
            'multi-GB CUDA build)') if extra == "torch" else ""
    return f"this command needs {top}, which this install lacks: pip install \"qdeploy[{extra}]\"{hint}"
